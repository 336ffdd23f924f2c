"""Users sync, one run (I/O): Graph round -> ClearVox reads -> plan -> writes -> state.

1. Graph `users/delta` (see shared.sync.users.source): a full round or the changes since the stored
   deltaLink, merged into the cached copy of every Entra user so the plan always sees whole users.
2. ClearVox reads: a full round lists every ClearVox user once; a delta round looks up only the users
   it touches, the users still waiting for a manual link (to notice a pasted Object-ID), the users
   to retry and the users deactivated in the last 24 hours (looked up again by id in Graph, so a
   user Graph wrongly reported removed is reactivated by the next run, not the next full round).
3. The plan (shared.sync.users.plan), its deactivations through the one mass-change guard.
4. The writes through the one applier (shared.sync.users.apply): a failed user fails alone and goes
   to the retry ledger; the run stops writing only by the applier's outage rule or an AdminFix.
5. State: links rows as writes succeed; the retry ledger; the deltaLink last, and only when the run
   was not stopped (a stopped run is replayed; every created ClearVox user carries its Object-ID, so
   the replay finds it instead of creating it twice).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.clearvox import CvUser
from shared.errors import LeaseLost
from shared.sync.base import due_retries
from shared.sync.users.apply import Applier
from shared.sync.users.ledger import RETRY_SCOPE, DeactivationLedger, retry_rows
from shared.sync.users.lookup import CvLookup
from shared.sync.users.one_user import OneUser
from shared.sync.users.plan import plan_users
from shared.sync.users.render import render_plan, report_plan
from shared.sync.users.rules import GRAPH_SELECT, Link, UsersOptions, awaiting_link, links_from_rows, object_key, text_of
from shared.sync.users.source import (
    CACHE_TABLE,
    CURSOR,
    MEMBERS_SCOPE,
    SELECT,
    Background,
    GraphRound,
    dump,
    fetch_users,
    graph_round,
    group_members,
    load_cache,
)

if TYPE_CHECKING:
    from shared.sync.base import Applied, SyncContext
    from shared.sync.users.actions import Action, UsersPlan

BUDGET_REASON = "not started: the run's time budget ran out; the next run continues with it"


def run_users(ctx: SyncContext) -> None:
    """The users sync's entry point (runner.run("users", ...)); `--user` syncs one user and explains it."""
    who = str(ctx.args.get("user") or "").strip()
    if who:
        OneUser(ctx, who).run()
    else:
        _UsersRun(ctx).run()


@dataclass
class _Inputs:
    users: dict[str, dict[str, Any]]  # key -> whole Graph user
    removed: dict[str, str]  # key -> object id
    cv_users: list[CvUser]
    gone: frozenset[str]
    cache_writes: dict[str, dict[str, Any]]
    cache_deletes: set[str]


class _UsersRun:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.state = ctx.state
        self.members: frozenset[str] | None = None
        self.members_before: set[str] = set()

    def run(self) -> None:
        ctx, state = self.ctx, self.state
        links = links_from_rows(state.rows("links"))
        retries = state.rows("retries", RETRY_SCOPE)
        cursor = state.cursor(CURSOR)
        rnd = graph_round(ctx.graph, cursor, ctx.options, ctx.now)
        if ctx.options.users_group:
            self.members = group_members(ctx.graph, ctx.options.users_group, ctx.tenant.client_id)
            self.members_before = set(state.rows(CACHE_TABLE, MEMBERS_SCOPE))
        ledger = DeactivationLedger(state, ctx.now)
        due = set(retries) if rnd.full else set(due_retries(retries, ctx.spec.retry_cap if ctx.spec else 10))
        inputs = self._full(rnd, links) if rnd.full else self._delta(
            rnd, links, {k: retries[k] for k in due}, ledger.recent)
        options = UsersOptions.from_settings(ctx.options, users_group_members=self.members,
                                             confirm_deactivations=bool(ctx.args.get("confirm_deactivations")),
                                             deactivated_today=len(ledger.recent))
        plan = plan_users(list(inputs.users.values()), list(inputs.removed.values()), inputs.cv_users, links, options,
                          full_round=rnd.full, gone_cv_ids=inputs.gone)
        ctx.report.extra["full_round"] = rnd.full
        if rnd.full:
            ctx.report.extra["full_round_reason"] = rnd.reason
        if ctx.dry_run:
            report_plan(ctx.report, plan, dry_run=True)
            ctx.report.plan_text = render_plan(plan)
            return
        cache = Background(lambda: self._write_cache(inputs))
        applier = Applier(ctx, links, options, inputs.users, inputs.gone)
        try:
            applied = applier.apply(plan)
        finally:
            cache.join()
        self._finish(rnd, plan, applier, applied, retries, due, inputs.removed, ledger)
        state.set_cursor(CURSOR, rnd.delta_link, full_at=ctx.now if rnd.full else (cursor or {}).get("full_at"),
                         group=ctx.options.users_group or "", select=SELECT)

    def _finish(self, rnd: GraphRound, plan: UsersPlan, applier: Applier, applied: Applied[Action],
                retries: Mapping[str, Mapping[str, Any]], due: set[str], removed: Mapping[str, str],
                ledger: DeactivationLedger) -> None:
        """Store what the writes did; raise when the applier stopped (the cursor then stays)."""
        ctx, state = self.ctx, self.state
        if isinstance(applied.stopped, LeaseLost):
            raise applied.stopped  # another run may hold the lease now: write nothing more
        report_plan(ctx.report, plan, applier.replans, dry_run=False)
        if plan.rows:
            state.upsert("links", {link.object_id: link.to_row() for link in plan.rows})
        state.delete("links", plan.stale)
        failed = dict(applier.failed)
        if applied.out_of_time:
            for action in applied.not_started:
                ctx.report.add_skip(action.object_id, BUDGET_REASON)
                failed.setdefault(object_key(action.object_id), {"kind": "failed", "reason": BUDGET_REASON})
        rows, done = retry_rows(retries, failed, plan, removed, ctx.now)
        if rows:
            state.upsert("retries", rows, RETRY_SCOPE)
        ledger.record(applier.deactivated)
        if applied.stopped is not None:
            raise applied.stopped  # the cursor stays: the next run replays this round
        # A row past the retry cap waits for the full round, which plans every user again.
        state.delete("retries", [k for k in done if rnd.full or k in due], RETRY_SCOPE)
        if self.members is not None:
            joined, left = self.members - self.members_before, self.members_before - self.members
            if joined:
                state.upsert(CACHE_TABLE, {k: {"member": True} for k in sorted(joined)}, MEMBERS_SCOPE)
            state.delete(CACHE_TABLE, sorted(left), MEMBERS_SCOPE)

    def _write_cache(self, inputs: _Inputs) -> None:
        if inputs.cache_writes:
            self.state.upsert(CACHE_TABLE, {k: {"user": dump(u)} for k, u in inputs.cache_writes.items()})
        self.state.delete(CACHE_TABLE, sorted(inputs.cache_deletes))

    def _full(self, rnd: GraphRound, links: Mapping[str, Link]) -> _Inputs:
        """Every Entra user and every ClearVox user, read once."""
        cache = load_cache(self.state)
        writes = {k: u for k, u in rnd.items.items() if cache.get(k) != u}
        removed = {k: v for k, v in rnd.removed.items() if k not in rnd.items}
        cv_users = self.ctx.clearvox.list_users()
        ids = {u.id for u in cv_users}
        gone = frozenset(link.cv_user_id for link in links.values() if link.cv_user_id and link.cv_user_id not in ids)
        return _Inputs(dict(rnd.items), removed, cv_users, gone, writes, set(cache) - set(rnd.items))

    def _delta(self, rnd: GraphRound, links: Mapping[str, Link], retries: Mapping[str, Mapping[str, Any]],
               recheck: set[str]) -> _Inputs:
        """The round's changes merged into the cached users, plus whoever else needs planning this run."""
        rows = {object_key(k): v for k, v in links.items()}
        removed = {k: v for k, v in rnd.removed.items() if k not in rnd.items}
        touched = set(rnd.items) | set(removed)
        extra = {object_key(o) for o in awaiting_link(links)} | set(retries)
        if self.members is not None:
            extra |= set(self.members) ^ self.members_before
        # Deactivated by this connector lately and still inactive: ask Graph, not the cache, whether that was right.
        recheck = {k for k in recheck if k in rows and rows[k].status == "deactivated"} - touched
        extra -= touched | recheck
        cache = load_cache(self.state, touched | extra)
        # Entra users sharing a mail with a touched user (old or new mail) may no longer be in conflict.
        mails = {text_of(u.get("mail")).casefold() for k in touched for u in (cache.get(k), rnd.items.get(k)) if u}
        partners = {k for k, link in rows.items() if link.status == "conflict" and link.email.casefold() in mails}
        partners -= touched | extra | recheck
        cache.update(load_cache(self.state, partners))
        extra |= partners
        users: dict[str, dict[str, Any]] = {}
        fetch: list[str] = sorted(recheck)
        for key, item in rnd.items.items():
            base = cache.get(key)
            users[key] = {**base, **item} if base else dict(item)
            if base is None and key in rows and not all(p in item for p in GRAPH_SELECT):
                fetch.append(key)  # a known user, a partial item and no cached copy: read it whole rather than guess
        for key in sorted(extra):
            if key in cache:
                users[key] = cache[key]
            elif (retries.get(key) or {}).get("removed"):
                removed[key] = key
            else:
                fetch.append(key)
        for key, user in fetch_users(self.ctx.graph, fetch).items():
            if user is None:
                users.pop(key, None)
                removed[key] = key
            else:
                users[key] = user
        return self._looked_up(users, removed, cache, links)

    def _looked_up(self, users: dict[str, dict[str, Any]], removed: dict[str, str], cache: Mapping[str, Any],
                   links: Mapping[str, Link]) -> _Inputs:
        """The ClearVox users the plan needs to see for these Entra users."""
        rows = {object_key(k) for k in links}
        # Outside the users group, only users with a links row can need ClearVox (to be treated as removed).
        in_view = {k: u for k, u in users.items() if self.members is None or k in self.members or k in rows}
        lookup = CvLookup(self.ctx.clearvox, self.ctx.options.clearvox_concurrency)
        lookup.for_users({**in_view, **dict.fromkeys(removed)}, links)
        writes = {k: u for k, u in users.items() if cache.get(k) != u}
        return _Inputs(users, removed, list(lookup.found.values()), frozenset(lookup.gone), writes,
                       {k for k in removed if k in cache})
