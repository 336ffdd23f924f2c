"""Benchmark: wall time and request counts of each sync against the simulators.

    python -m bench.bench [--users 10000] [--latency-ms 50] [--only users] [--json]

Each sync in the registry has its scenarios in bench/scenario_<sync>.py (a SCENARIOS
dict of name -> function(BenchArgs) -> list[Result]); the fleet scenarios span every sync.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable

from bench.common import BenchArgs, Result
from shared.sandbox.azurite import Azurite
from shared.sync.base import syncs


def modules() -> list[str]:
    """The scenario module of every registered sync that has one, and the fleet scenarios."""
    names = [f"bench.scenario_{spec.name}" for spec in syncs()]
    return [name for name in names if importlib.util.find_spec(name) is not None] + ["bench.scenario_fleet"]


def scenarios() -> dict[str, Callable[[BenchArgs], list[Result]]]:
    found: dict[str, Callable[[BenchArgs], list[Result]]] = {}
    for name in modules():
        found.update(importlib.import_module(name).SCENARIOS)
    return found


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 1,2,4,8") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="users in the simulated tenant (users scenarios)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="simulated latency per request on both simulators")
    parser.add_argument("--contact-users", type=int, default=1_000)
    parser.add_argument("--contacts-per-user", type=int, default=200)
    parser.add_argument("--calendar-users", type=int, default=2_000)
    parser.add_argument("--tenants", type=int, default=100, help="fleet: simulated customers (the issue's fleet: 1000)")
    parser.add_argument("--fleet-users", type=int, default=40, help="fleet: linked users per customer")
    parser.add_argument("--workers", type=_ints, default=(1, 2, 4, 8), help="fleet: worker processes to try, e.g. 1,2,4,8")
    parser.add_argument("--inline-tenants", type=_ints, default=(100,), help="fleet: inline mode for these fleet sizes (0: none)")
    parser.add_argument("--split-users", type=int, default=8_000, help="fleet-split: linked users of the large customer")
    parser.add_argument("--only", action="append", help="run only scenarios whose name starts with this (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ns = parser.parse_args(argv)
    table = scenarios()
    chosen = [n for n in table if not ns.only or any(n.startswith(o) for o in ns.only)]
    results: list[Result] = []
    with Azurite(queue=True) as az:
        args = BenchArgs(users=ns.users, latency_ms=ns.latency_ms, contact_users=ns.contact_users,
                         contacts_per_user=ns.contacts_per_user, calendar_users=ns.calendar_users, azurite=az.connection_string,
                         fleet_tenants=ns.tenants, fleet_users=ns.fleet_users, fleet_workers=ns.workers,
                         inline_tenants=ns.inline_tenants, split_users=ns.split_users)
        for name in chosen:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.extend(table[name](args))
    rows = [r.row() for r in results]
    if ns.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows))
    return 1 if any("error" in r for r in rows) else 0


def render_table(rows: list[dict[str, object]]) -> str:
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
