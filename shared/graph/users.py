"""Graph users: the users delta round, users by id through $batch, look-ups by id, mail or sign-in name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from shared.errors import GraphError
from shared.graph.client import BatchRequest, DeltaRound, Graph

MINIMAL = {"Prefer": "return=minimal"}
DOCTOR_SELECT = ("id", "mail", "userPrincipalName")


def _path(object_id: str) -> str:
    return f"/users/{quote(object_id, safe='')}"


def users_delta(graph: Graph, select: Sequence[str], delta_link: str | None = None,
                origin: str = "the users cursor row") -> DeltaRound:
    """A users delta round: from the stored deltaLink, or a full round with `select` when there is none."""
    if delta_link:
        return graph.delta(delta_link, headers=MINIMAL, origin=origin)
    return graph.delta("/users/delta", params={"$select": ",".join(select)}, headers=MINIMAL)


def users_by_id(graph: Graph, ids: Mapping[str, str], select: Sequence[str]) -> dict[str, dict[str, Any] | None]:
    """Whole users by $batch (20 per request), keyed as `ids` (key -> object id); None for a user Graph no longer has."""
    reqs = [BatchRequest(key, "GET", f"{_path(oid)}?$select={','.join(select)}") for key, oid in ids.items()]
    out: dict[str, dict[str, Any] | None] = {}
    if not reqs:
        return out
    for key, resp in graph.batch(reqs).items():
        if resp.status == 200 and isinstance(resp.body, dict):
            out[key] = resp.body
        elif resp.status == 404:
            out[key] = None
        else:
            raise graph.error_for(resp.status, resp.body, _path(key))
    return out


def user_by_id(graph: Graph, object_id: str, select: Sequence[str]) -> dict[str, Any] | None:
    """One user by object id (or sign-in name); None when Graph has no such user."""
    try:
        found = graph.get(_path(object_id), params={"$select": ",".join(select)})
    except GraphError as exc:
        if exc.status in (400, 404):
            return None
        raise
    return found if isinstance(found, dict) else None


def users_where(graph: Graph, prop: str, value: str, select: Sequence[str]) -> list[dict[str, Any]]:
    """The users whose `prop` (mail, userPrincipalName) equals `value`."""
    literal = value.replace("'", "''")
    return list(graph.iter_items("/users", params={"$filter": f"{prop} eq '{literal}'", "$select": ",".join(select)}))


def all_users(graph: Graph, select: Sequence[str] = DOCTOR_SELECT) -> Iterator[dict[str, Any]]:
    """Every user of the directory, 999 a page."""
    return graph.iter_items("/users", params={"$select": ",".join(select), "$top": "999"})
