"""Calendar status, the pure rules: from the Outlook "show as" of the event happening now to a ClearVox status.

No I/O here. The package's modules, by concern:

    rules.py     NEXXT365_STATUS_MAP, schedule items from Graph, `resolve` (the status the calendar asks for now)
    decision.py  `decide`: what to do for one user given the resolution, the ledger and (at a transition) ClearVox
    ledger.py    the status ledger row and the once-a-day notices
    run.py       the run: getSchedule, ClearVox reads and writes through the shared applier, the state
    render.py    the run report, the dry-run text and the JSON plan

Times are aware datetimes in UTC. Periods are half open, [start, end), so the
moment one event ends and the next begins belongs to the next one: no flash of
available between back-to-back events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.digest import digest_text
from shared.errors import GraphError
from shared.status_maps import SHOW_AS_PRIORITY

AVAILABLE = "available"
SOURCE_CALENDAR, SOURCE_TEAMS, SOURCE_BOTH = "calendar", "teams", "both"

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

_RANK = {name: rank for rank, name in enumerate(SHOW_AS_PRIORITY)}


class ScheduleDataError(GraphError):
    """Graph gave no usable calendar data for a user: keep their last state, do not guess."""


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
    """What applies now: the ClearVox status to show and what it comes from.

    `status` None means nothing applies (the user should be available if the
    connector owns their status); missing Graph data is not a Resolution at all
    but None in `decide`. `source` says why: the calendar's `event`, Teams
    presence (`teams`, e.g. "Busy/InACall"), or both agreeing.
    """

    status: str | None = None
    event: ScheduleItem | None = None
    teams: str | None = None
    source: str = SOURCE_CALENDAR

    @property
    def show_as(self) -> str | None:
        return self.event.show_as if self.event and self.source != SOURCE_TEAMS else None

    @property
    def key(self) -> str | None:
        """What the status is for: the event's key, or for Teams alone the status it asks for."""
        if self.source == SOURCE_TEAMS:
            return f"{SOURCE_TEAMS}:{self.status}" if self.status else None
        return self.event.key if self.event else None

    @property
    def until(self) -> datetime | None:
        """End of the winning event; None when Teams decides (presence has no end we know of)."""
        return self.event.end if self.event and self.source != SOURCE_TEAMS else None


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


# ---------------------------------------------------------------- helpers


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is a programming error here, not something to guess about."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: give a time zone")
    return moment.astimezone(UTC)
