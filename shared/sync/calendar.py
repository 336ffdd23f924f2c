"""Calendar status: from the Outlook "show as" of the event happening now to a ClearVox status.

The pure logic comes first; `run_calendar` at the end is the sync's entry point and
does the I/O. One run per user:

    items = items_from_schedule(schedule_information)      # or items_from_events(...)
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

import hashlib
import logging
import math
import re
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.clearvox import STATUSES, ClearVox, CvStatus
from shared.errors import (
    AccountNotFound,
    ClearVoxError,
    ClearVoxForbidden,
    ClearVoxNotFound,
    ClearVoxUnauthorized,
    ClearVoxUnavailable,
    ConfigError,
    ConsentError,
    GraphError,
    LicenseRequired,
    MailboxUnavailable,
)
from shared.graph import SCHEDULE_LIMIT
from shared.sync.users import Link, links_from_rows

if TYPE_CHECKING:
    from shared.graph import Graph
    from shared.runner import SyncContext

log = logging.getLogger("nexxt365")

STATUS_MAP_SETTING = "NEXXT365_STATUS_MAP"
STATUS_MAP_EXAMPLE = "tentative=available,oof=away"
AVAILABLE = "available"

# Graph freeBusyStatus values (lower-cased), highest first. "unknown" and anything
# else Graph may add count as nothing.
SHOW_AS_PRIORITY: tuple[str, ...] = ("oof", "busy", "workingelsewhere", "tentative", "free")
_RANK = {name: rank for rank, name in enumerate(SHOW_AS_PRIORITY)}
# How each show-as is spelled in Graph, for messages.
_SHOW_AS_SPELLING = {"oof": "oof", "busy": "busy", "workingelsewhere": "workingElsewhere",
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
            names = ", ".join(_SHOW_AS_SPELLING[s] for s in SHOW_AS_PRIORITY)
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
    """Opaque, stable id of a calendar period: the same from getSchedule and calendarView, never the subject."""
    text = f"{_utc(start).isoformat()}|{_utc(end).isoformat()}|{show_as.lower()}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


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
        object.__setattr__(self, "start", _utc(self.start))
        object.__setattr__(self, "end", _utc(self.end))
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


def items_from_events(events: Iterable[Mapping[str, Any]], mailbox_zone: str | tzinfo) -> list[ScheduleItem]:
    """The items of calendarView events (`showAs`, `isCancelled`, `isAllDay`, `start`, `end`, `sensitivity`).

    calendarView reports an all-day event as midnight-to-midnight dates whatever
    time zone was asked for, so its dates are placed in the mailbox's zone here
    (a day is 23 or 25 hours long when daylight saving changes). Cancelled and
    zero-length events count as nothing. Unreadable data raises ScheduleDataError.
    """
    zone = mailbox_zone if isinstance(mailbox_zone, tzinfo) else zone_for(mailbox_zone)
    items: list[ScheduleItem] = []
    for event in events:
        if event.get("isCancelled"):
            continue
        try:
            show_as = str(event.get("showAs") or "").lower()
            if event.get("isAllDay"):
                start = _midnight(_graph_date(event["start"]), zone)
                end = _midnight(_graph_date(event["end"]), zone)
            else:
                start = parse_graph_datetime(event["start"])
                end = parse_graph_datetime(event["end"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ScheduleDataError(f"unreadable calendar event: {type(exc).__name__}") from None
        if show_as in _RANK and end > start:
            private = str(event.get("sensitivity") or "").lower() == "private"
            items.append(ScheduleItem(show_as, start, end, is_private=private))
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


def _graph_date(value: Mapping[str, Any]) -> date:
    """The calendar date of an all-day boundary, ignoring its (meaningless) time zone."""
    return datetime.fromisoformat(str(value["dateTime"]).strip()).date()


def _midnight(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


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
        """End of the winning event; `next_change_after` tells when the outcome may change sooner."""
        return self.event.end if self.event else None


IDLE = Resolution()


def resolve(items: Iterable[ScheduleItem], now: datetime, status_map: Mapping[str, str | None]) -> Resolution:
    """The status now: the highest show-as among the events covering `now` whose show-as maps to a status.

    A show-as mapped to none counts as nothing, so it cannot hide a lower one that
    does map. Ties go to the event that started first (then the longer one), so the
    winner, and with it the ledger's event key, stays put while events overlap.
    """
    moment = _utc(now)
    covering = [i for i in items if i.covers(moment) and status_map.get(i.show_as) is not None]
    if not covering:
        return IDLE
    best = min(covering, key=lambda i: (_RANK[i.show_as], i.start, -i.end.timestamp(), i.key))
    return Resolution(status_map[best.show_as], best)


def next_change_after(
    items: Sequence[ScheduleItem], now: datetime, status_map: Mapping[str, str | None]
) -> datetime | None:
    """The first moment after `now` at which `resolve` gives another status or event; None if none is known.

    Lets a caller that holds a look-ahead of the schedule skip users until then.
    """
    moment = _utc(now)
    current = resolve(items, moment, status_map)
    boundaries = sorted(
        {t for i in items if status_map.get(i.show_as) is not None for t in (i.start, i.end) if t > moment}
    )
    for boundary in boundaries:
        later = resolve(items, boundary, status_map)
        if (later.status, later.key) != (current.status, current.key):
            return boundary
    return None


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
        object.__setattr__(self, "until", _utc(self.until))
        object.__setattr__(self, "set_at", _utc(self.set_at))

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
                until=_row_datetime(row["until"]),
                set_at=_row_datetime(row["set_at"]),
                status=str(row.get("status") or "") or None,
                manual=bool(row.get("manual", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable presence ledger row: {exc}") from None


def _row_datetime(value: Any) -> datetime:
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
    moment = _utc(now)
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
    return _utc(current.changed_at) > ledger.until


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
        if _utc(current.changed_at) > ledger.until:
            return Decision(Action.LEAVE, REASON_MANUAL_AFTER, ledger_op=LedgerOp.DELETE)
        if respect_manual:
            return Decision(Action.LEAVE, REASON_MANUAL_RESPECTED, ledger_op=LedgerOp.PUT,
                            ledger=replace(ledger, manual=True))
    return Decision(Action.WRITE, REASON_ENDED, status=AVAILABLE, ledger_op=LedgerOp.DELETE)


# ---------------------------------------------------------------- helpers


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is a programming error here, not something to guess about."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: give a time zone")
    return moment.astimezone(UTC)


# ================================================================ the run: Graph -> decide -> ClearVox -> ledger

PRESENCE_TABLE = "presence"
NOTICES_TABLE = "notices"
NOTICE_SCOPE = "calendar"  # the notices table is shared; this sync keeps its rows in their own partition
LOOKAHEAD_SETTING = "NEXXT365_CALENDAR_LOOKAHEAD"
# getSchedule window from now: only the events covering now matter; one availabilityView slot.
FETCH_WINDOW_MINUTES = 15
NOTICE_INTERVAL = timedelta(days=1)
# A chunk whose anchor mailbox cannot host the query is retried with the next id as anchor, this often at most.
MAX_ANCHOR_TRIES = 3
# ClearVox unavailable this often with no success in the run: the remaining users wait for the next run
# instead of each spending the client's full retry budget on a PBX that is down.
CLEARVOX_BREAKER = 3

ScheduleAnswer: TypeAlias = "Mapping[str, Any] | GraphError"


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


def anchor_chunks(ids: Sequence[str], avoid: Collection[str] = (), size: int = SCHEDULE_LIMIT) -> list[list[str]]:
    """The ids in chunks of `size` whose first id - the mailbox the request is sent to - is not in `avoid`.

    getSchedule is posted to one user's calendar; when that mailbox is missing or out
    of scope the request fails for the whole chunk. Putting mailboxes known to be
    unreadable anywhere but first keeps a run at one request per chunk.
    """
    unique = list(dict.fromkeys(i for i in ids if i))
    ordered = [i for i in unique if i not in avoid] + [i for i in unique if i in avoid]
    count = math.ceil(len(ordered) / size)
    heads, tail = ordered[:count], ordered[count:]
    return [[head, *tail[n * (size - 1):(n + 1) * (size - 1)]] for n, head in enumerate(heads)]


def fetch_schedules(graph: Graph, ids: Sequence[str], now: datetime, *,
                    avoid_as_anchor: Collection[str] = ()) -> dict[str, ScheduleAnswer]:
    """Free/busy of every id for the window from `now`: one getSchedule request per 20 ids, in parallel.

    Each id gets its scheduleInformation or a GraphError (MailboxUnavailable for a
    missing or out-of-scope mailbox). A chunk refused because of its anchor mailbox
    (an unknown user, or an out-of-scope mailbox under RBAC for Applications, which
    Graph reports as missing consent) is asked again with the next id as anchor. A
    ConsentError is raised only when no chunk at all could be read: then the app
    really lacks Calendars.Read.
    """
    start = _utc(now)
    end = start + timedelta(minutes=FETCH_WINDOW_MINUTES)
    chunks = anchor_chunks(ids, avoid_as_anchor)
    answered = threading.Event()
    refused = threading.Event()
    consent: list[ConsentError] = []

    def one(chunk: list[str]) -> dict[str, ScheduleAnswer]:
        order = list(chunk)
        last: GraphError | ConsentError | None = None
        for _ in range(MAX_ANCHOR_TRIES):
            if refused.is_set() and not answered.is_set():
                break
            try:
                result: dict[str, ScheduleAnswer] = dict(graph.get_schedule(order, start, end, FETCH_WINDOW_MINUTES))
            except ConsentError as exc:
                last = exc
            except GraphError as exc:  # the anchor's own MailboxUnavailable is handled inside get_schedule
                if exc.status != 404:
                    return dict.fromkeys(chunk, exc)
                last = exc
            else:
                answered.set()
                return result
            order = order[1:] + order[:1]
        if isinstance(last, ConsentError):
            consent.append(last)
            refused.set()
            return dict.fromkeys(chunk, GraphError("Microsoft Graph refused getSchedule for every mailbox tried in this group"))
        error = last if isinstance(last, GraphError) else GraphError("getSchedule was not asked: calendar access was refused")
        return dict.fromkeys(chunk, error)

    answers: dict[str, ScheduleAnswer] = {}
    if chunks:
        with ThreadPoolExecutor(max_workers=min(graph.concurrency, len(chunks))) as pool:
            for part in pool.map(one, chunks):
                answers.update(part)
    if consent and not answered.is_set():
        raise consent[0]
    return answers


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
        self.now = _utc(ctx.now)
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
        ledgers, unreadable = self._ledgers(state.rows(PRESENCE_TABLE))
        notices = state.rows(NOTICES_TABLE, scope=NOTICE_SCOPE)
        if self.ctx.options.calendar_lookahead:
            self.ctx.report.add_warning(LOOKAHEAD_SETTING, "not used: a look-ahead cache would see meetings booked, moved or "
                                        "cancelled at short notice only when it expires; free/busy is read every run")
        with_email = [u for u in users if u.email]
        avoid = {u.email for u in with_email if (notices.get(u.object_id) or {}).get("kind") in _MAILBOX_KINDS}
        answers = fetch_schedules(self.ctx.graph, [u.email for u in with_email], self.now, avoid_as_anchor=avoid)
        outages = [a for a in answers.values() if isinstance(a, GraphError) and not isinstance(a, MailboxUnavailable)]
        if answers and len(outages) == len(answers):
            raise GraphError(f"No free/busy data from Microsoft Graph in this run ({_clause(outages[0])}); every ClearVox status "
                             "stays as it is and the next run tries again.")
        runs = [self._first_decision(u, answers, ledgers.get(u.object_id)) for u in users]
        self._clearvox([r for r in runs if r.decision.action is Action.CHECK])
        if not self.dry_run:
            self._commit(runs, set(ledgers), unreadable, notices, {u.object_id for u in users})
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
            answer = GraphError("getSchedule gave no answer for this mailbox")
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
        last = _row_datetime(row["reported_at"])
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
        "show_as": _SHOW_AS_SPELLING.get(event.show_as, event.show_as) if event is not None else None,
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
