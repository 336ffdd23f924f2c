"""`nexxt365 sync users`, `report unlinked` and `link --csv` as an administrator runs them, with their exit codes.

The command reads the same app settings as the function app (here: the
sandbox world's) and keeps state in Azurite under the default table prefix;
every world is a new tenant, so tests never share a partition.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from shared.clearvox import ClearVox
from shared.sandbox.azurite import Azurite
from shared.sandbox.world import World
from shared.state import Store
from shared.sync.users.linking import CSV_COLUMNS
from shared.sync.users.source import CURSOR
from tests.integration.cli_run import nexxt365

pytestmark = pytest.mark.integration


def entra(world: World, name: str, mail: str, **props: Any) -> str:
    first, _, last = name.partition(" ")
    return world.graph.add_user(displayName=name, givenName=first, surname=last, mail=mail, **props)


def cv_user(world: World, user_id: str) -> dict[str, Any]:
    with world.clearvox.lock:
        return dict(world.clearvox.users[user_id])


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_sync_users_json_prints_one_object_with_the_report_keys(world: World, azurite: Azurite) -> None:
    jan = entra(world, "Jan de Vries", "jan@contoso.nl")
    guest = entra(world, "Gast Extern", "gast@partner.nl", userType="Guest")
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    existing = world.clearvox.add_user(first_name="Piet", last_name="Puk", email="piet@contoso.nl")

    code, out = nexxt365(world, azurite, "sync", "users", "--json")

    assert code == 0
    doc = json.loads(out)
    assert doc["sync"] == "users" and doc["created"] == 1 and doc["updated"] == 0 and doc["linked"] == 0
    assert {s["id"] for s in doc["skipped"]} == {guest, piet} and doc["failed"] == []
    assert doc["unlinked"] == [{"cv_user_id": existing["id"], "email": "piet@contoso.nl", "display_name": "Piet Puk",
                                "object_id": piet}]
    assert doc["held"] == [] and doc["conflicts"] == []
    assert jan in {u["external_application_id"] for u in world.clearvox.users.values()}


def test_sync_users_exits_1_when_an_item_failed_and_the_run_went_on(world: World, azurite: Azurite) -> None:
    entra(world, "Jan de Vries", "jan@contoso.nl")
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    world.clearvox.inject(422, count=1, match=lambda r: r.method == "POST" and b"piet@" in r.body,
                          body={"error": {"code": "validation_failed", "message": "invalid",
                                          "fields": {"first_name": "is reserved"}}})
    code, out = nexxt365(world, azurite, "sync", "users", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["created"] == 1
    assert doc["failed"][0]["id"] == piet and "first_name: is reserved" in doc["failed"][0]["reason"]


def test_sync_users_exits_2_naming_the_missing_permission_for_the_users_group(world: World, azurite: Azurite) -> None:
    jan = entra(world, "Jan de Vries", "jan@contoso.nl")
    group = world.graph.add_group(members=[jan])
    code, out = nexxt365(world, azurite, "sync", "users", "--json", NEXXT365_USERS_GROUP=group)
    assert code == 2 and "GroupMember.Read.All" in json.loads(out)["error"]


def test_sync_users_dry_run_prints_the_plan_and_writes_nothing(world: World, azurite: Azurite) -> None:
    entra(world, "Jan de Vries", "jan@contoso.nl")
    code, out = nexxt365(world, azurite, "sync", "users", "--dry-run")
    assert code == 0
    assert "Users plan (full round): 1 to create" in out and "+ Jan de Vries <jan@contoso.nl>" in out
    assert "dry run: nothing written" in out
    assert world.clearvox.users == {} and sum(world.clearvox.writes.values()) == 0
    code, out = nexxt365(world, azurite, "sync", "users", "--json")
    assert json.loads(out)["created"] == 1  # the dry run stored no cursor: this is still the first, full round


def test_sync_users_user_explains_one_user_and_leaves_the_delta_link(world: World, azurite: Azurite) -> None:
    entra(world, "Jan de Vries", "jan@contoso.nl")
    nexxt365(world, azurite, "sync", "users")
    state = Store(azurite.connection_string).for_tenant(world.tenant.key)
    before = state.cursor(CURSOR)
    assert before is not None
    guest = entra(world, "Gast Extern", "gast@partner.nl", userType="Guest")

    code, out = nexxt365(world, azurite, "sync", "users", "--user", guest)

    assert code == 0
    assert f"Object-ID {guest}" in out and "Eligible: no - guest user" in out
    assert (state.cursor(CURSOR) or {}).get("delta_link") == before["delta_link"]


def test_report_unlinked_csv_then_link_csv_links_the_reviewed_rows(world: World, azurite: Azurite, tmp_path: Path) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl", jobTitle="Inkoop")
    anna = entra(world, "Anna Berg", "anna@contoso.nl")
    p_cv = world.clearvox.add_user(first_name="P", last_name="Puk", email="Piet@contoso.nl")
    a_cv = world.clearvox.add_user(first_name="Anna", last_name="Berg", email="anna@contoso.nl")
    nexxt365(world, azurite, "sync", "users")

    code, report = nexxt365(world, azurite, "report", "unlinked", "--csv")
    assert code == 0
    assert report.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert read_csv(report) == [
        {"clearvox_user_id": a_cv["id"], "email": "anna@contoso.nl", "entra_display_name": "Anna Berg", "object_id": anna},
        {"clearvox_user_id": p_cv["id"], "email": "piet@contoso.nl", "entra_display_name": "Piet Puk", "object_id": piet},
    ]
    reviewed = tmp_path / "unlinked.csv"
    reviewed.write_text(report, encoding="utf-8")

    code, out = nexxt365(world, azurite, "link", "--csv", str(reviewed))

    assert code == 0, out
    assert out.count(": linked") == 2
    assert cv_user(world, p_cv["id"])["external_application_id"] == piet
    assert cv_user(world, a_cv["id"])["external_application_id"] == anna

    code, out = nexxt365(world, azurite, "sync", "users", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["linked"] == 2 and doc["unlinked"] == [] and doc["skipped"] == []
    assert cv_user(world, p_cv["id"])["first_name"] == "Piet" and cv_user(world, p_cv["id"])["job_title"] == "Inkoop"
    assert nexxt365(world, azurite, "report", "unlinked", "--csv")[1].splitlines() == [",".join(CSV_COLUMNS)]
    assert "already linked" in nexxt365(world, azurite, "link", "--csv", str(reviewed))[1]


def test_link_checks_each_row_again_and_exits_1_for_what_it_refused(world: World, azurite: Azurite, tmp_path: Path) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    anna = entra(world, "Anna Berg", "anna@contoso.nl")
    p_cv = world.clearvox.add_user(first_name="Piet", last_name="Puk", email="piet@contoso.nl")
    a_cv = world.clearvox.add_user(first_name="Anna", last_name="Berg", email="anna@contoso.nl")
    nexxt365(world, azurite, "sync", "users")
    reviewed = tmp_path / "unlinked.csv"
    reviewed.write_text(nexxt365(world, azurite, "report", "unlinked", "--csv")[1], encoding="utf-8")
    with ClearVox(world.clearvox.url, world.clearvox.api_key, world.clearvox.account_id, verify=world.verify) as admin:
        admin.update_user(a_cv["id"], {"email": "anna.berg@contoso.nl"})  # changed since the review

    code, out = nexxt365(world, azurite, "link", "--csv", str(reviewed))

    assert code == 1
    assert f"Object-ID {piet}: linked" in out
    assert f"Object-ID {anna}: not linked: the ClearVox user's email is now anna.berg@contoso.nl" in out
    assert cv_user(world, p_cv["id"])["external_application_id"] == piet
    assert cv_user(world, a_cv["id"])["external_application_id"] is None


def test_link_refuses_a_file_that_is_not_the_report(world: World, azurite: Azurite, tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("name,id\nJan,1\n", encoding="utf-8")
    code, out = nexxt365(world, azurite, "link", "--csv", str(other))
    assert code == 2 and "missing column(s) clearvox_user_id, email, object_id" in out
    code, out = nexxt365(world, azurite, "link", "--csv", str(tmp_path / "missing.csv"))
    assert code == 2 and "cannot be read" in out


def test_report_unlinked_without_csv_is_a_table_with_what_to_do(world: World, azurite: Azurite) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    p_cv = world.clearvox.add_user(first_name="Piet", last_name="Puk", email="piet@contoso.nl")
    code, out = nexxt365(world, azurite, "report", "unlinked")
    assert code == 0 and "No users wait for a link" in out
    nexxt365(world, azurite, "sync", "users")
    code, out = nexxt365(world, azurite, "report", "unlinked")
    assert code == 0 and 'into "Extern toepassing ID"' in out
    assert p_cv["id"] in out and piet in out and "Piet Puk" in out
