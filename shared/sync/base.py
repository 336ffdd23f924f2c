"""What a sync is, and the machinery every sync shares.

- `SyncSpec`: a sync declared as a unit (name, entry point, lease, schedule,
  Graph permissions, retry cap, queue). Each sync package registers its spec;
  `syncs()` is the registry that the runner, the CLI, doctor, the function
  app, the infra tests and bench read. Nothing else lists the syncs.
- `SyncContext`: what a sync's entry point gets for one tenant and one run.
- `apply()`: the one applier of ClearVox writes (bounded concurrency, a time
  budget, one outage policy); see its docstring for the rule.
- `hold_reason()`: the one mass-change guard (deactivations, deletions).
- `next_retries()`: the one retry ledger of failed items.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from shared.errors import AdminFix, ClearVoxUnavailable, ItemError, LeaseLost, Transient

if TYPE_CHECKING:
    from shared.check import Check
    from shared.clearvox import ClearVox
    from shared.graph.client import Graph
    from shared.report import RunReport
    from shared.settings import Options, Tenant
    from shared.state import LeaseKeeper, State

log = logging.getLogger("nexxt365")

T = TypeVar("T")
R = TypeVar("R")


# ---------------------------------------------------------------- the declared unit

@dataclass(frozen=True)
class SyncSpec:
    """One sync, declared. `permissions` are the Graph application permissions it always needs;
    `extra_permissions(options)` those that only some options need, each with the reason
    (e.g. a users group needs GroupMember.Read.All)."""

    name: str
    function: str  # its function folder (timer and queue trigger), named by the design card
    run: Callable[[SyncContext], None]
    lease: timedelta  # how long a dead run blocks the next one at most; a live run renews it
    schedule_setting: str
    schedule_default: str
    permissions: tuple[str, ...]
    retry_cap: int  # a failed item is retried on this many runs, then only by the full reconcile
    budget: timedelta  # ClearVox writes stop after this; the rest waits for the next run
    graph_max_retry_after: float = 60.0  # longest Retry-After from Graph worth waiting for in one run
    extra_permissions: Callable[[Options], dict[str, str]] = field(default=lambda options: {})
    doctor: Callable[[Graph, Tenant], list[Check]] = field(default=lambda graph, tenant: [])  # its own checks

    @property
    def queue(self) -> str:
        """The Storage queue of this sync in queue fan-out mode (ARCHITECTURE.md, Queues)."""
        return f"nexxt365-{self.name}"

    def needs(self, options: Options) -> dict[str, str]:
        """Every Graph application permission this sync needs with these options, and why."""
        return {**{p: f"needed by the {self.name} sync" for p in self.permissions}, **self.extra_permissions(options)}


_REGISTRY: dict[str, SyncSpec] = {}


def register(spec: SyncSpec) -> SyncSpec:
    """Called once by each sync package (shared/sync/__init__.py imports them all)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"a sync named {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def syncs() -> tuple[SyncSpec, ...]:
    """Every sync, in registration order (users, contacts, calendar)."""
    return tuple(_REGISTRY.values())


def sync_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def spec_for(name: str) -> SyncSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"no sync named {name!r}; the syncs are: {', '.join(_REGISTRY)}") from None


# ---------------------------------------------------------------- one run

@dataclass
class SyncContext:
    """What a sync's entry point gets: clients, state, report, the run's flags, its lease and budget."""

    tenant: Tenant
    graph: Graph
    clearvox: ClearVox
    state: State
    report: RunReport
    dry_run: bool = False
    at: datetime | None = None
    args: dict[str, Any] = field(default_factory=dict)
    spec: SyncSpec | None = None
    lease: LeaseKeeper | None = None
    deadline: float = float("inf")  # time.monotonic() after which no new ClearVox write starts
    log: logging.Logger = log

    @property
    def options(self) -> Options:
        return self.tenant.options

    @property
    def now(self) -> datetime:
        return self.at or datetime.now(UTC)

    def check_lease(self) -> None:
        """Raise LeaseLost when this run no longer holds its lease: it must not write any more."""
        if self.lease is not None:
            self.lease.check()

    def apply(self, items: Sequence[T], write: Callable[[T], R], on_result: Callable[[T, R | Exception], None], *,
              workers: int | None = None) -> Applied[T]:
        """`apply()` with this run's ClearVox concurrency, time budget and lease."""
        return apply(items, write, on_result, workers=workers or self.options.clearvox_concurrency,
                     deadline=self.deadline, check=self.check_lease)


# ---------------------------------------------------------------- the applier

# A run stops writing when ClearVox cannot be reached at all (refused, TLS), or when this many
# writes in a row fail as unavailable (5xx, 429, timeout) after their retries. Anything else fails
# that item only: it is reported, kept for a retry, and the run goes on with the others.
OUTAGE_IN_A_ROW = 10


@dataclass
class Applied(Generic[T]):
    """What `apply` did: the items it never started (budget, outage, lease) and why it stopped."""

    not_started: list[T] = field(default_factory=list)
    stopped: Exception | None = None  # AdminFix, Transient (outage) or LeaseLost
    out_of_time: bool = False

    def raise_if_stopped(self) -> None:
        if self.stopped is not None:
            raise self.stopped


class _Outage:
    """Counts writes that failed as unavailable in a row (in completion order)."""

    def __init__(self, workers: int) -> None:
        self.limit = max(OUTAGE_IN_A_ROW, workers)
        self.in_a_row = 0

    def stops_on(self, result: object) -> Exception | None:
        if isinstance(result, ClearVoxUnavailable) and result.outage:
            return result
        if isinstance(result, Transient):
            self.in_a_row += 1
            if self.in_a_row >= self.limit:
                return ClearVoxUnavailable(
                    f"ClearVox failed {self.in_a_row} requests in a row ({result}); the run stopped writing and "
                    "the next run continues where it left off", getattr(result, "status", 0), "outage")
            return None
        self.in_a_row = 0
        return None


def apply(items: Sequence[T], write: Callable[[T], R], on_result: Callable[[T, R | Exception], None], *,
          workers: int, deadline: float = float("inf"), check: Callable[[], None] = lambda: None) -> Applied[T]:
    """Run `write` for every item with bounded concurrency; `on_result` gets each item's result
    or its error in the calling thread, one at a time, as they arrive.

    An `ItemError`, and any unexpected exception, fails that item only (logged, handed to
    `on_result`). An `AdminFix` stops new writes; so do a lost lease, the time budget
    (`deadline`, a time.monotonic() value) and an outage (see OUTAGE_IN_A_ROW). Writes in flight finish and are
    recorded; `Applied.not_started` lists what was never tried, `Applied.stopped` why.
    """
    done: Applied[T] = Applied()
    if not items:
        return done
    count = max(1, min(workers, len(items)))
    feed = iter(items)
    lock = threading.Lock()
    results: queue.Queue[tuple[T, R | Exception] | None] = queue.Queue()
    outage = _Outage(count)
    halt = threading.Event()  # the calling thread failed while recording (e.g. the state store): stop too

    def next_item() -> T | None:
        with lock:
            if done.stopped is not None or halt.is_set():
                return None
            if time.monotonic() >= deadline:
                done.out_of_time = True
                return None
            return next(feed, None)

    def settle(result: R | Exception) -> None:
        """Decide at once, before the next item is taken, whether this result stops the run."""
        with lock:
            stopping = result if isinstance(result, AdminFix | LeaseLost) else outage.stops_on(result)
            if stopping is not None and done.stopped is None:
                done.stopped = stopping

    def worker() -> None:
        try:
            while (item := next_item()) is not None:
                result = _attempt(write, item, check)
                settle(result)
                results.put((item, result))
        finally:
            results.put(None)

    threads = [threading.Thread(target=worker, name=f"apply-{i}", daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    try:
        _collect(results, len(threads), on_result, done)
    except BaseException:
        halt.set()
        raise
    with lock:
        done.not_started += list(feed)
    return done


def _attempt(write: Callable[[T], R], item: T, check: Callable[[], None]) -> R | Exception:
    try:
        check()
        return write(item)
    except (AdminFix, Transient, ItemError) as exc:
        return exc
    except Exception as exc:  # one item's bug must not stop the others
        log.exception("nexxt365 sync: unexpected error while writing one item")
        return exc


def _collect(results: queue.Queue[tuple[T, R | Exception] | None], alive: int,
             on_result: Callable[[T, R | Exception], None], done: Applied[T]) -> None:
    """Hand each result to `on_result`; a result that stops the run (admin fix, lost lease) is not an
    item failure: its item joins `not_started`."""
    while alive:
        message = results.get()
        if message is None:
            alive -= 1
            continue
        item, result = message
        if isinstance(result, AdminFix | LeaseLost):
            done.not_started.append(item)
        else:
            on_result(item, result)


# ---------------------------------------------------------------- the mass-change guard

@dataclass(frozen=True)
class MassChangeRule:
    """When a run holds a mass change (deactivating users, deleting a user's contacts).

    Held when the changes exceed `limit` (in one run, or in 24 hours where the sync counts
    them), or when at least `floor` changes would touch more than `share` of the known items.
    A hold is released by an operator (`--confirm-...`) or by the source no longer reporting
    the change, never by seeing the same change again.
    """

    what: str  # "deactivations", "deletions"
    limit: int = 10
    share: float = 0.5
    floor: int = 3


def hold_reason(count: int, known: int, rule: MassChangeRule, *, confirmed: bool = False,
                earlier_today: int = 0) -> str | None:
    """Why these `count` changes are held, or None to let them through."""
    if count <= 0 or confirmed:
        return None
    if count > rule.limit:
        return f"{count} {rule.what} in one run exceed the limit of {rule.limit}"
    if count + earlier_today > rule.limit:
        return (f"{count} {rule.what} after {earlier_today} in the last 24 hours exceed the limit of "
                f"{rule.limit} a day")
    if count >= rule.floor and count > rule.share * known:
        return f"{count} {rule.what} would touch {count} of {known} known ({count / max(known, 1):.0%})"
    return None


# ---------------------------------------------------------------- the retry ledger

REASON_LIMIT = 1000  # characters of a failure reason kept in a retry row


def next_retries(old: Mapping[str, Mapping[str, Any]], failed: Mapping[str, Mapping[str, Any]],
                 now: datetime) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The retry rows after a run: each failed item (`failed[key]` holds its `reason` and the sync's
    own fields) with its attempts counted on from `old`, and the old keys that succeeded (to delete)."""
    rows: dict[str, dict[str, Any]] = {}
    for key, row in failed.items():
        attempts = int((old.get(key) or {}).get("attempts") or 0) + 1
        rows[key] = {**row, "reason": str(row.get("reason") or "")[:REASON_LIMIT], "attempts": attempts, "at": now}
    return rows, sorted(set(old) - set(rows))


def due_retries(rows: Mapping[str, Mapping[str, Any]], cap: int) -> list[str]:
    """The keys to retry in an incremental run; past `cap` attempts an item waits for the full reconcile."""
    return [key for key, row in rows.items() if int(row.get("attempts") or 0) < cap]


def retries_given_up(rows: Mapping[str, Mapping[str, Any]], cap: int) -> list[str]:
    return [key for key, row in rows.items() if int(row.get("attempts") or 0) >= cap]
