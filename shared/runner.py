"""One sync for one tenant: back-off -> lease -> clients -> sync -> report.

Every customer is isolated: whatever happens in one tenant's run is caught,
reported with the tenant and a reason, and never stops the others. A tenant
whose credentials or ClearVox key keep failing (an `AdminFix`) is backed off
exponentially (to at most once an hour, reset by the first success) instead
of being hammered every minute. A run holds the (tenant, sync) lease while it
lives and renews it; a run that finds the lease held is not run (exit 3).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.clients import clients
from shared.errors import EXIT_CONFIG, EXIT_ITEM_FAILURES, AdminFix, Nexxt365Error, Transient
from shared.observe import observe_run
from shared.report import RunReport
from shared.settings import Settings, Tenant
from shared.state import LeaseKeeper, State, Store
from shared.sync.base import SyncContext, SyncSpec, spec_for
from shared.sync.split import lease_name

log = logging.getLogger("nexxt365")

MAX_BACKOFF = timedelta(hours=1)
TENANT_CONCURRENCY = 4


def run(sync: str, tenant: Tenant, store: Store, *, dry_run: bool = False, at: datetime | None = None,
        args: dict[str, Any] | None = None, verify: str | bool | None = None, respect_backoff: bool = True) -> RunReport:
    """Run one sync for one tenant and return its report; never raises for the tenant's own problems."""
    spec = spec_for(sync)
    report = RunReport(sync, tenant.key, dry_run)
    state = store.for_tenant(tenant.key)
    if respect_backoff and not dry_run and _backed_off(state, sync, report):
        return report
    try:
        with _leased(state, spec, lease_name(sync, args or {}), report, dry_run) as keeper:
            if keeper is not None or dry_run:
                _run_sync(spec, tenant, state, report, verify, keeper, at, dict(args or {}))
    except Exception as exc:  # the state store failed around the run (lease, health)
        _fail(report, exc, spec)
    if not dry_run:
        _store_report(state, report)
    observe_run(report, tenant, state)
    (log.error if report.error else log.info)(report.summary())
    return report


@contextmanager
def _leased(state: State, spec: SyncSpec, name: str, report: RunReport, dry_run: bool) -> Iterator[LeaseKeeper | None]:
    """The run's lease `name`, renewed while it lives; None (and the report says so) when another run holds it."""
    if dry_run:
        yield None
        return
    lease = state.acquire_lease(name, spec.lease)
    if lease is None:
        _not_run(state, spec, name, report)
        yield None
        return
    with LeaseKeeper(state, lease, spec.lease) as keeper:
        yield keeper


def _not_run(state: State, spec: SyncSpec, name: str, report: RunReport) -> None:
    holder = state.lease_holder(name)
    since, until = holder if holder else (None, None)
    when = (f" since {since:%Y-%m-%d %H:%M:%S} UTC" if since else "") + (
        f"; its lease runs until {until:%Y-%m-%d %H:%M:%S} UTC unless renewed" if until else "")
    report.extra["not_run"] = f"another run of the {spec.name} sync for this tenant holds the lease{when}"
    log.info("nexxt365 run sync=%s tenant=%s not started: %s", spec.name, report.tenant, report.extra["not_run"])


def _run_sync(spec: SyncSpec, tenant: Tenant, state: State, report: RunReport, verify: str | bool | None,
              keeper: LeaseKeeper | None, at: datetime | None, args: dict[str, Any]) -> None:
    graph = cv = None
    try:
        with clients(tenant, verify, graph_max_retry_after=spec.graph_max_retry_after) as (graph, cv):
            spec.run(SyncContext(tenant, graph, cv, state, report, report.dry_run, at, args, spec=spec, lease=keeper,
                                 deadline=time.monotonic() + spec.budget.total_seconds()))
        if not report.dry_run:
            state.delete("health", [spec.name])
    except Exception as exc:
        _fail(report, exc, spec, None if report.dry_run else state)
    finally:
        for client, attr in ((graph, "graph_requests"), (cv, "clearvox_requests")):
            if client is not None:
                setattr(report, attr, client.stats.requests)
                report.retries += client.stats.retries


def _fail(report: RunReport, exc: Exception, spec: SyncSpec, state: State | None = None) -> None:
    """Report a run-level failure by what the caller must do; an admin fix also backs the tenant off."""
    if isinstance(exc, AdminFix):
        report.fail_run(str(exc), EXIT_CONFIG)
        if state is not None:
            _record_failure(state, spec.name, str(exc), datetime.now(UTC))
    elif isinstance(exc, Transient | Nexxt365Error):  # outage, throttling, a lost lease: the next run retries
        report.fail_run(str(exc), EXIT_ITEM_FAILURES)
    else:  # one tenant's bug must not stop the others; the traceback goes to the log, not the operator
        log.debug("nexxt365 sync=%s tenant=%s crashed", spec.name, report.tenant, exc_info=exc)
        log.error("nexxt365 sync=%s tenant=%s stopped on an unexpected %s", spec.name, report.tenant,
                  type(exc).__name__)
        report.fail_run(f"unexpected {type(exc).__name__} during the {spec.name} sync; see the function log",
                        EXIT_ITEM_FAILURES)


def backed_off_until(state: State, sync: str, now: datetime | None = None) -> datetime | None:
    """Until when this tenant's sync is backed off after failed runs (an admin must fix something), or None."""
    return backoff_end(state.get("health", sync), now)


def backoff_end(health: dict[str, Any] | None, now: datetime | None = None) -> datetime | None:
    """The same from a health row already read (the dispatcher reads every tenant's row in one query)."""
    next_try = (health or {}).get("next_try")
    return next_try if isinstance(next_try, datetime) and next_try > (now or datetime.now(UTC)) else None


def _backed_off(state: State, sync: str, report: RunReport) -> bool:
    next_try = backed_off_until(state, sync)
    if next_try is None:
        return False
    health = state.get("health", sync) or {}
    report.fail_run(f"backed off after {health.get('failures')} failed runs until {next_try:%Y-%m-%d %H:%M} UTC; "
                    f"last error: {health.get('last_error')}", EXIT_CONFIG)
    report.extra["backed_off"] = True
    log.warning(report.summary())
    return True


def _store_report(state: State, report: RunReport) -> None:
    try:
        state.save_run(report.sync, report.to_json())
    except Exception:
        log.warning("nexxt365 sync=%s tenant=%s could not store its run report", report.sync, report.tenant)


def _record_failure(state: State, sync: str, error: str, now: datetime) -> None:
    health = state.get("health", sync) or {}
    failures = int(health.get("failures") or 0) + 1
    delay = min(timedelta(minutes=2 ** (failures - 1)), MAX_BACKOFF)
    state.upsert("health", {sync: {"failures": failures, "next_try": now + delay, "last_error": error[:1000]}})


def run_all(sync: str, settings: Settings | None = None, **kwargs: Any) -> list[RunReport]:
    """The timer entry point in inline mode: every tenant, isolated from each other."""
    settings = settings or Settings()
    try:
        store = Store(settings.state_connection())
        tenants = settings.tenants()
    except Nexxt365Error as exc:
        log.error("nexxt365 sync=%s cannot start: %s", sync, exc)
        return []

    def one(tenant: Tenant) -> RunReport | None:
        try:
            return run(sync, tenant, store, **kwargs)
        except Exception as exc:  # e.g. state storage unreachable for this tenant
            log.error("nexxt365 sync=%s tenant=%s failed before the run: %s", sync, tenant.key, type(exc).__name__)
            return None

    # A few customers at a time: a slow or throttled customer must not make the others miss their minute.
    with ThreadPoolExecutor(max_workers=max(1, min(TENANT_CONCURRENCY, len(tenants)))) as pool:
        return [r for r in pool.map(one, tenants) if r is not None]
