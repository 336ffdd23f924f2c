"""Contacts sync, reading Outlook: the contact folders of many mailboxes and their delta rounds, through $batch.

A mailbox is addressed by the Entra object id of its user, or by its SMTP
address (the shared mailboxes of the company phone book): Graph takes both in
/users/{id | userPrincipalName | address}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from shared.errors import DeltaExpired, GraphError, GraphUnavailable, MailboxUnavailable
from shared.graph.client import DeltaRound, Graph
from shared.graph.contacts import (
    contacts_by_id,
    contacts_delta_many,
    delta_start,
    discover_folders,
    folder_gone,
    user_gone,
)
from shared.sync.base import due_retries
from shared.sync.contacts.cursors import FolderCursor
from shared.sync.contacts.owner import OwnerRun

if TYPE_CHECKING:
    from shared.state import State

# The contact properties the mapping reads ($select keeps delta pages small; never notes or bodies).
GRAPH_SELECT: tuple[str, ...] = (
    "id", "parentFolderId", "displayName", "givenName", "middleName", "surname", "companyName", "jobTitle",
    "emailAddresses", "businessPhones", "mobilePhone", "homePhones",
)


def unreadable(mailbox: str, err: GraphError, *, company: bool) -> str | None:
    """Why a mailbox cannot be read at all, with the fix; None when the error is not about the mailbox."""
    missing = user_gone(err)
    if not company:
        if isinstance(err, MailboxUnavailable):
            return str(err)
        return f"user {mailbox} was not found in Microsoft 365." if missing else None
    where = f"shared mailbox {mailbox} (NEXXT365_COMPANY_CONTACTS)"
    if missing:
        return f"{where} does not exist in Microsoft 365. Fix: correct the address in NEXXT365_COMPANY_CONTACTS."
    if isinstance(err, MailboxUnavailable) and err.out_of_scope:
        return (f"{where} is outside the app's mailbox scope. Fix: add it to the mail-enabled group that the "
                "Exchange application access policy (or RBAC for Applications scope) of the app allows.")
    if isinstance(err, MailboxUnavailable):
        return (f"{where} has no Exchange Online mailbox. Fix: give the address of a shared mailbox in Exchange "
                "Online, or remove it from NEXXT365_COMPANY_CONTACTS.")
    return None


# --------------------------------------------------------------------------- one run's reads


Starts = Mapping[tuple[OwnerRun, str], str]


class MailboxReader:
    """Reads what changed in many mailboxes: folders (with the full reconcile, or when something vanished),
    one delta round per folder, and the items kept for a retry. All through $batch."""

    def __init__(self, graph: Graph, state: State, retry_cap: int) -> None:
        self.graph = graph
        self.state = state
        self.retry_cap = retry_cap

    def read(self, runs: Sequence[OwnerRun]) -> None:
        self.discover([r for r in runs if r.full])
        self.read_deltas(runs)
        self.follow_up(runs)
        self.read_retries(runs)

    @staticmethod
    def graph_problem(r: OwnerRun, err: GraphError) -> None:
        why = unreadable(r.mailbox, err, company=not r.owner)
        if why is not None:
            r.unavailable, r.checked = why, True
        else:
            r.problem = f"contacts not read: {err}"

    def discover(self, runs: Sequence[OwnerRun]) -> None:
        if not runs:
            return
        found = discover_folders(self.graph, [r.mailbox for r in runs])
        for r in runs:
            result = found[r.mailbox]
            if isinstance(result, GraphError):
                self.graph_problem(r, result)
                continue
            known = r.cursor.folders if r.full else r.folders
            for fid, folder in known.items():
                if fid not in result.names:
                    r.removed_folders[fid] = folder.name
                    r.rounds.pop(fid, None)
            kept = {} if r.full else r.folders
            r.folders = {fid: FolderCursor(fid, name, kept[fid].delta_link if fid in kept else "")
                         for fid, name in result.names.items()}

    def _rounds(self, starts: Starts) -> dict[tuple[OwnerRun, str], DeltaRound | GraphError]:
        keys = list(starts)
        answers = contacts_delta_many(self.graph, {f"d{i}": starts[k] for i, k in enumerate(keys)})
        return {k: answers.get(f"d{i}") or GraphUnavailable("no answer") for i, k in enumerate(keys)}

    def read_deltas(self, runs: Sequence[OwnerRun]) -> None:
        starts: dict[tuple[OwnerRun, str], str] = {}
        for r in runs:
            if r.ok:
                for fid, folder in r.folders.items():
                    starts[(r, fid)] = folder.delta_link or delta_start(r.mailbox, fid, GRAPH_SELECT)
                    if not folder.delta_link:
                        r.fresh.add(fid)
        for (r, fid), answer in self._rounds(starts).items():
            if isinstance(answer, DeltaRound):
                r.rounds[fid] = answer
            elif isinstance(answer, DeltaExpired):
                r.expired.add(fid)
            elif folder_gone(answer):
                r.missing.add(fid)
                r.rediscover = True
            elif r.ok:
                self.graph_problem(r, answer)

    def follow_up(self, runs: Sequence[OwnerRun]) -> None:
        """Re-discover where a folder vanished or contacts were removed (maybe moved to a new folder), then read
        new folders and folders whose delta token expired from the start."""
        for r in runs:
            if r.ok and not r.full and any(rnd.removed for rnd in r.rounds.values()):
                r.rediscover = True
        again = [r for r in runs if r.ok and r.rediscover and not r.full]
        before = {id(r): set(r.folders) for r in again}
        self.discover(again)
        starts: dict[tuple[OwnerRun, str], str] = {}
        for r in runs:
            if not r.ok:
                continue
            for fid in r.missing:
                if fid in r.folders:
                    r.problem = f"contact folder {r.folders[fid].name or fid} could not be read (not found)"
            new = set(r.folders) - before.get(id(r), set(r.folders))
            for fid in (r.expired | new) & set(r.folders):
                if r.ok:
                    starts[(r, fid)] = delta_start(r.mailbox, fid, GRAPH_SELECT)
        for (r, fid), answer in self._rounds(starts).items():
            if isinstance(answer, DeltaRound):
                r.rounds[fid] = answer
                r.fresh.add(fid)
            elif r.ok:
                self.graph_problem(r, answer)

    def read_retries(self, runs: Sequence[OwnerRun]) -> None:
        """Items kept for a retry (failed, or deleted on Outlook's word): fetched again from Graph; a 404 means
        they left the folder. Past the sync's retry cap an item waits for the full reconcile."""
        todo = [r for r in runs if r.ok and r.cursor.retries > 0 and r.cursor.cv_user_id == r.owner]
        requests_: list[tuple[OwnerRun, str, str]] = []
        for r in todo:
            rows = self.state.rows("retries", r.retry_scope)
            for key in due_retries(rows, self.retry_cap):
                row = rows[key]
                gid = str(row.get("graph_id") or key)
                fid = str(row.get("folder_id") or "")
                r.retry_rows[gid] = row
                if row.get("action") == "delete" or fid not in r.folders:
                    r.retry_removed[gid] = fid or None
                else:
                    requests_.append((r, gid, fid))
        if not requests_:
            return
        answers = contacts_by_id(self.graph, [(r.mailbox, fid, gid) for r, gid, fid in requests_], GRAPH_SELECT)
        for (r, gid, fid), answer in zip(requests_, answers, strict=True):
            if isinstance(answer, dict):
                r.retry_items.append({**answer, "parentFolderId": fid})
            elif answer is None:
                r.retry_removed[gid] = fid
            else:
                r.retry_rows.pop(gid)  # not read this time: stays in the retries table for the next run
