"""Calendar status benchmarks: one run over many linked users, and a whole working day minute by minute.

    python -m bench.bench --only calendar [--calendar-users 2000]

calendar-run   N linked users (default 2,000) at 100 ms latency on both simulators (the issue's
               condition, whatever --latency-ms says), at 10:00 on the generated working day
               below: a cold run (empty presence ledger, so everyone in a meeting is a transition;
               also with NEXXT365_CLEARVOX_CONCURRENCY=16), the same moment with the ledger warm
               (only real transitions) and the next, quiet minute. Graph requests must stay at
               ceil(N/20) plus the token.
calendar-day   the same day for N users at zero latency, run at every minute in which anything can
               change (23:55-00:05 and 00:55-01:05 for all-day events in Amsterdam and London,
               07:45-18:30 for meetings and short-notice changes; the generator asserts that
               nothing changes outside these windows). After every run each user's ClearVox
               status is compared with the calendar's truth at that minute, computed here from
               the generated events independently of the sync: zero mismatches means no missed
               and no late transition. ClearVox status writes are compared with the number of
               real transitions.
calendar-day-teams  the same day from 07:45 with NEXXT365_TEAMS_PRESENCE=true and Teams presence
               changing at any second (ad-hoc calls, the Teams call of half the meetings, presentations,
               Do not disturb), each run ticking every 10 s as a timer run does (the clock driven by
               the bench). After every tick each status is compared with the truth (the stronger of
               calendar and Teams); the latency of each Teams change that changed a status is the
               wait for the next tick plus that tick's processing time. Graph requests per minute
               (getSchedule once a minute, getPresencesByUserId every tick), ClearVox writes against
               real transitions.
calendar-peak-teams  the same with Teams presence for the busiest hour only (09:30-10:30).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import BenchArgs, Result, new_store, timed_run
from shared import runner
from shared.sandbox.world import World
from shared.state import Store
from shared.sync.users.rules import Link

DAY = date(2026, 12, 1)  # a Tuesday in winter time
SEED = 20261201
AMS = ZoneInfo("Europe/Amsterdam")
LON = ZoneInfo("Europe/London")
ZONES = {"W. Europe Standard Time": AMS, "GMT Standard Time": LON}
STATUS_PUT = "PUT /users/{userId}/status"
MINUTE = timedelta(minutes=1)
# Independent of shared.sync.calendar.rules on purpose: the truth the sync is checked against.
TRUTH_RANK = {"oof": 0, "busy": 1, "workingElsewhere": 2, "tentative": 3}
TRUTH_MAP = {"oof": "away", "busy": "busy", "workingElsewhere": "elsewhere", "tentative": "busy"}
SHOW_AS_WEIGHTS = {"busy": 62, "tentative": 14, "free": 12, "workingElsewhere": 6, "oof": 3, "unknown": 3}
DURATIONS = (15, 25, 30, 30, 45, 50, 60, 60, 60, 90, 120)
RUN_LATENCY_MS = 100.0


def local(hhmm: str, day: date = DAY, tz: ZoneInfo = AMS) -> datetime:
    return datetime.fromisoformat(f"{day.isoformat()}T{hhmm}").replace(tzinfo=tz).astimezone(UTC)


# Minutes in which the day scenario runs (Amsterdam wall clock).
WINDOWS = ((local("23:55", DAY - timedelta(days=1)), local("00:05")),
           (local("00:55"), local("01:05")),
           (local("07:45"), local("18:30")))


@dataclass
class Ev:
    """One generated calendar item, with the short-notice changes that happen to it during the day."""

    user: int
    start: datetime  # UTC; for all-day items midnight in the mailbox zone
    end: datetime
    show_as: str
    all_day: tuple[date, date] | None = None
    private: bool = False
    cancelled: bool = False
    recurrence: dict[str, Any] | None = None
    booked_at: datetime | None = None  # booked at short notice: exists from this minute
    cancelled_at: datetime | None = None  # cancelled at short notice from this minute
    moved_end: tuple[datetime, datetime] | None = None  # (from this minute, the new end)
    sim_id: str = ""

    def end_at(self, t: datetime) -> datetime:
        return self.moved_end[1] if self.moved_end and t >= self.moved_end[0] else self.end

    def known_at(self, t: datetime) -> bool:
        return (not self.cancelled and (self.booked_at is None or t >= self.booked_at)
                and (self.cancelled_at is None or t < self.cancelled_at))

    def changes(self) -> Iterator[datetime]:
        yield from (m for m in (self.booked_at, self.cancelled_at, self.moved_end[0] if self.moved_end else None) if m)


@dataclass
class Day:
    users: int
    zones: list[str]
    events: list[Ev]
    by_user: list[list[Ev]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.by_user = [[] for _ in range(self.users)]
        for ev in self.events:
            self.by_user[ev.user].append(ev)

    def truth(self, user: int, t: datetime) -> str:
        """What the user's ClearVox status must be at minute t, from the calendar as it is known then."""
        best: tuple[int, str] | None = None
        for ev in self.by_user[user]:
            if ev.show_as in TRUTH_MAP and ev.known_at(t) and ev.start <= t < ev.end_at(t):
                rank = TRUTH_RANK[ev.show_as]
                if best is None or rank < best[0]:
                    best = (rank, TRUTH_MAP[ev.show_as])
        return best[1] if best else "available"

    def changes_at(self, t: datetime) -> list[Ev]:
        return [ev for ev in self.events if t in set(ev.changes())]


def run_minutes() -> list[datetime]:
    out: list[datetime] = []
    for start, end in WINDOWS:
        t = start
        while t <= end:
            out.append(t)
            t += MINUTE
    return out


def generate_day(users: int, seed: int = SEED) -> Day:
    """A realistic working day: meetings on 5-minute marks, back-to-backs, overlaps, all-day leave, late changes."""
    rng = random.Random(seed)
    events: list[Ev] = []
    zones = ["GMT Standard Time" if rng.random() < 0.02 else "W. Europe Standard Time" for _ in range(users)]
    show_as = list(SHOW_AS_WEIGHTS)
    weights = list(SHOW_AS_WEIGHTS.values())
    for u in range(users):
        tz = ZONES[zones[u]]
        roll = rng.random()
        if roll < 0.03:  # leave all day
            events.append(_all_day(u, DAY, DAY + timedelta(days=1), "oof", tz))
            continue
        if roll < 0.05:  # a week's leave that started yesterday
            events.append(_all_day(u, DAY - timedelta(days=1), DAY + timedelta(days=3), "oof", tz))
            continue
        if roll < 0.10:  # working from home all day: shows as working elsewhere, meetings on top
            events.append(_all_day(u, DAY, DAY + timedelta(days=1), "workingElsewhere", tz))
        if rng.random() < 0.3:  # the daily stand-up, a recurring series since last week
            first = DAY - timedelta(days=6)
            events.append(Ev(u, local("09:00", DAY, AMS), local("09:15", DAY, AMS), "busy", recurrence={
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "noEnd", "startDate": first.isoformat()}}))
        cursor = 8 * 60 + 5 * rng.randrange(0, 12)
        for _ in range(rng.choice((1, 2, 3, 3, 4, 4, 5, 6))):
            cursor += 5 * rng.choice((0, 0, 0, 1, 3, 6, 12, 18, 24))  # 0: back-to-back
            length = rng.choice(DURATIONS)
            if cursor + length > 18 * 60:
                break
            start = DAY.isoformat() + f"T{cursor // 60:02d}:{cursor % 60:02d}"
            stop = cursor + length
            end = DAY.isoformat() + f"T{stop // 60:02d}:{stop % 60:02d}"
            ev = Ev(u, datetime.fromisoformat(start).replace(tzinfo=AMS).astimezone(UTC),
                    datetime.fromisoformat(end).replace(tzinfo=AMS).astimezone(UTC),
                    rng.choices(show_as, weights)[0], private=rng.random() < 0.1, cancelled=rng.random() < 0.04)
            events.append(ev)
            cursor = stop if rng.random() < 0.7 else cursor + 5 * rng.randrange(1, 6)  # sometimes overlapping
        # short-notice changes, decided during the day
        timed = [e for e in events if e.user == u and e.all_day is None and e.recurrence is None and not e.cancelled]
        if timed and rng.random() < 0.04:  # a meeting cancelled shortly before or while it runs
            victim = rng.choice(timed)
            victim.cancelled_at = victim.start + timedelta(minutes=rng.randrange(-10, 10))
        if timed and rng.random() < 0.03:  # a running meeting overruns: its end moves 15 minutes
            victim = rng.choice(timed)
            decided = victim.end - timedelta(minutes=rng.randrange(1, 6))
            if decided > victim.start and victim.cancelled_at is None:
                victim.moved_end = (decided, victim.end + timedelta(minutes=15))
        if rng.random() < 0.05:  # booked a few minutes before it starts
            booked = local("08:00") + timedelta(minutes=rng.randrange(0, 9 * 60))
            start_at = booked + timedelta(minutes=rng.randrange(1, 11))
            events.append(Ev(u, start_at, start_at + timedelta(minutes=rng.choice((15, 30))), "busy", booked_at=booked))
    day = Day(users, zones, events)
    _check_windows(day)
    return day


def _all_day(user: int, first: date, last: date, show_as: str, tz: ZoneInfo) -> Ev:
    start = datetime.combine(first, datetime.min.time(), tz).astimezone(UTC)
    end = datetime.combine(last, datetime.min.time(), tz).astimezone(UTC)
    return Ev(user, start, end, show_as, all_day=(first, last))


def _check_windows(day: Day) -> None:
    """Nothing may change outside the minutes the day scenario runs, or a 'late' transition would go unseen."""
    minutes = set(run_minutes())
    first = min(minutes)
    for ev in day.events:
        for moment in (ev.start, ev.end, ev.end_at(ev.end), *ev.changes()):
            if first < moment <= local("23:59") and moment not in minutes:
                raise AssertionError(f"generated change at {moment:%H:%M} UTC lies outside the run windows")


def populate(world: World, store: Store, day: Day) -> list[tuple[str, str]]:
    """Users in Entra and ClearVox, linked; the day's events known in the morning. Returns (object id, ClearVox id)."""
    people: list[tuple[str, str]] = []
    links: dict[str, dict[str, Any]] = {}
    for u in range(day.users):
        email = f"user{u:05d}@contoso.nl"
        oid = world.graph.add_user(displayName=f"User {u}", mail=email, userPrincipalName=email, time_zone=day.zones[u])
        cv = world.clearvox.add_user(first_name="User", last_name=str(u), email=email, external_application_id=oid)
        links[oid] = dict(Link(oid, cv["id"], email, f"User {u}", "linked").to_row())
        people.append((oid, cv["id"]))
    store.for_tenant(world.tenant.key).upsert("links", links)
    for ev in day.events:
        if ev.booked_at is None:
            _add(world, people, ev)
    return people


def _add(world: World, people: list[tuple[str, str]], ev: Ev) -> None:
    oid = people[ev.user][0]
    if ev.all_day:
        ev.sim_id = world.graph.add_event(oid, "Verlof", ev.all_day[0], ev.all_day[1], show_as=ev.show_as, is_all_day=True)
    else:
        ev.sim_id = world.graph.add_event(oid, "Overleg", ev.start.astimezone(AMS), ev.end.astimezone(AMS),
                                          show_as=ev.show_as, is_cancelled=ev.cancelled,
                                          sensitivity="private" if ev.private else "normal", recurrence=ev.recurrence)


def apply_changes(world: World, people: list[tuple[str, str]], day: Day, t: datetime) -> int:
    """The short-notice changes decided at minute t, made in the calendar before the run of that minute."""
    changed = 0
    for ev in day.events:
        if ev.booked_at == t:
            _add(world, people, ev)
        elif ev.cancelled_at == t:
            world.graph.update_event(ev.sim_id, is_cancelled=True)
        elif ev.moved_end is not None and ev.moved_end[0] == t:
            world.graph.update_event(ev.sim_id, end=ev.moved_end[1])
        else:
            continue
        changed += 1
    return changed


# ---------------------------------------------------------------- calendar-run


def calendar_run(args: BenchArgs) -> list[Result]:
    n = args.calendar_users
    day = generate_day(n)
    latency = RUN_LATENCY_MS / 1000
    results = []
    with World(latency=latency) as world:
        store = new_store(args)
        people = populate(world, store, day)
        ten = local("10:00")
        cold, report = timed_run(f"calendar-run cold ({n} users, ledger empty)", world, store, "calendar", at=ten)
        cold.extra.update(_run_extra(report, n))
        results.append(cold)
        # the cold run's cost is ClearVox round trips (a read and a write per user in a meeting): more in parallel
        for _, cv in people:
            world.clearvox.set_user_status(cv, "available", "system")
        store16 = new_store(args)
        store16.for_tenant(world.tenant.key).upsert("links", store.for_tenant(world.tenant.key).rows("links"))
        cold16, report = timed_run(f"calendar-run cold ({n} users, ledger empty, NEXXT365_CLEARVOX_CONCURRENCY=16)",
                                   world, store16, "calendar", at=ten, tenant=world.tenant_with(clearvox_concurrency=16))
        cold16.extra.update(_run_extra(report, n))
        results.append(cold16)
        # the same moment again, after a run at 09:59 left the ledger warm: only real transitions cost ClearVox calls
        for _, cv in people:
            world.clearvox.set_user_status(cv, "available", "system")
        store2 = new_store(args)
        store2.for_tenant(world.tenant.key).upsert("links", store.for_tenant(world.tenant.key).rows("links"))
        runner.run("calendar", world.tenant, store2, verify=world.verify, at=ten - MINUTE)
        warm, report = timed_run(f"calendar-run 10:00 ({n} users, ledger warm)", world, store2, "calendar", at=ten)
        warm.extra.update(_run_extra(report, n))
        results.append(warm)
        quiet, report = timed_run(f"calendar-run 10:01 ({n} users, no transition)", world, store2, "calendar",
                                  at=ten + MINUTE)
        quiet.extra.update(_run_extra(report, n))
        results.append(quiet)
    return results


def _run_extra(report: Any, n: int) -> dict[str, Any]:
    return {"graph_limit": math.ceil(n / 20) + 1, "written": report.updated, "failed": len(report.failed),
            "exit": report.exit_code}


# ---------------------------------------------------------------- calendar-day


def calendar_day(args: BenchArgs) -> list[Result]:
    n = args.calendar_users
    day = generate_day(n)
    minutes = run_minutes()
    with World(latency=0.0) as world:
        store = new_store(args)
        people = populate(world, store, day)
        world.graph.clear_log()
        world.clearvox.clear_log()
        mismatches: list[tuple[int, datetime, str, str]] = []
        transitions = 0
        previous = ["available"] * n
        walls: list[float] = []
        late_changes = 0
        started = time.perf_counter()
        for t in minutes:
            late_changes += apply_changes(world, people, day, t)
            t0 = time.perf_counter()
            report = runner.run("calendar", world.tenant, store, verify=world.verify, at=t)
            walls.append(time.perf_counter() - t0)
            if report.error or report.failed:
                raise AssertionError(f"run at {t:%H:%M}Z failed: {report.error or report.failed[:3]}")
            with world.clearvox.lock:
                actual = [world.clearvox.statuses[cv]["status"] for _, cv in people]
            for u in range(n):
                want = day.truth(u, t)
                if want != previous[u]:
                    transitions += 1
                    previous[u] = want
                if actual[u] != want:
                    mismatches.append((u, t, actual[u], want))
        wall = time.perf_counter() - started
        graph = len(world.graph.requests_to(lambda r: r.path.endswith("/getSchedule")))
        tokens = len(world.graph.requests_to(lambda r: "/oauth2/" in r.path))
        writes = world.clearvox.writes_by_operation[STATUS_PUT]
        result = Result(f"calendar-day ({n} users, {len(minutes)} runs)", wall, graph + tokens,
                        len(world.clearvox.requests_to()), writes)
        result.extra.update({
            "transitions": transitions, "late_or_missed": len(mismatches), "writes_minus_transitions": writes - transitions,
            "short_notice_changes": late_changes, "events": len(day.events),
            "getSchedule_per_run": round(graph / len(minutes), 2), "run_avg_s": round(sum(walls) / len(walls), 3),
            "run_max_s": round(max(walls), 3),
        })
        if mismatches:
            result.extra["first_mismatches"] = [(u, f"{t:%H:%M}Z", got, want) for u, t, got, want in mismatches[:5]]
            result.extra["error"] = f"{len(mismatches)} late or missed transitions"
        if writes != transitions:
            result.extra["error"] = f"{writes} ClearVox writes for {transitions} transitions"
        return [result]


# ---------------------------------------------------------------- calendar-day-teams

# Teams presence a generator sets, and what it must mean (independent of shared.sync.calendar.teams on purpose).
CALL, MEETING, PRESENTING, DND = ("Busy", "InACall"), ("Busy", "InAMeeting"), ("DoNotDisturb", "Presenting"), (
    "DoNotDisturb", "DoNotDisturb")
TEAMS_TRUTH = {CALL: "busy", MEETING: "busy", PRESENTING: "dnd", DND: "dnd"}
STRENGTH = {"dnd": 0, "away": 1, "busy": 2, "elsewhere": 3}
TICK = timedelta(seconds=10)
TICKS_PER_MINUTE = 5  # :00 to :40, the sync's ticks with Teams presence


@dataclass(frozen=True)
class Seg:
    """One stretch of Teams presence: from start (any second) to end."""

    start: datetime
    end: datetime
    presence: tuple[str, str]


def generate_presence(day: Day, seed: int = SEED + 14) -> list[list[Seg]]:
    """A realistic day of Teams presence per user, at any second of the minute.

    Ad-hoc calls (about four a day, 2-20 minutes), the Teams call of half the meetings (joined up to
    two minutes late, left up to three minutes after the end), a presentation in a fifth of those, and
    for one user in seven an hour of Do not disturb. Everything lies within the day's run window.
    """
    rng = random.Random(seed)
    first, last = local("08:00"), local("18:15")
    segs: list[list[Seg]] = [[] for _ in range(day.users)]
    for u in range(day.users):
        for _ in range(_poisson(rng, 4.0)):
            start = first + timedelta(seconds=rng.randrange(int((last - first).total_seconds()) - 1200))
            segs[u].append(Seg(start, start + timedelta(seconds=rng.randrange(120, 1200)), CALL))
        for ev in day.by_user[u]:
            if (ev.all_day or ev.recurrence or ev.cancelled or ev.booked_at or ev.show_as not in ("busy", "tentative")
                    or rng.random() >= 0.5):
                continue
            start = ev.start + timedelta(seconds=rng.randrange(0, 120))
            end = min(ev.end_at(ev.end) + timedelta(seconds=rng.randrange(-60, 180)), last)
            if end > start:
                segs[u].append(Seg(start, end, MEETING))
            if rng.random() < 0.2 and end - start > timedelta(minutes=12):
                begin = start + timedelta(seconds=rng.randrange(60, int((end - start).total_seconds()) - 600))
                segs[u].append(Seg(begin, begin + timedelta(seconds=rng.randrange(300, 600)), PRESENTING))
        if rng.random() < 1 / 7:
            start = first + timedelta(seconds=rng.randrange(int((last - first).total_seconds()) - 5400))
            segs[u].append(Seg(start, start + timedelta(seconds=rng.randrange(1800, 5400)), DND))
    return segs


def _poisson(rng: random.Random, mean: float) -> int:
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count


def presence_at(segs: list[Seg], t: datetime) -> tuple[str, str] | None:
    """What Teams shows at t: the strongest running stretch (Do not disturb over a call), the later on a tie."""
    running = [s for s in segs if s.start <= t < s.end]
    if not running:
        return None
    return min(running, key=lambda s: (STRENGTH[TEAMS_TRUTH[s.presence]], -s.start.timestamp())).presence


def truth_with_teams(day: Day, segs: list[list[Seg]], user: int, t: datetime) -> str:
    """The status at t: the stronger of the calendar's and Teams' (dnd > away > busy > elsewhere)."""
    calendar = day.truth(user, t)
    teams = presence_at(segs[user], t)
    if teams is None:
        return calendar
    wanted = TEAMS_TRUTH[teams]
    return wanted if calendar == "available" or STRENGTH[wanted] < STRENGTH[calendar] else calendar


@dataclass
class TeamsDay:
    """The replay's bookkeeping: what ClearVox must show after each tick and how long a change took."""

    day: Day
    segs: list[list[Seg]]
    people: list[tuple[str, str]]
    world: World
    shown: list[tuple[str, str] | None] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    since: list[datetime | None] = field(default_factory=list)  # when the pending Teams change happened
    latencies: list[float] = field(default_factory=list)
    transitions: int = 0
    mismatches: list[tuple[int, datetime, str, str]] = field(default_factory=list)
    ticks: int = 0
    tick_started: float = 0.0
    began: datetime | None = None  # the first tick: the state found then is no change to time

    def __post_init__(self) -> None:
        self.shown = [None] * self.day.users
        self.previous = ["available"] * self.day.users
        self.since = [None] * self.day.users

    def show(self, t: datetime) -> None:
        """Make the simulator's presence what Teams shows at t (only the users whose presence changed)."""
        self.began = self.began or t
        for u in range(self.day.users):
            now = presence_at(self.segs[u], t)
            if now != self.shown[u]:
                self.shown[u] = now
                availability, activity = now or ("Available", "Available")
                self.world.graph.set_presence(self.people[u][0], availability, activity)
                change = self._last_change(u, t)
                if change is not None and change > self.began and self.since[u] is None:
                    self.since[u] = change
        self.tick_started = time.perf_counter()

    def _last_change(self, u: int, t: datetime) -> datetime | None:
        edges = [m for s in self.segs[u] for m in (s.start, s.end) if m <= t]
        return max(edges) if edges else None

    def check(self, t: datetime) -> None:
        """After the tick at t: every status must be the truth at t; a Teams change that took effect is timed."""
        processing = time.perf_counter() - self.tick_started
        self.ticks += 1
        with self.world.clearvox.lock:
            actual = [self.world.clearvox.statuses[cv]["status"] for _, cv in self.people]
        for u in range(self.day.users):
            want = truth_with_teams(self.day, self.segs, u, t)
            if want != self.previous[u]:
                self.transitions += 1
                self.previous[u] = want
                pending = self.since[u]
                if pending is not None and want == truth_with_teams(self.day, self.segs, u, pending):
                    self.latencies.append((t - pending).total_seconds() + processing)
            self.since[u] = None
            if actual[u] != want:
                self.mismatches.append((u, t, actual[u], want))


def calendar_day_teams(args: BenchArgs, start: str = "07:45", stop: str = "18:30", name: str = "day") -> list[Result]:
    n = args.calendar_users
    day = generate_day(n)
    segs = generate_presence(day)
    minutes = [t for t in run_minutes() if local(start) <= t <= local(stop)]
    with World(latency=0.0) as world:
        world.graph.set_app_roles(world.client_id, ["User.Read.All", "Contacts.Read", "Calendars.Read",
                                                     "Presence.Read.All"])
        store = new_store(args)
        people = populate(world, store, day)
        tenant = world.tenant_with(teams_presence=True)
        replay = TeamsDay(day, segs, people, world)
        for earlier in (t for t in run_minutes() if t < minutes[0]):  # short-notice changes made before the replay
            apply_changes(world, people, day, earlier)
        world.graph.reset_stats()
        world.clearvox.clear_log()
        started = time.perf_counter()
        for t in minutes:
            apply_changes(world, people, day, t)
            last = [t]

            def wait(moment: datetime, last: list[datetime] = last) -> None:
                replay.check(last[0])
                last[0] = moment
                replay.show(moment)

            replay.show(t)
            report = runner.run("calendar", tenant, store, verify=world.verify, at=t, args={"wait": wait})
            if report.error or report.failed or report.extra.get("ticks") != TICKS_PER_MINUTE:
                raise AssertionError(f"run at {t:%H:%M}Z: {report.error or report.failed[:3] or report.extra.get('ticks')}")
            replay.check(last[0])
            if t.minute % 30 == 0:
                print(f"  {name} {t:%H:%M}Z: {replay.ticks} ticks, {time.perf_counter() - started:.0f} s", file=sys.stderr,
                      flush=True)
        wall = time.perf_counter() - started
        return [_teams_result(f"calendar-{name}-teams", n, minutes, replay, world, wall)]


def calendar_peak_teams(args: BenchArgs) -> list[Result]:
    """The busiest hour of the same day (most meetings start and end around 10:00)."""
    return calendar_day_teams(args, "09:30", "10:30", "peak")


def _teams_result(name: str, n: int, minutes: list[datetime], replay: TeamsDay, world: World, wall: float) -> Result:
    schedule = world.graph.counts["getSchedule"]
    presence = world.graph.counts["getPresencesByUserId"]
    writes = world.clearvox.writes_by_operation[STATUS_PUT]
    lat = sorted(replay.latencies) or [0.0]
    result = Result(f"{name} ({n} users, {len(minutes)} runs, {replay.ticks} ticks)", wall,
                    schedule + presence, len(world.clearvox.requests_to()), writes)
    result.extra.update({
        "transitions": replay.transitions, "late_or_missed": len(replay.mismatches),
        "writes_minus_transitions": writes - replay.transitions, "teams_changes_timed": len(replay.latencies),
        "latency_p50_s": round(lat[len(lat) // 2], 2), "latency_p95_s": round(lat[int(len(lat) * 0.95)], 2),
        "latency_max_s": round(lat[-1], 2),
        "getSchedule_per_min": round(schedule / len(minutes), 2), "presence_per_tick": round(presence / replay.ticks, 2),
        "presence_limit_per_tick": math.ceil(n / 650), "graph_per_min": round((schedule + presence) / len(minutes), 1),
        "throttled": world.graph.counts["presenceThrottled"],
    })
    if replay.mismatches:
        result.extra["first_mismatches"] = [(u, f"{t:%H:%M:%S}Z", a, w) for u, t, a, w in replay.mismatches[:5]]
        result.extra["error"] = f"{len(replay.mismatches)} late or missed transitions"
    if writes != replay.transitions:
        result.extra["error"] = f"{writes} ClearVox writes for {replay.transitions} transitions"
    return result


SCENARIOS = {"calendar-run": calendar_run, "calendar-day": calendar_day, "calendar-day-teams": calendar_day_teams,
             "calendar-peak-teams": calendar_peak_teams}
