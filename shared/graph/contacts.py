"""Graph contacts: contact folders (the default folder and its children), contacts delta, contacts by id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.errors import GraphError, GraphItemError, GraphUnavailable
from shared.graph.client import BatchRequest, DeltaRound, Graph

# Immutable ids survive a move between folders; 200 is the largest contacts page Graph serves.
GRAPH_PREFER = 'IdType="ImmutableId", odata.maxpagesize=200'
FOLDER_PAGE = 100
_GONE_CODES = {"erroritemnotfound"}
_NO_USER_CODES = {"errorinvaliduser", "request_resourcenotfound", "resourcenotfound"}


def _q(value: str) -> str:
    return quote(value, safe="")


def folder_gone(err: GraphError) -> bool:
    """The folder (or item) was deleted: Graph's 404 ErrorItemNotFound."""
    return err.status == 404 and err.code.lower() in _GONE_CODES


def user_gone(err: GraphError) -> bool:
    """The user does not exist in Microsoft 365 (any more)."""
    return err.status == 404 and err.code.lower() in _NO_USER_CODES


def delta_start(object_id: str, folder_id: str, select: Sequence[str]) -> str:
    """The first request of a contacts delta round of one folder (relative to the Graph version root)."""
    return f"/users/{_q(object_id)}/contactFolders/{_q(folder_id)}/contacts/delta?$select={','.join(select)}"


def contacts_delta_many(graph: Graph, starts: Mapping[str, str]) -> dict[str, DeltaRound | GraphError]:
    """Many contacts delta rounds through $batch (immutable ids, big pages)."""
    return graph.delta_many(starts, headers={"Prefer": GRAPH_PREFER}, origin="the contacts cursor row")


def contacts_by_id(graph: Graph, wanted: Sequence[tuple[str, str, str]], select: Sequence[str]) -> list[dict[str, Any] | GraphError | None]:
    """(object id, folder id, contact id) -> the contact, None when it left the folder (404), or the error."""
    reqs = [BatchRequest(f"r{i}", "GET", f"/users/{_q(oid)}/contactFolders/{_q(fid)}/contacts/{_q(gid)}"
                                          f"?$select={','.join(select)}", {"Prefer": GRAPH_PREFER})
            for i, (oid, fid, gid) in enumerate(wanted)]
    answers = graph.batch(reqs) if reqs else {}
    out: list[dict[str, Any] | GraphError | None] = []
    for req in reqs:
        answer = answers.get(req.id)
        if answer is not None and answer.status == 200 and isinstance(answer.body, dict):
            out.append(answer.body)
        elif answer is not None and answer.status == 404:
            out.append(None)
        else:
            out.append(GraphUnavailable(f"no answer in $batch for {req.url.split('?')[0]}") if answer is None
                       else GraphItemError(f"Microsoft Graph {req.url.split('?')[0]} answered {answer.status}", answer.status))
    return out


@dataclass(frozen=True)
class Folders:
    """A user's personal contact folders: the default Contacts folder first, then its child folders, recursively."""

    default_id: str
    names: dict[str, str]  # folder id -> display name, in discovery order


def discover_folders(graph: Graph, object_ids: Sequence[str]) -> dict[str, Folders | GraphError]:
    """The contact folders of many users at once, level by level through $batch.

    Graph v1.0 lists under /contactFolders the folders *inside* the default
    Contacts folder, so the default folder is read by its well-known name and
    each level below through /childFolders. A folder deleted while this runs is
    left out; any other error becomes that user's answer.
    """
    names: dict[str, dict[str, str]] = {oid: {} for oid in object_ids}
    defaults: dict[str, str] = {}
    errors: dict[str, GraphError] = {}
    pending: list[tuple[str, str, str]] = []  # (object id, url, what)
    for oid in object_ids:
        base = f"/users/{_q(oid)}/contactFolders"
        pending += [(oid, f"{base}/contacts?$select=id,displayName", "default"),
                    (oid, f"{base}?$top={FOLDER_PAGE}&$select=id,displayName", "children")]
    followed: set[str] = set()
    while pending:
        pending = _folder_level(graph, pending, names, defaults, errors)
        for oid, url, _ in pending:  # a folder page that links back to one already read would loop
            if url in followed and oid not in errors:
                errors[oid] = GraphUnavailable(f"Microsoft Graph paging for {url.split('?')[0]} repeated a link; "
                                               "stopped instead of looping (the next run tries again).")
            followed.add(url)
        pending = [p for p in pending if p[0] not in errors]
    out: dict[str, Folders | GraphError] = {}
    for oid in object_ids:
        if oid in errors:
            out[oid] = errors[oid]
        elif not defaults.get(oid):
            out[oid] = GraphItemError(f"Microsoft Graph did not return the default Contacts folder of user {oid}.")
        else:
            default = defaults[oid]
            ordered = {default: names[oid].pop(default)}
            ordered.update(names[oid])
            out[oid] = Folders(default, ordered)
    return out


def _folder_level(graph: Graph, pending: list[tuple[str, str, str]], names: dict[str, dict[str, str]],
                  defaults: dict[str, str], errors: dict[str, GraphError]) -> list[tuple[str, str, str]]:
    """One level of folder discovery; the requests of the next level."""
    answers = graph.batch([BatchRequest(f"f{i}", "GET", url, {"Prefer": GRAPH_PREFER}) for i, (_, url, _) in enumerate(pending)])
    follow: list[tuple[str, str, str]] = []
    for i, (oid, url, what) in enumerate(pending):
        if oid in errors:
            continue
        answer = answers.get(f"f{i}")
        if answer is None:
            errors[oid] = GraphUnavailable(f"no answer in $batch for {url.split('?')[0]}")
            continue
        if not answer.ok:
            err = graph.error_for(answer.status, answer.body, url)
            if not isinstance(err, GraphError):
                raise err  # consent or authentication: the whole run stops with the fix
            if not (what == "children" and "/childFolders" in url and folder_gone(err)):  # else: deleted while we looked
                errors[oid] = err
            continue
        body = answer.body if isinstance(answer.body, dict) else {}
        if what == "default":
            fid = str(body.get("id") or "")
            defaults[oid] = fid
            names[oid].setdefault(fid, str(body.get("displayName") or "Contacts"))
            continue
        listed = body.get("value")
        for folder in listed if isinstance(listed, list) else ():
            fid = str(folder.get("id") or "") if isinstance(folder, dict) else ""
            if fid and fid not in names[oid]:
                names[oid][fid] = str(folder.get("displayName") or "")
                follow.append((oid, f"/users/{_q(oid)}/contactFolders/{_q(fid)}/childFolders"
                                    f"?$top={FOLDER_PAGE}&$select=id,displayName", "children"))
        if body.get("@odata.nextLink"):
            follow.append((oid, graph.relative(str(body["@odata.nextLink"]), f"the answer to {url.split('?')[0]}"), "children"))
    return follow
