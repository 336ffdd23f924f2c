"""Calendar status rules, as a specification: Outlook "show as" now -> ClearVox status.

Times are Europe/Amsterdam unless said otherwise; Graph data arrives in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.clearvox import CvStatus
from shared.errors import ConfigError
from shared.graph.schedule import anchor_chunks
from shared.status_maps import DEFAULT_STATUS_MAP, parse_status_map
from shared.sync.calendar.decision import Action, Decision, LedgerOp, decide, needs_current
from shared.sync.calendar.ledger import LedgerEntry, NoticeKind, notice_due
from shared.sync.calendar.render import CalendarUser
from shared.sync.calendar.rules import (
    IDLE,
    Resolution,
    ScheduleDataError,
    ScheduleItem,
    event_key,
    items_from_schedule,
    parse_graph_datetime,
    resolve,
    zone_for,
)
from shared.sync.calendar.run import calendar_users
from shared.sync.users.rules import Link

AMS = ZoneInfo("Europe/Amsterdam")
MAP = parse_status_map(None)
MINUTE = timedelta(minutes=1)


def ams(day: str, hhmm: str) -> datetime:
    """A wall-clock moment in Amsterdam, e.g. ams("2026-06-15", "10:00")."""
    return datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=AMS)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


DAY = "2026-06-15"  # an ordinary Monday, CEST (UTC+2)


def at(hhmm: str) -> datetime:
    return ams(DAY, hhmm)


def item(show_as: str, start: str, end: str, *, private: bool = False) -> ScheduleItem:
    return ScheduleItem(show_as, at(start), at(end), is_private=private)


def dtz(moment: datetime) -> dict[str, str]:
    """A Graph dateTimeTimeZone in UTC, as the fetch asks for it."""
    return {"dateTime": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"}


def schedule(*entries: Mapping[str, object]) -> dict[str, object]:
    """A getSchedule scheduleInformation with the documented fields."""
    return {"scheduleId": "anna@contoso.nl", "availabilityView": "0022", "scheduleItems": list(entries)}


def sitem(status: str, start: datetime, end: datetime, **extra: object) -> dict[str, object]:
    raw: dict[str, object] = {"isPrivate": False, "status": status, "start": dtz(start), "end": dtz(end)}
    raw.update(extra)
    return raw


def cv(status: str, by: str = "api", when: datetime | None = None) -> CvStatus:
    return CvStatus(status=status, changed_at=when or at("07:00"), changed_by=by)


# ---------------------------------------------------------------- a tiny runner, as step 2 will drive the logic


@dataclass
class FakeClearVox:
    """One user's ClearVox status, counting what the connector reads and writes."""

    status: str = "available"
    changed_by: str = "system"
    changed_at: datetime = field(default_factory=lambda: at("06:00"))
    reads: int = 0
    writes: list[tuple[datetime, str]] = field(default_factory=list)

    def get(self) -> CvStatus:
        self.reads += 1
        return CvStatus(self.status, self.changed_at, self.changed_by)

    def connector_sets(self, status: str, now: datetime) -> None:
        self.status, self.changed_by, self.changed_at = status, "api", now
        self.writes.append((now, status))

    def user_sets(self, status: str, now: datetime) -> None:
        self.status, self.changed_by, self.changed_at = status, "user", now


@dataclass
class Sim:
    """Runs the decide loop once a minute; the ledger goes through its Table Storage row every time."""

    items: list[ScheduleItem]
    clearvox: FakeClearVox = field(default_factory=FakeClearVox)
    respect_manual: bool = False
    status_map: dict[str, str | None] = field(default_factory=lambda: dict(MAP))
    row: dict[str, object] | None = None
    decisions: list[tuple[datetime, Decision]] = field(default_factory=list)

    @property
    def ledger(self) -> LedgerEntry | None:
        return LedgerEntry.from_row(self.row) if self.row is not None else None

    def tick(self, now: datetime, *, graph_ok: bool = True) -> Decision:
        resolution = resolve(self.items, now, self.status_map) if graph_ok else None
        decision = decide(resolution, self.ledger, None, now, self.respect_manual)
        if decision.action is Action.CHECK:
            decision = decide(resolution, self.ledger, self.clearvox.get(), now, self.respect_manual)
            assert decision.action is not Action.CHECK
        if decision.action is Action.WRITE:
            assert decision.status is not None
            self.clearvox.connector_sets(decision.status, now)
        if decision.ledger_op is LedgerOp.PUT:
            assert decision.ledger is not None
            self.row = {"PartitionKey": "t1", "RowKey": "u1", **decision.ledger.to_row()}
        elif decision.ledger_op is LedgerOp.DELETE:
            self.row = None
        self.decisions.append((now, decision))
        return decision

    def run(self, start: datetime, end: datetime, *, graph_ok: bool = True) -> list[str]:
        """The ClearVox status after each minute in [start, end), stepping in UTC (real minutes, not wall-clock)."""
        seen: list[str] = []
        now, end = start.astimezone(UTC), end.astimezone(UTC)
        while now < end:
            self.tick(now, graph_ok=graph_ok)
            seen.append(self.clearvox.status)
            now += MINUTE
        return seen


# ================================================================ NEXXT365_STATUS_MAP


class TestStatusMap:
    def test_default_mapping_follows_the_guide(self) -> None:
        assert parse_status_map(None) == {
            "oof": "away", "busy": "busy", "workingelsewhere": "elsewhere", "tentative": "busy", "free": None,
        }
        assert parse_status_map("") == parse_status_map("   ") == dict(DEFAULT_STATUS_MAP)

    def test_overrides_are_merged_with_the_defaults(self) -> None:
        assert parse_status_map("tentative=available,oof=away") == {
            "oof": "away", "busy": "busy", "workingelsewhere": "elsewhere", "tentative": "available", "free": None,
        }

    def test_names_and_values_are_case_insensitive_and_spacing_is_free(self) -> None:
        got = parse_status_map(" WorkingElsewhere = AWAY ; Busy=DND, ")
        assert got["workingelsewhere"] == "away"
        assert got["busy"] == "dnd"

    def test_none_makes_a_show_as_count_as_nothing_and_free_can_be_mapped(self) -> None:
        got = parse_status_map("tentative=none,free=available")
        assert got["tentative"] is None
        assert got["free"] == "available"

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("tentative=maybe", "unknown status 'maybe'"),
            ("meeting=busy", "unknown show-as 'meeting'"),
            ("tentative", "not of the form show-as=status"),
            ("tentative=", "not of the form show-as=status"),
            ("=busy", "not of the form show-as=status"),
            ("busy=dnd,Busy=away", "given twice"),
        ],
    )
    def test_a_bad_value_names_the_setting_and_shows_a_valid_example(self, text: str, problem: str) -> None:
        with pytest.raises(ConfigError) as err:
            parse_status_map(text)
        message = str(err.value)
        assert problem in message
        assert message.startswith("NEXXT365_STATUS_MAP: ")
        assert "example: NEXXT365_STATUS_MAP=tentative=available,oof=away" in message
        assert parse_status_map("tentative=available,oof=away")  # the example itself is valid


# ================================================================ reading Graph


class TestGetSchedule:
    def test_reads_the_documented_schedule_information(self) -> None:
        info = schedule(
            sitem("busy", at("10:00"), at("11:00"), subject="Board meeting", location="Room 1"),
            sitem("oof", at("13:00"), at("17:00")),
        )
        items = items_from_schedule(info)
        assert [(i.show_as, i.start, i.end) for i in items] == [
            ("busy", at("10:00"), at("11:00")),
            ("oof", at("13:00"), at("17:00")),
        ]
        assert all(i.start.tzinfo is UTC for i in items)

    def test_status_from_graph_is_matched_case_insensitively(self) -> None:
        items = items_from_schedule(schedule(
            sitem("Busy", at("10:00"), at("11:00")),
            sitem("WorkingElsewhere", at("11:00"), at("12:00")),
            sitem("OOF", at("12:00"), at("13:00")),
        ))
        assert [i.show_as for i in items] == ["busy", "workingelsewhere", "oof"]
        assert resolve(items, at("10:30"), MAP).status == "busy"
        assert resolve(items, at("11:30"), MAP).status == "elsewhere"
        assert resolve(items, at("12:30"), MAP).status == "away"

    def test_private_events_count_by_show_as_and_their_subject_is_never_kept(self) -> None:
        secret = "Hospital appointment"
        info = schedule(sitem("oof", at("10:00"), at("12:00"), isPrivate=True, subject=secret))
        (private,) = items_from_schedule(info)
        assert private.is_private
        assert resolve([private], at("11:00"), MAP).status == "away"
        assert secret not in repr(private)
        assert not hasattr(private, "subject")
        entry = decide(resolve([private], at("11:00"), MAP), None, cv("available"), at("11:00")).ledger
        assert entry is not None
        assert secret not in repr(entry.to_row())

    def test_event_key_depends_on_start_end_and_show_as_only(self) -> None:
        a = items_from_schedule(schedule(sitem("busy", at("10:00"), at("11:00"), subject="A")))[0]
        b = items_from_schedule(schedule(sitem("Busy", at("10:00"), at("11:00"), subject="B")))[0]
        assert a.key == b.key == event_key(at("10:00"), at("11:00"), "busy")
        assert a.key != event_key(at("10:00"), at("11:00"), "oof")
        assert a.key != event_key(at("10:00"), at("11:30"), "busy")

    def test_zero_length_and_unknown_items_are_ignored(self) -> None:
        items = items_from_schedule(schedule(
            sitem("busy", at("10:00"), at("10:00")),
            sitem("unknown", at("10:00"), at("11:00")),
        ))
        assert items == []
        assert resolve(items, at("10:00"), MAP) == IDLE

    def test_an_empty_calendar_is_data_not_missing_data(self) -> None:
        assert items_from_schedule(schedule()) == []

    @pytest.mark.parametrize(
        "info",
        [
            {"scheduleId": "anna@contoso.nl", "availabilityView": "",
             "error": {"message": "The user's mailbox could not be found.", "responseCode": "ErrorMailboxNotFound"}},
            {"scheduleId": "anna@contoso.nl"},
            schedule({"status": "busy", "start": {"dateTime": "2026-06-15T08:00:00", "timeZone": "Mars/Base"},
                      "end": dtz(at("11:00"))}),
            schedule({"status": "busy", "start": dtz(at("10:00"))}),
        ],
        ids=["free-busy-error", "no-items", "unknown-zone", "no-end"],
    )
    def test_missing_or_unreadable_data_raises_so_the_last_state_is_kept(self, info: dict[str, object]) -> None:
        with pytest.raises(ScheduleDataError):
            items_from_schedule(info)

    def test_the_error_code_is_kept_for_the_report(self) -> None:
        info = {"scheduleId": "x", "error": {"message": "m", "responseCode": "ErrorMailboxNotFound"}}
        with pytest.raises(ScheduleDataError) as err:
            items_from_schedule(info)
        assert err.value.code == "ErrorMailboxNotFound"

    def test_all_day_items_are_instants_already(self) -> None:
        # getSchedule places an all-day event at the mailbox's own midnight, here converted to UTC.
        info = schedule(sitem("oof", utc("2026-06-14T22:00:00"), utc("2026-06-15T22:00:00")))
        items = items_from_schedule(info)
        assert resolve(items, at("00:00"), MAP).status == "away"
        assert resolve(items, at("23:59"), MAP).status == "away"
        assert resolve(items, ams("2026-06-16", "00:00"), MAP) == IDLE


class TestDateTimeTimeZone:
    def test_utc_with_seven_fraction_digits(self) -> None:
        got = parse_graph_datetime({"dateTime": "2026-10-25T01:30:00.0000000", "timeZone": "UTC"})
        assert got == utc("2026-10-25T01:30:00")

    @pytest.mark.parametrize("zone", ["W. Europe Standard Time", "w. europe standard time", "Europe/Amsterdam",
                                      "Europe/Berlin"])
    def test_windows_and_iana_zone_names(self, zone: str) -> None:
        got = parse_graph_datetime({"dateTime": "2026-06-15T10:00:00.0000000", "timeZone": zone})
        assert got == at("10:00")

    def test_other_zones_and_explicit_offsets(self) -> None:
        assert parse_graph_datetime({"dateTime": "2026-06-15T04:00:00", "timeZone": "Eastern Standard Time"}) == at(
            "10:00")
        assert parse_graph_datetime({"dateTime": "2026-06-15T08:00:00Z", "timeZone": "Pacific Standard Time"}) == at(
            "10:00")
        assert parse_graph_datetime({"dateTime": "2026-06-15T08:00:00", "timeZone": "tzone://Microsoft/Utc"}) == at(
            "10:00")
        assert parse_graph_datetime({"dateTime": "2026-06-15T08:00:00"}) == at("10:00")

    def test_unknown_zone_is_an_error_not_a_guess(self) -> None:
        with pytest.raises(ValueError, match="Mars/Base"):
            zone_for("Mars/Base")


class TestResolve:
    @pytest.mark.parametrize(
        ("higher", "lower"),
        [("oof", "busy"), ("busy", "workingelsewhere"), ("workingelsewhere", "tentative"), ("tentative", "free"),
         ("oof", "tentative"), ("oof", "free")],
    )
    def test_the_highest_show_as_among_covering_events_wins(self, higher: str, lower: str) -> None:
        items = [item(lower, "09:00", "12:00"), item(higher, "10:00", "11:00")]
        got = resolve(items, at("10:30"), MAP)
        assert got.show_as == higher
        assert got.status == MAP[higher]

    def test_default_statuses(self) -> None:
        for show_as, status in [("oof", "away"), ("busy", "busy"), ("workingElsewhere", "elsewhere"),
                                ("tentative", "busy")]:
            assert resolve([item(show_as, "10:00", "11:00")], at("10:00"), MAP).status == status

    def test_free_counts_as_nothing(self) -> None:
        assert resolve([item("free", "09:00", "17:00")], at("10:00"), MAP) == IDLE

    def test_a_show_as_mapped_to_none_does_not_hide_a_lower_one(self) -> None:
        status_map = parse_status_map("oof=none")
        items = [item("oof", "09:00", "17:00"), item("tentative", "10:00", "11:00")]
        assert resolve(items, at("10:30"), status_map).status == "busy"
        assert resolve(items, at("12:00"), status_map) == IDLE

    def test_an_event_covers_its_start_but_not_its_end(self) -> None:
        meeting = [item("busy", "10:00", "11:00")]
        assert resolve(meeting, at("09:59"), MAP) == IDLE
        assert resolve(meeting, at("10:00"), MAP).status == "busy"
        assert resolve(meeting, at("10:59") + timedelta(seconds=59), MAP).status == "busy"
        assert resolve(meeting, at("11:00"), MAP) == IDLE

    def test_back_to_back_the_boundary_belongs_to_the_next_event(self) -> None:
        items = [item("busy", "10:00", "11:00"), item("oof", "11:00", "12:00")]
        got = resolve(items, at("11:00"), MAP)
        assert (got.status, got.until) == ("away", at("12:00"))

    def test_overlap_returns_to_the_lower_event_when_the_higher_ends(self) -> None:
        items = [item("tentative", "09:00", "12:00"), item("oof", "10:00", "11:00")]
        assert resolve(items, at("10:59"), MAP).show_as == "oof"
        after = resolve(items, at("11:00"), MAP)
        assert (after.show_as, after.until) == ("tentative", at("12:00"))

    def test_equal_show_as_the_earlier_event_wins_so_the_key_is_stable(self) -> None:
        first, second = item("busy", "10:00", "11:00"), item("busy", "10:30", "12:00")
        assert resolve([second, first], at("10:45"), MAP).key == first.key
        assert resolve([second, first], at("11:00"), MAP).key == second.key

    def test_resolution_carries_show_as_key_and_until(self) -> None:
        meeting = item("workingElsewhere", "10:00", "11:00")
        got = resolve([meeting], at("10:15"), MAP)
        assert got == Resolution("elsewhere", meeting)
        assert (got.show_as, got.key, got.until) == ("workingelsewhere", meeting.key, at("11:00"))
        assert (IDLE.status, IDLE.show_as, IDLE.key, IDLE.until) == (None, None, None, None)

    def test_at_evaluates_as_if_it_were_that_moment(self) -> None:
        items = [item("oof", "10:00", "11:00")]
        assert resolve(items, at("10:30"), MAP).status == "away"
        assert resolve(items, at("10:30").astimezone(ZoneInfo("America/New_York")), MAP).status == "away"

    def test_naive_now_is_refused(self) -> None:
        with pytest.raises(ValueError, match="naive"):
            resolve([], datetime(2026, 6, 15, 10, 0), MAP)


class TestDaylightSaving:
    """Last Sunday of October 2026 (the 25th): 03:00 CEST -> 02:00 CET at 01:00 UTC.
    Last Sunday of March 2026 (the 29th): 02:00 CET -> 03:00 CEST at 01:00 UTC."""

    def test_october_a_local_0130_to_0330_meeting_lasts_three_hours(self) -> None:
        raw = {"status": "busy",
               "start": {"dateTime": "2026-10-25T01:30:00.0000000", "timeZone": "W. Europe Standard Time"},
               "end": {"dateTime": "2026-10-25T03:30:00.0000000", "timeZone": "W. Europe Standard Time"}}
        (meeting,) = items_from_schedule(schedule(raw))
        assert (meeting.start, meeting.end) == (utc("2026-10-24T23:30:00"), utc("2026-10-25T02:30:00"))
        assert meeting.end - meeting.start == timedelta(hours=3)
        first_0230 = datetime(2026, 10, 25, 2, 30, tzinfo=AMS, fold=0)
        second_0230 = datetime(2026, 10, 25, 2, 30, tzinfo=AMS, fold=1)
        assert resolve([meeting], first_0230, MAP).status == "busy"
        assert resolve([meeting], second_0230, MAP).status == "busy"
        assert resolve([meeting], ams("2026-10-25", "03:29"), MAP).status == "busy"
        assert resolve([meeting], ams("2026-10-25", "03:30"), MAP) == IDLE

    def test_october_utc_times_across_the_change(self) -> None:
        # 02:30 CEST until 02:30 CET: the same wall clock, one hour apart.
        raw = {"status": "oof",
               "start": {"dateTime": "2026-10-25T00:30:00.0000000", "timeZone": "UTC"},
               "end": {"dateTime": "2026-10-25T01:30:00.0000000", "timeZone": "UTC"}}
        items = items_from_schedule(schedule(raw))
        assert resolve(items, datetime(2026, 10, 25, 2, 59, tzinfo=AMS, fold=0), MAP).status == "away"
        assert resolve(items, datetime(2026, 10, 25, 2, 15, tzinfo=AMS, fold=1), MAP).status == "away"
        assert resolve(items, datetime(2026, 10, 25, 2, 30, tzinfo=AMS, fold=1), MAP) == IDLE

    def test_october_an_ambiguous_local_time_is_read_as_its_first_occurrence(self) -> None:
        got = parse_graph_datetime({"dateTime": "2026-10-25T02:30:00", "timeZone": "Europe/Amsterdam"})
        assert got == utc("2026-10-25T00:30:00")

    def test_march_a_local_0130_to_0330_meeting_lasts_one_hour(self) -> None:
        raw = {"status": "busy",
               "start": {"dateTime": "2026-03-29T01:30:00.0000000", "timeZone": "Europe/Amsterdam"},
               "end": {"dateTime": "2026-03-29T03:30:00.0000000", "timeZone": "Europe/Amsterdam"}}
        (meeting,) = items_from_schedule(schedule(raw))
        assert (meeting.start, meeting.end) == (utc("2026-03-29T00:30:00"), utc("2026-03-29T01:30:00"))
        assert resolve([meeting], ams("2026-03-29", "01:59"), MAP).status == "busy"
        assert resolve([meeting], ams("2026-03-29", "03:00"), MAP).status == "busy"  # one minute after 01:59
        assert resolve([meeting], ams("2026-03-29", "03:29"), MAP).status == "busy"
        assert resolve([meeting], ams("2026-03-29", "03:30"), MAP) == IDLE

    def test_march_utc_times_across_the_change(self) -> None:
        raw = {"status": "busy",
               "start": {"dateTime": "2026-03-29T00:30:00.0000000", "timeZone": "UTC"},
               "end": {"dateTime": "2026-03-29T01:30:00.0000000", "timeZone": "UTC"}}
        items = items_from_schedule(schedule(raw))
        assert resolve(items, ams("2026-03-29", "01:30"), MAP).status == "busy"
        assert resolve(items, ams("2026-03-29", "03:29"), MAP).status == "busy"
        assert resolve(items, ams("2026-03-29", "03:30"), MAP) == IDLE

    def test_a_meeting_running_through_the_october_change_keeps_the_status_all_the_way(self) -> None:
        meeting = ScheduleItem("busy", ams("2026-10-25", "01:00"), ams("2026-10-25", "04:00"))
        sim = Sim([meeting])
        seen = sim.run(ams("2026-10-25", "00:30"), ams("2026-10-25", "04:30"))
        # 01:00-04:00 local is four real hours in October.
        assert seen.count("busy") == 4 * 60
        assert sim.clearvox.writes == [(ams("2026-10-25", "01:00"), "busy"), (ams("2026-10-25", "04:00"), "available")]


# ================================================================ presence ledger


class TestLedger:
    def test_round_trip_through_a_table_row(self) -> None:
        entry = LedgerEntry(key="k1", show_as="busy", until=at("11:00"), set_at=at("10:00"), status="busy")
        row = entry.to_row()
        assert all(isinstance(v, str | int | bool | datetime) for v in row.values())
        assert LedgerEntry.from_row({"PartitionKey": "t1", "RowKey": "u1", "etag": "x", **row}) == entry

    def test_every_field_is_written_because_upsert_merges(self) -> None:
        yielded = LedgerEntry(key="k1", show_as="oof", until=at("11:00"), set_at=at("10:00"), status=None,
                              manual=True)
        row = yielded.to_row()
        assert row["status"] == ""
        assert row["manual"] is True
        assert set(row) == {"v", "status", "event_key", "show_as", "until", "set_at", "manual", "source", "teams"}
        assert LedgerEntry.from_row(row) == yielded

    def test_times_are_stored_in_utc_and_read_back_from_naive_or_text(self) -> None:
        entry = LedgerEntry(key="k", show_as="busy", until=at("11:00"), set_at=at("10:00"), status="busy")
        row = entry.to_row()
        assert row["until"] == utc("2026-06-15T09:00:00")
        assert row["until"].tzinfo is UTC  # type: ignore[union-attr]
        naive = {**row, "until": datetime(2026, 6, 15, 9, 0), "set_at": "2026-06-15T08:00:00+00:00"}
        assert LedgerEntry.from_row(naive) == entry

    def test_an_unreadable_row_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="ledger row"):
            LedgerEntry.from_row({"status": "busy"})

    def test_naive_times_are_refused(self) -> None:
        with pytest.raises(ValueError):
            LedgerEntry(key="k", show_as="busy", until=datetime(2026, 6, 15), set_at=at("10:00"), status="busy")


# ================================================================ transitions


class TestTransitions:
    def test_an_event_sets_its_status_and_its_end_sets_available(self) -> None:
        sim = Sim([item("oof", "10:00", "11:00")])
        seen = sim.run(at("09:55"), at("11:05"))
        assert seen == ["available"] * 5 + ["away"] * 60 + ["available"] * 5
        assert sim.clearvox.writes == [(at("10:00"), "away"), (at("11:00"), "available")]
        assert sim.row is None

    def test_the_ledger_records_what_was_set_for_which_event_and_until_when(self) -> None:
        meeting = item("tentative", "10:00", "11:00", private=True)
        sim = Sim([meeting])
        sim.tick(at("10:00"))
        assert sim.ledger == LedgerEntry(key=meeting.key, show_as="tentative", until=at("11:00"), set_at=at("10:00"),
                                         status="busy")

    def test_only_write_on_change_and_read_clearvox_only_at_transitions(self) -> None:
        sim = Sim([item("busy", "09:00", "17:00")])
        sim.run(at("08:00"), at("18:00"))
        assert len(sim.clearvox.writes) == 2
        assert sim.clearvox.reads == 2  # one at 09:00, one at 17:00; none in the 598 other minutes

    def test_no_write_when_clearvox_already_shows_the_status(self) -> None:
        sim = Sim([item("busy", "10:00", "11:00")], FakeClearVox(status="busy", changed_by="api"))
        decision = sim.tick(at("10:00"))
        assert decision.action is Action.NOTHING
        assert decision.ledger_op is LedgerOp.PUT
        assert sim.clearvox.writes == []
        assert sim.ledger is not None  # the connector owns it now, so its end restores available
        sim.tick(at("11:00"))
        assert sim.clearvox.writes == [(at("11:00"), "available")]

    def test_no_write_at_the_end_when_clearvox_already_shows_available(self) -> None:
        sim = Sim([item("tentative", "10:00", "11:00")], status_map=parse_status_map("tentative=available"))
        sim.run(at("09:59"), at("11:01"))
        assert sim.clearvox.writes == []
        assert sim.row is None

    def test_back_to_back_goes_straight_to_the_next_status(self) -> None:
        sim = Sim([item("busy", "10:00", "11:00"), item("oof", "11:00", "12:00"), item("workingElsewhere", "12:00",
                                                                                          "13:00")])
        seen = sim.run(at("10:00"), at("13:01"))
        assert seen == ["busy"] * 60 + ["away"] * 60 + ["elsewhere"] * 60 + ["available"]
        assert [s for _, s in sim.clearvox.writes] == ["busy", "away", "elsewhere", "available"]

    def test_back_to_back_with_the_same_status_writes_nothing_at_the_boundary(self) -> None:
        second = item("busy", "11:00", "12:00")
        sim = Sim([item("busy", "10:00", "11:00"), second])
        sim.run(at("10:00"), at("12:00"))
        assert sim.clearvox.writes == [(at("10:00"), "busy")]
        assert sim.ledger is not None
        assert (sim.ledger.key, sim.ledger.until) == (second.key, at("12:00"))

    def test_overlap_follows_the_priority_and_falls_back_without_available(self) -> None:
        sim = Sim([item("tentative", "09:00", "12:00"), item("oof", "10:00", "11:00")])
        seen = sim.run(at("09:00"), at("12:01"))
        assert seen == ["busy"] * 60 + ["away"] * 60 + ["busy"] * 60 + ["available"]

    def test_free_events_never_change_the_status(self) -> None:
        sim = Sim([item("free", "11:00", "12:00")])
        sim.run(at("09:00"), at("13:00"))
        assert sim.clearvox.writes == []
        assert sim.clearvox.reads == 0

    def test_a_changed_status_map_takes_effect_in_a_running_event(self) -> None:
        sim = Sim([item("tentative", "10:00", "11:00")])
        sim.tick(at("10:00"))
        sim.status_map = parse_status_map("tentative=dnd")
        sim.tick(at("10:01"))
        assert sim.clearvox.writes == [(at("10:00"), "busy"), (at("10:01"), "dnd")]

    def test_a_failed_write_is_tried_again_next_time(self) -> None:
        resolution = resolve([item("busy", "10:00", "11:00")], at("10:00"), MAP)
        first = decide(resolution, None, cv("available"), at("10:00"))
        # The runner stores the ledger only after the write succeeded; without it the same decision follows.
        again = decide(resolution, None, cv("available"), at("10:01"))
        assert first.action is again.action is Action.WRITE
        assert first.status == again.status == "busy"


# ================================================================ missing data


class TestMissingData:
    def test_no_data_during_an_event_keeps_the_status(self) -> None:
        sim = Sim([item("busy", "10:00", "11:00")])
        sim.tick(at("10:00"))
        seen = sim.run(at("10:01"), at("12:00"), graph_ok=False)
        assert set(seen) == {"busy"}
        assert sim.clearvox.reads == 1
        assert sim.ledger is not None  # the ledger survives the outage

    def test_after_the_outage_the_real_calendar_decides(self) -> None:
        sim = Sim([item("busy", "10:00", "11:00")])
        sim.tick(at("10:00"))
        sim.run(at("10:01"), at("12:00"), graph_ok=False)
        sim.tick(at("12:00"))
        assert sim.clearvox.status == "available"

    def test_no_data_is_not_the_same_as_no_events(self) -> None:
        owned = LedgerEntry(key="k", show_as="busy", until=at("11:00"), set_at=at("10:00"), status="busy")
        missing = decide(None, owned, cv("busy"), at("12:00"))
        assert missing == Decision(Action.LEAVE, missing.reason)
        assert "no calendar data" in missing.reason
        assert decide(IDLE, owned, cv("busy"), at("12:00")).status == "available"
        assert not needs_current(None, owned)


# ================================================================ manual changes


class TestManualChanges:
    def test_a_status_the_user_set_while_no_event_ran_is_never_touched(self) -> None:
        clearvox = FakeClearVox()
        clearvox.user_sets("dnd", at("08:00"))
        sim = Sim([item("busy", "10:00", "11:00"), item("oof", "13:00", "14:00")], clearvox)
        seen = sim.run(at("09:00"), at("15:00"))
        assert set(seen) == {"dnd"}
        assert clearvox.writes == []
        assert clearvox.reads == 2  # once per event start; the ledger remembers the rest

    def test_leaving_it_alone_is_recorded_without_a_status(self) -> None:
        clearvox = FakeClearVox()
        clearvox.user_sets("elsewhere", at("08:00"))
        meeting = item("busy", "10:00", "11:00")
        sim = Sim([meeting], clearvox)
        decision = sim.tick(at("10:00"))
        assert decision.action is Action.LEAVE
        assert "set by the user" in decision.reason
        assert sim.ledger == LedgerEntry(key=meeting.key, show_as="busy", until=at("11:00"), set_at=at("10:00"),
                                         status=None, manual=True)
        end = sim.tick(at("11:00"))
        assert (end.action, end.ledger_op) == (Action.NOTHING, LedgerOp.DELETE)

    def test_available_set_by_the_user_is_not_protected(self) -> None:
        clearvox = FakeClearVox()
        clearvox.user_sets("available", at("08:00"))
        sim = Sim([item("busy", "10:00", "11:00")], clearvox)
        sim.tick(at("10:00"))
        assert clearvox.status == "busy"

    @pytest.mark.parametrize("by", ["api", "system"])
    def test_a_status_not_set_by_the_user_is_overridden(self, by: str) -> None:
        clearvox = FakeClearVox(status="dnd", changed_by=by, changed_at=at("08:00"))
        sim = Sim([item("oof", "10:00", "11:00")], clearvox)
        sim.run(at("10:00"), at("11:01"))
        assert [s for _, s in clearvox.writes] == ["away", "available"]

    def test_changed_during_an_event_the_end_still_sets_available_by_default(self) -> None:
        clearvox = FakeClearVox()
        sim = Sim([item("busy", "10:00", "11:00")], clearvox)
        sim.run(at("10:00"), at("10:30"))
        clearvox.user_sets("dnd", at("10:30"))
        seen = sim.run(at("10:30"), at("11:01"))
        assert seen[:30] == ["dnd"] * 30  # not re-asserted mid-event
        assert seen[-1] == "available"
        assert sim.row is None

    def test_respect_manual_keeps_a_change_made_during_an_event_until_the_next_event_starts(self) -> None:
        clearvox = FakeClearVox()
        sim = Sim([item("busy", "10:00", "11:00"), item("oof", "14:00", "15:00")], clearvox, respect_manual=True)
        sim.run(at("10:00"), at("10:30"))
        clearvox.user_sets("dnd", at("10:30"))
        reads_before = clearvox.reads
        seen = sim.run(at("10:30"), at("15:01"))
        assert seen[: 14 * 60 - 10 * 60 - 30] == ["dnd"] * (3 * 60 + 30)  # through the end and the gap
        assert clearvox.reads == reads_before + 2 + 1  # at 11:00, at 14:00, at 15:00
        assert [s for _, s in clearvox.writes] == ["busy", "away", "available"]
        assert clearvox.writes[1] == (at("14:00"), "away")

    def test_respect_manual_records_the_override_in_the_ledger(self) -> None:
        clearvox = FakeClearVox()
        sim = Sim([item("busy", "10:00", "11:00")], clearvox, respect_manual=True)
        sim.tick(at("10:00"))
        clearvox.user_sets("away", at("10:20"))
        decision = sim.tick(at("11:00"))
        assert decision.action is Action.LEAVE
        assert "during the event" in decision.reason
        assert sim.ledger is not None
        assert sim.ledger.manual
        assert sim.ledger.status == "busy"
        later = sim.tick(at("12:00"))
        assert later.action is Action.LEAVE
        assert clearvox.reads == 2

    @pytest.mark.parametrize("respect_manual", [False, True])
    def test_a_change_made_after_the_event_ended_is_left_alone(self, respect_manual: bool) -> None:
        # The run at the end came late (or the runner was down): the user acted in between.
        clearvox = FakeClearVox()
        sim = Sim([item("busy", "10:00", "11:00")], clearvox, respect_manual=respect_manual)
        sim.tick(at("10:00"))
        clearvox.user_sets("dnd", at("11:00") + timedelta(seconds=20))
        decision = sim.tick(at("11:01"))
        assert decision.action is Action.LEAVE
        assert "after the event ended" in decision.reason
        assert clearvox.status == "dnd"
        assert sim.row is None

    def test_respect_manual_a_change_made_in_the_gap_survives_the_next_event(self) -> None:
        clearvox = FakeClearVox()
        sim = Sim([item("busy", "10:00", "11:00"), item("oof", "14:00", "15:00")], clearvox, respect_manual=True)
        sim.tick(at("10:00"))
        clearvox.user_sets("dnd", at("10:30"))
        sim.tick(at("11:00"))  # respected
        clearvox.user_sets("elsewhere", at("12:00"))  # a new choice while no event runs
        seen = sim.run(at("12:00"), at("15:01"))
        assert set(seen) == {"elsewhere"}

    @pytest.mark.parametrize("respect_manual", [False, True])
    def test_a_change_during_an_event_gives_way_when_the_next_event_starts_back_to_back(
        self, respect_manual: bool
    ) -> None:
        clearvox = FakeClearVox()
        sim = Sim([item("busy", "10:00", "11:00"), item("oof", "11:00", "12:00")], clearvox,
                  respect_manual=respect_manual)
        sim.tick(at("10:00"))
        clearvox.user_sets("dnd", at("10:30"))
        sim.tick(at("11:00"))
        assert clearvox.status == "away"
        sim.tick(at("12:00"))
        assert clearvox.status == "available"

    def test_same_status_back_to_back_still_restores_the_next_events_status(self) -> None:
        clearvox = FakeClearVox()
        sim = Sim([item("busy", "10:00", "11:00"), item("busy", "11:00", "12:00")], clearvox)
        sim.tick(at("10:00"))
        clearvox.user_sets("dnd", at("10:30"))
        sim.tick(at("11:00"))  # a new event: ClearVox is read, the event's status is set again
        assert clearvox.status == "busy"


# ================================================================ the decision table


MEETING = item("busy", "10:00", "11:00")
NEXT = item("busy", "11:00", "12:00")
OWNED = LedgerEntry(key=MEETING.key, show_as="busy", until=at("11:00"), set_at=at("10:00"), status="busy")
YIELDED = LedgerEntry(key=MEETING.key, show_as="busy", until=at("11:00"), set_at=at("10:00"), status=None,
                      manual=True)
RESPECTED = LedgerEntry(key=MEETING.key, show_as="busy", until=at("11:00"), set_at=at("10:00"), status="busy",
                        manual=True)


def running(event: ScheduleItem = MEETING) -> Resolution:
    return Resolution("busy", event)


class TestDecide:
    @pytest.mark.parametrize(
        ("resolution", "ledger", "needed"),
        [
            (None, None, False),  # no data
            (None, OWNED, False),
            (IDLE, None, False),  # nothing now, nothing owned
            (IDLE, YIELDED, False),  # the user's status was left alone: just forget it
            (IDLE, RESPECTED, False),  # respected until the next event
            (IDLE, OWNED, True),  # an event the connector set has ended
            (running(), OWNED, False),  # steady state
            (running(), YIELDED, False),
            (running(), RESPECTED, False),
            (running(), None, True),  # an event starts
            (running(NEXT), OWNED, True),  # the next event starts
            (running(NEXT), YIELDED, True),
            (running(NEXT), RESPECTED, True),
        ],
    )
    def test_clearvox_is_read_only_at_a_transition(
        self, resolution: Resolution | None, ledger: LedgerEntry | None, needed: bool
    ) -> None:
        assert needs_current(resolution, ledger) is needed
        first = decide(resolution, ledger, None, at("10:30"))
        assert (first.action is Action.CHECK) is needed

    def test_idle_without_a_ledger_is_nothing_to_do(self) -> None:
        decision = decide(IDLE, None, None, at("09:00"))
        assert (decision.action, decision.status, decision.ledger_op) == (Action.NOTHING, None, LedgerOp.KEEP)

    def test_event_start_writes_and_stores_the_ledger(self) -> None:
        decision = decide(running(), None, cv("available"), at("10:00"))
        assert decision.action is Action.WRITE
        assert decision.status == "busy"
        assert decision.ledger_op is LedgerOp.PUT
        assert decision.ledger == OWNED

    def test_event_end_writes_available_and_deletes_the_ledger(self) -> None:
        decision = decide(IDLE, OWNED, cv("busy", "api", at("10:00")), at("11:00"))
        assert (decision.action, decision.status, decision.ledger_op) == (Action.WRITE, "available", LedgerOp.DELETE)

    def test_event_end_with_a_manual_change_during_the_event(self) -> None:
        manual = cv("dnd", "user", at("10:30"))
        default = decide(IDLE, OWNED, manual, at("11:00"), respect_manual=False)
        assert (default.action, default.status, default.ledger_op) == (Action.WRITE, "available", LedgerOp.DELETE)
        respected = decide(IDLE, OWNED, manual, at("11:00"), respect_manual=True)
        assert (respected.action, respected.ledger_op) == (Action.LEAVE, LedgerOp.PUT)
        assert respected.ledger == RESPECTED

    def test_the_current_status_is_ignored_where_it_is_not_needed(self) -> None:
        anything = cv("dnd", "user", at("10:30"))
        assert decide(running(), OWNED, anything, at("10:30")).action is Action.NOTHING
        assert decide(running(), OWNED, None, at("10:30")).action is Action.NOTHING


# ================================================================ who is asked, and how


class TestWhoIsAsked:
    def test_only_linked_users_with_a_clearvox_user_in_a_stable_order(self) -> None:
        links = {
            "b": Link("b", "2", "Bob@Contoso.nl ", "Bob", "linked"),
            "a": Link("a", "1", "anna@contoso.nl", "Anna", "linked"),
            "c": Link("c", "3", "carol@contoso.nl", "Carol", "unlinked"),
            "d": Link("d", "4", "dave@contoso.nl", "Dave", "deactivated"),
            "e": Link("e", None, "eve@contoso.nl", "Eve", "linked"),
        }
        assert calendar_users(links) == [CalendarUser("a", "1", "anna@contoso.nl"), CalendarUser("b", "2", "bob@contoso.nl")]

    def test_chunks_of_twenty_each_sent_to_a_mailbox_not_known_to_be_unreadable(self) -> None:
        ids = [f"u{i:02d}" for i in range(45)]
        bad = {"u00", "u01", "u20", "u40"}
        chunks = anchor_chunks(ids, bad)
        assert [len(c) for c in chunks] == [20, 20, 5]
        assert sorted(i for c in chunks for i in c) == ids  # everyone asked, once
        assert not {c[0] for c in chunks} & bad

    def test_when_most_mailboxes_are_unreadable_the_readable_ones_go_first(self) -> None:
        chunks = anchor_chunks(["x1", "x2", "ok", "x3", "ok", ""], {"x1", "x2", "x3"})
        assert chunks == [["ok", "x1", "x2", "x3"]]
        assert anchor_chunks([], {"x"}) == []


class TestNotices:
    NOW = utc("2026-12-01T09:00:00")

    def row(self, kind: NoticeKind, reported: datetime) -> dict[str, object]:
        return {"kind": str(kind), "reported_at": reported}

    def test_a_new_problem_is_reported(self) -> None:
        assert notice_due(None, NoticeKind.NO_MAILBOX, self.NOW)

    def test_then_once_a_day(self) -> None:
        row = self.row(NoticeKind.NO_MAILBOX, self.NOW)
        assert not notice_due(row, NoticeKind.NO_MAILBOX, self.NOW + timedelta(hours=23, minutes=59))
        assert notice_due(row, NoticeKind.NO_MAILBOX, self.NOW + timedelta(days=1))

    def test_a_different_problem_is_reported_at_once(self) -> None:
        assert notice_due(self.row(NoticeKind.NO_MAILBOX, self.NOW), NoticeKind.OUT_OF_SCOPE, self.NOW + MINUTE)

    def test_a_clock_that_went_back_reports_again(self) -> None:  # e.g. after a support run with a future --at
        assert notice_due(self.row(NoticeKind.OUT_OF_SCOPE, self.NOW), NoticeKind.OUT_OF_SCOPE, self.NOW - MINUTE)
