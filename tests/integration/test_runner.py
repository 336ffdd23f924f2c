"""The runner: one lease per (tenant, sync), renewed while a run lives; tenants isolated; failing tenants
backed off; reports stored."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared import runner
from shared.errors import EXIT_NOT_RUN, LeaseLost
from shared.sandbox.world import World
from shared.settings import Settings
from shared.state import LeaseKeeper, Store
from shared.sync import base
from shared.sync.base import SyncContext, SyncSpec

started = threading.Event()
release = threading.Event()


def slow_sync(ctx: SyncContext) -> None:
    """A sync that touches both services and holds its lease until the test releases it."""
    ctx.graph.get("/users")
    ctx.clearvox.get_account()
    started.set()
    release.wait(timeout=30)
    ctx.report.count("unchanged")


def crashing_sync(ctx: SyncContext) -> None:
    raise RuntimeError("boom")


def _spec(name: str, fn: object, lease: timedelta = timedelta(minutes=3)) -> SyncSpec:
    return SyncSpec(name=name, function=name, run=fn, lease=lease, schedule_setting=f"NEXXT365_{name.upper()}_SCHEDULE",  # type: ignore[arg-type]
                    schedule_default="0 * * * * *", permissions=(), retry_cap=1, budget=timedelta(minutes=1))


@pytest.fixture(autouse=True)
def test_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(base._REGISTRY, "slow", _spec("slow", slow_sync))
    monkeypatch.setitem(base._REGISTRY, "crash", _spec("crash", crashing_sync))
    started.clear()
    release.set()  # runs finish at once unless a test holds them
    yield
    release.set()


def test_of_two_overlapping_runs_for_the_same_tenant_the_second_is_not_run_with_exit_3(world: World,
                                                                                         store: Store) -> None:
    release.clear()
    first: list[runner.RunReport] = []
    holder = threading.Thread(target=lambda: first.append(runner.run("slow", world.tenant, store, verify=world.verify)))
    holder.start()
    assert started.wait(timeout=30)
    second = runner.run("slow", world.tenant, store, verify=world.verify)
    release.set()
    holder.join()
    assert first[0].unchanged == 1 and first[0].exit_code == 0
    assert second.exit_code == EXIT_NOT_RUN == 3 and second.unchanged == 0
    assert "holds the lease since" in second.extra["not_run"] and "until" in second.extra["not_run"]
    # the lease is released at the end: the next run proceeds
    assert runner.run("slow", world.tenant, store, verify=world.verify).unchanged == 1


def test_a_run_keeps_its_lease_alive_and_a_dead_runs_lease_expires(store: Store) -> None:
    state = store.for_tenant("t")
    lease = state.acquire_lease("slow", timedelta(minutes=3))
    assert lease is not None
    keeper = LeaseKeeper(state, lease, timedelta(minutes=3))
    keeper.renew()  # what the heartbeat does every minute
    assert keeper.lease.expires > lease.expires and keeper.lost is None
    keeper.check()
    assert state.acquire_lease("slow", timedelta(minutes=3)) is None  # a live run is never taken over
    dead = store.for_tenant("d").acquire_lease("slow", timedelta(seconds=-1))  # a killed run stopped renewing
    assert dead is not None and store.for_tenant("d").acquire_lease("slow", timedelta(minutes=3)) is not None


def test_a_run_whose_lease_was_taken_over_stops_writing(store: Store) -> None:
    state = store.for_tenant("t")
    mine = state.acquire_lease("slow", timedelta(seconds=-1))  # this run stalled past its lease
    assert mine is not None
    theirs = state.acquire_lease("slow", timedelta(minutes=3))  # another run took it over
    assert theirs is not None
    keeper = LeaseKeeper(state, mine, timedelta(minutes=3))
    keeper.renew()
    with pytest.raises(LeaseLost, match="stopped writing"):
        keeper.check()
    assert state.lease_holder("slow") is not None  # the other run's lease is left alone


def test_the_heartbeat_renews_from_its_own_thread(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    state = store.for_tenant("t")
    lease = state.acquire_lease("slow", timedelta(minutes=3))
    assert lease is not None
    renewed = threading.Event()
    keeper = LeaseKeeper(state, lease, timedelta(milliseconds=30))
    real_renew = keeper.renew
    monkeypatch.setattr(keeper, "renew", lambda: (real_renew(), renewed.set()))
    with keeper:
        assert renewed.wait(timeout=10)
    assert state.lease_holder("slow") is None  # released at the end


def test_a_run_report_is_stored_and_logged_as_one_line(world: World, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="nexxt365"):
        report = runner.run("slow", world.tenant, store, verify=world.verify)
    assert report.exit_code == 0
    assert report.graph_requests >= 2 and report.clearvox_requests == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("nexxt365 run ")]
    assert len(lines) == 1 and "sync=slow" in lines[0] and f"tenant={world.tenant.key}" in lines[0]
    runs = store.for_tenant(world.tenant.key).rows("runs")
    assert [json.loads(r["report"])["sync"] for r in runs.values()] == ["slow"]


def test_a_crash_is_reported_without_a_traceback_and_without_stopping_other_tenants(
        world: World, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with World() as other, caplog.at_level("INFO", logger="nexxt365"):
        bad = runner.run("crash", world.tenant, store, verify=world.verify)
        good = runner.run("slow", other.tenant, store, verify=other.verify)
    assert bad.exit_code == 1 and "unexpected RuntimeError" in (bad.error or "")
    assert good.exit_code == 0
    assert not [r for r in caplog.records if r.levelname != "DEBUG" and r.exc_info], "tracebacks stay in the debug log"


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


def test_every_sync_is_declared_once_in_the_registry() -> None:
    names = [s.name for s in base.syncs() if s.name in ("users", "contacts", "calendar")]
    assert sorted(names) == ["calendar", "contacts", "users"]
    for spec in base.syncs():
        assert spec.lease <= timedelta(minutes=5), "a dead run's lease is taken over within 5 minutes (README)"
        assert spec.schedule_setting == f"NEXXT365_{spec.name.upper()}_SCHEDULE" and spec.queue == f"nexxt365-{spec.name}"
