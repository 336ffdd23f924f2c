"""Microsoft Graph v1.0 and the Entra ID token endpoints, simulated over HTTPS.

The connector, the demo and the benchmark talk to this server exactly as they talk
to Microsoft: msal gets a token from `<url>/<tenant>` (with instance_discovery=False),
and the Graph client uses `<url>` as its Graph root. Shapes, status codes and error
codes follow Microsoft's documentation (and, where the documentation is silent,
behaviour reported against the live service), so that client code written against
the simulator handles the real thing: paging, delta rounds and expired delta tokens,
missing permissions, mailboxes without REST access or outside an application access
policy, getSchedule and $batch limits, MailboxConcurrency and throttling.

The tenant's data and its mutation API live in `GraphStore` (graph_store.py); this
module adds authentication, routing and rendering. One RLock (the store's) is held
for the whole of each request, so tests may mutate the tenant while clients run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import re
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from shared.sandbox.graph_store import (
    CONTACT_PROPERTIES,
    DEFAULT_USER_SELECT,
    USER_PROPERTIES,
    App,
    Contact,
    ContactFolder,
    GraphStore,
    UnknownTimeZoneError,
    User,
    changed_keys,
    zone,
)
from shared.sandbox.server import LoggedRequest, Request, Response, SimServer

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

# Application permissions that satisfy each endpoint, as listed in the v1.0 API reference.
USER_ROLES = frozenset({"User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
GROUP_MEMBER_ROLES = frozenset({"GroupMember.Read.All", "Group.Read.All", "GroupMember.ReadWrite.All",
                                "Group.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"})
CONTACT_ROLES = frozenset({"Contacts.Read", "Contacts.ReadWrite"})
CALENDAR_ROLES = frozenset({"Calendars.Read", "Calendars.ReadWrite"})
MAILBOX_SETTINGS_ROLES = frozenset({"MailboxSettings.Read", "MailboxSettings.ReadWrite"})
PRESENCE_ROLES = frozenset({"Presence.Read.All", "Presence.ReadWrite.All"})

#: path segments under /users/{id} served by Exchange Online (per-mailbox limits and policies apply).
MAILBOX_SEGMENTS = frozenset({"contacts", "contactfolders", "calendar", "calendars", "events",
                              "mailboxsettings", "messages", "mailfolders"})

_STATUS_RANK = {"free": 0, "unknown": 0, "workingElsewhere": 1, "tentative": 2, "busy": 3, "oof": 4}
_AVAILABILITY_DIGIT = {"free": "0", "unknown": "0", "tentative": "1", "busy": "2", "oof": "3", "workingElsewhere": "4"}
_PASCAL_STATUS = {"free": "Free", "tentative": "Tentative", "busy": "Busy", "oof": "Oof",
                  "workingElsewhere": "WorkingElsewhere", "unknown": "Unknown"}
_FILTERABLE_USER_PROPS = frozenset({"id", "mail", "userPrincipalName", "displayName", "givenName", "surname",
                                    "accountEnabled", "userType", "jobTitle", "department", "employeeId",
                                    "mailNickname", "companyName"})
_CONTACT_META = frozenset({"id", "parentFolderId", "createdDateTime", "lastModifiedDateTime", "changeKey"})
_CLAUSE = re.compile(r"^\s*(\w+)\s+eq\s+('(?:[^']|'')*'|true|false|null)\s*$", re.IGNORECASE)
_WWW_AUTHENTICATE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
                     f'client_id="{GRAPH_APP_ID}"')
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


# -- small helpers -------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _encode_state(state: dict[str, Any]) -> str:
    return _b64(json.dumps(state, separators=(",", ":")).encode())


def _decode_state(token: str) -> dict[str, Any] | None:
    try:
        state = json.loads(_unb64(token))
    except (ValueError, TypeError):
        return None
    return state if isinstance(state, dict) else None


def graph_time(dt: datetime) -> str:
    """Graph's dateTimeTimeZone.dateTime: local wall clock, seven fractional digits, no offset."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{dt.microsecond:06d}0"


def _iso_z(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """An ISO 8601 instant as Graph reads query parameters: without an offset it is UTC."""
    value = text.strip().replace(" ", "+")  # an unencoded '+01:00' arrives as ' 01:00'
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)  # Python reads six fractional digits, Graph writes seven
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def parse_prefer(headers: dict[str, str]) -> dict[str, str]:
    """`Prefer` preferences (comma-separated, values possibly quoted), keys lower-cased."""
    out: dict[str, str] = {}
    for part in re.findall(r'(?:[^,"]|"[^"]*")+', headers.get("prefer", "")):
        key, _, value = part.strip().partition("=")
        if key:
            out[key.strip().lower()] = value.strip().strip('"')
    return out


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                inner: dict[str, Any] | None = None) -> Response:
    """A Graph error response: {"error": {"code", "message", "innerError": {date, request-id, ...}}}."""
    rid = str(uuid.uuid4())
    inner_error: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                                   "request-id": rid, "client-request-id": rid}
    inner_error.update(inner or {})
    body = {"error": {"code": code, "message": message, "innerError": inner_error}}
    return Response(status, body, {"request-id": rid, "client-request-id": rid, **(headers or {})})


# -- bookkeeping types -------------------------------------------------------

@dataclass
class BatchFault:
    """Injected failure for individual $batch sub-requests."""

    match: Callable[[Request], bool]
    status: int
    count: int
    retry_after: int | None = None
    body: Any = None


@dataclass
class _Round:
    """A delta round in progress: the keys changed in (since, upto], paged by skiptoken."""

    kind: str  # "users" or "contacts:<folder id>"
    since: int
    upto: int
    keys: list[str]
    select: list[str] | None
    epoch: int
    id_filter: list[str] | None = None
    rid: str = ""  # set once stored (only rounds longer than one page are)


class _Fail(Exception):
    """Raised inside a route to answer with `response` (keeps the handlers linear)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


# -- workload identity federation: sign-in without a secret ----------------------------
#
# An app registration may trust another issuer's tokens through federated identity credentials
# (issuer + subject + audiences, at most 20 per app). A client then sends such a token as
# `client_assertion` (type jwt-bearer); Entra finds the credential whose issuer and subject match
# the token's, checks its audience, and verifies the signature with the issuer's keys and the
# expiry. Errors as Entra answers them: AADSTS70021 (the app has no such credential), 700211
# (issuer), 700213 (subject), 700212 (audience), 50013 (signature), 700024 (time range).

@dataclass(frozen=True)
class FederatedCredential:
    name: str
    issuer: str
    subject: str
    audiences: tuple[str, ...]


class FederatedSignIn:
    """The federated credentials of the apps and the keys of trusted issuers (mixed into GraphSim)."""

    MAX_PER_APP = 20

    def __init__(self) -> None:
        self.federated_credentials: dict[str, list[FederatedCredential]] = {}
        self.issuer_keys: dict[str, dict[str, Any]] = {}

    def add_federated_credential(self, client_id: str, *, issuer: str, subject: str,
                                 audiences: Sequence[str] = ("api://AzureADTokenExchange",),
                                 name: str | None = None) -> FederatedCredential:
        creds = self.federated_credentials.setdefault(client_id, [])
        if len(creds) >= self.MAX_PER_APP:
            raise ValueError(f"at most {self.MAX_PER_APP} federated identity credentials per application")
        if any(c.issuer == issuer and c.subject == subject for c in creds):
            raise ValueError("the combination of issuer and subject must be unique on the app")
        cred = FederatedCredential(name or f"fic-{len(creds) + 1}", issuer, subject, tuple(audiences))
        creds.append(cred)
        return cred

    def trust_issuer(self, issuer: str, keys: dict[str, Any]) -> None:
        """Publish `issuer`'s signing keys (kid -> public key), as its jwks_uri would."""
        self.issuer_keys.setdefault(issuer, {}).update(keys)

    @staticmethod
    def is_federated(app: App, assertion: str) -> bool:
        """A federated assertion comes from another issuer; a certificate's is issued by the app itself."""
        import jwt

        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return str(claims.get("iss", "")) != app.client_id

    def check_federated(self, app: App, assertion: str,
                        error: Callable[[int, str, int, str], Response]) -> Response | None:
        import jwt

        claims = jwt.decode(assertion, options={"verify_signature": False})
        iss, sub, aud = str(claims.get("iss", "")), str(claims.get("sub", "")), claims.get("aud", "")
        audiences = [str(a) for a in aud] if isinstance(aud, list) else [str(aud)]
        creds = self.federated_credentials.get(app.client_id, [])
        if not creds:
            return error(400, "invalid_request", 70021,
                         "No matching federated identity record found for presented assertion. Assertion Issuer: "
                         f"'{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{','.join(audiences)}'.")
        same_issuer = [c for c in creds if c.issuer == iss]
        if not same_issuer:
            return error(400, "invalid_client", 700211,
                         f"No matching federated identity record found for presented assertion issuer '{iss}'. Please "
                         "check your federated identity credential Subject, Audience and Issuer against the presented assertion.")
        bad = self._verify(iss, assertion, error)
        if bad is not None:
            return bad
        match = next((c for c in same_issuer if c.subject == sub), None)
        if match is None:
            return error(400, "invalid_client", 700213,
                         f"No matching federated identity record found for presented assertion subject '{sub}'. Please "
                         "check your federated identity credential Subject, Audience and Issuer against the presented assertion.")
        if not set(audiences) & set(match.audiences):
            return error(400, "invalid_client", 700212,
                         f"No matching federated identity record found for presented assertion audience "
                         f"'{','.join(audiences)}'. Please check your federated identity credential Subject, Audience and "
                         "Issuer against the presented assertion.")
        return None

    def _verify(self, issuer: str, assertion: str, error: Callable[[int, str, int, str], Response]) -> Response | None:
        import jwt

        kid = str(jwt.get_unverified_header(assertion).get("kid", ""))
        key = self.issuer_keys.get(issuer, {}).get(kid)
        if key is None:
            return error(401, "invalid_client", 50013,
                         f"Assertion failed signature validation. [Reason - The key was not found., Key ID: '{kid}']")
        try:
            jwt.decode(assertion, key, algorithms=["RS256"], leeway=60, options={"verify_aud": False,
                                                                                "require": ["exp", "iss", "sub", "aud"]})
        except jwt.ExpiredSignatureError:
            return error(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")
        except jwt.PyJWTError:
            return error(401, "invalid_client", 50013, "Assertion failed signature validation. [Reason - The provided "
                         "signature value did not match the expected signature value.]")
        return None


# -- the simulator -------------------------------------------------------------

class GraphSim(GraphStore, SimServer, FederatedSignIn):
    """Entra ID token endpoints + Microsoft Graph v1.0 over HTTPS, backed by an in-memory tenant.

    Constructor options beyond the basics tune Microsoft's limits and variants:
    `outlook_page_size` (default page of Outlook collections and delta), `token_lifetime`
    (seconds), `schedule_status_casing` ("lower": "busy", "pascal": "Busy" - Microsoft's
    examples show both), `schedule_limit` (schedules per getSchedule, documented 20),
    `schedule_max_days` (getSchedule window), `schedule_details` (subject/location in
    scheduleItems), `batch_limit` (20), `mailbox_concurrency` (4) and `mailbox_retry_after`.
    """

    def __init__(self, latency: float = 0.0, tenant_id: str | None = None, domain: str = "contoso.onmicrosoft.com",
                 page_size: int = 100, *, outlook_page_size: int = 10, token_lifetime: int = 3599,
                 schedule_status_casing: str = "lower", schedule_limit: int = 20, schedule_max_days: int = 62,
                 schedule_details: bool = True, batch_limit: int = 20, mailbox_concurrency: int = 4,
                 mailbox_retry_after: int = 1, max_rounds: int = 50_000) -> None:
        GraphStore.__init__(self, tenant_id=tenant_id, domain=domain)
        SimServer.__init__(self, latency=latency)
        FederatedSignIn.__init__(self)
        if schedule_status_casing not in ("lower", "pascal"):
            raise ValueError("schedule_status_casing is 'lower' or 'pascal'")
        self.page_size = page_size
        self.outlook_page_size = outlook_page_size
        self.token_lifetime = token_lifetime
        self.schedule_status_casing = schedule_status_casing
        self.schedule_limit = schedule_limit
        self.schedule_max_days = schedule_max_days
        self.schedule_details = schedule_details
        self.batch_limit = batch_limit
        self.mailbox_concurrency = mailbox_concurrency
        self.mailbox_retry_after = mailbox_retry_after
        self.max_rounds = max_rounds
        #: requests per route (HTTP requests and $batch sub-requests alike), e.g. counts["users.delta"].
        self.counts: Counter[str] = Counter()
        #: $batch sub-requests, one entry each (the HTTP `log` has one entry per $batch).
        self.batch_log: list[LoggedRequest] = []
        self.batch_faults: list[BatchFault] = []
        self._token_key = os.urandom(32)
        self._live_tokens: set[str] = set()  # "uti" of tokens not yet expired by expire_access_tokens()
        self._delta_epoch = {"users": 0, "contacts": 0}
        self._epoch_modes: dict[str, list[str]] = {"users": [], "contacts": []}
        self._rounds: OrderedDict[str, _Round] = OrderedDict()
        self._rewrites: list[list[Any]] = []  # [match, change, count]

    @property
    def authority(self) -> str:
        """The msal authority for this tenant: `<url>/<tenant id>`."""
        return f"{self.url}/{self.tenant_id}"

    # -- test controls -------------------------------------------------------
    def expire_delta_tokens(self, *, users: bool = True, contacts: bool = True, reset: bool = False) -> None:
        """Invalidate every delta and skip token issued so far.

        Directory (users) tokens then answer 400 `syncStateNotFound` (Microsoft's answer for a
        token past its 7-day life); with `reset=True` they answer 410 Gone with a Location header
        to restart from scratch (the documented "synchronization reset"). Outlook (contacts)
        tokens answer 410 `SyncStateNotFound`.
        """
        with self._data_lock:
            for kind, wanted in (("users", users), ("contacts", contacts)):
                if wanted:
                    self._epoch_modes[kind].append("reset" if reset else "expired")
                    self._delta_epoch[kind] += 1

    def reset_stats(self) -> None:
        """Forget the request log, the $batch sub-request log and the per-route counts."""
        with self._data_lock:
            self.clear_log()
            self.batch_log.clear()
            self.counts.clear()

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (Graph answers 401 until a new one is fetched)."""
        with self._data_lock:
            self._live_tokens.clear()

    def inject_batch_item(self, status: int, *, count: int = 1, match: Callable[[Request], bool] | None = None,
                          retry_after: int | None = None, body: Any = None) -> None:
        """Fail the next `count` $batch sub-requests matching `match` (429/503 get Retry-After if given)."""
        with self._data_lock:
            self.batch_faults.append(BatchFault(match or (lambda r: True), status, count, retry_after, body))

    def fault_body(self, status: int) -> Any:
        """Injected faults use Graph's error shape; 429 is the documented throttling body."""
        return self._fault_response(status, None).body

    def _fault_response(self, status: int, retry_after: int | None, body: Any = None) -> Response:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if body is not None:
            return Response(status, body, headers)
        if status == 429:
            return graph_error(429, "TooManyRequests", "Please retry again later.", headers,
                               {"code": "429", "message": "Please retry after", "status": "429"})
        if status == 503:
            return graph_error(503, "serviceNotAvailable", "The service is temporarily unavailable.", headers)
        if status == 504:
            return graph_error(504, "UnknownError", "Gateway timeout.", headers)
        return graph_error(status, "generalException", "An unspecified error has occurred.", headers)

    def rewrite(self, change: Callable[[Request, Response], Response], *, count: int = 1,
                match: Callable[[Request], bool] | None = None) -> None:
        """Answer the next `count` matching requests with `change(request, normal answer)`: a looping
        nextLink, a link to another host, a token error echoing the secret, malformed JSON."""
        with self._data_lock:
            self._rewrites.append([match or (lambda r: True), change, count])

    # -- entry point -----------------------------------------------------------
    def handle(self, req: Request) -> Response:
        with self._data_lock:
            try:
                resp = self._dispatch(req)
            except _Fail as fail:
                resp = fail.response
            for rule in self._rewrites:
                if rule[2] > 0 and rule[0](req):
                    rule[2] -= 1
                    return rule[1](req, resp)  # type: ignore[no-any-return]
            return resp

    def _dispatch(self, req: Request) -> Response:
        segs = [unquote(s) for s in req.path.split("/") if s]
        if segs and re.fullmatch(r"v\d+(\.\d+)?|beta", segs[0], re.IGNORECASE):
            return self._graph(req, segs)
        return self._identity(req, segs)

    # -- Entra ID ----------------------------------------------------------------
    def _identity(self, req: Request, segs: list[str]) -> Response:
        low = [s.lower() for s in segs]
        if low == ["common", "discovery", "instance"]:
            # for clients that pass instance_discovery=f"{sim.url}/common/discovery/instance"
            self.counts["instance_discovery"] += 1
            host = urlsplit(self.url).netloc
            return Response(200, {"tenant_discovery_endpoint": f"{self.url}/common/v2.0/.well-known/openid-configuration",
                                  "api-version": "1.1",
                                  "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}]})
        if len(segs) >= 2 and req.method == "GET" and low[1:] in (["v2.0", ".well-known", "openid-configuration"],
                                                                 [".well-known", "openid-configuration"]):
            self.counts["openid"] += 1
            return self._openid(segs[0], v2=low[1] == "v2.0")
        if len(segs) >= 3 and low[1:] in (["oauth2", "v2.0", "token"], ["oauth2", "token"]):
            self.counts["token"] += 1
            if req.method != "POST":
                return self._aad_error(405, "invalid_request", 900561,
                                       "The endpoint only accepts POST requests. Received a GET request.")
            return self._token(req, segs[0], v1=low[2] == "token")
        self.counts["unknown"] += 1
        return graph_error(404, "NotFound", f"The resource '{req.path}' was not found.")

    def _tenant_matches(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant_id.lower(), self.domain.lower())

    def _aad_error(self, status: int, error: str, code: int, message: str) -> Response:
        now = datetime.now(UTC)
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        desc = f"AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {stamp}"
        return Response(status, {"error": error, "error_description": desc, "error_codes": [code],
                                 "timestamp": stamp, "trace_id": trace, "correlation_id": corr,
                                 "error_uri": f"{self.url}/error?code={code}"})

    def _tenant_not_found(self, tenant: str, error: str) -> Response:
        return self._aad_error(400, error, 90002,
                               f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                               "signing into the correct cloud. Check with your subscription administrator, this may "
                               "happen if there are no active subscriptions for the tenant.")

    def _openid(self, tenant: str, *, v2: bool) -> Response:
        if not self._tenant_matches(tenant):
            return self._tenant_not_found(tenant, "invalid_tenant")
        base = f"{self.url}/{self.tenant_id}"
        suffix = "/v2.0" if v2 else ""
        oauth = f"{base}/oauth2{suffix}"
        return Response(200, {
            "token_endpoint": f"{oauth}/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{base}/discovery{suffix}/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0" if v2 else f"https://sts.windows.net/{self.tenant_id}/",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{oauth}/authorize",
            "device_authorization_endpoint": f"{oauth}/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{oauth}/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        })

    def _graph_resources(self) -> set[str]:
        return {GRAPH_RESOURCE, GRAPH_APP_ID, self.url}

    def _token(self, req: Request, tenant: str, *, v1: bool) -> Response:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode(errors="replace"), keep_blank_values=True).items()}
        if not self._tenant_matches(tenant):
            return self._tenant_not_found(tenant, "invalid_request")
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        basic = req.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                user, _, pw = base64.b64decode(basic[6:]).decode().partition(":")
                client_id, secret = unquote(user), unquote(pw)
            except ValueError:
                pass
        grant = form.get("grant_type")
        if not grant:
            return self._aad_error(400, "invalid_request", 900144,
                                   "The request body must contain the following parameter: 'grant_type'.")
        if grant != "client_credentials":
            return self._aad_error(400, "unsupported_grant_type", 70003,
                                   f"The app requested an unsupported grant type '{grant}'.")
        app = self.apps.get(client_id)
        if app is None:
            return self._aad_error(400, "unauthorized_client", 700016,
                                   f"Application with identifier '{client_id}' was not found in the directory "
                                   f"'{self.domain}'. This can happen if the application has not been installed by the "
                                   "administrator of the tenant or consented to by any user in the tenant. You may have "
                                   "sent your authentication request to the wrong tenant.")
        if v1:
            resource = form.get("resource", "")
            if not resource:
                return self._aad_error(400, "invalid_resource", 50001,
                                       "The resource principal named  was not found in the tenant.")
        else:
            scopes = [s for s in form.get("scope", "").split() if s not in ("openid", "profile", "offline_access")]
            if len(scopes) != 1 or not scopes[0].endswith("/.default"):
                return self._aad_error(400, "invalid_scope", 1002012,
                                       f"The provided value for scope {form.get('scope', '')} is not valid. Client "
                                       "credential flows must have a scope value with /.default suffixed to the "
                                       "resource identifier (application ID URI).")
            resource = scopes[0][: -len("/.default")]
        if resource.rstrip("/") not in self._graph_resources():
            return self._aad_error(400, "invalid_resource", 500011,
                                   f"The resource principal named {resource} was not found in the tenant named "
                                   f"{self.domain}. This can happen if the application has not been installed by the "
                                   "administrator of the tenant or consented to by any user in the tenant. You might have "
                                   "sent your authentication request to the wrong tenant.")
        if form.get("client_assertion"):
            if form.get("client_assertion_type") != _ASSERTION_TYPE:
                return self._aad_error(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
            failure = self._check_assertion(app, form["client_assertion"])
            if failure is not None:
                return failure
            credential = "2"
        elif secret:
            match = next((s for s in app.secrets if hmac.compare_digest(s.value.encode(), secret.encode())), None)
            if match is None:
                return self._aad_error(401, "invalid_client", 7000215,
                                       "Invalid client secret provided. Ensure the secret being sent in the request is "
                                       "the client secret value, not the client secret ID, for a secret added to app "
                                       f"'{client_id}'.")
            if match.expired:
                return self._aad_error(401, "invalid_client", 7000222,
                                       f"The provided client secret keys for app '{client_id}' are expired. Visit the "
                                       "Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or "
                                       "consider using certificate credentials for added security: "
                                       "https://aka.ms/certCreds.")
            credential = "1"
        else:
            return self._aad_error(401, "invalid_client", 7000218,
                                   "The request body must contain the following parameter: 'client_assertion' or "
                                   "'client_secret'.")
        return self._issue_token(app, credential, v1=v1, resource=resource)

    def _check_assertion(self, app: App, assertion: str) -> Response | None:
        """Verify a private_key_jwt client assertion against the app's registered certificates."""
        import jwt
        from cryptography.hazmat.primitives import hashes

        if self.is_federated(app, assertion):  # another issuer's token: a federated identity credential
            return self.check_federated(app, assertion, self._aad_error)
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return self._aad_error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        wanted256, wanted1 = header.get("x5t#S256"), header.get("x5t")
        cert = next((c for c in app.certificates
                     if _b64(c.fingerprint(hashes.SHA256())) == str(wanted256 or "").rstrip("=")
                     or _b64(c.fingerprint(hashes.SHA1())) == str(wanted1 or "").rstrip("=")), None)
        if cert is None:
            return self._aad_error(401, "invalid_client", 700027,
                                   "Client assertion contains an invalid signature. [Reason - The key was not found., "
                                   f"Thumbprint of key used by client: '{wanted256 or wanted1}']")
        audiences = [f"{self.url}/{t}/oauth2{v}/token" for t in (self.tenant_id, self.domain) for v in ("/v2.0", "")]
        try:
            claims = jwt.decode(assertion, cert.public_key(), algorithms=["RS256", "PS256"], audience=audiences,
                                issuer=app.client_id, leeway=300, options={"require": ["exp", "aud", "iss", "sub"]})
        except jwt.ExpiredSignatureError:
            return self._aad_error(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")
        except jwt.InvalidSignatureError:
            return self._aad_error(401, "invalid_client", 700027,
                                   "Client assertion contains an invalid signature. [Reason - The provided signature "
                                   "value did not match the expected signature value.]")
        except jwt.InvalidAudienceError:
            return self._aad_error(401, "invalid_client", 700027,
                                   "Client assertion contains an invalid audience; it must be the token endpoint.")
        except jwt.PyJWTError:
            return self._aad_error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        if claims.get("sub") != app.client_id:
            return self._aad_error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        return None

    def _issue_token(self, app: App, credential: str, *, v1: bool, resource: str) -> Response:
        now = int(time.time())
        uti = _b64(os.urandom(16))
        sp_id = str(uuid.uuid5(uuid.UUID(self.tenant_id) if _is_guid(self.tenant_id) else uuid.NAMESPACE_URL,
                               app.client_id))
        issuer = f"https://sts.windows.net/{self.tenant_id}/"
        claims: dict[str, Any] = {
            "aud": GRAPH_RESOURCE, "iss": issuer, "iat": now, "nbf": now, "exp": now + self.token_lifetime,
            "aio": _b64(os.urandom(24)), "app_displayname": app.display_name, "appid": app.client_id,
            "azp": app.client_id, "appidacr": credential, "idp": issuer, "idtyp": "app", "oid": sp_id,
            "sub": sp_id, "tenant_region_scope": "EU", "tid": self.tenant_id, "uti": uti, "ver": "1.0",
            "xms_tcdt": now,
        }
        if app.roles:  # Entra omits the claim when nothing is consented
            claims["roles"] = list(app.roles)
        header = {"typ": "JWT", "alg": "RS256", "x5t": "sim", "kid": "sim"}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        token = f"{signing_input}.{_b64(hmac.new(self._token_key, signing_input.encode(), hashlib.sha256).digest())}"
        self._live_tokens.add(uti)
        if v1:
            return Response(200, {"token_type": "Bearer", "expires_in": str(self.token_lifetime),
                                  "ext_expires_in": str(self.token_lifetime),
                                  "expires_on": str(now + self.token_lifetime), "not_before": str(now),
                                  "resource": resource, "access_token": token})
        return Response(200, {"token_type": "Bearer", "expires_in": self.token_lifetime,
                              "ext_expires_in": self.token_lifetime, "access_token": token})

    # -- Graph: authentication and routing -----------------------------------
    def _authenticate(self, req: Request) -> dict[str, Any]:
        def unauthorized(message: str) -> _Fail:
            return _Fail(graph_error(401, "InvalidAuthenticationToken", message,
                                     {"WWW-Authenticate": _WWW_AUTHENTICATE}))

        header = req.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if not token:
            raise unauthorized("Access token is empty.")
        parts = token.split(".")
        if len(parts) != 3:
            raise unauthorized("CompactToken parsing failed with error code: 80049217")
        expected = _b64(hmac.new(self._token_key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            raise unauthorized("Access token validation failure.")
        claims: dict[str, Any] = json.loads(_unb64(parts[1]))
        if claims.get("aud") != GRAPH_RESOURCE or claims.get("tid") != self.tenant_id:
            raise unauthorized("Access token validation failure. Invalid audience.")
        if claims.get("exp", 0) < time.time() or claims.get("uti") not in self._live_tokens:
            raise unauthorized("Lifetime validation failed, the token is expired.")
        return claims

    def _graph(self, req: Request, segs: list[str]) -> Response:
        version = segs[0]
        if version != "v1.0":
            self.counts["unknown"] += 1
            return graph_error(400, "BadRequest", f"Invalid version: {version}")
        claims = self._authenticate(req)
        roles = frozenset(claims.get("roles", []))
        rest = segs[1:]
        low = [s.lower() for s in rest]
        if not rest:
            self.counts["unknown"] += 1
            return graph_error(400, "BadRequest", "Invalid request.")
        if low == ["$batch"]:
            self.counts["$batch"] += 1
            self._method(req, "POST")
            return self._batch(req)
        if low[0] == "me":
            self.counts["me"] += 1
            return graph_error(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
        if low[0] == "users":
            return self._users_route(req, rest, low, roles)
        if low == ["communications", "getpresencesbyuserid"]:
            return self._get_presences(req, roles)
        if low[0] == "groups" and len(rest) >= 2:
            return self._groups_route(req, rest, low, roles)
        self.counts["unknown"] += 1
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[0]}'.")

    @staticmethod
    def _method(req: Request, method: str) -> None:
        if req.method != method:
            raise _Fail(graph_error(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."))

    @staticmethod
    def _require(roles: frozenset[str], allowed: frozenset[str], *, mailbox: bool) -> None:
        if roles & allowed:
            return
        if mailbox:
            raise _Fail(graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."))
        raise _Fail(graph_error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."))

    def _users_route(self, req: Request, rest: list[str], low: list[str], roles: frozenset[str]) -> Response:
        if len(rest) == 1:
            self.counts["users"] += 1
            self._method(req, "GET")
            self._require(roles, USER_ROLES, mailbox=False)
            return self._list_users(req)
        if len(rest) == 2 and low[1] in ("delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()"):
            self.counts["users.delta"] += 1
            self._method(req, "GET")
            self._require(roles, USER_ROLES, mailbox=False)
            return self._users_delta(req)
        key = rest[1]
        if len(rest) == 2:
            self.counts["user"] += 1
            self._method(req, "GET")
            self._require(roles, USER_ROLES, mailbox=False)
            user = self._directory_user(key)
            select = self._user_select(req)
            body = {"@odata.context": self._context("users", select, entity=True), **self._user_json(user, select)}
            return Response(200, body)
        sub = low[2:]
        if sub[0] not in MAILBOX_SEGMENTS:
            self.counts["unknown"] += 1
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[2]}'.")
        if sub[0] == "mailboxsettings":
            self.counts["mailboxSettings"] += 1
            self._method(req, "GET")
            self._require(roles, MAILBOX_SETTINGS_ROLES, mailbox=True)
            return self._mailbox_settings(self._mailbox_user(key), sub[1:])
        if sub == ["calendar", "getschedule"]:
            self.counts["getSchedule"] += 1
            self._method(req, "POST")
            self._require(roles, CALENDAR_ROLES, mailbox=True)
            return self._get_schedule(req, self._mailbox_user(key))
        if sub[0] in ("contacts", "contactfolders"):
            return self._contacts_route(req, rest[2:], sub, roles, key)
        self.counts["unknown"] += 1
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[-1]}'.")

    def _contacts_route(self, req: Request, rest: list[str], low: list[str], roles: frozenset[str],
                        key: str) -> Response:
        """contactFolders[/{id}[/childFolders | /contacts[/delta | /{id}]]] and contacts[/delta | /{id}]."""
        delta = ("delta", "delta()", "microsoft.graph.delta", "microsoft.graph.delta()")
        folder_key: str | None = "contacts"  # the well-known name of the default Contacts folder
        tail: list[str] | None
        if low[0] == "contactfolders":
            folder_key = rest[1] if len(rest) > 1 else None
            tail = low[3:] if low[2:3] == ["contacts"] else None
            op = {1: "contactFolders", 2: "contactFolder"}.get(len(low), "")
            if low[2:] == ["childfolders"]:
                op = "childFolders"
        else:
            tail, op = low[1:], ""
        contact_id = ""
        if not op and tail is not None:
            if not tail:
                op = "contacts"
            elif len(tail) == 1:
                op = "contacts.delta" if tail[0] in delta else "contact"
                contact_id = rest[-1]
        if not op:
            self.counts["unknown"] += 1
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[-1]}'.")
        self.counts[op] += 1
        self._method(req, "GET")
        self._require(roles, CONTACT_ROLES, mailbox=True)
        user = self._mailbox_user(key)
        if folder_key is None:  # /contactFolders lists the folders inside the default Contacts folder
            default = self.folder(user.mailbox.contacts_folder_id)
            assert default is not None
            return self._folder_list(req, self._children(default))
        fid = user.mailbox.contacts_folder_id if folder_key.lower() == "contacts" else folder_key
        folder = self.folder(fid)
        if folder is None or folder.deleted or folder.user_id != user.id:
            return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if op == "contactFolder":
            return Response(200, self._folder_json(folder))
        if op == "childFolders":
            return self._folder_list(req, self._children(folder))
        if op == "contacts":
            return self._contact_list(req, folder)
        if op == "contacts.delta":
            return self._contacts_delta(req, folder)
        contact = self.contact(contact_id)
        if contact is None or contact.deleted or contact.folder_id != folder.id:
            return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return Response(200, self._contact_json(contact, self._contact_select(req)))

    def _groups_route(self, req: Request, rest: list[str], low: list[str], roles: frozenset[str]) -> Response:
        gid = rest[1]
        tail = low[2:]
        if tail and tail[0] in ("members", "transitivemembers") and tail[1:] in ([], ["microsoft.graph.user"]):
            name = "groups." + ("transitiveMembers" if tail[0] == "transitivemembers" else "members")
        elif not tail:
            name = "group"
        else:
            self.counts["unknown"] += 1
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest[-1]}'.")
        self.counts[name] += 1
        self._method(req, "GET")
        self._require(roles, GROUP_MEMBER_ROLES, mailbox=False)
        group = self.groups.get(gid)
        if group is None:
            return graph_error(404, "Request_ResourceNotFound",
                               f"Resource '{gid}' does not exist or one of its queried reference-property objects are "
                               "not present.")
        if not tail:
            return Response(200, {"@odata.context": f"{self.url}/v1.0/$metadata#groups/$entity", "id": group.id,
                                  "displayName": group.display_name, "securityEnabled": True, "mailEnabled": False})
        cast = len(tail) == 2
        select = self._user_select(req)
        if tail[0] == "transitivemembers":
            users = self.transitive_users(gid)
            nested = [] if cast else self._nested_groups(gid)
        else:
            users = self.direct_users(gid)
            nested = [] if cast else [self.groups[m] for m in group.members if m in self.groups]
        members: list[Any] = [*users, *nested]

        def render(member: Any) -> dict[str, Any]:
            if not isinstance(member, User):
                return {"@odata.type": "#microsoft.graph.group", "id": member.id, "displayName": member.display_name}
            item = self._user_json(member, select)
            return item if cast else {"@odata.type": "#microsoft.graph.user", **item}

        context = self._context("users", select) if cast else f"{self.url}/v1.0/$metadata#directoryObjects"
        return self._offset_page(req, members, render, context, max_top=999, default_top=self.page_size,
                                 skiptoken=True)

    def _nested_groups(self, gid: str) -> list[Any]:
        seen: dict[str, None] = {}
        stack = [gid]
        while stack:
            for m in self.groups[stack.pop(0)].members:
                if m in self.groups and m not in seen and m != gid:
                    seen[m] = None
                    stack.append(m)
        return [self.groups[g] for g in seen]

    # -- users -------------------------------------------------------------------
    def _directory_user(self, key: str) -> User:
        user = self.users.get(key)
        if user is None or not user.live:
            uid = self.users_by_prop("userPrincipalName", key)
            user = self.users[uid[0]] if uid else None
        if user is None:
            raise _Fail(graph_error(404, "Request_ResourceNotFound",
                                    f"Resource '{key}' does not exist or one of its queried reference-property objects "
                                    "are not present."))
        return user

    def _mailbox_user(self, key: str) -> User:
        """The mailbox owner for an Outlook path, with Exchange's answers for missing or out-of-scope mailboxes."""
        user = self.find_user(key)
        if user is None:
            raise _Fail(graph_error(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid."))
        if not user.has_mailbox:
            raise _Fail(graph_error(404, "MailboxNotEnabledForRESTAPI",
                                    "The mailbox is either inactive, soft-deleted, or is hosted on-premise."))
        if not user.mailbox_in_scope:
            raise _Fail(graph_error(403, "ErrorAccessDenied", "Access to OData is disabled."))
        return user

    @staticmethod
    def _query(req: Request) -> dict[str, str]:
        return {k.lower(): v for k, v in req.query.items()}

    def _user_select(self, req: Request) -> list[str] | None:
        raw = self._query(req).get("$select")
        if not raw:
            return None
        select = [s.strip() for s in raw.split(",") if s.strip()]
        for prop in select:
            if prop not in USER_PROPERTIES:
                raise _Fail(graph_error(400, "Request_BadRequest",
                                        f"Could not find a property named '{prop}' on type 'microsoft.graph.user'."))
        return select

    @staticmethod
    def _user_json(user: User, select: list[str] | None) -> dict[str, Any]:
        props = select or DEFAULT_USER_SELECT
        out = {p: user.get(p) for p in props if p != "id"}
        out["id"] = user.id
        return out

    def _context(self, entity_set: str, select: list[str] | None, *, entity: bool = False) -> str:
        sel = f"({','.join(select)})" if select else ""
        return f"{self.url}/v1.0/$metadata#{entity_set}{sel}{'/$entity' if entity else ''}"

    def _filter_users(self, expr: str) -> list[str]:
        """Users matching a `$filter` of `prop eq value` clauses joined by one kind of `and`/`or`."""
        ors = re.split(r"\s+or\s+", expr, flags=re.IGNORECASE)
        ands = re.split(r"\s+and\s+", expr, flags=re.IGNORECASE)
        if len(ors) > 1 and len(ands) > 1:
            raise _Fail(graph_error(400, "Request_UnsupportedQuery", "Unsupported Query."))
        clauses = ors if len(ors) > 1 else ands
        parsed: list[tuple[str, Any]] = []
        for clause in clauses:
            match = _CLAUSE.match(clause)
            if not match:
                raise _Fail(graph_error(400, "BadRequest", f"Invalid filter clause: {clause.strip()}"))
            prop, raw = match.group(1), match.group(2)
            if prop not in _FILTERABLE_USER_PROPS:
                raise _Fail(graph_error(400, "Request_UnsupportedQuery",
                                        f"Unsupported or invalid query filter clause specified for property '{prop}' "
                                        "of resource 'User'."))
            value: Any = {"true": True, "false": False, "null": None}.get(raw.lower(), raw[1:-1].replace("''", "'"))
            parsed.append((prop, value))
        sets = [self.users_by_prop(p, v) for p, v in parsed]
        if len(ors) > 1:
            merged: dict[str, None] = {}
            for ids in sets:
                merged.update(dict.fromkeys(ids))
            wanted = merged
        else:
            wanted = dict.fromkeys(sets[0])
            for ids in sets[1:]:
                wanted = {k: None for k in wanted if k in set(ids)}
        order = {uid: i for i, uid in enumerate(self.live_user_ids())} if len(wanted) > 1 else {}
        return sorted(wanted, key=lambda u: order.get(u, 0))

    def _top(self, req: Request, default: int, maximum: int) -> int:
        raw = self._query(req).get("$top")
        if raw is None:
            return default
        try:
            top = int(raw)
        except ValueError:
            raise _Fail(graph_error(400, "BadRequest", f"Invalid value '{raw}' for query option '$top'.")) from None
        if not 1 <= top <= maximum:
            raise _Fail(graph_error(400, "Request_UnsupportedQuery",
                                    f"Invalid page size specified: '{top}'. Must be between 1 and {maximum} inclusive."))
        return top

    def _link(self, path: str, params: dict[str, str]) -> str:
        return f"{self.url}{path}?{urlencode(params, quote_via=quote, safe='$,')}"

    def _list_users(self, req: Request) -> Response:
        q = self._query(req)
        select = self._user_select(req)
        top = self._top(req, self.page_size, 999)
        ids = self._filter_users(q["$filter"]) if q.get("$filter") else self.live_user_ids()
        offset = 0
        if "$skiptoken" in q:
            state = _decode_state(q["$skiptoken"])
            if state is None or not isinstance(state.get("o"), int):
                return graph_error(400, "Request_BadRequest", "Invalid paging token.")
            offset = state["o"]
        page = ids[offset:offset + top]
        body: dict[str, Any] = {"@odata.context": self._context("users", select),
                                "value": [self._user_json(self.users[u], select) for u in page]}
        if offset + top < len(ids):
            params = {k: v for k, v in req.query.items() if k.lower() != "$skiptoken"}
            params["$skiptoken"] = _encode_state({"o": offset + top})
            body["@odata.nextLink"] = self._link(req.path, params)
        return Response(200, body)

    # -- delta rounds --------------------------------------------------------------
    def _store_round(self, rnd: _Round) -> str:
        rid = rnd.rid = _b64(os.urandom(12))
        self._rounds[rid] = rnd
        while len(self._rounds) > self.max_rounds:
            self._rounds.popitem(last=False)
        return rid

    def _stale(self, kind: str, epoch: Any) -> bool:
        return not isinstance(epoch, int) or epoch != self._delta_epoch[kind]

    def _delta_expired(self, family: str, epoch: Any, path: str) -> Response:
        """Microsoft's answer to an expired or unknown state token, per service family."""
        modes = self._epoch_modes[family]
        mode = modes[epoch] if isinstance(epoch, int) and 0 <= epoch < len(modes) else "expired"
        if family == "contacts":
            return graph_error(410, "SyncStateNotFound",
                               f"The sync state generation is not found; generation={epoch};"
                               f"[highest={self._delta_epoch['contacts']}].")
        if mode == "reset":
            return graph_error(410, "resyncRequired", "Resync is required.",
                               {"Location": f"{self.url}{path}?$deltatoken="})
        return graph_error(400, "syncStateNotFound",
                           "The sync state generation is not found. The delta token is expired and data must be "
                           "synchronized again.")

    def _users_delta(self, req: Request) -> Response:
        q = self._query(req)
        minimal = parse_prefer(req.headers).get("return") == "minimal"
        offset = 0
        if "$skiptoken" in q:
            state = _decode_state(q["$skiptoken"]) or {}
            rnd = self._rounds.get(str(state.get("r")))
            if rnd is None or rnd.kind != "users" or self._stale("users", state.get("e")):
                return self._delta_expired("users", state.get("e"), req.path)
            offset = int(state.get("o", 0))
        else:
            select = self._user_select(req)
            id_filter = [u for u in re.findall(r"id\s+eq\s+'([^']*)'", q.get("$filter", ""), re.IGNORECASE)] or None
            if q.get("$filter") and id_filter is None:
                return graph_error(400, "Request_UnsupportedQuery", "Unsupported Query.")
            if id_filter is not None and len(id_filter) > 50:
                return graph_error(400, "Request_UnsupportedQuery", "Too many filter clauses; the limit is 50.")
            since = 0
            if "$deltatoken" in q:
                if q["$deltatoken"] == "latest":
                    token = _encode_state({"k": "users", "s": self.change_counter, "sel": select, "f": id_filter,
                                           "e": self._delta_epoch["users"]})
                    return Response(200, {"@odata.context": self._context("users", select), "value": [],
                                          "@odata.deltaLink": self._link(req.path, {"$deltatoken": token})})
                state = _decode_state(q["$deltatoken"]) or {}
                if state.get("k") != "users" or self._stale("users", state.get("e")):
                    return self._delta_expired("users", state.get("e"), req.path)
                since = int(state.get("s", 0))
                select = select or state.get("sel")
                id_filter = id_filter or state.get("f")
            rnd = self._new_users_round(since, select, id_filter)
        keys = rnd.keys[offset:offset + self.page_size]
        value = [self._user_delta_json(self.users[k], rnd.select, rnd.since, minimal) for k in keys]
        body: dict[str, Any] = {"@odata.context": self._context("users", rnd.select), "value": value}
        if offset + self.page_size < len(rnd.keys):
            rid = rnd.rid or self._store_round(rnd)
            token = _encode_state({"r": rid, "o": offset + self.page_size, "e": rnd.epoch})
            body["@odata.nextLink"] = self._link(req.path, {"$skiptoken": token})
        else:
            token = _encode_state({"k": "users", "s": rnd.upto, "sel": rnd.select, "f": rnd.id_filter, "e": rnd.epoch})
            body["@odata.deltaLink"] = self._link(req.path, {"$deltatoken": token})
        return Response(200, body)

    def _new_users_round(self, since: int, select: list[str] | None, id_filter: list[str] | None) -> _Round:
        upto = self.change_counter
        wanted = set(id_filter) if id_filter else None
        if since == 0:
            keys = [u for u in self.live_user_ids() if wanted is None or u in wanted]
        else:
            tracked = [p for p in (select or DEFAULT_USER_SELECT) if p != "id"]
            keys = []
            for uid in changed_keys(self.user_log, since, upto):
                if wanted is not None and uid not in wanted:
                    continue
                user = self.users[uid]
                if user.removed or user.created > since or any(user.prop_changed.get(p, 0) > since for p in tracked):
                    keys.append(uid)
        return _Round("users", since, upto, keys, select, self._delta_epoch["users"], id_filter)

    @staticmethod
    def _user_delta_json(user: User, select: list[str] | None, since: int, minimal: bool) -> dict[str, Any]:
        """A user in a delta page: tracked properties that were ever set; with return=minimal only changed ones."""
        if user.removed:
            return {"id": user.id, "@removed": {"reason": user.removed}}
        out: dict[str, Any] = {}
        for prop in select or DEFAULT_USER_SELECT:
            if prop == "id" or prop not in user.props:
                continue
            if minimal and since and user.prop_changed.get(prop, 0) <= since:
                continue
            out[prop] = user.props[prop]
        out["id"] = user.id
        return out

    # -- contacts ------------------------------------------------------------------
    def _children(self, folder: ContactFolder) -> list[ContactFolder]:
        out = []
        for fid in folder.children:
            child = self.folder(fid)
            if child is not None and not child.deleted:
                out.append(child)
        return out

    @staticmethod
    def _folder_json(folder: ContactFolder) -> dict[str, Any]:
        return {"id": folder.id, "displayName": folder.display_name, "parentFolderId": folder.parent_id}

    def _folder_list(self, req: Request, folders: list[ContactFolder]) -> Response:
        return self._offset_page(req, folders, self._folder_json, f"{self.url}/v1.0/$metadata#contactFolders",
                                 max_top=1000, default_top=self.outlook_page_size)

    def _offset_page(self, req: Request, items: Sequence[Any], render: Callable[[Any], dict[str, Any]], context: str,
                     *, max_top: int, default_top: int, skiptoken: bool = False) -> Response:
        """One page of `items` (rendered lazily): Outlook pages by $top/$skip, the directory by $skiptoken."""
        q = self._query(req)
        top = self._top(req, default_top, max_top)
        offset = 0
        if "$skiptoken" in q:
            state = _decode_state(q["$skiptoken"]) or {}
            offset = int(state.get("o", 0))
        elif "$skip" in q:
            offset = int(q["$skip"]) if q["$skip"].isdigit() else 0
        body: dict[str, Any] = {"@odata.context": context, "value": [render(x) for x in items[offset:offset + top]]}
        if offset + top < len(items):
            params = {k: v for k, v in req.query.items() if k.lower() not in ("$skip", "$skiptoken")}
            if skiptoken:
                params["$skiptoken"] = _encode_state({"o": offset + top})
            else:
                params["$top"], params["$skip"] = str(top), str(offset + top)
            body["@odata.nextLink"] = self._link(req.path, params)
        return Response(200, body)

    def _contact_select(self, req: Request) -> list[str] | None:
        raw = self._query(req).get("$select")
        if not raw:
            return None
        select = [s.strip() for s in raw.split(",") if s.strip()]
        for prop in select:
            if prop not in CONTACT_PROPERTIES and prop not in _CONTACT_META:
                raise _Fail(graph_error(400, "RequestBroker--ParseUri",
                                        f"Could not find a property named '{prop}' on type 'microsoft.graph.contact'."))
        return select

    @staticmethod
    def _contact_json(contact: Contact, select: list[str] | None) -> dict[str, Any]:
        full: dict[str, Any] = {
            "@odata.etag": f'W/"{contact.change_key}"', "id": contact.id,
            "createdDateTime": _iso_z(contact.created_at), "lastModifiedDateTime": _iso_z(contact.modified_at),
            "changeKey": contact.change_key, "parentFolderId": contact.folder_id,
        }
        for prop in sorted(CONTACT_PROPERTIES):
            full[prop] = contact.get(prop)
        if not select:
            return full
        return {k: v for k, v in full.items() if k in ("@odata.etag", "id") or k in select}

    def _contact_list(self, req: Request, folder: ContactFolder) -> Response:
        select = self._contact_select(req)
        contacts = [c for c in (self.contact(cid) for cid in folder.contacts) if c]
        return self._offset_page(req, contacts, lambda c: self._contact_json(c, select),
                                 f"{self.url}/v1.0/$metadata#contacts", max_top=1000, default_top=self.outlook_page_size)

    def _contacts_delta(self, req: Request, folder: ContactFolder) -> Response:
        q = self._query(req)
        prefer = parse_prefer(req.headers)
        size = self.outlook_page_size
        headers: dict[str, str] = {}
        if prefer.get("odata.maxpagesize", "").isdigit():
            size = max(1, min(int(prefer["odata.maxpagesize"]), 1000))
            headers["Preference-Applied"] = f"odata.maxpagesize={size}"
        kind = f"contacts:{folder.id}"
        offset = 0
        if "$skiptoken" in q:
            state = _decode_state(q["$skiptoken"]) or {}
            rnd = self._rounds.get(str(state.get("r")))
            if rnd is None or rnd.kind != kind or self._stale("contacts", state.get("e")):
                return self._delta_expired("contacts", state.get("e"), req.path)
            offset = int(state.get("o", 0))
        else:
            select = self._contact_select(req)
            since = 0
            if "$deltatoken" in q:
                state = _decode_state(q["$deltatoken"]) or {}
                if state.get("k") != kind or self._stale("contacts", state.get("e")):
                    return self._delta_expired("contacts", state.get("e"), req.path)
                since = int(state.get("s", 0))
                select = select or state.get("sel")
            upto = self.change_counter
            keys = list(folder.contacts) if since == 0 else changed_keys(folder.log, since, upto)
            rnd = _Round(kind, since, upto, keys, select, self._delta_epoch["contacts"])
        value = []
        for cid in rnd.keys[offset:offset + size]:
            contact = self.contact(cid)
            if contact is None or contact.deleted or contact.folder_id != folder.id:
                value.append({"@odata.type": "#microsoft.graph.contact", "id": cid, "@removed": {"reason": "deleted"}})
            else:
                value.append({"@odata.type": "#microsoft.graph.contact", **self._contact_json(contact, rnd.select)})
        body: dict[str, Any] = {"@odata.context": f"{self.url}/v1.0/$metadata#Collection(contact)", "value": value}
        if offset + size < len(rnd.keys):
            rid = rnd.rid or self._store_round(rnd)
            body["@odata.nextLink"] = self._link(req.path, {"$skiptoken": _encode_state(
                {"r": rid, "o": offset + size, "e": rnd.epoch})})
        else:
            body["@odata.deltaLink"] = self._link(req.path, {"$deltatoken": _encode_state(
                {"k": kind, "s": rnd.upto, "sel": rnd.select, "e": rnd.epoch})})
        return Response(200, body, headers)

    # -- calendar ------------------------------------------------------------------
    def _output_zone(self, req: Request) -> tuple[str, tzinfo, dict[str, str]]:
        """The zone for start/end in responses: `Prefer: outlook.timezone` or UTC."""
        name = parse_prefer(req.headers).get("outlook.timezone")
        if not name:
            return "UTC", UTC, {}
        return name, self._zone(name), {"Preference-Applied": f'outlook.timezone="{name}"'}

    @staticmethod
    def _zone(name: str) -> tzinfo:
        try:
            return zone(name)
        except UnknownTimeZoneError:
            raise _Fail(graph_error(400, "TimeZoneNotSupportedException",
                                    "A valid TimeZone value must be specified. The following TimeZone value is not "
                                    f"supported: '{name}'.")) from None

    def _mailbox_settings(self, user: User, sub: list[str]) -> Response:
        working = {"daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                   "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
                   "timeZone": {"name": user.time_zone}}
        context = f"{self.url}/v1.0/$metadata#users('{user.id}')/mailboxSettings"
        if sub == ["timezone"]:
            return Response(200, {"@odata.context": f"{context}/timeZone", "value": user.time_zone})
        if sub == ["workinghours"]:
            return Response(200, {"@odata.context": f"{context}/workingHours", **working})
        if sub:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{sub[0]}'.")
        return Response(200, {
            "@odata.context": context, "timeZone": user.time_zone,
            "automaticRepliesSetting": {"status": "disabled", "externalAudience": "all",
                                        "internalReplyMessage": "", "externalReplyMessage": ""},
            "language": {"locale": "nl-NL", "displayName": "Nederlands (Nederland)"},
            "workingHours": working, "dateFormat": "d-M-yyyy", "timeFormat": "HH:mm",
            "userPurpose": {"value": "user"}, "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
        })

    def _schedule_time(self, value: Any, name: str) -> datetime:
        keys = {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else {}
        if not keys.get("datetime"):
            raise _Fail(graph_error(400, "ErrorInvalidParameter", f"The parameter '{name}' is missing or invalid."))
        try:
            local = parse_iso(str(keys["datetime"])).replace(tzinfo=None)
        except ValueError:
            raise _Fail(graph_error(400, "ErrorInvalidParameter", f"The parameter '{name}' is invalid.")) from None
        return local.replace(tzinfo=self._zone(str(keys.get("timezone") or "UTC")))

    def _get_schedule(self, req: Request, _owner: User) -> Response:
        try:
            raw = req.json()
        except ValueError:
            return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
        body = {k.lower(): v for k, v in raw.items()} if isinstance(raw, dict) else {}
        schedules = body.get("schedules")
        if not isinstance(schedules, list) or not schedules or not all(isinstance(s, str) for s in schedules):
            return graph_error(400, "ErrorInvalidParameter", "The parameter 'Schedules' is missing or invalid.")
        if len(schedules) > self.schedule_limit:
            return graph_error(400, "ErrorMailboxDataArrayTooBig",
                               "There are too many target users in the EmailAddress array. The allowed size = "
                               f"{self.schedule_limit}; the actual size = {len(schedules)}.")
        start = self._schedule_time(body.get("starttime"), "StartTime")
        end = self._schedule_time(body.get("endtime"), "EndTime")
        if end <= start:
            return graph_error(400, "ErrorInvalidTimeInterval", "The end time must be later than the start time.")
        days = math.ceil((end - start) / timedelta(days=1))
        if end - start > timedelta(days=self.schedule_max_days):
            return graph_error(400, "ErrorTimeIntervalTooBig",
                               "The requested time duration specified for FreeBusyViewOptions.TimeWindow is too long. "
                               f"The allowed limit = {self.schedule_max_days} days; the actual limit = {days} days.")
        try:
            interval = int(body.get("availabilityviewinterval") or 30)
        except (TypeError, ValueError):
            interval = -1
        if not 5 <= interval <= 1440:
            return graph_error(400, "ErrorInvalidParameter",
                               "The parameter 'AvailabilityViewInterval' must be between 5 and 1440.")
        tz_name, tz, headers = self._output_zone(req)
        value = [self._schedule_information(s, start, end, interval, tz_name, tz) for s in schedules]
        return Response(200, {"@odata.context":
                              f"{self.url}/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)",
                              "value": value}, headers)

    def _schedule_information(self, schedule: str, start: datetime, end: datetime, interval: int,
                              tz_name: str, tz: tzinfo) -> dict[str, Any]:
        user = self.find_user(schedule)
        if user is None:
            return {"scheduleId": schedule, "error": {
                "message": f"Unable to resolve e-mail address {schedule} to an Active Directory object.",
                "responseCode": "5009"}}
        if not user.has_mailbox:
            return {"scheduleId": schedule, "error": {
                "message": f"The mailbox of {schedule} is not enabled for free/busy lookups.", "responseCode": "5016"}}
        if not user.mailbox_in_scope:
            return {"scheduleId": schedule, "error": {
                "message": "Access to OData is disabled.", "responseCode": "ErrorAccessDenied"}}
        occurrences = [o for o in self.occurrences(user, start, end) if not o.event.is_cancelled]
        slots = math.ceil((end - start) / timedelta(minutes=interval))
        ranks = [0] * slots
        view = ["0"] * slots
        items = []
        for occ in occurrences:
            status = occ.event.show_as
            first = max(0, int((occ.start - start) // timedelta(minutes=interval)))
            last = min(slots, math.ceil((occ.end - start) / timedelta(minutes=interval)))
            for i in range(first, last):
                if _STATUS_RANK[status] > ranks[i]:
                    ranks[i] = _STATUS_RANK[status]
                    view[i] = _AVAILABILITY_DIGIT[status]
            item: dict[str, Any] = {}
            private = occ.event.sensitivity in ("private", "confidential")
            if self.schedule_details:
                item["isPrivate"] = private
            item["status"] = _PASCAL_STATUS[status] if self.schedule_status_casing == "pascal" else status
            if self.schedule_details and not private:
                item["subject"] = occ.event.subject
                item["location"] = occ.event.location or ""
            item["start"] = {"dateTime": graph_time(occ.start.astimezone(tz)), "timeZone": tz_name}
            item["end"] = {"dateTime": graph_time(occ.end.astimezone(tz)), "timeZone": tz_name}
            items.append(item)
        return {"scheduleId": schedule, "availabilityView": "".join(view), "scheduleItems": items,
                "workingHours": {"daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                                 "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000",
                                 "timeZone": {"name": user.time_zone}}}

    # -- $batch ----------------------------------------------------------------------
    def _batch(self, req: Request) -> Response:
        try:
            payload = req.json()
        except ValueError:
            payload = None
        requests_ = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(requests_, list) or not all(isinstance(r, dict) for r in requests_):
            return graph_error(400, "BadRequest", "Invalid batch payload format.")
        if len(requests_) > self.batch_limit:
            return graph_error(400, "BadRequest", "Number of requests inside batch exceeds the limit.")
        ids = [str(r.get("id", "")) for r in requests_]
        if any(not i for i in ids) or any(not r.get("method") or not r.get("url") for r in requests_):
            return graph_error(400, "BadRequest", "Invalid batch payload format.")
        if len({i.lower() for i in ids}) != len(ids):
            return graph_error(400, "BadRequest", "Batch request contains duplicate Id.")
        per_mailbox: Counter[str] = Counter()
        statuses: dict[str, int] = {}
        responses = []
        for rid, item in zip(ids, requests_, strict=True):
            sub = self._sub_request(item, req)
            depends = [str(d) for d in item.get("dependsOn") or []]
            if isinstance(sub, Response):
                resp = sub
            elif any(statuses.get(d, 424) >= 400 for d in depends):
                resp = graph_error(424, "FailedDependency", "A request this request depends on failed.")
            else:
                resp = self._batch_fault_for(sub) or self._mailbox_gate(sub, per_mailbox) or self._sub_dispatch(sub)
            statuses[rid] = resp.status
            if not isinstance(sub, Response):
                self.batch_log.append(LoggedRequest(sub.method, sub.path, sub.query, resp.status, time.time()))
            headers = dict(resp.headers)
            if resp.body is not None and not isinstance(resp.body, bytes):
                headers.setdefault("Content-Type", "application/json")
            responses.append({"id": rid, "status": resp.status, "headers": headers, "body": resp.body})
        return Response(200, {"responses": responses})

    def _sub_request(self, item: dict[str, Any], outer: Request) -> Request | Response:
        url = str(item["url"])
        if re.match(r"^[a-z]+://", url, re.IGNORECASE):
            return graph_error(400, "BadRequest", "Invalid request URL. A relative URL is expected.")
        parts = urlsplit(url if url.startswith("/") else "/" + url)
        if parts.path.lstrip("/").lower().startswith("$batch"):
            return graph_error(400, "BadRequest", "A batch request cannot contain another batch request.")
        headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        headers["authorization"] = outer.headers.get("authorization", "")
        body = item.get("body")
        raw = b"" if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        return Request(method=str(item["method"]).upper(), path="/v1.0" + parts.path,
                       query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                       headers=headers, body=raw)

    def _sub_dispatch(self, sub: Request) -> Response:
        try:
            return self._dispatch(sub)
        except _Fail as fail:
            return fail.response

    def _batch_fault_for(self, sub: Request) -> Response | None:
        for fault in self.batch_faults:
            if fault.count > 0 and fault.match(sub):
                fault.count -= 1
                return self._fault_response(fault.status, fault.retry_after, fault.body)
        return None

    def _mailbox_gate(self, sub: Request, per_mailbox: Counter[str]) -> Response | None:
        """Outlook's limit of concurrent requests per mailbox per app, applied within one batch."""
        segs = [unquote(s) for s in sub.path.split("/") if s][1:]
        if len(segs) < 3 or segs[0].lower() != "users" or segs[2].lower() not in MAILBOX_SEGMENTS:
            return None
        user = self.find_user(segs[1])
        key = user.id if user else segs[1].lower()
        per_mailbox[key] += 1
        if per_mailbox[key] <= self.mailbox_concurrency:
            return None
        self.counts["mailboxConcurrency"] += 1
        return graph_error(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                           {"Retry-After": str(self.mailbox_retry_after)})

    # -- Teams presence (cloudCommunications: getPresencesByUserId) ---------------------------------------------
    # POST /communications/getPresencesByUserId {"ids": [...]}: application permission Presence.Read.All (or
    # Presence.ReadWrite.All), at most `presence_limit` (650) ids, at most `presence_rate_limit` (1,500) requests
    # per `presence_window` (30 s) per app, then 429 with Retry-After. Users without a presence set are
    # Available/Available; ids Graph does not know answer PresenceUnknown.

    presence_limit = 650
    presence_rate_limit = 1500
    presence_window = 30.0
    presence_retry_after = 1

    def set_presence(self, user_id: str, availability: str, activity: str | None = None) -> None:
        """Set a user's Teams presence (tests, bench, demo); activity defaults to the availability."""
        with self._data_lock:
            self._presence_table()[user_id.lower()] = (availability, activity or availability)

    def presence_of(self, user_id: str) -> tuple[str, str]:
        with self._data_lock:
            if user_id.lower() in self._presence_table():
                return self._presence_table()[user_id.lower()]
            user = self.users.get(user_id)
            return ("Available", "Available") if user is not None and user.live else ("PresenceUnknown", "PresenceUnknown")

    def _presence_table(self) -> dict[str, tuple[str, str]]:
        table: dict[str, tuple[str, str]] | None = self.__dict__.get("_presences")
        if table is None:
            table = self.__dict__["_presences"] = {}
        return table

    def _presence_throttled(self) -> bool:
        """The documented rate: requests of the last window, per app (one app per simulated tenant here)."""
        now = time.monotonic()
        recent: list[float] = [t for t in self.__dict__.get("_presence_times", []) if now - t < self.presence_window]
        throttled = len(recent) >= self.presence_rate_limit
        if not throttled:
            recent.append(now)
        self.__dict__["_presence_times"] = recent
        return throttled

    def _get_presences(self, req: Request, roles: frozenset[str]) -> Response:
        self.counts["getPresencesByUserId"] += 1
        self._method(req, "POST")
        if not roles & PRESENCE_ROLES:
            return graph_error(403, "Forbidden", "Insufficient privileges to complete the operation.")
        if self._presence_throttled():
            self.counts["presenceThrottled"] += 1
            return graph_error(429, "TooManyRequests", "Too many requests.", {"Retry-After": str(self.presence_retry_after)})
        try:
            body = req.json()
        except ValueError:
            return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            return graph_error(400, "BadRequest", "The parameter 'ids' is missing or invalid.")
        if len(ids) > self.presence_limit:
            return graph_error(400, "BadRequest", f"The number of ids exceeds the maximum of {self.presence_limit}.")
        value = [{"id": i, "availability": a, "activity": b} for i in ids for a, b in [self.presence_of(i)]]
        return Response(200, {"@odata.context": f"{self.url}/v1.0/$metadata#Collection(microsoft.graph.presence)",
                              "value": value})


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
