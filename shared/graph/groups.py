"""Graph groups: the transitive user members of a group."""

from __future__ import annotations

from urllib.parse import quote

from shared.errors import GraphError
from shared.graph.client import Graph

GROUP_PERMISSION = "GroupMember.Read.All"


def transitive_user_ids(graph: Graph, group_id: str) -> list[str] | None:
    """Object ids of the group's transitive user members; None when the tenant has no such group.

    A ConsentError means the app lacks GROUP_PERMISSION (User.Read.All does not cover it).
    """
    path = f"/groups/{quote(group_id, safe='')}/transitiveMembers/microsoft.graph.user"
    try:
        return [str(m["id"]) for m in graph.iter_items(
            path, params={"$select": "id", "$top": "999", "$count": "true"}, headers={"ConsistencyLevel": "eventual"})
            if m.get("id")]
    except GraphError as exc:
        if exc.status == 404:
            return None
        raise
