"""getSchedule: free/busy of many mailboxes, with the one fallback to another anchor mailbox.

getSchedule is posted to one user's calendar (the anchor). When that mailbox is
missing it answers 404 for the whole request, and under Exchange RBAC for
Applications an out-of-scope anchor answers 403 as if consent were missing. The
anchor then gets its own answer and the request is asked again with the next id
as anchor (up to MAX_ANCHOR_TRIES refusals). A ConsentError is raised only when
no request at all could be read: then the app really lacks Calendars.Read.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeAlias
from urllib.parse import quote

from shared.errors import ConsentError, GraphError, GraphUnavailable, MailboxUnavailable
from shared.graph.client import Graph

SCHEDULE_LIMIT = 20
MAX_ANCHOR_TRIES = 3

ScheduleAnswer: TypeAlias = "Mapping[str, Any] | GraphError"


def anchor_chunks(ids: Sequence[str], avoid: Collection[str] = (), size: int = SCHEDULE_LIMIT) -> list[list[str]]:
    """The ids in chunks of `size` whose first id - the anchor mailbox - is not in `avoid`.

    Putting mailboxes known to be unreadable anywhere but first keeps a run at one
    request per chunk.
    """
    unique = list(dict.fromkeys(i for i in ids if i))
    ordered = [i for i in unique if i not in avoid] + [i for i in unique if i in avoid]
    count = math.ceil(len(ordered) / size)
    heads, tail = ordered[:count], ordered[count:]
    return [[head, *tail[n * (size - 1):(n + 1) * (size - 1)]] for n, head in enumerate(heads)]


def get_schedule(graph: Graph, ids: Sequence[str], start: datetime, end: datetime, interval_minutes: int = 15, *,
                 avoid_as_anchor: Collection[str] = ()) -> dict[str, ScheduleAnswer]:
    """Free/busy of every id (keyed lower-cased): its scheduleInformation or a GraphError
    (MailboxUnavailable for a missing or out-of-scope mailbox). 20 ids a request, in parallel."""
    window = {
        "startTime": {"dateTime": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "endTime": {"dateTime": end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        "availabilityViewInterval": interval_minutes,
    }
    chunks = anchor_chunks(ids, avoid_as_anchor)
    answered, refused = threading.Event(), threading.Event()
    consent: list[ConsentError] = []

    def one(chunk: list[str]) -> dict[str, ScheduleAnswer]:
        try:
            result = _chunk(graph, chunk, window, answered, refused)
        except ConsentError as exc:
            consent.append(exc)
            refused.set()
            return dict.fromkeys((c.lower() for c in chunk),
                                 GraphUnavailable("Microsoft Graph refused getSchedule for every mailbox tried in this group"))
        answered.set()
        return result

    answers: dict[str, ScheduleAnswer] = {}
    if chunks:
        with ThreadPoolExecutor(max_workers=min(graph.concurrency, len(chunks))) as pool:
            for part in pool.map(one, chunks):
                answers.update(part)
    if consent and not answered.is_set():
        raise consent[0]
    return answers


def _chunk(graph: Graph, chunk: list[str], window: Mapping[str, Any], answered: threading.Event,
           refused: threading.Event) -> dict[str, ScheduleAnswer]:
    """One chunk's answers; the anchor fallback. ConsentError when every anchor tried was refused."""
    out: dict[str, ScheduleAnswer] = {}
    remaining, refusals = list(chunk), 0
    while remaining:
        anchor = remaining[0]
        try:
            answer = graph.request("POST", f"/users/{quote(anchor, safe='@')}/calendar/getSchedule",
                                   body={"schedules": remaining, **window}, headers={"Prefer": 'outlook.timezone="UTC"'})
        except ConsentError:
            refusals += 1
            if refusals >= MAX_ANCHOR_TRIES or len(remaining) == 1 or (refused.is_set() and not answered.is_set()):
                raise
            remaining = remaining[1:] + remaining[:1]  # an out-of-scope anchor: try the next as anchor
            continue
        except GraphError as exc:
            if not isinstance(exc, MailboxUnavailable) and exc.status != 404:
                out.update(dict.fromkeys((r.lower() for r in remaining), exc))
                return out
            # the anchor (an unknown user, or a mailbox that cannot host the query) is its own answer
            out[anchor.lower()] = exc if isinstance(exc, MailboxUnavailable) else MailboxUnavailable(str(exc), exc.status, exc.code)
            remaining = remaining[1:]
            continue
        try:
            out.update(_informations(answer))
        except GraphUnavailable as exc:  # a malformed answer is its ids' answer, not the run's
            out.update(dict.fromkeys((r.lower() for r in remaining), exc))
        return out
    return out


def _informations(answer: Any) -> dict[str, ScheduleAnswer]:
    if not isinstance(answer, dict) or not isinstance(answer.get("value"), list):
        raise GraphUnavailable("Microsoft Graph answered getSchedule without a value list.")
    out: dict[str, ScheduleAnswer] = {}
    for info in answer["value"]:
        if not isinstance(info, dict):
            continue
        sid = str(info.get("scheduleId", "")).lower()
        err = info.get("error")
        if isinstance(err, dict):
            code = str(err.get("responseCode") or "")
            text = str(err.get("message") or code)
            out[sid] = MailboxUnavailable(f"{sid}: {text[:300]}", 0, code, out_of_scope="access" in (code + text).lower())
        elif err:
            out[sid] = MailboxUnavailable(f"{sid}: getSchedule error", 0, "")
        else:
            out[sid] = info
    return out
