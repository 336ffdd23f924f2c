"""Teams presence as a second input to the calendar status, end to end (issue 14).

Real HTTPS against the Graph and ClearVox simulators, state in Azurite, every run at a
chosen moment (--at). Presence is set in the Graph simulator as Teams would report it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared import runner
from shared.errors import ConfigError, ConsentError, GraphItemError, GraphUnavailable
from shared.graph.client import Graph
from shared.graph.presence import PRESENCE_IDS_LIMIT, get_presences
from shared.report import RunReport
from shared.sandbox.world import World
from shared.settings import Options
from shared.state import Store
from shared.sync.base import spec_for
from tests.integration.test_calendar_sync import Office, Person, at

ROLES = ["User.Read.All", "Contacts.Read", "Calendars.Read", "Presence.Read.All"]
PRESENCE_PATH = "/v1.0/communications/getPresencesByUserId"


class TeamsOffice(Office):
    """An office whose app may read Teams presence and whose syncs run with NEXXT365_TEAMS_PRESENCE=true."""

    def sync(self, moment: datetime, **options: Any) -> RunReport:
        return super().sync(moment, **{"teams_presence": True, **options})

    def teams(self, who: Person, availability: str, activity: str | None = None) -> None:
        self.world.graph.set_presence(who.object_id, availability, activity)

    def presence_requests(self) -> int:
        return len(self.world.graph.requests_to(lambda r: r.path == PRESENCE_PATH))


@pytest.fixture
def office(world: World, store: Store) -> TeamsOffice:
    world.graph.set_app_roles(world.client_id, ROLES)
    return TeamsOffice(world, store)


@pytest.fixture
def graph(world: World) -> Iterator[Graph]:
    world.graph.set_app_roles(world.client_id, ROLES)
    client = Graph(world.tenant, verify=world.verify, reuse_tokens=False)
    yield client
    client.close()


# ================================================================ the decision


def test_a_teams_call_turns_the_user_bezig_and_its_end_back_to_beschikbaar(office: TeamsOffice) -> None:
    anna = office.person("anna")
    office.sync(at("10:00"))
    office.teams(anna, "Busy", "InACall")
    report = office.sync(at("10:01"))
    assert office.status(anna) == "busy"
    assert report.extra["statuses"] == [{"id": anna.email, "from": "available", "to": "busy", "reason": "Teams presence now",
                                         "show_as": None, "until": None, "teams": "Busy/InACall", "source": "teams"}]
    ledger = office.ledger(anna)
    assert ledger is not None and (ledger["source"], ledger["teams"], ledger["status"]) == ("teams", "Busy/InACall", "busy")
    office.teams(anna, "Available")
    report = office.sync(at("10:02"))
    assert office.status(anna) == "available" and office.ledger(anna) is None
    assert report.extra["statuses"][0]["reason"] == "Teams presence ended; back to available"
    assert office.status_writes == 2


def test_dry_run_shows_teams_as_the_reason_in_the_plan(office: TeamsOffice) -> None:
    anna = office.person("anna")
    office.teams(anna, "DoNotDisturb", "Presenting")
    report = runner.run("calendar", office.world.tenant_with(teams_presence=True), office.store,
                        verify=office.world.verify, at=at("10:00"), dry_run=True)
    (change,) = report.to_json()["plan"]
    assert (change["object_id"], change["clearvox_user"], change["to"], change["source"], change["teams"]) == (
        anna.object_id, anna.cv_id, "dnd", "teams", "DoNotDisturb/Presenting")
    assert f"{anna.email}: available -> dnd (Teams presence now; Teams DoNotDisturb/Presenting)" in report.plan_text
    assert office.status(anna) == "available" and report.extra["ticks"] == 1


def test_the_default_mapping(office: TeamsOffice) -> None:
    people = {name: office.person(name) for name in ("dnd", "busy", "busyidle", "ooo", "away", "brb", "offline", "meeting")}
    for name, (availability, activity) in {"dnd": ("DoNotDisturb", "Presenting"), "busy": ("Busy", "Busy"),
                                           "busyidle": ("BusyIdle", "BusyIdle"), "ooo": ("Offline", "OutOfOffice"),
                                           "away": ("Away", "Away"), "brb": ("BeRightBack", "BeRightBack"),
                                           "offline": ("Offline", "OffWork"), "meeting": ("Busy", "InAMeeting")}.items():
        office.teams(people[name], availability, activity)
    office.sync(at("10:00"))
    assert {name: office.status(p) for name, p in people.items()} == {
        "dnd": "dnd", "busy": "busy", "busyidle": "busy", "ooo": "away", "away": "available", "brb": "available",
        "offline": "available", "meeting": "busy"}


def test_where_the_map_names_the_activity_the_activity_decides(office: TeamsOffice) -> None:
    anna, bob, carol = office.person("anna"), office.person("bob"), office.person("carol")
    office.teams(anna, "Busy", "InACall")
    office.teams(bob, "DoNotDisturb", "Presenting")
    office.teams(carol, "Away", "Away")
    office.sync(at("10:00"), presence_map="InACall=none,presenting=busy,AWAY=away")
    assert (office.status(anna), office.status(bob), office.status(carol)) == ("available", "busy", "away")


def test_the_stronger_of_calendar_and_teams_wins_and_agreeing_never_writes_twice(office: TeamsOffice) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"))  # busy
    office.sync(at("10:00"))
    office.teams(anna, "Busy", "InAMeeting")  # joins the meeting's Teams call: both say busy
    office.sync(at("10:01"))
    assert office.ledger(anna)["source"] == "both"  # type: ignore[index]
    office.teams(anna, "DoNotDisturb", "Presenting")  # dnd beats the meeting's busy
    office.sync(at("10:20"))
    assert office.status(anna) == "dnd"
    office.teams(anna, "Busy", "InAMeeting")
    office.sync(at("10:40"))
    assert office.status(anna) == "busy"
    office.teams(anna, "Busy", "InACall")  # a call that overruns the meeting
    office.sync(at("11:00"))
    assert office.status(anna) == "busy" and office.ledger(anna)["source"] == "teams"  # type: ignore[index]
    office.teams(anna, "Available")
    office.sync(at("11:05"))
    assert office.status(anna) == "available"
    assert [w.body["status"] for w in office.world.clearvox.write_log] == ["busy", "dnd", "busy", "available"]


def test_an_out_of_office_event_beats_a_teams_call(office: TeamsOffice) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"), "oof")
    office.teams(anna, "Busy", "InACall")
    office.sync(at("10:00"))
    assert office.status(anna) == "away" and office.ledger(anna)["source"] == "calendar"  # type: ignore[index]


def test_a_status_the_user_set_by_hand_is_respected_as_for_the_calendar(office: TeamsOffice) -> None:
    anna = office.person("anna")
    office.user_sets(anna, "elsewhere", at("08:00"))
    office.teams(anna, "Busy", "InACall")
    office.sync(at("10:00"))
    office.teams(anna, "Available")
    office.sync(at("10:10"))
    assert office.status(anna) == "elsewhere" and office.status_writes == 0


def test_off_by_default_presence_is_never_asked(office: TeamsOffice) -> None:
    anna = office.person("anna")
    office.teams(anna, "DoNotDisturb")
    Office.sync(office, at("10:00"))
    assert office.status(anna) == "available" and office.presence_requests() == 0


def test_presence_is_read_in_one_request_per_650_users_and_only_transitions_touch_clearvox(office: TeamsOffice) -> None:
    people = [office.person(f"user{i:03d}") for i in range(3)]
    office.sync(at("10:00"))
    office.world.graph.clear_log()
    office.world.clearvox.clear_log()
    office.sync(at("10:01"))
    assert office.presence_requests() == 1 and office.world.clearvox.requests_to() == []
    assert {office.status(p) for p in people} == {"available"}


# ================================================================ ticks inside the minute


def test_a_timer_run_decides_every_ten_seconds_with_free_busy_read_once(office: TeamsOffice) -> None:
    anna = office.person("anna")
    office.meeting(anna, at("10:00"), at("11:00"), "tentative")
    seen: list[tuple[str, str]] = []

    def wait(moment: datetime) -> None:  # the clock of the run's ticks, driven by the test
        seen.append((f"{moment:%H:%M:%S}", office.status(anna)))
        if moment == at("10:00") + timedelta(seconds=20):
            office.teams(anna, "DoNotDisturb", "Presenting")

    tenant = office.world.tenant_with(teams_presence=True)
    report = runner.run("calendar", tenant, office.store, verify=office.world.verify, at=at("10:00"),
                        args={"wait": wait}, respect_backoff=False)
    assert report.error is None and report.extra["ticks"] == 5
    assert [m for m, _ in seen] == ["09:00:10", "09:00:20", "09:00:30", "09:00:40"]  # UTC
    assert seen[-1][1] == "dnd" and [s["to"] for s in report.extra["statuses"]] == ["busy", "dnd"]
    assert office.schedule_requests() == 1 and office.presence_requests() == 5


def test_the_ticks_of_a_minute() -> None:
    from shared.sync.calendar.teams import tick_moments

    start = at("10:00")
    assert [int((t - start).total_seconds()) for t in tick_moments(start)] == [0, 10, 20, 30, 40]
    late = start + timedelta(seconds=27)
    assert [int((t - start).total_seconds()) for t in tick_moments(late)] == [27, 30, 40]
    assert tick_moments(start + timedelta(seconds=44)) == [start + timedelta(seconds=44)]


# ================================================================ presence unavailable


def test_permission_withdrawn_the_calendar_keeps_working_and_the_run_says_why_once_a_day(office: TeamsOffice) -> None:
    anna, bob = office.person("anna"), office.person("bob")
    office.meeting(anna, at("10:00"), at("11:00"))
    office.teams(bob, "Busy", "InACall")
    office.sync(at("09:59"))
    assert office.status(bob) == "busy"
    office.world.graph.set_app_roles(office.world.client_id, ROLES[:-1])
    office.world.graph.expire_access_tokens()
    report = office.sync(at("10:00"))
    assert report.exit_code == 0 and office.status(anna) == "busy"
    assert office.status(bob) == "available"  # what Teams alone set cannot be known any more
    (warning,) = report.warnings
    assert warning["id"] == "Teams presence" and "Presence.Read.All" in warning["reason"]
    assert "API permissions" in warning["reason"] and "reported once a day" in warning["reason"]
    assert office.sync(at("10:01")).warnings == []
    assert [w["id"] for w in office.sync(at("10:01", "2026-12-02")).warnings] == ["Teams presence"]
    office.world.graph.set_app_roles(office.world.client_id, ROLES)
    office.world.graph.expire_access_tokens()
    office.sync(at("10:02", "2026-12-02"))
    assert "~teams-presence" not in office.state.rows("notices", scope="calendar")


def test_presence_throttled_keeps_what_teams_set_and_the_calendar_goes_on(office: TeamsOffice) -> None:
    anna, bob = office.person("anna"), office.person("bob")
    office.teams(anna, "Busy", "InACall")
    office.sync(at("10:00"))
    office.meeting(bob, at("10:01"), at("11:00"))
    office.teams(anna, "Available")  # the call ended, but Graph cannot say so
    office.world.graph.inject(429, count=6, retry_after=1, match=lambda r: r.path == PRESENCE_PATH)
    report = office.sync(at("10:01"))
    assert report.exit_code == 0 and [w["id"] for w in report.warnings] == ["Teams presence"]
    assert (office.status(anna), office.status(bob)) == ("busy", "busy")
    office.sync(at("10:02"))
    assert office.status(anna) == "available"


def test_a_bad_presence_map_is_a_configuration_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^NEXXT365_PRESENCE_MAP: unknown Teams value 'InCall'"):
        Options.from_values({"NEXXT365_PRESENCE_MAP": "InCall=busy"}.get)
    with pytest.raises(ConfigError, match="NEXXT365_PRESENCE_MAP: unknown status 'bezig'"):
        Options.from_values({"NEXXT365_PRESENCE_MAP": "Busy=bezig"}.get)
    options = Options.from_values({"NEXXT365_TEAMS_PRESENCE": "true", "NEXXT365_PRESENCE_MAP": "InACall=none"}.get)
    assert (options.teams_presence, options.presence_map) == (True, "InACall=none")
    assert not Options.from_values({}.get).teams_presence


def test_the_permission_is_needed_only_when_the_feature_is_on() -> None:
    spec = spec_for("calendar")
    assert "Presence.Read.All" not in spec.needs(Options())
    assert "Presence.Read.All" in spec.needs(Options(teams_presence=True))


# ================================================================ the simulator, as documented


def test_get_presences_answers_availability_and_activity_by_object_id(world: World, graph: Graph) -> None:
    anna = world.graph.add_user(displayName="Anna", mail="anna@contoso.nl", userPrincipalName="anna@contoso.nl")
    world.graph.set_presence(anna, "Busy", "InACall")
    unknown = "00000000-0000-0000-0000-000000000001"
    got = get_presences(graph, [anna, unknown])
    assert got[anna.lower()] == {"id": anna, "availability": "Busy", "activity": "InACall"}
    assert (got[unknown]["availability"], got[unknown]["activity"]) == ("PresenceUnknown", "PresenceUnknown")


def test_get_presences_splits_at_650_ids_and_the_simulator_refuses_more(world: World, graph: Graph) -> None:
    ids = [f"00000000-0000-0000-0000-{n:012d}" for n in range(PRESENCE_IDS_LIMIT + 1)]
    assert len(get_presences(graph, ids)) == PRESENCE_IDS_LIMIT + 1
    assert len(world.graph.requests_to(lambda r: r.path == PRESENCE_PATH)) == 2
    with pytest.raises(GraphItemError, match="650"):
        graph.request("POST", "/communications/getPresencesByUserId", body={"ids": ids})


def test_get_presences_without_the_permission_names_it(world: World, graph: Graph) -> None:
    world.graph.set_app_roles(world.client_id, ROLES[:-1])
    with pytest.raises(ConsentError, match=r"Presence\.Read\.All") as err:
        get_presences(graph, ["00000000-0000-0000-0000-000000000001"])
    assert err.value.permission == "Presence.Read.All"


def test_get_presences_is_throttled_at_the_documented_rate_with_retry_after(world: World, graph: Graph,
                                                                            waits: list[float]) -> None:
    world.graph.presence_rate_limit = 2
    ids = ["00000000-0000-0000-0000-000000000001"]
    get_presences(graph, ids)
    get_presences(graph, ids)
    with pytest.raises(GraphUnavailable):
        get_presences(graph, ids)
    assert len(world.graph.requests_to(lambda r: r.path == PRESENCE_PATH and r.status == 429)) == 6  # with its retries
    assert world.graph.counts["presenceThrottled"] == 6 and waits == [1.0] * 5  # Retry-After honoured


def test_doctor_checks_presence_read_all_only_when_the_feature_is_on(world: World, store: Store) -> None:
    from shared.doctor import run_doctor

    def presence_checks(tenant: Any) -> list[Any]:
        return [c for c in run_doctor(tenant, store, verify=world.verify) if "Presence.Read.All" in c.name]

    assert presence_checks(world.tenant) == []
    (missing,) = presence_checks(world.tenant_with(teams_presence=True))
    assert missing.status == "FAIL" and "API permissions" in missing.detail and "NEXXT365_TEAMS_PRESENCE" in missing.detail
    world.graph.set_app_roles(world.client_id, ROLES)
    (granted,) = presence_checks(world.tenant_with(teams_presence=True))
    assert granted.status == "OK"
