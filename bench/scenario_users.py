"""Users sync benchmarks (issue 3's performance targets).

users-initial   first run over `args.users` Entra users (1 % of them already in ClearVox by email, so
                they wait for a manual link; the rest are created). Target: wall time <= 1.5 x the ideal
                = pages x latency + creates x latency / NEXXT365_CLEARVOX_CONCURRENCY, where pages are
                the Graph delta pages plus the ClearVox list pages (requests that cannot overlap).
users-nochange  a second run with nothing changed in Entra. Target: exactly 1 Graph request besides the
                token, zero ClearVox writes, ClearVox reads only for the users waiting for a link.
users-onebad    ClearVox answers 500 to one user's create, always. Target: the first run creates all the
                others and stores its deltaLink; the next run writes only that user again (1 POST, at most
                5 ClearVox requests) and reports it as failed.

Both simulators answer every request after `args.latency_ms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from bench.common import BenchArgs, Result, new_store, started_world, timed_run
from shared.sandbox.world import World

WAITING_SHARE = 100  # one Entra user in this many already exists in ClearVox (same email, not linked)
CLEARVOX_PAGE = 100


def _populate(world: World, users: int) -> int:
    """`users` Entra users with full contact info; returns how many already exist in ClearVox."""
    waiting = 0
    for i in range(users):
        mail = f"user{i:05d}@contoso.nl"
        world.graph.add_user(displayName=f"Voornaam{i} Achternaam{i}", givenName=f"Voornaam{i}", surname=f"Achternaam{i}",
                             mail=mail, mailNickname=f"user{i:05d}", businessPhones=[f"020 {i % 10_000_000:07d}"],
                             mobilePhone=f"06 {i:08d}", jobTitle="Medewerker", department=f"Afdeling {i % 20}",
                             preferredLanguage="nl-NL")
        if i % WAITING_SHARE == WAITING_SHARE - 1:
            world.clearvox.add_user(first_name=f"Voornaam{i}", last_name=f"Achternaam{i}", email=mail)
            waiting += 1
    return waiting


def users_initial(args: BenchArgs) -> list[Result]:
    world = started_world(args)
    try:
        store = new_store(args)
        waiting = _populate(world, args.users)
        result, report = timed_run("users-initial", world, store, "users")
        latency = args.latency_ms / 1000
        concurrency = world.tenant.options.clearvox_concurrency
        pages = math.ceil(args.users / world.graph.page_size) + max(1, math.ceil(waiting / CLEARVOX_PAGE))
        ideal = pages * latency + report.created * latency / concurrency
        ratio = result.wall_s / ideal if ideal else 0.0
        result.extra.update({
            "created": report.created, "waiting_for_link": len(report.extra.get("unlinked", [])),
            "failed": len(report.failed), "ideal_s": round(ideal, 2), "ratio": round(ratio, 2),
            "ok": ratio <= 1.5 and report.created == args.users - waiting and not report.failed,
        })
        return [result]
    finally:
        world.stop()


def users_nochange(args: BenchArgs) -> list[Result]:
    world = started_world(args)
    try:
        store = new_store(args)
        waiting = _populate(world, args.users)
        latency = world.graph.latency
        world.graph.latency = world.clearvox.latency = 0.0  # the initial run is not what this scenario measures
        first, _ = timed_run("users-nochange (setup)", world, store, "users")
        world.graph.latency = world.clearvox.latency = latency
        result, report = timed_run("users-nochange", world, store, "users")
        reads = len(world.clearvox.requests_to(lambda r: r.method == "GET"))
        result.extra.update({
            "waiting_for_link": waiting, "clearvox_reads": reads,
            "ok": result.graph_requests == 1 and result.clearvox_writes == 0 and reads <= waiting
            and not report.failed and "error" not in first.extra,
        })
        return [result]
    finally:
        world.stop()


def users_onebad(args: BenchArgs) -> list[Result]:
    world = started_world(args)
    try:
        store = new_store(args)
        waiting = _populate(world, args.users)
        bad = b"user00007@"
        world.clearvox.inject(500, count=10**9, match=lambda r: r.method == "POST" and bad in r.body)
        first, report = timed_run("users-onebad (first)", world, store, "users")
        stored = store.for_tenant(world.tenant.key).cursor("users") is not None
        first.extra.update({"created": report.created, "failed": len(report.failed),
                            "ok": stored and report.created == args.users - waiting - 1 and len(report.failed) == 1})
        again, report = timed_run("users-onebad (next)", world, store, "users")
        posts = len(world.clearvox.requests_to(lambda r: r.method == "POST"))
        again.extra.update({"created": report.created, "failed": len(report.failed),
                            "ok": posts == 1 and again.clearvox_requests <= waiting + 5 and len(report.failed) == 1})
        return [first, again]
    finally:
        world.stop()


SCENARIOS: dict[str, Callable[[BenchArgs], list[Result]]] = {
    "users-initial": users_initial,
    "users-nochange": users_nochange,
    "users-onebad": users_onebad,
}
