"""The users sync against one bad record, answer or file: it fails that item only, never creates twice,
holds mass deactivations and undoes wrong ones, and keeps hostile text out of spreadsheets and terminals."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared import runner
from shared.clients import clients
from shared.report import RunReport
from shared.sandbox.azurite import Azurite
from shared.sandbox.server import Request
from shared.sandbox.world import World
from shared.settings import Tenant
from shared.state import State, Store
from shared.sync.base import SyncContext
from shared.sync.users.ledger import RETRY_SCOPE
from shared.sync.users.rules import Link
from shared.sync.users.run import BUDGET_REASON, run_users
from shared.sync.users.source import CACHE_TABLE, CURSOR
from tests.integration.cli_run import nexxt365

pytestmark = pytest.mark.integration


def entra(world: World, name: str, mail: str, **props: Any) -> str:
    first, _, last = name.partition(" ")
    return world.graph.add_user(displayName=name, givenName=first, surname=last or None, mail=mail, **props)


def sync(world: World, store: Store, tenant: Tenant | None = None, **kwargs: Any) -> RunReport:
    return runner.run("users", tenant or world.tenant, store, verify=world.verify, **kwargs)


def state(world: World, store: Store) -> State:
    return store.for_tenant(world.tenant.key)


def cv_with(world: World, email: str) -> list[dict[str, Any]]:
    with world.clearvox.lock:
        return [dict(u) for u in world.clearvox.users.values() if u["email"].lower() == email.lower()]


def cv_of(world: World, object_id: str) -> dict[str, Any]:
    with world.clearvox.lock:
        (user,) = [dict(u) for u in world.clearvox.users.values() if u["external_application_id"] == object_id]
    return user


def posts(world: World) -> list[Any]:
    return world.clearvox.requests_to(lambda r: r.method == "POST")


def next_full_round_lists_only(world: World, store: Store, keep: list[str]) -> None:
    """Graph's next full round answers with only these users (a truncated or empty answer), ending in a
    valid deltaLink; nothing changed in Entra itself."""
    st = state(world, store)
    cursor = st.cursor(CURSOR)
    assert cursor is not None
    cached = st.rows(CACHE_TABLE)
    users = [json.loads(cached[oid.lower()]["user"]) for oid in keep]
    st.clear_cursor(CURSOR)
    world.graph.inject(200, count=1, body={"value": users, "@odata.deltaLink": cursor["delta_link"]},
                       match=lambda r: r.path.endswith("/users/delta") and "$deltatoken" not in r.query)


# --------------------------------------------------------------------------- one bad user (issue 10, point 1)


def test_one_user_clearvox_always_refuses_fails_alone_and_the_run_commits_its_cursor(
        world: World, store: Store) -> None:
    oids = [entra(world, f"Medewerker {i}", f"m{i:03d}@contoso.nl") for i in range(200)]
    bad = oids[117]
    world.clearvox.inject(500, count=10_000, match=lambda r: r.method == "POST" and b"m117@" in r.body)

    first = sync(world, store)

    assert first.created == 199 and first.error is None and first.exit_code == 1
    assert [f["id"] for f in first.failed] == [bad] and "create failed" in first.failed[0]["reason"]
    assert state(world, store).cursor(CURSOR) is not None
    assert set(state(world, store).rows("retries", RETRY_SCOPE)) == {bad.lower()}

    world.clearvox.clear_log()
    again = sync(world, store)

    assert again.extra["full_round"] is False and again.created == 0
    assert [f["id"] for f in again.failed] == [bad]
    assert len(posts(world)) == 1  # only that user is tried again
    # by Object-ID and by email before the create, the create, and both look-ups again after its unclear 500
    assert len(world.clearvox.requests_to()) == 5
    assert state(world, store).rows("retries", RETRY_SCOPE)[bad.lower()]["attempts"] == 2


def test_a_retry_row_written_by_the_earlier_code_is_read_and_retried(world: World, store: Store) -> None:
    jan = entra(world, "Jan de Vries", "jan@contoso.nl")
    world.clearvox.inject(422, count=1, match=lambda r: r.method == "POST")
    sync(world, store)
    st = state(world, store)
    st.upsert("retries", {jan.lower(): {"kind": "failed", "reason": "create failed: earlier", "attempts": 3,
                                        "removed": False, "at": datetime(2026, 1, 1, tzinfo=UTC)}}, RETRY_SCOPE)

    report = sync(world, store)

    assert report.created == 1 and cv_of(world, jan)["email"] == "jan@contoso.nl"
    assert st.rows("retries", RETRY_SCOPE) == {}


def test_writes_past_the_time_budget_wait_for_the_next_run_which_goes_on_from_there(
        world: World, store: Store) -> None:
    oids = [entra(world, f"Medewerker {i}", f"m{i}@contoso.nl") for i in range(3)]
    report = RunReport("users", world.tenant.key)
    with clients(world.tenant, world.verify) as (graph, cv):
        run_users(SyncContext(world.tenant, graph, cv, state(world, store), report, deadline=time.monotonic()))

    assert report.created == 0 and {s["id"] for s in report.skipped} == set(oids)
    assert all(s["reason"] == BUDGET_REASON for s in report.skipped)
    assert state(world, store).cursor(CURSOR) is not None
    later = sync(world, store)
    assert later.extra["full_round"] is False and later.created == 3
    assert state(world, store).rows("retries", RETRY_SCOPE) == {}


# --------------------------------------------------------------------------- never create twice (point 2)


def test_a_create_whose_answer_is_lost_is_found_by_object_id_and_counts_as_created(world: World, store: Store) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    done: list[str] = []

    def created_then_gateway_timeout(req: Request) -> bool:
        if req.method != "POST" or b"piet@" not in req.body:
            return False
        if not done:  # ClearVox creates the user, the gateway in front of it answers 504
            done.append(world.clearvox.add_user(**{**json.loads(req.body), "external_application_id": piet})["id"])
        return True

    world.clearvox.inject(504, count=1, match=created_then_gateway_timeout)
    report = sync(world, store)

    assert report.failed == [] and report.error is None
    assert (report.created, report.linked) == (1, 0)
    assert [u["id"] for u in cv_with(world, "piet@contoso.nl")] == done
    world.clearvox.faults.clear()
    world.clearvox.clear_log()
    assert sync(world, store).created == 0 and posts(world) == []


def test_email_taken_for_the_user_this_run_created_counts_as_created_not_linked(world: World, store: Store) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    done: list[str] = []

    def created_by_an_earlier_attempt(req: Request) -> bool:
        if req.method == "POST" and not done:
            done.append(world.clearvox.add_user(**{**json.loads(req.body), "external_application_id": piet})["id"])
        return False  # the simulator then answers 409 email_taken itself

    world.clearvox.inject(409, count=1, match=created_by_an_earlier_attempt)
    report = sync(world, store)

    assert (report.created, report.linked, report.failed) == (1, 0, [])
    assert report.skipped == [] and report.extra["unlinked"] == []
    assert [u["id"] for u in cv_with(world, "piet@contoso.nl")] == done
    row = Link.from_row(piet, state(world, store).get("links", piet) or {})
    assert (row.status, row.cv_user_id) == ("linked", done[0])


def test_a_create_left_unknown_by_an_outage_is_adopted_by_the_next_run_not_created_again(
        world: World, store: Store) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    done: list[str] = []

    def created_then_unavailable(req: Request) -> bool:
        if done or req.method != "POST":
            return False
        done.append(world.clearvox.add_user(**{**json.loads(req.body), "external_application_id": piet})["id"])
        return True

    world.clearvox.inject(500, count=1, match=created_then_unavailable)
    world.clearvox.inject(500, count=1, match=lambda r: "external_application_id" in r.query and bool(done))
    first = sync(world, store)
    assert first.created == 0 and [f["id"] for f in first.failed] == [piet]

    world.clearvox.faults.clear()
    world.clearvox.clear_log()
    second = sync(world, store)

    assert second.failed == [] and posts(world) == []
    assert len(cv_with(world, "piet@contoso.nl")) == 1 and cv_of(world, piet)["id"] == done[0]


def test_a_create_with_an_unknown_outcome_is_looked_up_by_email_and_never_sent_again(
        world: World, store: Store) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    someone: list[str] = []

    def an_admin_created_it_meanwhile(req: Request) -> bool:
        if someone or req.method != "POST":
            return False
        someone.append(world.clearvox.add_user(first_name="Piet", last_name="Puk", email="piet@contoso.nl")["id"])
        return True

    world.clearvox.inject(500, count=1, match=an_admin_created_it_meanwhile)
    report = sync(world, store)

    assert report.failed == [] and report.created == 0
    assert [u["object_id"] for u in report.extra["unlinked"]] == [piet]
    assert [u["id"] for u in cv_with(world, "piet@contoso.nl")] == someone
    assert len(posts(world)) == 1


# --------------------------------------------------------------------------- the deactivation guard (point 4)


def test_an_empty_full_round_from_graph_deactivates_none_of_eight_linked_users(world: World, store: Store) -> None:
    tenant = world.tenant_with(on_removed="deactivate")
    oids = [entra(world, f"Medewerker {i}", f"m{i}@contoso.nl") for i in range(8)]
    sync(world, store, tenant)
    next_full_round_lists_only(world, store, [])

    empty = sync(world, store, tenant)

    assert empty.extra["full_round"] is True and empty.deactivated == 0
    assert len(empty.extra["held"]) == 8 and "8 of 8 known" in empty.extra["held"][0]["held"]
    assert all(cv_of(world, oid)["active"] for oid in oids)
    # The next run asks Graph for the held users by id: Graph lists them, so the hold is gone by itself.
    healthy = sync(world, store, tenant)
    assert healthy.deactivated == 0 and healthy.extra["held"] == []
    assert state(world, store).rows("retries", RETRY_SCOPE) == {}


def test_users_wrongly_deactivated_are_reactivated_by_the_next_run_not_the_next_full_round(
        world: World, store: Store) -> None:
    tenant = world.tenant_with(on_removed="deactivate")
    oids = [entra(world, f"Medewerker {i}", f"m{i}@contoso.nl") for i in range(8)]
    sync(world, store, tenant)
    next_full_round_lists_only(world, store, oids[2:])

    wrong = sync(world, store, tenant)
    assert wrong.deactivated == 2 and not cv_of(world, oids[0])["active"]

    healthy = sync(world, store, tenant)

    assert healthy.extra["full_round"] is False
    assert healthy.updated == 2 and cv_of(world, oids[0])["active"] and cv_of(world, oids[1])["active"]
    assert sync(world, store, tenant).updated == 0


def test_deactivations_are_capped_per_rolling_day_not_only_per_run(world: World, store: Store) -> None:
    tenant = world.tenant_with(on_removed="deactivate", max_deactivations=3)
    oids = [entra(world, f"Medewerker {i}", f"m{i:02d}@contoso.nl") for i in range(20)]
    sync(world, store, tenant)
    for oid in oids[:3]:
        world.graph.delete_user(oid)
    assert sync(world, store, tenant).deactivated == 3
    for oid in oids[3:6]:
        world.graph.delete_user(oid)

    held = sync(world, store, tenant)

    assert held.deactivated == 0 and {h["object_id"] for h in held.extra["held"]} == set(oids[3:6])
    assert "after 3 in the last 24 hours" in held.extra["held"][0]["held"]
    assert sync(world, store, tenant).deactivated == 0  # seeing it again releases nothing
    assert sync(world, store, tenant, args={"confirm_deactivations": True}).deactivated == 3


# --------------------------------------------------------------------------- CSV (point 7)


FORMULAS = ["=HYPERLINK(\"http://evil.example\",\"klik\")", "+SUM(1,2)", "-2+3+cmd|' /C calc'!A0", "@SUM(1,2)"]


def test_report_unlinked_csv_neutralises_formulas_and_link_csv_reads_them_back(
        world: World, azurite: Azurite, tmp_path: Path) -> None:
    oids = []
    for i, name in enumerate(FORMULAS):
        oids.append(world.graph.add_user(displayName=name, givenName="X", surname="Y", mail=f"f{i}@contoso.nl"))
        world.clearvox.add_user(first_name="X", last_name="Y", email=f"f{i}@contoso.nl")
    assert nexxt365(world, azurite, "sync", "users")[0] == 0

    code, text = nexxt365(world, azurite, "report", "unlinked", "--csv")

    assert code == 0
    cells = [cell for line in text.splitlines()[1:] for cell in line.split(",")]
    assert not any(cell.lstrip('"').startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells)
    assert sum("'=HYPERLINK" in line or "'+SUM" in line or "'-2+3" in line or "'@SUM" in line
               for line in text.splitlines()) == 4
    file = tmp_path / "reviewed.csv"
    file.write_text(text, encoding="utf-8")
    code, out = nexxt365(world, azurite, "link", "--csv", str(file))
    assert code == 0 and out.count(": linked") == 4
    assert all(cv_of(world, oid) for oid in oids)


def test_link_csv_accepts_the_semicolon_file_excel_saves_in_a_dutch_locale(
        world: World, azurite: Azurite, tmp_path: Path) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    existing = world.clearvox.add_user(first_name="Piet", last_name="Puk", email="piet@contoso.nl")
    nexxt365(world, azurite, "sync", "users")
    file = tmp_path / "excel.csv"
    file.write_text(f"clearvox_user_id;email;entra_display_name;object_id\r\n{existing['id']};piet@contoso.nl;"
                    f"Puk, Piet;{piet}\r\n", encoding="utf-8-sig")

    code, out = nexxt365(world, azurite, "link", "--csv", str(file))

    assert code == 0 and ": linked" in out
    assert cv_of(world, piet)["id"] == existing["id"]


# --------------------------------------------------------------------------- control characters (point 9)


HOSTILE = "Jan\x1b]0;owned\x07 de\x00 Vries\x1b[2J\nCEO"


def test_control_characters_never_reach_clearvox_or_the_terminal_and_cause_no_endless_updates(
        world: World, store: Store) -> None:
    jan = world.graph.add_user(displayName=HOSTILE, givenName="Jan\x07", surname="de\x1b[31m Vries",
                               mail="jan@contoso.nl", jobTitle="Sales\r\nmanager")
    dry = sync(world, store, dry_run=True)
    assert "\x1b" not in dry.plan_text and "\x07" not in dry.plan_text and "\x00" not in dry.plan_text

    assert sync(world, store).created == 1
    user = cv_of(world, jan)
    sent = [user[f] for f in ("display_name", "first_name", "last_name", "job_title")]
    assert not any(ch in value for value in sent for ch in "\x1b\x07\x00\n\r")
    assert user["job_title"] == "Sales  manager" or user["job_title"] == "Sales manager"

    state(world, store).set_cursor(CURSOR, "", full_at=None)  # a full round compares every field again
    world.clearvox.write_log.clear()
    assert sync(world, store).unchanged == 1 and list(world.clearvox.write_log) == []

    explained = sync(world, store, args={"user": jan}).plan_text
    assert "\x1b" not in explained and "\x07" not in explained and "\\x1b" in explained


# --------------------------------------------------------------------------- --dry-run --json (point 13)


def test_dry_run_json_has_the_plan_with_each_change_and_its_object_id(world: World, azurite: Azurite) -> None:
    jan = entra(world, "Jan de Vries", "jan@contoso.nl", jobTitle="Sales")
    assert nexxt365(world, azurite, "sync", "users")[0] == 0
    world.graph.update_user(jan, jobTitle="Inkoop")
    piet = entra(world, "Piet Puk", "piet@contoso.nl")

    code, out = nexxt365(world, azurite, "sync", "users", "--dry-run", "--json")

    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] is True
    plan = doc["plan"]
    assert plan["create"] == [{"object_id": piet, "fields": {
        "first_name": "Piet", "last_name": "Puk", "display_name": "Piet Puk", "email": "piet@contoso.nl",
        "phone_number": None, "mobile_number": None, "job_title": None, "department": None}}]
    (update,) = plan["update"]
    assert update["object_id"] == jan and update["changes"] == {"job_title": {"before": "Sales", "after": "Inkoop"}}
    assert plan["deactivate"] == plan["held"] == plan["reactivate"] == plan["link"] == []


# --------------------------------------------------------------------------- oversized values (issue 10, point 12)


def test_a_100_kb_phone_string_is_skipped_with_a_short_reason_and_the_run_stores_its_state(world: World,
                                                                                           store: Store) -> None:
    jan = entra(world, "Jan de Vries", "jan@contoso.nl", businessPhones=["+31 20 " + "1" * 100_000])
    entra(world, "Piet Puk", "piet@contoso.nl")
    report = sync(world, store)
    assert report.error is None and report.created == 2, report.error
    assert state(world, store).cursor(CURSOR) is not None  # the state rows of the run were written
    assert all(len(json.dumps(item)) < 2_000 for item in report.to_json()["warnings"] + report.to_json()["skipped"])
    assert cv_of(world, jan)["phone_number"] is None
