"""Calendar status sync, the run: free/busy through getSchedule, the presence ledger, ClearVox status writes.

The rules (resolution, decisions, the ledger row) are in shared.sync.calendar.rules; `run_calendar` is the runner's entry point.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from shared.clearvox import ClearVox, CvStatus
from shared.errors import (
    AccountNotFound,
    ClearVoxError,
    ClearVoxForbidden,
    ClearVoxNotFound,
    ClearVoxUnauthorized,
    ClearVoxUnavailable,
    GraphError,
    GraphUnavailable,
    LicenseRequired,
    MailboxUnavailable,
)
from shared.graph.schedule import ScheduleAnswer, get_schedule
from shared.sync.calendar.rules import (
    SHOW_AS_SPELLING,
    Action,
    Decision,
    LedgerEntry,
    LedgerOp,
    Resolution,
    ScheduleDataError,
    as_utc,
    decide,
    items_from_schedule,
    log,
    parse_status_map,
    resolve,
    row_datetime,
)
from shared.sync.split import select_part
from shared.sync.users.rules import Link, links_from_rows

if TYPE_CHECKING:
    from shared.graph.client import Graph
    from shared.sync.base import SyncContext


# ================================================================ the run: Graph -> decide -> ClearVox -> ledger

PRESENCE_TABLE = "presence"
NOTICES_TABLE = "notices"
NOTICE_SCOPE = "calendar"  # the notices table is shared; this sync keeps its rows in their own partition
# getSchedule window from now: only the events covering now matter; one availabilityView slot.
FETCH_WINDOW_MINUTES = 15
NOTICE_INTERVAL = timedelta(days=1)
# ClearVox unavailable this often with no success in the run: the remaining users wait for the next run
# instead of each spending the client's full retry budget on a PBX that is down.
CLEARVOX_BREAKER = 3


class NoticeKind(StrEnum):
    NO_MAILBOX = "no_mailbox"
    OUT_OF_SCOPE = "out_of_scope"
    NO_EMAIL = "no_email"
    CLEARVOX_USER_MISSING = "clearvox_user_missing"


_MAILBOX_KINDS = frozenset({NoticeKind.NO_MAILBOX, NoticeKind.OUT_OF_SCOPE, NoticeKind.NO_EMAIL})
_NOTICE_TEXT = {
    NoticeKind.NO_MAILBOX: "no Exchange Online mailbox to read free/busy from (no Exchange licence, on-premises, or an "
                           "unknown address), so no calendar status; the ClearVox status is left as it is",
    NoticeKind.OUT_OF_SCOPE: "mailbox outside the app's mailbox scope (Exchange application access policy or RBAC for "
                             "Applications): add the user to the scoped group if they have ClearVox (docs/calendar.md)",
    NoticeKind.NO_EMAIL: "no email address in the links table to look up the calendar with; the users sync fills it in",
    NoticeKind.CLEARVOX_USER_MISSING: "the linked ClearVox user no longer exists; the users sync relinks or reports it",
}
_ADMIN_ERRORS = (ClearVoxUnauthorized, ClearVoxForbidden, AccountNotFound, LicenseRequired)


@dataclass(frozen=True)
class CalendarUser:
    """A linked user as this sync sees them: the Entra object id, the ClearVox user, the mailbox to ask for."""

    object_id: str
    cv_user_id: str
    email: str  # lower-cased; the getSchedule id


def calendar_users(links: Mapping[str, Link]) -> list[CalendarUser]:
    """The linked, active users (links status "linked" with a ClearVox user id), in a stable order."""
    users = [CalendarUser(link.object_id, str(link.cv_user_id), link.email.strip().lower())
             for link in links.values() if link.status == "linked" and link.cv_user_id]
    return sorted(users, key=lambda u: u.object_id)


# ---------------------------------------------------------------- fetching free/busy


def fetch_schedules(graph: Graph, ids: Sequence[str], now: datetime, *,
                    avoid_as_anchor: Collection[str] = ()) -> dict[str, ScheduleAnswer]:
    """Free/busy of every id for the window from `now` (see shared.graph.schedule.get_schedule)."""
    start = as_utc(now)
    return get_schedule(graph, ids, start, start + timedelta(minutes=FETCH_WINDOW_MINUTES), FETCH_WINDOW_MINUTES,
                        avoid_as_anchor=avoid_as_anchor)


# ---------------------------------------------------------------- one run


@dataclass
class UserRun:
    """One user's way through a run: what the calendar said, what was decided and what happened."""

    user: CalendarUser
    resolution: Resolution | None
    ledger: LedgerEntry | None
    decision: Decision
    current: CvStatus | None = None
    written: bool = False
    failure: str | None = None
    notice: NoticeKind | None = None
    checked: bool = False  # ClearVox was read successfully this run

    @property
    def ledger_applies(self) -> bool:
        """The decision's ledger change may be stored: nothing failed (a failed write is retried next run)."""
        return self.failure is None and self.notice is None


class CalendarRun:
    """The calendar sync for one tenant at one moment; `run_calendar` is its entry point."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        # A typo in the map must not change anyone's status: ConfigError before any I/O (exit 2).
        self.status_map = parse_status_map(ctx.options.status_map)
        self.respect_manual = ctx.options.respect_manual
        self.now = as_utc(ctx.now)
        self.dry_run = ctx.dry_run
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._fatal: ClearVoxError | None = None
        self._cv_unavailable = 0
        self._cv_ok = 0

    # -- the steps -------------------------------------------------------------------------
    def run(self) -> None:
        state = self.ctx.state
        links = links_from_rows(state.rows("links"))
        users = calendar_users(links)
        everyone = {u.object_id for u in users}
        users = select_part(self.ctx, users)  # queue fan-out: one part of a large tenant (shared/sync/split.py)
        ledgers, unreadable = self._ledgers(state.rows(PRESENCE_TABLE))
        notices = state.rows(NOTICES_TABLE, scope=NOTICE_SCOPE)
        with_email = [u for u in users if u.email]
        avoid = {u.email for u in with_email if (notices.get(u.object_id) or {}).get("kind") in _MAILBOX_KINDS}
        answers = fetch_schedules(self.ctx.graph, [u.email for u in with_email], self.now, avoid_as_anchor=avoid)
        outages = [a for a in answers.values() if isinstance(a, GraphError) and not isinstance(a, MailboxUnavailable)]
        if answers and len(outages) == len(answers):
            raise GraphUnavailable(f"No free/busy data from Microsoft Graph in this run ({_clause(outages[0])}); every ClearVox status "
                             "stays as it is and the next run tries again.")
        runs = [self._first_decision(u, answers, ledgers.get(u.object_id)) for u in users]
        self._clearvox([r for r in runs if r.decision.action is Action.CHECK])
        if not self.dry_run:
            self._commit(runs, set(ledgers), unreadable, notices, everyone)
        self._report(runs, notices)
        if self._fatal is not None:
            raise self._fatal

    def _ledgers(self, rows: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, LedgerEntry], set[str]]:
        ledgers: dict[str, LedgerEntry] = {}
        unreadable: set[str] = set()
        for key, row in rows.items():
            try:
                ledgers[key] = LedgerEntry.from_row(row)
            except ValueError:
                unreadable.add(key)  # read as "not owned"; the row is removed or overwritten below
                self.ctx.report.add_warning(key, "unreadable presence ledger row; treated as not set by this app")
        return ledgers, unreadable

    def _first_decision(self, user: CalendarUser, answers: Mapping[str, ScheduleAnswer],
                        ledger: LedgerEntry | None) -> UserRun:
        """Resolution and the decision that needs no ClearVox read; missing data keeps the last state."""
        if not user.email:
            return UserRun(user, None, ledger, decide(None, ledger, None, self.now), notice=NoticeKind.NO_EMAIL)
        answer = answers.get(user.email)
        if answer is None:
            answer = GraphUnavailable("getSchedule gave no answer for this mailbox")
        if isinstance(answer, MailboxUnavailable):
            kind = NoticeKind.OUT_OF_SCOPE if answer.out_of_scope else NoticeKind.NO_MAILBOX
            return UserRun(user, None, ledger, decide(None, ledger, None, self.now), notice=kind)
        if isinstance(answer, GraphError):
            return UserRun(user, None, ledger, decide(None, ledger, None, self.now),
                           failure=f"no free/busy data from Microsoft Graph ({_clause(answer)}); status kept, tried again next run")
        try:
            items = items_from_schedule(answer)
        except ScheduleDataError as exc:
            return UserRun(user, None, ledger, decide(None, ledger, None, self.now),
                           failure=f"unusable free/busy data ({_clause(exc)}); status kept, tried again next run")
        resolution = resolve(items, self.now, self.status_map)
        return UserRun(user, resolution, ledger, decide(resolution, ledger, None, self.now, self.respect_manual))

    # -- ClearVox ------------------------------------------------------------------------------
    def _clearvox(self, runs: Sequence[UserRun]) -> None:
        """Read (and, on WRITE, set) the status of the users at a transition, with bounded concurrency."""
        if not runs:
            return
        workers = min(max(self.ctx.options.clearvox_concurrency, 1), len(runs))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self._settle, runs))

    def _settle(self, run: UserRun) -> None:
        if self._abort.is_set():
            run.failure = "not tried: ClearVox refused the API key or account in this run"
            return
        with self._lock:
            broken = self._cv_unavailable >= CLEARVOX_BREAKER and self._cv_ok == 0
        if broken:
            run.failure = "not tried: ClearVox was unavailable for the users before in this run; tried again next run"
            return
        cv: ClearVox = self.ctx.clearvox
        uid = run.user.cv_user_id
        try:
            run.current = cv.get_status(uid)
            run.checked = True
            run.decision = decide(run.resolution, run.ledger, run.current, self.now, self.respect_manual)
            if run.decision.action is Action.WRITE and not self.dry_run:
                assert run.decision.status is not None
                cv.set_status(uid, run.decision.status)
                run.written = True
        except _ADMIN_ERRORS as exc:
            with self._lock:
                if self._fatal is None:
                    self._fatal = exc
            self._abort.set()
            run.failure = f"ClearVox refused the request: {exc}"
        except ClearVoxNotFound:
            run.notice = NoticeKind.CLEARVOX_USER_MISSING
        except ClearVoxUnavailable as exc:
            with self._lock:
                self._cv_unavailable += 1
            run.failure = f"{_clause(exc)}; the ClearVox status is set on the next run"
        except ClearVoxError as exc:
            run.failure = str(exc)
        except Exception as exc:  # one user's problem must not stop the others
            log.exception("nexxt365 calendar: unexpected error for ClearVox user %s", uid)
            run.failure = f"unexpected {type(exc).__name__}; see the function log"
        else:
            with self._lock:
                self._cv_ok += 1

    # -- state -----------------------------------------------------------------------------
    def _commit(self, runs: Sequence[UserRun], ledger_keys: set[str], unreadable: set[str],
                notices: Mapping[str, Mapping[str, Any]], linked: set[str]) -> None:
        """Store the ledger changes of the users whose ClearVox step succeeded, the notices, and forget the unlinked."""
        puts: dict[str, dict[str, Any]] = {}
        deletes: set[str] = set()
        for run in runs:
            decision = run.decision
            if not run.ledger_applies:
                continue
            if decision.ledger_op is LedgerOp.PUT and decision.ledger is not None:
                puts[run.user.object_id] = dict(decision.ledger.to_row())
            elif decision.ledger_op is LedgerOp.DELETE and run.user.object_id in ledger_keys:
                deletes.add(run.user.object_id)
        deletes |= {key for key in ledger_keys if key not in linked} | unreadable
        deletes -= set(puts)
        state = self.ctx.state
        if puts:
            state.upsert(PRESENCE_TABLE, puts)
        if deletes:
            state.delete(PRESENCE_TABLE, sorted(deletes))

        report_rows: dict[str, dict[str, Any]] = {}
        cleared: set[str] = {key for key in notices if key not in linked}
        for run in runs:
            key = run.user.object_id
            row = notices.get(key)
            if run.notice is not None:
                if notice_due(row, run.notice, self.now):
                    since = row.get("since") if row and row.get("kind") == run.notice else None
                    report_rows[key] = {"kind": str(run.notice), "email": run.user.email, "reported_at": self.now,
                                        "since": since if isinstance(since, datetime) else self.now}
            elif row is not None and _notice_resolved(row, run):
                cleared.add(key)
        if report_rows:
            state.upsert(NOTICES_TABLE, report_rows, scope=NOTICE_SCOPE)
        if cleared:
            state.delete(NOTICES_TABLE, sorted(cleared), scope=NOTICE_SCOPE)

    # -- report ----------------------------------------------------------------------------
    def _report(self, runs: Sequence[UserRun], notices: Mapping[str, Mapping[str, Any]]) -> None:
        report = self.ctx.report
        statuses: list[dict[str, Any]] = []
        left_alone: list[dict[str, str]] = []
        quiet = kept = 0
        for run in runs:
            who = run.user.email or run.user.object_id
            decision = run.decision
            if run.notice is not None:
                if self.dry_run or notice_due(notices.get(run.user.object_id), run.notice, self.now):
                    report.add_skip(who, f"{_NOTICE_TEXT[run.notice]}; reported once a day")
                else:
                    quiet += 1
                continue
            if run.failure is not None:
                report.add_failure(who, run.failure)
                kept += run.resolution is None
                continue
            if decision.action is Action.WRITE and (run.written or self.dry_run):
                statuses.append(_transition(who, run))
                report.count("updated")
                continue
            report.count("unchanged")
            if run.resolution is None:
                kept += 1
            if decision.action is Action.LEAVE and run.checked and run.current is not None:
                left_alone.append({"id": who, "status": run.current.status, "reason": decision.reason})
        report.extra["at"] = self.now.isoformat()
        report.extra["linked_users"] = len(runs)
        report.extra["statuses"] = statuses
        report.extra["left_alone"] = left_alone
        report.extra["kept_without_data"] = kept
        report.extra["mailbox_notices_not_repeated"] = quiet
        if self.dry_run:
            report.plan_text = self._plan(statuses, left_alone, len(runs))

    def _plan(self, statuses: Sequence[Mapping[str, Any]], left_alone: Sequence[Mapping[str, str]], users: int) -> str:
        lines = [f"calendar status at {self.now:%Y-%m-%d %H:%M} UTC: {len(statuses)} change(s) for {users} linked user(s)"]
        for s in statuses:
            why = s["reason"] + (f"; show as {s['show_as']} until {s['until']}" if s.get("show_as") else "")
            lines.append(f"  {s['id']}: {s['from']} -> {s['to']} ({why})")
        lines += [f"  {s['id']}: {s['status']} left alone ({s['reason']})" for s in left_alone]
        return "\n".join(lines)


def notice_due(row: Mapping[str, Any] | None, kind: NoticeKind, now: datetime) -> bool:
    """A notice is reported when new, when its kind changed, and then once a day (or when the clock went back)."""
    if row is None or row.get("kind") != str(kind):
        return True
    try:
        last = row_datetime(row["reported_at"])
    except (KeyError, TypeError, ValueError):
        return True
    return now >= last + NOTICE_INTERVAL or now < last


def _notice_resolved(row: Mapping[str, Any], run: UserRun) -> bool:
    """The problem a notice describes is gone: free/busy was read, or the ClearVox user answered."""
    if row.get("kind") in _MAILBOX_KINDS:
        return run.resolution is not None
    return run.checked


def _clause(error: Exception) -> str:
    """An error's message to embed in a sentence of ours."""
    return str(error).strip().rstrip(".")


def _transition(who: str, run: UserRun) -> dict[str, Any]:
    event = run.resolution.event if run.resolution is not None else None
    return {
        "id": who,
        "from": run.current.status if run.current is not None else None,
        "to": run.decision.status,
        "reason": run.decision.reason,
        "show_as": SHOW_AS_SPELLING.get(event.show_as, event.show_as) if event is not None else None,
        "until": f"{event.end:%Y-%m-%d %H:%M} UTC" if event is not None else None,
    }


def run_calendar(ctx: SyncContext) -> None:
    """The calendar status sync (runner entry point): every linked user's status from their calendar now.

    One getSchedule request per 20 linked users; ClearVox is read and written only
    for users at a transition, with NEXXT365_CLEARVOX_CONCURRENCY requests at a time;
    the presence ledger changes only after ClearVox accepted the change. Missing
    Graph data keeps the last state; an unreadable mailbox is reported once a day.
    """
    CalendarRun(ctx).run()
