"""The two status mappings an administrator can override: NEXXT365_STATUS_MAP (calendar show-as) and
NEXXT365_PRESENCE_MAP (Teams availability or activity), each to a ClearVox status code or `none`.

Read where settings are read (a typo fails doctor and every run alike) and by the calendar sync.
Syntax: `key=status` pairs separated by commas or semicolons, keys in any case; `none` makes a
key count as nothing. Anything unreadable raises ConfigError naming the setting, so a typo never
silently changes people's status.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NoReturn

from shared.clearvox import STATUSES
from shared.errors import ConfigError

STATUS_MAP_SETTING = "NEXXT365_STATUS_MAP"
STATUS_MAP_EXAMPLE = "tentative=available,oof=away"
PRESENCE_MAP_SETTING = "NEXXT365_PRESENCE_MAP"
PRESENCE_MAP_EXAMPLE = "InACall=busy,Presenting=dnd,Away=none"

# Graph freeBusyStatus values (lower-cased), highest first. "unknown" and anything
# else Graph may add count as nothing.
SHOW_AS_PRIORITY: tuple[str, ...] = ("oof", "busy", "workingelsewhere", "tentative", "free")
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

# Documented values of Graph's presence resource (v1.0).
AVAILABILITY_VALUES = ("Available", "AvailableIdle", "Away", "BeRightBack", "Busy", "BusyIdle", "DoNotDisturb",
                       "Offline", "PresenceUnknown")
ACTIVITY_VALUES = ("Available", "Away", "BeRightBack", "Busy", "DoNotDisturb", "InACall", "InAConferenceCall",
                   "Inactive", "InAMeeting", "Offline", "OffWork", "OutOfOffice", "PresenceUnknown", "Presenting",
                   "UrgentInterruptionsOnly")
# Availability keys: looked up by availability; activity keys by activity. A key that is both
# (Busy, DoNotDisturb, Away...) is looked up for both, the activity first.
DEFAULT_PRESENCE_MAP: Mapping[str, str | None] = {
    "donotdisturb": "dnd",
    "busy": "busy",
    "busyidle": "busy",
    "outofoffice": "away",
}


def parse_status_map(text: str | None) -> dict[str, str | None]:
    """The show-as -> ClearVox status map: the defaults with the overrides of NEXXT365_STATUS_MAP."""
    names = ", ".join(SHOW_AS_SPELLING[s] for s in SHOW_AS_PRIORITY)
    return _parse(text, DEFAULT_STATUS_MAP, set(SHOW_AS_PRIORITY), STATUS_MAP_SETTING, STATUS_MAP_EXAMPLE,
                  what="show-as", known=f"use {names}")


def parse_presence_map(text: str | None) -> dict[str, str | None]:
    """The Teams value -> ClearVox status map: the defaults with the overrides of NEXXT365_PRESENCE_MAP."""
    keys = {v.lower() for v in (*AVAILABILITY_VALUES, *ACTIVITY_VALUES)}
    return _parse(text, DEFAULT_PRESENCE_MAP, keys, PRESENCE_MAP_SETTING, PRESENCE_MAP_EXAMPLE, what="Teams value",
                  known=f"availability: {', '.join(AVAILABILITY_VALUES)}; activity: {', '.join(ACTIVITY_VALUES)}")


def _parse(text: str | None, defaults: Mapping[str, str | None], keys: set[str], setting: str, example: str, *,
           what: str, known: str) -> dict[str, str | None]:
    result: dict[str, str | None] = dict(defaults)
    if text is None or not text.strip():
        return result
    seen: set[str] = set()
    for part in (p.strip() for p in re.split(r"[,;]", text)):
        if not part:
            continue
        name, sep, value = part.partition("=")
        key, status = name.strip().lower(), value.strip().lower()
        if not sep or not key or not status:
            _bad(setting, example, f"{part!r} is not of the form {'show-as' if what == 'show-as' else 'value'}=status")
        if key not in keys:
            _bad(setting, example, f"unknown {what} {name.strip()!r} ({known})")
        if status != "none" and status not in STATUSES:
            _bad(setting, example, f"unknown status {value.strip()!r} for {name.strip()} (use {', '.join(STATUSES)} or none)")
        if key in seen:
            _bad(setting, example, f"{name.strip()} is given twice")
        seen.add(key)
        result[key] = None if status == "none" else status
    return result


def _bad(setting: str, example: str, problem: str) -> NoReturn:
    raise ConfigError(f"{setting}: {problem}; example: {setting}={example}")
