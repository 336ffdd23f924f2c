"""Fleet benchmark: a multi-customer app's calendar minute, queue fan-out with K workers beside inline mode.

    python -m bench.bench --only fleet [--tenants 100] [--workers 1,2,4,8] [--inline-tenants 100,1000]
    python -m bench.bench --only split [--split-users 8000]

T customers (--tenants, default 100; the issue's fleet is 1,000), each with 40 linked users
(--fleet-users), every request at 100 ms latency on the simulators (whatever --latency-ms says).
Four Graph and four ClearVox simulators in this process serve all customers: each customer has
its own app registration (so its own token) and its own users and calendars there.

fleet-queue K=k   k worker processes, each what one Flex Consumption instance does (`shared.dispatch.work`
                  with host.json's batchSize 16, newBatchThreshold 8), take the calendar queue. Three
                  minutes: cold (fresh workers, no tokens, empty presence ledger: everyone in a meeting is
                  a transition), transitions (40% of users change: meetings cancelled and booked) and
                  quiet (nothing changes). Per minute: dispatch time (this process: T health rows, T size
                  rows, T messages), time until the minute's last message is done, messages dropped as
                  stale (the schedule is the TimeSpan form 00:01:00, so a message goes stale exactly 60 s
                  after its dispatch), throughput, and worker CPU per tenant (all worker processes' CPU
                  over the minute / T), from which the instances of a real fleet follow.
fleet-inline T=n  the same minutes with NEXXT365_FANOUT=inline: one process runs every customer
                  (`runner.run_all`, 4 at a time), as the timer does today.
split-large-customer  one customer of --split-users (default 8,000) linked users, 4 workers: the transitions
                  and quiet minutes run whole, and split into parts of 4,000, 2,000 and 1,000 users
                  (the cold minute before them tells the dispatcher the size): where splitting pays off.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue as stdqueue
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import BenchArgs, Result
from shared import dispatch, runner
from shared.queues import queue_client
from shared.sandbox.world import World
from shared.secrets import KeyVault
from shared.settings import Settings, Tenant
from shared.state import Store
from shared.sync import split
from shared.sync.split import USERS_PER_PART
from shared.sync.users.rules import Link

LATENCY_MS = 100.0
WORLDS = 4
MINUTES = ("cold", "transitions", "quiet")
SPLIT_WORKERS = 4
SCHEDULE = "00:01:00"  # TimeSpan form: a message is stale 60 s after it was dispatched


@dataclass(frozen=True)
class Customer:
    """What a worker process needs to rebuild a Tenant (picklable)."""

    key: str
    tenant: str
    client_id: str
    secret: str
    graph_url: str
    clearvox_url: str
    clearvox_key: str
    clearvox_account: str

    def as_tenant(self) -> Tenant:
        secret, key = self.secret, self.clearvox_key
        return Tenant(key=self.key, tenant=self.tenant, client_id=self.client_id, client_secret=lambda: secret,
                      clearvox_url=self.clearvox_url, clearvox_api_key=lambda: key, clearvox_account=self.clearvox_account,
                      authority_host=self.graph_url, graph_url=self.graph_url)


class FleetSettings(Settings):
    """App settings whose customers are the bench's (a tenants table would give the same Tenant objects)."""

    def __init__(self, env: dict[str, str], customers: list[Customer]) -> None:
        super().__init__(env=env, local={})
        self.fleet = [c.as_tenant() for c in customers]

    def tenants(self, vault: KeyVault | None = None) -> list[Tenant]:
        return list(self.fleet)


@dataclass
class Person:
    oid: str
    email: str
    cv_id: str
    first: str  # meeting now (initially on for 60% of users)
    second: str  # meeting now (initially cancelled; booked at the transition minute for 20%)


class Fleet:
    """T customers over a few simulator pairs; events are set up so each minute has a known number of transitions."""

    def __init__(self, tenants: int, users: int) -> None:
        self.worlds = [World(latency=LATENCY_MS / 1000).start() for _ in range(WORLDS)]
        self.apps: list[tuple[World, str, str]] = []
        self.people: list[list[Person]] = []
        now = datetime.now(UTC)
        for i in range(tenants):
            world = self.worlds[i % WORLDS]
            secret = f"sim-fleet-{uuid.uuid4().hex}"
            self.apps.append((world, world.graph.add_app(secret=secret), secret))
            self.people.append([self._person(world, i, u, now) for u in range(users)])

    @staticmethod
    def _person(world: World, i: int, u: int, now: datetime) -> Person:
        email = f"u{u:03d}.t{i:05d}@fleet.nl"
        oid = world.graph.add_user(displayName=f"User {u}", mail=email, userPrincipalName=email)
        cv = world.clearvox.add_user(first_name="User", last_name=f"{i}-{u}", email=email, external_application_id=oid)
        start, end = now - timedelta(minutes=30), now + timedelta(hours=6)
        first = world.graph.add_event(oid, "Overleg", start, end, is_cancelled=u % 5 > 2)
        second = world.graph.add_event(oid, "Klant", start, end, is_cancelled=True)
        return Person(oid, email, cv["id"], first, second)

    def customers(self, prefix: str) -> list[Customer]:
        return [Customer(f"{prefix}t{i:05d}", w.graph.tenant_id, client_id, secret, w.graph.url, w.clearvox.url,
                         w.clearvox.api_key, w.clearvox.account_id) for i, (w, client_id, secret) in enumerate(self.apps)]

    def reset(self, store: Store, customers: list[Customer]) -> None:
        """Fresh state for these customer keys (links only), statuses and calendars as at the cold minute."""
        for i, customer in enumerate(customers):
            world = self.apps[i][0]
            links = {p.oid: dict(Link(p.oid, p.cv_id, p.email, p.email, "linked").to_row()) for p in self.people[i]}
            store.for_tenant(customer.key).upsert("links", links)
            for u, p in enumerate(self.people[i]):
                world.clearvox.set_user_status(p.cv_id, "available", "system")
                world.graph.update_event(p.first, is_cancelled=u % 5 > 2)
                world.graph.update_event(p.second, is_cancelled=True)

    def transitions(self) -> int:
        """Before the second minute: 20% of users' meetings are cancelled, 20% get one booked: 40% transition."""
        changed = 0
        for i, people in enumerate(self.people):
            world = self.apps[i][0]
            for u, p in enumerate(people):
                if u % 5 == 0:
                    world.graph.update_event(p.first, is_cancelled=True)
                    changed += 1
                elif u % 5 == 3:
                    world.graph.update_event(p.second, is_cancelled=False)
                    changed += 1
        return changed

    def clear_logs(self) -> None:
        for world in self.worlds:
            world.graph.clear_log()
            world.clearvox.clear_log()

    def stop(self) -> None:
        for world in self.worlds:
            world.stop()


# ---------------------------------------------------------------- the processes


def _worker(index: int, env: dict[str, str], customers: list[Customer], results: Any, stop: Any) -> None:
    """One instance: `work` on the calendar queue until told to stop; every completion is sent back."""
    import threading

    os.environ.update(env)
    logging.getLogger("nexxt365").setLevel(logging.ERROR)  # stale drops are counted here, not logged one by one
    settings = FleetSettings(env, customers)
    halt = threading.Event()

    def relay() -> None:
        stop.wait()
        halt.set()

    threading.Thread(target=relay, daemon=True).start()
    results.put(("ready", index, time.time(), time.process_time(), False, 0, ""))

    def on_report(report: Any) -> None:
        reason = report.error or (report.failed[0]["reason"] if report.failed else "")
        results.put(("done", index, time.time(), time.process_time(), report.extra.get("result") == "stale",
                     report.updated if not reason else -1 - report.updated, reason[:120]))

    dispatch.work(settings, "calendar", stop=halt, on_report=on_report)


def _inline(env: dict[str, str], customers: list[Customer], commands: Any, results: Any) -> None:
    """The timer in inline mode: each command is one minute of `runner.run_all`."""
    os.environ.update(env)
    settings = FleetSettings({**env, "NEXXT365_FANOUT": "inline"}, customers)
    results.put(("ready", 0.0, 0.0, 0, 0))
    while commands.get() is not None:
        started, cpu = time.time(), time.process_time()
        reports = runner.run_all("calendar", settings)
        results.put(("minute", time.time() - started, time.process_time() - cpu, sum(r.updated for r in reports),
                     sum(1 for r in reports if r.error)))


# ---------------------------------------------------------------- the scenarios


def _requests(fleet: Fleet) -> tuple[int, int]:
    return (sum(len(w.graph.requests_to()) for w in fleet.worlds), sum(len(w.clearvox.requests_to()) for w in fleet.worlds))


def _queue_minutes(fleet: Fleet, args: BenchArgs, k: int, env: dict[str, str], part: int | None = None,
                   label: str = "fleet-queue") -> list[Result]:
    """The three minutes with k workers; with `part`, the minutes after the first split a tenant into parts
    of that many users (the first minute tells the dispatcher the size)."""
    customers = fleet.customers(f"q{k}{uuid.uuid4().hex[:4]}")
    store = Store(args.azurite)
    fleet.reset(store, customers)
    settings = FleetSettings(env, customers)
    queue_client(settings, "nexxt365-calendar").clear_messages()
    ctx = mp.get_context("spawn")
    results, stop = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_worker, args=(i, env, customers, results, stop), daemon=True) for i in range(k)]
    for proc in procs:
        proc.start()
    cpu = {}
    for _ in procs:
        _, index, _, at_ready, _, _, _ = results.get(timeout=120)
        cpu[index] = at_ready
    rows = []
    try:
        for n, minute in enumerate(MINUTES):
            split.USERS_PER_PART = (part or 10**9) if n else 10**9
            rows.append(_queue_minute(fleet, settings, k, minute, results, cpu, label))
    finally:
        split.USERS_PER_PART = USERS_PER_PART
        stop.set()
        for proc in procs:
            proc.join(timeout=30)
    return rows


def _queue_minute(fleet: Fleet, settings: FleetSettings, k: int, minute: str, results: Any, cpu: dict[int, float],
                  label: str) -> Result:
    expected = fleet.transitions() if minute == "transitions" else 0
    fleet.clear_logs()
    before = dict(cpu)
    started = time.time()
    sent = dispatch.dispatch(settings, "calendar")
    dispatch_s = time.time() - started
    done = stale = failed = written = 0
    last = started
    reasons: dict[str, int] = {}
    while done + stale < sent.messages:
        try:
            _, index, at, cpu_now, is_stale, updated, reason = results.get(timeout=180)
        except stdqueue.Empty:
            break
        cpu[index] = cpu_now
        last = max(last, at)
        stale += is_stale
        done += not is_stale
        failed += updated < 0  # the run failed, or some of its users did (kept for the next minute)
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
        written += updated if updated >= 0 else -1 - updated
    wall = last - started
    graph, clearvox = _requests(fleet)
    tenants = len(settings.fleet)
    worker_cpu = sum(cpu.values()) - sum(before.values())
    result = Result(f"{label} K={k} T={tenants} {minute}", wall, graph, clearvox, written)
    result.extra.update({"messages": sent.messages, "dispatch_s": round(dispatch_s, 2), "last_done_s": round(wall, 2), "stale": stale,
                         "lost": sent.messages - done - stale, "failed": failed, "msgs_per_s": round(done / max(wall, 1e-9), 1),
                         "cpu_ms_per_tenant": round(1000 * worker_cpu / max(done, 1), 1),
                         "transitions_made": expected or None})
    if stale or failed or done + stale < sent.messages:
        worst = max(reasons, key=lambda r: reasons[r]) if reasons else ""
        result.extra["error"] = (f"{stale} stale, {failed} with failures, {sent.messages - done - stale} not done"
                                 + (f"; most often: {worst}" if worst else ""))
    return result


def _inline_minutes(fleet: Fleet, args: BenchArgs, tenants: int, env: dict[str, str]) -> list[Result]:
    customers = fleet.customers(f"i{uuid.uuid4().hex[:4]}")[:tenants]
    fleet.reset(Store(args.azurite), customers)
    ctx = mp.get_context("spawn")
    commands, results = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_inline, args=(env, customers, commands, results), daemon=True)
    proc.start()
    results.get(timeout=120)
    rows = []
    try:
        for minute in MINUTES:
            if minute == "transitions":
                fleet.transitions()
            fleet.clear_logs()
            commands.put(minute)
            _, wall, cpu, written, failed = results.get(timeout=900)
            graph, clearvox = _requests(fleet)
            result = Result(f"fleet-inline T={tenants} {minute}", wall, graph, clearvox, written)
            result.extra.update({"last_done_s": round(wall, 2), "msgs_per_s": round(tenants / max(wall, 1e-9), 1),
                                 "cpu_ms_per_tenant": round(1000 * cpu / tenants, 1), "failed": failed,
                                 "inside_the_minute": wall < 60})
            rows.append(result)
    finally:
        commands.put(None)
        proc.join(timeout=60)
    return rows


def _dispatch_only(fleet: Fleet, args: BenchArgs, env: dict[str, str]) -> Result:
    """Dispatch alone (no worker running, the simulators idle): the timer's whole job in queue mode, best of 3."""
    customers = fleet.customers(f"d{uuid.uuid4().hex[:4]}")
    settings = FleetSettings(env, customers)
    queue = queue_client(settings, "nexxt365-calendar")
    times = []
    for _ in range(3):
        queue.clear_messages()
        started = time.perf_counter()
        sent = dispatch.dispatch(settings, "calendar")
        times.append(time.perf_counter() - started)
    queue.clear_messages()
    result = Result(f"fleet-dispatch T={len(customers)} (no workers)", min(times), 0, 0, 0)
    result.extra.update({"messages": sent.messages, "dispatch_s": round(min(times), 2)})
    if min(times) >= 5:
        result.extra["error"] = "dispatch took 5 s or more"
    return result


def fleet(args: BenchArgs) -> list[Result]:
    built = time.perf_counter()
    sims = Fleet(args.fleet_tenants, args.fleet_users)
    env = {"NEXXT365_STATE": args.azurite, "AzureWebJobsStorage": args.azurite, "NEXXT365_FANOUT": "queue",
           "NEXXT365_CALENDAR_SCHEDULE": SCHEDULE, "REQUESTS_CA_BUNDLE": sims.worlds[0].verify}
    print(f"  fleet of {args.fleet_tenants} x {args.fleet_users} users built in {time.perf_counter() - built:.0f} s",
          flush=True)
    rows: list[Result] = []
    try:
        rows.append(_dispatch_only(sims, args, env))
        for tenants in args.inline_tenants:
            if 0 < tenants <= args.fleet_tenants:
                rows += _inline_minutes(sims, args, tenants, env)
        for k in args.fleet_workers:
            rows += _queue_minutes(sims, args, k, env)
    finally:
        sims.stop()
    return rows


def fleet_split(args: BenchArgs) -> list[Result]:
    """One large customer (--split-users, default 8,000) with 4 workers: whole, and split into parts of 4,000,
    2,000 and 1,000 users from the second minute on."""
    sims = Fleet(1, args.split_users)
    env = {"NEXXT365_STATE": args.azurite, "AzureWebJobsStorage": args.azurite, "NEXXT365_FANOUT": "queue",
           "NEXXT365_CALENDAR_SCHEDULE": SCHEDULE, "REQUESTS_CA_BUNDLE": sims.worlds[0].verify}
    rows: list[Result] = []
    try:
        for part in (None, 4000, 2000, 1000):
            label = f"split U={args.split_users} " + (f"parts of {part}" if part else "whole")
            rows += _queue_minutes(sims, args, SPLIT_WORKERS, env, part, label)[1:]
    finally:
        sims.stop()
    return rows


SCENARIOS = {"fleet": fleet, "split-large-customer": fleet_split}
