"""Teams presence rules, as a specification: availability and activity -> a ClearVox status, and the precedence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.clearvox import CvStatus
from shared.errors import ConfigError
from shared.status_maps import DEFAULT_PRESENCE_MAP, parse_presence_map, parse_status_map
from shared.sync.calendar.decision import Action, LedgerOp, decide
from shared.sync.calendar.ledger import LedgerEntry
from shared.sync.calendar.rules import IDLE, Resolution, ScheduleItem, resolve
from shared.sync.calendar.teams import (
    Presence,
    combine,
    presence_status,
    stronger,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MAP = parse_presence_map(None)
CAL = parse_status_map(None)


def meeting(show_as: str = "busy") -> Resolution:
    return resolve([ScheduleItem(show_as, NOW, NOW + timedelta(hours=1))], NOW, CAL)


@pytest.mark.parametrize(("availability", "activity", "status"), [
    ("DoNotDisturb", "DoNotDisturb", "dnd"),
    ("DoNotDisturb", "Presenting", "dnd"),
    ("DoNotDisturb", "UrgentInterruptionsOnly", "dnd"),
    ("Busy", "InACall", "busy"),
    ("Busy", "InAConferenceCall", "busy"),
    ("Busy", "InAMeeting", "busy"),
    ("BusyIdle", "BusyIdle", "busy"),
    ("Offline", "OutOfOffice", "away"),
    ("Away", "OutOfOffice", "away"),
    ("Available", "Available", None),
    ("AvailableIdle", "Inactive", None),
    ("Away", "Away", None),
    ("BeRightBack", "BeRightBack", None),
    ("Offline", "OffWork", None),
    ("PresenceUnknown", "PresenceUnknown", None),
])
def test_the_default_mapping(availability: str, activity: str, status: str | None) -> None:
    assert presence_status(Presence(availability, activity), MAP) == status


def test_where_the_map_names_the_activity_the_activity_decides() -> None:
    in_a_call = Presence("Busy", "InACall")
    assert presence_status(in_a_call, parse_presence_map("InACall=none")) is None
    assert presence_status(Presence("Busy", "InAMeeting"), parse_presence_map("InACall=none")) == "busy"
    assert presence_status(Presence("DoNotDisturb", "Presenting"), parse_presence_map("presenting=BUSY")) == "busy"
    assert presence_status(Presence("Away", "Away"), parse_presence_map("Away=away")) == "away"
    assert presence_status(None, MAP) is None


def test_overrides_merge_with_the_defaults() -> None:
    got = parse_presence_map(" InACall = busy ; Presenting=dnd, Away=none ")
    assert got == {**DEFAULT_PRESENCE_MAP, "inacall": "busy", "presenting": "dnd", "away": None}


@pytest.mark.parametrize(("text", "problem"), [
    ("InCall=busy", "unknown Teams value 'InCall'"),
    ("Busy=bezig", "unknown status 'bezig'"),
    ("Busy", "not of the form value=status"),
    ("=busy", "not of the form value=status"),
    ("Busy=dnd,busy=away", "given twice"),
])
def test_a_bad_map_names_the_setting_and_shows_an_example(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_presence_map(text)
    assert str(err.value).startswith("NEXXT365_PRESENCE_MAP: ") and problem in str(err.value)
    assert "example: NEXXT365_PRESENCE_MAP=InACall=busy,Presenting=dnd,Away=none" in str(err.value)
    parse_presence_map("InACall=busy,Presenting=dnd,Away=none")


def test_precedence_dnd_away_busy_elsewhere() -> None:
    order = ["dnd", "away", "busy", "elsewhere", "available"]
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            assert stronger(a, b) and not stronger(b, a)


def test_the_stronger_of_calendar_and_teams_wins() -> None:
    presenting = Presence("DoNotDisturb", "Presenting")
    got = combine(meeting("busy"), presenting, MAP)
    assert got is not None and (got.status, got.source, got.teams, got.key) == ("dnd", "teams", "DoNotDisturb/Presenting",
                                                                                 "teams:dnd")
    leave = combine(meeting("oof"), Presence("Busy", "InACall"), MAP)
    assert leave is not None and (leave.status, leave.source) == ("away", "calendar")
    elsewhere = combine(meeting("workingElsewhere"), Presence("Busy", "InACall"), MAP)
    assert elsewhere is not None and (elsewhere.status, elsewhere.source) == ("busy", "teams")


def test_agreeing_keeps_the_event_as_the_key_so_nothing_is_written() -> None:
    cal = meeting("busy")
    both = combine(cal, Presence("Busy", "InAMeeting"), MAP)
    assert both is not None and (both.status, both.source, both.key) == ("busy", "both", cal.key)
    owned = LedgerEntry(key=cal.key or "", show_as="busy", until=NOW + timedelta(hours=1), set_at=NOW, status="busy")
    decision = decide(both, owned, None, NOW)
    assert (decision.action, decision.ledger_op) == (Action.NOTHING, LedgerOp.PUT)  # only why changes
    assert decision.ledger is not None and decision.ledger.source == "both"


def test_teams_alone_and_nothing_at_all() -> None:
    alone = combine(IDLE, Presence("Busy", "InACall"), MAP)
    assert alone is not None and (alone.status, alone.source, alone.until, alone.show_as) == ("busy", "teams", None, None)
    assert combine(IDLE, Presence("Available", "Available"), MAP) == IDLE
    assert combine(None, Presence("DoNotDisturb", "Presenting"), MAP) is None  # no calendar data: keep the last state


def test_a_teams_status_is_written_recorded_and_ended_like_an_event() -> None:
    alone = combine(IDLE, Presence("Busy", "InACall"), MAP)
    start = decide(alone, None, CvStatus("available", NOW, "api"), NOW)
    assert (start.action, start.status, start.reason) == (Action.WRITE, "busy", "Teams presence now")
    assert start.ledger is not None and (start.ledger.source, start.ledger.teams) == ("teams", "Busy/InACall")
    row = start.ledger.to_row()
    assert LedgerEntry.from_row(row) == start.ledger
    end = decide(IDLE, start.ledger, CvStatus("busy", NOW, "api"), NOW + timedelta(minutes=5))
    assert (end.action, end.status, end.reason) == (Action.WRITE, "available", "Teams presence ended; back to available")
    manual = decide(IDLE, start.ledger, CvStatus("dnd", NOW + timedelta(minutes=2), "user"), NOW + timedelta(minutes=5),
                    respect_manual=True)
    assert manual.action is Action.LEAVE  # the same manual-change rules as for an event


def test_a_ledger_row_from_before_teams_presence_reads_as_calendar() -> None:
    row = {"v": 1, "status": "busy", "event_key": "k", "show_as": "busy", "until": NOW, "set_at": NOW, "manual": False}
    entry = LedgerEntry.from_row(row)
    assert (entry.source, entry.teams) == ("calendar", "")
