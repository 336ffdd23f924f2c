"""Users sync, what a run remembers for the next: the retry ledger (failed users and held deactivations,
in the `retries` table, partition "users") and the deactivations of the last 24 hours (the guard's
rolling cap, and the users to look up again by id in case Graph wrongly reported them removed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.sync.base import next_retries
from shared.sync.users.actions import UsersPlan
from shared.sync.users.rules import object_key
from shared.sync.users.source import CACHE_TABLE

if TYPE_CHECKING:
    from shared.state import State

RETRY_SCOPE = "users"
DEACTIVATED_SCOPE = "deactivated"  # in CACHE_TABLE: object key -> {"at": when the connector deactivated it}
DAY = timedelta(hours=24)


def retry_rows(old: Mapping[str, Mapping[str, Any]], failed: Mapping[str, Mapping[str, Any]], plan: UsersPlan,
               removed: Iterable[str], now: datetime) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The retries rows after a run (failed users with their attempts counted on; held deactivations,
    so that --confirm-deactivations finds them) and the old keys that succeeded.

    A row is {"kind": "failed" | "held", "reason", "attempts", "removed", "at"}; "removed" says
    Graph reported the user removed, so the retry needs no Graph read."""
    gone = set(removed)
    rows, done = next_retries(old, {k: {**row, "removed": k in gone} for k, row in failed.items()}, now)
    for d in plan.held:
        key = object_key(d.object_id)
        rows.setdefault(key, {"kind": "held", "reason": d.reason, "attempts": 0, "removed": key in gone, "at": now})
    return rows, [k for k in done if k not in rows]


class DeactivationLedger:
    """The users this connector deactivated in the last 24 hours."""

    def __init__(self, state: State, now: datetime) -> None:
        self.state = state
        self.now = now
        rows = state.rows(CACHE_TABLE, DEACTIVATED_SCOPE)
        self.recent = {k for k, row in rows.items() if isinstance(row.get("at"), datetime) and now - row["at"] < DAY}
        self.expired = sorted(set(rows) - self.recent)

    def record(self, keys: Iterable[str]) -> None:
        done = {k: {"at": self.now} for k in keys}
        if done:
            self.state.upsert(CACHE_TABLE, done, DEACTIVATED_SCOPE)
        self.state.delete(CACHE_TABLE, self.expired, DEACTIVATED_SCOPE)
