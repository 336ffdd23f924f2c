"""Structured telemetry: one record per run, and the early warnings, with the tenant and sync as dimensions.

A record is a log record of the `nexxt365.telemetry` logger whose `extra`
fields (the constants below) become custom dimensions in Application Insights
(`AppTraces.Properties` in the Log Analytics workspace). The workbook and the
alert rules under infra/ query exactly these names; tests/unit/test_telemetry.py
checks that every field a query uses is one of them.

Export follows Microsoft's guidance for Python Functions: the Azure Monitor
OpenTelemetry distro (`configure_azure_monitor`), here for this logger only
(no tracing, metrics, live metrics or library instrumentation, so that no URL
or request detail is exported), and only when APPLICATIONINSIGHTS_CONNECTION_STRING
is set; with APPLICATIONINSIGHTS_AUTHENTICATION_STRING `Authorization=AAD` it
signs in with the app's managed identity (local auth is off in infra/). On a
laptop or in tests nothing is configured and the records stay in the process.

A record carries counts, codes and durations only: never an item's details
(names, emails, ids), an error text or a secret.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.report import RunReport
from shared.status import COUNTS, count_of, error_class, held_count, result_of

LOGGER = "nexxt365.telemetry"

# Custom dimensions (field names). The KQL under infra/ uses these names.
KIND = "nexxt365_kind"  # RUN or WARNING
TENANT = "nexxt365_tenant"
SYNC = "nexxt365_sync"
RESULT = "nexxt365_result"  # shared.status: ok | failed | error | not_run | backed_off
EXIT_CODE = "nexxt365_exit_code"
ERROR_CLASS = "nexxt365_error_class"  # admin_fix | transient | unexpected | item | ""
DURATION_MS = "nexxt365_duration_ms"
GRAPH_REQUESTS = "nexxt365_graph_requests"
CLEARVOX_REQUESTS = "nexxt365_clearvox_requests"
RETRIES = "nexxt365_retries"
SKIPPED = "nexxt365_skipped"
FAILED = "nexxt365_failed"
HELD = "nexxt365_held"
CODE = "nexxt365_code"  # a warning's code (shared.status codes)
COUNT = "nexxt365_count"  # how many items a warning is about
DAYS_LEFT = "nexxt365_days_left"  # secret_expiring: days until the client secret expires
AGE_HOURS = "nexxt365_age_hours"  # how long the warned condition has lasted
COUNT_FIELDS = {what: f"nexxt365_{what}" for what in COUNTS}
FIELDS = frozenset({KIND, TENANT, SYNC, RESULT, EXIT_CODE, ERROR_CLASS, DURATION_MS, GRAPH_REQUESTS, CLEARVOX_REQUESTS,
                    RETRIES, SKIPPED, FAILED, HELD, CODE, COUNT, DAYS_LEFT, AGE_HOURS, *COUNT_FIELDS.values()})
RUN, WARNING = "run", "warning"

# Library instrumentations the distro would switch on by default; none is wanted (URLs may name users).
_INSTRUMENTATIONS = ("azure_sdk", "django", "fastapi", "flask", "httpx", "psycopg2", "requests", "urllib", "urllib3")

log = logging.getLogger(LOGGER)
_setup_lock = threading.Lock()
_configured: bool | None = None


def setup(env: Mapping[str, str] | None = None) -> bool:
    """Export the telemetry logger to Application Insights once per process, when a connection string is set."""
    global _configured
    env = os.environ if env is None else env
    with _setup_lock:
        if _configured is not None:
            return _configured
        connection = (env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or "").strip()
        _configured = bool(connection) and _configure(connection, env)
        return _configured


def _configure(connection: str, env: Mapping[str, str]) -> bool:
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(connection_string=connection, credential=_credential(env), logger_name=LOGGER,
                                disable_tracing=True, disable_metrics=True, enable_live_metrics=False,
                                enable_performance_counters=False,
                                instrumentation_options={name: {"enabled": False} for name in _INSTRUMENTATIONS})
    except Exception as exc:  # telemetry must never stop a sync
        logging.getLogger("nexxt365").warning("nexxt365 telemetry is not exported: %s", type(exc).__name__)
        return False
    log.propagate = False  # exported directly; the host's own log forwarding would send each record twice
    return True


def _credential(env: Mapping[str, str]) -> Any:
    """The managed identity named by APPLICATIONINSIGHTS_AUTHENTICATION_STRING (`ClientId=...;Authorization=AAD`)."""
    parts = dict(p.split("=", 1) for p in (env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING") or "").split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=parts.get("ClientId") or None)


def emit(message: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Log one telemetry record; returns its fields (for the caller and tests)."""
    setup()
    record = {k: v for k, v in fields.items() if k in FIELDS}
    log.info(message, extra=record)
    return record


def run_record(report: RunReport, now: datetime | None = None) -> dict[str, Any]:
    """The fields of one run's record: counts, result, error class, duration and request counts."""
    doc = report.to_json()
    elapsed = (now or datetime.now(UTC)) - report.started
    return {
        KIND: RUN, TENANT: report.tenant, SYNC: report.sync, RESULT: result_of(doc), EXIT_CODE: report.exit_code,
        ERROR_CLASS: error_class(doc), DURATION_MS: max(0, int(elapsed.total_seconds() * 1000)),
        GRAPH_REQUESTS: report.graph_requests, CLEARVOX_REQUESTS: report.clearvox_requests, RETRIES: report.retries,
        SKIPPED: len(report.skipped), FAILED: len(report.failed), HELD: held_count(doc),
        **{COUNT_FIELDS[what]: count_of(doc, what) for what in COUNTS},
    }


def emit_run(report: RunReport) -> dict[str, Any]:
    fields = run_record(report)
    return emit(f"telemetry run {report.sync} {fields[RESULT]}", fields)


def emit_warning(tenant: str, code: str, *, sync: str = "", count: int = 0, days_left: int | None = None,
                 age_hours: int = 0) -> dict[str, Any]:
    fields: dict[str, Any] = {KIND: WARNING, TENANT: tenant, SYNC: sync, CODE: code, COUNT: count, AGE_HOURS: age_hours}
    if days_left is not None:
        fields[DAYS_LEFT] = days_left
    return emit(f"telemetry warning {code}", fields)
