"""Queue fan-out for multi-customer apps: timer -> one queue message per tenant -> queue-triggered runs.

With NEXXT365_FANOUT=queue (the default in multi-customer mode) a sync's timer only
dispatches: one message per tenant on the sync's queue (`SyncSpec.queue`, e.g.
`nexxt365-calendar`), JSON `{"sync", "tenant", "due"}` with `due` the tick it belongs
to. A tenant that is backed off is not dispatched. The queue-triggered function
next to the timer runs each message through `runner.run` (lease, isolation,
back-off, report), and Azure Functions scales those functions out over instances.

- A message whose sync's next tick has come (it is older than the schedule's
  interval) is dropped and reported (log, and a runs-table row with result
  "stale"): a calendar status from five minutes ago is wrong, not late.
- A run's own problems (not run, item failures, an admin fix) complete the
  message: the runner reports them and backs the tenant off. Anything that
  escapes (the state store or the tenants table unreachable, an unknown tenant, an
  unreadable message) makes the host retry it; after MAX_DEQUEUE dequeues the host
  moves it to `<queue>-poison` (`poison_count`, `nexxt365 status`).
- A calendar tenant with more linked users than `split.USERS_PER_PART` gets one
  message per user range (`"range": [start, end]`), so instances share it.

`nexxt365 dispatch SYNC` and `nexxt365 work SYNC [--until-empty]` do what the timer
and the queue trigger do, from a laptop; `work` mirrors the host's queue options.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared import ncrontab, runner
from shared.errors import EXIT_CONFIG, EXIT_ITEM_FAILURES, EXIT_OK, ConfigError, Nexxt365Error
from shared.queues import POISON_SUFFIX, queue_client
from shared.report import RunReport
from shared.settings import Settings, Tenant
from shared.state import State, Store
from shared.sync.base import SyncSpec, spec_for
from shared.sync.split import SPLIT_SYNCS, parts

if TYPE_CHECKING:
    import argparse
    from typing import TextIO

    from azure.storage.queue import QueueClient, QueueMessage

log = logging.getLogger("nexxt365")

# The host's queue options (host.json extensions.queues); `work` mirrors them, a test keeps them equal.
BATCH_SIZE = 16
NEW_BATCH_THRESHOLD = 8
MAX_DEQUEUE = 5
DISPATCH_CONCURRENCY = 16  # tenants dispatched at a time (one health read and one message each)
MESSAGE_TTL = timedelta(hours=1)  # a message nobody took within the hour expires unreported (the app was down)
POLL_SECONDS = 2.0  # `work` without --until-empty: how often an empty queue is asked again
TENANTS_TTL = timedelta(minutes=5)  # multi-customer mode: the tenants table is read again after this
SIZE_TABLE = "fanout"  # per tenant and sync: the linked users the last run saw (for splitting)


class BadMessage(Nexxt365Error):
    """A queue message that is not a fan-out message; it goes to the poison queue after its retries."""


# ---------------------------------------------------------------- the message


@dataclass(frozen=True)
class Message:
    sync: str
    tenant: str
    due: datetime
    range: tuple[int, int | None] | None = None
    users: int | None = None  # splittable syncs: the linked users known when dispatched

    def to_json(self) -> str:
        body: dict[str, Any] = {"sync": self.sync, "tenant": self.tenant, "due": self.due.strftime("%Y-%m-%dT%H:%M:%SZ")}
        if self.range is not None:
            body["range"] = list(self.range)
        if self.users is not None:
            body["users"] = self.users
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> Message:
        try:
            body = json.loads(text)
            due = datetime.fromisoformat(str(body["due"]).replace("Z", "+00:00"))
            span = body.get("range")
            users = body.get("users")
            return cls(str(body["sync"]), str(body["tenant"]), due if due.tzinfo else due.replace(tzinfo=UTC),
                       (int(span[0]), None if span[1] is None else int(span[1])) if span is not None else None,
                       int(users) if users is not None else None)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise BadMessage(f"not a fan-out message ({type(exc).__name__}): {text[:200]!r}") from None

    @property
    def args(self) -> dict[str, Any]:
        return {"range": list(self.range)} if self.range is not None else {}


def schedule_of(settings: Settings, spec: SyncSpec) -> str:
    return (settings.get(spec.schedule_setting) or "").strip() or spec.schedule_default


def stale_since(settings: Settings, message: Message, now: datetime | None = None) -> datetime | None:
    """When the message went stale (its sync's next tick after `due`), or None while it may still run."""
    following = ncrontab.next_after(schedule_of(settings, spec_for(message.sync)), message.due)
    return following if (now or datetime.now(UTC)) >= following else None


# ---------------------------------------------------------------- shared clients per process

_stores: dict[str, Store] = {}
_tenants: dict[tuple[str, ...], tuple[float, dict[str, Tenant]]] = {}
_cache_lock = threading.Lock()


def _store(settings: Settings) -> Store:
    connection = settings.state_connection()
    with _cache_lock:
        if connection not in _stores:
            _stores[connection] = Store(connection)
        return _stores[connection]


def _tenant(settings: Settings, key: str) -> Tenant:
    """The tenant of a message; in multi-customer mode the tenants table is cached for TENANTS_TTL, and read
    again when a key is missing (a customer added since)."""
    if not settings.multi_tenant:
        found = {t.key: t for t in settings.tenants()}
    else:
        cache_key = tuple(settings.get(n) or "" for n in ("NEXXT365_STATE", "NEXXT365_TENANTS_TABLE", "NEXXT365_KEY_VAULT_URL"))
        with _cache_lock:
            expires, found = _tenants.get(cache_key, (0.0, {}))
        if key not in found or time.monotonic() >= expires:
            found = {t.key: t for t in settings.tenants()}
            with _cache_lock:
                _tenants[cache_key] = (time.monotonic() + TENANTS_TTL.total_seconds(), found)
    if key not in found:
        raise ConfigError(f"tenant {key!r} of this queue message is not configured (any more): check the tenants table")
    return found[key]


# ---------------------------------------------------------------- the timer side


def on_timer(sync: str, settings: Settings | None = None) -> None:
    """What a sync's timer does: run every tenant itself (inline) or dispatch them (queue)."""
    settings = settings or Settings()
    try:
        mode = settings.fanout()
    except ConfigError as exc:
        log.error("nexxt365 sync=%s cannot start: %s", sync, exc)
        return
    if mode == "inline":
        runner.run_all(sync, settings)
        return
    try:
        dispatch(settings, sync)
    except Nexxt365Error as exc:
        log.error("nexxt365 dispatch sync=%s failed: %s", sync, exc)


@dataclass
class Dispatched:
    sync: str
    due: datetime
    messages: int = 0
    tenants: int = 0
    backed_off: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    split: dict[str, int] = field(default_factory=dict)  # tenant -> parts
    seconds: float = 0.0

    def summary(self) -> str:
        text = (f"dispatch sync={self.sync} due={self.due:%Y-%m-%dT%H:%M:%SZ}: {self.messages} message(s) for "
                f"{self.tenants - len(self.backed_off) - len(self.failed)} of {self.tenants} tenant(s) on "
                f"{spec_for(self.sync).queue} in {self.seconds:.2f} s")
        if self.split:
            text += "; split: " + ", ".join(f"{k} in {n} parts" for k, n in sorted(self.split.items()))
        if self.backed_off:
            text += f"; backed off (not dispatched): {', '.join(sorted(self.backed_off))}"
        if self.failed:
            text += f"; FAILED: {', '.join(sorted(self.failed))}"
        return text


def dispatch(settings: Settings, sync: str, *, now: datetime | None = None, only: str | None = None) -> Dispatched:
    """Put one message per tenant (one per part for a split tenant) on the sync's queue."""
    started = time.perf_counter()
    spec = spec_for(sync)
    due = ncrontab.latest_at_or_before(schedule_of(settings, spec), now or datetime.now(UTC))
    tenants = [t for t in settings.tenants() if only is None or t.key == only]
    if only is not None and not tenants:
        raise ConfigError(f"--tenant {only!r} is not configured.")
    store = _store(settings)
    queue = queue_client(settings, spec.queue)
    ttl = int(max(MESSAGE_TTL, 2 * ncrontab.interval(schedule_of(settings, spec), due)).total_seconds())
    result = Dispatched(sync, due, tenants=len(tenants))
    counting = threading.Lock()
    health = _rows_of_every_tenant(store, "health", sync)  # two queries, not two reads per tenant
    sizes = _rows_of_every_tenant(store, SIZE_TABLE, sync) if sync in SPLIT_SYNCS else {}

    def one(tenant: Tenant) -> None:
        try:
            until = runner.backoff_end(health.get(tenant.key))
            if until is not None:
                log.warning("nexxt365 dispatch sync=%s tenant=%s not dispatched: backed off until %s UTC",
                            sync, tenant.key, f"{until:%Y-%m-%d %H:%M}")
                result.backed_off.append(tenant.key)
                return
            messages = _messages(spec, tenant.key, sizes.get(tenant.key), due)
            for message in messages:
                queue.send_message(message.to_json(), time_to_live=ttl)
            with counting:
                result.messages += len(messages)
                if len(messages) > 1:
                    result.split[tenant.key] = len(messages)
        except Exception as exc:  # one tenant's state must not stop the others' messages
            log.error("nexxt365 dispatch sync=%s tenant=%s failed: %s", sync, tenant.key, type(exc).__name__)
            result.failed.append(tenant.key)

    with ThreadPoolExecutor(max_workers=max(1, min(DISPATCH_CONCURRENCY, len(tenants)))) as pool:
        list(pool.map(one, tenants))
    result.seconds = time.perf_counter() - started
    (log.error if result.failed else log.info)("nexxt365 " + result.summary())
    return result


def _rows_of_every_tenant(store: Store, table: str, sync: str) -> dict[str, dict[str, Any]]:
    """Each tenant's row `sync` of a per-tenant table, by tenant key (a tenant key is its PartitionKey)."""
    rows = store.table(table).query_entities("RowKey eq @sync", parameters={"sync": sync})
    return {str(row["PartitionKey"]): dict(row) for row in rows}


def _messages(spec: SyncSpec, tenant: str, size: dict[str, Any] | None, due: datetime) -> list[Message]:
    if spec.name not in SPLIT_SYNCS:
        return [Message(spec.name, tenant, due)]
    users = (size or {}).get("linked_users")
    known = int(users) if isinstance(users, int) else None
    ranges = parts(known or 0)
    if not ranges:
        return [Message(spec.name, tenant, due, users=known)]
    return [Message(spec.name, tenant, due, span, known) for span in ranges]


# ---------------------------------------------------------------- the queue-trigger side


def handle(text: str, *, settings: Settings | None = None, dequeue_count: int = 1, now: datetime | None = None) -> RunReport:
    """What the queue trigger does with one message. Returns the run's report; raises only when the host
    should retry the message (see the module docstring)."""
    settings = settings or Settings()
    message = Message.parse(text)
    spec = spec_for(message.sync)
    store = _store(settings)
    state = store.for_tenant(message.tenant)
    following = stale_since(settings, message, now)
    if following is not None:
        return _dropped(state, message, following, now or datetime.now(UTC))
    if dequeue_count > 1:
        log.warning("nexxt365 sync=%s tenant=%s: attempt %d of %d", message.sync, message.tenant, dequeue_count, MAX_DEQUEUE)
    report = runner.run(message.sync, _tenant(settings, message.tenant), store, args=message.args)
    total = report.extra.get("linked_total")
    if spec.name in SPLIT_SYNCS and isinstance(total, int) and total != message.users:
        state.upsert(SIZE_TABLE, {spec.name: {"linked_users": total}})
    return report


def _dropped(state: State, message: Message, following: datetime, now: datetime) -> RunReport:
    report = RunReport(message.sync, message.tenant)
    late = (now - message.due).total_seconds()
    report.fail_run(f"not run: the message due at {message.due:%Y-%m-%d %H:%M:%S} UTC was taken {late:.0f} s later, after the "
                    f"next tick ({following:%H:%M:%S} UTC); a late run would write outdated data, so it was dropped. "
                    "Workers do not keep up: see docs/deploy.md (queue fan-out).", EXIT_ITEM_FAILURES)
    report.extra.update({"result": "stale", "due": message.due.isoformat(), "late_seconds": round(late, 1)})
    if message.range is not None:
        report.extra["range"] = list(message.range)
    log.warning("nexxt365 stale sync=%s tenant=%s due=%s late_seconds=%.0f: dropped, not run",
                message.sync, message.tenant, message.due.isoformat(), late)
    try:
        state.save_run(message.sync, report.to_json())
    except Exception:
        log.warning("nexxt365 sync=%s tenant=%s could not store the stale report", message.sync, message.tenant)
    return report


# ---------------------------------------------------------------- `work`: the queue trigger from a laptop


@dataclass
class Worked:
    sync: str
    ran: int = 0
    stale: int = 0
    failed_runs: int = 0  # completed with item failures or a run-level error (reported in the runs table)
    retried: int = 0
    poisoned: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.poisoned or self.retried or self.failed_runs or self.stale:
            return EXIT_ITEM_FAILURES
        return EXIT_OK

    def summary(self) -> str:
        return (f"work sync={self.sync}: ran {self.ran}, stale (dropped) {self.stale}, with failures {self.failed_runs}, "
                f"retried {self.retried}, to {spec_for(self.sync).queue}{POISON_SUFFIX} {self.poisoned}, "
                f"in {self.seconds:.2f} s")


def work(settings: Settings, sync: str, *, until_empty: bool = False, concurrency: int = BATCH_SIZE,
         stop: threading.Event | None = None,
         on_report: Callable[[RunReport], None] = lambda report: None) -> Worked:
    """Take the sync's messages and run them as the host does: up to `concurrency` at a time, a new batch when
    no more than NEW_BATCH_THRESHOLD run; delete a message when it completed; a message whose handling raised
    is retried at once, and moved to `<queue>-poison` at its MAX_DEQUEUE-th failed dequeue (the host waits
    host.json's visibilityTimeout before a retry). Until `stop` is set, or the queue is empty with
    `until_empty`."""
    started = time.perf_counter()
    spec = spec_for(sync)
    queue = queue_client(settings, spec.queue)
    worked = Worked(sync)
    stop = stop or threading.Event()
    threshold = min(NEW_BATCH_THRESHOLD, max(concurrency // 2, 0))
    visible_after = int(max(spec.lease.total_seconds(), 60))  # the host renews it; a dead worker's message comes back
    running: dict[Future[RunReport], QueueMessage] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"work-{sync}") as pool:
        while not stop.is_set():
            got: list[QueueMessage] = []
            if len(running) <= threshold:
                room = min(32, concurrency - len(running))
                got = list(queue.receive_messages(messages_per_page=room, max_messages=room, visibility_timeout=visible_after))
                for m in got:
                    running[pool.submit(handle, m.content, settings=settings, dequeue_count=m.dequeue_count or 1)] = m
            if not running:
                if until_empty:
                    break
                stop.wait(POLL_SECONDS)
                continue
            if got and len(running) <= threshold:
                continue  # room for another batch at once
            done, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                _settle(settings, queue, running.pop(future), future, worked, on_report)
        for future in list(running):
            _settle(settings, queue, running.pop(future), future, worked, on_report)
    worked.seconds = time.perf_counter() - started
    return worked


def _settle(settings: Settings, queue: QueueClient, message: QueueMessage, future: Future[RunReport], worked: Worked,
            on_report: Callable[[RunReport], None]) -> None:
    error = future.exception()
    if error is None:
        report = future.result()
        queue.delete_message(message)
        on_report(report)
        if report.extra.get("result") == "stale":
            worked.stale += 1
        else:
            worked.ran += 1
            worked.failed_runs += report.exit_code in (EXIT_ITEM_FAILURES, EXIT_CONFIG)
        return
    reason = str(error) if isinstance(error, Nexxt365Error) else type(error).__name__
    if (message.dequeue_count or 1) >= MAX_DEQUEUE:
        queue_client(settings, queue.queue_name + POISON_SUFFIX).send_message(message.content)
        queue.delete_message(message)
        worked.poisoned += 1
        log.error("nexxt365 sync=%s message moved to %s%s after %d failed dequeues: %s", worked.sync, queue.queue_name,
                  POISON_SUFFIX, message.dequeue_count, reason)
        return
    queue.update_message(message, visibility_timeout=0)
    worked.retried += 1
    log.warning("nexxt365 sync=%s message failed (dequeue %d of %d), retried: %s", worked.sync, message.dequeue_count,
                MAX_DEQUEUE, reason)


# ---------------------------------------------------------------- the CLI commands


def cli_dispatch(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    result = dispatch(settings, args.which, only=args.tenant)
    print(result.summary(), file=out)
    return EXIT_ITEM_FAILURES if result.failed else EXIT_OK


def cli_work(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    worked = work(settings, args.which, until_empty=args.until_empty, concurrency=args.concurrency,
                  on_report=lambda report: print(report.summary().removeprefix("nexxt365 "), file=out, flush=True))
    print(worked.summary(), file=out)
    return worked.exit_code
