"""The contacts sync under faults: unknown create outcomes, a lost lease, bad Graph answers, odd emails.

Each test reproduces one way the sync used to lose or duplicate contacts (issue 10) against the
simulators over HTTPS and Azurite, and states what must hold instead.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from shared import runner
from shared.clients import clearvox_client
from shared.errors import EXIT_OK
from shared.sandbox.server import Request, Response
from shared.sandbox.world import World
from shared.settings import Tenant
from shared.state import LeaseKeeper, Store
from shared.sync.contacts.cursors import CURSOR_SCOPE
from tests.integration.test_contacts_sync import contact, in_clearvox, person, sync

pytestmark = pytest.mark.integration


def _is_create(r: Request) -> bool:
    return r.method == "POST" and r.path.endswith("/contacts")


def _one_at_a_time(world: World) -> Tenant:
    return replace(world.tenant, options=replace(world.tenant.options, clearvox_concurrency=1))


def _removed_answer(world: World, store: Store, ids: list[str]) -> dict[str, Any]:
    """A delta answer that says these contacts were removed, though Outlook still has them."""
    rows = store.for_tenant(world.tenant.key).rows("cursors", CURSOR_SCOPE)
    link = next(str(r["delta_link"]) for r in rows.values() if r.get("kind") == "folder")
    return {"value": [{"id": gid, "@removed": {"reason": "deleted"}} for gid in ids], "@odata.deltaLink": link}


# --------------------------------------------------------------------------- point 2: unknown create outcome


def test_a_create_answered_504_after_it_was_made_is_looked_up_never_created_twice(world: World, store: Store) -> None:
    anna = person(world, store)
    ids = {contact(world, anna, n=i) for i in range(20)}
    gateway = Response(504, {"error": {"code": "gateway_timeout", "message": "upstream timed out"}})
    world.clearvox.rewrite(lambda resp: gateway, count=10**6, match=_is_create)  # every create happens, then 504

    first = sync(world, store)

    assert first.created == 0 and first.exit_code != EXIT_OK  # nothing claimed: the outcome is unknown
    assert all("looked up by external_id" in f["reason"] for f in first.failed)
    for _ in range(4):
        if not sync(world, store).failed:
            break
    assert set(in_clearvox(world, anna)) == ids  # in_clearvox asserts one contact per external_id
    assert len(world.clearvox.contacts_of(anna.cv_id)) == 20


# --------------------------------------------------------------------------- point 3: lease taken over


def test_a_run_whose_lease_is_taken_over_midway_stops_writing_and_the_next_run_converges(
        world: World, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    anna = person(world, store)
    ids = {contact(world, anna, n=i) for i in range(10)}
    keepers: list[LeaseKeeper] = []

    class Kept(LeaseKeeper):
        def __enter__(self) -> LeaseKeeper:
            keepers.append(self)
            return super().__enter__()

    monkeypatch.setattr(runner, "LeaseKeeper", Kept)
    state = store.for_tenant(world.tenant.key)
    posts = itertools.count(1)

    def take_over(r: Request) -> bool:
        if _is_create(r) and next(posts) == 3:  # another run takes the lease over while the third create is made
            state.delete("leases", ["contacts"], "")
            assert state.acquire_lease("contacts", keepers[0].duration) is not None
            keepers[0].renew()  # the heartbeat's next beat finds it gone
        return False

    world.clearvox.inject(500, count=1, match=take_over)

    stopped = sync(world, store, tenant=_one_at_a_time(world))

    assert "stopped writing" in (stopped.error or "")
    assert len([w for w in world.clearvox.write_log if w.method == "POST"]) == 3  # no create after the take-over
    state.delete("leases", ["contacts"], "")  # the other run finished
    assert sync(world, store).exit_code == EXIT_OK
    assert set(in_clearvox(world, anna)) == ids


# --------------------------------------------------------------------------- point 4: the deletion hold


def test_a_held_deletion_is_not_released_by_seeing_it_again_only_by_confirming(world: World, store: Store) -> None:
    anna = person(world, store)
    ids = [contact(world, anna, n=i) for i in range(40)]
    sync(world, store)
    for gid in ids:
        world.graph.delete_contact(gid)

    first, second = sync(world, store), sync(world, store)

    assert first.deleted == second.deleted == 0 and second.extra["held"] == 40
    assert len(in_clearvox(world, anna)) == 40
    assert any("--confirm-deletions" in s["reason"] for s in second.skipped)
    assert sync(world, store, args={"confirm_deletions": True}).deleted == 40
    assert in_clearvox(world, anna) == {}


def test_a_user_with_few_contacts_is_held_too(world: World, store: Store) -> None:
    anna = person(world, store)
    ids = [contact(world, anna, n=i) for i in range(8)]
    sync(world, store)
    for gid in ids[:6]:
        world.graph.delete_contact(gid)

    held = sync(world, store)

    assert held.deleted == 0 and held.extra["held"] == 6 and len(in_clearvox(world, anna)) == 8


def test_a_hold_is_released_when_outlook_no_longer_reports_the_deletions(world: World, store: Store) -> None:
    anna = person(world, store)
    ids = [contact(world, anna, n=i) for i in range(20)]
    sync(world, store)
    world.graph.inject_batch_item(200, body=_removed_answer(world, store, ids[:15]),
                                  match=lambda r: r.path.endswith("/contacts/delta"))

    held = sync(world, store)
    after = sync(world, store)  # the same delta link, now answered truthfully

    assert held.extra["held"] == 15 and held.deleted == 0
    assert after.deleted == 0 and after.extra["held"] == 0 and set(in_clearvox(world, anna)) == set(ids)


def test_contacts_deleted_on_a_bad_answer_are_restored_by_the_next_run(world: World, store: Store) -> None:
    anna = person(world, store)
    ids = [contact(world, anna, n=i) for i in range(20)]
    sync(world, store)
    world.graph.inject_batch_item(200, body=_removed_answer(world, store, ids[:2]),
                                  match=lambda r: r.path.endswith("/contacts/delta"))
    assert sync(world, store).deleted == 2  # below the hold: gone from ClearVox

    restored = sync(world, store)  # no full reconcile due: the deleted ones are looked at again

    assert restored.created == 2 and set(in_clearvox(world, anna)) == set(ids)
    assert sync(world, store).created == 0


# --------------------------------------------------------------------------- stored rows of the previous version


def test_a_retry_row_in_the_stored_format_of_the_previous_version_is_retried(world: World, store: Store) -> None:
    anna = person(world, store)
    contact(world, anna, n=1)
    later = contact(world, anna, n=2)
    sync(world, store)
    state = store.for_tenant(world.tenant.key)
    with clearvox_client(world.tenant, world.verify) as cv:  # as if its create had failed
        cv.delete_contact(in_clearvox(world, anna)[later]["id"])
    state.delete("contactmap", [later], anna.cv_id)
    state.replace("retries", {later: {  # the row as the previous version wrote it for a failed create
        "graph_id": later, "action": "upsert", "folder_id": world.graph.default_contact_folder(anna.oid),
        "reason": "ClearVox answered 500", "attempts": 1, "at": datetime.now(UTC)}}, f"contacts|{anna.cv_id}")
    state.upsert("cursors", {anna.oid: {"retries": 1}}, CURSOR_SCOPE)

    report = sync(world, store)

    assert report.created == 1 and later in in_clearvox(world, anna)
    assert state.rows("retries", f"contacts|{anna.cv_id}") == {}


# --------------------------------------------------------------------------- point 9: emails


def test_invalid_contact_emails_are_dropped_with_a_warning(world: World, store: Store) -> None:
    anna = person(world, store)
    gid = contact(world, anna, displayName="Jan", emailAddresses=[
        {"address": "a@b"}, {"address": "@@"}, {"address": "jan@jansen.nl"}])

    report = sync(world, store)

    assert in_clearvox(world, anna)[gid]["emails"] == ["jan@jansen.nl"]
    notes = [w["reason"] for w in report.warnings if w["id"] == gid]
    assert any("'a@b'" in n for n in notes) and any("'@@'" in n for n in notes)


# --------------------------------------------------------------------------- point 13: the plan


def test_dry_run_json_holds_the_plan_per_owner(world: World, store: Store) -> None:
    anna = person(world, store)
    keep = contact(world, anna, n=1, jobTitle="Inkoper")
    gone = contact(world, anna, n=2)
    sync(world, store)
    world.graph.update_contact(keep, jobTitle="Directeur")
    world.graph.delete_contact(gone)
    new = contact(world, anna, n=3, displayName="Nieuw")

    report = sync(world, store, dry_run=True)

    doc = json.loads(json.dumps(report.to_json()))
    plan = {p["clearvox_user"]: p for p in doc["plan"]}[anna.cv_id]
    assert [(c["graph_contact_id"], c["fields"]["display_name"]) for c in plan["create"]] == [(new, "Nieuw")]
    assert plan["update"] == [{"graph_contact_id": keep, "clearvox_contact_id": in_clearvox(world, anna)[keep]["id"],
                               "changes": {"job_title": {"before": "Inkoper", "after": "Directeur"}}}]
    assert [d["graph_contact_id"] for d in plan["delete"]] == [gone] and plan["held"] == []
    assert report.plan_text.count("\n") >= 3 and "Nieuw" in report.plan_text
