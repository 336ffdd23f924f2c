"""Users sync, the run: Graph delta rounds, ClearVox look-ups and writes, state; the rules are in shared.sync.users.

`run_users` is the runner's entry point; `report_unlinked` and `link_from_csv` serve the CLI.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from shared.clearvox import ClearVox, CvUser
from shared.clients import clearvox
from shared.errors import (
    EXIT_CONFIG,
    EXIT_ITEM_FAILURES,
    EXIT_OK,
    AccountNotFound,
    ClearVoxError,
    ClearVoxForbidden,
    ClearVoxNotFound,
    ClearVoxUnauthorized,
    ClearVoxUnavailable,
    ConfigError,
    ConsentError,
    DeltaExpired,
    EmailTaken,
    LicenseRequired,
)
from shared.graph.auth import CONSENT_STEP
from shared.graph.client import Graph
from shared.graph.groups import GROUP_PERMISSION, transitive_user_ids
from shared.graph.users import user_by_id, users_by_id, users_delta, users_where
from shared.sync.users.rules import (
    GRAPH_SELECT,
    Action,
    Create,
    Deactivate,
    GraphUser,
    Link,
    LinkAction,
    Update,
    UsersOptions,
    UsersPlan,
    awaiting_link,
    explain_user,
    links_from_rows,
    object_key,
    plan_users,
    render_plan,
    text_of,
)

if TYPE_CHECKING:
    from shared.report import RunReport
    from shared.settings import Options, Tenant
    from shared.state import State, Store
    from shared.sync.base import SyncContext

# --------------------------------------------------------------------------- running the sync (I/O)

CURSOR = "users"
CACHE_TABLE = "entrausers"  # last seen Graph user per object id; the users group's members in partition "group"
MEMBERS_SCOPE = "group"
RETRY_SCOPE = "users"
CSV_COLUMNS = ("clearvox_user_id", "email", "entra_display_name", "object_id")
_SELECT = ",".join(GRAPH_SELECT)
# Changed users carry only their changed properties (smaller pages); the cache supplies the rest.
_FLUSH = 100  # rows per Table Storage transaction (its maximum)
_FEW = 200  # up to this many cache rows are read one by one, more as one partition query
# Failures that no other item would survive: stop applying, keep what succeeded, leave the cursor.
_RUN_LEVEL = (ClearVoxUnavailable, ClearVoxUnauthorized, ClearVoxForbidden, LicenseRequired, AccountNotFound)


def run_users(ctx: SyncContext) -> None:
    """The users sync's entry point (runner.run("users", ...)); `--user` syncs one user and explains it."""
    who = str(ctx.args.get("user") or "").strip()
    if who:
        _OneUser(ctx, who).run()
    else:
        _UsersRun(ctx).run()


def _strip(item: Mapping[str, Any]) -> dict[str, Any]:
    """A Graph user without OData annotations (kept: @removed)."""
    return {k: v for k, v in item.items() if not k.startswith("@odata")}


def _by_key(items: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Items by lower-cased object id. A round may list a user more than once, each time with some
    properties: the copies are merged, the later value of a property winning."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        oid = text_of(item.get("id"))
        if oid:
            out[object_key(oid)] = {**out.pop(object_key(oid), {}), **_strip(item)}
    return out


def _dump(user: Mapping[str, Any]) -> str:
    return json.dumps(user, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


# ---- Graph


@dataclass
class GraphRound:
    """One users delta round: complete (`full`) or the changes since the stored deltaLink."""

    full: bool
    reason: str  # why it is a full round
    items: dict[str, dict[str, Any]]
    removed: dict[str, str]  # key -> object id
    delta_link: str


def full_round_reason(cursor: Mapping[str, Any] | None, options: Options, now: datetime) -> str:
    """Why this run must be a full round ("" when the stored deltaLink can be used)."""
    if not cursor or not cursor.get("delta_link"):
        return "first run"
    if str(cursor.get("group") or "") != (options.users_group or ""):
        return "the users group setting changed"
    if str(cursor.get("select") or "") != _SELECT:
        return "the selected properties changed"
    full_at = cursor.get("full_at")
    if not isinstance(full_at, datetime):
        return "no full round recorded"
    if now - full_at >= timedelta(hours=options.full_sync_hours):
        return f"full reconcile (every {options.full_sync_hours} hours)"
    return ""


def graph_round(graph: Graph, cursor: Mapping[str, Any] | None, options: Options, now: datetime) -> GraphRound:
    """Resume from the stored deltaLink, or a full round when one is due or the token expired."""
    reason = full_round_reason(cursor, options, now)
    if not reason and cursor is not None:
        try:
            rnd = users_delta(graph, GRAPH_SELECT, str(cursor["delta_link"]))
        except DeltaExpired:
            reason = "the stored delta token expired"
        else:
            return GraphRound(False, "", _by_key(rnd.items), _removed_ids(rnd.removed), rnd.delta_link)
    rnd = users_delta(graph, GRAPH_SELECT)
    return GraphRound(True, reason, _by_key(rnd.items), _removed_ids(rnd.removed), rnd.delta_link)


def _removed_ids(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {object_key(oid): oid for item in items if (oid := text_of(item.get("id")))}


def group_members(graph: Graph, group_id: str, client_id: str) -> frozenset[str]:
    """Object ids (lower-case) of the group's transitive user members."""
    try:
        members = transitive_user_ids(graph, group_id)
    except ConsentError:
        raise ConsentError(
            f"Microsoft Graph denied the members of NEXXT365_USERS_GROUP {group_id}: reading a group's members needs the "
            f"{GROUP_PERMISSION} application permission (User.Read.All does not cover it). Fix: "
            f"{CONSENT_STEP.format(app=client_id, perm=GROUP_PERMISSION)}; or clear NEXXT365_USERS_GROUP.",
            permission=GROUP_PERMISSION) from None
    if members is None:
        raise ConfigError(f"NEXXT365_USERS_GROUP {group_id} is not a group in this tenant: copy the Object ID from "
                          "Entra ID > Groups > the group > Overview.")
    return frozenset(object_key(m) for m in members)


def fetch_users(graph: Graph, object_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """Whole Graph users by $batch (20 per request); None for a user Graph no longer has."""
    found = users_by_id(graph, {object_key(oid): oid for oid in dict.fromkeys(object_ids)}, GRAPH_SELECT)
    return {key: None if user is None else _strip(user) for key, user in found.items()}


def find_graph_users(graph: Graph, who: str) -> list[dict[str, Any]]:
    """The Entra user(s) meant by an object id, an email (mail) or a sign-in name."""
    who = who.strip()
    if "@" not in who:
        user = user_by_id(graph, who, GRAPH_SELECT)
        return [] if user is None else [_strip(user)]
    for prop in ("mail", "userPrincipalName"):
        found = [_strip(u) for u in users_where(graph, prop, who, GRAPH_SELECT)]
        if found:
            return found
    return []


# ---- state


def load_cache(state: State, keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Last seen Graph users by key: all of them (keys None), or those asked for."""
    wanted = None if keys is None else sorted(set(keys))
    if wanted is None or len(wanted) > _FEW:
        rows = state.rows(CACHE_TABLE)
        keep = None if wanted is None else set(wanted)
        pairs = [(k, r) for k, r in rows.items() if keep is None or k in keep]
    else:
        got = _parallel(lambda k: (k, state.get(CACHE_TABLE, k)), wanted, 8)
        pairs = [(k, r) for k, r in got if r is not None]
    out: dict[str, dict[str, Any]] = {}
    for key, row in pairs:
        try:
            user = json.loads(str(row.get("user") or ""))
        except ValueError:
            continue  # a damaged row reads as "not cached"
        if isinstance(user, dict):
            out[key] = user
    return out


class _Background:
    """Run state writes while ClearVox is busy; `join` re-raises what failed."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.error: BaseException | None = None

        def target() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to join()
                self.error = exc

        self.thread = threading.Thread(target=target, name="users-state", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


# ---- ClearVox reads


class CvLookup:
    """Concurrent ClearVox reads for a delta round; gathers users found and linked ids found missing."""

    def __init__(self, cv: ClearVox, concurrency: int) -> None:
        self.cv = cv
        self.concurrency = concurrency
        self.found: dict[str, CvUser] = {}
        self.gone: set[str] = set()
        self.results: dict[tuple[str, str], list[CvUser]] = {}

    def _one(self, job: tuple[str, str]) -> list[CvUser]:
        kind, value = job
        if kind == "id":
            try:
                return [self.cv.get_user(value)]
            except AccountNotFound:
                raise
            except ClearVoxNotFound:
                return []
        if kind == "ext":
            return list(self.cv.iter_users(external_application_id=value))
        return [u for u in self.cv.iter_users(email=value) if u.email.strip().casefold() == value]

    def run(self, jobs: Iterable[tuple[str, str]]) -> None:
        todo = sorted(set(jobs) - set(self.results))
        for job, users in zip(todo, _parallel(self._one, todo, self.concurrency), strict=True):
            self.results[job] = users
            self.found.update((u.id, u) for u in users)

    def for_users(self, users: Mapping[str, GraphUser | None], links: Mapping[str, Link]) -> None:
        """What the plan needs to see for these users (None: removed in Entra).

        A user with a links row is read by its ClearVox id (one request); only
        when that ClearVox user is gone or carries another Object-ID, or the
        Entra email changed, do the look-ups by Object-ID and by email follow.
        A user still waiting for a link therefore costs one read per run; an
        Object-ID pasted into some other ClearVox user than the one with the
        same email is found by the next full round.
        """
        rows = {object_key(k): v for k, v in links.items()}

        def by_id_and_email(key: str, user: GraphUser | None) -> set[tuple[str, str]]:
            mail = text_of(user.get("mail")).casefold() if user is not None else ""
            return {("ext", key)} | ({("email", mail)} if mail else set())

        first: dict[str, tuple[str, str]] = {}
        jobs: set[tuple[str, str]] = set()
        for key, user in users.items():
            link = rows.get(key)
            if link is not None and link.cv_user_id:
                first[key] = ("id", link.cv_user_id)
                jobs.add(first[key])
            else:
                jobs |= by_id_and_email(key, user)
        self.run(jobs)
        second: set[tuple[str, str]] = set()
        for key, job in first.items():
            user = users[key]
            got = self.results[job]
            mail = text_of(user.get("mail")).casefold() if user is not None else ""
            if not got:
                self.gone.add(job[1])
                second |= by_id_and_email(key, user)
                continue
            ext = object_key(got[0].external_application_id or "")
            waiting = rows[key].status == "unlinked" and not ext and (not mail or mail == got[0].email.casefold())
            if ext != key and not waiting:  # the Object-ID moved (or was pasted elsewhere): find where
                second |= by_id_and_email(key, user)
            elif mail and mail != got[0].email.casefold():
                second.add(("email", mail))
        self.run(second)


# ---- apply


@dataclass
class _Done:
    """The outcome of one action: `link` on success, `error` on failure, `replan` after email_taken."""

    action: Action
    link: Link | None = None
    error: ClearVoxError | None = None
    attempted: bool = True
    replan: UsersPlan | None = None


def _verb(action: Action) -> str:
    if isinstance(action, Create):
        return "create"
    if isinstance(action, Update):
        return "reactivation" if action.reactivates else "update"
    if isinstance(action, LinkAction):
        return "link"
    return "deactivation"


class Applier:
    """Runs a plan's actions against ClearVox concurrently and records each outcome as it arrives.

    Item failures are reported and remembered in `failed` (the run goes on);
    a run-level failure (`_RUN_LEVEL`) stops new work and is kept in `fatal`
    for the caller to raise once the successes are stored.
    """

    def __init__(self, ctx: SyncContext, links: Mapping[str, Link], options: UsersOptions,
                 users: Mapping[str, GraphUser], gone: Iterable[str] = ()) -> None:
        self.ctx = ctx
        self.cv = ctx.clearvox
        self.links = links
        self.options = options
        self.users = users
        self.gone = frozenset(gone)  # linked ClearVox ids known to be deleted, for plans made again
        self.stop = threading.Event()
        self.fatal: ClearVoxError | None = None
        self.failed: dict[str, str] = {}
        self.outcomes: dict[str, list[str]] = {}
        self.replans: list[UsersPlan] = []
        self._rows: dict[str, dict[str, Any]] = {}

    def apply(self, plan: UsersPlan) -> None:
        actions = plan.actions()
        if actions:
            workers = max(1, min(self.ctx.options.clearvox_concurrency, len(actions)))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(self._one, a) for a in actions]
                for future in as_completed(futures):
                    for done in future.result():
                        self._record(done)
        self._flush(force=True)

    # -- in the worker threads

    def _one(self, action: Action) -> list[_Done]:
        if self.stop.is_set():
            return [_Done(action, attempted=False)]
        try:
            try:
                if isinstance(action, Create):
                    created = self.cv.create_user(action.payload())
                    return [_Done(action, link=action.result_link(created.id))]
                payload = action.payload()
                if payload:
                    self.cv.update_user(action.cv_user_id, payload)
                return [_Done(action, link=action.result_link(action.cv_user_id))]
            except EmailTaken:
                if isinstance(action, Create):
                    return self._exists(action)
                raise
        except _RUN_LEVEL as exc:
            self.stop.set()
            return [_Done(action, error=exc)]
        except ClearVoxError as exc:
            return [_Done(action, error=exc)]

    def _exists(self, action: Create) -> list[_Done]:
        """409 email_taken: someone created the user meanwhile; plan this one user again, as "exists"."""
        user = self.users.get(object_key(action.object_id))
        if user is None:
            return [_Done(action, error=EmailTaken("ClearVox already has a user with this email", 409, "email_taken"))]
        lookup = CvLookup(self.cv, 1)
        lookup.for_users({object_key(action.object_id): user}, {})
        sub = plan_users([user], [], list(lookup.found.values()), self.links, self.options, full_round=False,
                         gone_cv_ids=self.gone | lookup.gone)
        out = [_Done(action, replan=sub)]
        for a in sub.actions():
            if isinstance(a, Create):  # the email is taken, yet no user has it: never create twice, try again later
                out.append(_Done(a, error=EmailTaken(
                    "ClearVox answered email_taken but no user with this email was found; retried on the next run",
                    409, "email_taken")))
            else:
                out.extend(self._one(a))
        return out

    # -- in the calling thread

    def _record(self, done: _Done) -> None:
        action, report = done.action, self.ctx.report
        oid = action.object_id
        if done.replan is not None:
            self.replans.append(done.replan)
            for row in done.replan.rows:
                self._rows[row.object_id] = row.to_row()
            self.outcomes.setdefault(object_key(oid), []).append("ClearVox answered email_taken: planned again as existing")
            return
        if not done.attempted:
            return
        if done.error is not None:
            if isinstance(done.error, _RUN_LEVEL):
                self.fatal = self.fatal or done.error
                return
            reason = f"{_verb(action)} failed: {done.error}"
            report.add_failure(oid, reason)
            self.failed[object_key(oid)] = reason
            self.outcomes.setdefault(object_key(oid), []).append(reason)
            return
        assert done.link is not None
        self._rows[done.link.object_id] = done.link.to_row()
        cv_id = done.link.cv_user_id
        if isinstance(action, Create):
            report.count("created")
            text = f"created ClearVox user {cv_id}"
        elif isinstance(action, LinkAction):
            report.count("linked")
            text = f"linked ClearVox user {cv_id}" + (" and updated it" if action.changes else "")
        elif isinstance(action, Deactivate):
            report.count("deactivated")
            text = f"deactivated ClearVox user {cv_id}"
        else:
            report.count("updated")
            text = f"{'reactivated' if action.reactivates else 'updated'} ClearVox user {cv_id}"
        self.outcomes.setdefault(object_key(oid), []).append(text)
        self._flush()

    def _flush(self, *, force: bool = False) -> None:
        if self._rows and (force or len(self._rows) >= _FLUSH):
            rows, self._rows = self._rows, {}
            self.ctx.state.upsert("links", rows)


def _report_plan(report: RunReport, plan: UsersPlan, replans: Sequence[UsersPlan] = (), *, counts: bool) -> None:
    """Skips, warnings and the extra JSON keys (unlinked, conflicts, held, deactivations with their reason);
    with `counts` (dry run) the planned counts too."""
    plans = [plan, *replans]
    for p in plans:
        for s in p.skips:
            report.add_skip(s.id, s.reason, s.name)
    for w in plan.warnings:
        report.add_warning(w.id, w.reason)
    report.count("unchanged", plan.unchanged)
    if counts:
        report.count("created", len(plan.creates))
        report.count("updated", len(plan.updates))
        report.count("linked", len(plan.link_actions))
        report.count("deactivated", len(plan.deactivations))
    docs = [p.to_json() for p in plans]
    report.extra["unlinked"] = [u for d in docs for u in d["unlinked"]]
    report.extra["conflicts"] = [c for d in docs for c in d["conflicts"]]
    report.extra["held"] = docs[0]["plan"]["held"]
    report.extra["deactivations"] = docs[0]["plan"]["deactivate"]
    report.extra["out_of_scope"] = plan.out_of_scope


def _retry_rows(old: Mapping[str, Mapping[str, Any]], failed: Mapping[str, str], plan: UsersPlan,
                removed: Iterable[str], now: datetime) -> dict[str, dict[str, Any]]:
    """Rows for the retries table: failed items and held deactivations, counting attempts."""
    gone = set(removed)
    rows: dict[str, dict[str, Any]] = {}
    for key, reason in failed.items():
        attempts = int((old.get(key) or {}).get("attempts") or 0) + 1
        rows[key] = {"kind": "failed", "reason": reason[:1000], "attempts": attempts, "removed": key in gone, "at": now}
    for d in plan.held:
        key = object_key(d.object_id)
        rows.setdefault(key, {"kind": "held", "reason": d.reason[:1000], "attempts": 0, "removed": key in gone, "at": now})
    return rows


# ---- one run


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

    def run(self) -> None:
        ctx, state = self.ctx, self.state
        links = links_from_rows(state.rows("links"))
        retries = state.rows("retries", RETRY_SCOPE)
        cursor = state.cursor(CURSOR)
        rnd = graph_round(ctx.graph, cursor, ctx.options, ctx.now)
        members: frozenset[str] | None = None
        members_before: set[str] = set()
        if ctx.options.users_group:
            members = group_members(ctx.graph, ctx.options.users_group, ctx.tenant.client_id)
            members_before = set(state.rows(CACHE_TABLE, MEMBERS_SCOPE))
        inputs = self._full(rnd, links) if rnd.full else self._delta(rnd, links, retries, members, members_before)
        options = UsersOptions.from_settings(ctx.options, users_group_members=members,
                                             confirm_deactivations=bool(ctx.args.get("confirm_deactivations")))
        plan = plan_users(list(inputs.users.values()), list(inputs.removed.values()), inputs.cv_users, links, options,
                          full_round=rnd.full, gone_cv_ids=inputs.gone)
        ctx.report.extra["full_round"] = rnd.full
        if rnd.full:
            ctx.report.extra["full_round_reason"] = rnd.reason
        if ctx.dry_run:
            _report_plan(ctx.report, plan, counts=True)
            ctx.report.plan_text = render_plan(plan)
            return
        cache = _Background(lambda: self._write_cache(inputs))
        applier = Applier(ctx, links, options, inputs.users, inputs.gone)
        try:
            applier.apply(plan)
        finally:
            cache.join()
        _report_plan(ctx.report, plan, applier.replans, counts=False)
        if plan.rows:
            state.upsert("links", {link.object_id: link.to_row() for link in plan.rows})
        state.delete("links", plan.stale)
        new_retries = _retry_rows(retries, applier.failed, plan, inputs.removed, ctx.now)
        if new_retries:
            state.upsert("retries", new_retries, RETRY_SCOPE)
        if applier.fatal is not None:
            raise applier.fatal  # the cursor stays: the next run replays this round
        state.delete("retries", sorted(set(retries) - set(new_retries)), RETRY_SCOPE)
        if members is not None:
            if members - members_before:
                state.upsert(CACHE_TABLE, {k: {"member": True} for k in sorted(members - members_before)}, MEMBERS_SCOPE)
            state.delete(CACHE_TABLE, sorted(members_before - members), MEMBERS_SCOPE)
        full_at = ctx.now if rnd.full else (cursor or {}).get("full_at")
        state.set_cursor(CURSOR, rnd.delta_link, full_at=full_at, group=ctx.options.users_group or "", select=_SELECT)

    def _write_cache(self, inputs: _Inputs) -> None:
        if inputs.cache_writes:
            self.state.upsert(CACHE_TABLE, {k: {"user": _dump(u)} for k, u in inputs.cache_writes.items()})
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
               members: frozenset[str] | None, members_before: set[str]) -> _Inputs:
        """The round's changes merged into the cached users, plus whoever else needs planning this run."""
        rows = {object_key(k): v for k, v in links.items()}
        removed = {k: v for k, v in rnd.removed.items() if k not in rnd.items}
        touched = set(rnd.items) | set(removed)
        extra = {object_key(o) for o in awaiting_link(links)} | set(retries)
        if members is not None:
            extra |= set(members) ^ members_before
        extra -= touched
        cache = load_cache(self.state, touched | extra)
        # Entra users sharing a mail with a touched user (old or new mail) may no longer be in conflict.
        mails = {text_of(u.get("mail")).casefold() for k in touched for u in (cache.get(k), rnd.items.get(k)) if u}
        partners = {k for k, link in rows.items() if link.status == "conflict" and link.email.casefold() in mails}
        partners -= touched | extra
        cache.update(load_cache(self.state, partners))
        extra |= partners
        users: dict[str, dict[str, Any]] = {}
        fetch: list[str] = []
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
        # Outside the users group, only users with a links row can need ClearVox (to be treated as removed).
        in_view = {k: u for k, u in users.items() if members is None or k in members or k in rows}
        lookup = CvLookup(self.ctx.clearvox, self.ctx.options.clearvox_concurrency)
        lookup.for_users({**in_view, **dict.fromkeys(removed)}, links)
        writes = {k: u for k, u in users.items() if cache.get(k) != u}
        return _Inputs(users, removed, list(lookup.found.values()), frozenset(lookup.gone), writes,
                       {k for k in removed if k in cache})


class _OneUser:
    """`sync users --user X`: that user now, every decision explained; the deltaLink is not touched."""

    def __init__(self, ctx: SyncContext, who: str) -> None:
        self.ctx = ctx
        self.who = who

    def run(self) -> None:
        ctx, state, report = self.ctx, self.ctx.state, self.ctx.report
        links = links_from_rows(state.rows("links"))
        users = _by_key(find_graph_users(ctx.graph, self.who))
        removed: dict[str, str] = {}
        if not users:
            wanted = self.who.casefold()
            known = [link for link in links.values()
                     if object_key(link.object_id) == object_key(self.who) or (link.email and link.email.casefold() == wanted)]
            if not known:
                reason = (f"no Entra user has Object-ID, email (mail) or sign-in name {self.who}; "
                          "check the spelling, or whether the user was deleted")
                report.add_skip(self.who, reason)
                report.plan_text = f"User {self.who}:\n  {reason}\n"
                return
            removed = {object_key(link.object_id): link.object_id for link in known}
        members = None
        if ctx.options.users_group:
            members = group_members(ctx.graph, ctx.options.users_group, ctx.tenant.client_id)
        options = UsersOptions.from_settings(ctx.options, users_group_members=members,
                                             confirm_deactivations=bool(ctx.args.get("confirm_deactivations")))
        lookup = CvLookup(ctx.clearvox, ctx.options.clearvox_concurrency)
        lookup.for_users({**users, **dict.fromkeys(removed)}, links)
        cv_users = list(lookup.found.values())
        plan = plan_users(list(users.values()), list(removed.values()), cv_users, links, options,
                          full_round=False, gone_cv_ids=lookup.gone)
        oids = {k: text_of(u.get("id")) for k, u in users.items()} | removed
        explained = {key: explain_user(users.get(key), oid, plan, cv_users, links, options) for key, oid in oids.items()}
        if ctx.dry_run:
            _report_plan(report, plan, counts=True)
            report.plan_text = self.text_of(explained, {}) + "(dry run: nothing written)\n"
            return
        applier = Applier(ctx, links, options, users, lookup.gone)
        applier.apply(plan)
        _report_plan(report, plan, applier.replans, counts=False)
        if plan.rows:
            state.upsert("links", {link.object_id: link.to_row() for link in plan.rows})
        state.delete("links", plan.stale)
        state.upsert(CACHE_TABLE, {k: {"user": _dump(u)} for k, u in users.items()})
        state.delete(CACHE_TABLE, sorted(removed))
        old = {k: r for k in oids if (r := state.get("retries", k, RETRY_SCOPE)) is not None}
        new = _retry_rows(old, applier.failed, plan, removed, ctx.now)
        if new:
            state.upsert("retries", new, RETRY_SCOPE)
        if applier.fatal is None:
            state.delete("retries", sorted(set(old) - set(new)), RETRY_SCOPE)
        report.plan_text = self.text_of(explained, applier.outcomes)
        if applier.fatal is not None:
            raise applier.fatal

    def text_of(self, explained: Mapping[str, list[str]], outcomes: Mapping[str, list[str]]) -> str:
        lines: list[str] = []
        for key, explanation in explained.items():
            lines.append(f"User {self.who}:")
            lines.extend(f"  {line}" for line in explanation)
            lines.extend(f"  Result: {outcome}" for outcome in outcomes.get(key, []))
        return "\n".join(lines) + "\n"


# ---- report unlinked and link --csv


def unlinked_rows(state: State) -> list[Link]:
    """Users waiting for an administrator to paste their Object-ID, as the last run left them."""
    links = links_from_rows(state.rows("links"))
    waiting = [link for link in links.values() if link.status == "unlinked" and link.cv_user_id]
    return sorted(waiting, key=lambda link: (link.email.casefold(), link.object_id))


def report_unlinked(tenant: Tenant, store: Store, out: TextIO, *, csv_format: bool) -> None:
    """`nexxt365 report unlinked [--csv]`: ClearVox users skipped for an existing email, with the Object-ID to paste."""
    rows = unlinked_rows(store.for_tenant(tenant.key))
    if csv_format:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for link in rows:
            writer.writerow([link.cv_user_id, link.email, link.display_name, link.object_id])
        return
    if not rows:
        print(f"No users wait for a link (tenant {tenant.key}).", file=out)
        return
    print(f"{len(rows)} Entra user(s) exist in ClearVox but are not linked (tenant {tenant.key}). Paste each Object-ID "
          "into \"Extern toepassing ID\" of the ClearVox user, or review `nexxt365 report unlinked --csv > FILE` and "
          "run `nexxt365 link --csv FILE`.", file=out)
    table = [("ClearVox user", "Email", "Entra display name", "Object-ID")]
    table += [(str(link.cv_user_id), link.email, link.display_name, link.object_id) for link in rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)


def link_from_csv(tenant: Tenant, store: Store, path: str, out: TextIO) -> int:
    """`nexxt365 link --csv FILE`: set Extern toepassing ID for each reviewed row, after checking it again.

    A row is linked only when its ClearVox user still has the row's email and
    no Object-ID, the Object-ID is still waiting for a link with that email
    and no other ClearVox user carries it. The next sync run sees the link and
    sends the Entra values. Returns the exit code: 0 all rows linked (or
    already), 1 some row refused or failed, 2 the file is unusable.
    """
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("clearvox_user_id", "email", "object_id") if c not in (reader.fieldnames or [])]
            if missing:
                print(f"{path}: missing column(s) {', '.join(missing)}; use the file of "
                      "`nexxt365 report unlinked --csv`", file=out)
                return EXIT_CONFIG
            entries = [(n, row) for n, row in enumerate(reader, start=2)]
    except OSError as exc:
        print(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})", file=out)
        return EXIT_CONFIG
    except (csv.Error, UnicodeDecodeError) as exc:
        print(f"{path}: not a CSV file ({exc})", file=out)
        return EXIT_CONFIG
    state = store.for_tenant(tenant.key)
    links = {object_key(k): v for k, v in links_from_rows(state.rows("links")).items()}
    code = EXIT_OK
    linked = 0
    with clearvox(tenant) as cv:
        for line, row in entries:
            cv_id = (row.get("clearvox_user_id") or "").strip()
            email = (row.get("email") or "").strip()
            oid = (row.get("object_id") or "").strip()
            if not (cv_id or email or oid):
                continue
            try:
                ok, message = _link_row(cv, links, cv_id, email, oid)
            except _RUN_LEVEL:
                raise
            except ClearVoxError as exc:
                ok, message = False, f"not linked: {exc}"
            print(f"line {line}: ClearVox user {cv_id or '?'} <{email}> Object-ID {oid or '?'}: {message}", file=out)
            if ok:
                linked += 1
            else:
                code = EXIT_ITEM_FAILURES
    print(f"{linked} row(s) linked or already linked; the next `nexxt365 sync users` sends the Entra values.", file=out)
    return code


def _link_row(cv: ClearVox, links: Mapping[str, Link], cv_id: str, email: str, oid: str) -> tuple[bool, str]:
    if not cv_id or not email or not oid:
        return False, "not linked: clearvox_user_id, email and object_id are all needed"
    link = links.get(object_key(oid))
    if link is None or link.status not in ("unlinked", "linked"):
        return False, "not linked: this Object-ID is not waiting for a link (run `nexxt365 sync users` and report again)"
    if link.cv_user_id != cv_id:
        return False, f"not linked: the last run pairs this Object-ID with ClearVox user {link.cv_user_id or '(none)'}"
    if link.email.casefold() != email.casefold():
        return False, f"not linked: the Entra user's email is now {link.email}"
    try:
        current = cv.get_user(cv_id)
    except AccountNotFound:
        raise
    except ClearVoxNotFound:
        return False, "not linked: the ClearVox user no longer exists"
    ext = (current.external_application_id or "").strip()
    if object_key(ext) == object_key(oid):
        return True, "already linked"
    if current.email.strip().casefold() != email.casefold():
        return False, f"not linked: the ClearVox user's email is now {current.email}"
    if ext:
        return False, f"not linked: the ClearVox user already carries Object-ID {ext}"
    others = [u.id for u in cv.iter_users(external_application_id=oid) if u.id != cv_id]
    if others:
        return False, f"not linked: ClearVox user {', '.join(others)} already carries this Object-ID"
    cv.update_user(cv_id, {"external_application_id": oid})
    return True, "linked"
