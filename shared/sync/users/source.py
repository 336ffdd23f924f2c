"""Users sync, the Entra side: Graph delta rounds, the users group, whole users by id, and the cache of
the last seen copy of every Entra user (delta items carry only some properties).

A full round (a delta round without a token: every user) runs on the first
run, when the stored token expired (DeltaExpired), when the users group
setting changed, and every NEXXT365_FULL_SYNC_HOURS to catch drift; otherwise
the round resumes from the stored deltaLink and sees only changes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError, ConsentError, DeltaExpired
from shared.graph.auth import CONSENT_STEP
from shared.graph.client import Graph
from shared.graph.groups import GROUP_PERMISSION, transitive_user_ids
from shared.graph.users import user_by_id, users_by_id, users_delta, users_where
from shared.sync.users.rules import GRAPH_SELECT, object_key, text_of

if TYPE_CHECKING:
    from shared.settings import Options
    from shared.state import State

CURSOR = "users"
CACHE_TABLE = "entrausers"  # last seen Graph user per object id; the users group's members in partition "group"
MEMBERS_SCOPE = "group"
SELECT = ",".join(GRAPH_SELECT)
_FEW = 200  # up to this many cache rows are read one by one, more as one partition query


# No Entra user property is longer (displayName 256, phone numbers 64 ...): a longer value is garbage,
# cut here so that it can neither bloat a state row past Table Storage's limits nor a report.
MAX_VALUE = 1024


def strip_annotations(item: Mapping[str, Any]) -> dict[str, Any]:
    """A Graph user without OData annotations (kept: @removed), every text cut to MAX_VALUE characters."""
    return {k: _bounded(v) for k, v in item.items() if not k.startswith("@odata")}


def _bounded(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_VALUE]
    if isinstance(value, list):
        return [_bounded(v) for v in value]
    return value


def by_key(items: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Items by lower-cased object id. A round may list a user more than once, each time with some
    properties: the copies are merged, the later value of a property winning."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        oid = text_of(item.get("id"))
        if oid:
            out[object_key(oid)] = {**out.pop(object_key(oid), {}), **strip_annotations(item)}
    return out


def dump(user: Mapping[str, Any]) -> str:
    return json.dumps(user, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parallel(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


# ---- Graph


@dataclass
class GraphRound:
    """One users delta round: complete (`full`) or the changes since the stored deltaLink."""

    full: bool
    reason: str  # why it is a full round
    items: dict[str, dict[str, Any]]
    removed: dict[str, str]  # key -> object id
    delta_link: str


def full_round_reason(cursor: Mapping[str, Any] | None, options: Options, now: datetime) -> str:
    """Why this run must be a full round ("" when the stored deltaLink can be used)."""
    if not cursor or not cursor.get("delta_link"):
        return "first run"
    if str(cursor.get("group") or "") != (options.users_group or ""):
        return "the users group setting changed"
    if str(cursor.get("select") or "") != SELECT:
        return "the selected properties changed"
    full_at = cursor.get("full_at")
    if not isinstance(full_at, datetime):
        return "no full round recorded"
    if now - full_at >= timedelta(hours=options.full_sync_hours):
        return f"full reconcile (every {options.full_sync_hours} hours)"
    return ""


def graph_round(graph: Graph, cursor: Mapping[str, Any] | None, options: Options, now: datetime) -> GraphRound:
    """Resume from the stored deltaLink, or a full round when one is due or the token expired."""
    reason = full_round_reason(cursor, options, now)
    if not reason and cursor is not None:
        try:
            rnd = users_delta(graph, GRAPH_SELECT, str(cursor["delta_link"]))
        except DeltaExpired:
            reason = "the stored delta token expired"
        else:
            return GraphRound(False, "", by_key(rnd.items), _removed_ids(rnd.removed), rnd.delta_link)
    rnd = users_delta(graph, GRAPH_SELECT)
    return GraphRound(True, reason, by_key(rnd.items), _removed_ids(rnd.removed), rnd.delta_link)


def _removed_ids(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {object_key(oid): oid for item in items if (oid := text_of(item.get("id")))}


def group_members(graph: Graph, group_id: str, client_id: str) -> frozenset[str]:
    """Object ids (lower-case) of the group's transitive user members."""
    try:
        members = transitive_user_ids(graph, group_id)
    except ConsentError:
        raise ConsentError(
            f"Microsoft Graph denied the members of NEXXT365_USERS_GROUP {group_id}: reading a group's members needs the "
            f"{GROUP_PERMISSION} application permission (User.Read.All does not cover it). Fix: "
            f"{CONSENT_STEP.format(app=client_id, perm=GROUP_PERMISSION)}; or clear NEXXT365_USERS_GROUP.",
            permission=GROUP_PERMISSION) from None
    if members is None:
        raise ConfigError(f"NEXXT365_USERS_GROUP {group_id} is not a group in this tenant: copy the Object ID from "
                          "Entra ID > Groups > the group > Overview.")
    return frozenset(object_key(m) for m in members)


def fetch_users(graph: Graph, object_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """Whole Graph users by $batch (20 per request); None for a user Graph no longer has."""
    found = users_by_id(graph, {object_key(oid): oid for oid in dict.fromkeys(object_ids)}, GRAPH_SELECT)
    return {key: None if user is None else strip_annotations(user) for key, user in found.items()}


def find_graph_users(graph: Graph, who: str) -> list[dict[str, Any]]:
    """The Entra user(s) meant by an object id, an email (mail) or a sign-in name."""
    who = who.strip()
    if "@" not in who:
        user = user_by_id(graph, who, GRAPH_SELECT)
        return [] if user is None else [strip_annotations(user)]
    for prop in ("mail", "userPrincipalName"):
        found = [strip_annotations(u) for u in users_where(graph, prop, who, GRAPH_SELECT)]
        if found:
            return found
    return []


# ---- state


def load_cache(state: State, keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Last seen Graph users by key: all of them (keys None), or those asked for."""
    wanted = None if keys is None else sorted(set(keys))
    if wanted is None or len(wanted) > _FEW:
        rows = state.rows(CACHE_TABLE)
        keep = None if wanted is None else set(wanted)
        pairs = [(k, r) for k, r in rows.items() if keep is None or k in keep]
    else:
        got = parallel(lambda k: (k, state.get(CACHE_TABLE, k)), wanted, 8)
        pairs = [(k, r) for k, r in got if r is not None]
    out: dict[str, dict[str, Any]] = {}
    for key, row in pairs:
        try:
            user = json.loads(str(row.get("user") or ""))
        except ValueError:
            continue  # a damaged row reads as "not cached"
        if isinstance(user, dict):
            out[key] = user
    return out


class Background:
    """Run state writes while ClearVox is busy; `join` re-raises what failed."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.error: BaseException | None = None

        def target() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to join()
                self.error = exc

        self.thread = threading.Thread(target=target, name="users-state", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error

