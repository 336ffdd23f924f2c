"""ClearVox Nexxt simulator: the contract (docs/clearvox-api.yaml) over real HTTPS on 127.0.0.1.

Used by the tests, `nexxt365 demo` and bench/. It is deliberately strict - every
schema constraint of the contract, case-insensitive unique email, the Office 365
licence, contacts created private and never made public by the API - so that a
client mistake fails here instead of against a customer's PBX. State is kept in
dicts indexed by id, lower(email) and external_application_id, so 10,000 users
stay fast; one lock serialises the handlers.
"""

from __future__ import annotations

import hmac
import itertools
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from shared.clearvox import STATUSES, PhoneNumber
from shared.sandbox.server import Request, Response, SimServer

API_PREFIX = "/api/1"
DEFAULT_API_KEY = "sandbox-clearvox-api-key"
COMPANY = ""  # the owner key of company contacts (the account's phone book) in the owner index
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 100
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
LABELS = {
    "available": "Beschikbaar", "away": "Afwezig", "busy": "Bezig", "dnd": "Niet storen",
    "elsewhere": "Werkt ergens anders",
}
LANGUAGES = ("nl", "en", "de", "fr")
PHONE_TYPES = ("work", "mobile", "home", "other")
CHANGED_BY = ("user", "api", "system")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Rule:
    """One property of a request schema in the contract."""

    kind: str  # string | boolean | strings | phones
    nullable: bool = False
    min_length: int | None = None
    max_length: int | None = None
    enum: tuple[str, ...] = ()
    e164: bool = False
    min_items: int | None = None
    max_items: int | None = None


# The request schemas of the contract (UserCreate, UserUpdate, ContactWrite, the status body).
# mobile_number/phone_number/phone_numbers[].number are E.164 per the User and PhoneNumber schemas.
USER_CREATE: dict[str, Rule] = {
    "first_name": Rule("string", min_length=1, max_length=100),
    "last_name": Rule("string", min_length=1, max_length=100),
    "display_name": Rule("string", max_length=200),
    "email": Rule("string", max_length=254),
    "external_application_id": Rule("string", nullable=True),
    "mobile_number": Rule("string", nullable=True, e164=True),
    "phone_number": Rule("string", nullable=True, e164=True),
    "job_title": Rule("string", nullable=True, max_length=200),
    "department": Rule("string", nullable=True, max_length=200),
    "language": Rule("string", enum=LANGUAGES),
}
USER_CREATE_REQUIRED = ("first_name", "last_name", "email")
USER_UPDATE: dict[str, Rule] = {**USER_CREATE, "active": Rule("boolean")}
CONTACT_WRITE: dict[str, Rule] = {
    "external_id": Rule("string", nullable=True),
    "first_name": Rule("string", nullable=True, max_length=100),
    "last_name": Rule("string", nullable=True, max_length=100),
    "display_name": Rule("string", max_length=200),
    "company": Rule("string", nullable=True, max_length=200),
    "job_title": Rule("string", nullable=True, max_length=200),
    "emails": Rule("strings", max_items=3),
    "phone_numbers": Rule("phones", min_items=1, max_items=10),
}
STATUS_PUT: dict[str, Rule] = {"status": Rule("string", enum=STATUSES)}


@dataclass(frozen=True)
class WriteRecord:
    """A write request as received (parsed JSON body), and the status the simulator answered."""

    method: str
    path: str
    body: Any
    status: int


class ApiError(Exception):
    """Raised inside a handler; becomes the contract's Error body."""

    def __init__(self, status: int, code: str, message: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        return Response(self.status, {"error": error})


Handler = Callable[[Request, str], Response]


@dataclass
class Rewrite:
    match: Callable[[Request], bool]
    change: Callable[[Response], Response]
    count: int


class ClearVoxSim(SimServer):
    """One ClearVox Nexxt account behind an HTTPS API that follows the contract.

    `users`, `contacts` and `statuses` are the live state keyed by id (hold
    `lock` when reading them while requests are in flight). `writes` counts
    successful writes by HTTP method and `writes_by_operation` by
    "METHOD /path/{template}"; `write_log` keeps the last write bodies received.
    `foreign_accounts` exist on the PBX but the key may not act on them (403).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        account_id: str = "10001",
        account_name: str = "Voorbeeld B.V.",
        api_key: str = DEFAULT_API_KEY,
        office365: bool = True,
        foreign_accounts: Iterable[str] = (),
        tls: bool = True,
    ) -> None:
        super().__init__(latency=latency, tls=tls)
        self.account_id = account_id
        self.account_name = account_name
        self.api_key = api_key
        self.office365 = office365
        self.foreign_accounts = set(foreign_accounts)
        self.lock = threading.RLock()
        self.users: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, dict[str, Any]] = {}
        self.writes: Counter[str] = Counter()
        self.writes_by_operation: Counter[str] = Counter()
        self.write_log: deque[WriteRecord] = deque(maxlen=20_000)
        self._by_email: dict[str, str] = {}
        self._by_external: dict[str, dict[str, None]] = {}
        self._contacts_by_owner: dict[str, dict[str, None]] = {}
        self._user_ids = itertools.count(1001)
        self._contact_ids = itertools.count(5001)
        self._rewrites: list[Rewrite] = []
        self._routes: list[tuple[re.Pattern[str], str, dict[str, Handler]]] = [
            (re.compile(r"/accounts/([^/]+)"), "/accounts/{accountId}", {"GET": self._get_account}),
            (re.compile(r"/accounts/([^/]+)/users"), "/accounts/{accountId}/users",
             {"GET": self._list_users, "POST": self._create_user}),
            (re.compile(r"/accounts/([^/]+)/contacts"), "/accounts/{accountId}/contacts",
             {"GET": self._list_company_contacts, "POST": self._create_company_contact}),
            (re.compile(r"/users/([^/]+)"), "/users/{userId}", {"GET": self._get_user, "PATCH": self._patch_user}),
            (re.compile(r"/users/([^/]+)/status"), "/users/{userId}/status",
             {"GET": self._get_status, "PUT": self._put_status}),
            (re.compile(r"/users/([^/]+)/contacts"), "/users/{userId}/contacts",
             {"GET": self._list_contacts, "POST": self._create_contact}),
            (re.compile(r"/contacts/([^/]+)"), "/contacts/{contactId}",
             {"GET": self._get_contact, "PATCH": self._patch_contact, "DELETE": self._delete_contact}),
        ]

    # -- Python API for tests, the demo and the bench -----------------------
    def add_user(self, **fields: Any) -> dict[str, Any]:
        """A user as an administrator would create it in ClearVox (no licence check); returns a copy."""
        with self.lock:
            email = str(fields.get("email") or "")
            if not email:
                raise ValueError("add_user needs an email")
            if email.lower() in self._by_email:
                raise ValueError(f"a user with email {email} already exists")
            return dict(self._insert_user(fields, changed_by="system"))

    def add_contact(self, owner_user_id: str, **fields: Any) -> dict[str, Any]:
        """A contact as a person would create it in ClearVox (external_id None unless given); returns a copy."""
        with self.lock:
            if owner_user_id not in self.users:
                raise KeyError(f"no user {owner_user_id}")
            phones = [{"type": p.type, "number": p.number} if isinstance(p, PhoneNumber) else p
                      for p in fields.get("phone_numbers") or ()]
            contact = self._insert_contact(owner_user_id, {**fields, "phone_numbers": phones})
            if fields.get("visibility") in ("private", "public"):
                contact["visibility"] = fields["visibility"]
            return _contact_out(contact)

    def set_user_status(self, user_id: str, status: str, changed_by: str = "user") -> dict[str, Any]:
        """Change a status as a person (changed_by "user") or the PBX ("system") would."""
        if status not in STATUSES or changed_by not in CHANGED_BY:
            raise ValueError(f"unknown status {status!r} or changed_by {changed_by!r}")
        with self.lock:
            if user_id not in self.users:
                raise KeyError(f"no user {user_id}")
            self.statuses[user_id] = _status_record(status, changed_by)
            return dict(self.statuses[user_id])

    def make_contact_public(self, contact_id: str) -> None:
        """What a user with the right role does in ClearVox; the API itself never does this."""
        with self.lock:
            self.contacts[contact_id]["visibility"] = "public"
            self.contacts[contact_id]["updated_at"] = _now()

    def user_by_email(self, email: str) -> dict[str, Any] | None:
        with self.lock:
            user_id = self._by_email.get(email.lower())
            return dict(self.users[user_id]) if user_id else None

    def contacts_of(self, user_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [_contact_out(self.contacts[c]) for c in self._contacts_by_owner.get(user_id, {})]

    def status_of(self, user_id: str) -> str:
        with self.lock:
            return str(self.statuses[user_id]["status"])

    def fault_body(self, status: int) -> Any:
        codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
                 422: "validation_failed", 429: "rate_limited", 503: "unavailable"}
        return {"error": {"code": codes.get(status, "internal"), "message": f"injected fault {status}"}}

    def inject(self, status: int, *, count: int = 1, match: Callable[[Request], bool] | None = None,
               retry_after: int | None = None, body: Any = None) -> None:
        """As SimServer.inject; a 429 always carries Retry-After (1 s unless given), as the contract says."""
        if status == 429 and retry_after is None:
            retry_after = 1
        super().inject(status, count=count, match=match, retry_after=retry_after, body=body)

    def rewrite(self, change: Callable[[Response], Response], *, count: int = 1,
                match: Callable[[Request], bool] | None = None) -> None:
        """Handle the next `count` matching requests as usual (state changes included), then answer
        `change(response)` instead: a gateway 504 after a create, a renamed field, a hostile total."""
        with self.lock:
            self._rewrites.append(Rewrite(match or (lambda r: True), change, count))

    # -- HTTP ---------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        resp = self._dispatch(req)
        with self.lock:
            for rule in self._rewrites:
                if rule.count > 0 and rule.match(req):
                    rule.count -= 1
                    return rule.change(resp)
        return resp

    def _dispatch(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if not (path == API_PREFIX or path.startswith(API_PREFIX + "/")):
            return ApiError(404, "not_found", f"no such path {req.path}").response()
        token = req.headers.get("x-auth-token") or req.query.get("api_key") or ""
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            return ApiError(401, "unauthorized", "missing or invalid API key").response()
        rest = path[len(API_PREFIX):]
        for pattern, template, methods in self._routes:
            match = pattern.fullmatch(rest)
            if match is None:
                continue
            handler = methods.get(req.method)
            if handler is None:
                resp = ApiError(405, "method_not_allowed", f"{req.method} is not allowed on {template}").response()
                resp.headers["Allow"] = ", ".join(methods)
                return resp
            with self.lock:
                try:
                    resp = handler(req, unquote(match.group(1)))
                except ApiError as exc:
                    resp = exc.response()
                if req.method in WRITE_METHODS:
                    self._record_write(req, template, resp.status)
            return resp
        return ApiError(404, "not_found", f"no such path {req.path}").response()

    def _record_write(self, req: Request, template: str, status: int) -> None:
        try:
            body = req.json()
        except ValueError:
            body = req.body.decode(errors="replace")
        self.write_log.append(WriteRecord(req.method, req.path, body, status))
        if 200 <= status < 300:
            self.writes[req.method] += 1
            self.writes_by_operation[f"{req.method} {template}"] += 1

    # -- accounts and users --------------------------------------------------
    def _check_account(self, account_id: str) -> None:
        if account_id in self.foreign_accounts:
            raise ApiError(403, "forbidden", f"the API key may not act on account {account_id}")
        if account_id != self.account_id:
            raise ApiError(404, "not_found", f"no account {account_id}")

    def _get_account(self, req: Request, account_id: str) -> Response:
        self._check_account(account_id)
        return Response(200, {"data": {"id": self.account_id, "name": self.account_name,
                                       "licenses": {"office365": self.office365}}})

    def _list_users(self, req: Request, account_id: str) -> Response:
        self._check_account(account_id)
        email, external = req.query.get("email"), req.query.get("external_application_id")
        if email is not None:  # filters use the indexes: a per-user look-up must not scan 10,000 users
            found = self._by_email.get(email.lower())
            ids = [found] if found else []
            if external is not None:
                ids = [i for i in ids if self.users[i]["external_application_id"] == external]
        elif external is not None:
            ids = list(self._by_external.get(external, {}))
        else:
            ids = list(self.users)
        return _page(req, [self.users[i] for i in ids], dict)

    def _create_user(self, req: Request, account_id: str) -> Response:
        self._check_account(account_id)
        if not self.office365:
            raise ApiError(403, "license_required",
                           f"account {self.account_id} has no active Office 365 licence")
        body = _validated(req, USER_CREATE, required=USER_CREATE_REQUIRED)
        if body["email"].lower() in self._by_email:
            raise ApiError(409, "email_taken", f"a user with email {body['email']} already exists")
        return Response(201, {"data": dict(self._insert_user(body, changed_by="system"))})

    def _user(self, user_id: str) -> dict[str, Any]:
        user = self.users.get(user_id)
        if user is None:
            raise ApiError(404, "not_found", f"no user {user_id}")
        return user

    def _get_user(self, req: Request, user_id: str) -> Response:
        return Response(200, {"data": dict(self._user(user_id))})

    def _patch_user(self, req: Request, user_id: str) -> Response:
        user = self._user(user_id)
        body = _validated(req, USER_UPDATE, min_properties=1)
        email = body.get("email")
        if email is not None and self._by_email.get(email.lower(), user_id) != user_id:
            raise ApiError(409, "email_taken", f"a user with email {email} already exists")
        self._index_user(user, remove=True)
        user.update({k: v for k, v in body.items() if k in USER_UPDATE})
        user["updated_at"] = _now()
        self._index_user(user)
        return Response(200, {"data": dict(user)})

    def _insert_user(self, fields: Mapping[str, Any], *, changed_by: str) -> dict[str, Any]:
        user_id = str(next(self._user_ids))
        while user_id in self.users:
            user_id = str(next(self._user_ids))
        first, last = fields.get("first_name") or "", fields.get("last_name") or ""
        now = _now()
        user: dict[str, Any] = {
            "id": user_id, "account_id": self.account_id, "first_name": first, "last_name": last,
            "display_name": fields.get("display_name") or f"{first} {last}".strip(),
            "email": fields["email"],
            "external_application_id": fields.get("external_application_id"),
            "mobile_number": fields.get("mobile_number"), "phone_number": fields.get("phone_number"),
            "job_title": fields.get("job_title"), "department": fields.get("department"),
            "language": fields.get("language") or "nl", "active": bool(fields.get("active", True)),
            "created_at": now, "updated_at": now,
        }
        self.users[user_id] = user
        self.statuses[user_id] = _status_record("available", changed_by)
        self._index_user(user)
        return user

    def _index_user(self, user: Mapping[str, Any], *, remove: bool = False) -> None:
        email, external = str(user["email"]).lower(), user.get("external_application_id")
        if remove:
            self._by_email.pop(email, None)
            if external is not None:
                self._by_external.get(external, {}).pop(user["id"], None)
            return
        self._by_email[email] = user["id"]
        if external is not None:
            self._by_external.setdefault(external, {})[user["id"]] = None

    # -- status ---------------------------------------------------------------
    def _get_status(self, req: Request, user_id: str) -> Response:
        self._user(user_id)
        return Response(200, {"data": dict(self.statuses[user_id])})

    def _put_status(self, req: Request, user_id: str) -> Response:
        self._user(user_id)
        body = _validated(req, STATUS_PUT, required=("status",))
        self.statuses[user_id] = _status_record(body["status"], "api")
        return Response(200, {"data": dict(self.statuses[user_id])})

    # -- contacts -------------------------------------------------------------
    def _list_contacts(self, req: Request, user_id: str) -> Response:
        self._user(user_id)
        contacts = [self.contacts[c] for c in self._contacts_by_owner.get(user_id, {})]
        if "external_id" in req.query:
            contacts = [c for c in contacts if c["external_id"] == req.query["external_id"]]
        return _page(req, contacts, _contact_out)

    def _create_contact(self, req: Request, user_id: str) -> Response:
        self._user(user_id)
        body = _validated(req, CONTACT_WRITE)
        return Response(201, {"data": _contact_out(self._insert_contact(user_id, body))})

    def _list_company_contacts(self, req: Request, account_id: str) -> Response:
        self._check_account(account_id)
        contacts = [self.contacts[c] for c in self._contacts_by_owner.get(COMPANY, {})]
        if "external_id" in req.query:
            contacts = [c for c in contacts if c["external_id"] == req.query["external_id"]]
        return _page(req, contacts, _contact_out)

    def _create_company_contact(self, req: Request, account_id: str) -> Response:
        self._check_account(account_id)
        if not self.office365:
            raise ApiError(403, "license_required", f"account {self.account_id} has no active Office 365 licence")
        body = _validated(req, CONTACT_WRITE)
        return Response(201, {"data": _contact_out(self._insert_contact(COMPANY, body))})

    def company_contacts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [_contact_out(self.contacts[c]) for c in self._contacts_by_owner.get(COMPANY, {})]

    def _contact(self, contact_id: str) -> dict[str, Any]:
        contact = self.contacts.get(contact_id)
        if contact is None:
            raise ApiError(404, "not_found", f"no contact {contact_id}")
        return contact

    def _get_contact(self, req: Request, contact_id: str) -> Response:
        return Response(200, {"data": _contact_out(self._contact(contact_id))})

    def _patch_contact(self, req: Request, contact_id: str) -> Response:
        contact = self._contact(contact_id)
        body = _validated(req, CONTACT_WRITE)
        for key, value in body.items():
            if key in CONTACT_WRITE:  # visibility is not writable through the API
                contact[key] = list(value) if isinstance(value, list) else value
        contact["updated_at"] = _now()
        return Response(200, {"data": _contact_out(contact)})

    def _delete_contact(self, req: Request, contact_id: str) -> Response:
        contact = self._contact(contact_id)
        del self.contacts[contact_id]
        self._contacts_by_owner.get(contact["owner_user_id"] or COMPANY, {}).pop(contact_id, None)
        return Response(204)

    def _insert_contact(self, owner_user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        contact_id = str(next(self._contact_ids))
        while contact_id in self.contacts:
            contact_id = str(next(self._contact_ids))
        emails = [str(e) for e in fields.get("emails") or ()]
        phones = [{"type": p["type"], "number": p["number"]} for p in fields.get("phone_numbers") or ()]
        name = fields.get("display_name") or " ".join(
            str(fields[k]) for k in ("first_name", "last_name") if fields.get(k)
        ) or fields.get("company") or (emails[0] if emails else "") or (phones[0]["number"] if phones else "")
        now = _now()
        company = owner_user_id == COMPANY
        contact: dict[str, Any] = {
            "id": contact_id, "owner_user_id": None if company else owner_user_id,
            "visibility": "public" if company else "private",
            "external_id": fields.get("external_id"), "first_name": fields.get("first_name"),
            "last_name": fields.get("last_name"), "display_name": name, "company": fields.get("company"),
            "job_title": fields.get("job_title"), "emails": emails, "phone_numbers": phones,
            "created_at": now, "updated_at": now,
        }
        self.contacts[contact_id] = contact
        self._contacts_by_owner.setdefault(owner_user_id, {})[contact_id] = None
        return contact


# -- helpers -------------------------------------------------------------------

def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _status_record(status: str, changed_by: str) -> dict[str, Any]:
    return {"status": status, "label": LABELS[status], "changed_at": _now(), "changed_by": changed_by}


def _contact_out(contact: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(contact)
    out["emails"] = list(contact["emails"])
    out["phone_numbers"] = [dict(p) for p in contact["phone_numbers"]]
    return out


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _page(req: Request, items: list[dict[str, Any]], render: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
    """One page; page and per_page out of range are clamped (the list endpoints have no 422 in the contract)."""
    page = max(1, _int(req.query.get("page"), 1))
    per_page = min(MAX_PER_PAGE, max(1, _int(req.query.get("per_page"), DEFAULT_PER_PAGE)))
    start = (page - 1) * per_page
    data = [render(item) for item in items[start:start + per_page]]
    return Response(200, {"data": data, "meta": {"page": page, "per_page": per_page, "total": len(items)}})


def _validated(req: Request, rules: Mapping[str, Rule], *, required: Iterable[str] = (),
               min_properties: int = 0) -> dict[str, Any]:
    """The JSON object body, or 422 validation_failed naming every offending field."""
    try:
        body = req.json()
    except ValueError:
        raise ApiError(422, "validation_failed", "the body is not valid JSON", {"body": "invalid JSON"}) from None
    if not isinstance(body, dict):
        raise ApiError(422, "validation_failed", "the body must be a JSON object", {"body": "must be an object"})
    errors: dict[str, str] = {}
    for name in required:
        if name not in body:
            errors[name] = "is required"
    if len(body) < min_properties:
        errors["body"] = f"at least {min_properties} field(s) required"
    for name, rule in rules.items():
        if name in body:
            errors.update(_check(name, rule, body[name]))
    if errors:
        raise ApiError(422, "validation_failed", "the request is invalid", errors)
    return body


def _check(name: str, rule: Rule, value: Any) -> dict[str, str]:
    if value is None:
        return {} if rule.nullable else {name: "must not be null"}
    if rule.kind == "boolean":
        return {} if isinstance(value, bool) else {name: "must be true or false"}
    if rule.kind == "string":
        problem = _string_problem(rule, value)
        return {name: problem} if problem else {}
    if not isinstance(value, list):
        return {name: "must be an array"}
    if rule.min_items is not None and len(value) < rule.min_items:
        return {name: f"needs at least {rule.min_items} item(s)"}
    if rule.max_items is not None and len(value) > rule.max_items:
        return {name: f"allows at most {rule.max_items} items"}
    errors: dict[str, str] = {}
    for i, item in enumerate(value):
        if rule.kind == "strings":
            if not isinstance(item, str):
                errors[f"{name}[{i}]"] = "must be a string"
        elif not isinstance(item, dict):
            errors[f"{name}[{i}]"] = "must be an object with type and number"
        else:
            for key, sub in (("type", Rule("string", enum=PHONE_TYPES)), ("number", Rule("string", e164=True))):
                problem = _string_problem(sub, item[key]) if key in item else "is required"
                if problem:
                    errors[f"{name}[{i}].{key}"] = problem
    return errors


def _string_problem(rule: Rule, value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if rule.min_length is not None and len(value) < rule.min_length:
        return f"must be at least {rule.min_length} character(s)"
    if rule.max_length is not None and len(value) > rule.max_length:
        return f"must be at most {rule.max_length} characters"
    if rule.enum and value not in rule.enum:
        return f"must be one of {', '.join(rule.enum)}"
    if rule.e164 and not E164.match(value):
        return "must be an E.164 number such as +31201234567"
    return None
