"""Contacts sync, the company phone book: the contacts of the shared mailboxes in NEXXT365_COMPANY_CONTACTS.

Each shared mailbox is read like a linked user's (its Contacts folder and the
folders below it, one delta round per folder through $batch) and planned by the
same rules (E.164 numbers, a contact without a dialable number skipped with its
reason, only contacts the connector created, found by `external_id`, are ever
changed or deleted, the deletion hold, no subject or body stored). Its contacts
become ClearVox company contacts (the account's phone book: public, no owner).
State: cursor rows keyed `company|<address>`, contactmap and retry rows in the
partition `company|<address>`.

One company contact per person: a person is the contact's name (case and spacing
ignored) with its set of E.164 numbers (`person_key`). The first mailbox that has
the person makes the company contact: one already in the phone book wins, then
the mailboxes in the order of NEXXT365_COMPANY_CONTACTS, then the order Outlook
lists them. The same person in another mailbox (or twice in one) is an alias: not
created, reported as a skip naming the mailbox that has it. When the first one
goes, the alias becomes the company contact with its mailbox's next full reconcile.

A mailbox that does not exist, has no Exchange Online mailbox or is outside the
app's mailbox scope is reported by name with the fix when it is looked at: once,
then again about once a day; the other mailboxes and the personal contacts go on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from shared.check import Check
from shared.errors import GraphError, Nexxt365Error
from shared.graph.contacts import Folders, discover_folders
from shared.sync.contacts.cursors import UserCursor
from shared.sync.contacts.mapping import MapEntry, Skip, contactmap_from_rows, person_key
from shared.sync.contacts.owner import OwnerRun
from shared.sync.contacts.read import unreadable

if TYPE_CHECKING:
    from shared.graph.client import Graph
    from shared.settings import Tenant
    from shared.state import State

KIND = "company"
RECHECK_HOURS = 24  # an unreadable shared mailbox is looked at (and reported) again about once a day
REASON_ALIAS = "same person as the company contact from"


def cursor_key(mailbox: str) -> str:
    return f"{KIND}|{mailbox}"


def company_runs(mailboxes: Sequence[str], cursors: Mapping[str, UserCursor],
                 start: Callable[[str, str, UserCursor, int], OwnerRun]) -> list[OwnerRun]:
    """This run of every configured shared mailbox, in the order of the setting."""
    return [start(m, "", cursors.get(cursor_key(m)) or UserCursor(cursor_key(m), kind=KIND), RECHECK_HOURS)
            for m in mailboxes]


def retired(mailboxes: Sequence[str], cursors: Mapping[str, UserCursor]) -> dict[str, UserCursor]:
    """Shared mailboxes synced before and no longer in the setting: their company contacts are kept."""
    keys = {cursor_key(m) for m in mailboxes}
    return {k: c for k, c in cursors.items() if c.kind == KIND and k not in keys and c.synced > 0}


def drop_aliases(runs: Sequence[OwnerRun], state: State) -> None:
    """Take the creates of people the phone book already has (or another mailbox creates first) out of the
    plans, as skips naming the mailbox that has them. `runs`: every shared mailbox, in the setting's order."""
    if not any(r.plan is not None and r.plan.creates for r in runs):
        return
    first: dict[str, str] = {}  # person -> mailbox
    for r in runs:
        entries: Mapping[str, MapEntry] = r.contactmap if r.plan is not None else contactmap_from_rows(
            state.rows("contactmap", r.map_scope))
        first.update({e.person: r.mailbox for e in entries.values() if e.person and e.person not in first})
    for r in runs:
        if r.plan is None:
            continue
        keep = []
        for create in r.plan.creates:
            person = person_key(create.contact)
            if person in first:
                r.plan.skips.append(Skip(create.graph_contact_id, f"{REASON_ALIAS} {first[person]}",
                                         create.contact.display_name))
                continue
            first.setdefault(person, r.mailbox)
            keep.append(create)
        r.plan.creates = keep


def company_mailbox_checks(graph: Graph, tenant: Tenant) -> list[Check]:
    """doctor: for each shared mailbox of NEXXT365_COMPANY_CONTACTS, whether its contacts can be read."""
    mailboxes = tenant.options.company_contacts
    if not mailboxes:
        return []
    try:
        found = discover_folders(graph, list(mailboxes))
    except Nexxt365Error as exc:  # sign-in or consent: the same answer for every mailbox
        return [Check(f"company contacts {m}", "FAIL", str(exc)) for m in mailboxes]
    checks = []
    for m in mailboxes:
        result = found[m]
        if isinstance(result, Folders):
            checks.append(Check(f"company contacts {m}", "OK", f"contacts can be read ({len(result.names)} folders)"))
        else:
            checks.append(Check(f"company contacts {m}", "FAIL", _why(m, result)))
    return checks


def _why(mailbox: str, err: GraphError) -> str:
    return unreadable(mailbox, err, company=True) or f"contacts of shared mailbox {mailbox} not read: {err}"
