"""Microsoft Graph client: msal tokens, a retrying session, paging, delta rounds, $batch, getSchedule.

Only v1.0 endpoints. Errors become typed exceptions whose text says what to
fix; no token, secret or key is ever part of a message or a log line.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msal
import requests

from shared.errors import (
    ConsentError,
    DeltaExpired,
    GraphAuthError,
    GraphError,
    GraphItemError,
    GraphUnavailable,
    MailboxUnavailable,
)
from shared.http import HttpStats, make_session
from shared.settings import Tenant

log = logging.getLogger(__name__)

PERMISSIONS = ("User.Read.All", "Contacts.Read", "Calendars.Read")
CONSENT_STEP = ("Entra ID > App registrations > {app} > API permissions > Add a permission > Microsoft Graph > "
                "Application permissions > {perm}, then 'Grant admin consent'")
BATCH_LIMIT = 20
SCHEDULE_LIMIT = 20
MAILBOX_CONCURRENCY = 4
MAX_ITEM_RETRY_AFTER = 30.0
_DELTA_EXPIRED_CODES = {"syncstatenotfound", "resyncrequired", "syncstateinvalid", "errorinvalidsyncstatedata", "badrequest_expiredtoken"}
_NO_MAILBOX_CODES = {"mailboxnotenabledforrestapi", "mailboxnotsupportedforrestapi", "errormailboxnotfound", "resourcenotfound_mailbox"}

# What each AADSTS code means for an administrator, with the setting or portal step to fix it.
AADSTS_MESSAGES = {
    "7000215": "The client secret is wrong (AADSTS7000215). Set NEXXT365_CLIENT_SECRET to the secret's Value "
    "(not its Secret ID) from Entra ID > App registrations > {app} > Certificates & secrets.",
    "7000222": "The client secret has expired (AADSTS7000222). Create a new secret in Entra ID > App registrations > {app} > "
    "Certificates & secrets and update NEXXT365_CLIENT_SECRET (in Key Vault when deployed).",
    "700016": "The application {app} was not found in tenant {tenant} (AADSTS700016). Check NEXXT365_CLIENT_ID, and that "
    "NEXXT365_TENANT is the customer's tenant where the app is registered or consented.",
    "90002": "Tenant {tenant} was not found (AADSTS90002). Check NEXXT365_TENANT: use the tenant ID, the "
    "<name>.onmicrosoft.com domain or the token endpoint URL from the app registration.",
    "700027": "The certificate is not registered on the application (AADSTS700027). Upload it in Entra ID > App registrations > {app} > "
    "Certificates & secrets, or fix NEXXT365_CLIENT_CERTIFICATE.",
    "7000112": "The application {app} is disabled in tenant {tenant} (AADSTS7000112). Enable it in Entra ID > Enterprise applications.",
    "900023": "NEXXT365_TENANT {tenant} is not a valid tenant identifier (AADSTS900023).",
}


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
    status: int
    headers: Mapping[str, str]
    body: Any


def required_permission(path: str) -> str:
    """The application permission an endpoint needs (for the consent message)."""
    p = path.lower()
    if p.lstrip("/").startswith("groups"):
        return "GroupMember.Read.All"
    if "contact" in p:
        return "Contacts.Read"
    if "calendar" in p or "getschedule" in p or "/events" in p:
        return "Calendars.Read"
    return "User.Read.All"


def decode_roles(token: str) -> set[str]:
    """The `roles` claim of an access token (the granted application permissions)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError):
        return set()
    roles = claims.get("roles") or []
    return {str(r) for r in roles}


def _mailbox_key(url: str) -> str:
    m = re.match(r"^/?users/([^/?]+)", url)
    return m.group(1).lower() if m else ""


def _error_of(body: Any) -> tuple[str, str]:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return str(err.get("code") or ""), str(err.get("message") or "")
    return "", ""


# Access tokens are kept for the life of the process (a warm Functions worker runs
# the calendar sync every minute): one token request an hour instead of one a run.
_TOKENS: dict[str, tuple[str, float]] = {}
_TOKENS_LOCK = threading.Lock()


class Graph:
    """One tenant's Graph access for one run; thread-safe."""

    def __init__(self, tenant: Tenant, *, stats: HttpStats | None = None, verify: str | bool | None = None,
                 concurrency: int = 8, max_retry_after: float = 60.0, reuse_tokens: bool = True) -> None:
        self.tenant = tenant
        self.stats = stats or HttpStats()
        self.session = make_session(self.stats, max_retry_after=max_retry_after, pool_size=max(concurrency * 2, 8))
        if verify is not None:
            self.session.verify = verify
        self.root = f"{tenant.graph_url}/v1.0"
        self.concurrency = concurrency
        self.max_retry_after = max_retry_after
        self._app: msal.ConfidentialClientApplication | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()
        self.reuse_tokens = reuse_tokens
        self._cache_key: str | None = None

    # -- authentication --------------------------------------------------

    def close(self) -> None:
        self.session.close()
    def _credential(self) -> Any:
        if self.tenant.client_certificate is not None:
            pem = self.tenant.client_certificate()
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes

            cert = x509.load_pem_x509_certificate(pem.encode())
            return {"private_key": pem, "thumbprint": cert.fingerprint(hashes.SHA1()).hex(), "public_certificate": None}
        if self.tenant.client_secret is not None:
            return self.tenant.client_secret()
        raise GraphAuthError("No client secret or certificate is configured (NEXXT365_CLIENT_SECRET).")

    def _msal(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            microsoft = urlsplit(self.tenant.authority_host).hostname or ""
            known = microsoft.endswith((".microsoftonline.com", ".microsoftonline.us", ".chinacloudapi.cn", ".microsoftonline.de"))
            self._app = msal.ConfidentialClientApplication(
                self.tenant.client_id,
                client_credential=self._credential(),
                authority=self.tenant.authority,
                http_client=self.session,
                instance_discovery=None if known else False,
                validate_authority=known,
            )
        return self._app

    def _format(self, template: str) -> str:
        return template.format(app=self.tenant.client_id, tenant=self.tenant.tenant)

    def _process_key(self) -> str:
        """Identifies app + credential, without keeping the credential itself."""
        if self._cache_key is None:
            import hashlib

            cred = self._credential()
            material = cred if isinstance(cred, str) else str(cred.get("private_key", ""))
            digest = hashlib.sha256(material.encode()).hexdigest()
            self._cache_key = f"{self.tenant.authority}|{self.tenant.client_id}|{self.tenant.graph_url}|{digest}"
        return self._cache_key

    def forget_token(self) -> None:
        """Drop the token (Graph rejected it): the next call fetches a fresh one past every cache."""
        with self._lock:
            self._token = None
            self._app = None
            if self._cache_key:
                with _TOKENS_LOCK:
                    _TOKENS.pop(self._cache_key, None)

    def token(self) -> str:
        """An access token, reused until shortly before it expires (across runs in this process)."""
        with self._lock:
            if self._token and time.time() < self._token_expires - 120:
                return self._token
            if self.reuse_tokens:
                with _TOKENS_LOCK:
                    cached = _TOKENS.get(self._process_key())
                if cached and time.time() < cached[1] - 120:
                    self._token, self._token_expires = cached
                    return cached[0]
            try:
                result = self._msal().acquire_token_for_client(scopes=[f"{self.tenant.graph_url}/.default"])
            except requests.RequestException as exc:
                raise GraphAuthError(
                    f"Cannot reach the Entra login host {self.tenant.authority_host} ({type(exc).__name__}). "
                    "Check NEXXT365_AUTHORITY_HOST and the network."
                ) from None
            except ValueError as exc:  # msal: authority/tenant discovery failed
                text = str(exc)
                code = "90002" if "90002" in text or "tenant" in text.lower() else ""
                message = self._format(AADSTS_MESSAGES["90002"]) if code else f"Token request failed: {text[:300]}"
                raise GraphAuthError(message, aadsts=code) from None
            if "access_token" not in result:
                raise self._token_error(result)
            self._token = str(result["access_token"])
            self._token_expires = time.time() + float(result.get("expires_in", 3600))
            if self.reuse_tokens:
                with _TOKENS_LOCK:
                    _TOKENS[self._process_key()] = (self._token, self._token_expires)
            return self._token

    def _token_error(self, result: Mapping[str, Any]) -> GraphAuthError:
        codes = [str(c) for c in (result.get("error_codes") or [])]
        desc = str(result.get("error_description") or "")
        m = re.search(r"AADSTS(\d+)", desc)
        if m:
            codes.append(m.group(1))
        for code in codes:
            if code in AADSTS_MESSAGES:
                return GraphAuthError(self._format(AADSTS_MESSAGES[code]), aadsts=code)
        first = desc.splitlines()[0] if desc else str(result.get("error") or "unknown error")
        return GraphAuthError(f"Entra refused the token request: {first[:300]}", aadsts=codes[0] if codes else "")

    def roles(self) -> set[str]:
        return decode_roles(self.token())

    # -- requests --------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith("https://") or path_or_url.startswith("http://"):
            return path_or_url
        return f"{self.root}/{path_or_url.lstrip('/')}"

    def relative(self, url: str) -> str:
        """A nextLink/deltaLink as a $batch-relative URL."""
        if url.startswith(self.root):
            return url[len(self.root):]
        parts = urlsplit(url)
        path = parts.path.removeprefix("/v1.0")
        return f"{path}?{parts.query}" if parts.query else path

    def request(self, method: str, path_or_url: str, *, params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, body: Any = None) -> Any:
        url = self._url(path_or_url)
        for attempt in range(2):
            hdrs = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json", **(headers or {})}
            try:
                resp = self.session.request(method, url, params=params, headers=hdrs, json=body)
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
                payload = None
        if resp.status_code >= 400:
            raise self.error_for(resp.status_code, payload, path_or_url)
        return payload

    def get(self, path_or_url: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Any:
        return self.request("GET", path_or_url, params=params, headers=headers)

    def error_for(self, status: int, body: Any, path: str) -> GraphError | ConsentError | GraphAuthError:
        """A typed, actionable error for a Graph error response."""
        code, message = _error_of(body)
        lc = code.lower()
        short = self.relative(path).split("?")[0] if path.startswith("http") else path.split("?")[0]
        if status == 410 or lc in _DELTA_EXPIRED_CODES:
            return DeltaExpired(f"The delta token for {short} has expired; a full round is needed.", status, code)
        if status == 404 and lc in _NO_MAILBOX_CODES:
            return MailboxUnavailable(f"{short}: the user has no Exchange Online mailbox (no licence, or on-premises).", status, code)
        if status == 403 or lc == "authorization_requestdenied":
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
        if status == 401:
            return GraphAuthError(f"Microsoft Graph rejected the access token for {short} ({code or 'HTTP 401'}).")
        if status == 400 and "delta" in short.lower() and ("token" in message.lower()):
            return DeltaExpired(f"The delta token for {short} is no longer valid; a full round is needed.", status, code)
        detail = f"{code}: {message}" if code else f"HTTP {status}"
        kind = GraphUnavailable if status == 429 or status >= 500 else GraphItemError
        return kind(f"Microsoft Graph {short} failed ({detail[:300]}).", status, code)

    # -- paging and delta ------------------------------------------------
    def iter_items(self, path: str, params: Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following @odata.nextLink."""
        page = self.get(path, params=params, headers=headers)
        while True:
            yield from page.get("value", [])
            nxt = page.get("@odata.nextLink")
            if not nxt:
                return
            page = self.get(nxt, headers=headers)

    def delta(self, path_or_link: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> DeltaRound:
        """One complete delta round: every page up to the @odata.deltaLink."""
        rnd = DeltaRound()
        page = self.get(path_or_link, params=params, headers=headers)
        while True:
            _collect(rnd, page)
            if page.get("@odata.deltaLink"):
                rnd.delta_link = str(page["@odata.deltaLink"])
                return rnd
            nxt = page.get("@odata.nextLink")
            if not nxt:
                raise GraphUnavailable(f"Delta round for {path_or_link.split('?')[0]} ended without a deltaLink.")
            page = self.get(nxt, headers=headers)

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
                    if item.status in (429, 503, 504) and attempt < 5:
                        retry.append(by_id[item.id])
                        wait = max(wait, _retry_after(item.headers, attempt))
                        self.stats.count_retry(item.status)
                    else:
                        results[item.id] = item
            pending = retry
            if pending:
                time.sleep(min(wait, MAX_ITEM_RETRY_AFTER))
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
        out = []
        for item in answer.get("responses", []):
            out.append(BatchResponse(str(item.get("id")), int(item.get("status", 0)),
                                     {str(k): str(v) for k, v in (item.get("headers") or {}).items()}, item.get("body")))
        return out

    def delta_many(self, starts: Mapping[str, str], headers: Mapping[str, str] | None = None) -> dict[str, DeltaRound | GraphError]:
        """Many delta rounds at once through $batch; each key gets its round or its error."""
        rounds = {key: DeltaRound() for key in starts}
        results: dict[str, DeltaRound | GraphError] = {}
        todo = {key: self.relative(url) if url.startswith("http") else url for key, url in starts.items()}
        while todo:
            reqs = [BatchRequest(key, "GET", url, headers) for key, url in todo.items()]
            answers = self.batch(reqs)
            nxt: dict[str, str] = {}
            for key, url in todo.items():
                ans = answers.get(key)
                if ans is None:
                    results[key] = GraphUnavailable(f"no answer in $batch for {url.split('?')[0]}")
                    continue
                if ans.status >= 400:
                    err = self.error_for(ans.status, ans.body, url)
                    results[key] = err if isinstance(err, GraphError) else GraphUnavailable(str(err), ans.status, "")
                    if isinstance(err, ConsentError | GraphAuthError):
                        raise err
                    continue
                page = ans.body or {}
                _collect(rounds[key], page)
                if page.get("@odata.deltaLink"):
                    rounds[key].delta_link = str(page["@odata.deltaLink"])
                    results[key] = rounds[key]
                elif page.get("@odata.nextLink"):
                    nxt[key] = self.relative(str(page["@odata.nextLink"]))
                else:
                    results[key] = GraphUnavailable(f"Delta round for {url.split('?')[0]} ended without a deltaLink.")
            todo = nxt
        return results

    # -- getSchedule -----------------------------------------------------
    def get_schedule(self, schedules: Sequence[str], start: datetime, end: datetime,
                     interval_minutes: int = 15) -> dict[str, dict[str, Any] | GraphError]:
        """Free/busy of many mailboxes, 20 per request, requests in parallel.

        Keyed by lower-cased schedule id. A mailbox-level problem becomes that
        schedule's GraphError (MailboxUnavailable) instead of failing the run.
        """
        ids = list(dict.fromkeys(s for s in schedules if s))
        chunks = [ids[i:i + SCHEDULE_LIMIT] for i in range(0, len(ids), SCHEDULE_LIMIT)]
        window = {
            "startTime": {"dateTime": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "endTime": {"dateTime": end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "availabilityViewInterval": interval_minutes,
        }
        out: dict[str, dict[str, Any] | GraphError] = {}
        lock = threading.Lock()

        def one(chunk: list[str]) -> None:
            try:
                result = self._schedule_chunk(chunk, window)
            except (ConsentError, GraphAuthError):
                raise
            except GraphError as exc:  # one chunk's failure is its users' answer, not the run's
                result = dict.fromkeys((c.lower() for c in chunk), exc)
            with lock:
                out.update(result)

        if chunks:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
                list(pool.map(one, chunks))
        return out

    def _schedule_chunk(self, chunk: list[str], window: Mapping[str, Any]) -> dict[str, dict[str, Any] | GraphError]:
        out: dict[str, dict[str, Any] | GraphError] = {}
        remaining = list(chunk)
        while remaining:
            anchor = remaining[0]
            try:
                answer = self.request("POST", f"/users/{anchor}/calendar/getSchedule",
                                      body={"schedules": remaining, **window}, headers={"Prefer": 'outlook.timezone="UTC"'})
            except GraphError as exc:
                if not isinstance(exc, MailboxUnavailable) and exc.status != 404:
                    raise
                # The anchor (an unknown user, or a mailbox that cannot host the query) is its own answer; try the next.
                out[anchor.lower()] = exc if isinstance(exc, MailboxUnavailable) else MailboxUnavailable(str(exc), exc.status, exc.code)
                remaining = remaining[1:]
                continue
            for info in answer.get("value", []):
                sid = str(info.get("scheduleId", "")).lower()
                err = info.get("error")
                if err:
                    code = str(err.get("responseCode") or "")
                    text = str(err.get("message") or code)
                    out[sid] = MailboxUnavailable(f"{sid}: {text}", 0, code, out_of_scope="access" in (code + text).lower())
                else:
                    out[sid] = info
            break
        return out


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
