"""Calendar status, the Teams presence rules: from a user's Teams availability and activity to a ClearVox status.

Pure. Presence is a second input to the one status decision, not a second writer:
`combine` merges what the calendar says now with what Teams says now, and the
decision (shared.sync.calendar.decision) acts on the result exactly as it acts on
the calendar alone (same manual-change rules, back to Beschikbaar when nothing
applies any more, written only on change).

Mapping (NEXXT365_PRESENCE_MAP overrides it; keys are Teams availability or
activity values, case-insensitive; values a ClearVox status code or `none`):
availability DoNotDisturb -> dnd, Busy and BusyIdle -> busy, activity
OutOfOffice -> away, everything else -> nothing. Where the map names the
activity, the activity decides (`InACall=none` leaves a call alone although
Teams reports availability Busy); otherwise the availability does.

When the calendar and Teams both ask for a status, the stronger wins:
dnd > away > busy > elsewhere (> available, which a map can name). A tie keeps
the calendar's event, so joining the Teams call of a running meeting changes
nothing; the ledger records why: calendar, teams or both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from shared.sync.calendar.rules import SOURCE_BOTH, SOURCE_TEAMS, Resolution

# Strongest first; a status not listed (none) is weaker than all.
STATUS_STRENGTH: tuple[str, ...] = ("dnd", "away", "busy", "elsewhere", "available")
_STRENGTH = {status: rank for rank, status in enumerate(STATUS_STRENGTH)}


@dataclass(frozen=True)
class Presence:
    """One user's Teams presence as Graph reports it (documented casing kept, for reports)."""

    availability: str
    activity: str

    @property
    def label(self) -> str:
        return f"{self.availability}/{self.activity}"


def presence_from_graph(raw: Mapping[str, Any]) -> Presence:
    """A presence object of getPresencesByUserId; missing values read as PresenceUnknown (nothing)."""
    return Presence(str(raw.get("availability") or "PresenceUnknown"), str(raw.get("activity") or "PresenceUnknown"))


def presence_status(presence: Presence | None, presence_map: Mapping[str, str | None]) -> str | None:
    """The ClearVox status Teams asks for now, or None: the activity decides where the map names it."""
    if presence is None:
        return None
    activity = presence.activity.lower()
    if activity in presence_map:
        return presence_map[activity]
    return presence_map.get(presence.availability.lower())


def stronger(a: str, b: str) -> bool:
    """True when status `a` beats status `b` (dnd > away > busy > elsewhere > available)."""
    return _STRENGTH.get(a, len(_STRENGTH)) < _STRENGTH.get(b, len(_STRENGTH))


def combine(calendar: Resolution | None, presence: Presence | None,
            presence_map: Mapping[str, str | None]) -> Resolution | None:
    """The one resolution from the calendar's and Teams' (None: no calendar data, keep the last state).

    The stronger status wins; on a tie the calendar's event stays the reason, with Teams agreeing.
    """
    if calendar is None:
        return None
    wanted = presence_status(presence, presence_map)
    if wanted is None or presence is None:
        return calendar
    if calendar.status is None or stronger(wanted, calendar.status):
        return Resolution(wanted, None, teams=presence.label, source=SOURCE_TEAMS)
    if wanted == calendar.status:
        return replace(calendar, teams=presence.label, source=SOURCE_BOTH)
    return calendar


# With Teams presence a timer run decides every TICK within its minute, the last tick starting
# LAST_TICK after the minute began, so the run ends inside its 45 s budget and never overlaps the next.
TICK = timedelta(seconds=10)
LAST_TICK = timedelta(seconds=40)


def tick_moments(now: datetime) -> list[datetime]:
    """`now` and the later ticks of its minute (:10, :20, :30, :40)."""
    minute = now.replace(second=0, microsecond=0)
    later = [minute + TICK * k for k in range(1, LAST_TICK // TICK + 1)]
    return [now, *(t for t in later if t > now)]
