"""Contacts sync, applying plans: ClearVox writes through the one applier, then each owner's state.

Writes go through `SyncContext.apply` (shared.sync.base): bounded concurrency, the
run's time budget, the lease check, and the one outage rule (the run stops writing
when ClearVox cannot be reached, or after OUTAGE_IN_A_ROW writes in a row failed
as unavailable; any other failure fails that contact only, kept for a retry).

A create whose answer is lost (a gateway 504 or a timeout after ClearVox may have
made the contact) is never sent again blindly: it is reported as failed with an
unknown outcome, and every later create of that contact, in this run or the next,
first looks it up by its `external_id`.

An owner's state is written as soon as its last write is done: contactmap, retry
rows, then the delta links, so a run that stops midway keeps the work of the
owners it finished. A contact deleted because Outlook reported it removed is
looked at again by the next run (a retry row "recheck"): if Outlook still has
it, the removal was a bad answer and the contact is created again at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.clearvox import CvContact
from shared.errors import ClearVoxNotFound, ClearVoxUnavailable, LeaseLost
from shared.sync.base import next_retries
from shared.sync.contacts.cursors import CURSOR_SCOPE, FolderCursor, UserCursor
from shared.sync.contacts.mapping import MappedContact, cv_fields, differing_fields
from shared.sync.contacts.owner import OwnerRun
from shared.sync.contacts.rules import (
    REASON_DELETED,
    Create,
    Delete,
    KeptPublic,
    Retained,
    Update,
    map_changes,
)

if TYPE_CHECKING:
    from shared.clearvox import ClearVox
    from shared.report import RunReport
    from shared.state import State
    from shared.sync.base import SyncContext

RECHECK = "recheck"  # retry-row action: deleted on Outlook's word, looked at again next run


@dataclass(frozen=True)
class Done:
    """The result of one ClearVox item, handed from a worker thread to the main thread."""

    result: str  # created | updated | unchanged | deleted | gone | kept_public | user_missing
    cv_id: str = ""
    reason: str = ""
    replaced: bool = False  # the contact was written under another ClearVox id than the plan's


@dataclass(frozen=True)
class Task:
    run: OwnerRun
    index: int

    @property
    def item(self) -> Create | Update | Delete:
        return self.run.items[self.index]


class Writer:
    """The ClearVox writes of one item (worker threads). Errors are raised for the applier to class."""

    def __init__(self, cv: ClearVox) -> None:
        self.cv = cv
        self.uncertain: set[tuple[str, str]] = set()  # (owner, Graph id) of creates with an unknown outcome

    def write(self, task: Task) -> Done:
        item, owner = task.item, task.run.owner
        if isinstance(item, Create):
            return self.contact(owner, item.contact, look_up=item.reconcile)
        if isinstance(item, Update):
            try:
                self.cv.update_contact(item.cv_contact_id, dict(item.changes))
            except ClearVoxNotFound:  # deleted in ClearVox meanwhile while still in Outlook: written again
                return self.contact(owner, item.contact, look_up=True)
            return Done("updated", item.cv_contact_id)
        return self.delete(owner, item)

    def find(self, owner: str, graph_id: str) -> CvContact | None:
        """The owner's ClearVox contact carrying this external_id (public first, then lowest id), if any."""
        listed = (self.cv.iter_contacts(owner, external_id=graph_id) if owner
                  else self.cv.iter_company_contacts(external_id=graph_id))
        found = [c for c in listed if c.external_id == graph_id and (c.owner_user_id or "") == owner]
        return min(found, key=lambda c: (c.visibility != "public", c.id), default=None)

    def contact(self, owner: str, contact: MappedContact, *, look_up: bool) -> Done:
        gid = contact.graph_contact_id
        try:
            if look_up or (owner, gid) in self.uncertain:
                existing = self.find(owner, gid)
                if existing is not None:
                    diff = differing_fields(contact.fields(), cv_fields(existing))
                    if diff:
                        self.cv.update_contact(existing.id, diff)
                    return Done("updated" if diff else "unchanged", existing.id, replaced=True)
            created = self._create(owner, contact)
        except ClearVoxNotFound:
            return Done("user_missing", reason=f"ClearVox user {owner} not found")
        return Done("created", created.id, replaced=True)

    def _create(self, owner: str, contact: MappedContact) -> CvContact:
        try:
            if owner:
                return self.cv.create_contact(owner, contact.create_fields())
            return self.cv.create_company_contact(contact.create_fields())
        except ClearVoxUnavailable as exc:
            self.uncertain.add((owner, contact.graph_contact_id))
            raise ClearVoxUnavailable(
                f"create not confirmed: {exc}; ClearVox may have made it, so it is looked up by external_id "
                "before it is created again", exc.status, exc.code) from exc

    def delete(self, owner: str, d: Delete) -> Done:
        if d.verify:  # planned without a listing: delete only what is still ours (and private, for a user)
            try:
                current = self.cv.get_contact(d.cv_contact_id)
            except ClearVoxNotFound:
                return Done("gone", d.cv_contact_id)
            if current.external_id != d.graph_contact_id or (current.owner_user_id or "") != owner:
                return Done("gone", d.cv_contact_id)
            if current.visibility == "public" and owner:
                kept = KeptPublic(current.id, d.graph_contact_id, d.reason, d.name or current.display_name)
                return Done("kept_public", current.id, reason=kept.describe())
        try:
            self.cv.delete_contact(d.cv_contact_id)
        except ClearVoxNotFound:
            return Done("gone", d.cv_contact_id)
        return Done("deleted", d.cv_contact_id)


class Applier:
    """Executes the plans of one run and writes each owner's state after its writes."""

    def __init__(self, ctx: SyncContext, now: datetime) -> None:
        self.ctx = ctx
        self.state: State = ctx.state
        self.report: RunReport = ctx.report
        self.now = now
        self.writer = Writer(ctx.clearvox)
        self.kept_public = 0

    def apply(self, work: Sequence[OwnerRun]) -> None:
        tasks: list[Task] = []
        for r in work:
            assert r.plan is not None
            self.report.count("unchanged", len(r.plan.unchanged))
            r.items = [*r.plan.deletes, *r.plan.updates, *r.plan.creates]
            tasks += [Task(r, i) for i in range(len(r.items))]
            if not r.items:
                self.commit(r)
        if not tasks:
            return
        applied = self.ctx.apply(tasks, self.writer.write, self._on_result)
        cut_off = [r for r in work if r.items and len(r.outcome.done) < len(r.items)]
        if not isinstance(applied.stopped, LeaseLost):  # another run owns the state now
            for r in cut_off:  # keep what was written for owners cut off midway; their deltaLinks stay
                if r.outcome.done:
                    self.commit(r, finished=False)
        applied.raise_if_stopped()
        if applied.out_of_time:
            left = sum(len(r.items) - len(r.outcome.done) for r in cut_off)
            self.report.add_warning("contacts", f"time budget of the run used up: {left} ClearVox writes of "
                                                f"{len(cut_off)} mailboxes left for the next run")
            self.report.extra["incomplete"] = True

    def _on_result(self, task: Task, result: Done | Exception) -> None:
        """Main thread: count and remember one finished write; commit the owner after its last one."""
        r, item = task.run, task.item
        out = r.outcome
        out.done.add(task.index)
        if isinstance(result, Exception):
            self._failed(r, item, str(result) if str(result) else f"unexpected {type(result).__name__}")
        else:
            self._record(r, item, result)
        if len(out.done) == len(r.items):
            self.commit(r)

    def _record(self, r: OwnerRun, item: Create | Update | Delete, done: Done) -> None:
        gid = item.graph_contact_id
        if done.result in ("created", "updated", "deleted", "unchanged"):
            self.report.count(done.result)
        if done.replaced:
            r.outcome.created[gid] = done.cv_id
        if done.result == "kept_public":
            self.kept_public += 1
            self.report.add_skip(gid, done.reason)
        elif done.result == "user_missing":
            r.outcome.user_missing = True
            r.outcome.failed[gid] = done.reason

    def _failed(self, r: OwnerRun, item: Create | Update | Delete, reason: str) -> None:
        name = item.contact.display_name if isinstance(item, Create | Update) else item.name
        if isinstance(item, Delete) and item.duplicate:  # the keeper shares the Graph id: report by ClearVox id
            self.report.add_failure(item.cv_contact_id, f"{reason} ({item.reason})")
            return
        r.outcome.failed[item.graph_contact_id] = reason
        self.report.add_failure(item.graph_contact_id, f"{reason} ({name})" if name else reason)

    def commit(self, r: OwnerRun, *, finished: bool = True) -> None:
        """Write one owner's state after its writes: contactmap, retries, then the deltaLinks.

        The deltaLinks move on only when every change was applied or recorded
        for retry; a hold keeps them (and the folder list) where they are, so
        the next run asks Outlook again.
        """
        plan, out = r.plan, r.outcome
        assert plan is not None
        not_done = {item.graph_contact_id for i, item in enumerate(r.items)
                    if i not in out.done and not (isinstance(item, Delete) and item.duplicate)}
        changes = map_changes(plan, out.created, failed=set(out.failed) | not_done)
        if changes.upserts:
            self.state.upsert("contactmap", changes.rows(), r.map_scope)
        if changes.deletes:
            self.state.delete("contactmap", changes.deletes, r.map_scope)
        if not finished:
            return
        if out.user_missing:
            self.report.add_skip(r.owner, Retained(r.owner, len(r.contactmap), "ClearVox user not found").describe())
            return
        retries = self._retries(r)
        synced = len((set(r.contactmap) | set(changes.upserts)) - set(changes.deletes))
        if plan.hold is not None:
            cursor = replace(r.cursor, cv_user_id=r.owner, hold=plan.hold.key, synced=synced, retries=retries,
                             retained="", unavailable="")
            row = cursor.rows()[r.key]
            if row != r.cursor.rows()[r.key]:
                self.state.replace("cursors", {r.key: row}, CURSOR_SCOPE)
            return
        rows = self.cursor_rows(r, synced, retries, hold="")
        if rows:
            self.state.replace("cursors", rows, CURSOR_SCOPE)

    def _retries(self, r: OwnerRun) -> int:
        """The retry rows after this owner's writes: failures counted on, deletions on Outlook's word to look at
        again, rows handled this run removed. Returns how many rows the owner has now."""
        out = r.outcome
        failed: dict[str, dict[str, Any]] = {}
        for item in r.items:
            gid = item.graph_contact_id
            if isinstance(item, Delete) and item.duplicate:
                continue
            folder = item.contact.folder_id if isinstance(item, Create | Update) else self._folder_of(r, gid)
            if gid in out.failed:
                failed[gid] = {"graph_id": gid, "action": "delete" if isinstance(item, Delete) else "upsert",
                               "folder_id": folder, "reason": out.failed[gid]}
        rows, handled = next_retries(r.retry_rows, failed, self.now)
        for d in (r.plan.deletes if r.plan is not None else ()):
            if d.reason == REASON_DELETED and not d.duplicate and d.graph_contact_id not in failed and folder_known(r, d):
                rows[d.graph_contact_id] = {"graph_id": d.graph_contact_id, "action": RECHECK, "attempts": 0,
                                            "folder_id": self._folder_of(r, d.graph_contact_id), "at": self.now}
        handled = [k for k in handled if k not in rows]
        if rows:
            self.state.replace("retries", rows, r.retry_scope)
        if handled:
            self.state.delete("retries", handled, r.retry_scope)
        waiting = r.cursor.retries - len(r.retry_rows) if r.cursor.cv_user_id == r.owner else 0
        return max(0, waiting) + len(rows)  # rows not read this run stay in the table

    @staticmethod
    def _folder_of(r: OwnerRun, gid: str) -> str:
        entry = r.contactmap.get(gid)
        return entry.folder_id if entry else ""

    def cursor_rows(self, r: OwnerRun, synced: int, retries: int, hold: str) -> dict[str, dict[str, Any]]:
        """The cursor rows that differ from what is stored; folders that disappeared are deleted right away."""
        folders = {fid: FolderCursor(fid, f.name, r.rounds[fid].delta_link if fid in r.rounds else f.delta_link)
                   for fid, f in r.folders.items() if fid not in r.removed_folders}
        cursor = UserCursor(r.key, r.owner, folders, full_at=self.now if r.full else r.cursor.full_at, hold=hold,
                            synced=synced, retries=retries, needs_full=r.map_lost and not r.full,
                            kind=r.cursor.kind)
        stored, wanted = r.cursor.rows(), cursor.rows()
        rows = {k: v for k, v in wanted.items() if stored.get(k) != v}
        gone = [k for k in stored if k not in wanted]
        if gone:
            self.state.delete("cursors", gone, CURSOR_SCOPE)
        return rows


def folder_known(r: OwnerRun, d: Delete) -> bool:
    """A deleted contact can be looked at again only in a folder that still exists."""
    entry = r.contactmap.get(d.graph_contact_id)
    return entry is not None and entry.folder_id in r.folders and entry.folder_id not in r.removed_folders
