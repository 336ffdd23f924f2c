"""Microsoft Graph: Teams presence of many users (cloudCommunications: getPresencesByUserId).

`POST /communications/getPresencesByUserId` with `{"ids": [...]}` (Entra object ids),
application permission Presence.Read.All (or Presence.ReadWrite.All), at most 650 ids
per request, at most 1,500 requests per 30 s per app and tenant (429 with Retry-After,
which the session honours). The answer is a collection of presence objects:
`{"id", "availability", "activity"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.errors import GraphUnavailable
from shared.graph.client import Graph

PRESENCES_PATH = "/communications/getPresencesByUserId"
PRESENCE_PERMISSION = "Presence.Read.All"
PRESENCE_IDS_LIMIT = 650


def get_presences(graph: Graph, object_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Presence of every object id (lower-cased), 650 ids per request, requests in parallel.

    Raises ConsentError naming Presence.Read.All when the app lacks the permission, and
    GraphUnavailable when Graph stays throttled or down, or answers garbage: presence is
    then left out of this run as a whole, never guessed for some users.
    """
    ids = list(dict.fromkeys(i for i in object_ids if i))
    chunks = [ids[n:n + PRESENCE_IDS_LIMIT] for n in range(0, len(ids), PRESENCE_IDS_LIMIT)]

    def one(chunk: list[str]) -> list[Any]:
        answer = graph.request("POST", PRESENCES_PATH, body={"ids": chunk})
        value = answer.get("value") if isinstance(answer, dict) else None
        if not isinstance(value, list):
            raise GraphUnavailable(f"Microsoft Graph {PRESENCES_PATH} answered without a list of presences.")
        return value

    out: dict[str, dict[str, Any]] = {}
    if chunks:
        with ThreadPoolExecutor(max_workers=min(graph.concurrency, len(chunks))) as pool:
            for value in pool.map(one, chunks):
                out.update({str(p["id"]).lower(): p for p in value if isinstance(p, dict) and p.get("id")})
    return out
