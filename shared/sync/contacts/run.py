"""Contacts sync, the run: whose mailboxes, what changed (read), the plans, ClearVox writes (apply), state.

`run_contacts` is the runner's entry point. The rules are in rules.py (pure),
reading Outlook in read.py, the writes and the state after them in apply.py,
the dry-run text and JSON plan in render.py.

Cost model: a run with no changes costs one $batch per 20 folders and no
ClearVox request. ClearVox is read only for users with something to write
(activity check) and listed only where reconciling by external_id needs it (a
full round, an expired token, a lost contactmap, or more look-ups than list
pages). Folder discovery happens with the full reconcile (every
full_sync_hours, spread per mailbox) and when a folder disappears or contacts
are removed.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from shared.clearvox import PAGE_SIZE as CV_PAGE_SIZE
from shared.errors import AdminFix, ClearVoxError, ClearVoxNotFound
from shared.sync.contacts.apply import Applier
from shared.sync.contacts.company import KIND, RECHECK_HOURS, company_runs, drop_aliases, retired
from shared.sync.contacts.cursors import CURSOR_SCOPE, UserCursor, full_reconcile_due, load_cursors
from shared.sync.contacts.mapping import contactmap_from_rows
from shared.sync.contacts.owner import OwnerRun
from shared.sync.contacts.read import MailboxReader
from shared.sync.contacts.render import render_all, summarize
from shared.sync.contacts.rules import ContactsOptions, ContactsPlan, Retained, index_synced, plan_contacts
from shared.sync.users.rules import Link, links_from_rows

if TYPE_CHECKING:
    from shared.sync.base import SyncContext

STATE_READERS = 8  # parallel contactmap reads


class ContactsRun:
    """The contacts sync of one tenant: whose, which folders, delta rounds, plans, ClearVox writes, state."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.cv = ctx.clearvox
        self.state = ctx.state
        self.report = ctx.report
        self.now = ctx.now
        self.hours = ctx.options.full_sync_hours
        self.workers = max(1, ctx.options.clearvox_concurrency)
        self.options = ContactsOptions(default_region=ctx.options.default_region,
                                       confirm_deletions=bool(ctx.args.get("confirm_deletions")))
        self.reader = MailboxReader(ctx.graph, ctx.state, ctx.spec.retry_cap if ctx.spec else 10)
        self.applier = Applier(ctx, self.now)
        self.plans: list[ContactsPlan] = []  # for --dry-run and the summary
        self.stale_cursor_keys: list[str] = []
        self.retained = 0

    # -- the run -----------------------------------------------------------
    def run(self) -> None:
        links = links_from_rows(self.state.rows("links"))
        cursors = load_cursors(self.state.rows("cursors", CURSOR_SCOPE))
        linked = {oid: link for oid, link in links.items() if link.status == "linked" and link.cv_user_id}
        self._retained(cursors, links, linked)
        mailboxes = self.ctx.options.company_contacts
        company = company_runs(mailboxes, cursors, self.owner_run)
        self._retired(retired(mailboxes, cursors))
        runs = self._select(linked, cursors) + company
        self.reader.read(runs)
        work = [r for r in runs if r.ok and r.has_changes]
        quiet = [r for r in runs if r.ok and not r.has_changes]
        self._load_contactmaps(work)
        self._plan(work, len(linked))
        drop_aliases([r for r in company if r.ok], self.state)
        for r in runs:
            if r.problem:
                self.report.add_failure(r.mailbox, r.problem)
            elif r.unavailable:
                self._unavailable(r)
        self.report.extra.update({"users": len(linked), "users_with_changes": len(work) - len(set(work) & set(company)),
                                  **({"company_mailboxes": len(company)} if company else {})})
        self._report_plans(self.plans)
        if self.ctx.dry_run:
            self._dry_run()
            return
        self._commit_quiet(quiet)
        self.applier.apply([r for r in work if r.plan is not None])
        self._finish_report()

    # -- whose -------------------------------------------------------------
    def _retained(self, cursors: Mapping[str, UserCursor], links: Mapping[str, Link], linked: Mapping[str, Link]) -> None:
        """Users synced before but no longer linked keep their contacts; said once, counted every run."""
        notice: dict[str, dict[str, Any]] = {}
        for oid, cursor in cursors.items():
            if cursor.kind != "user" or oid in linked or cursor.synced <= 0:
                continue
            link = links.get(oid)
            if link is None:
                why = "no longer linked (removed from the users sync)"
            elif link.status == "deactivated":
                why = "removed or disabled in Entra; ClearVox user deactivated"
            else:
                why = f"no longer linked ({link.status})"
            self.retained += cursor.synced
            if cursor.retained != why:
                retained = Retained(cursor.cv_user_id, cursor.synced, why)
                self.plans.append(ContactsPlan(cursor.cv_user_id, retained=retained))
                notice[oid] = {**cursor.rows()[oid], "retained": why}
        if notice and not self.ctx.dry_run:
            self.state.replace("cursors", notice, CURSOR_SCOPE)

    def _retired(self, gone: Mapping[str, UserCursor]) -> None:
        """Shared mailboxes taken out of NEXXT365_COMPANY_CONTACTS keep their company contacts; said once."""
        notice: dict[str, dict[str, Any]] = {}
        for key, cursor in gone.items():
            self.retained += cursor.synced
            why = "no longer in NEXXT365_COMPANY_CONTACTS"
            if cursor.retained != why:
                mailbox = key.removeprefix(f"{KIND}|")
                self.report.add_skip(mailbox, Retained("", cursor.synced, f"shared mailbox {mailbox} {why}").describe())
                notice[key] = {**cursor.rows()[key], "retained": why}
        if notice and not self.ctx.dry_run:
            self.state.replace("cursors", notice, CURSOR_SCOPE)

    def _select(self, linked: Mapping[str, Link], cursors: Mapping[str, UserCursor]) -> list[OwnerRun]:
        runs: list[OwnerRun] = []
        for oid, link in sorted(linked.items()):
            cursor = cursors.get(oid) or UserCursor(oid, link.cv_user_id or "")
            if cursor.cv_user_id and cursor.cv_user_id != link.cv_user_id:
                self.report.add_warning(oid, f"now linked to ClearVox user {link.cv_user_id}, was {cursor.cv_user_id}: "
                                             f"the {cursor.synced} contacts synced to {cursor.cv_user_id} are kept")
                self.stale_cursor_keys += [cursor.folder_key(fid) for fid in cursor.folders]
                cursor = UserCursor(oid, link.cv_user_id or "")
            runs.append(self.owner_run(oid, link.cv_user_id or "", cursor, self.hours))
        return runs

    def owner_run(self, mailbox: str, owner: str, cursor: UserCursor, recheck_hours: int) -> OwnerRun:
        """This run of one mailbox: left alone while it is known to be unreadable (looked at again after
        `recheck_hours`), else a delta round, or a full round when the full reconcile is due."""
        if cursor.unavailable and not full_reconcile_due(cursor.object_id, cursor.checked_at, self.now, recheck_hours):
            return OwnerRun(mailbox, owner, cursor, False, unavailable=cursor.unavailable)
        full = (cursor.needs_full or not cursor.folders or cursor.unavailable != ""
                or full_reconcile_due(cursor.object_id, cursor.full_at, self.now, self.hours))
        folders = {} if full else {fid: replace(f) for fid, f in cursor.folders.items()}
        return OwnerRun(mailbox, owner, cursor, full, folders)

    def _unavailable(self, r: OwnerRun) -> None:
        """A mailbox that cannot be read is a skip, looked at again on the full-reconcile cadence (a shared
        mailbox: about once a day, and reported only then)."""
        if r.owner:
            self.report.add_skip(r.mailbox, f"{r.unavailable} Contacts are not synced; checked again with the next "
                                            f"full reconcile (every {self.hours} h).")
        elif r.checked:
            self.report.add_skip(r.mailbox, f"{r.unavailable} Its contacts are not in the company phone book; "
                                            f"looked at again in {RECHECK_HOURS} h.")
        if self.ctx.dry_run or not r.checked:
            return
        cursor = replace(r.cursor, unavailable=r.unavailable, checked_at=self.now)
        self.state.replace("cursors", {r.key: cursor.rows()[r.key]}, CURSOR_SCOPE)

    # -- plans ---------------------------------------------------------------
    def _load_contactmaps(self, runs: Sequence[OwnerRun]) -> None:
        def load(r: OwnerRun) -> None:
            r.contactmap = contactmap_from_rows(self.state.rows("contactmap", r.map_scope))
            # Fewer rows than the last run left: rows were lost, so reconcile against ClearVox.
            r.map_lost = r.cursor.cv_user_id == r.owner and len(r.contactmap) < r.cursor.synced

        if runs:
            with ThreadPoolExecutor(max_workers=min(STATE_READERS, len(runs))) as pool:
                list(pool.map(load, runs))

    def _plan_one(self, r: OwnerRun) -> ContactsPlan:
        items, removed = r.changes()
        synced, duplicates = r.listing if r.listing is not None else (None, [])
        plan = plan_contacts(
            r.owner, items, removed_ids=removed, removed_folder_ids=set(r.removed_folders), contactmap=r.contactmap,
            cv_synced=synced, duplicates=duplicates, options=self.options, complete=r.full,
            complete_folder_ids=r.fresh,
        )
        plan.source = r.mailbox
        return plan

    def _plan(self, work: Sequence[OwnerRun], linked_count: int) -> None:
        """Plan without ClearVox reads, then read ClearVox only where the plan needs it, then plan again."""
        check: list[OwnerRun] = []
        for r in work:
            r.plan = self._plan_one(r)
            r.need_listing = r.full or bool(r.expired) or r.map_lost
            if not r.need_listing and r.plan.needs_cv_index:
                lookups = sum(c.reconcile for c in r.plan.creates) + sum(d.verify for d in r.plan.deletes)
                pages = max(1, math.ceil((len(r.contactmap) + len(r.plan.creates)) / CV_PAGE_SIZE))
                r.need_listing = lookups > pages  # listing the owner's contacts is cheaper than one look-up each
            if r.owner and (r.need_listing or r.plan.creates or r.plan.updates or r.plan.deletes):
                check.append(r)
        self._read_clearvox([r for r in work if r.need_listing], check, linked_count)
        for r in work:
            if r.problem or r.cv_user in ("inactive", "missing"):
                r.plan = None
                if r.cv_user:
                    why = "ClearVox user is inactive" if r.cv_user == "inactive" else "ClearVox user not found"
                    self.report.add_skip(r.owner, Retained(r.owner, len(r.contactmap), why).describe())
                    self.retained += len(r.contactmap)
                continue
            if r.listing is not None:
                r.plan = self._plan_one(r)
            if r.plan is not None:
                self.plans.append(r.plan)

    def _read_clearvox(self, listing: Sequence[OwnerRun], check: Sequence[OwnerRun], linked_count: int) -> None:
        """Concurrent ClearVox reads: contact listings, and whether the users with writes are active.

        Activity is read per user (GET) when few users have writes, else with one
        paged listing of all users: never one read per linked user per run.
        """
        owners = {r.owner for r in check}
        status: dict[str, str] = {}
        lock = threading.Lock()

        def user_status(owner: str) -> None:
            value = _activity(lambda: {owner: self.cv.get_user(owner).active}, [owner])
            with lock:
                status.update(value)

        def all_users() -> None:
            value = _activity(lambda: {u.id: u.active for u in self.cv.list_users()}, owners)
            with lock:
                status.update(value)

        company = [r for r in listing if not r.owner]
        tasks: list[Callable[[], None]] = [functools.partial(self._list_contacts, r) for r in listing if r.owner]
        tasks += [functools.partial(self._list_company, company)] if company else []
        bulk = len(owners) > max(1, math.ceil(linked_count / CV_PAGE_SIZE))
        tasks += [all_users] if bulk and owners else [functools.partial(user_status, o) for o in sorted(owners)]
        if tasks:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(tasks))) as pool:
                for future in [pool.submit(t) for t in tasks]:
                    future.result()
        for r in check:
            if not r.cv_user:
                r.cv_user = status.get(r.owner, "")

    def _list_contacts(self, r: OwnerRun) -> None:
        try:
            contacts = list(self.cv.iter_contacts(r.owner))
        except AdminFix:
            raise
        except ClearVoxNotFound:
            r.cv_user = "missing"
            return
        except ClearVoxError as exc:
            r.problem = f"ClearVox contacts of user {r.owner} not read: {exc}"
            return
        r.listing = index_synced(contacts, r.contactmap)

    def _list_company(self, runs: Sequence[OwnerRun]) -> None:
        """The company phone book, listed once for every shared mailbox that needs it; each mailbox sees only the
        contacts that came from it (its contactmap and this round's Graph ids)."""
        try:
            book = list(self.cv.iter_company_contacts())
        except AdminFix:
            raise
        except ClearVoxError as exc:
            for r in runs:
                r.problem = f"ClearVox company phone book not read: {exc}"
            return
        for r in runs:
            items, removed = r.changes()
            ours = set(r.contactmap) | set(removed) | {str(i.get("id") or "") for i in items}
            r.listing = index_synced([c for c in book if c.external_id in ours], r.contactmap)

    # -- dry run and report ----------------------------------------------------
    def _dry_run(self) -> None:
        summary = summarize(self.plans)
        for what in ("created", "updated", "deleted", "unchanged"):
            self.report.count(what, int(summary[what]))
        self.report.plan_text, self.report.extra["plan"] = render_all(self.plans)
        self.report.extra.update({"kept_public": summary["kept_public"], "held": summary["held"],
                                  "retained": self.retained})

    def _report_plans(self, plans: Sequence[ContactsPlan]) -> None:
        for plan in plans:
            for skip in plan.skips:
                self.report.add_skip(skip.id, skip.describe())
            for kept in plan.kept_public:
                self.report.add_skip(kept.graph_contact_id, kept.describe())
            for warning in plan.warnings:
                self.report.add_warning(warning.id, warning.describe())
            if plan.hold is not None:
                self.report.add_skip(plan.owner_cv_user_id or plan.source, plan.hold.reason())
            if plan.released_hold is not None:
                self.report.add_warning(plan.owner_cv_user_id or plan.source,
                                        "deletions the guard would hold went through (--confirm-deletions)")
            if plan.retained is not None:
                self.report.add_skip(plan.owner_cv_user_id, plan.retained.describe())

    def _commit_quiet(self, runs: Sequence[OwnerRun]) -> None:
        """Mailboxes without changes: only new deltaLinks (and nothing at all when Graph returned the same ones)."""
        rows: dict[str, dict[str, Any]] = {}
        for r in runs:
            rows.update(self.applier.cursor_rows(r, r.cursor.synced, r.cursor.retries, hold=""))
        if rows:
            self.state.replace("cursors", rows, CURSOR_SCOPE)
        if self.stale_cursor_keys:
            self.state.delete("cursors", self.stale_cursor_keys, CURSOR_SCOPE)

    def _finish_report(self) -> None:
        summary = summarize(self.plans)
        self.report.extra.update({"kept_public": int(summary["kept_public"]) + self.applier.kept_public,
                                  "held": summary["held"], "retained": self.retained})


def _activity(read: Callable[[], Mapping[str, bool]], owners: Sequence[str] | set[str]) -> dict[str, str]:
    """"active" / "inactive" / "missing" per owner; "" when ClearVox could not tell (the writes will)."""
    try:
        found = read()
    except AdminFix:
        raise
    except ClearVoxNotFound:
        return dict.fromkeys(owners, "missing")
    except ClearVoxError:
        return {}
    return {o: ("missing" if o not in found else "active" if found[o] else "inactive") for o in owners}


def run_contacts(ctx: SyncContext) -> None:
    """Entry point of the contacts sync (shared.runner)."""
    ContactsRun(ctx).run()

