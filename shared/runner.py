"""One sync for one tenant: lease -> clients -> sync -> report.

Every customer is isolated: whatever happens in one tenant's run is caught,
reported with the tenant and a reason, and never stops the others. A tenant
whose credentials or ClearVox key keep failing is backed off exponentially
(to at most once an hour, reset by the first success) instead of being
hammered every minute.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.clearvox import ClearVox
from shared.errors import (
    EXIT_CONFIG,
    EXIT_ITEM_FAILURES,
    AccountNotFound,
    ClearVoxError,
    ClearVoxForbidden,
    ClearVoxUnauthorized,
    ConfigError,
    ConsentError,
    GraphAuthError,
    GraphError,
    LicenseRequired,
    Nexxt365Error,
)
from shared.graph.client import Graph
from shared.report import RunReport
from shared.settings import Options, Settings, Tenant
from shared.state import State, Store

log = logging.getLogger("nexxt365")

SYNCS: dict[str, str] = {
    "users": "shared.sync.users.run:run_users",
    "contacts": "shared.sync.contacts.run:run_contacts",
    "calendar": "shared.sync.calendar.run:run_calendar",
}
LEASES = {"users": timedelta(minutes=30), "contacts": timedelta(minutes=60), "calendar": timedelta(minutes=5)}
MAX_BACKOFF = timedelta(hours=1)
TENANT_CONCURRENCY = 4
# Failures that repeat until an administrator fixes something: back off.
_ADMIN_FIXES = (AccountNotFound, GraphAuthError, ConsentError, ClearVoxUnauthorized, ClearVoxForbidden, LicenseRequired, ConfigError)


@dataclass
class SyncContext:
    """What a sync's entry point gets: clients, state, report and the run's flags."""

    tenant: Tenant
    graph: Graph
    clearvox: ClearVox
    state: State
    report: RunReport
    dry_run: bool = False
    at: datetime | None = None
    args: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = log

    @property
    def options(self) -> Options:
        return self.tenant.options

    @property
    def now(self) -> datetime:
        return self.at or datetime.now(UTC)


def sync_function(sync: str) -> Callable[[SyncContext], None]:
    module, _, name = SYNCS[sync].partition(":")
    fn: Callable[[SyncContext], None] = getattr(importlib.import_module(module), name)
    return fn


def clients(tenant: Tenant, verify: str | bool | None = None, sync: str = "") -> tuple[Graph, ClearVox]:
    # The calendar runs every minute: waiting longer than that for a throttled Graph only delays the next run.
    graph = Graph(tenant, verify=verify, max_retry_after=10.0 if sync == "calendar" else 60.0)
    cv = ClearVox(tenant.clearvox_url, tenant.clearvox_api_key(), tenant.clearvox_account,
                  verify=verify, pool_size=max(tenant.options.clearvox_concurrency * 2, 8))
    return graph, cv


def run(sync: str, tenant: Tenant, store: Store, *, dry_run: bool = False, at: datetime | None = None,
        args: dict[str, Any] | None = None, verify: str | bool | None = None, respect_backoff: bool = True) -> RunReport:
    """Run one sync for one tenant and return its report; never raises for the tenant's own problems."""
    report = RunReport(sync, tenant.key, dry_run)
    state = store.for_tenant(tenant.key)
    now = datetime.now(UTC)
    if respect_backoff and not dry_run:
        health = state.get("health", sync) or {}
        next_try = health.get("next_try")
        if isinstance(next_try, datetime) and next_try > now:
            report.fail_run(f"backed off after {health.get('failures')} failed runs until {next_try:%Y-%m-%d %H:%M} UTC; "
                            f"last error: {health.get('last_error')}", EXIT_CONFIG)
            report.extra["backed_off"] = True
            log.warning(report.summary())
            return report
    lease = None if dry_run else state.acquire_lease(sync, LEASES.get(sync, timedelta(minutes=30)))
    if lease is None and not dry_run:
        report.extra["not_run"] = "another run of this sync for this tenant is in progress"
        log.info("nexxt365 run sync=%s tenant=%s not started: another run holds the lease", sync, tenant.key)
        return report
    graph: Graph | None = None
    cv: ClearVox | None = None
    try:
        graph, cv = clients(tenant, verify, sync)
        ctx = SyncContext(tenant, graph, cv, state, report, dry_run, at, dict(args or {}))
        sync_function(sync)(ctx)
        if not dry_run:
            state.delete("health", [sync])
    except _ADMIN_FIXES as exc:
        report.fail_run(str(exc), EXIT_CONFIG)
        if not dry_run:
            _record_failure(state, sync, str(exc), now)
    except (GraphError, ClearVoxError) as exc:  # outage or throttling: the next run retries
        report.fail_run(str(exc), EXIT_ITEM_FAILURES)
    except Nexxt365Error as exc:
        report.fail_run(str(exc), exc.exit_code)
    except Exception as exc:  # one tenant's bug must not stop the others
        log.exception("nexxt365 sync=%s tenant=%s crashed", sync, tenant.key)
        report.fail_run(f"unexpected {type(exc).__name__} during the {sync} sync; see the function log", EXIT_ITEM_FAILURES)
    finally:
        if graph is not None:
            report.graph_requests = graph.stats.requests
            report.retries += graph.stats.retries
        if cv is not None:
            report.clearvox_requests = cv.stats.requests
            report.retries += cv.stats.retries
        if lease is not None:
            try:
                state.release_lease(lease)
            except Exception:  # the lease expires by itself
                log.warning("nexxt365 sync=%s tenant=%s could not release its lease", sync, tenant.key)
        if not dry_run:
            try:
                state.save_run(sync, report.to_json())
            except Exception:
                log.warning("nexxt365 sync=%s tenant=%s could not store its run report", sync, tenant.key)
    (log.error if report.error else log.info)(report.summary())
    return report


def _record_failure(state: State, sync: str, error: str, now: datetime) -> None:
    health = state.get("health", sync) or {}
    failures = int(health.get("failures") or 0) + 1
    delay = min(timedelta(minutes=2 ** (failures - 1)), MAX_BACKOFF)
    state.upsert("health", {sync: {"failures": failures, "next_try": now + delay, "last_error": error[:1000]}})


def run_all(sync: str, settings: Settings | None = None, **kwargs: Any) -> list[RunReport]:
    """The timer entry point: every tenant, isolated from each other."""
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
