"""Contacts sync, reading Outlook: the contact folders of many mailboxes and their delta rounds, through $batch.

A mailbox is addressed by the Entra object id of its user, or by its SMTP
address (the shared mailboxes of the company phone book): Graph takes both in
/users/{id | userPrincipalName | address}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from shared.errors import DeltaExpired, GraphError, GraphItemError, GraphUnavailable, MailboxUnavailable
from shared.graph.client import BatchRequest, DeltaRound, Graph
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
# Immutable ids survive a move between folders; 200 is the largest contacts page Graph serves.
GRAPH_PREFER = 'IdType="ImmutableId", odata.maxpagesize=200'
FOLDER_PAGE = 100
_GONE_CODES = {"erroritemnotfound"}
_NO_USER_CODES = {"errorinvaliduser", "request_resourcenotfound", "resourcenotfound"}


def _quote(value: str) -> str:
    return quote(value, safe="")


def delta_start(object_id: str, folder_id: str) -> str:
    """The first request of a contacts delta round of one folder (relative to the Graph version root)."""
    return (f"/users/{_quote(object_id)}/contactFolders/{_quote(folder_id)}/contacts/delta"
            f"?$select={','.join(GRAPH_SELECT)}")


# --------------------------------------------------------------------------- folder discovery


@dataclass(frozen=True)
class Folders:
    """A user's personal contact folders: the default Contacts folder first, then its child folders, recursively."""

    default_id: str
    names: dict[str, str]  # folder id -> display name, in discovery order


def discover_folders(graph: Graph, object_ids: Sequence[str]) -> dict[str, Folders | GraphError]:
    """The contact folders of many users at once, level by level through $batch.

    Graph v1.0 lists under /contactFolders the folders *inside* the default
    Contacts folder, so the default folder is read by its well-known name and
    each level below through /childFolders. A folder deleted while this runs is
    left out; any other error becomes that user's answer.
    """
    headers = {"Prefer": GRAPH_PREFER}
    names: dict[str, dict[str, str]] = {oid: {} for oid in object_ids}
    defaults: dict[str, str] = {}
    errors: dict[str, GraphError] = {}
    pending: list[tuple[str, str, str]] = []  # (object id, url, what)
    for oid in object_ids:
        base = f"/users/{_quote(oid)}/contactFolders"
        pending += [(oid, f"{base}/contacts?$select=id,displayName", "default"),
                    (oid, f"{base}?$top={FOLDER_PAGE}&$select=id,displayName", "children")]
    while pending:
        answers = graph.batch([BatchRequest(f"f{i}", "GET", url, headers) for i, (_, url, _) in enumerate(pending)])
        follow: list[tuple[str, str, str]] = []
        for i, (oid, url, what) in enumerate(pending):
            if oid in errors:
                continue
            answer = answers.get(f"f{i}")
            if answer is None:
                errors[oid] = GraphUnavailable(f"no answer in $batch for {url.split('?')[0]}")
                continue
            if answer.status >= 400:
                err = graph.error_for(answer.status, answer.body, url)
                if not isinstance(err, GraphError):
                    raise err  # consent or authentication: the whole run stops with the fix
                if what == "children" and "/childFolders" in url and err.code.lower() in _GONE_CODES:
                    continue  # deleted while we looked
                errors[oid] = err
                continue
            body = answer.body if isinstance(answer.body, dict) else {}
            if what == "default":
                fid = str(body.get("id") or "")
                defaults[oid] = fid
                names[oid].setdefault(fid, str(body.get("displayName") or "Contacts"))
                continue
            for folder in body.get("value") or ():
                fid = str(folder.get("id") or "")
                if fid and fid not in names[oid]:
                    names[oid][fid] = str(folder.get("displayName") or "")
                    follow.append((oid, f"/users/{_quote(oid)}/contactFolders/{_quote(fid)}/childFolders"
                                        f"?$top={FOLDER_PAGE}&$select=id,displayName", "children"))
            if body.get("@odata.nextLink"):
                follow.append((oid, graph.relative(str(body["@odata.nextLink"])), "children"))
        pending = follow
    return {oid: _folders_of(oid, names[oid], defaults.get(oid), errors.get(oid)) for oid in object_ids}


def _folders_of(mailbox: str, names: dict[str, str], default: str | None, error: GraphError | None,
                ) -> Folders | GraphError:
    if error is not None:
        return error
    if not default:
        return GraphItemError(f"Microsoft Graph did not return the default Contacts folder of mailbox {mailbox}.")
    ordered = {default: names.pop(default)}
    ordered.update(names)
    return Folders(default, ordered)



def unreadable(mailbox: str, err: GraphError, *, company: bool) -> str | None:
    """Why a mailbox cannot be read at all, with the fix; None when the error is not about the mailbox."""
    missing = err.status == 404 and err.code.lower() in _NO_USER_CODES
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


def contact_url(mailbox: str, folder_id: str, graph_id: str) -> str:
    """One contact of a folder (a retried item, or one looked at again after a deletion)."""
    return (f"/users/{_quote(mailbox)}/contactFolders/{_quote(folder_id)}/contacts/{_quote(graph_id)}"
            f"?$select={','.join(GRAPH_SELECT)}")


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
        answers = self.graph.delta_many({f"d{i}": starts[k] for i, k in enumerate(keys)},
                                        headers={"Prefer": GRAPH_PREFER})
        return {k: answers.get(f"d{i}") or GraphUnavailable("no answer") for i, k in enumerate(keys)}

    def read_deltas(self, runs: Sequence[OwnerRun]) -> None:
        starts: dict[tuple[OwnerRun, str], str] = {}
        for r in runs:
            if r.ok:
                for fid, folder in r.folders.items():
                    starts[(r, fid)] = folder.delta_link or delta_start(r.mailbox, fid)
                    if not folder.delta_link:
                        r.fresh.add(fid)
        for (r, fid), answer in self._rounds(starts).items():
            if isinstance(answer, DeltaRound):
                r.rounds[fid] = answer
            elif isinstance(answer, DeltaExpired):
                r.expired.add(fid)
            elif answer.status == 404 and answer.code.lower() in _GONE_CODES:
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
                    starts[(r, fid)] = delta_start(r.mailbox, fid)
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
        answers = self.graph.batch([BatchRequest(f"r{i}", "GET", contact_url(r.mailbox, fid, gid),
                                                 {"Prefer": GRAPH_PREFER})
                                    for i, (r, gid, fid) in enumerate(requests_)])
        for i, (r, gid, fid) in enumerate(requests_):
            answer = answers.get(f"r{i}")
            if answer is not None and answer.status == 200 and isinstance(answer.body, dict):
                r.retry_items.append({**answer.body, "parentFolderId": fid})
            elif answer is not None and answer.status == 404:
                r.retry_removed[gid] = fid
            else:
                r.retry_rows.pop(gid)  # not read this time: stays in the retries table for the next run
