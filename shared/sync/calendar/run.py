"""Calendar status sync, the run: free/busy through getSchedule, ClearVox status reads and writes, the state.

One run per tenant and moment. Free/busy of every linked user comes from
getSchedule (one request per 20 users); the rules (shared.sync.calendar.rules)
and the one decision (shared.sync.calendar.decision) say what to do per user;
ClearVox is read and written only for users at a transition, through the shared
applier `ctx.apply`:

* the outage rule is the applier's one rule (shared.sync.base.OUTAGE_IN_A_ROW):
  the run stops asking ClearVox when it cannot be reached at all, or after that
  many "unavailable" answers in a row; the users not tried keep their status, are
  listed as failed and are decided again next minute;
* the time budget is the spec's (45 s, inside the timer's minute): users not
  reached in time keep their state, are decided next minute, and the report says
  how many (`not_reached`);
* errors by kind: an AdminFix (API key, account, licence) stops the run with exit
  2; a Transient error or an ItemError fails that user only.

With Teams presence on (shared.sync.calendar.presence_input) a timer run decides
at several ticks of its minute (:00, :10, :20, :30, :40; see teams.tick_moments):
free/busy is read once, at the start, and resolved again at each tick; presence is
read at every tick. The last tick starts inside the 45 s budget, so a run never
overlaps the next one.

The ledger changes only after ClearVox accepted the change; missing Graph data
keeps the last state; an unreadable mailbox is reported once a day.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.errors import (
    AdminFix,
    ClearVoxNotFound,
    GraphError,
    GraphUnavailable,
    ItemError,
    LeaseLost,
    MailboxUnavailable,
    Transient,
)
from shared.graph.schedule import ScheduleAnswer, get_schedule
from shared.status_maps import parse_status_map
from shared.sync.calendar.decision import Action, LedgerOp, decide
from shared.sync.calendar.ledger import (
    LEDGER_TABLE,
    MAILBOX_KINDS,
    NOTICE_SCOPE,
    NOTICES_TABLE,
    LedgerEntry,
    NoticeKind,
    notice_due,
    notice_row,
    read_ledgers,
)
from shared.sync.calendar.presence_input import PRESENCE_NOTICE_KEY, PresenceInput
from shared.sync.calendar.render import CalendarUser, UserRun, clause, render_report
from shared.sync.calendar.rules import (
    Resolution,
    ScheduleDataError,
    ScheduleItem,
    as_utc,
    items_from_schedule,
    resolve,
)
from shared.sync.calendar.teams import tick_moments
from shared.sync.split import select_part
from shared.sync.users.rules import Link, links_from_rows

if TYPE_CHECKING:
    from shared.graph.client import Graph
    from shared.sync.base import Applied, SyncContext

# getSchedule window from now: only the events covering now matter; one availabilityView slot.
FETCH_WINDOW_MINUTES = 15
# A tick of a timer run with Teams presence starts only this long before the run's budget ends, at the latest.
TICK_MARGIN_S = 3.0


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


@dataclass(frozen=True)
class CalendarNow:
    """One user's free/busy as read at the start of the run: the items, or why there are none."""

    items: list[ScheduleItem] | None
    failure: str | None = None
    notice: NoticeKind | None = None


class CalendarRun:
    """The calendar sync for one tenant: free/busy once, then one tick or (with Teams presence) several."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        # A typo in a map must not change anyone's status: ConfigError before any I/O (exit 2).
        self.status_map = parse_status_map(ctx.options.status_map)
        self.presence = PresenceInput(ctx) if ctx.options.teams_presence else None
        self.respect_manual = ctx.options.respect_manual
        self.now = as_utc(ctx.now)
        self.started = time.monotonic()
        self.dry_run = ctx.dry_run

    def run(self) -> None:
        state = self.ctx.state
        users = calendar_users(links_from_rows(state.rows("links")))
        linked = {u.object_id for u in users}
        users = select_part(self.ctx, users)  # queue fan-out: one part of a large tenant (shared/sync/split.py)
        ledgers, unreadable = read_ledgers(state.rows(LEDGER_TABLE))
        for key in sorted(unreadable):
            self.ctx.report.add_warning(key, "unreadable status ledger row; treated as not set by this app")
        notices = state.rows(NOTICES_TABLE, scope=NOTICE_SCOPE)
        calendars = self._calendars(users, notices)
        ticks: list[list[UserRun]] = []
        stopped: Exception | None = None
        for moment in self._ticks():
            runs = self._tick(users, calendars, ledgers, moment)
            stopped = self._clearvox([r for r in runs if r.decision.action is Action.CHECK], moment).stopped
            if not self.dry_run:
                self._commit(runs, ledgers, unreadable if not ticks else set(), linked)
            ticks.append(runs)
            if stopped is not None:
                break
        if not self.dry_run:
            self._commit_notices(ticks[0], notices, linked)
        if self.presence is not None:
            self.presence.report(notices, self.now)
        render_report(self.ctx.report, ticks, notices, self.now, self.dry_run)
        if isinstance(stopped, AdminFix):
            raise stopped

    def _ticks(self) -> Iterator[datetime]:
        """The moments this run decides at: now and, with Teams presence in a timer run, every 10 s of its minute."""
        yield self.now
        if self.presence is None or self.dry_run or not (self.ctx.at is None or "wait" in self.ctx.args):
            return
        wait: Callable[[datetime], None] = self.ctx.args.get("wait") or _sleep_until
        for moment in tick_moments(self.now)[1:]:
            if self.started + (moment - self.now).total_seconds() + TICK_MARGIN_S >= self.ctx.deadline:
                return  # that tick would not end inside the budget: the next run continues
            wait(moment)
            yield moment

    def _calendars(self, users: Sequence[CalendarUser], notices: Mapping[str, Mapping[str, Any]]) -> dict[str, CalendarNow]:
        """Free/busy of every user, once per run; a run with no free/busy data at all stops here."""
        with_email = [u for u in users if u.email]
        avoid = {u.email for u in with_email if (notices.get(u.object_id) or {}).get("kind") in MAILBOX_KINDS}
        answers = fetch_schedules(self.ctx.graph, [u.email for u in with_email], self.now, avoid_as_anchor=avoid)
        outages = [a for a in answers.values() if isinstance(a, GraphError) and not isinstance(a, MailboxUnavailable)]
        if answers and len(outages) == len(answers):
            raise GraphUnavailable(f"No free/busy data from Microsoft Graph in this run ({clause(outages[0])}); every "
                                   "ClearVox status stays as it is and the next run tries again.")
        return {u.object_id: _calendar_now(u, answers) for u in users}

    def _tick(self, users: Sequence[CalendarUser], calendars: Mapping[str, CalendarNow],
              ledgers: Mapping[str, LedgerEntry], moment: datetime) -> list[UserRun]:
        """Every user's resolution at `moment` and the decision that needs no ClearVox read."""
        reading = self.presence.read(users) if self.presence is not None else None
        runs = []
        for user in users:
            cal, ledger = calendars[user.object_id], ledgers.get(user.object_id)
            keep = decide(None, ledger, None, moment)
            if cal.items is None:
                runs.append(UserRun(user, None, ledger, keep, failure=cal.failure, notice=cal.notice))
                continue
            resolution: Resolution | None = resolve(cal.items, moment, self.status_map)
            if reading is not None:
                resolution = reading.combine(user.object_id, resolution, ledger)
            runs.append(UserRun(user, resolution, ledger, decide(resolution, ledger, None, moment, self.respect_manual)))
        return runs

    # -- ClearVox ------------------------------------------------------------------------------
    def _clearvox(self, runs: Sequence[UserRun], moment: datetime) -> Applied[UserRun]:
        """Read (and, on WRITE, set) the status of the users at a transition, through the shared applier."""
        applied = self.ctx.apply(runs, lambda run: self._settle(run, moment), self._settled)
        if isinstance(applied.stopped, LeaseLost):
            raise applied.stopped  # another run may own the tenant now: no state is written
        for run in applied.not_started:
            if isinstance(applied.stopped, AdminFix):
                run.failure = "not tried: ClearVox refused the API key or account in this run"
            elif applied.stopped is not None:
                run.failure = "not tried: ClearVox was unavailable for the users before in this run; tried again next run"
            else:  # the time budget: keep the state, decide again next minute
                run.not_reached = True
        return applied

    def _settle(self, run: UserRun, moment: datetime) -> None:
        """One user at a transition (in an applier thread): read ClearVox, decide, write when the decision says so."""
        uid = run.user.cv_user_id
        run.current = self.ctx.clearvox.get_status(uid)
        run.checked = True
        run.decision = decide(run.resolution, run.ledger, run.current, moment, self.respect_manual)
        if run.decision.action is Action.WRITE and not self.dry_run:
            assert run.decision.status is not None
            self.ctx.clearvox.set_status(uid, run.decision.status)
            run.written = True

    def _settled(self, run: UserRun, result: Exception | None) -> None:
        if not isinstance(result, Exception):
            return
        if isinstance(result, ClearVoxNotFound):
            run.notice = NoticeKind.CLEARVOX_USER_MISSING
        elif isinstance(result, Transient):
            run.failure = f"{clause(result)}; the ClearVox status is set on the next run"
        elif isinstance(result, ItemError):
            run.failure = str(result)
        else:  # the applier logged it; one user's problem must not stop the others
            run.failure = f"unexpected {type(result).__name__}; see the function log"

    # -- state -----------------------------------------------------------------------------
    def _commit(self, runs: Sequence[UserRun], ledgers: dict[str, LedgerEntry], unreadable: set[str],
                linked: set[str]) -> None:
        """Store the ledger changes of the users whose ClearVox step succeeded and forget the unlinked;
        `ledgers` follows, for the next tick."""
        puts: dict[str, LedgerEntry] = {}
        deletes: set[str] = set()
        for run in runs:
            decision = run.decision
            if not run.ledger_applies:
                continue
            if decision.ledger_op is LedgerOp.PUT and decision.ledger is not None:
                puts[run.user.object_id] = decision.ledger
            elif decision.ledger_op is LedgerOp.DELETE and run.user.object_id in ledgers:
                deletes.add(run.user.object_id)
        deletes |= {key for key in ledgers if key not in linked} | unreadable
        deletes -= set(puts)
        if puts:
            self.ctx.state.upsert(LEDGER_TABLE, {key: dict(entry.to_row()) for key, entry in puts.items()})
        if deletes:
            self.ctx.state.delete(LEDGER_TABLE, sorted(deletes))
        ledgers.update(puts)
        for key in deletes:
            ledgers.pop(key, None)

    def _commit_notices(self, runs: Sequence[UserRun], notices: Mapping[str, Mapping[str, Any]], linked: set[str]) -> None:
        report_rows: dict[str, dict[str, Any]] = {}
        cleared: set[str] = {key for key in notices if key not in linked and key != PRESENCE_NOTICE_KEY}
        for run in runs:
            key = run.user.object_id
            row = notices.get(key)
            if run.notice is not None:
                if notice_due(row, run.notice, self.now):
                    report_rows[key] = notice_row(row, run.notice, run.user.email, self.now)
            elif row is not None and _notice_resolved(row, run):
                cleared.add(key)
        if report_rows:
            self.ctx.state.upsert(NOTICES_TABLE, report_rows, scope=NOTICE_SCOPE)
        if cleared:
            self.ctx.state.delete(NOTICES_TABLE, sorted(cleared), scope=NOTICE_SCOPE)


def _notice_resolved(row: Mapping[str, Any], run: UserRun) -> bool:
    """The problem a notice describes is gone: free/busy was read, or the ClearVox user answered."""
    if row.get("kind") in MAILBOX_KINDS:
        return run.resolution is not None
    return run.checked


def _calendar_now(user: CalendarUser, answers: Mapping[str, ScheduleAnswer]) -> CalendarNow:
    """A user's getSchedule answer as items; missing or unusable data keeps their last state."""
    if not user.email:
        return CalendarNow(None, notice=NoticeKind.NO_EMAIL)
    answer = answers.get(user.email)
    if answer is None:
        answer = GraphUnavailable("getSchedule gave no answer for this mailbox")
    if isinstance(answer, MailboxUnavailable):
        return CalendarNow(None, notice=NoticeKind.OUT_OF_SCOPE if answer.out_of_scope else NoticeKind.NO_MAILBOX)
    if isinstance(answer, GraphError):
        return CalendarNow(None, failure=f"no free/busy data from Microsoft Graph ({clause(answer)}); status kept, "
                           "tried again next run")
    try:
        return CalendarNow(items_from_schedule(answer))
    except ScheduleDataError as exc:
        return CalendarNow(None, failure=f"unusable free/busy data ({clause(exc)}); status kept, tried again next run")


def _sleep_until(moment: datetime) -> None:
    """Wait for the next tick of a live timer run (the clock, not --at)."""
    delay = (moment - datetime.now(UTC)).total_seconds()
    if delay > 0:
        time.sleep(delay)


def run_calendar(ctx: SyncContext) -> None:
    """The calendar status sync (runner entry point): every linked user's status from their calendar now."""
    CalendarRun(ctx).run()
