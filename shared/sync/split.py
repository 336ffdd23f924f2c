"""Splitting one tenant's calendar run into user ranges, so that queue workers share a very large customer.

In queue fan-out mode a tenant with more than USERS_PER_PART linked users gets one
message per part (even parts of at most USERS_PER_PART users), each with `"range": [start, end]`: the slice [start:end) of its
linked users sorted by Entra object id (`end` null: to the last). The runner hands
the range to the run as `args["range"]`; the calendar run keeps all users for its
bookkeeping (so it forgets nobody else's ledger row) and resolves only its range.
Each part holds its own lease (`calendar@<start>`), so the parts run side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from shared.sync.base import SyncContext

T = TypeVar("T")

SPLIT_SYNCS = ("calendar",)  # the syncs whose run honours args["range"]
USERS_PER_PART = 2000  # docs/deploy.md (Queue fan-out, large customers) and bench/scenario_fleet.py


def parts(users: int, size: int | None = None) -> list[tuple[int, int | None]]:
    """The ranges for a tenant of `users` linked users: none up to `size` (USERS_PER_PART), else as few
    even parts as keep each at most `size`; the last one is open, so users linked since the count was
    taken are still run."""
    size = size or USERS_PER_PART
    if users <= size:
        return []
    count = math.ceil(users / size)
    starts = [users * i // count for i in range(count)]
    ends: list[int | None] = [*starts[1:], None]
    return list(zip(starts, ends, strict=True))


def user_range(args: Mapping[str, Any]) -> tuple[int, int | None] | None:
    """The run's range from `args`, or None for all users."""
    value = args.get("range")
    if value is None:
        return None
    start, end = value
    return int(start), None if end is None else int(end)


def select_part(ctx: SyncContext, users: Sequence[T]) -> list[T]:
    """The users this run resolves: all, or its part (`users` in their stable sorted order). The report
    notes the tenant's total (`linked_total`), from which the dispatcher decides the next split."""
    ctx.report.extra["linked_total"] = len(users)
    span = user_range(ctx.args)
    if span is None:
        return list(users)
    start, end = span
    ctx.report.extra["range"] = [start, end]
    return list(users[start:end])


def lease_name(sync: str, args: Mapping[str, Any]) -> str:
    """The lease a run holds: the sync's, or one per part of a split run."""
    span = user_range(args)
    return sync if span is None else f"{sync}@{span[0]}"
