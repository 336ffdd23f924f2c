"""The users sync end to end: Graph and ClearVox simulators over HTTPS, state in Azurite.

One test per behaviour of the users-sync issue, in its order: source and
rounds, eligibility, linked users, new users, existing emails and manual
links, removal, duplicates, ClearVox refusals, scope, --user, --dry-run and
interruptions. The CLI is covered in test_users_cli.py.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import runner
from shared.clearvox import ClearVox
from shared.report import RunReport
from shared.sandbox.server import Request
from shared.sandbox.world import World
from shared.settings import Tenant
from shared.state import State, Store
from shared.sync.users.ledger import RETRY_SCOPE
from shared.sync.users.rules import GRAPH_SELECT, exists_reason
from shared.sync.users.source import CACHE_TABLE, CURSOR

pytestmark = pytest.mark.integration

ISSUE_SELECT = {"id", "displayName", "givenName", "surname", "mail", "userPrincipalName", "businessPhones",
                "mobilePhone", "jobTitle", "department", "preferredLanguage", "accountEnabled", "userType"}


# --------------------------------------------------------------------------- helpers


def entra(world: World, name: str = "Jan de Vries", mail: str | None = "jan@contoso.nl", **props: Any) -> str:
    """An Entra user with contact info; returns its object id."""
    first, _, last = name.partition(" ")
    props.setdefault("givenName", first)
    props.setdefault("surname", last or None)
    if mail is not None:
        props["mail"] = mail
    return world.graph.add_user(displayName=name, **props)


def sync(world: World, store: Store, tenant: Tenant | None = None, **kwargs: Any) -> RunReport:
    return runner.run("users", tenant or world.tenant, store, verify=world.verify, **kwargs)


def state(world: World, store: Store) -> State:
    return store.for_tenant(world.tenant.key)


def delta_link(world: World, store: Store) -> str | None:
    """The stored deltaLink of the users sync (None before the first applied round)."""
    cursor = state(world, store).cursor(CURSOR)
    return None if cursor is None else str(cursor["delta_link"])


def cv_users(world: World, email: str) -> list[dict[str, Any]]:
    with world.clearvox.lock:
        return [dict(u) for u in world.clearvox.users.values() if u["email"].lower() == email.lower()]


def cv_linked(world: World, object_id: str) -> dict[str, Any]:
    with world.clearvox.lock:
        found = [dict(u) for u in world.clearvox.users.values() if u["external_application_id"] == object_id]
    assert len(found) == 1, f"{len(found)} ClearVox users carry {object_id}"
    return found[0]


def cv_client(world: World) -> ClearVox:
    """A ClearVox client acting as an administrator in the ClearVox portal."""
    return ClearVox(world.clearvox.url, world.clearvox.api_key, world.clearvox.account_id, verify=world.verify)


def delta_requests(world: World) -> list[Any]:
    return world.graph.requests_to(lambda r: r.path.endswith("/users/delta"))


def graph_requests(world: World) -> list[Any]:
    """Graph API requests (not the token endpoint)."""
    return world.graph.requests_to(lambda r: r.path.startswith("/v1.0/"))


def writes(world: World) -> list[Any]:
    return [w for w in world.clearvox.write_log if 200 <= w.status < 300]


def skip_reasons(report: RunReport) -> dict[str, str]:
    return {s["id"]: s["reason"] for s in report.skipped}


def reset_logs(world: World) -> None:
    world.graph.clear_log()
    world.clearvox.clear_log()
    world.clearvox.write_log.clear()


def with_group_permission(world: World) -> None:
    world.graph.set_app_roles(world.client_id, ["User.Read.All", "GroupMember.Read.All"])


# --------------------------------------------------------------------------- source and rounds


def test_first_run_is_a_full_round_that_selects_only_the_properties_of_the_issue(world: World, store: Store) -> None:
    jan = entra(world)
    report = sync(world, store)
    assert report.exit_code == 0 and report.created == 1
    assert report.extra["full_round"] is True
    first = delta_requests(world)[0]
    assert set(first.query["$select"].split(",")) == ISSUE_SELECT == set(GRAPH_SELECT)
    assert "$deltatoken" not in first.query
    assert delta_link(world, store)
    assert cv_linked(world, jan)["email"] == "jan@contoso.nl"


def test_later_runs_resume_from_the_delta_link_and_see_only_the_changes(world: World, store: Store) -> None:
    jan = entra(world, mobilePhone="06 12345678", jobTitle="Sales", department="Verkoop")
    entra(world, "Piet Puk", "piet@contoso.nl")
    sync(world, store)
    world.graph.update_user(jan, jobTitle="Sales manager")
    reset_logs(world)

    report = sync(world, store)

    assert report.extra["full_round"] is False and report.updated == 1 and report.created == 0
    (request,) = graph_requests(world)
    assert "$deltatoken" in request.query
    # The delta item carries only jobTitle: the cached copy supplies the rest, so nothing else is sent or cleared.
    assert [(w.method, w.body) for w in writes(world)] == [("PATCH", {"job_title": "Sales manager"})]
    user = cv_linked(world, jan)
    assert (user["mobile_number"], user["department"], user["first_name"]) == ("+31612345678", "Verkoop", "Jan")


def test_a_run_without_changes_costs_one_graph_request_and_writes_nothing(world: World, store: Store) -> None:
    entra(world)
    entra(world, "Piet Puk", "piet@contoso.nl")
    world.clearvox.add_user(first_name="Piet", last_name="Puk", email="piet@contoso.nl")  # waits for a link
    sync(world, store)
    reset_logs(world)

    report = sync(world, store)

    assert report.exit_code == 0 and (report.created, report.updated, report.linked) == (0, 0, 0)
    assert len(graph_requests(world)) == 1
    assert writes(world) == []
    # One ClearVox read: the user waiting for a manual link, to notice a pasted Object-ID.
    assert [r.method for r in world.clearvox.requests_to()] == ["GET"]


@pytest.mark.parametrize("reset", [False, True], ids=["syncStateNotFound", "410-resync"])
def test_an_expired_delta_token_starts_a_full_round_by_itself(world: World, store: Store, reset: bool) -> None:
    jan = entra(world)
    sync(world, store)
    world.graph.expire_delta_tokens(contacts=False, reset=reset)
    piet = entra(world, "Piet Puk", "piet@contoso.nl")

    report = sync(world, store)

    assert report.exit_code == 0, report.error
    assert report.extra["full_round"] is True and "expired" in report.extra["full_round_reason"]
    assert report.created == 1 and report.unchanged == 1
    assert cv_linked(world, jan) and cv_linked(world, piet)
    assert sync(world, store).extra["full_round"] is False


def test_a_full_reconcile_every_full_sync_hours_catches_drift(world: World, store: Store) -> None:
    jan = entra(world)
    sync(world, store)
    with cv_client(world) as admin:  # an administrator clears the link in ClearVox: no Entra change shows it
        admin.update_user(cv_linked(world, jan)["id"], {"external_application_id": None})

    later = sync(world, store, at=datetime.now(UTC) + timedelta(hours=23))
    assert later.extra["full_round"] is False and later.skipped == []

    reconcile = sync(world, store, at=datetime.now(UTC) + timedelta(hours=25))
    assert reconcile.extra["full_round"] is True
    assert reconcile.extra["full_round_reason"] == "full reconcile (every 24 hours)"
    assert skip_reasons(reconcile) == {jan: exists_reason(jan)}


def test_a_throttled_graph_page_is_retried_and_the_run_completes(world: World, store: Store) -> None:
    entra(world)
    world.graph.inject(429, count=1, retry_after=1, match=lambda r: r.path.endswith("/users/delta"))
    report = sync(world, store)
    assert report.exit_code == 0 and report.created == 1 and report.retries >= 1


# --------------------------------------------------------------------------- eligibility


def test_only_enabled_members_with_a_contact_email_are_created_and_each_other_user_says_why(
        world: World, store: Store) -> None:
    member = entra(world)
    no_mail = entra(world, "Zonder Mail", None, userPrincipalName="zonder@contoso.onmicrosoft.com")
    guest = entra(world, "Gast Extern", "gast@partner.nl", userType="Guest")
    disabled = entra(world, "Oud Medewerker", "oud@contoso.nl", accountEnabled=False)

    report = sync(world, store)

    assert report.created == 1 and cv_linked(world, member)
    reasons = skip_reasons(report)
    assert reasons[no_mail].startswith("no email in Entra contact info")
    assert reasons[guest].startswith("guest user")
    assert reasons[disabled].startswith("disabled in Entra")
    assert cv_users(world, "zonder@contoso.onmicrosoft.com") == []  # the sign-in name is never used as email


def test_guests_and_disabled_users_are_created_with_their_settings(world: World, store: Store) -> None:
    guest = entra(world, "Gast Extern", "gast@partner.nl", userType="Guest")
    disabled = entra(world, "Oud Medewerker", "oud@contoso.nl", accountEnabled=False)
    report = sync(world, store, world.tenant_with(include_guests=True, include_disabled=True))
    assert report.created == 2 and cv_linked(world, guest) and cv_linked(world, disabled)


# --------------------------------------------------------------------------- linked users


def test_a_linked_user_gets_every_entra_change_in_clearvox_form(world: World, store: Store) -> None:
    jan = entra(world)
    sync(world, store)
    world.graph.update_user(jan, givenName="Johannes", surname="Vries", mail="johannes@contoso.nl",
                            businessPhones=["+32 2 512 34 56"], mobilePhone="06 87654321", jobTitle="Directeur",
                            department="Directie", preferredLanguage="en-GB")
    report = sync(world, store)
    assert report.updated == 1
    user = cv_linked(world, jan)
    assert {k: user[k] for k in ("first_name", "last_name", "email", "phone_number", "mobile_number", "job_title",
                                 "department", "language")} == {
        "first_name": "Johannes", "last_name": "Vries", "email": "johannes@contoso.nl", "phone_number": "+3225123456",
        "mobile_number": "+31687654321", "job_title": "Directeur", "department": "Directie", "language": "en"}


def test_names_fall_back_to_splitting_the_display_name(world: World, store: Store) -> None:
    oid = world.graph.add_user(displayName="Anna van der Berg", mail="anna@contoso.nl")
    sync(world, store)
    user = cv_linked(world, oid)
    assert (user["first_name"], user["last_name"]) == ("Anna", "van der Berg")


def test_a_value_an_admin_typed_in_clearvox_survives_until_that_field_changes_in_entra(world: World, store: Store) -> None:
    jan = entra(world, jobTitle="Sales")
    sync(world, store)
    cv_id = cv_linked(world, jan)["id"]
    with cv_client(world) as admin:
        admin.update_user(cv_id, {"job_title": "Sales (typed in ClearVox)"})
    world.graph.update_user(jan, department="Verkoop")
    reset_logs(world)

    sync(world, store)
    assert [w.body for w in writes(world)] == [{"department": "Verkoop"}]
    assert cv_linked(world, jan)["job_title"] == "Sales (typed in ClearVox)"

    world.graph.update_user(jan, jobTitle="Sales manager")
    sync(world, store)
    assert cv_linked(world, jan)["job_title"] == "Sales manager"


# --------------------------------------------------------------------------- new users, existing emails, links


def test_a_new_user_is_created_with_its_object_id_so_it_is_linked_from_then_on(world: World, store: Store) -> None:
    jan = entra(world)
    sync(world, store)
    created = cv_linked(world, jan)
    assert created["external_application_id"] == jan
    world.graph.update_user(jan, jobTitle="Boss")
    assert sync(world, store).updated == 1
    assert len(cv_users(world, "jan@contoso.nl")) == 1


def test_an_existing_email_is_neither_created_nor_changed_but_reported_with_the_object_id(
        world: World, store: Store) -> None:
    piet = entra(world, "Piet Puk", "Piet@Contoso.nl", jobTitle="Inkoop")
    existing = world.clearvox.add_user(first_name="P", last_name="Puk", email="piet@contoso.nl")

    report = sync(world, store)

    assert report.created == 0 and writes(world) == []
    assert skip_reasons(report)[piet] == f"exists in ClearVox: paste Object-ID {piet} into Extern toepassing ID"
    assert report.extra["unlinked"] == [{"cv_user_id": existing["id"], "email": "piet@contoso.nl",
                                         "display_name": "Piet Puk", "object_id": piet}]
    assert cv_users(world, "piet@contoso.nl")[0]["first_name"] == "P"


def test_a_pasted_object_id_is_recognised_by_the_next_run_without_any_entra_change(world: World, store: Store) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl", jobTitle="Inkoop")
    existing = world.clearvox.add_user(first_name="P", last_name="Puk", email="piet@contoso.nl")
    sync(world, store)
    with cv_client(world) as admin:
        admin.update_user(existing["id"], {"external_application_id": piet})

    report = sync(world, store)

    assert report.linked == 1 and report.extra["unlinked"] == [] and report.skipped == []
    user = cv_linked(world, piet)
    assert (user["first_name"], user["job_title"]) == ("Piet", "Inkoop")  # the Entra values follow the link
    assert (state(world, store).get("links", piet) or {}).get("status") == "linked"
    assert sync(world, store).linked == 0


def test_auto_link_links_an_existing_user_itself(world: World, store: Store) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    existing = world.clearvox.add_user(first_name="P", last_name="Puk", email="piet@contoso.nl")
    report = sync(world, store, world.tenant_with(auto_link=True))
    assert report.linked == 1 and report.created == 0
    assert cv_linked(world, piet)["id"] == existing["id"]
    assert len(cv_users(world, "piet@contoso.nl")) == 1


def test_two_entra_users_with_the_same_mail_are_neither_created_until_one_changes(world: World, store: Store) -> None:
    a = entra(world, "Jan de Vries", "info@contoso.nl")
    b = entra(world, "Jan Jansen", "info@contoso.nl")

    report = sync(world, store)

    assert report.created == 0 and cv_users(world, "info@contoso.nl") == []
    assert set(report.extra["conflicts"][0]["object_ids"]) == {a, b}
    assert {a, b} <= set(skip_reasons(report))

    world.graph.update_user(b, mail="jan.jansen@contoso.nl")
    report = sync(world, store)
    assert report.created == 2 and cv_linked(world, a)["email"] == "info@contoso.nl"
    assert cv_linked(world, b)["email"] == "jan.jansen@contoso.nl"


# --------------------------------------------------------------------------- removed and disabled


def test_a_removed_or_disabled_linked_user_is_only_reported_by_default(world: World, store: Store) -> None:
    gone, off = entra(world), entra(world, "Piet Puk", "piet@contoso.nl")
    sync(world, store)
    world.graph.delete_user(gone)
    world.graph.update_user(off, accountEnabled=False)
    reset_logs(world)

    report = sync(world, store)

    assert report.deactivated == 0 and writes(world) == []
    reasons = skip_reasons(report)
    assert "deleted in Entra" in reasons[gone] and "on_removed=report" in reasons[gone]
    assert "disabled in Entra" in reasons[off]
    assert cv_linked(world, gone)["active"] is True and cv_linked(world, off)["active"] is True


def test_with_on_removed_deactivate_the_clearvox_user_is_set_inactive_never_deleted(world: World, store: Store) -> None:
    tenant = world.tenant_with(on_removed="deactivate")
    gone, off = entra(world), entra(world, "Piet Puk", "piet@contoso.nl")
    sync(world, store, tenant)
    world.graph.delete_user(gone)
    world.graph.update_user(off, accountEnabled=False)
    reset_logs(world)

    report = sync(world, store, tenant)

    assert report.deactivated == 2
    assert sorted((w.method, str(w.body)) for w in writes(world)) == [("PATCH", "{'active': False}")] * 2
    assert world.clearvox.writes["DELETE"] == 0
    assert cv_linked(world, gone)["active"] is False and cv_linked(world, off)["active"] is False

    world.graph.update_user(off, accountEnabled=True)  # back: the connector reactivates what it deactivated
    assert sync(world, store, tenant).updated == 1 and cv_linked(world, off)["active"] is True


def test_more_deactivations_than_the_maximum_are_held_until_confirmed(world: World, store: Store) -> None:
    tenant = world.tenant_with(on_removed="deactivate", max_deactivations=2)
    oids = [entra(world, f"Medewerker {i}", f"m{i}@contoso.nl") for i in range(3)]
    sync(world, store, tenant)
    for oid in oids:
        world.graph.delete_user(oid)

    held = sync(world, store, tenant)
    assert held.deactivated == 0 and {h["object_id"] for h in held.extra["held"]} == set(oids)
    assert all("held" in skip_reasons(held)[oid] for oid in oids)
    assert all(cv_linked(world, oid)["active"] for oid in oids)

    # The delta moved on, yet the held users are planned again until someone confirms.
    assert sync(world, store, tenant).extra["held"] != []
    confirmed = sync(world, store, tenant, args={"confirm_deactivations": True})
    assert confirmed.deactivated == 3 and not any(cv_linked(world, oid)["active"] for oid in oids)
    assert state(world, store).rows("retries", RETRY_SCOPE) == {}


# --------------------------------------------------------------------------- ClearVox refusals


def test_email_taken_on_create_counts_as_exists_never_a_duplicate(world: World, store: Store) -> None:
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    raced: list[str] = []

    def someone_creates_it_meanwhile(req: Request) -> bool:
        if req.method == "POST" and not raced:
            raced.append(world.clearvox.add_user(first_name="Piet", last_name="Puk", email="PIET@contoso.nl")["id"])
        return False  # the simulator then answers 409 email_taken itself

    world.clearvox.inject(409, count=1, match=someone_creates_it_meanwhile)
    report = sync(world, store)

    assert report.exit_code == 0 and report.created == 0 and report.failed == []
    assert skip_reasons(report)[piet] == exists_reason(piet)
    assert [u["object_id"] for u in report.extra["unlinked"]] == [piet]
    assert [u["id"] for u in cv_users(world, "piet@contoso.nl")] == raced


def test_a_422_fails_that_item_with_the_field_messages_and_it_is_retried_next_run(world: World, store: Store) -> None:
    jan, piet = entra(world), entra(world, "Piet Puk", "piet@contoso.nl")
    refusal = {"error": {"code": "validation_failed", "message": "the request is invalid",
                         "fields": {"mobile_number": "is not allowed for this user"}}}
    world.clearvox.inject(422, count=1, body=refusal, match=lambda r: r.method == "POST" and b"piet@" in r.body)

    report = sync(world, store)

    assert report.exit_code == 1 and report.created == 1 and cv_linked(world, jan)
    (failure,) = report.failed
    assert failure["id"] == piet and "mobile_number: is not allowed for this user" in failure["reason"]
    assert set(state(world, store).rows("retries", RETRY_SCOPE)) == {piet}
    assert delta_link(world, store)  # the round was applied: the deltaLink moved on despite the failure

    retry = sync(world, store)  # nothing changed in Entra; the failed user is retried anyway
    assert retry.exit_code == 0 and retry.created == 1 and cv_linked(world, piet)
    assert state(world, store).rows("retries", RETRY_SCOPE) == {}


# --------------------------------------------------------------------------- users group scope


def test_only_users_group_members_are_synced_and_leaving_the_group_counts_as_removed(world: World, store: Store) -> None:
    with_group_permission(world)
    jan, piet, anna = entra(world), entra(world, "Piet Puk", "piet@contoso.nl"), entra(world, "Anna Berg", "anna@contoso.nl")
    team = world.graph.add_group(members=[jan])
    group = world.graph.add_group(members=[team, piet])  # nested: jan is a transitive member
    tenant = world.tenant_with(users_group=group, on_removed="deactivate")

    first = sync(world, store, tenant)
    assert first.created == 2 and cv_users(world, "anna@contoso.nl") == []
    assert first.extra["out_of_scope"] == 1

    world.graph.set_group_members(group, [team, anna])  # piet leaves, anna joins; no user property changed
    report = sync(world, store, tenant)

    assert report.extra["full_round"] is False
    assert report.deactivated == 1 and cv_linked(world, piet)["active"] is False
    assert report.extra["deactivations"][0]["reason"] == "no longer a member of the users group"
    assert report.created == 1 and cv_linked(world, anna)
    assert sync(world, store, tenant).deactivated == 0


def test_the_users_group_needs_group_member_read_all_and_the_error_says_so(world: World, store: Store) -> None:
    jan = entra(world)
    group = world.graph.add_group(members=[jan])
    report = sync(world, store, world.tenant_with(users_group=group))
    assert report.exit_code == 2 and report.error is not None
    assert "GroupMember.Read.All" in report.error and "Grant admin consent" in report.error
    assert writes(world) == []


# --------------------------------------------------------------------------- on demand: --user


def test_user_syncs_one_user_now_and_explains_every_decision(world: World, store: Store) -> None:
    jan = entra(world, jobTitle="Sales")
    sync(world, store)
    before = delta_link(world, store)
    world.graph.update_user(jan, jobTitle="Sales manager")
    reset_logs(world)

    report = sync(world, store, args={"user": "JAN@contoso.nl"})

    assert report.exit_code == 0 and report.updated == 1
    text = report.plan_text
    assert "Eligible: yes" in text
    assert f"ClearVox: linked - user {cv_linked(world, jan)['id']}" in text
    assert 'job_title: "Sales" -> "Sales manager"' in text
    assert "Result: updated ClearVox user" in text
    assert cv_linked(world, jan)["job_title"] == "Sales manager"
    assert delta_link(world, store) == before
    assert delta_requests(world) == []
    # The regular run still sees the change in its delta, finds ClearVox up to date and writes nothing.
    reset_logs(world)
    assert sync(world, store).unchanged == 1 and writes(world) == []


def test_user_explains_why_someone_is_missing(world: World, store: Store) -> None:
    guest = entra(world, "Gast Extern", "gast@partner.nl", userType="Guest")
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    existing = world.clearvox.add_user(first_name="Piet", last_name="Puk", email="piet@contoso.nl")

    by_id = sync(world, store, args={"user": guest})
    assert "Eligible: no - guest user" in by_id.plan_text and by_id.created == 0

    by_mail = sync(world, store, args={"user": "piet@contoso.nl"})
    assert f"ClearVox: matched by email - user {existing['id']}" in by_mail.plan_text
    assert f"paste Object-ID {piet} into Extern toepassing ID" in by_mail.plan_text

    unknown = sync(world, store, args={"user": "nobody@contoso.nl"})
    assert unknown.exit_code == 0 and "no Entra user has" in unknown.plan_text
    assert writes(world) == []


# --------------------------------------------------------------------------- --dry-run


def test_dry_run_prints_the_plan_and_writes_nothing(world: World, store: Store) -> None:
    entra(world)
    entra(world, "Gast Extern", "gast@partner.nl", userType="Guest")
    piet = entra(world, "Piet Puk", "piet@contoso.nl")
    world.clearvox.add_user(first_name="Piet", last_name="Puk", email="piet@contoso.nl")

    report = sync(world, store, dry_run=True)

    assert report.dry_run and report.created == 1
    assert "Create:" in report.plan_text and "jan@contoso.nl" in report.plan_text
    assert "guest user" in report.plan_text and f"Object-ID {piet}" in report.plan_text
    assert writes(world) == []
    st = state(world, store)
    assert st.cursor(CURSOR) is None and st.rows("links") == {} and st.rows(CACHE_TABLE) == {}


def test_dry_run_shows_field_by_field_diffs_of_a_linked_user(world: World, store: Store) -> None:
    jan = entra(world, jobTitle="Sales")
    sync(world, store)
    before = delta_link(world, store)
    world.graph.update_user(jan, jobTitle="Boss")
    reset_logs(world)
    report = sync(world, store, dry_run=True)
    assert 'job_title: "Sales" -> "Boss"' in report.plan_text and writes(world) == []
    assert delta_link(world, store) == before
    assert sync(world, store).updated == 1


# --------------------------------------------------------------------------- interrupted runs converge


def test_a_clearvox_outage_mid_apply_leaves_state_from_which_the_next_run_converges(world: World, store: Store) -> None:
    # The one outage rule (shared.sync.base): one failing user fails alone, but ten failures in a row stop the run.
    tenant = world.tenant_with(clearvox_concurrency=2)
    oids = [entra(world, f"Medewerker {i}", f"m{i}@contoso.nl") for i in range(10)]
    sync(world, store, tenant)
    before = delta_link(world, store)
    oids += [entra(world, f"Nieuw {i}", f"n{i:02d}@contoso.nl") for i in range(20)]
    posts = itertools.count()
    world.clearvox.inject(500, count=10_000, match=lambda r: r.method == "POST" and next(posts) >= 3)

    broken = sync(world, store, tenant)

    assert broken.exit_code == 1 and broken.error and "500" in broken.error and "in a row" in broken.error
    assert 3 <= broken.created < 20 and len(broken.failed) >= 2
    assert delta_link(world, store) == before  # the round is replayed

    world.clearvox.faults.clear()
    fixed = sync(world, store, tenant)

    assert fixed.exit_code == 0 and broken.created + fixed.created + fixed.linked == 20
    assert all(len(cv_users(world, f"n{i:02d}@contoso.nl")) == 1 for i in range(20))
    assert all(cv_linked(world, oid) for oid in oids)
    assert sync(world, store, tenant).created == 0


def test_a_run_killed_after_creating_users_but_before_recording_them_creates_no_duplicates(
        world: World, store: Store) -> None:
    oids = [entra(world, f"Medewerker {i}", f"m{i}@contoso.nl") for i in range(4)]
    sync(world, store)
    st = state(world, store)
    st.delete("links", oids)  # as if the process died right after the creates
    st.clear_cursor(CURSOR)

    report = sync(world, store)

    assert report.created == 0 and report.linked == 4
    assert all(len(cv_users(world, f"m{i}@contoso.nl")) == 1 for i in range(4))


def test_a_graph_failure_mid_round_writes_nothing_and_the_next_run_converges(world: World, store: Store) -> None:
    world.graph.page_size = 2
    oids = [entra(world, f"Medewerker {i}", f"m{i}@contoso.nl") for i in range(5)]
    world.graph.inject(500, count=1, match=lambda r: r.path.endswith("/users/delta") and "$skiptoken" in r.query)

    broken = sync(world, store)

    assert broken.exit_code == 1 and broken.error and writes(world) == []
    assert delta_link(world, store) is None
    fixed = sync(world, store)
    assert fixed.exit_code == 0 and fixed.created == 5 and all(cv_linked(world, oid) for oid in oids)


def test_user_acts_on_a_deleted_user_the_connector_knows(world: World, store: Store) -> None:
    tenant = world.tenant_with(on_removed="deactivate")
    jan = entra(world)
    sync(world, store, tenant)
    before = delta_link(world, store)
    world.graph.delete_user(jan)

    report = sync(world, store, tenant, args={"user": "jan@contoso.nl"})

    assert report.deactivated == 1 and cv_linked(world, jan)["active"] is False
    assert f"Entra: no user with Object-ID {jan} (deleted)" in report.plan_text
    assert "Result: deactivated ClearVox user" in report.plan_text
    assert delta_link(world, store) == before
