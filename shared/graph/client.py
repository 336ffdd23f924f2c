"""Microsoft Graph client: a retrying session, requests, paging, delta rounds, $batch.

Only v1.0 endpoints. Errors become typed exceptions whose text says what to
fix; no token, secret or key is ever part of a message or a log line. The
token travels only to the configured Graph root: a nextLink, deltaLink or
stored link to any other scheme, host or port is refused before a request.
Resource paths live in the sibling modules (users, groups, contacts, schedule).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from shared import http
from shared.errors import (
    ConfigError,
    ConsentError,
    DeltaExpired,
    GraphAuthError,
    GraphError,
    GraphItemError,
    GraphUnavailable,
    MailboxUnavailable,
)
from shared.graph.auth import CONSENT_STEP, GraphAuth, checked_root, required_permission, scrub
from shared.http import HttpStats, make_session
from shared.settings import Tenant

log = logging.getLogger(__name__)

BATCH_LIMIT = 20
MAILBOX_CONCURRENCY = 4
MAX_ITEM_RETRY_AFTER = 30.0
# Pages one listing or delta round may take: 100,000 users at 100 a page, or 100,000 contacts of one
# folder at Outlook's 10 a page, stay far below it; more means Graph's paging runs in circles.
MAX_PAGES = 20_000
_DELTA_EXPIRED_CODES = {"syncstatenotfound", "resyncrequired", "syncstateinvalid", "errorinvalidsyncstatedata", "badrequest_expiredtoken"}
_NO_MAILBOX_CODES = {"mailboxnotenabledforrestapi", "mailboxnotsupportedforrestapi", "errormailboxnotfound", "resourcenotfound_mailbox"}


@dataclass
class DeltaRound:
    items: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    delta_link: str = ""


@dataclass(frozen=True)
class BatchRequest:
    id: str
    method: str
    url: str  # relative to the version root, e.g. "/users/{id}/contacts/delta"
    headers: Mapping[str, str] | None = None
    body: Any = None


@dataclass(frozen=True)
class BatchResponse:
    id: str
    status: int  # 0: Graph's answer for this item had no valid status
    headers: Mapping[str, str]
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _mailbox_key(url: str) -> str:
    m = re.match(r"^/?users/([^/?]+)", url)
    return m.group(1).lower() if m else ""


def _error_of(body: Any) -> tuple[str, str]:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return scrub(str(err.get("code") or ""))[:100], scrub(str(err.get("message") or ""))
    return "", ""


def _short(path: str) -> str:
    return path.split("?")[0]


class _Links:
    """The links one listing followed: a repeated link or too many pages is an error, not a loop."""

    def __init__(self, path: str) -> None:
        self.path = _short(path)
        self.seen: set[str] = set()

    def follow(self, link: str) -> str:
        if link in self.seen:
            raise GraphUnavailable(f"Microsoft Graph paging for {self.path} repeated a link it already gave; "
                                   "stopped instead of looping (the next run tries again).")
        if len(self.seen) >= MAX_PAGES:
            raise GraphUnavailable(f"Microsoft Graph paging for {self.path} went past {MAX_PAGES} pages; "
                                   "no tenant needs that many, so it was stopped.")
        self.seen.add(link)
        return link


def page_of(payload: Any, path: str) -> dict[str, Any]:
    """A collection page ({"value": [objects], links}); GraphUnavailable naming the path otherwise."""
    if not isinstance(payload, dict) or not isinstance(payload.get("value", []), list) or \
            not all(isinstance(i, dict) for i in payload.get("value", [])):
        got = type(payload.get("value")).__name__ if isinstance(payload, dict) else type(payload).__name__
        raise GraphUnavailable(f"Microsoft Graph answered {_short(path)} with a malformed page (got {got}, "
                               "expected an object with a value list).")
    return payload


class Graph(GraphAuth):
    """One tenant's Graph access for one run; thread-safe."""

    def __init__(self, tenant: Tenant, *, stats: HttpStats | None = None, verify: str | bool | None = None,
                 concurrency: int = 8, max_retry_after: float = 60.0, reuse_tokens: bool = True) -> None:
        self.tenant = tenant
        root = urlsplit(checked_root(tenant.graph_url, "NEXXT365_GRAPH_URL"))
        self._origin = (root.scheme, root.hostname, root.port)
        self.stats = stats or HttpStats()
        self.session = make_session(self.stats, max_retry_after=max_retry_after, pool_size=max(concurrency * 2, 8))
        if verify is not None:
            self.session.verify = verify
        self.root = f"{tenant.graph_url}/v1.0"
        self.concurrency = concurrency
        self.max_retry_after = max_retry_after
        self._init_auth(reuse_tokens)

    def close(self) -> None:
        self.session.close()

    # -- requests --------------------------------------------------------
    def _url(self, path_or_url: str, origin: str) -> str:
        if "://" not in path_or_url:
            return f"{self.root}/{path_or_url.lstrip('/')}"
        parts = urlsplit(path_or_url)
        if parts.scheme != "https" or (parts.scheme, parts.hostname, parts.port) != self._origin:
            where = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            message = (f"{origin} holds a link to {where}, not to the configured Graph root {self.tenant.graph_url} "
                       "(NEXXT365_GRAPH_URL); it was not followed and no token was sent.")
            if origin.startswith("the answer"):
                raise GraphUnavailable(message)
            raise ConfigError(message + " Clear that row to start with a full round.")
        return path_or_url

    def relative(self, url: str, origin: str = "a stored link") -> str:
        """A nextLink/deltaLink as a $batch-relative URL (only a link to the Graph root)."""
        url = self._url(url, origin)
        if url.startswith(self.root):
            return url[len(self.root):]
        parts = urlsplit(url)
        path = parts.path.removeprefix("/v1.0")
        return f"{path}?{parts.query}" if parts.query else path

    def request(self, method: str, path_or_url: str, *, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, body: Any = None, origin: str = "a stored link") -> Any:
        url = self._url(path_or_url, origin)
        for attempt in range(2):
            hdrs = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json", **(headers or {})}
            try:
                resp = self.session.request(method, url, params=params, headers=hdrs, json=body, allow_redirects=False)
            except requests.RequestException as exc:
                raise GraphUnavailable(f"Microsoft Graph could not be reached at {self.tenant.graph_url} ({type(exc).__name__}); "
                                 "check NEXXT365_GRAPH_URL and the network. The next run retries.") from None
            if resp.status_code == 401 and attempt == 0:
                self.forget_token()  # expired or revoked: fetch a fresh one once, bypassing every cache
                continue
            break
        payload: Any = None
        if resp.content:
            try:
                payload = resp.json()
            except ValueError:
                if resp.status_code < 400:
                    raise GraphUnavailable(f"Microsoft Graph answered {method} {_short(self.relative(url))} with "
                                           f"{resp.status_code} but no JSON (content type "
                                           f"{resp.headers.get('Content-Type', 'none')[:60]}).") from None
        if resp.status_code >= 300:
            raise self.error_for(resp.status_code, payload, path_or_url)
        return payload

    def get(self, path_or_url: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
            origin: str = "a stored link") -> Any:
        return self.request("GET", path_or_url, params=params, headers=headers, origin=origin)

    def error_for(self, status: int, body: Any, path: str) -> GraphError | ConsentError | GraphAuthError:
        """A typed, actionable error for a Graph error response (or a $batch item's)."""
        code, message = _error_of(body)
        lc = code.lower()
        short = _short(self.relative(path) if "://" in path else path)
        if not 100 <= status < 600:
            return GraphItemError(f"Microsoft Graph answered {short} in $batch without a valid status.", 0, "badBatchItem")
        if status == 410 or lc in _DELTA_EXPIRED_CODES:
            return DeltaExpired(f"The delta token for {short} has expired; a full round is needed.", status, code)
        if status == 404 and lc in _NO_MAILBOX_CODES:
            return MailboxUnavailable(f"{short}: the user has no Exchange Online mailbox (no licence, or on-premises).", status, code)
        if status == 403 or lc == "authorization_requestdenied":
            return self._denied(short, status, code)
        if status == 401:
            return GraphAuthError(f"Microsoft Graph rejected the access token for {short} ({code or 'HTTP 401'}).")
        if status == 400 and "delta" in short.lower() and ("token" in message.lower()):
            return DeltaExpired(f"The delta token for {short} is no longer valid; a full round is needed.", status, code)
        detail = f"{code}: {message}" if code else f"HTTP {status}"
        kind = GraphUnavailable if status == 429 or status >= 500 or status < 400 else GraphItemError
        return kind(f"Microsoft Graph {short} failed ({detail[:300]}).", status, code)

    def _denied(self, short: str, status: int, code: str) -> MailboxUnavailable | ConsentError:
        lc = code.lower()
        perm = required_permission(short)
        granted: set[str] = set()
        try:
            granted = self.roles()
        except GraphAuthError:
            pass
        if perm in granted and lc == "erroraccessdenied":
            return MailboxUnavailable(
                f"{short}: the mailbox is outside the app's mailbox scope (Exchange application access policy or "
                "RBAC for Applications). Add the user to the scoped group if they have ClearVox.",
                status, code, out_of_scope=True)
        scoped = (" If mailbox access is granted through Exchange RBAC for Applications instead, this mailbox is "
                  "outside that scope.") if lc == "erroraccessdenied" else ""
        return ConsentError(
            f"Microsoft Graph denied {short}: the app lacks the {perm} application permission or admin consent "
            f"was not granted. Fix: {CONSENT_STEP.format(app=self.tenant.client_id, perm=perm)}.{scoped}", permission=perm)

    # -- paging and delta ------------------------------------------------
    def iter_items(self, path: str, params: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following @odata.nextLink (never a repeated one)."""
        links = _Links(path)
        page = page_of(self.get(path, params=params, headers=headers), path)
        while True:
            yield from page.get("value", [])
            nxt = page.get("@odata.nextLink")
            if not nxt:
                return
            page = page_of(self.get(links.follow(str(nxt)), headers=headers, origin=f"the answer to {links.path}"), path)

    def delta(self, path_or_link: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
              origin: str = "a stored delta link") -> DeltaRound:
        """One complete delta round: every page up to the @odata.deltaLink."""
        rnd = DeltaRound()
        where = _short(self.relative(path_or_link, origin)) if "://" in path_or_link else _short(path_or_link)
        links = _Links(where)
        page = page_of(self.get(path_or_link, params=params, headers=headers, origin=origin), where)
        while True:
            _collect(rnd, page)
            if page.get("@odata.deltaLink"):
                rnd.delta_link = str(page["@odata.deltaLink"])
                return rnd
            nxt = page.get("@odata.nextLink")
            if not nxt:
                raise GraphUnavailable(f"Delta round for {where} ended without a deltaLink.")
            page = page_of(self.get(links.follow(str(nxt)), headers=headers, origin=f"the answer to {where}"), where)

    # -- $batch ----------------------------------------------------------
    def batch(self, requests_: Sequence[BatchRequest]) -> dict[str, BatchResponse]:
        """Send requests through $batch (20 per call, <= 4 per mailbox), retrying throttled items."""
        results: dict[str, BatchResponse] = {}
        pending = list(requests_)
        for attempt in range(6):
            if not pending:
                break
            chunks = _chunks(pending)
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
                answers = list(pool.map(self._send_batch, chunks))
            retry: list[BatchRequest] = []
            wait = 0.0
            by_id = {r.id: r for r in pending}
            for answer in answers:
                for item in answer:
                    if item.id not in by_id:
                        continue  # an id we never asked for is no answer to anything
                    if item.status in (429, 503, 504) and attempt < 5:
                        retry.append(by_id[item.id])
                        wait = max(wait, _retry_after(item.headers, attempt))
                        self.stats.count_retry(item.status)
                    else:
                        results[item.id] = item
            pending = retry
            if pending:
                http.wait(min(wait, MAX_ITEM_RETRY_AFTER))
        return results

    def _send_batch(self, chunk: Sequence[BatchRequest]) -> list[BatchResponse]:
        body = {"requests": [
            {k: v for k, v in {"id": r.id, "method": r.method, "url": r.url, "headers": dict(r.headers) if r.headers else None,
                               "body": r.body}.items() if v is not None}
            for r in chunk
        ]}
        for r, req in zip(chunk, body["requests"], strict=True):
            if r.body is not None:
                req.setdefault("headers", {})["Content-Type"] = "application/json"
        answer = self.request("POST", "/$batch", body=body)
        items = answer.get("responses") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise GraphUnavailable(f"Microsoft Graph answered $batch without a responses list (got {type(items).__name__}).")
        return [_batch_item(item) for item in items if isinstance(item, dict) and item.get("id") is not None]

    def delta_many(self, starts: Mapping[str, str], headers: Mapping[str, str] | None = None,
                   origin: str = "a stored delta link") -> dict[str, DeltaRound | GraphError]:
        """Many delta rounds at once through $batch; each key gets its round or its error."""
        rounds = {key: DeltaRound() for key in starts}
        results: dict[str, DeltaRound | GraphError] = {}
        todo = {key: self.relative(url, f"{origin} {key}") if "://" in url else url for key, url in starts.items()}
        links = {key: _Links(url) for key, url in todo.items()}
        while todo:
            try:
                answers = self.batch([BatchRequest(key, "GET", url, headers) for key, url in todo.items()])
            except GraphUnavailable as exc:
                results.update(dict.fromkeys(todo, exc))
                break
            nxt: dict[str, str] = {}
            for key, url in todo.items():
                try:
                    link = self._delta_step(rounds[key], answers.get(key), url)
                    if link is None:
                        results[key] = rounds[key]
                    else:
                        nxt[key] = self.relative(links[key].follow(link), f"the answer to {links[key].path}")
                except (ConsentError, GraphAuthError):
                    raise
                except GraphError as exc:
                    results[key] = exc
            todo = nxt
        return results

    def _delta_step(self, rnd: DeltaRound, ans: BatchResponse | None, url: str) -> str | None:
        """Collect one $batch delta page; the nextLink to follow, or None when the round is complete."""
        if ans is None:
            raise GraphUnavailable(f"no answer in $batch for {_short(url)}")
        if not ans.ok:
            err = self.error_for(ans.status, ans.body, url)
            raise err if isinstance(err, GraphError | ConsentError | GraphAuthError) else GraphUnavailable(str(err))
        try:
            page = page_of(ans.body, url)
        except GraphUnavailable as exc:
            raise GraphItemError(str(exc), ans.status, "malformedPage") from None
        _collect(rnd, page)
        if page.get("@odata.deltaLink"):
            rnd.delta_link = str(page["@odata.deltaLink"])
            return None
        if page.get("@odata.nextLink"):
            return str(page["@odata.nextLink"])
        raise GraphUnavailable(f"Delta round for {_short(url)} ended without a deltaLink.")


def _batch_item(item: Mapping[str, Any]) -> BatchResponse:
    status = item.get("status")
    headers = item.get("headers")
    return BatchResponse(str(item.get("id")), status if isinstance(status, int) else 0,
                         {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
                         item.get("body"))


def _collect(rnd: DeltaRound, page: Mapping[str, Any]) -> None:
    for item in page.get("value", []):
        (rnd.removed if "@removed" in item else rnd.items).append(item)


def _chunks(reqs: Sequence[BatchRequest]) -> list[list[BatchRequest]]:
    """Batches of <= 20 with <= 4 requests per mailbox each."""
    chunks: list[list[BatchRequest]] = []
    counts: list[dict[str, int]] = []
    for req in reqs:
        key = _mailbox_key(req.url)
        for chunk, count in zip(chunks, counts, strict=True):
            if len(chunk) < BATCH_LIMIT and (not key or count.get(key, 0) < MAILBOX_CONCURRENCY):
                chunk.append(req)
                count[key] = count.get(key, 0) + 1
                break
        else:
            chunks.append([req])
            counts.append({key: 1})
    return chunks


def _retry_after(headers: Mapping[str, str], attempt: int) -> float:
    for k, v in headers.items():
        if k.lower() == "retry-after":
            try:
                return min(float(v), MAX_ITEM_RETRY_AFTER)
            except ValueError:
                break
    return min(2.0 ** attempt, 8.0) + random.uniform(0, 0.5)
