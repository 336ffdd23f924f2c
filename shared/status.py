"""`nexxt365 status`: every customer x sync at a glance, and what needs attention with its fix.

For each tenant and each registered sync: the newest run report (one cheap
query: the runs table's RowKey sorts newest first, so the first row of the
sync is the newest), the back-off row in the health table, the changes the
newest report held for confirmation, the users waiting for a link, the
mailboxes out of the app's scope, and the client secret's expiry.

`attention` lists what a partner must act on (exit 1): a failing, backed-off,
not run or stale sync, held changes, a secret expiring within 30 days, poisoned
queue messages. `notes` lists what is worth knowing but needs no action today
(users waiting for a link, mailboxes out of scope, a sync that never ran yet,
an unknown secret expiry). The early warnings of shared/observe.py are built
from the same items, so the status, the telemetry and the alerts agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared import ncrontab
from shared.errors import EXIT_CONFIG, EXIT_ITEM_FAILURES, Nexxt365Error
from shared.queues import poison_count
from shared.settings import Settings, Tenant
from shared.state import State
from shared.sync.base import SyncSpec, syncs

SECRET_WARNING = timedelta(days=30)  # as doctor: warn 30 days ahead
STALE_INTERVALS = 3  # a sync whose newest run is older than this many schedule intervals (+ its lease) is stale

# Results of a run, as `status` shows them and the telemetry records carry them.
OK, FAILED, ERROR, NOT_RUN, BACKED_OFF, NEVER = "ok", "failed", "error", "not_run", "backed_off", "never"

# Codes of the attention items and notes; the early warnings and the alert queries use the same codes.
SYNC_FAILING = "sync_failing"
SYNC_BACKED_OFF = "sync_backed_off"
SYNC_NOT_RUN = "sync_not_run"
SYNC_STALE = "sync_stale"
SYNC_NEVER_RUN = "sync_never_run"
HELD_CHANGES = "held_changes"
SECRET_EXPIRING = "secret_expiring"
SECRET_UNKNOWN = "secret_expiry_unknown"
UNLINKED_USERS = "unlinked_users"
MAILBOX_OUT_OF_SCOPE = "mailbox_out_of_scope"
POISONED_MESSAGES = "poisoned_messages"
CODES = (SYNC_FAILING, SYNC_BACKED_OFF, SYNC_NOT_RUN, SYNC_STALE, SYNC_NEVER_RUN, HELD_CHANGES, SECRET_EXPIRING,
         SECRET_UNKNOWN, UNLINKED_USERS, MAILBOX_OUT_OF_SCOPE, POISONED_MESSAGES)
COUNTS = ("created", "updated", "linked", "deleted", "deactivated", "unchanged")


# ---------------------------------------------------------------- reading one run report

def result_of(report: Mapping[str, Any]) -> str:
    """ok | failed (items failed) | error (the run stopped) | not_run (lease held) | backed_off, of a stored report."""
    if report.get("not_run"):
        return NOT_RUN
    if report.get("backed_off"):
        return BACKED_OFF
    if report.get("error"):
        return ERROR
    return FAILED if report.get("failed") or int(report.get("exit_code") or 0) == EXIT_ITEM_FAILURES else OK


def error_class(report: Mapping[str, Any]) -> str:
    """What the caller must do about the run's error: admin_fix | transient | unexpected | item | "" (none)."""
    result = result_of(report)
    if result == BACKED_OFF:
        return "admin_fix"
    if result == ERROR:
        if int(report.get("exit_code") or 0) == EXIT_CONFIG:
            return "admin_fix"
        return "unexpected" if str(report.get("error") or "").startswith("unexpected ") else "transient"
    return "item" if result == FAILED else ""


def held_count(report: Mapping[str, Any]) -> int:
    """Changes the run held for confirmation: users report the held deactivations, contacts a count of deletions."""
    held = report.get("held")
    if isinstance(held, list):
        return len(held)
    return held if isinstance(held, int) and not isinstance(held, bool) else 0


def count_of(report: Mapping[str, Any], what: str) -> int:
    value = report.get(what)
    return len(value) if isinstance(value, list) else int(value or 0)


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class Item:
    """Something needing attention (or worth a note), with what to do about it."""

    code: str
    message: str
    fix: str
    sync: str = ""
    count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, **({"sync": self.sync} if self.sync else {}), "message": self.message, "fix": self.fix,
                **({"count": self.count} if self.count else {})}


@dataclass
class SyncStatus:
    sync: str
    last_run: datetime | None = None
    result: str = NEVER
    counts: dict[str, int] = field(default_factory=dict)
    failed_items: int = 0
    failures: int = 0  # consecutive failed runs that back the tenant off (health row)
    next_try: datetime | None = None
    last_error: str = ""
    held: int = 0
    stale: bool = False
    poisoned: int | None = None  # None: not known (no queue fan-out)

    def to_json(self) -> dict[str, Any]:
        return {"last_run": _iso(self.last_run), "result": self.result, "failures": self.failures,
                "next_try": _iso(self.next_try), "counts": self.counts, "failed_items": self.failed_items,
                "held": self.held, "stale": self.stale, "last_error": self.last_error or None,
                **({"poisoned": self.poisoned} if self.poisoned is not None else {})}


@dataclass
class TenantStatus:
    tenant: str
    syncs: dict[str, SyncStatus] = field(default_factory=dict)
    secret_expires: date | None = None
    secret_days: int | None = None
    unlinked: int = 0
    out_of_scope: int = 0
    attention: list[Item] = field(default_factory=list)
    notes: list[Item] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "syncs": {name: s.to_json() for name, s in self.syncs.items()},
                "secret_expires": self.secret_expires.isoformat() if self.secret_expires else None,
                "secret_days_left": self.secret_days, "unlinked_users": self.unlinked,
                "mailboxes_out_of_scope": self.out_of_scope,
                "attention": [i.to_json() for i in self.attention], "notes": [i.to_json() for i in self.notes]}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# ---------------------------------------------------------------- state reads



def unlinked_count(state: State) -> int:
    from shared.sync.users.linking import unlinked_rows

    return len(unlinked_rows(state))


def out_of_scope_count(state: State) -> int:
    """Mailboxes the calendar sync found outside the app's mailbox scope (its notices rows)."""
    from shared.sync.calendar.ledger import NOTICE_SCOPE, NOTICES_TABLE, NoticeKind

    rows = state.rows(NOTICES_TABLE, scope=NOTICE_SCOPE)
    return sum(1 for row in rows.values() if row.get("kind") == str(NoticeKind.OUT_OF_SCOPE))


def secret_expiry(tenant: Tenant, today: date) -> tuple[date | None, int | None, str]:
    """(expiry date, days left, problem) of the client secret; a certificate or federated sign-in has none."""
    if tenant.client_secret is None:
        return None, None, ""
    try:
        expires = tenant.secret_expiry()
    except Nexxt365Error as exc:
        return None, None, str(exc)
    return expires, ((expires - today).days if expires else None), ""


# ---------------------------------------------------------------- one sync, one tenant



def sync_status(spec: SyncSpec, state: State, schedule: str, now: datetime) -> SyncStatus:
    status = SyncStatus(spec.name)
    at, report = state.newest_run(spec.name)
    if report is not None:
        status.last_run = at
        status.result = result_of(report)
        status.counts = {what: count_of(report, what) for what in COUNTS}
        status.failed_items = count_of(report, "failed")
        status.held = held_count(report)
        status.last_error = str(report.get("error") or report.get("not_run") or "")
        status.stale = at is not None and now - at > STALE_INTERVALS * ncrontab.interval(schedule, at) + spec.lease
    health = state.get("health", spec.name) or {}
    status.failures = int(health.get("failures") or 0)
    next_try = health.get("next_try")
    status.next_try = next_try if isinstance(next_try, datetime) and next_try > now else None
    return status


def _sync_items(s: SyncStatus, schedule_setting: str) -> tuple[list[Item], list[Item]]:
    """(attention, notes) about one sync."""
    attention: list[Item] = []
    run = f"`nexxt365 sync {s.sync}`"
    if s.result == NEVER:
        return [], [Item(SYNC_NEVER_RUN, f"the {s.sync} sync has not run yet", f"wait for its schedule "
                         f"({schedule_setting}) or run {run}; if it stays so, check that the function app runs", s.sync)]
    if s.result == BACKED_OFF or s.next_try is not None:
        attention.append(Item(SYNC_BACKED_OFF, f"the {s.sync} sync failed {s.failures} run(s) in a row and is backed off"
                              + (f" until {s.next_try:%Y-%m-%d %H:%M} UTC" if s.next_try else "") + f": {s.last_error}",
                              f"fix the cause named in the error (`nexxt365 doctor` checks sign-in, consent, permissions "
                              f"and the ClearVox key), then run {run}: it ignores the back-off", s.sync))
    elif s.result in (ERROR, FAILED):
        what = s.last_error or f"{s.failed_items} item(s) failed"
        attention.append(Item(SYNC_FAILING, f"the last {s.sync} run {'stopped' if s.result == ERROR else 'had failures'}: {what}",
                              f"see `nexxt365 sync {s.sync} --json` for each item's reason; `nexxt365 doctor` checks the "
                              "settings", s.sync, s.failed_items))
    elif s.result == NOT_RUN:
        attention.append(Item(SYNC_NOT_RUN, f"the last {s.sync} run did not start: {s.last_error}",
                              "a run still held the lease: if this repeats, a run overruns its schedule or hangs; see the "
                              "function log and the workbook's durations", s.sync))
    if s.stale:
        attention.append(Item(SYNC_STALE, f"no {s.sync} run since {s.last_run:%Y-%m-%d %H:%M} UTC",
                              f"check that the function app runs and its timers are enabled ({schedule_setting})", s.sync))
    if s.held:
        attention.append(Item(HELD_CHANGES, f"the {s.sync} sync holds {s.held} change(s) for confirmation",
                              _HELD_FIX.get(s.sync, f"review the held changes with `nexxt365 sync {s.sync} --dry-run`"),
                              s.sync, s.held))
    if s.poisoned:
        attention.append(Item(POISONED_MESSAGES, f"{s.poisoned} message(s) of the {s.sync} sync failed 5 times and wait in "
                              f"the queue nexxt365-{s.sync}-poison", "fix the cause in the function log, then move them "
                              "back to the queue (Storage browser) or delete them: the next timer tick queues new ones",
                              s.sync, s.poisoned))
    return attention, []


_HELD_FIX = {
    "users": "review them with `nexxt365 sync users --dry-run`; if right, run `nexxt365 sync users --confirm-deactivations`",
    "contacts": "review them with `nexxt365 sync contacts --dry-run`; if right, run "
                "`nexxt365 sync contacts --confirm-deletions`",
}


def _tenant_items(t: TenantStatus, problem: str, uses_secret: bool) -> tuple[list[Item], list[Item]]:
    attention: list[Item] = []
    notes: list[Item] = []
    rotate = ("create a new client secret in Entra ID > App registrations > your app > Certificates & secrets, store it "
              "(Key Vault or NEXXT365_CLIENT_SECRET) with its new expiry, and delete the old one (docs/deploy.md, "
              "'Rotating the client secret')")
    if problem:
        attention.append(Item(SECRET_EXPIRING, f"the client secret's expiry could not be read: {problem}", rotate))
    elif t.secret_days is not None and t.secret_days <= SECRET_WARNING.days:
        when = f"expired on {t.secret_expires}" if t.secret_days < 0 else f"expires on {t.secret_expires} ({t.secret_days} days)"
        attention.append(Item(SECRET_EXPIRING, f"the client secret {when}", rotate, count=max(t.secret_days, 0)))
    elif uses_secret and t.secret_expires is None:
        notes.append(Item(SECRET_UNKNOWN, "the client secret's expiry is unknown", "set NEXXT365_CLIENT_SECRET_EXPIRES (or "
                          "the Key Vault secret's expiry) to the date shown in Certificates & secrets"))
    if t.unlinked:
        notes.append(Item(UNLINKED_USERS, f"{t.unlinked} user(s) exist in ClearVox and wait for a link", "paste each "
                          "Object-ID into \"Extern toepassing ID\", or review `nexxt365 report unlinked --csv > FILE` and "
                          "run `nexxt365 link --csv FILE`", "users", t.unlinked))
    if t.out_of_scope:
        notes.append(Item(MAILBOX_OUT_OF_SCOPE, f"{t.out_of_scope} mailbox(es) are outside the app's mailbox scope",
                          "add those users to the group of the Exchange application access policy / RBAC for "
                          "Applications scope if they have ClearVox (docs/calendar.md)", "calendar", t.out_of_scope))
    return attention, notes


def tenant_status(tenant: Tenant, state: State, *, now: datetime | None = None,
                  schedule: Callable[[SyncSpec], str] = lambda spec: spec.schedule_default,
                  poisoned: Callable[[SyncSpec], int | None] = lambda spec: None) -> TenantStatus:
    """Everything `status` shows about one tenant, with its attention items and notes."""
    now = now or datetime.now(UTC)
    t = TenantStatus(tenant.key)
    for spec in syncs():
        s = sync_status(spec, state, schedule(spec), now)
        s.poisoned = poisoned(spec)
        t.syncs[spec.name] = s
        attention, notes = _sync_items(s, spec.schedule_setting)
        t.attention += attention
        t.notes += notes
    t.secret_expires, t.secret_days, problem = secret_expiry(tenant, now.date())
    t.unlinked = unlinked_count(state)
    t.out_of_scope = out_of_scope_count(state)
    attention, notes = _tenant_items(t, problem, tenant.client_secret is not None)
    t.attention += attention
    t.notes += notes
    return t


def schedules(settings: Settings) -> Callable[[SyncSpec], str]:
    """Each sync's NCRONTAB schedule from the app settings (its default when unset)."""
    return lambda spec: (settings.get(spec.schedule_setting) or "").strip() or spec.schedule_default


def poison_counts(settings: Settings) -> Callable[[SyncSpec], int | None]:
    """Poisoned queue messages per sync (queue fan-out); None when the queues cannot be read."""

    def count(spec: SyncSpec) -> int | None:
        try:
            return poison_count(settings, spec.queue)
        except Exception:  # a queue that cannot be read leaves the column unknown ("-"); the rest of status still shows
            return None

    return count


# ---------------------------------------------------------------- the command

def fleet_status(settings: Settings, only: str | None = None, now: datetime | None = None,
                 tenants: list[Tenant] | None = None) -> list[TenantStatus]:
    """The status of every tenant this app serves (`settings.tenants()` unless given), or only of `only`."""
    from shared.state import Store

    tenants = settings.tenants() if tenants is None else tenants
    if only:
        tenants = [t for t in tenants if t.key == only]
        if not tenants:
            raise Nexxt365Error(f"--tenant {only!r} is not a customer of this app (the RowKey of the tenants table).")
    store = Store(settings.state_connection())
    schedule, poisoned = schedules(settings), poison_counts(settings)
    return [tenant_status(t, store.for_tenant(t.key), now=now, schedule=schedule, poisoned=poisoned) for t in tenants]


def exit_code(statuses: list[TenantStatus]) -> int:
    """0 all healthy, 1 something needs attention."""
    return EXIT_ITEM_FAILURES if any(t.attention for t in statuses) else 0


def run_status(settings: Settings, only: str | None, as_json: bool, out: Any) -> int:
    """`nexxt365 status [--json] [--tenant KEY]`."""
    import json

    statuses = fleet_status(settings, only)
    if as_json:
        print(json.dumps({"tenants": [t.to_json() for t in statuses]}, indent=2), file=out)
    else:
        print(render(statuses), file=out)
    return exit_code(statuses)


def _when(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    minutes = int((now - value).total_seconds() // 60)
    ago = f"{minutes} min ago" if minutes < 120 else f"{minutes // 60} h ago" if minutes < 48 * 60 else f"{minutes // 1440} d ago"
    return f"{value:%Y-%m-%d %H:%M} ({ago})"


def _row(s: SyncStatus, now: datetime) -> list[str]:
    counts = ", ".join(f"{k} {v}" for k, v in s.counts.items() if v) or "-"
    backoff = f"until {s.next_try:%H:%M}" if s.next_try else "-"
    queue = "-" if s.poisoned is None else str(s.poisoned)
    return [s.sync, _when(s.last_run, now), s.result + (" (stale)" if s.stale else ""), counts,
            str(s.failures), backoff, str(s.held), queue]


def render(statuses: list[TenantStatus], now: datetime | None = None) -> str:
    """A readable table per tenant, then what needs attention (with the fix) and the notes."""
    now = now or datetime.now(UTC)
    lines: list[str] = []
    head = ["sync", "last run (UTC)", "result", "counts", "failures", "back-off", "held", "poisoned"]
    for t in statuses:
        secret = ("-" if t.secret_expires is None and t.secret_days is None
                  else f"{t.secret_expires} ({t.secret_days} days)")
        verdict = "needs attention" if t.attention else "healthy"
        lines.append(f"tenant {t.tenant}: {verdict}; secret expires {secret}; users waiting for a link {t.unlinked}")
        table = [head] + [_row(s, now) for s in t.syncs.values()]
        widths = [max(len(r[i]) for r in table) for i in range(len(head))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
        lines += [f"  ATTENTION {i.message}\n    fix: {i.fix}" for i in t.attention]
        lines += [f"  note {i.message}\n    fix: {i.fix}" for i in t.notes]
        lines.append("")
    healthy = sum(not t.attention for t in statuses)
    lines.append(f"{healthy} of {len(statuses)} customer(s) healthy" +
                 ("" if healthy == len(statuses) else "; exit 1: something needs attention"))
    return "\n".join(lines)
