"""When an NCRONTAB schedule fires: the tick at or before a moment, and the next one after it.

Azure Functions timers use six-field NCRONTAB expressions, seconds first
(`{second} {minute} {hour} {day} {month} {day-of-week}`), in UTC unless the app sets
WEBSITE_TIME_ZONE. Each field is `*`, a number, a name (jan-dec, sun-sat), a range
`a-b`, a list `a,b` or a step `*/n`, `a-b/n`. Day of month and day of week must both
match. The fan-out uses this to date a queue message (`due`: the tick it belongs to)
and to decide when it is stale (the next tick has come). Validating the settings is
the settings module's job; an expression this module cannot read raises ValueError.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_SEARCH_DAYS = 366 * 8  # covers 29 February on a given weekday


def _value(text: str, index: int) -> int:
    names = _MONTHS if index == 4 else _DAYS if index == 5 else ()
    if text.lower() in names:
        return names.index(text.lower()) + (1 if index == 4 else 0)
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number")
    return int(text)


def _field(text: str, index: int) -> frozenset[int]:
    low, high = _BOUNDS[index]
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = int(step_text) if slash else 1
        if step < 1:
            raise ValueError(f"step {step_text!r} must be at least 1")
        if base == "*":
            first, last = low, high
        else:
            start, dash, end = base.partition("-")
            first = _value(start, index)
            last = _value(end, index) if dash else (high if slash else first)
        if not low <= first <= last <= high:
            raise ValueError(f"{part!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    if index == 5 and 7 in values:  # 7 is Sunday too
        values = (values - {7}) | {0}
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    seconds_of_day: tuple[int, ...]  # sorted
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    every: timedelta | None = None  # the TimeSpan form (hh:mm:ss) fires every this long

    def day_matches(self, day: date) -> bool:
        return day.day in self.days and day.month in self.months and (day.isoweekday() % 7) in self.weekdays


@lru_cache(maxsize=64)
def parse(expr: str) -> Schedule:
    """An NCRONTAB expression (or the TimeSpan form `hh:mm:ss`) as sets of matching values."""
    text = expr.strip()
    if ":" in text and " " not in text:
        hours, minutes, secs = (int(p) for p in text.split(":"))
        every = timedelta(hours=hours, minutes=minutes, seconds=secs)
        if every <= timedelta(0):
            raise ValueError(f"{expr!r} is not a positive interval")
        return Schedule((), frozenset(), frozenset(), frozenset(), every)
    fields = text.split()
    if len(fields) != 6:
        raise ValueError(f"{expr!r} does not have six fields (seconds first)")
    sec, minute, hour, day, month, weekday = (_field(f, i) for i, f in enumerate(fields))
    of_day = tuple(sorted(h * 3600 + m * 60 + s for h in hour for m in minute for s in sec))
    return Schedule(of_day, day, month, weekday)


def _at(day: date, second: int) -> datetime:
    return datetime.combine(day, time(), UTC) + timedelta(seconds=second)


def next_after(expr: str, moment: datetime) -> datetime:
    """The first tick strictly after `moment` (UTC)."""
    schedule = parse(expr)
    moment = moment.astimezone(UTC)
    if schedule.every is not None:
        return moment + schedule.every
    start = moment.date()
    for offset in range(_SEARCH_DAYS):
        day = start + timedelta(days=offset)
        if not schedule.day_matches(day):
            continue
        after = (moment - _at(day, 0)).total_seconds() if offset == 0 else -1
        i = bisect.bisect_right(schedule.seconds_of_day, after)
        if i < len(schedule.seconds_of_day):
            return _at(day, schedule.seconds_of_day[i])
    raise ValueError(f"{expr!r} never fires")


def latest_at_or_before(expr: str, moment: datetime) -> datetime:
    """The tick `moment` belongs to: the last one at or before it (UTC). The TimeSpan form has no fixed
    ticks: `moment` itself, to the second."""
    schedule = parse(expr)
    moment = moment.astimezone(UTC)
    if schedule.every is not None:
        return moment.replace(microsecond=0)
    start = moment.date()
    for offset in range(_SEARCH_DAYS):
        day = start - timedelta(days=offset)
        if not schedule.day_matches(day):
            continue
        upto = (moment - _at(day, 0)).total_seconds() if offset == 0 else 86400
        i = bisect.bisect_right(schedule.seconds_of_day, upto)
        if i > 0:
            return _at(day, schedule.seconds_of_day[i - 1])
    raise ValueError(f"{expr!r} never fires")


def interval(expr: str, due: datetime) -> timedelta:
    """The gap between the tick `due` belongs to and the next one: how long a run of that tick may still start."""
    tick = latest_at_or_before(expr, due)
    return next_after(expr, tick) - tick
