"""The company phone book (issue 15): contacts of shared mailboxes become ClearVox company contacts.

Shared mailboxes are Entra users without a licence, as Exchange Online makes them; the
setting NEXXT365_COMPANY_CONTACTS names them. Simulators over HTTPS, state in Azurite.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.clearvox import CONTACT_FIELDS, PhoneNumber
from shared.clients import clearvox_client, clients
from shared.errors import EXIT_OK
from shared.report import RunReport
from shared.sandbox.world import World
from shared.settings import Tenant
from shared.state import Store
from shared.sync.contacts.company import REASON_ALIAS, company_mailbox_checks, cursor_key
from shared.sync.contacts.cursors import CURSOR_SCOPE
from tests.integration.test_contacts_sync import contact, in_clearvox, person, sync

pytestmark = pytest.mark.integration


def shared_mailbox(world: World, address: str, **kwargs: Any) -> str:
    """A shared mailbox: a user without sign-in whose mailbox Exchange Online keeps."""
    return world.graph.add_user(displayName=address.split("@")[0].title(), mail=address, userPrincipalName=address,
                                accountEnabled=False, **kwargs)


def company(world: World, *mailboxes: str) -> Tenant:
    return replace(world.tenant, options=replace(world.tenant.options, company_contacts=mailboxes))


def add(world: World, mailbox: str, folder: str | None = None, n: int = 0, **props: Any) -> str:
    fields: dict[str, Any] = {"displayName": f"Leverancier {n}", "businessPhones": [f"030 555 {1000 + n}"]}
    fields.update(props)
    return world.graph.add_contact(mailbox, folder, **fields)


def book(world: World) -> dict[str, dict[str, Any]]:
    """The company contacts that came from Outlook, by Graph id (asserting one per id)."""
    synced = [c for c in world.clearvox.company_contacts() if c["external_id"]]
    ids = [c["external_id"] for c in synced]
    assert len(ids) == len(set(ids)), f"duplicate company contacts: {sorted(ids)}"
    return {c["external_id"]: c for c in synced}


def run(world: World, store: Store, tenant: Tenant, **kwargs: Any) -> RunReport:
    return sync(world, store, tenant=tenant, **kwargs)


def test_shared_mailbox_contacts_in_every_folder_become_public_company_contacts(world: World, store: Store) -> None:
    receptie = shared_mailbox(world, "receptie@contoso.nl")
    anna = person(world, store)
    own = contact(world, anna, n=1)
    main = add(world, receptie, displayName="Loodgieter Jansen", companyName="Jansen BV",
               emailAddresses=[{"address": "info@jansen.nl"}], businessPhones=["020 123 4567"])
    sub = world.graph.add_contact_folder(receptie, "Leveranciers")
    deeper = add(world, receptie, world.graph.add_contact_folder(receptie, "Noord", parent_id=sub), n=2)
    nobody = add(world, receptie, displayName="Alleen Post", businessPhones=[])
    tenant = company(world, "receptie@contoso.nl")

    report = run(world, store, tenant)

    assert report.exit_code == EXIT_OK and report.created == 3
    phonebook = book(world)
    assert set(phonebook) == {main, deeper}
    assert all(c["owner_user_id"] is None and c["visibility"] == "public" for c in phonebook.values())
    assert phonebook[main]["phone_numbers"] == [{"type": "work", "number": "+31201234567"}]
    assert {"id": nobody, "reason": "no usable phone number (Alleen Post)"} in report.skipped
    assert set(in_clearvox(world, anna)) == {own}  # personal contacts as before
    assert all(set(w.body or {}) <= set(CONTACT_FIELDS) for w in world.clearvox.write_log)  # no notes, no body
    assert report.extra["company_mailboxes"] == 1


def test_edits_and_deletions_follow_the_mailbox_and_other_company_contacts_are_never_touched(
        world: World, store: Store) -> None:
    receptie = shared_mailbox(world, "receptie@contoso.nl")
    tenant = company(world, "receptie@contoso.nl")
    ids = [add(world, receptie, n=i) for i in range(6)]
    with clearvox_client(tenant, world.verify) as cv:  # typed in by hand in ClearVox
        manual = cv.create_company_contact({"display_name": "Brandweer", "phone_numbers": (PhoneNumber("work", "+31112"),)})
    run(world, store, tenant)

    world.graph.update_contact(ids[0], jobTitle="Monteur")
    world.graph.delete_contact(ids[1])
    report = run(world, store, tenant, at=datetime.now(UTC) + timedelta(hours=30))  # a full reconcile too

    assert (report.created, report.updated, report.deleted) == (0, 1, 1)
    assert set(book(world)) == set(ids) - {ids[1]} and book(world)[ids[0]]["job_title"] == "Monteur"
    assert manual.id in {c["id"] for c in world.clearvox.company_contacts()}
    assert not [w for w in world.clearvox.write_log if w.path.endswith(f"/contacts/{manual.id}")]


def test_company_deletions_are_held_by_the_same_guard(world: World, store: Store) -> None:
    receptie = shared_mailbox(world, "receptie@contoso.nl")
    tenant = company(world, "receptie@contoso.nl")
    ids = [add(world, receptie, n=i) for i in range(8)]
    run(world, store, tenant)
    for gid in ids[:6]:
        world.graph.delete_contact(gid)

    held, again = run(world, store, tenant), run(world, store, tenant)

    assert held.deleted == again.deleted == 0 and again.extra["held"] == 6 and len(book(world)) == 8
    assert any(s["id"] == "receptie@contoso.nl" and "--confirm-deletions" in s["reason"] for s in again.skipped)
    assert run(world, store, tenant, args={"confirm_deletions": True}).deleted == 6 and len(book(world)) == 2


def test_the_same_person_in_two_mailboxes_is_one_company_contact(world: World, store: Store) -> None:
    receptie = shared_mailbox(world, "receptie@contoso.nl")
    info = shared_mailbox(world, "info@contoso.nl")
    first = add(world, receptie, displayName="Jansen BV", businessPhones=["020 123 4567"])
    alias = add(world, info, displayName="jansen  bv", businessPhones=["+31 20 123 4567"])
    other = add(world, info, displayName="Pietersen", businessPhones=["020 765 4321"])
    tenant = company(world, "receptie@contoso.nl", "info@contoso.nl")

    report = run(world, store, tenant)

    assert set(book(world)) == {first, other} and report.created == 2
    assert {"id": alias, "reason": f"{REASON_ALIAS} receptie@contoso.nl (jansen bv)"} in report.skipped
    assert run(world, store, tenant, at=datetime.now(UTC) + timedelta(hours=30)).created == 0  # stays an alias

    world.graph.delete_contact(first)  # the first one goes: the alias takes over with its mailbox's full reconcile
    run(world, store, tenant)
    run(world, store, tenant, at=datetime.now(UTC) + timedelta(hours=60))
    assert set(book(world)) == {alias, other}


def test_an_unreadable_mailbox_is_reported_by_name_with_the_fix_about_once_a_day_and_the_rest_goes_on(
        world: World, store: Store) -> None:
    receptie = shared_mailbox(world, "receptie@contoso.nl")
    shared_mailbox(world, "oud@contoso.nl", has_mailbox=False)
    shared_mailbox(world, "geheim@contoso.nl", mailbox_in_scope=False)
    gid = add(world, receptie)
    anna = person(world, store)
    own = contact(world, anna)
    tenant = company(world, "nergens@contoso.nl", "oud@contoso.nl", "geheim@contoso.nl", "receptie@contoso.nl")

    first = run(world, store, tenant)

    assert first.exit_code == EXIT_OK and set(book(world)) == {gid} and set(in_clearvox(world, anna)) == {own}
    why = {s["id"]: s["reason"] for s in first.skipped}
    assert "does not exist" in why["nergens@contoso.nl"] and "Fix: correct the address" in why["nergens@contoso.nl"]
    assert "no Exchange Online mailbox" in why["oud@contoso.nl"] and "Fix:" in why["oud@contoso.nl"]
    assert "mailbox scope" in why["geheim@contoso.nl"] and "Fix:" in why["geheim@contoso.nl"]
    world.graph.batch_log.clear()
    quiet = run(world, store, tenant)
    assert quiet.skipped == [] and quiet.exit_code == EXIT_OK
    assert not [r for r in world.graph.batch_log if any(m in r.path for m in ("nergens", "oud@", "geheim"))]
    next_day = run(world, store, tenant, at=datetime.now(UTC) + timedelta(hours=25))
    assert {s["id"] for s in next_day.skipped} == {"nergens@contoso.nl", "oud@contoso.nl", "geheim@contoso.nl"}


def test_a_crash_before_the_state_was_written_converges_without_duplicates(world: World, store: Store) -> None:
    receptie = shared_mailbox(world, "receptie@contoso.nl")
    tenant = company(world, "receptie@contoso.nl")
    ids = {add(world, receptie, n=i) for i in range(5)}
    run(world, store, tenant)
    state = store.for_tenant(world.tenant.key)  # as if the process died before writing any state
    scope = cursor_key("receptie@contoso.nl")
    state.delete("contactmap", list(state.rows("contactmap", scope)), scope)
    state.delete("cursors", list(state.rows("cursors", CURSOR_SCOPE)), CURSOR_SCOPE)
    before = sum(world.clearvox.writes.values())

    report = run(world, store, tenant)

    assert set(book(world)) == ids and sum(world.clearvox.writes.values()) == before and report.unchanged == 5


def test_a_run_without_changes_costs_one_batch_per_twenty_folders_and_nothing_in_clearvox(
        world: World, store: Store) -> None:
    receptie = shared_mailbox(world, "receptie@contoso.nl")
    folder = world.graph.add_contact_folder(receptie, "Klanten")
    add(world, receptie, n=1)
    add(world, receptie, folder, n=2)
    tenant = company(world, "receptie@contoso.nl")
    run(world, store, tenant)
    world.graph.clear_log()
    world.clearvox.clear_log()

    report = run(world, store, tenant)

    graph_calls = world.graph.requests_to(lambda r: "/oauth2/" not in r.path and "openid" not in r.path)
    assert [r.path for r in graph_calls] == ["/v1.0/$batch"] and world.clearvox.requests_to() == []
    assert report.exit_code == EXIT_OK and report.unchanged == 0


def test_a_mailbox_taken_out_of_the_setting_keeps_its_company_contacts(world: World, store: Store) -> None:
    receptie = shared_mailbox(world, "receptie@contoso.nl")
    add(world, receptie)
    run(world, store, company(world, "receptie@contoso.nl"))

    report = run(world, store, world.tenant)

    assert len(book(world)) == 1 and report.extra["retained"] == 1
    assert any("no longer in NEXXT365_COMPANY_CONTACTS" in s["reason"] for s in report.skipped)
    assert run(world, store, world.tenant).skipped == []


def test_dry_run_plans_company_contacts_per_mailbox(world: World, store: Store) -> None:
    receptie = shared_mailbox(world, "receptie@contoso.nl")
    gid = add(world, receptie, displayName="Nieuw")

    report = run(world, store, company(world, "receptie@contoso.nl"), dry_run=True)

    [plan] = report.extra["plan"]
    assert plan["clearvox_user"] is None and plan["company_mailbox"] == "receptie@contoso.nl"
    assert [c["graph_contact_id"] for c in plan["create"]] == [gid] and world.clearvox.company_contacts() == []
    assert "company contacts from receptie@contoso.nl: 1 to create" in report.plan_text


def test_doctor_lists_each_mailbox_and_whether_its_contacts_can_be_read(world: World) -> None:
    shared_mailbox(world, "receptie@contoso.nl")
    shared_mailbox(world, "geheim@contoso.nl", mailbox_in_scope=False)
    tenant = company(world, "receptie@contoso.nl", "geheim@contoso.nl", "nergens@contoso.nl")

    with clients(tenant, world.verify) as (graph, _):
        checks = company_mailbox_checks(graph, tenant)

    assert [(c.name, c.status) for c in checks] == [("company contacts receptie@contoso.nl", "OK"),
                                                    ("company contacts geheim@contoso.nl", "FAIL"),
                                                    ("company contacts nergens@contoso.nl", "FAIL")]
    assert "Fix:" in checks[1].detail and "Fix:" in checks[2].detail
