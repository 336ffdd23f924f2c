"""The contacts sync end to end: Graph and ClearVox simulators over HTTPS, state in Azurite.

Each test is one behaviour of the contacts issue, seen as an administrator sees
it: what ends up in ClearVox, what the run reports, and what it costs.
Linked users are seeded the way the users sync leaves them: a ClearVox user
carrying the Entra object id and a `links` row with status "linked".
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest

from shared import cli, runner
from shared.errors import EXIT_CONFIG, EXIT_ITEM_FAILURES, EXIT_OK
from shared.report import RunReport
from shared.sandbox.azurite import Azurite
from shared.sandbox.server import Request
from shared.sandbox.world import World
from shared.settings import Settings
from shared.state import Store
from shared.sync import base
from shared.sync.contacts import SPEC
from shared.sync.contacts.cursors import CURSOR_SCOPE
from shared.sync.contacts.rules import REASON_PUBLIC_KEPT
from shared.sync.users.rules import Link

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Person:
    """A user in Microsoft 365 and in ClearVox."""

    oid: str
    cv_id: str


_names = itertools.count(1)


def person(world: World, store: Store, *, status: str = "linked", mailbox: bool = True, in_scope: bool = True,
           active: bool = True) -> Person:
    """An Entra user with a ClearVox user and the links row the users sync writes for them."""
    n = next(_names)
    email = f"user{n}@contoso.nl"
    oid = world.graph.add_user(displayName=f"User {n}", givenName="User", surname=str(n), mail=email,
                               has_mailbox=mailbox, mailbox_in_scope=in_scope)
    cv = world.clearvox.add_user(email=email, first_name="User", last_name=str(n), external_application_id=oid,
                                 active=active)
    link = Link(oid, cv["id"], email, f"User {n}", status)  # type: ignore[arg-type]
    store.for_tenant(world.tenant.key).upsert("links", {oid: link.to_row()})
    return Person(oid, str(cv["id"]))


def contact(world: World, who: Person, folder: str | None = None, n: int = 0, **props: Any) -> str:
    """An Outlook contact with a dialable Dutch number unless told otherwise."""
    fields: dict[str, Any] = {"displayName": f"Relatie {n}", "businessPhones": [f"020 555 {1000 + n}"]}
    fields.update(props)
    return world.graph.add_contact(who.oid, folder, **fields)


def sync(world: World, store: Store, **kwargs: Any) -> RunReport:
    tenant = kwargs.pop("tenant", world.tenant)
    return runner.run("contacts", tenant, store, verify=world.verify, **kwargs)


def in_clearvox(world: World, who: Person) -> dict[str, dict[str, Any]]:
    """The user's ClearVox contacts that came from Outlook, by Graph id (asserting there is one per id)."""
    synced = [c for c in world.clearvox.contacts_of(who.cv_id) if c["external_id"]]
    ids = [c["external_id"] for c in synced]
    assert len(ids) == len(set(ids)), f"duplicate contacts in ClearVox: {sorted(ids)}"
    return {c["external_id"]: c for c in synced}


def writes(world: World) -> int:
    return sum(world.clearvox.writes.values())


def reasons(report: RunReport, key: str = "skipped") -> list[str]:
    return [item["reason"] for item in getattr(report, key)]


def posts_after(n: int) -> Callable[[Request], bool]:
    """Match ClearVox contact creates after the first `n`."""
    seen = itertools.count()
    return lambda r: r.method == "POST" and r.path.endswith("/contacts") and next(seen) >= n


# --------------------------------------------------------------------------- whose and which


def test_personal_contacts_in_every_folder_become_private_contacts_of_the_linked_user(world: World, store: Store) -> None:
    anna = person(world, store)
    jan = contact(world, anna, displayName="Jan Jansen", givenName="Jan", surname="Jansen", companyName="Jansen BV",
                  jobTitle="Directeur", emailAddresses=[{"address": "jan@jansen.nl"}],
                  businessPhones=["020 123 4567"], mobilePhone="+31 20 123 4567", homePhones=["06-12345678"])
    klanten = world.graph.add_contact_folder(anna.oid, "Klanten")
    noord = world.graph.add_contact_folder(anna.oid, "Noord", parent_id=klanten)
    in_sub = contact(world, anna, noord, displayName="", givenName="Piet", surname="Klant", mobilePhone="0612345679")
    in_klanten = contact(world, anna, klanten, displayName="", companyName="Grote Klant N.V.",
                         businessPhones=["+32 2 555 12 34", "bel mij"])
    nobody = contact(world, anna, displayName="Leverancier", businessPhones=[], companyName="Leverancier B.V.")

    report = sync(world, store)

    assert report.exit_code == EXIT_OK and report.created == 3
    synced = in_clearvox(world, anna)
    assert set(synced) == {jan, in_sub, in_klanten}
    first = synced[jan]
    assert first["owner_user_id"] == anna.cv_id and first["visibility"] == "private"
    assert (first["display_name"], first["first_name"], first["last_name"], first["company"], first["job_title"]) == (
        "Jan Jansen", "Jan", "Jansen", "Jansen BV", "Directeur")
    assert first["emails"] == ["jan@jansen.nl"]
    # "020 123 4567" and "+31 20 123 4567" are one number; normalised to E.164 in the default region NL
    assert first["phone_numbers"] == [{"type": "work", "number": "+31201234567"},
                                      {"type": "home", "number": "+31612345678"}]
    assert synced[in_sub]["display_name"] == "Piet Klant"
    assert synced[in_klanten]["display_name"] == "Grote Klant N.V."
    assert {"id": nobody, "reason": "no usable phone number (Leverancier)"} in report.skipped
    assert any("bel mij" in w["reason"] for w in report.warnings)  # the unreadable number is dropped and reported
    assert all("visibility" not in (w.body or {}) for w in world.clearvox.write_log)


def test_only_linked_users_with_an_active_clearvox_user_are_synced(world: World, store: Store) -> None:
    linked = person(world, store)
    waiting = person(world, store, status="unlinked")
    conflict = person(world, store, status="conflict")
    inactive = person(world, store, active=False)
    for who in (linked, waiting, conflict, inactive):
        contact(world, who)

    report = sync(world, store)

    assert len(in_clearvox(world, linked)) == 1
    assert [in_clearvox(world, w) for w in (waiting, conflict, inactive)] == [{}, {}, {}]
    assert any(s["id"] == inactive.cv_id and "inactive" in s["reason"] for s in report.skipped)
    assert report.exit_code == EXIT_OK


def test_a_run_without_changes_costs_one_batch_per_twenty_folders_and_nothing_in_clearvox(world: World, store: Store) -> None:
    people = [person(world, store) for _ in range(21)]
    for i, who in enumerate(people):
        contact(world, who, n=i)
    assert sync(world, store).created == 21
    world.graph.clear_log()
    world.clearvox.clear_log()

    report = sync(world, store)

    graph_calls = world.graph.requests_to(lambda r: "/oauth2/" not in r.path and "openid" not in r.path)
    assert [r.path for r in graph_calls] == ["/v1.0/$batch", "/v1.0/$batch"]  # ceil(21 / 20): only the delta rounds
    assert world.clearvox.requests_to() == []
    assert report.exit_code == EXIT_OK and report.created == report.updated == report.deleted == 0


def test_each_delta_round_asks_for_immutable_ids(world: World, store: Store) -> None:
    anna = person(world, store)
    contact(world, anna)
    sync(world, store)
    world.graph.clear_log()
    world.graph.batch_log.clear()

    sync(world, store)

    deltas = [r for r in world.graph.batch_log if r.path.endswith("/contacts/delta")]
    assert deltas and all("$deltatoken" in r.query for r in deltas)


# --------------------------------------------------------------------------- changes


def test_an_outlook_edit_patches_only_the_changed_fields_and_an_identical_one_writes_nothing(world: World, store: Store) -> None:
    anna = person(world, store)
    jan = contact(world, anna, displayName="Jan", jobTitle="Inkoper")
    sync(world, store)
    world.clearvox.write_log.clear()

    world.graph.update_contact(jan, jobTitle="Directeur")
    assert sync(world, store).updated == 1
    world.graph.update_contact(jan, jobTitle="Directeur")  # touched, same content
    again = sync(world, store)

    assert [(w.method, w.body) for w in world.clearvox.write_log] == [("PATCH", {"job_title": "Directeur"})]
    assert again.updated == 0 and again.unchanged == 1


def test_a_contact_deleted_in_outlook_is_deleted_unless_the_user_made_it_public(world: World, store: Store) -> None:
    anna = person(world, store)
    private = contact(world, anna, n=1)
    public = contact(world, anna, n=2, displayName="Installateur")
    sync(world, store)
    world.clearvox.make_contact_public(in_clearvox(world, anna)[public]["id"])

    world.graph.delete_contact(private)
    world.graph.delete_contact(public)
    report = sync(world, store)

    assert set(in_clearvox(world, anna)) == {public}
    assert in_clearvox(world, anna)[public]["visibility"] == "public"
    assert report.deleted == 1 and report.extra["kept_public"] == 1
    assert {"id": public, "reason": f"{REASON_PUBLIC_KEPT}: deleted in Outlook (Installateur)"} in report.skipped
    assert sync(world, store).skipped == []  # reported once: the contact is no longer synced


def test_contacts_people_created_in_clearvox_are_never_changed_or_deleted(world: World, store: Store) -> None:
    anna = person(world, store)
    own = world.clearvox.add_contact(anna.cv_id, display_name="Eigen Relatie",
                                     phone_numbers=[{"type": "work", "number": "+31301234567"}])
    synced = contact(world, anna)
    sync(world, store)
    world.graph.delete_contact(synced)
    sync(world, store)
    later = datetime.now(UTC) + timedelta(hours=30)  # the full reconcile lists and compares everything

    sync(world, store, at=later)

    assert world.clearvox.contacts_of(anna.cv_id) == [own]
    assert not [w for w in world.clearvox.write_log if w.path.endswith(f"/contacts/{own['id']}")]


def test_a_removed_folder_is_all_of_its_contacts_deleted(world: World, store: Store) -> None:
    anna = person(world, store)
    keep = contact(world, anna)
    folder = world.graph.add_contact_folder(anna.oid, "Oud")
    sub = world.graph.add_contact_folder(anna.oid, "Ouder", parent_id=folder)
    contact(world, anna, folder, n=1)
    contact(world, anna, sub, n=2)
    assert sync(world, store).created == 3

    world.graph.delete_contact_folder(folder)
    report = sync(world, store)

    assert set(in_clearvox(world, anna)) == {keep}
    assert report.deleted == 2 and report.exit_code == EXIT_OK
    assert sync(world, store).deleted == 0


def test_folders_are_discovered_with_the_full_reconcile_not_on_every_run(world: World, store: Store) -> None:
    anna = person(world, store)
    contact(world, anna)
    sync(world, store)
    new = world.graph.add_contact_folder(anna.oid, "Nieuw")
    later = contact(world, anna, new, n=5)
    world.graph.batch_log.clear()

    sync(world, store)
    assert not [r for r in world.graph.batch_log if "contactFolders" in r.path and "/contacts/" not in r.path]
    assert later not in in_clearvox(world, anna)

    report = sync(world, store, at=datetime.now(UTC) + timedelta(hours=25))
    assert later in in_clearvox(world, anna) and report.created == 1


# --------------------------------------------------------------------------- no duplicates, ever


def test_an_expired_delta_token_is_a_full_round_reconciled_without_duplicates(world: World, store: Store) -> None:
    anna = person(world, store)
    ids = [contact(world, anna, n=i) for i in range(4)]
    folder = world.graph.add_contact_folder(anna.oid, "Werk")
    ids.append(contact(world, anna, folder, n=9))
    sync(world, store)
    world.graph.expire_delta_tokens(users=False, contacts=True)
    world.graph.update_contact(ids[0], displayName="Hernoemd")
    world.graph.delete_contact(ids[1])

    report = sync(world, store)

    synced = in_clearvox(world, anna)
    assert set(synced) == set(ids) - {ids[1]} and synced[ids[0]]["display_name"] == "Hernoemd"
    assert (report.created, report.updated, report.deleted, report.failed) == (0, 1, 1, [])
    assert sync(world, store).graph_requests <= 3  # new tokens stored: token, openid, one batch


def test_a_lost_contactmap_is_reconciled_by_external_id(world: World, store: Store) -> None:
    anna = person(world, store)
    ids = [contact(world, anna, n=i) for i in range(3)]
    sync(world, store)
    state = store.for_tenant(world.tenant.key)
    state.delete("contactmap", list(state.rows("contactmap", anna.cv_id)), anna.cv_id)
    world.graph.update_contact(ids[0], displayName="Nieuwe Naam")
    world.graph.delete_contact(ids[1])
    added = contact(world, anna, n=7)

    report = sync(world, store)

    synced = in_clearvox(world, anna)
    assert set(synced) == {ids[0], ids[2], added} and synced[ids[0]]["display_name"] == "Nieuwe Naam"
    assert (report.created, report.updated, report.deleted) == (1, 1, 1)
    before = writes(world)
    sync(world, store)  # the full reconcile that follows rebuilds the map without writing
    assert writes(world) == before
    assert len(state.rows("contactmap", anna.cv_id)) == 3


def test_a_crash_after_the_clearvox_writes_but_before_the_state_converges_without_duplicates(world: World, store: Store) -> None:
    anna = person(world, store)
    ids = [contact(world, anna, n=i) for i in range(5)]
    sync(world, store)
    state = store.for_tenant(world.tenant.key)  # as if the process died before writing any state
    state.delete("contactmap", list(state.rows("contactmap", anna.cv_id)), anna.cv_id)
    state.delete("cursors", list(state.rows("cursors", CURSOR_SCOPE)), CURSOR_SCOPE)
    before = writes(world)

    report = sync(world, store)

    assert set(in_clearvox(world, anna)) == set(ids)
    assert writes(world) == before and report.created == 0 and report.unchanged == 5


def test_a_run_stopped_midway_leaves_no_duplicates_and_the_next_run_finishes(world: World, store: Store) -> None:
    people = [person(world, store) for _ in range(3)]
    ids = {who: {contact(world, who, n=i) for i in range(6)} for who in people}
    world.clearvox.inject(401, count=1, match=posts_after(7))  # e.g. the API key revoked halfway

    stopped = sync(world, store)

    assert stopped.exit_code == EXIT_CONFIG and "API key" in (stopped.error or "")
    assert 0 < len(world.clearvox.contacts) < 18
    report = sync(world, store, respect_backoff=False)
    assert report.exit_code == EXIT_OK
    assert all(set(in_clearvox(world, who)) == ids[who] for who in people)


def test_throttling_in_graph_and_clearvox_mid_run_is_waited_out(world: World, store: Store) -> None:
    people = [person(world, store) for _ in range(3)]
    for who in people:
        for i in range(4):
            contact(world, who, n=i)
    world.graph.inject_batch_item(429, count=2, retry_after=1, match=lambda r: r.path.endswith("/contacts/delta"))
    world.clearvox.inject(429, count=3, retry_after=1, match=posts_after(2))

    report = sync(world, store)

    assert report.exit_code == EXIT_OK and report.created == 12 and report.retries >= 5
    assert all(len(in_clearvox(world, who)) == 4 for who in people)


def test_a_failed_item_is_retried_next_run_while_the_rest_moves_on(world: World, store: Store) -> None:
    anna = person(world, store)
    ok = contact(world, anna, n=1)
    flaky = contact(world, anna, n=2, displayName="Weigeraar")
    world.clearvox.inject(422, count=1, match=lambda r: r.method == "POST" and r.json().get("external_id") == flaky)

    first = sync(world, store)

    assert first.exit_code == EXIT_ITEM_FAILURES and first.created == 1
    assert [f["id"] for f in first.failed] == [flaky] and "Weigeraar" in first.failed[0]["reason"]
    assert set(in_clearvox(world, anna)) == {ok}
    world.graph.batch_log.clear()
    second = sync(world, store)
    assert second.exit_code == EXIT_OK and second.created == 1 and set(in_clearvox(world, anna)) == {ok, flaky}
    assert [unquote(r.path.rsplit("/", 1)[-1]) for r in world.graph.batch_log if "/delta" not in r.path] == [flaky]
    assert sync(world, store).created == 0


def test_a_run_out_of_time_stops_starting_writes_and_the_next_run_continues(
        world: World, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    anna = person(world, store)
    ids = {contact(world, anna, n=i) for i in range(3)}
    monkeypatch.setitem(base._REGISTRY, "contacts", replace(SPEC, budget=timedelta(0)))  # the Functions timeout is near

    stopped = sync(world, store)

    assert stopped.exit_code == EXIT_OK and stopped.extra["incomplete"] is True and writes(world) == 0
    assert "left for the next run" in reasons(stopped, "warnings")[0]
    monkeypatch.undo()
    assert sync(world, store).created == 3 and set(in_clearvox(world, anna)) == ids


# --------------------------------------------------------------------------- guards


def test_a_mass_deletion_is_held_and_the_next_run_holds_it_again(world: World, store: Store) -> None:
    anna = person(world, store)
    ids = [contact(world, anna, n=i) for i in range(12)]
    sync(world, store)
    for gid in ids[:11]:
        world.graph.delete_contact(gid)
    added = contact(world, anna, n=40)

    held = sync(world, store)

    assert len(in_clearvox(world, anna)) == 13 and added in in_clearvox(world, anna)  # the rest of the sync went on
    assert held.deleted == 0 and held.extra["held"] == 11 and held.exit_code == EXIT_OK
    assert any(s["id"] == anna.cv_id and "deletion of 11 of 12 synced contacts held" in s["reason"] for s in held.skipped)

    again = sync(world, store)  # seeing the same deletions again releases nothing
    assert again.deleted == 0 and again.extra["held"] == 11 and len(in_clearvox(world, anna)) == 13


def test_confirm_deletions_lets_a_held_deletion_through_at_once(world: World, store: Store) -> None:
    anna = person(world, store)
    folder = world.graph.add_contact_folder(anna.oid, "Beurs 2024")
    for i in range(11):
        contact(world, anna, folder, n=i)
    sync(world, store)
    world.graph.delete_contact_folder(folder)

    report = sync(world, store, args={"confirm_deletions": True})

    assert report.deleted == 11 and in_clearvox(world, anna) == {}


def test_an_unlinked_or_removed_user_keeps_the_synced_contacts_and_it_is_reported(world: World, store: Store) -> None:
    anna, bas = person(world, store), person(world, store)
    for who in (anna, bas):
        contact(world, who, n=1)
        contact(world, who, n=2)
    sync(world, store)
    state = store.for_tenant(world.tenant.key)
    state.upsert("links", {anna.oid: {"status": "deactivated"}})
    state.delete("links", [bas.oid])
    world.graph.delete_contact(next(iter(in_clearvox(world, anna))))

    report = sync(world, store)

    assert len(in_clearvox(world, anna)) == 2 and len(in_clearvox(world, bas)) == 2
    kept = {s["id"]: s["reason"] for s in report.skipped}
    assert "2 synced contacts kept" in kept[anna.cv_id] and "2 synced contacts kept" in kept[bas.cv_id]
    assert report.extra["retained"] == 4 and report.exit_code == EXIT_OK
    assert sync(world, store).skipped == []  # said once; the count stays in "retained"


def test_a_user_without_a_mailbox_or_out_of_scope_is_a_skip_not_a_failure_nor_a_request_per_run(
        world: World, store: Store) -> None:
    none = person(world, store, mailbox=False)
    fenced = person(world, store, in_scope=False)
    anna = person(world, store)
    contact(world, anna)

    first = sync(world, store)

    assert first.exit_code == EXIT_OK and first.created == 1
    why = {s["id"]: s["reason"] for s in first.skipped}
    assert "no Exchange Online mailbox" in why[none.oid] and "mailbox scope" in why[fenced.oid]
    world.graph.batch_log.clear()
    second = sync(world, store)
    assert second.exit_code == EXIT_OK and len(second.skipped) == 2
    assert not [r for r in world.graph.batch_log if none.oid in r.path or fenced.oid in r.path]


# --------------------------------------------------------------------------- dry run and command line


def test_dry_run_prints_the_plan_and_writes_nothing(world: World, store: Store) -> None:
    anna = person(world, store)
    contact(world, anna, displayName="Jan Jansen", businessPhones=["020 123 4567"])
    contact(world, anna, displayName="Zonder Nummer", businessPhones=[])

    report = sync(world, store, dry_run=True)

    assert writes(world) == 0 and report.created == 1
    assert "+ create  Jan Jansen (+31201234567 work)" in report.plan_text
    assert "! skip    Zonder Nummer: no usable phone number" in report.plan_text
    assert store.for_tenant(world.tenant.key).rows("cursors", CURSOR_SCOPE) == {}
    assert sync(world, store).created == 1  # the real run still has everything to do


def test_the_command_prints_one_json_object_and_exits_with_the_documented_codes(
        world: World, azurite: Azurite) -> None:
    settings = Settings(env=world.env(azurite.connection_string), local={})
    store = Store(azurite.connection_string)  # the command's own table prefix
    anna = person(world, store)
    gid = contact(world, anna, displayName="Jan")
    contact(world, anna, displayName="Geen Nummer", businessPhones=[])
    world.clearvox.inject(422, count=1, match=lambda r: r.method == "POST")

    out = io.StringIO()
    code = cli.main(["sync", "contacts", "--json"], out=out, settings=settings)

    doc = json.loads(out.getvalue())
    assert code == EXIT_ITEM_FAILURES and doc["sync"] == "contacts" and doc["exit_code"] == EXIT_ITEM_FAILURES
    assert [f["id"] for f in doc["failed"]] == [gid] and doc["created"] == 0
    assert [s["reason"] for s in doc["skipped"]] == ["no usable phone number (Geen Nummer)"]
    out = io.StringIO()
    assert cli.main(["sync", "contacts", "--json"], out=out, settings=settings) == EXIT_OK
    assert json.loads(out.getvalue())["created"] == 1
