"""Calendar status: from the Outlook "show as" of the event happening now to a ClearVox status.

This module is the pure logic; shared.sync.calendar.run has the entry point
`run_calendar`, which does the I/O. One run per user:

    items = items_from_schedule(schedule_information)
    resolution = resolve(items, now, status_map)           # None instead when Graph gave no data
    decision = decide(resolution, ledger, None, now, respect_manual)
    if decision.action is Action.CHECK:                    # only at a transition
        decision = decide(resolution, ledger, clearvox.get_status(uid), now, respect_manual)

Reading ClearVox for 2,000 users every minute is not affordable, so `decide` asks
for the user's current ClearVox status (Action.CHECK) only when it is about to
act: when an event starts, the covering event changes, or the event ends. In the
steady state it answers from the presence ledger alone.

Rules for manual changes (a ClearVox status with changed_by "user"):

* A status the user set while the connector did not own their status (no event
  of theirs was running, or the connector had left them alone) is never touched,
  except that `available` is not protected: it is what the connector would restore
  anyway. The connector records that it yielded, so it does not ask again during
  that event, and asks again when the next event starts.
* A change made during an event the connector set: by default the event's end
  still restores `available` (the guide). With respect_manual the status stays
  until the next event starts, which then sets its own status again.
* The next event also takes over when the connector owned the previous event and
  the user changed the status during it; a change made after that event ended is
  a change "while no event was running" and is left alone.
* Manual changes are only noticed at transitions, the only moments the connector acts.

Times are aware datetimes in UTC. Periods are half open, [start, end), so the
moment one event ends and the next begins belongs to the next one: no flash of
available between back-to-back events.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.clearvox import STATUSES, CvStatus
from shared.digest import digest_text
from shared.errors import (
    ConfigError,
    GraphError,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger("nexxt365")

STATUS_MAP_SETTING = "NEXXT365_STATUS_MAP"
STATUS_MAP_EXAMPLE = "tentative=available,oof=away"
AVAILABLE = "available"

# Graph freeBusyStatus values (lower-cased), highest first. "unknown" and anything
# else Graph may add count as nothing.
SHOW_AS_PRIORITY: tuple[str, ...] = ("oof", "busy", "workingelsewhere", "tentative", "free")
_RANK = {name: rank for rank, name in enumerate(SHOW_AS_PRIORITY)}
# How each show-as is spelled in Graph, for messages.
SHOW_AS_SPELLING = {"oof": "oof", "busy": "busy", "workingelsewhere": "workingElsewhere",
                     "tentative": "tentative", "free": "free"}

DEFAULT_STATUS_MAP: Mapping[str, str | None] = {
    "oof": "away",
    "busy": "busy",
    "workingelsewhere": "elsewhere",
    "tentative": "busy",
    "free": None,
}

# Windows time zone names Graph may use -> IANA (CLDR windowsZones, territory 001).
# The fetch asks for UTC; this covers data that arrives in a mailbox's own zone.
WINDOWS_ZONES: Mapping[str, str] = {
    "utc": "UTC",
    "coordinated universal time": "UTC",
    "tzone://microsoft/utc": "UTC",
    "w. europe standard time": "Europe/Berlin",
    "romance standard time": "Europe/Paris",
    "central europe standard time": "Europe/Budapest",
    "central european standard time": "Europe/Warsaw",
    "gmt standard time": "Europe/London",
    "greenwich standard time": "Atlantic/Reykjavik",
    "e. europe standard time": "Europe/Chisinau",
    "fle standard time": "Europe/Kiev",
    "gtb standard time": "Europe/Bucharest",
    "turkey standard time": "Europe/Istanbul",
    "russian standard time": "Europe/Moscow",
    "israel standard time": "Asia/Jerusalem",
    "egypt standard time": "Africa/Cairo",
    "south africa standard time": "Africa/Johannesburg",
    "w. central africa standard time": "Africa/Lagos",
    "morocco standard time": "Africa/Casablanca",
    "arabian standard time": "Asia/Dubai",
    "arab standard time": "Asia/Riyadh",
    "india standard time": "Asia/Kolkata",
    "china standard time": "Asia/Shanghai",
    "singapore standard time": "Asia/Singapore",
    "tokyo standard time": "Asia/Tokyo",
    "aus eastern standard time": "Australia/Sydney",
    "new zealand standard time": "Pacific/Auckland",
    "eastern standard time": "America/New_York",
    "central standard time": "America/Chicago",
    "mountain standard time": "America/Denver",
    "us mountain standard time": "America/Phoenix",
    "pacific standard time": "America/Los_Angeles",
    "alaskan standard time": "America/Anchorage",
    "hawaiian standard time": "Pacific/Honolulu",
    "atlantic standard time": "America/Halifax",
    "e. south america standard time": "America/Sao_Paulo",
}


class ScheduleDataError(GraphError):
    """Graph gave no usable calendar data for a user: keep their last state, do not guess."""


# ---------------------------------------------------------------- status map


def parse_status_map(text: str | None) -> dict[str, str | None]:
    """The show-as -> ClearVox status map: the defaults with the overrides of NEXXT365_STATUS_MAP.

    Syntax `show-as=status` pairs separated by commas (or semicolons), e.g.
    `tentative=available,oof=away`; show-as names are Graph's, any case; `none`
    makes a show-as count as nothing. A typo must not silently change people's
    status, so anything unreadable raises ConfigError.
    """
    result: dict[str, str | None] = dict(DEFAULT_STATUS_MAP)
    if text is None or not text.strip():
        return result
    seen: set[str] = set()
    for part in re.split(r"[,;]", text):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        show_as, status = name.strip().lower(), value.strip().lower()
        if not sep or not show_as or not status:
            _bad_map(f"{part!r} is not of the form show-as=status")
        if show_as not in _RANK:
            names = ", ".join(SHOW_AS_SPELLING[s] for s in SHOW_AS_PRIORITY)
            _bad_map(f"unknown show-as {name.strip()!r} (use {names})")
        if status != "none" and status not in STATUSES:
            _bad_map(f"unknown status {value.strip()!r} for {name.strip()} (use {', '.join(STATUSES)} or none)")
        if show_as in seen:
            _bad_map(f"{name.strip()} is given twice")
        seen.add(show_as)
        result[show_as] = None if status == "none" else status
    return result


def _bad_map(problem: str) -> NoReturn:
    raise ConfigError(f"{STATUS_MAP_SETTING}: {problem}; example: {STATUS_MAP_SETTING}={STATUS_MAP_EXAMPLE}")


# ---------------------------------------------------------------- schedule items


def event_key(start: datetime, end: datetime, show_as: str) -> str:
    """Opaque, stable id of a calendar period: the same in every getSchedule answer, never the subject."""
    text = f"{as_utc(start).isoformat()}|{as_utc(end).isoformat()}|{show_as.lower()}"
    return digest_text(text, 20)


@dataclass(frozen=True)
class ScheduleItem:
    """One calendar period as far as status is concerned: when, and how it shows. No subject, by design."""

    show_as: str
    start: datetime
    end: datetime
    is_private: bool = False
    key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "show_as", self.show_as.strip().lower())
        object.__setattr__(self, "start", as_utc(self.start))
        object.__setattr__(self, "end", as_utc(self.end))
        object.__setattr__(self, "key", event_key(self.start, self.end, self.show_as))

    def covers(self, moment: datetime) -> bool:
        """True when `moment` lies in [start, end): an event's end belongs to whatever comes next."""
        return self.start <= moment < self.end


def items_from_schedule(schedule_information: Mapping[str, Any]) -> list[ScheduleItem]:
    """The items of one getSchedule `scheduleInformation`.

    getSchedule reports all-day events as instants (midnight in the mailbox's own
    zone), so no date handling is needed here. An `error` in the answer, a missing
    `scheduleItems` or an unreadable item raises ScheduleDataError: partial data
    could turn someone available while they are in a meeting.
    """
    if not isinstance(schedule_information, Mapping):
        raise ScheduleDataError("getSchedule answer is not an object")
    error = schedule_information.get("error")
    if error:
        code = str(error.get("responseCode") or "") if isinstance(error, Mapping) else ""
        raise ScheduleDataError(f"no free/busy data for this mailbox ({code or 'error'})", code=code)
    raw_items = schedule_information.get("scheduleItems")
    if not isinstance(raw_items, list):
        raise ScheduleDataError("getSchedule answer has no scheduleItems")
    items: list[ScheduleItem] = []
    for raw in raw_items:
        try:
            show_as = str(raw.get("status") or "").lower()
            start = parse_graph_datetime(raw["start"])
            end = parse_graph_datetime(raw["end"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ScheduleDataError(f"unreadable schedule item: {type(exc).__name__}") from None
        if show_as in _RANK and end > start:
            items.append(ScheduleItem(show_as, start, end, is_private=bool(raw.get("isPrivate"))))
    return items


def parse_graph_datetime(value: Mapping[str, Any]) -> datetime:
    """A Graph dateTimeTimeZone as an aware UTC datetime.

    The zone may be UTC, an IANA name or a common Windows name. A local time that
    occurs twice (the autumn hour) is read as its first occurrence, one that does
    not exist (the spring hour) with the offset from before the change, as
    zoneinfo does.
    """
    moment = datetime.fromisoformat(str(value["dateTime"]).strip())
    if moment.tzinfo is not None:
        return moment.astimezone(UTC)
    return moment.replace(tzinfo=zone_for(str(value.get("timeZone") or "UTC"))).astimezone(UTC)


def zone_for(name: str) -> tzinfo:
    """The tzinfo for a Graph time zone name (UTC, IANA, or a Windows name in WINDOWS_ZONES)."""
    cleaned = name.strip()
    iana = WINDOWS_ZONES.get(cleaned.lower(), cleaned)
    if iana == "UTC":
        return UTC
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


# ---------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Resolution:
    """What the calendar says now: the ClearVox status to show and the event it comes from.

    `status` None means no mapped event covers now (the user should be available
    if the connector owns their status); missing Graph data is not a Resolution
    at all but None in `decide`.
    """

    status: str | None = None
    event: ScheduleItem | None = None

    @property
    def show_as(self) -> str | None:
        return self.event.show_as if self.event else None

    @property
    def key(self) -> str | None:
        return self.event.key if self.event else None

    @property
    def until(self) -> datetime | None:
        """End of the winning event (another event may change the outcome sooner)."""
        return self.event.end if self.event else None


IDLE = Resolution()


def resolve(items: Iterable[ScheduleItem], now: datetime, status_map: Mapping[str, str | None]) -> Resolution:
    """The status now: the highest show-as among the events covering `now` whose show-as maps to a status.

    A show-as mapped to none counts as nothing, so it cannot hide a lower one that
    does map. Ties go to the event that started first (then the longer one), so the
    winner, and with it the ledger's event key, stays put while events overlap.
    """
    moment = as_utc(now)
    covering = [i for i in items if i.covers(moment) and status_map.get(i.show_as) is not None]
    if not covering:
        return IDLE
    best = min(covering, key=lambda i: (_RANK[i.show_as], i.start, -i.end.timestamp(), i.key))
    return Resolution(status_map[best.show_as], best)


# ---------------------------------------------------------------- presence ledger

LEDGER_ROW_VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    """What the connector did about one user's status, and for which event.

    `status` is what the connector set, or None when it left a manual status alone
    for this event. `manual` marks that the user's own status is being left alone:
    either from before the event (status None) or changed during the event with
    respect_manual (kept until the next event starts). No row at all means the
    connector does not own the user's status.
    """

    key: str
    show_as: str
    until: datetime
    set_at: datetime
    status: str | None
    manual: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "until", as_utc(self.until))
        object.__setattr__(self, "set_at", as_utc(self.set_at))

    def to_row(self) -> dict[str, str | int | bool | datetime]:
        """Table Storage properties. Every field is written (None as ""), because upsert merges."""
        return {
            "v": LEDGER_ROW_VERSION,
            "status": self.status or "",
            "event_key": self.key,
            "show_as": self.show_as,
            "until": self.until,
            "set_at": self.set_at,
            "manual": self.manual,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LedgerEntry:
        """The entry stored by `to_row`; extra properties (PartitionKey, etag...) are ignored."""
        try:
            return cls(
                key=str(row["event_key"]),
                show_as=str(row["show_as"]),
                until=row_datetime(row["until"]),
                set_at=row_datetime(row["set_at"]),
                status=str(row.get("status") or "") or None,
                manual=bool(row.get("manual", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable presence ledger row: {exc}") from None


def row_datetime(value: Any) -> datetime:
    """Table Storage hands back datetimes (UTC); tolerate ISO text and a missing zone, which is UTC there."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# ---------------------------------------------------------------- decision


class Action(StrEnum):
    NOTHING = "nothing"  # ClearVox is in step; apply the ledger change only
    CHECK = "check"  # read the user's current ClearVox status and call decide again with it
    WRITE = "write"  # set `status` in ClearVox; apply the ledger change only when that succeeded
    LEAVE = "leave"  # deliberately leave the user's status alone; `reason` says why


class LedgerOp(StrEnum):
    KEEP = "keep"
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class Decision:
    """What to do for one user: the ClearVox action, and what the presence ledger should say afterwards."""

    action: Action
    reason: str
    status: str | None = None  # the status to write (WRITE only)
    ledger_op: LedgerOp = LedgerOp.KEEP
    ledger: LedgerEntry | None = None  # the entry to store (PUT only)


REASON_NO_DATA = "no calendar data; keeping the last state"
REASON_IDLE = "no event now"
REASON_IN_STEP = "status already set for this event"
REASON_CHECK = "transition; the current ClearVox status is needed"
REASON_MANUAL_BEFORE = "status set by the user while no event of theirs ran; left alone"
REASON_MANUAL_AFTER = "status changed by the user after the event ended; left alone"
REASON_MANUAL_RESPECTED = "status changed by the user during the event; left alone until the next event"
REASON_YIELD_OVER = "event ended; the user's own status was left alone"
REASON_EVENT = "event now"
REASON_ALREADY = "ClearVox already shows the status"
REASON_ENDED = "event ended; back to available"


def needs_current(resolution: Resolution | None, ledger: LedgerEntry | None) -> bool:
    """True when deciding needs the user's current ClearVox status: only at a transition."""
    if resolution is None:
        return False
    if resolution.event is None or resolution.status is None:
        return ledger is not None and ledger.status is not None and not ledger.manual
    if ledger is not None and ledger.key == resolution.event.key:
        return not (ledger.manual or ledger.status == resolution.status)
    return True


def decide(
    resolution: Resolution | None,
    ledger: LedgerEntry | None,
    current: CvStatus | None,
    now: datetime,
    respect_manual: bool = False,
) -> Decision:
    """What to do for one user now. `resolution` None means Graph gave no data for them.

    Call it with `current` None first; it answers Action.CHECK when, and only when,
    the current ClearVox status is needed, then call it again with that status.
    """
    moment = as_utc(now)
    if resolution is None:
        return Decision(Action.LEAVE, REASON_NO_DATA)
    if needs_current(resolution, ledger) and current is None:
        return Decision(Action.CHECK, REASON_CHECK)
    if resolution.event is None or resolution.status is None:
        return _decide_idle(ledger, current, respect_manual)
    return _decide_event(resolution.status, resolution.event, ledger, current, moment)


def _decide_event(
    target: str, event: ScheduleItem, ledger: LedgerEntry | None, current: CvStatus | None, now: datetime
) -> Decision:
    if ledger is not None and ledger.key == event.key:
        if ledger.manual:
            reason = REASON_MANUAL_BEFORE if ledger.status is None else REASON_MANUAL_RESPECTED
            return Decision(Action.LEAVE, reason)
        if ledger.status == target:
            return Decision(Action.NOTHING, REASON_IN_STEP)
    if current is None:  # unreachable after needs_current; keeps the types honest
        return Decision(Action.CHECK, REASON_CHECK)
    entry = LedgerEntry(key=event.key, show_as=event.show_as, until=event.end, set_at=now, status=target)
    if _manual_outside_owned_event(current, ledger):
        return Decision(Action.LEAVE, REASON_MANUAL_BEFORE, ledger_op=LedgerOp.PUT,
                        ledger=replace(entry, status=None, manual=True))
    if current.status == target:
        return Decision(Action.NOTHING, REASON_ALREADY, ledger_op=LedgerOp.PUT, ledger=entry)
    return Decision(Action.WRITE, REASON_EVENT, status=target, ledger_op=LedgerOp.PUT, ledger=entry)


def _manual_outside_owned_event(current: CvStatus, ledger: LedgerEntry | None) -> bool:
    """A non-available status the user set while the connector owned no running event of theirs."""
    if current.changed_by != "user" or current.status == AVAILABLE:
        return False
    if ledger is None or ledger.status is None:
        return True
    return as_utc(current.changed_at) > ledger.until


def _decide_idle(ledger: LedgerEntry | None, current: CvStatus | None, respect_manual: bool) -> Decision:
    if ledger is None:
        return Decision(Action.NOTHING, REASON_IDLE)
    if ledger.status is None:
        return Decision(Action.NOTHING, REASON_YIELD_OVER, ledger_op=LedgerOp.DELETE)
    if ledger.manual:
        return Decision(Action.LEAVE, REASON_MANUAL_RESPECTED)
    if current is None:  # unreachable after needs_current; keeps the types honest
        return Decision(Action.CHECK, REASON_CHECK)
    if current.status == AVAILABLE:
        return Decision(Action.NOTHING, REASON_ALREADY, ledger_op=LedgerOp.DELETE)
    if current.changed_by == "user":
        if as_utc(current.changed_at) > ledger.until:
            return Decision(Action.LEAVE, REASON_MANUAL_AFTER, ledger_op=LedgerOp.DELETE)
        if respect_manual:
            return Decision(Action.LEAVE, REASON_MANUAL_RESPECTED, ledger_op=LedgerOp.PUT,
                            ledger=replace(ledger, manual=True))
    return Decision(Action.WRITE, REASON_ENDED, status=AVAILABLE, ledger_op=LedgerOp.DELETE)


# ---------------------------------------------------------------- helpers


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is a programming error here, not something to guess about."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: give a time zone")
    return moment.astimezone(UTC)
