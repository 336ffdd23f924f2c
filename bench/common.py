"""Shared pieces of the benchmark scenarios: a timed run against the simulators and a result row."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from shared import runner
from shared.report import RunReport
from shared.sandbox.world import World
from shared.state import Store


@dataclass
class BenchArgs:
    users: int = 10_000
    latency_ms: float = 50.0
    contacts_per_user: int = 200
    contact_users: int = 1_000
    calendar_users: int = 2_000
    azurite: str = ""  # connection string
    fleet_tenants: int = 100
    fleet_users: int = 40
    fleet_workers: tuple[int, ...] = (1, 2, 4, 8)
    inline_tenants: tuple[int, ...] = (100,)
    split_users: int = 8_000


@dataclass
class Result:
    scenario: str
    wall_s: float
    graph_requests: int
    clearvox_requests: int
    clearvox_writes: int
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "wall_s": round(self.wall_s, 2), "graph_requests": self.graph_requests,
                "clearvox_requests": self.clearvox_requests, "clearvox_writes": self.clearvox_writes, **self.extra}


def started_world(args: BenchArgs) -> World:
    """Both simulators at the bench's latency; every client trusts the sandbox CA, as in the tests."""
    world = World(latency=args.latency_ms / 1000).start()
    os.environ["REQUESTS_CA_BUNDLE"] = world.verify
    return world


def new_store(args: BenchArgs) -> Store:
    return Store(args.azurite, prefix=f"b{uuid.uuid4().hex[:10]}")


def timed_run(name: str, world: World, store: Store, sync: str, **kwargs: Any) -> tuple[Result, RunReport]:
    """One runner.run with the simulators' request counters reset first (HTTP requests, token included)."""
    world.graph.clear_log()
    world.clearvox.clear_log()
    writes_before = sum(world.clearvox.writes.values())
    started = time.perf_counter()
    report = runner.run(sync, kwargs.pop("tenant", world.tenant), store, verify=world.verify, **kwargs)
    wall = time.perf_counter() - started
    graph_http = len(world.graph.requests_to(lambda r: "/oauth2/" not in r.path and "openid" not in r.path and "discovery" not in r.path))
    result = Result(name, wall, graph_http, len(world.clearvox.requests_to()), sum(world.clearvox.writes.values()) - writes_before)
    if report.error:
        result.extra["error"] = report.error
    return result, report
