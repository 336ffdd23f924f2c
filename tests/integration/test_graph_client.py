"""The Graph client against the Graph simulator: tokens, typed errors, paging, delta, $batch, getSchedule."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import ConsentError, DeltaExpired, GraphAuthError, MailboxUnavailable
from shared.graph.client import BatchRequest, Graph
from shared.graph.schedule import get_schedule
from shared.sandbox.tls import self_signed_certificate
from shared.sandbox.world import World


def graph(world: World, **tenant_changes: object) -> Graph:
    return Graph(replace(world.tenant, **tenant_changes), verify=world.verify)  # type: ignore[arg-type]


def test_token_is_fetched_once_and_reused_within_a_run(world: World) -> None:
    g = graph(world)
    assert g.token() == g.token()
    g.get("/users")
    g.get("/users")
    assert world.graph.counts["token"] == 1
    assert g.roles() == {"User.Read.All", "Contacts.Read", "Calendars.Read"}


def test_an_expired_access_token_is_renewed_transparently(world: World) -> None:
    g = graph(world)
    g.get("/users")
    world.graph.expire_access_tokens()
    assert g.get("/users")["value"] == []
    assert world.graph.counts["token"] == 2


@pytest.mark.parametrize(
    ("break_it", "code", "words"),
    [
        (lambda w: {"client_secret": lambda: "wrong"}, "7000215", "NEXXT365_CLIENT_SECRET"),
        (lambda w: (w.graph.expire_app_secrets(w.client_id), {})[1], "7000222", "has expired"),
        (lambda w: {"client_id": "00000000-0000-0000-0000-000000000001"}, "700016", "NEXXT365_CLIENT_ID"),
        (lambda w: {"tenant": "11111111-2222-3333-4444-555555555555"}, "90002", "NEXXT365_TENANT"),
    ],
    ids=["wrong-secret", "expired-secret", "app-not-in-tenant", "unknown-tenant"],
)
def test_token_failures_become_actionable_messages(world: World, break_it, code: str, words: str) -> None:  # type: ignore[no-untyped-def]
    g = graph(world, **break_it(world))
    with pytest.raises(GraphAuthError) as err:
        g.token()
    assert err.value.aadsts == code
    assert words in str(err.value)
    assert world.secret not in str(err.value)


def test_missing_permission_names_it_and_the_portal_step(world: World) -> None:
    world.graph.set_app_roles(world.client_id, ["User.Read.All", "Calendars.Read"])
    uid = world.graph.add_user(displayName="A", mail="a@contoso.nl")
    g = graph(world)
    with pytest.raises(ConsentError) as err:
        g.get(f"/users/{uid}/contactFolders")
    assert err.value.permission == "Contacts.Read"
    assert "Grant admin consent" in str(err.value) and "API permissions" in str(err.value)


def test_no_consent_at_all_on_users_is_a_consent_error(world: World) -> None:
    world.graph.set_app_roles(world.client_id, [])
    with pytest.raises(ConsentError, match=r"User\.Read\.All"):
        graph(world).get("/users")


def test_paging_follows_next_links(world: World) -> None:
    for i in range(230):
        world.graph.add_user(displayName=f"U{i}", mail=f"u{i}@contoso.nl")
    items = list(graph(world).iter_items("/users", params={"$top": "100"}))
    assert len(items) == 230
    assert world.graph.counts["users"] == 3


def test_delta_rounds_report_changes_removals_and_expiry(world: World) -> None:
    ids = [world.graph.add_user(displayName=f"U{i}", mail=f"u{i}@contoso.nl") for i in range(150)]
    g = graph(world)
    first = g.delta("/users/delta", params={"$select": "id,displayName,mail"})
    assert len(first.items) == 150 and not first.removed and "$deltatoken" in first.delta_link
    world.graph.update_user(ids[0], displayName="Renamed")
    world.graph.delete_user(ids[1])
    second = g.delta(first.delta_link)
    assert [u["displayName"] for u in second.items] == ["Renamed"]
    assert [r["id"] for r in second.removed] == [ids[1]]
    world.graph.expire_delta_tokens()
    with pytest.raises(DeltaExpired):
        g.delta(second.delta_link)


def test_throttling_is_retried_after_retry_after_and_counted(world: World) -> None:
    world.graph.inject(429, count=2, retry_after=1, match=lambda r: r.path.endswith("/users"))
    g = graph(world)
    assert g.get("/users")["value"] == []
    assert g.stats.retries == 2 and g.stats.throttled == 2


def test_batch_sends_at_most_20_per_request_and_retries_throttled_items(world: World) -> None:
    ids = [world.graph.add_user(displayName=f"U{i}", mail=f"u{i}@contoso.nl") for i in range(45)]
    world.graph.inject_batch_item(429, count=3, retry_after=1)
    g = graph(world)
    answers = g.batch([BatchRequest(uid, "GET", f"/users/{uid}") for uid in ids])
    assert {a.status for a in answers.values()} == {200}
    assert len(answers) == 45
    # 45 requests need 3 batches (the simulator rejects more than 20 per batch); the 3 throttled items need more.
    assert world.graph.counts["$batch"] >= 4


def test_batch_keeps_four_requests_per_mailbox_per_batch(world: World) -> None:
    uid = world.graph.add_user(displayName="A", mail="a@contoso.nl")
    g = graph(world)
    answers = g.batch([BatchRequest(str(i), "GET", f"/users/{uid}/contactFolders/contacts/contacts") for i in range(9)])
    assert {a.status for a in answers.values()} == {200}
    assert world.graph.counts["mailboxConcurrency"] == 0


def test_delta_many_runs_many_rounds_through_batch(world: World) -> None:
    ids = [world.graph.add_user(displayName=f"U{i}", mail=f"u{i}@contoso.nl") for i in range(25)]
    for uid in ids:
        for n in range(15):  # more than one Outlook page per folder
            world.graph.add_contact(uid, displayName=f"C{n}", businessPhones=["020 123 4567"])
    g = graph(world)
    rounds = g.delta_many({uid: f"/users/{uid}/contactFolders/contacts/contacts/delta" for uid in ids})
    assert all(len(r.items) == 15 and r.delta_link for r in rounds.values())  # type: ignore[union-attr]
    world.graph.clear_log()
    again = g.delta_many({uid: r.delta_link for uid, r in rounds.items()})  # type: ignore[union-attr]
    assert all(not r.items for r in again.values())  # type: ignore[union-attr]
    assert len(world.graph.requests_to(lambda r: r.path.endswith("$batch"))) == 2  # ceil(25 / 20)


def test_get_schedule_chunks_by_20_and_reports_mailbox_problems_per_user(world: World) -> None:
    now = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
    emails = [f"u{i}@contoso.nl" for i in range(45)]
    ids = [world.graph.add_user(displayName=e, mail=e, userPrincipalName=e) for e in emails]
    world.graph.add_event(ids[1], "Overleg", now - timedelta(minutes=30), now + timedelta(minutes=30), show_as="busy")
    world.graph.update_user(ids[2], has_mailbox=False)
    g = graph(world)
    result = get_schedule(g, emails, now, now + timedelta(minutes=15))
    assert len(result) == 45
    # 3 chunks of <= 20; the chunk anchored at u2 (no mailbox) is asked again with the next id as anchor
    assert world.graph.counts["getSchedule"] == 4
    info = result["u1@contoso.nl"]
    assert isinstance(info, dict) and info["scheduleItems"][0]["status"].lower() == "busy"
    assert isinstance(result["u2@contoso.nl"], MailboxUnavailable)


def test_a_token_is_reused_by_later_runs_in_the_same_process_until_rejected(world: World) -> None:
    graph(world).get("/users")
    graph(world).get("/users")  # the next minute's run
    assert world.graph.counts["token"] == 1
    world.graph.expire_access_tokens()
    graph(world).get("/users")
    assert world.graph.counts["token"] == 2
    Graph(world.tenant, verify=world.verify, reuse_tokens=False).token()  # doctor proves the credentials now
    assert world.graph.counts["token"] == 3


def test_get_schedule_survives_an_unknown_anchor_and_answers_the_others(world: World) -> None:
    now = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
    emails = ["ghost@contoso.nl"] + [f"u{i}@contoso.nl" for i in range(3)]
    for e in emails[1:]:
        world.graph.add_user(displayName=e, mail=e, userPrincipalName=e)
    result = get_schedule(graph(world), emails, now, now + timedelta(minutes=15))
    assert isinstance(result["ghost@contoso.nl"], MailboxUnavailable)
    assert all(isinstance(result[e], dict) for e in emails[1:])


def test_a_certificate_instead_of_a_secret(world: World) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key_pem, cert_pem = self_signed_certificate()
    client_id = world.graph.add_app(certificate_pem=cert_pem)
    g = graph(world, client_id=client_id, client_secret=None, client_certificate=lambda: key_pem + cert_pem)
    assert g.get("/users")["value"] == []
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(GraphAuthError):  # a key that does not belong to the registered certificate
        graph(world, client_id=client_id, client_secret=None, client_certificate=lambda: other_key + cert_pem).token()
