"""The calendar status sync end to end, as a specification: Outlook "show as" now -> ClearVox status.

Real HTTPS against the Graph and ClearVox simulators, state in Azurite. Every run is
evaluated at a chosen moment (`at`, the CLI's --at), so a test walks through a day
minute by minute without waiting. Times are Europe/Amsterdam wall clock unless said
otherwise.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared import cli, runner
from shared.report import RunReport
from shared.sandbox.azurite import Azurite
from shared.sandbox.world import World
from shared.settings import Settings
from shared.state import Store
from shared.sync import base
from shared.sync.base import OUTAGE_IN_A_ROW
from shared.sync.calendar import SPEC
from shared.sync.users.rules import Link

AMS = ZoneInfo("Europe/Amsterdam")
DAY = "2026-12-01"  # an ordinary Tuesday, CET (UTC+1)
STATUS_PUT = "PUT /users/{userId}/status"


def at(hhmm: str, day: str = DAY) -> datetime:
    """A wall-clock moment in Amsterdam."""
    return datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=AMS)


@dataclass(frozen=True)
class Person:
    object_id: str
    cv_id: str
    email: str


class Office:
    """One customer's tenant: people in Entra and ClearVox, linked as the users sync links them."""

    def __init__(self, world: World, store: Store) -> None:
        self.world = world
        self.store = store
        self.state = store.for_tenant(world.tenant.key)

    def person(self, name: str, *, has_mailbox: bool = True, in_scope: bool = True, link: str = "linked",
               time_zone: str = "W. Europe Standard Time", email: str | None = None) -> Person:
        email = email or f"{name}@contoso.nl"
        oid = self.world.graph.add_user(displayName=name.title(), mail=email, userPrincipalName=email,
                                        has_mailbox=has_mailbox, mailbox_in_scope=in_scope, time_zone=time_zone)
        cv = self.world.clearvox.add_user(first_name=name.title(), last_name="Test", email=email,
                                          external_application_id=oid)
        self.state.upsert("links", {oid: Link(oid, cv["id"], email, name.title(), link).to_row()})  # type: ignore[arg-type]
        return Person(oid, cv["id"], email)

    def meeting(self, who: Person, start: datetime | date, end: datetime | date, show_as: str = "busy", **extra: Any) -> str:
        return self.world.graph.add_event(who.object_id, "Kwartaaloverleg (confidential subject)", start, end,
                                          show_as=show_as, **extra)

    def sync(self, moment: datetime, **options: Any) -> RunReport:
        tenant = self.world.tenant_with(**options) if options else self.world.tenant
        return runner.run("calendar", tenant, self.store, verify=self.world.verify, at=moment, respect_backoff=False)

    def status(self, who: Person) -> str:
        return self.world.clearvox.status_of(who.cv_id)

    def user_sets(self, who: Person, status: str, moment: datetime) -> None:
        """The person changes their status in ClearVox themselves at `moment`."""
        self.world.clearvox.set_user_status(who.cv_id, status, "user")
        with self.world.clearvox.lock:
            self.world.clearvox.statuses[who.cv_id]["changed_at"] = (
                moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))

    def walk(self, who: Person, moments: list[datetime], **options: Any) -> list[str]:
        """The person's ClearVox status after a run at each moment."""
        seen = []
        for moment in moments:
            report = self.sync(moment, **options)
            assert report.error is None, report.error
            seen.append(self.status(who))
        return seen

    def ledger(self, who: Person) -> dict[str, Any] | None:
        return self.state.get("presence", who.object_id)

    @property
    def status_writes(self) -> int:
        return self.world.clearvox.writes_by_operation[STATUS_PUT]

    def status_reads(self) -> int:
        return len(self.world.clearvox.requests_to(lambda r: r.method == "GET" and r.path.endswith("/status")))

    def schedule_requests(self) -> int:
        return len(self.world.graph.requests_to(lambda r: r.path.endswith("/getSchedule")))


@pytest.fixture
def office(world: World, store: Store) -> Office:
    return Office(world, store)


# ================================================================ transitions


def test_an_event_sets_its_status_and_its_end_sets_available(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    seen = office.walk(anna, [at("09:59"), at("10:00"), at("10:01"), at("10:59"), at("11:00"), at("11:01")])
    assert seen == ["available", "busy", "busy", "busy", "available", "available"]
    assert office.status_writes == 2  # only on change
    assert office.status_reads() == 2  # ClearVox is read at the two transitions only


def test_the_presence_ledger_records_what_was_set_for_which_event_and_until_when(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"), show_as="tentative")
    office.sync(at("10:00"))
    row = office.ledger(anna)
    assert row is not None
    assert (row["status"], row["show_as"], row["until"], row["set_at"]) == ("busy", "tentative", at("11:00"), at("10:00"))
    assert row["event_key"] and "Kwartaaloverleg" not in json.dumps(row, default=str)
    office.sync(at("11:00"))
    assert office.ledger(anna) is None  # not owned any more: a later manual status is the user's own


def test_back_to_back_events_go_straight_to_the_next_status(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"), "busy")
    office.meeting(anna, at("11:00"), at("12:00"), "oof")
    office.meeting(anna, at("12:00"), at("12:30"), "workingElsewhere")
    office.meeting(anna, at("12:30"), at("13:00"), "busy")
    office.meeting(anna, at("13:00"), at("13:30"), "busy")
    seen = office.walk(anna, [at(t) for t in ("10:00", "10:59", "11:00", "12:00", "12:30", "13:00", "13:30")])
    assert seen == ["busy", "busy", "away", "elsewhere", "busy", "busy", "available"]
    assert [w.body for w in office.world.clearvox.write_log] == [
        {"status": s} for s in ("busy", "away", "elsewhere", "busy", "available")]  # never available in between


def test_the_highest_show_as_among_overlapping_events_wins(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("09:00"), at("12:00"), "tentative")
    office.meeting(anna, at("10:00"), at("11:00"), "oof")
    office.meeting(anna, at("10:15"), at("10:45"), "workingElsewhere")
    office.meeting(anna, at("09:30"), at("11:30"), "free")
    seen = office.walk(anna, [at(t) for t in ("09:00", "10:00", "10:30", "11:00", "12:00")])
    assert seen == ["busy", "away", "away", "busy", "available"]


def test_the_status_map_setting_changes_the_mapping(office: Office) -> None:
    anna, bob = office.person("anna"), office.person("bob")
    office.meeting(anna, at("10:00"), at("11:00"), "tentative")
    office.meeting(bob, at("10:00"), at("11:00"), "oof")
    office.sync(at("10:00"), status_map="tentative=available,oof=dnd")
    assert (office.status(anna), office.status(bob)) == ("available", "dnd")


def test_all_day_events_count_from_midnight_to_midnight_in_the_mailbox_time_zone(office: Office) -> None:
    anna = office.person("anna")  # Amsterdam
    sam = office.person("sam", time_zone="Pacific Standard Time")
    office.meeting(anna, date(2026, 12, 2), date(2026, 12, 3), "oof", is_all_day=True)
    office.meeting(sam, date(2026, 12, 2), date(2026, 12, 3), "oof", is_all_day=True)
    utc = UTC
    moments = [datetime(2026, 12, 1, 22, 59, tzinfo=utc), datetime(2026, 12, 1, 23, 0, tzinfo=utc),  # Amsterdam midnight
               datetime(2026, 12, 2, 7, 59, tzinfo=utc), datetime(2026, 12, 2, 8, 0, tzinfo=utc),  # Pacific midnight
               datetime(2026, 12, 2, 22, 59, tzinfo=utc), datetime(2026, 12, 2, 23, 0, tzinfo=utc),
               datetime(2026, 12, 3, 7, 59, tzinfo=utc), datetime(2026, 12, 3, 8, 0, tzinfo=utc)]
    seen = [(office.sync(m), office.status(anna), office.status(sam))[1:] for m in moments]
    assert seen == [("available", "available"), ("away", "available"), ("away", "available"), ("away", "away"),
                    ("away", "away"), ("available", "away"), ("available", "away"), ("available", "available")]


def test_cancelled_events_are_ignored_and_a_cancellation_during_the_event_ends_it(office: Office) -> None:
    anna, bob = office.person("anna"), office.person("bob")
    office.meeting(anna, at("10:00"), at("11:00"), is_cancelled=True)
    running = office.meeting(bob, at("10:00"), at("11:00"))
    office.sync(at("10:00"))
    assert (office.status(anna), office.status(bob)) == ("available", "busy")
    office.world.graph.update_event(running, is_cancelled=True)
    office.sync(at("10:20"))
    assert office.status(bob) == "available"
    assert office.status_writes == 2


def test_private_events_count_by_their_show_as_and_their_subject_is_never_stored(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"), "oof", sensitivity="private")
    report = office.sync(at("10:00"))
    assert office.status(anna) == "away"
    stored = json.dumps([office.state.rows(t) for t in ("presence", "runs")], default=str)
    assert "Kwartaaloverleg" not in stored and "Kwartaaloverleg" not in json.dumps(report.to_json(), default=str)


def test_graph_status_values_are_matched_case_insensitively(office: Office) -> None:
    office.world.graph.schedule_status_casing = "pascal"  # "Busy", "Oof": Microsoft's examples show both
    anna, bob = office.person("anna"), office.person("bob")
    office.meeting(anna, at("10:00"), at("11:00"), "busy")
    office.meeting(bob, at("10:00"), at("11:00"), "workingElsewhere")
    office.sync(at("10:00"))
    assert (office.status(anna), office.status(bob)) == ("busy", "elsewhere")


# ================================================================ manual changes


def test_a_status_the_user_set_while_no_event_ran_is_never_touched(office: Office) -> None:
    anna = office.person("anna")
    office.user_sets(anna, "dnd", at("08:00"))
    office.meeting(anna, at("10:00"), at("11:00"))
    for respect_manual in (False, True):
        seen = office.walk(anna, [at("10:00"), at("10:30"), at("11:00"), at("11:01")], respect_manual=respect_manual)
        assert seen == ["dnd"] * 4
    assert office.status_writes == 0


def test_a_change_during_an_event_is_reset_to_available_at_its_end_by_default(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    office.sync(at("10:00"))
    office.user_sets(anna, "dnd", at("10:20"))
    seen = office.walk(anna, [at("10:21"), at("10:59"), at("11:00")])
    assert seen == ["dnd", "dnd", "available"]  # not re-asserted during the event; the guide at its end


def test_respect_manual_keeps_a_change_made_during_an_event_until_the_next_event_starts(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    office.meeting(anna, at("14:00"), at("15:00"), "oof")
    office.sync(at("10:00"), respect_manual=True)
    office.user_sets(anna, "dnd", at("10:20"))
    seen = office.walk(anna, [at("11:00"), at("12:00"), at("14:00"), at("15:00")], respect_manual=True)
    assert seen == ["dnd", "dnd", "away", "available"]


# ================================================================ resilience


def test_graph_throttled_for_the_whole_run_keeps_every_status(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    office.sync(at("10:00"))
    office.world.graph.inject(429, count=6, retry_after=1, match=lambda r: r.path.endswith("/getSchedule"))
    report = office.sync(at("11:00"))  # the event has ended, but Graph cannot say so
    assert report.exit_code == 1 and report.error is not None and "stays as it is" in report.error
    assert office.status(anna) == "busy"  # never flap to available for lack of data
    assert office.ledger(anna) is not None
    office.sync(at("11:01"))
    assert office.status(anna) == "available"


def test_graph_down_for_some_users_keeps_their_status_and_the_others_go_on(office: Office) -> None:
    people = [office.person(f"user{i:02d}") for i in range(21)]  # two getSchedule requests
    for p in people:
        office.meeting(p, at("10:00"), at("11:00"))
    office.sync(at("10:00"))
    assert {office.status(p) for p in people} == {"busy"}
    first = office.world.graph.requests_to(lambda r: r.path.endswith("/getSchedule"))[0].path
    office.world.graph.inject(500, count=1, match=lambda r: r.path == first)
    report = office.sync(at("11:00"))
    kept = [p for p in people if office.status(p) == "busy"]
    assert 1 <= len(kept) <= 20 and len(kept) + report.updated == 21
    assert {f["id"] for f in report.failed} == {p.email for p in kept}
    assert all("status kept" in f["reason"] for f in report.failed)
    office.sync(at("11:01"))
    assert {office.status(p) for p in people} == {"available"}


def test_clearvox_down_is_an_item_failure_retried_next_minute(office: Office) -> None:
    anna, bob = office.person("anna"), office.person("bob")
    office.meeting(anna, at("10:00"), at("11:00"))
    office.meeting(bob, at("10:00"), at("11:00"))
    office.world.clearvox.inject(500, match=lambda r: r.method == "PUT" and anna.cv_id in r.path)
    report = office.sync(at("10:00"))
    assert report.exit_code == 1
    assert [f["id"] for f in report.failed] == [anna.email]
    assert (office.status(anna), office.status(bob)) == ("available", "busy")
    assert office.ledger(anna) is None  # only a successful write is recorded
    office.sync(at("10:01"))
    assert office.status(anna) == "busy"


def test_with_clearvox_down_the_run_stops_asking_after_the_outage_rule(office: Office) -> None:
    """The applier's one outage rule: OUTAGE_IN_A_ROW unavailable answers in a row stop the run asking ClearVox."""
    people = [office.person(f"user{i:02d}") for i in range(OUTAGE_IN_A_ROW + 3)]
    for p in people:
        office.meeting(p, at("10:00"), at("11:00"))
    office.world.clearvox.inject(500, count=OUTAGE_IN_A_ROW, match=lambda r: "/status" in r.path)
    office.world.clearvox.clear_log()
    report = office.sync(at("10:00"), clearvox_concurrency=1)
    assert len(report.failed) == len(people) and report.exit_code == 1
    assert len(office.world.clearvox.requests_to()) == OUTAGE_IN_A_ROW
    assert sum("not tried" in f["reason"] for f in report.failed) == 3
    assert {office.status(p) for p in people} == {"available"} and office.state.rows("presence") == {}
    office.sync(at("10:01"))  # ClearVox is back: everyone is set the next minute
    assert {office.status(p) for p in people} == {"busy"}


def test_clearvox_refusing_the_key_stops_the_run_with_a_configuration_error(office: Office) -> None:
    people = [office.person(f"user{i}") for i in range(3)]
    for p in people:
        office.meeting(p, at("10:00"), at("11:00"))
    office.world.clearvox.inject(401, count=100, match=lambda r: "/status" in r.path)
    report = office.sync(at("10:00"), clearvox_concurrency=1)
    assert report.exit_code == 2 and report.error is not None
    assert len(office.world.clearvox.requests_to(lambda r: "/status" in r.path)) == 1
    assert office.state.rows("presence") == {}


def test_users_not_reached_within_the_time_budget_keep_their_state_and_are_done_next_minute(
        office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    # a budget spent before the first ClearVox request
    monkeypatch.setitem(base._REGISTRY, "calendar", replace(SPEC, budget=timedelta(seconds=-1)))
    report = office.sync(at("10:00"))
    assert report.exit_code == 0 and report.extra["not_reached"] == [anna.email]
    assert [w["id"] for w in report.warnings] == ["time budget"]
    assert office.status(anna) == "available" and office.ledger(anna) is None
    monkeypatch.undo()
    office.sync(at("10:01"))
    assert office.status(anna) == "busy"


def test_a_user_without_a_mailbox_or_outside_the_scope_is_reported_once_a_day(office: Office) -> None:
    people = [office.person("anna")]
    nomail = office.person("nomail", has_mailbox=False)
    outside = office.person("outside", in_scope=False)
    people += [office.person(f"user{i}") for i in range(3)]
    for p in people:
        office.meeting(p, at("10:00"), at("11:00"))

    first = office.sync(at("10:00"))
    assert {s["id"]: s["reason"].split(" (")[0] for s in first.skipped} == {
        nomail.email: "no Exchange Online mailbox to read free/busy from",
        outside.email: "mailbox outside the app's mailbox scope",
    }
    assert first.exit_code == 0 and not first.failed
    assert {office.status(p) for p in people} == {"busy"}  # their problem blocks nobody

    office.world.graph.clear_log()
    later = office.sync(at("10:01"))
    assert later.skipped == [] and later.exit_code == 0
    assert later.extra["mailbox_notices_not_repeated"] == 2
    assert office.schedule_requests() == 1  # known-unreadable mailboxes are never the request's anchor

    next_day = office.sync(at("10:01", "2026-12-02"))
    assert {s["id"] for s in next_day.skipped} == {nomail.email, outside.email}

    office.world.graph.update_user(outside.object_id, mailbox_in_scope=True)  # added to the scoped group
    office.sync(at("10:02", "2026-12-02"))
    assert office.state.rows("notices", scope="calendar").keys() == {nomail.object_id}


def test_an_unknown_address_as_the_request_anchor_does_not_block_the_others(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    cv = office.world.clearvox.add_user(first_name="Ghost", last_name="Test", email="ghost@contoso.nl")
    # a link whose address Exchange does not know, sorting first: the first request is sent to its mailbox
    office.state.upsert("links", {"0-ghost": Link("0-ghost", cv["id"], "ghost@contoso.nl", "Ghost", "linked").to_row()})
    report = office.sync(at("10:00"))
    assert office.status(anna) == "busy"
    assert [s["id"] for s in report.skipped] == ["ghost@contoso.nl"] and not report.failed


def test_missing_calendar_permission_is_a_configuration_error(office: Office) -> None:
    anna = office.person("anna")
    office.world.graph.set_app_roles(office.world.client_id, ["User.Read.All", "Contacts.Read"])
    report = office.sync(at("10:00"))
    assert report.exit_code == 2 and report.error is not None and "Calendars.Read" in report.error
    assert office.status(anna) == "available"


def test_only_linked_users_are_looked_at(office: Office) -> None:
    linked = office.person("anna")
    others = [office.person(n, link=s) for n, s in (("bob", "unlinked"), ("carol", "conflict"), ("dave", "deactivated"))]
    for p in [linked, *others]:
        office.meeting(p, at("10:00"), at("11:00"))
    report = office.sync(at("10:00"))
    assert report.extra["linked_users"] == 1
    assert [office.status(p) for p in [linked, *others]] == ["busy", "available", "available", "available"]


def test_a_damaged_ledger_row_is_reported_and_replaced(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    office.state.upsert("presence", {anna.object_id: {"status": "busy"}})  # no event key, no times
    report = office.sync(at("10:00"))
    assert [w["id"] for w in report.warnings] == [anna.object_id]
    assert office.status(anna) == "busy" and office.ledger(anna) is not None
    assert office.sync(at("10:01")).warnings == []


# ================================================================ cost


def test_a_run_asks_graph_once_per_20_users_and_clearvox_only_at_transitions(office: Office) -> None:
    people = [office.person(f"user{i:02d}") for i in range(45)]
    for p in people[:10]:
        office.meeting(p, at("10:00"), at("11:00"))
    office.sync(at("09:59"))
    office.world.graph.clear_log()
    office.world.clearvox.clear_log()
    office.sync(at("10:00"))
    assert office.schedule_requests() == 3
    assert len(office.world.clearvox.requests_to()) == 20  # read + write for the ten whose meeting starts
    office.world.clearvox.clear_log()
    report = office.sync(at("10:30"))
    assert office.world.clearvox.requests_to() == []  # the steady state is answered from the ledger
    assert report.unchanged == 45


# ================================================================ --dry-run, --at and the CLI


def test_dry_run_lists_the_transitions_and_writes_nothing(office: Office) -> None:
    anna, bob = office.person("anna"), office.person("bob")
    office.meeting(anna, at("10:00"), at("11:00"), "oof")
    office.user_sets(bob, "dnd", at("08:00"))
    office.meeting(bob, at("10:00"), at("11:00"))
    report = runner.run("calendar", office.world.tenant, office.store, verify=office.world.verify, at=at("10:00"),
                        dry_run=True)
    assert f"{anna.email}: available -> away (event now; show as oof until 2026-12-01 10:00 UTC)" in report.plan_text
    assert f"{bob.email}: dnd left alone" in report.plan_text
    assert office.status_writes == 0
    assert office.state.rows("presence") == {} and office.state.rows("runs") == {}


def test_dry_run_json_plan_lists_each_change_with_the_clearvox_user_object_id_and_why(office: Office) -> None:
    anna, bob, carol = office.person("anna"), office.person("bob"), office.person("carol")
    office.meeting(anna, at("10:00"), at("11:00"), "oof")
    office.meeting(bob, at("09:00"), at("10:00"))
    office.sync(at("09:00"))
    report = runner.run("calendar", office.world.tenant, office.store, verify=office.world.verify, at=at("10:00"),
                        dry_run=True)
    plan = sorted(report.to_json()["plan"], key=lambda p: p["id"])
    assert plan == [
        {"clearvox_user": anna.cv_id, "object_id": anna.object_id, "id": anna.email, "from": "available", "to": "away",
         "reason": "event now", "show_as": "oof", "until": "2026-12-01 10:00 UTC"},
        {"clearvox_user": bob.cv_id, "object_id": bob.object_id, "id": bob.email, "from": "busy", "to": "available",
         "reason": "event ended; back to available", "show_as": None, "until": None},
    ]
    assert carol.email not in report.plan_text
    assert f"[ClearVox user {anna.cv_id}, object id {anna.object_id}]" in report.plan_text
    assert (office.status(anna), office.status(bob)) == ("available", "busy")


def test_a_ledger_row_in_the_stored_format_is_read_and_ends_its_event(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    office.world.clearvox.set_user_status(anna.cv_id, "busy", "api")
    row = {"v": 1, "status": "busy", "event_key": "0123456789abcdef0123", "show_as": "busy",  # as written until now
           "until": at("11:00").astimezone(UTC), "set_at": at("10:00").astimezone(UTC), "manual": False}
    office.state.upsert("presence", {anna.object_id: row})
    report = office.sync(at("11:00"))
    assert report.warnings == [] and office.status(anna) == "available" and office.ledger(anna) is None


@pytest.fixture
def cli_office(world: World, azurite: Azurite) -> Iterator[tuple[Office, Settings]]:
    """An office whose state is where the CLI looks: the default table prefix, this tenant's partition."""
    yield Office(world, Store(azurite.connection_string)), Settings(env=world.env(azurite.connection_string), local={})


def nexxt365(settings: Settings, *args: str, **env: str) -> tuple[int, str]:
    out = io.StringIO()
    if env:
        settings = Settings(env={**settings.env, **env}, local={})
    code = cli.main(list(args), out=out, settings=settings)
    return code, out.getvalue()


def test_cli_sync_calendar_at_json(cli_office: tuple[Office, Settings]) -> None:
    office, settings = cli_office
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    code, out = nexxt365(settings, "sync", "calendar", "--at", "2026-12-01T10:00:00+01:00", "--json")
    doc = json.loads(out)
    assert code == 0
    assert (doc["sync"], doc["updated"], doc["at"]) == ("calendar", 1, "2026-12-01T09:00:00+00:00")
    assert doc["statuses"] == [{"id": anna.email, "from": "available", "to": "busy", "reason": "event now",
                                "show_as": "busy", "until": "2026-12-01 10:00 UTC"}]
    code, out = nexxt365(settings, "sync", "calendar", "--at", "2026-12-01T10:00:00Z", "--dry-run")
    assert code == 0 and f"{anna.email}: busy -> available (event ended; back to available)" in out
    assert office.status(anna) == "busy"


def test_cli_a_bad_status_map_is_a_configuration_error(cli_office: tuple[Office, Settings],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    office, settings = cli_office
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    code, out = nexxt365(settings, "sync", "calendar", "--at", "2026-12-01T10:00:00+01:00", "--json",
                         NEXXT365_STATUS_MAP="tentative=maybe")
    assert code == 2
    assert "NEXXT365_STATUS_MAP" in json.loads(out)["error"]
    assert office.status(anna) == "available"


# ================================================================ daylight saving, Europe/Amsterdam, with --at


def _walk_cli(office: Office, settings: Settings, who: Person, instants: list[str]) -> list[str]:
    seen = []
    for instant in instants:
        code, _ = nexxt365(settings, "sync", "calendar", "--at", instant, "--json")
        assert code == 0
        seen.append(office.status(who))
    return seen


def test_october_a_meeting_from_0130_to_0330_local_lasts_three_hours(cli_office: tuple[Office, Settings]) -> None:
    office, settings = cli_office
    anna = office.person("anna")
    # Sunday 25 October 2026, 03:00 CEST -> 02:00 CET: 01:30 CEST = 23:30Z, 03:30 CET = 02:30Z
    office.meeting(anna, at("01:30", "2026-10-25"), at("03:30", "2026-10-25"))
    seen = _walk_cli(office, settings, anna, ["2026-10-24T23:29:00Z", "2026-10-24T23:30:00Z", "2026-10-25T00:59:00Z",
                                              "2026-10-25T01:30:00Z", "2026-10-25T02:29:00Z", "2026-10-25T02:30:00Z"])
    assert seen == ["available", "busy", "busy", "busy", "busy", "available"]


def test_october_a_daily_meeting_keeps_its_local_time_across_the_change(cli_office: tuple[Office, Settings]) -> None:
    office, settings = cli_office
    anna = office.person("anna")
    office.meeting(anna, at("09:00", "2026-10-23"), at("09:30", "2026-10-23"),
                   recurrence={"pattern": {"type": "daily", "interval": 1},
                               "range": {"type": "numbered", "startDate": "2026-10-23", "numberOfOccurrences": 5}})
    seen = _walk_cli(office, settings, anna, ["2026-10-23T07:00:00Z", "2026-10-23T07:30:00Z",  # Friday, CEST
                                              "2026-10-26T07:00:00Z", "2026-10-26T08:00:00Z", "2026-10-26T08:30:00Z"])
    assert seen == ["busy", "available", "available", "busy", "available"]  # Monday 09:00 CET is 08:00Z


def test_march_a_meeting_from_0130_to_0330_local_lasts_one_hour(cli_office: tuple[Office, Settings]) -> None:
    office, settings = cli_office
    anna = office.person("anna")
    # Sunday 28 March 2027, 02:00 CET -> 03:00 CEST: 01:30 CET = 00:30Z, 03:30 CEST = 01:30Z
    office.meeting(anna, at("01:30", "2027-03-28"), at("03:30", "2027-03-28"), "oof")
    seen = _walk_cli(office, settings, anna, ["2027-03-28T00:29:00Z", "2027-03-28T00:30:00Z", "2027-03-28T01:29:00Z",
                                              "2027-03-28T01:30:00Z"])
    assert seen == ["available", "away", "away", "available"]


def test_march_an_all_day_event_on_the_change_day_lasts_23_hours(cli_office: tuple[Office, Settings]) -> None:
    office, settings = cli_office
    anna = office.person("anna")
    office.meeting(anna, date(2027, 3, 28), date(2027, 3, 29), "oof", is_all_day=True)
    seen = _walk_cli(office, settings, anna, ["2027-03-27T22:59:00Z", "2027-03-27T23:00:00Z", "2027-03-28T21:59:00Z",
                                              "2027-03-28T22:00:00Z"])
    assert seen == ["available", "away", "away", "available"]  # midnight CET to midnight CEST


def test_the_at_moment_decides_not_the_clock(office: Office) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))
    assert office.walk(anna, [at("10:30") - timedelta(days=365), at("10:30")]) == ["available", "busy"]
