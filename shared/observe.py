"""After every run: its telemetry record, and once a day per customer the early warnings.

The timers themselves warn, so a partner hears of a problem before the
customer calls: a client secret expiring within 30 days, changes held for
confirmation, users waiting for a link, mailboxes outside the app's scope.
Each is a telemetry record of kind "warning" with its code (the codes of
shared/status.py), which the alert rules in infra/modules/alerts.bicep fire on.

Once a day: a row in the notices table (partition `<tenant>|warnings`, as the
calendar sync keeps its once-a-day mailbox notices) remembers when the tenant
was last checked, and per warning since when it holds, so a warning carries
its age (the held-changes alert fires when it is more than a day old). A
condition that a run reports for the first time (new held changes) is warned
at once; a condition that is gone loses its row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.report import RunReport
from shared.settings import Tenant
from shared.state import State
from shared.status import HELD_CHANGES, MAILBOX_OUT_OF_SCOPE, SECRET_EXPIRING, UNLINKED_USERS, Item, held_count, tenant_status
from shared.telemetry import emit_run, emit_warning

NOTICES_TABLE = "notices"
WARNING_SCOPE = "warnings"
CHECKED = "checked"  # the RowKey of the once-a-day row
INTERVAL = timedelta(days=1)
WARNING_CODES = frozenset({SECRET_EXPIRING, HELD_CHANGES, UNLINKED_USERS, MAILBOX_OUT_OF_SCOPE})

log = logging.getLogger("nexxt365")


def observe_run(report: RunReport, tenant: Tenant, state: State) -> None:
    """The runner's one call after a run: never raises, never delays a run more than a few table reads."""
    if report.dry_run:
        return
    try:
        emit_run(report)
        daily_warnings(tenant, state, report)
    except Exception as exc:  # telemetry must never fail a sync
        log.warning("nexxt365 sync=%s tenant=%s telemetry failed: %s", report.sync, report.tenant, type(exc).__name__)


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _key(item: Item) -> str:
    return f"{item.code}-{item.sync}" if item.sync else item.code


def _due(rows: Mapping[str, Mapping[str, Any]], report: RunReport | None, now: datetime) -> bool:
    """Once a day (or when the clock went back), and at once for changes this run held for the first time."""
    checked = _moment((rows.get(CHECKED) or {}).get("checked_at"))
    if checked is None or now >= checked + INTERVAL or now < checked:
        return True
    if report is None:
        return False
    return held_count(report.to_json()) > 0 and f"{HELD_CHANGES}-{report.sync}" not in rows


def daily_warnings(tenant: Tenant, state: State, report: RunReport | None = None,
                   now: datetime | None = None) -> list[dict[str, Any]]:
    """Emit this tenant's early warnings when due; returns the records emitted."""
    now = now or datetime.now(UTC)
    rows = state.rows(NOTICES_TABLE, scope=WARNING_SCOPE)
    if not _due(rows, report, now):
        return []
    status = tenant_status(tenant, state, now=now)
    items = [i for i in status.attention + status.notes if i.code in WARNING_CODES]
    keep: dict[str, dict[str, Any]] = {CHECKED: {"checked_at": now}}
    emitted = []
    for item in items:
        key = _key(item)
        since = _moment((rows.get(key) or {}).get("since")) or now
        keep[key] = {"code": item.code, "sync": item.sync, "since": since, "reported_at": now}
        days = status.secret_days if item.code == SECRET_EXPIRING else None
        emitted.append(emit_warning(tenant.key, item.code, sync=item.sync, count=item.count, days_left=days,
                                    age_hours=int((now - since).total_seconds() // 3600)))
    state.upsert(NOTICES_TABLE, keep, scope=WARNING_SCOPE)
    state.delete(NOTICES_TABLE, sorted(set(rows) - set(keep)), scope=WARNING_SCOPE)
    return emitted
