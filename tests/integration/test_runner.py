"""The runner: one lease per (tenant, sync), tenants isolated, failing tenants backed off, reports stored."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from shared import runner
from shared.runner import SyncContext
from shared.sandbox.world import World
from shared.settings import Settings
from shared.state import Store

_started = threading.Event()


def slow_sync(ctx: SyncContext) -> None:
    """A sync that holds its lease for a moment and touches both services."""
    _started.set()
    ctx.graph.get("/users")
    ctx.clearvox.get_account()
    time.sleep(1.0)
    ctx.report.count("unchanged")


def crashing_sync(ctx: SyncContext) -> None:
    raise RuntimeError("boom")


@pytest.fixture(autouse=True)
def test_syncs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runner.SYNCS, "slow", f"{__name__}:slow_sync")
    monkeypatch.setitem(runner.SYNCS, "crash", f"{__name__}:crashing_sync")


def test_of_two_overlapping_runs_for_the_same_tenant_exactly_one_proceeds(world: World, store: Store) -> None:
    reports: list[runner.RunReport] = []
    threads = [threading.Thread(target=lambda: reports.append(runner.run("slow", world.tenant, store, verify=world.verify)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proceeded = [r for r in reports if not r.extra.get("not_run")]
    assert len(proceeded) == 1 and proceeded[0].unchanged == 1
    assert [r.extra.get("not_run") for r in reports if r not in proceeded] == ["another run of this sync for this tenant is in progress"]
    # the lease is released at the end: the next run proceeds
    assert runner.run("slow", world.tenant, store, verify=world.verify).unchanged == 1


def test_a_run_report_is_stored_and_logged_as_one_line(world: World, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="nexxt365"):
        report = runner.run("slow", world.tenant, store, verify=world.verify)
    assert report.exit_code == 0
    assert report.graph_requests >= 2 and report.clearvox_requests == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("nexxt365 run ")]
    assert len(lines) == 1 and "sync=slow" in lines[0] and f"tenant={world.tenant.key}" in lines[0]
    runs = store.for_tenant(world.tenant.key).rows("runs")
    assert [json.loads(r["report"])["sync"] for r in runs.values()] == ["slow"]


def test_a_crash_is_reported_without_stopping_other_tenants(world: World, store: Store) -> None:
    with World() as other:
        bad = runner.run("crash", world.tenant, store, verify=world.verify)
        good = runner.run("slow", other.tenant, store, verify=other.verify)
    assert bad.exit_code == 1 and "unexpected RuntimeError" in (bad.error or "")
    assert good.exit_code == 0


def test_a_tenant_whose_credentials_keep_failing_is_backed_off_until_it_works(world: World, store: Store) -> None:
    world.graph.expire_app_secrets(world.client_id)
    first = runner.run("slow", world.tenant, store, verify=world.verify)
    assert first.exit_code == 2 and "AADSTS7000222" in (first.error or "")
    token_calls = world.graph.counts["token"]
    second = runner.run("slow", world.tenant, store, verify=world.verify)  # the next timer tick
    assert second.extra.get("backed_off") and "backed off" in (second.error or "")
    assert world.graph.counts["token"] == token_calls  # not hammered
    health = store.for_tenant(world.tenant.key).get("health", "slow")
    assert health is not None and health["failures"] == 1 and health["next_try"] > datetime.now(UTC)
    # an administrator fixes it and runs it by hand: the CLI ignores the back-off, success resets it
    world.graph.add_app_secret(world.client_id, "a-new-secret")
    renewed = replace(world.tenant, client_secret=lambda: "a-new-secret")
    fixed = runner.run("slow", renewed, store, verify=world.verify, respect_backoff=False)
    assert fixed.exit_code == 0
    assert store.for_tenant(world.tenant.key).get("health", "slow") is None


def test_backoff_grows_exponentially_to_at_most_an_hour(world: World, store: Store) -> None:
    state = store.for_tenant("x")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    delays = []
    for _ in range(9):
        runner._record_failure(state, "users", "bad key", now)
        delays.append((state.get("health", "users")["next_try"] - now).total_seconds() / 60)  # type: ignore[index]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_run_all_isolates_configuration_errors(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("ERROR", logger="nexxt365"):
        assert runner.run_all("users", Settings(env={"NEXXT365_STATE": "UseDevelopmentStorage=true"}, local={})) == []
    assert "NEXXT365_TENANT is not set" in caplog.text


def test_run_all_runs_every_customer_and_one_failing_customer_stops_none(world: World, azurite) -> None:  # type: ignore[no-untyped-def]
    with World() as other:
        broken = replace(other.tenant, client_secret=lambda: "wrong")

        class TwoCustomers(Settings):
            def tenants(self):  # type: ignore[no-untyped-def]
                return [broken, world.tenant]

        settings = TwoCustomers(env={"NEXXT365_STATE": azurite.connection_string}, local={})
        reports = runner.run_all("slow", settings, verify=world.verify)
    by_tenant = {r.tenant: r for r in reports}
    assert by_tenant[world.tenant.key].exit_code == 0
    assert by_tenant[broken.key].exit_code == 2 and "AADSTS7000215" in (by_tenant[broken.key].error or "")
