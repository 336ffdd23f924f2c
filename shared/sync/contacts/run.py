"""Contacts sync, the run: folder discovery, delta rounds through $batch, ClearVox writes, state.

The rules (mapping, hashing, the plan) are in shared.sync.contacts.rules; `run_contacts` is the runner's entry point.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from shared.clearvox import PAGE_SIZE as CV_PAGE_SIZE
from shared.clearvox import CvContact
from shared.digest import digest
from shared.errors import (
    AccountNotFound,
    ClearVoxError,
    ClearVoxForbidden,
    ClearVoxNotFound,
    ClearVoxUnauthorized,
    ClearVoxUnavailable,
    DeltaExpired,
    GraphError,
    GraphUnavailable,
    LicenseRequired,
    MailboxUnavailable,
)
from shared.graph.client import DeltaRound
from shared.graph.contacts import contacts_by_id, contacts_delta_many, discover_folders, folder_gone, user_gone
from shared.graph.contacts import delta_start as graph_delta_start
from shared.sync.contacts.rules import (
    MAX_DISPLAY_NAME,
    MAX_EMAILS,
    MAX_NAME,
    MAX_PHONES,
    MAX_TEXT,
    REASON_ABSENT,
    REASON_DELETED,
    REASON_DUPLICATE,
    REASON_FOLDER_REMOVED,
    REASON_NO_LONGER_QUALIFIES,
    REASON_NO_NUMBER,
    REASON_PUBLIC_KEPT,
    SYNCED_FIELDS,
    ContactsOptions,
    ContactsPlan,
    Create,
    Delete,
    Held,
    KeptPublic,
    MapChanges,
    MapEntry,
    MappedContact,
    Retained,
    Skip,
    Update,
    contact_hash,
    contact_name,
    contactmap_from_rows,
    cv_fields,
    differing_fields,
    field_hashes,
    hold_key,
    index_synced,
    map_changes,
    map_contact,
    plan_contacts,
    render_plan,
    retained_plan,
    summarize,
)
from shared.sync.users.rules import Link, links_from_rows

if TYPE_CHECKING:
    from shared.sync.base import SyncContext


# =========================================================================== the run (I/O)
#
# Everything below reads Graph, ClearVox and the state store and executes plans;
# the rules themselves stay in `plan_contacts` above.

# The contact properties the mapping reads ($select keeps delta pages small).
GRAPH_SELECT: tuple[str, ...] = (
    "id", "parentFolderId", "displayName", "givenName", "middleName", "surname", "companyName", "jobTitle",
    "emailAddresses", "businessPhones", "mobilePhone", "homePhones",
)
CURSOR_SCOPE = "contacts"  # cursors table partition of this sync: one row per user, one per folder
FULL_SPREAD = 0.25  # each user's full reconcile falls somewhere in the last quarter of full_sync_hours
STATE_READERS = 8  # parallel contactmap reads
OUTAGE_LIMIT = 20  # this many ClearVox writes failing in a row as unavailable stop the run
# No new ClearVox write starts after this long, so a run ends (state written, lease released) inside the
# Functions timeout of 30 minutes (host.json); the next run continues where this one stopped.
WRITE_BUDGET_S = 25 * 60.0
# ClearVox answers that stop the whole run: the key, the account or the licence is wrong.
_ABORT = (ClearVoxUnauthorized, ClearVoxForbidden, LicenseRequired, AccountNotFound)


def _quote(value: str) -> str:
    return quote(value, safe="")


def delta_start(object_id: str, folder_id: str) -> str:
    """The first request of a contacts delta round of one folder (relative to the Graph version root)."""
    return graph_delta_start(object_id, folder_id, GRAPH_SELECT)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


# --------------------------------------------------------------------------- cursors


@dataclass
class FolderCursor:
    """A contact folder of a user and the deltaLink that continues its contacts delta ("" = read it in full)."""

    folder_id: str
    name: str = ""
    delta_link: str = ""


@dataclass
class UserCursor:
    """What the sync remembers of one user: rows in the cursors table, partition "contacts".

    One row for the user (schedule and bookkeeping) and one per folder (its
    deltaLink), so a user with many folders never outgrows a table property.
    The folder list is re-discovered with the full reconcile, not on every run.
    """

    object_id: str
    cv_user_id: str = ""
    folders: dict[str, FolderCursor] = field(default_factory=dict)
    full_at: datetime | None = None  # last full reconcile: folders re-discovered, every contact compared
    hold: str = ""  # Held.key of the deletions held by the last run
    synced: int = 0  # contactmap rows after the last run
    retries: int = 0  # rows waiting in the retries table
    unavailable: str = ""  # why the mailbox cannot be read; looked at again on the full-reconcile cadence
    checked_at: datetime | None = None
    retained: str = ""  # why the synced contacts are no longer synced (reported once)
    needs_full: bool = False  # e.g. the contactmap was found incomplete

    def folder_key(self, folder_id: str) -> str:
        return f"{self.object_id}|{digest(folder_id, 20)}"  # Graph ids are long and opaque: hash them into the key

    def rows(self) -> dict[str, dict[str, Any]]:
        """The table rows of this cursor (None values are left out by the state layer)."""
        out: dict[str, dict[str, Any]] = {self.object_id: {
            "kind": "user", "object_id": self.object_id, "cv_user_id": self.cv_user_id, "full_at": self.full_at,
            "hold": self.hold, "synced": self.synced, "retries": self.retries, "unavailable": self.unavailable,
            "checked_at": self.checked_at, "retained": self.retained, "needs_full": self.needs_full,
        }}
        for fid, folder in self.folders.items():
            out[self.folder_key(fid)] = {"kind": "folder", "object_id": self.object_id, "folder_id": fid,
                                         "name": folder.name, "delta_link": folder.delta_link}
        return out


def load_cursors(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, UserCursor]:
    """`State.rows("cursors", CURSOR_SCOPE)` -> {object id: UserCursor}; orphaned folder rows are ignored."""
    users: dict[str, UserCursor] = {}
    folders: list[Mapping[str, Any]] = []
    for key, row in rows.items():
        if row.get("kind") == "user":
            oid = str(row.get("object_id") or key)
            users[oid] = UserCursor(
                oid, cv_user_id=str(row.get("cv_user_id") or ""), full_at=_as_datetime(row.get("full_at")),
                hold=str(row.get("hold") or ""), synced=int(row.get("synced") or 0), retries=int(row.get("retries") or 0),
                unavailable=str(row.get("unavailable") or ""), checked_at=_as_datetime(row.get("checked_at")),
                retained=str(row.get("retained") or ""), needs_full=bool(row.get("needs_full", False)))
        elif row.get("kind") == "folder" and row.get("folder_id"):
            folders.append(row)
    for row in folders:
        user = users.get(str(row.get("object_id") or ""))
        if user is not None:
            fid = str(row["folder_id"])
            user.folders[fid] = FolderCursor(fid, str(row.get("name") or ""), str(row.get("delta_link") or ""))
    return users


def full_reconcile_due(object_id: str, since: datetime | None, now: datetime, hours: int) -> bool:
    """True when `since` is older than this user's period: full_sync_hours, shortened by up to a quarter.

    The per-user shortening (stable, from the object id) spreads the full
    reconciles of users who were first synced together over several runs.
    """
    if since is None:
        return True
    spread = int(digest(object_id, 8), 16) / 16**8
    return now - since >= timedelta(hours=hours) * (1 - FULL_SPREAD * spread)


# --------------------------------------------------------------------------- folder discovery


# --------------------------------------------------------------------------- one user's run


@dataclass
class _Outcome:
    """What happened to one user's ClearVox writes (filled in by the run's main thread only)."""

    created: dict[str, str] = field(default_factory=dict)  # Graph id -> ClearVox id written anew or found
    failed: dict[str, str] = field(default_factory=dict)  # Graph id -> reason
    done: set[int] = field(default_factory=set)  # indexes of finished items
    user_missing: bool = False


@dataclass(eq=False)
class _UserRun:
    """One linked user in this run: what Graph said, what is planned, what was done."""

    link: Link
    cursor: UserCursor  # as stored (or new)
    full: bool  # folders re-discovered and every folder read from the start
    folders: dict[str, FolderCursor] = field(default_factory=dict)  # the folder list to keep
    rounds: dict[str, DeltaRound] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)  # folders read from the start this run (complete rounds)
    expired: set[str] = field(default_factory=set)  # of those, the ones whose delta token had expired
    missing: set[str] = field(default_factory=set)  # folders whose delta answered 404
    removed_folders: dict[str, str] = field(default_factory=dict)  # folder id -> name, gone from Outlook
    rediscover: bool = False
    retry_rows: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    retry_items: list[dict[str, Any]] = field(default_factory=list)
    retry_removed: dict[str, str | None] = field(default_factory=dict)
    problem: str = ""  # left out of this run, reported as a failure
    unavailable: str = ""  # mailbox cannot be read, reported as a skip
    checked: bool = False  # `unavailable` comes from Graph in this run (not from the cursor)
    contactmap: dict[str, MapEntry] = field(default_factory=dict)
    map_lost: bool = False
    need_listing: bool = False
    listing: tuple[dict[str, CvContact], list[CvContact]] | None = None
    cv_user: str = ""  # "", "active", "inactive" or "missing"
    plan: ContactsPlan | None = None
    items: list[Create | Update | Delete] = field(default_factory=list)
    outcome: _Outcome = field(default_factory=_Outcome)

    @property
    def object_id(self) -> str:
        return self.link.object_id

    @property
    def owner(self) -> str:
        return self.link.cv_user_id or ""

    @property
    def ok(self) -> bool:
        return not self.problem and not self.unavailable

    @property
    def has_changes(self) -> bool:
        return (self.full or bool(self.fresh or self.removed_folders or self.retry_items or self.retry_removed)
                or any(r.items or r.removed for r in self.rounds.values()))

    def changes(self) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
        """This run's contacts and removals; each contact carries the folder whose round returned it.

        Retried items come first so that a newer version from a delta round wins.
        The folder is taken from the round rather than `parentFolderId`, which
        may be in another id format than the folder list.
        """
        items = list(self.retry_items)
        removed: dict[str, str | None] = dict(self.retry_removed)
        for fid, rnd in self.rounds.items():
            items += [{**item, "parentFolderId": fid} for item in rnd.items]
            removed.update({str(item.get("id") or ""): fid for item in rnd.removed})
        return items, removed


@dataclass(frozen=True)
class _Done:
    """The result of one ClearVox item, handed from a worker thread to the main thread."""

    index: int
    result: str  # created | updated | unchanged | deleted | gone | kept_public | failed | user_missing
    cv_id: str = ""
    reason: str = ""
    replaced: bool = False  # the contact was written under another ClearVox id than the plan's
    outage: bool = False  # ClearVox unreachable or overloaded after the client's retries


class ContactsRun:
    """The contacts sync of one tenant: whose, which folders, delta rounds, plans, ClearVox writes, state.

    Cost model: a run with no changes costs one $batch per 20 folders and no
    ClearVox request. ClearVox is read only for users with something to write
    (activity check) and listed only where reconciling by external_id needs it
    (a full round, an expired token, a lost contactmap, or more look-ups than
    list pages). Folder discovery happens with the full reconcile (every
    full_sync_hours) and when a folder disappears or contacts are removed.
    """

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.graph = ctx.graph
        self.cv = ctx.clearvox
        self.state = ctx.state
        self.report = ctx.report
        self.now = ctx.now
        self.hours = ctx.options.full_sync_hours
        self.workers = max(1, ctx.options.clearvox_concurrency)
        self.options = ContactsOptions(default_region=ctx.options.default_region,
                                       confirm_deletions=bool(ctx.args.get("confirm_deletions")))
        self.plans: list[ContactsPlan] = []  # for --dry-run and the summary
        self.stale_cursor_keys: list[str] = []
        self.totals: Counter[str] = Counter()
        self.deadline = time.monotonic() + WRITE_BUDGET_S

    # -- the run -----------------------------------------------------------
    def run(self) -> None:
        links = links_from_rows(self.state.rows("links"))
        cursors = load_cursors(self.state.rows("cursors", CURSOR_SCOPE))
        linked = {oid: link for oid, link in links.items() if link.status == "linked" and link.cv_user_id}
        self._retained(cursors, links, linked)
        runs = self._select(linked, cursors)
        self._discover([r for r in runs if r.full])
        self._read_deltas(runs)
        self._follow_up(runs)
        self._read_retries(runs)
        work = [r for r in runs if r.ok and r.has_changes]
        quiet = [r for r in runs if r.ok and not r.has_changes]
        self._load_contactmaps(work)
        self._plan(work, len(linked))
        for r in runs:
            if r.problem:
                self.report.add_failure(r.object_id, r.problem)
            elif r.unavailable:
                self._unavailable(r)
        self.report.extra.update({"users": len(linked), "users_with_changes": len(work)})
        if self.ctx.dry_run:
            self._dry_run()
            return
        self._commit_quiet(quiet)
        self._apply([r for r in work if r.plan is not None])
        self._finish_report()

    # -- whose -------------------------------------------------------------
    def _retained(self, cursors: Mapping[str, UserCursor], links: Mapping[str, Link], linked: Mapping[str, Link]) -> None:
        """Users synced before but no longer linked keep their contacts; said once, counted every run."""
        notice: dict[str, dict[str, Any]] = {}
        for oid, cursor in cursors.items():
            if oid in linked or cursor.synced <= 0:
                continue
            link = links.get(oid)
            if link is None:
                why = "no longer linked (removed from the users sync)"
            elif link.status == "deactivated":
                why = "removed or disabled in Entra; ClearVox user deactivated"
            else:
                why = f"no longer linked ({link.status})"
            self.totals["retained"] += cursor.synced
            if cursor.retained != why:
                plan = ContactsPlan(cursor.cv_user_id, retained=Retained(cursor.cv_user_id, cursor.synced, why))
                self.plans.append(plan)
                self.report.add_skip(cursor.cv_user_id or oid, plan.retained.describe() if plan.retained else why)
                notice[oid] = {**cursor.rows()[oid], "retained": why}
        if notice and not self.ctx.dry_run:
            self.state.replace("cursors", notice, CURSOR_SCOPE)

    def _select(self, linked: Mapping[str, Link], cursors: Mapping[str, UserCursor]) -> list[_UserRun]:
        runs: list[_UserRun] = []
        for oid, link in sorted(linked.items()):
            cursor = cursors.get(oid) or UserCursor(oid, link.cv_user_id or "")
            if cursor.cv_user_id and cursor.cv_user_id != link.cv_user_id:
                self.report.add_warning(oid, f"now linked to ClearVox user {link.cv_user_id}, was {cursor.cv_user_id}: "
                                             f"the {cursor.synced} contacts synced to {cursor.cv_user_id} are kept")
                self.stale_cursor_keys += [cursor.folder_key(fid) for fid in cursor.folders]
                cursor = UserCursor(oid, link.cv_user_id or "")
            if cursor.unavailable and not full_reconcile_due(oid, cursor.checked_at, self.now, self.hours):
                run = _UserRun(link, cursor, False, unavailable=cursor.unavailable)
                runs.append(run)
                continue
            full = (cursor.needs_full or not cursor.folders or cursor.unavailable != ""
                    or full_reconcile_due(oid, cursor.full_at, self.now, self.hours))
            folders = {} if full else {fid: replace(f) for fid, f in cursor.folders.items()}
            runs.append(_UserRun(link, cursor, full, folders))
        return runs

    def _unavailable(self, r: _UserRun) -> None:
        """A mailbox that cannot be read is a skip, looked at again on the full-reconcile cadence."""
        self.report.add_skip(r.object_id, f"{r.unavailable} Contacts are not synced; checked again with the next "
                                          f"full reconcile (every {self.hours} h).")
        if self.ctx.dry_run or not r.checked:
            return
        cursor = replace(r.cursor, unavailable=r.unavailable, checked_at=self.now)
        self.state.replace("cursors", {r.object_id: cursor.rows()[r.object_id]}, CURSOR_SCOPE)

    def _graph_problem(self, r: _UserRun, err: GraphError) -> None:
        if isinstance(err, MailboxUnavailable):
            r.unavailable, r.checked = str(err), True
        elif user_gone(err):
            r.unavailable, r.checked = f"user {r.object_id} was not found in Microsoft 365.", True
        else:
            r.problem = f"contacts not read: {err}"

    # -- which: folders and delta rounds -------------------------------------
    def _discover(self, runs: Sequence[_UserRun]) -> None:
        if not runs:
            return
        found = discover_folders(self.graph, [r.object_id for r in runs])
        for r in runs:
            result = found[r.object_id]
            if isinstance(result, GraphError):
                self._graph_problem(r, result)
                continue
            known = r.cursor.folders if r.full else r.folders
            for fid, folder in known.items():
                if fid not in result.names:
                    r.removed_folders[fid] = folder.name
                    r.rounds.pop(fid, None)
            kept = {} if r.full else r.folders
            r.folders = {fid: FolderCursor(fid, name, kept[fid].delta_link if fid in kept else "")
                         for fid, name in result.names.items()}

    def _rounds(self, starts: Mapping[tuple[_UserRun, str], str]) -> dict[tuple[_UserRun, str], DeltaRound | GraphError]:
        keys = list(starts)
        answers = contacts_delta_many(self.graph, {f"d{i}": starts[k] for i, k in enumerate(keys)})
        return {k: answers.get(f"d{i}") or GraphUnavailable("no answer") for i, k in enumerate(keys)}

    def _read_deltas(self, runs: Sequence[_UserRun]) -> None:
        starts: dict[tuple[_UserRun, str], str] = {}
        for r in runs:
            if r.ok:
                for fid, folder in r.folders.items():
                    starts[(r, fid)] = folder.delta_link or delta_start(r.object_id, fid)
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
                self._graph_problem(r, answer)

    def _follow_up(self, runs: Sequence[_UserRun]) -> None:
        """Re-discover where a folder vanished or contacts were removed (maybe moved to a new folder), then read
        new folders and folders whose delta token expired from the start."""
        for r in runs:
            if r.ok and not r.full and any(rnd.removed for rnd in r.rounds.values()):
                r.rediscover = True
        again = [r for r in runs if r.ok and r.rediscover and not r.full]
        before = {id(r): set(r.folders) for r in again}
        self._discover(again)
        starts: dict[tuple[_UserRun, str], str] = {}
        for r in runs:
            if not r.ok:
                continue
            for fid in r.missing:
                if fid in r.folders:
                    r.problem = f"contact folder {r.folders[fid].name or fid} could not be read (not found)"
            new = set(r.folders) - before.get(id(r), set(r.folders))
            for fid in (r.expired | new) & set(r.folders):
                if r.ok:
                    starts[(r, fid)] = delta_start(r.object_id, fid)
        for (r, fid), answer in self._rounds(starts).items():
            if isinstance(answer, DeltaRound):
                r.rounds[fid] = answer
                r.fresh.add(fid)
            elif r.ok:
                self._graph_problem(r, answer)

    def _read_retries(self, runs: Sequence[_UserRun]) -> None:
        """Items that failed last run: fetched again from Graph (a 404 means they left the folder)."""
        todo = [r for r in runs if r.ok and r.cursor.retries > 0 and r.cursor.cv_user_id == r.owner]
        requests_: list[tuple[_UserRun, str, str]] = []
        for r in todo:
            for key, row in self.state.rows("retries", _retry_scope(r.owner)).items():
                gid = str(row.get("graph_id") or key)
                fid = str(row.get("folder_id") or "")
                r.retry_rows[gid] = row
                if row.get("action") == "delete" or fid not in r.folders:
                    r.retry_removed[gid] = fid or None
                else:
                    requests_.append((r, gid, fid))
        if not requests_:
            return
        answers = contacts_by_id(self.graph, [(r.object_id, fid, gid) for r, gid, fid in requests_], GRAPH_SELECT)
        for (r, gid, fid), answer in zip(requests_, answers, strict=True):
            if isinstance(answer, dict):
                r.retry_items.append({**answer, "parentFolderId": fid})
            elif answer is None:
                r.retry_removed[gid] = fid
            else:
                r.retry_rows.pop(gid)  # not read this time: stays in the retries table for the next run

    # -- plans ---------------------------------------------------------------
    def _load_contactmaps(self, runs: Sequence[_UserRun]) -> None:
        def load(r: _UserRun) -> None:
            r.contactmap = contactmap_from_rows(self.state.rows("contactmap", r.owner))
            # Fewer rows than the last run left: rows were lost, so reconcile against ClearVox.
            r.map_lost = r.cursor.cv_user_id == r.owner and len(r.contactmap) < r.cursor.synced

        if runs:
            with ThreadPoolExecutor(max_workers=min(STATE_READERS, len(runs))) as pool:
                list(pool.map(load, runs))

    def _plan_one(self, r: _UserRun) -> ContactsPlan:
        items, removed = r.changes()
        synced, duplicates = r.listing if r.listing is not None else (None, [])
        return plan_contacts(
            r.owner, items, removed_ids=removed, removed_folder_ids=set(r.removed_folders), contactmap=r.contactmap,
            cv_synced=synced, duplicates=duplicates, options=self.options,
            previous_hold=(r.cursor.hold or None) if r.cursor.cv_user_id == r.owner else None,
            complete=r.full, complete_folder_ids=r.fresh,
        )

    def _plan(self, work: Sequence[_UserRun], linked_count: int) -> None:
        """Plan without ClearVox reads, then read ClearVox only where the plan needs it, then plan again."""
        check: list[_UserRun] = []
        for r in work:
            r.plan = self._plan_one(r)
            r.need_listing = r.full or bool(r.expired) or r.map_lost
            if not r.need_listing and r.plan.needs_cv_index:
                lookups = sum(c.reconcile for c in r.plan.creates) + sum(d.verify for d in r.plan.deletes)
                pages = max(1, math.ceil((len(r.contactmap) + len(r.plan.creates)) / CV_PAGE_SIZE))
                r.need_listing = lookups > pages  # listing the user's contacts is cheaper than one look-up each
            if r.need_listing or r.plan.creates or r.plan.updates or r.plan.deletes:
                check.append(r)
        self._read_clearvox([r for r in work if r.need_listing], check, linked_count)
        for r in work:
            if r.problem or r.cv_user in ("inactive", "missing"):
                r.plan = None
                if r.cv_user:
                    why = "ClearVox user is inactive" if r.cv_user == "inactive" else "ClearVox user not found"
                    self.report.add_skip(r.owner, Retained(r.owner, len(r.contactmap), why).describe())
                    self.totals["retained"] += len(r.contactmap)
                continue
            if r.listing is not None:
                r.plan = self._plan_one(r)
            if r.plan is not None:
                self.plans.append(r.plan)

    def _read_clearvox(self, listing: Sequence[_UserRun], check: Sequence[_UserRun], linked_count: int) -> None:
        """Concurrent ClearVox reads: contact listings, and whether the users with writes are active.

        Activity is read per user (GET) when few users have writes, else with one
        paged listing of all users: never one read per linked user per run.
        """
        owners = {r.owner for r in check}
        bulk = len(owners) > max(1, math.ceil(linked_count / CV_PAGE_SIZE))
        status: dict[str, str] = {}
        lock = threading.Lock()

        def list_contacts(r: _UserRun) -> None:
            try:
                contacts = list(self.cv.iter_contacts(r.owner))
            except _ABORT:
                raise
            except ClearVoxNotFound:
                r.cv_user = "missing"
                return
            except ClearVoxError as exc:
                r.problem = f"ClearVox contacts of user {r.owner} not read: {exc}"
                return
            r.listing = index_synced(contacts, r.contactmap)

        def user_status(owner: str) -> None:
            try:
                user = self.cv.get_user(owner)
                value = "active" if user.active else "inactive"
            except _ABORT:
                raise
            except ClearVoxNotFound:
                value = "missing"
            except ClearVoxError:
                value = ""  # unknown: the writes will tell
            with lock:
                status[owner] = value

        def all_users() -> None:
            try:
                found = {u.id: ("active" if u.active else "inactive") for u in self.cv.list_users()}
            except _ABORT:
                raise
            except ClearVoxError:
                return  # unknown: the writes will tell
            with lock:
                status.update({o: found.get(o, "missing") for o in owners})

        tasks: list[Callable[[], None]] = [functools.partial(list_contacts, r) for r in listing]
        tasks += [all_users] if bulk and owners else [functools.partial(user_status, o) for o in sorted(owners)]
        if tasks:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(tasks))) as pool:
                for future in [pool.submit(t) for t in tasks]:
                    future.result()
        for r in check:
            if not r.cv_user:
                r.cv_user = status.get(r.owner, "")

    # -- dry run -------------------------------------------------------------
    def _dry_run(self) -> None:
        summary = summarize(self.plans)
        for what in ("created", "updated", "deleted", "unchanged"):
            self.report.count(what, int(summary[what]))
        self._report_plans(self.plans)
        shown = [p for p in self.plans if not p.is_noop or p.skips or p.hold or p.retained or p.warnings]
        self.report.plan_text = "\n".join(render_plan(p) for p in shown) or "contacts: nothing to do"
        self.report.extra.update({"kept_public": summary["kept_public"], "held": summary["held"],
                                  "retained": self.totals["retained"]})

    def _report_plans(self, plans: Iterable[ContactsPlan]) -> None:
        for plan in plans:
            for skip in plan.skips:
                self.report.add_skip(skip.id, skip.describe())
            for kept in plan.kept_public:
                self.report.add_skip(kept.graph_contact_id, kept.describe())
            for warning in plan.warnings:
                self.report.add_warning(warning.id, warning.describe())
            if plan.hold is not None:
                self.report.add_skip(plan.owner_cv_user_id, plan.hold.reason())
            if plan.released_hold is not None:
                self.report.add_warning(plan.owner_cv_user_id, "deletions held by the previous run went through")

    # -- apply ---------------------------------------------------------------
    def _commit_quiet(self, runs: Sequence[_UserRun]) -> None:
        """Users without changes: only new deltaLinks (and nothing at all when Graph returned the same ones)."""
        rows: dict[str, dict[str, Any]] = {}
        for r in runs:
            rows.update(self._cursor_rows(r, r.cursor.synced, r.cursor.retries, hold=""))
        if rows:
            self.state.replace("cursors", rows, CURSOR_SCOPE)
        if self.stale_cursor_keys:
            self.state.delete("cursors", self.stale_cursor_keys, CURSOR_SCOPE)

    def _cursor_rows(self, r: _UserRun, synced: int, retries: int, hold: str) -> dict[str, dict[str, Any]]:
        """The cursor rows that differ from what is stored; folders that disappeared are deleted right away."""
        folders = {fid: FolderCursor(fid, f.name, r.rounds[fid].delta_link if fid in r.rounds else f.delta_link)
                   for fid, f in r.folders.items() if fid not in r.removed_folders}
        cursor = UserCursor(r.object_id, r.owner, folders, full_at=self.now if r.full else r.cursor.full_at, hold=hold,
                            synced=synced, retries=retries, needs_full=r.map_lost and not r.full)
        stored, wanted = r.cursor.rows(), cursor.rows()
        rows = {k: v for k, v in wanted.items() if stored.get(k) != v}
        gone = [k for k in stored if k not in wanted]
        if gone:
            self.state.delete("cursors", gone, CURSOR_SCOPE)
        return rows

    def _apply(self, work: Sequence[_UserRun]) -> None:
        """ClearVox writes of every user through one bounded pool; each user's state is written when its last
        write is done, so a run that stops midway keeps the work of the users it finished."""
        tasks: list[tuple[_UserRun, int]] = []
        for r in work:
            assert r.plan is not None
            self._report_plans([r.plan])
            self.report.count("unchanged", len(r.plan.unchanged))
            r.items = [*r.plan.deletes, *r.plan.updates, *r.plan.creates]
            if r.items:
                tasks += [(r, i) for i in range(len(r.items))]
            else:
                self._commit(r)
        if not tasks:
            return
        feed = iter(tasks)
        feed_lock = threading.Lock()
        results: queue.Queue[tuple[_UserRun, _Done | BaseException] | None] = queue.Queue()
        stop = threading.Event()

        def worker() -> None:
            try:
                while not stop.is_set() and time.monotonic() < self.deadline:
                    with feed_lock:
                        task = next(feed, None)
                    if task is None:
                        return
                    r, index = task
                    try:
                        done: _Done | BaseException = self._write(r, index)
                    except BaseException as exc:  # handed to the main thread, which stops the run
                        done = exc
                    results.put((r, done))
            finally:
                results.put(None)

        threads = [threading.Thread(target=worker, name=f"contacts-cv-{i}", daemon=True)
                   for i in range(min(self.workers, len(tasks)))]
        for t in threads:
            t.start()
        alive, error, outages = len(threads), None, 0
        outage_limit = max(OUTAGE_LIMIT, 3 * self.workers)
        try:
            while alive:
                message = results.get()
                if message is None:
                    alive -= 1
                    continue
                r, done = message
                if isinstance(done, BaseException):
                    if error is None:
                        error = done
                        stop.set()
                    continue
                self._record(r, done)
                outages = outages + 1 if done.outage else 0
                if outages >= outage_limit and error is None:  # ClearVox is down: stop instead of failing every item
                    error = ClearVoxUnavailable(f"ClearVox failed {outages} writes in a row ({done.reason}); the run "
                                                "stopped and the next run continues where it left off", 0, "outage")
                    stop.set()
                if len(r.outcome.done) == len(r.items):
                    self._commit(r)
        except BaseException:
            stop.set()  # the main thread failed (e.g. the state store): no more writes
            raise
        cut_off = [r for r in work if r.items and len(r.outcome.done) < len(r.items)]
        for r in cut_off:  # keep what was written for users cut off midway; their deltaLinks stay
            if r.outcome.done:
                self._commit(r, finished=False)
        if error is not None:
            raise error
        if cut_off:
            left = sum(len(r.items) - len(r.outcome.done) for r in cut_off)
            self.report.add_warning("contacts", f"time budget of {WRITE_BUDGET_S / 60:.0f} minutes used up: {left} "
                                                f"ClearVox writes of {len(cut_off)} users left for the next run")
            self.report.extra["incomplete"] = True

    def _write(self, r: _UserRun, index: int) -> _Done:
        """One ClearVox write (worker thread). Errors that concern only this item are returned, not raised."""
        item = r.items[index]
        try:
            if isinstance(item, Create):
                return self._create(index, item)
            if isinstance(item, Update):
                return self._update(index, item)
            return self._delete(index, r.owner, item)
        except _ABORT:
            raise
        except ClearVoxUnavailable as exc:
            return _Done(index, "failed", reason=str(exc), outage=True)
        except ClearVoxError as exc:
            return _Done(index, "failed", reason=str(exc))

    def _find(self, owner: str, graph_id: str) -> CvContact | None:
        """The user's ClearVox contact carrying this external_id (public first, then lowest id), if any."""
        found = [c for c in self.cv.iter_contacts(owner, external_id=graph_id)
                 if c.external_id == graph_id and c.owner_user_id == owner]
        return min(found, key=lambda c: (c.visibility != "public", c.id), default=None)

    def _write_contact(self, index: int, owner: str, contact: MappedContact, *, look_up: bool) -> _Done:
        if look_up:
            try:
                existing = self._find(owner, contact.graph_contact_id)
            except ClearVoxNotFound:
                return _Done(index, "user_missing", reason=f"ClearVox user {owner} not found")
            if existing is not None:
                diff = differing_fields(contact.fields(), cv_fields(existing))
                if diff:
                    self.cv.update_contact(existing.id, diff)
                return _Done(index, "updated" if diff else "unchanged", existing.id, replaced=True)
        try:
            created = self.cv.create_contact(owner, contact.create_fields())
        except ClearVoxNotFound:
            return _Done(index, "user_missing", reason=f"ClearVox user {owner} not found")
        return _Done(index, "created", created.id, replaced=True)

    def _create(self, index: int, c: Create) -> _Done:
        return self._write_contact(index, c.owner_cv_user_id, c.contact, look_up=c.reconcile)

    def _update(self, index: int, u: Update) -> _Done:
        try:
            self.cv.update_contact(u.cv_contact_id, dict(u.changes))
        except ClearVoxNotFound:  # deleted in ClearVox meanwhile while still in Outlook: written again
            return self._write_contact(index, u.owner_cv_user_id, u.contact, look_up=True)
        return _Done(index, "updated", u.cv_contact_id)

    def _delete(self, index: int, owner: str, d: Delete) -> _Done:
        if d.verify:  # planned without a listing: delete only what is still ours and private
            try:
                current = self.cv.get_contact(d.cv_contact_id)
            except ClearVoxNotFound:
                return _Done(index, "gone", d.cv_contact_id)
            if current.external_id != d.graph_contact_id or current.owner_user_id != owner:
                return _Done(index, "gone", d.cv_contact_id)
            if current.visibility == "public":
                kept = KeptPublic(current.id, d.graph_contact_id, d.reason, d.name or current.display_name)
                return _Done(index, "kept_public", current.id, reason=kept.describe())
        try:
            self.cv.delete_contact(d.cv_contact_id)
        except ClearVoxNotFound:
            return _Done(index, "gone", d.cv_contact_id)
        return _Done(index, "deleted", d.cv_contact_id)

    def _record(self, r: _UserRun, done: _Done) -> None:
        """Main thread: count and remember one finished write."""
        item = r.items[done.index]
        out = r.outcome
        out.done.add(done.index)
        gid = item.graph_contact_id
        if done.result in ("created", "updated", "deleted", "unchanged"):
            self.report.count(done.result)
        if done.replaced:
            out.created[gid] = done.cv_id
        if done.result == "kept_public":
            self.totals["kept_public"] += 1
            self.report.add_skip(gid, done.reason)
        elif done.result == "user_missing":
            out.user_missing = True
            out.failed[gid] = done.reason
        elif done.result == "failed":
            name = item.contact.display_name if isinstance(item, Create | Update) else item.name
            if isinstance(item, Delete) and item.duplicate:  # the keeper shares the Graph id: report by ClearVox id
                self.report.add_failure(item.cv_contact_id, f"{done.reason} ({item.reason})")
                return
            out.failed[gid] = done.reason
            self.report.add_failure(gid, f"{done.reason} ({name})" if name else done.reason)

    def _commit(self, r: _UserRun, *, finished: bool = True) -> None:
        """Write one user's state after its writes: contactmap, retries, then the deltaLinks.

        The deltaLinks move on only when every change was applied or recorded
        for retry; a hold keeps them (and the folder list) where they are, so
        the next run sees the same deletions again.
        """
        plan, out = r.plan, r.outcome
        assert plan is not None
        not_done = {item.graph_contact_id for i, item in enumerate(r.items)
                    if i not in out.done and not (isinstance(item, Delete) and item.duplicate)}
        changes = map_changes(plan, out.created, failed=set(out.failed) | not_done)
        if changes.upserts:
            self.state.upsert("contactmap", changes.rows(), r.owner)
        if changes.deletes:
            self.state.delete("contactmap", changes.deletes, r.owner)
        if not finished:
            return
        if out.user_missing:
            self.report.add_skip(r.owner, Retained(r.owner, len(r.contactmap), "ClearVox user not found").describe())
            return
        retry_scope = _retry_scope(r.owner)
        retry_rows: dict[str, dict[str, Any]] = {}
        for item in r.items:
            gid = item.graph_contact_id
            if gid not in out.failed or (isinstance(item, Delete) and item.duplicate):
                continue
            old = r.retry_rows.get(gid) or {}
            entry = r.contactmap.get(gid)
            folder = item.contact.folder_id if isinstance(item, Create | Update) else (entry.folder_id if entry else "")
            retry_rows[gid] = {"graph_id": gid, "action": "delete" if isinstance(item, Delete) else "upsert",
                               "folder_id": folder, "reason": out.failed[gid][:1000],
                               "attempts": int(old.get("attempts") or 0) + 1, "at": self.now}
        if retry_rows:
            self.state.replace("retries", retry_rows, retry_scope)
        handled = [gid for gid in r.retry_rows if gid not in retry_rows]
        if handled:
            self.state.delete("retries", handled, retry_scope)
        waiting = r.cursor.retries - len(r.retry_rows) if r.cursor.cv_user_id == r.owner else 0
        retries = max(0, waiting) + len(retry_rows)  # rows not read this run stay in the table
        synced = len((set(r.contactmap) | set(changes.upserts)) - set(changes.deletes))
        if plan.hold is not None:
            cursor = replace(r.cursor, cv_user_id=r.owner, hold=plan.hold.key, synced=synced, retries=retries,
                             retained="", unavailable="")
            stored = r.cursor.rows()[r.object_id]
            row = cursor.rows()[r.object_id]
            if row != stored:
                self.state.replace("cursors", {r.object_id: row}, CURSOR_SCOPE)
            return
        rows = self._cursor_rows(r, synced, retries, hold="")
        if rows:
            self.state.replace("cursors", rows, CURSOR_SCOPE)

    def _finish_report(self) -> None:
        summary = summarize(self.plans)
        self.report.extra.update({"kept_public": int(summary["kept_public"]) + self.totals["kept_public"],
                                  "held": summary["held"], "retained": self.totals["retained"]})


def _retry_scope(owner: str) -> str:
    return f"contacts|{owner}"


def run_contacts(ctx: SyncContext) -> None:
    """Entry point of the contacts sync (shared.runner)."""
    ContactsRun(ctx).run()


__all__ = [
    "CURSOR_SCOPE", "GRAPH_SELECT", "MAX_DISPLAY_NAME", "MAX_EMAILS", "MAX_NAME", "MAX_PHONES",
    "MAX_TEXT", "REASON_ABSENT", "REASON_DELETED", "REASON_DUPLICATE", "REASON_FOLDER_REMOVED",
    "REASON_NO_LONGER_QUALIFIES", "REASON_NO_NUMBER", "REASON_PUBLIC_KEPT", "SYNCED_FIELDS", "ContactsOptions",
    "ContactsPlan", "ContactsRun", "Create", "Delete", "FolderCursor", "Held", "KeptPublic", "MapChanges",
    "MapEntry", "MappedContact", "Retained", "Skip", "Update", "UserCursor", "contact_hash", "contact_name",
    "contactmap_from_rows", "cv_fields", "delta_start", "field_hashes", "full_reconcile_due",
    "hold_key", "index_synced", "load_cursors", "map_changes", "map_contact", "plan_contacts", "render_plan",
    "retained_plan", "run_contacts", "summarize",
]
