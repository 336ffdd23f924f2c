"""Queue fan-out as a black box: `nexxt365 dispatch` and `nexxt365 work` against Azurite's queue service.

Three customers, each its own pair of simulators; the app's settings name them
(a tenants table would hold the same Tenant objects). Messages go through real
queues; the runs reach the simulators over HTTPS and the state goes to Azurite.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared import cli, dispatch
from shared.queues import poison_count
from shared.sandbox.azurite import Azurite
from shared.sandbox.tls import ca_bundle_path
from shared.sandbox.world import World
from shared.secrets import KeyVault
from shared.settings import Settings, Tenant
from shared.state import Store
from shared.sync import split
from shared.sync.users.rules import Link

pytestmark = pytest.mark.integration


class FleetSettings(Settings):
    """The app settings of a multi-customer app whose customers are these worlds."""

    def __init__(self, env: dict[str, str], tenants: list[Tenant]) -> None:
        super().__init__(env=env, local={})
        self.fleet = tenants

    def tenants(self, vault: KeyVault | None = None) -> list[Tenant]:
        return list(self.fleet)


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[World]]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle_path())
    worlds = [World().start() for _ in range(3)]
    try:
        for n, world in enumerate(worlds):
            world.graph.add_user(displayName=f"Jan {n}", givenName="Jan", surname=str(n), mail=f"jan{n}@contoso.nl")
        yield worlds
    finally:
        for world in worlds:
            world.stop()


def settings_for(azurite: Azurite, worlds: list[World], **extra: str) -> FleetSettings:
    env = {"NEXXT365_STATE": azurite.connection_string, "AzureWebJobsStorage": azurite.connection_string,
           "NEXXT365_FANOUT": "queue", **extra}
    return FleetSettings(env, [w.tenant for w in worlds])


def nexxt365(settings: Settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(list(argv), out=out, settings=settings)
    return code, out.getvalue()


def peek(queues: QueueServiceClient, name: str) -> list[dict[str, object]]:
    client = queues.get_queue_client(name, message_decode_policy=TextBase64DecodePolicy())
    try:
        return [json.loads(m.content) for m in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def put(queues: QueueServiceClient, message: dispatch.Message | str, queue: str = "") -> None:
    """A message on the queue (created when missing), encoded as the dispatcher does."""
    text = message if isinstance(message, str) else message.to_json()
    client = queues.get_queue_client(queue or f"nexxt365-{getattr(message, 'sync', '')}",
                                     message_encode_policy=TextBase64EncodePolicy())
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    client.send_message(text)


def test_dispatch_puts_one_message_per_tenant_and_work_runs_them(fleet: list[World], azurite: Azurite,
                                                                 queues: QueueServiceClient) -> None:
    settings = settings_for(azurite, fleet)

    code, out = nexxt365(settings, "dispatch", "users")

    assert code == 0, out
    assert "3 message(s) for 3 of 3 tenant(s) on nexxt365-users" in out
    messages = peek(queues, "nexxt365-users")
    assert sorted(str(m["tenant"]) for m in messages) == sorted(w.tenant.key for w in fleet)
    for m in messages:
        assert m["sync"] == "users" and set(m) == {"sync", "tenant", "due"}
        due = datetime.fromisoformat(str(m["due"]).replace("Z", "+00:00"))
        assert due.minute % 15 == 0 and due.second == 0  # the tick of "0 */15 * * * *"

    code, out = nexxt365(settings, "work", "users", "--until-empty")

    assert code == 0, out
    assert "ran 3," in out and "retried 0" in out
    for n, world in enumerate(fleet):
        assert world.clearvox.user_by_email(f"jan{n}@contoso.nl") is not None
    assert peek(queues, "nexxt365-users") == []


def test_a_failing_run_completes_its_message_and_is_reported(fleet: list[World], azurite: Azurite,
                                                             queues: QueueServiceClient) -> None:
    broken = fleet[0].tenant_with()
    broken = Tenant(**{**broken.__dict__, "client_secret": lambda: "a-wrong-secret"})
    settings = FleetSettings(settings_for(azurite, fleet).env, [broken])
    assert nexxt365(settings, "dispatch", "users")[0] == 0

    code, out = nexxt365(settings, "work", "users", "--until-empty")

    assert code == 1, out
    assert "AADSTS7000215" in out and "with failures 1, retried 0" in out
    assert peek(queues, "nexxt365-users") == [] and peek(queues, "nexxt365-users-poison") == []


def test_a_message_whose_run_is_not_run_completes(fleet: list[World], azurite: Azurite, queues: QueueServiceClient) -> None:
    world = fleet[0]
    settings = settings_for(azurite, [world])
    held = Store(azurite.connection_string).for_tenant(world.tenant.key).acquire_lease("users", timedelta(minutes=5))
    assert held is not None
    put(queues, dispatch.Message("users", world.tenant.key, datetime.now(UTC)))

    code, out = nexxt365(settings, "work", "users", "--until-empty")

    assert code == 0, out
    assert "ran 1, stale (dropped) 0, with failures 0, retried 0" in out
    assert world.clearvox.user_by_email("jan0@contoso.nl") is None  # another run holds the lease: not run
    assert peek(queues, "nexxt365-users") == []


def test_a_stale_message_is_dropped_and_reported_never_run(fleet: list[World], azurite: Azurite,
                                                           queues: QueueServiceClient) -> None:
    world = fleet[0]
    settings = settings_for(azurite, fleet)
    due = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    put(queues, dispatch.Message("calendar", world.tenant.key, due))
    world.graph.clear_log()

    code, out = nexxt365(settings, "work", "calendar", "--until-empty")

    assert code == 1, out
    assert "stale (dropped) 1" in out and "ran 0" in out
    assert world.graph.requests_to() == []  # not run: no token, no free/busy
    runs = Store(azurite.connection_string).for_tenant(world.tenant.key).rows("runs")
    [row] = runs.values()
    report = json.loads(row["report"])
    assert report["result"] == "stale" and report["due"] == due.isoformat() and "dropped" in report["error"]


def test_a_backed_off_tenant_is_not_dispatched(fleet: list[World], azurite: Azurite, queues: QueueServiceClient) -> None:
    settings = settings_for(azurite, fleet)
    resting = fleet[1].tenant.key
    Store(azurite.connection_string).for_tenant(resting).upsert(
        "health", {"users": {"failures": 3, "next_try": datetime.now(UTC) + timedelta(minutes=4), "last_error": "x"}})

    code, out = nexxt365(settings, "dispatch", "users")

    assert code == 0, out
    assert "2 message(s) for 2 of 3 tenant(s)" in out and f"backed off (not dispatched): {resting}" in out
    assert sorted(str(m["tenant"]) for m in peek(queues, "nexxt365-users")) == sorted(
        w.tenant.key for w in fleet if w.tenant.key != resting)


def test_a_message_whose_run_raises_goes_to_poison_after_five_dequeues(fleet: list[World], azurite: Azurite,
                                                                       queues: QueueServiceClient) -> None:
    settings = settings_for(azurite, fleet)
    put(queues, dispatch.Message("users", "no-such-customer", datetime.now(UTC)))

    code, out = nexxt365(settings, "work", "users", "--until-empty")

    assert code == 1, out
    assert "retried 4, to nexxt365-users-poison 1" in out
    assert peek(queues, "nexxt365-users") == []
    [poisoned] = peek(queues, "nexxt365-users-poison")
    assert poisoned["tenant"] == "no-such-customer"
    assert poison_count(settings, "nexxt365-users") == 1
    assert poison_count(settings, "nexxt365-calendar") == 0  # no poison queue yet: nothing poisoned
    syncs = json.loads(nexxt365(settings, "status", "--json")[1])["tenants"][0]["syncs"]
    assert syncs["users"]["poisoned"] == 1 and syncs["calendar"]["poisoned"] == 0


def test_an_unreadable_message_goes_to_poison_too(fleet: list[World], azurite: Azurite, queues: QueueServiceClient) -> None:
    settings = settings_for(azurite, fleet)
    put(queues, "hello", "nexxt365-contacts")

    code, out = nexxt365(settings, "work", "contacts", "--until-empty")

    assert code == 1 and "to nexxt365-contacts-poison 1" in out


def _linked_calendar(world: World, store: Store, count: int) -> list[str]:
    """`count` linked users, each in a meeting now; returns their ClearVox ids."""
    now = datetime.now(UTC)
    links, cv_ids = {}, []
    for u in range(count):
        email = f"user{u}@contoso.nl"
        oid = world.graph.add_user(displayName=f"User {u}", mail=email, userPrincipalName=email)
        cv = world.clearvox.add_user(first_name="User", last_name=str(u), email=email, external_application_id=oid)
        links[oid] = dict(Link(oid, cv["id"], email, f"User {u}", "linked").to_row())
        world.graph.add_event(oid, "Overleg", now - timedelta(minutes=10), now + timedelta(minutes=50))
        cv_ids.append(cv["id"])
    store.for_tenant(world.tenant.key).upsert("links", links)
    return cv_ids


def test_a_large_calendar_tenant_is_split_into_user_ranges(fleet: list[World], azurite: Azurite, queues: QueueServiceClient,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(split, "USERS_PER_PART", 2)
    world = fleet[0]
    settings = settings_for(azurite, [world])
    cv_ids = _linked_calendar(world, Store(azurite.connection_string), 5)
    now = datetime.now(UTC)

    first = dispatch.dispatch(settings, "calendar", now=now)  # its size is not known yet: one message
    assert first.messages == 1 and peek(queues, "nexxt365-calendar")[0]["sync"] == "calendar"
    assert nexxt365(settings, "work", "calendar", "--until-empty")[0] == 0
    assert [world.clearvox.status_of(cv) for cv in cv_ids] == ["busy"] * 5

    second = dispatch.dispatch(settings, "calendar")
    ranges = sorted((m["range"] for m in peek(queues, "nexxt365-calendar")), key=lambda r: r[0])  # type: ignore[index]

    assert second.split == {world.tenant.key: 3}
    assert ranges == [[0, 1], [1, 3], [3, None]]
    code, out = nexxt365(settings, "work", "calendar", "--until-empty", "--concurrency", "1")
    assert code == 0 and "ran 3," in out, out
    reports = [json.loads(r["report"]) for r in Store(azurite.connection_string).for_tenant(world.tenant.key).rows("runs").values()]
    parts = sorted((r["range"], r["linked_users"], r["linked_total"]) for r in reports if "range" in r)
    assert parts == [([0, 1], 1, 5), ([1, 3], 2, 5), ([3, None], 2, 5)]
    assert [world.clearvox.status_of(cv) for cv in cv_ids] == ["busy"] * 5  # nobody's ledger row was forgotten
