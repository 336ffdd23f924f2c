"""ClearVox Nexxt API client: the ONLY module that knows the API's paths and JSON field names.

The contract is ../shared/clearvox-api.yaml; sync modules speak in the dataclasses below.
The transport (session, TLS, retries, control characters) is in shared.clearvox_http.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, Unpack
from urllib.parse import quote, urlsplit

import requests

from shared.clearvox_http import ClearVoxTransport, TransportOptions
from shared.errors import (
    AccountNotFound,
    ClearVoxError,
    ClearVoxForbidden,
    ClearVoxMisdirected,
    ClearVoxNotFound,
    ClearVoxRejected,
    ClearVoxUnauthorized,
    ClearVoxUnavailable,
    ConfigError,
    EmailTaken,
    LicenseRequired,
    ValidationFailed,
)
from shared.http import after_retries, retries_made

# Status codes (ARCHITECTURE.md): available Beschikbaar, away Afwezig, busy Bezig,
# dnd Niet storen, elsewhere Werkt ergens anders.
STATUSES = ("available", "away", "busy", "dnd", "elsewhere")

# The user fields the connector writes (domain names; the client maps them to JSON).
USER_FIELDS = (
    "first_name", "last_name", "display_name", "email", "phone_number", "mobile_number",
    "job_title", "department", "language",
)
# The contact fields the connector writes. Visibility is never among them.
CONTACT_FIELDS = ("external_id", "first_name", "last_name", "display_name", "company", "job_title", "emails", "phone_numbers")


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    office365: bool  # the Office 365 licence is active


@dataclass(frozen=True)
class CvUser:
    id: str
    first_name: str
    last_name: str
    email: str
    external_application_id: str | None
    active: bool = True
    display_name: str | None = None
    phone_number: str | None = None
    mobile_number: str | None = None
    job_title: str | None = None
    department: str | None = None
    language: str = "nl"

    def fields(self) -> dict[str, Any]:
        """The writable fields as a dict keyed by USER_FIELDS."""
        return {name: getattr(self, name) for name in USER_FIELDS}


@dataclass(frozen=True)
class PhoneNumber:
    type: str  # work | mobile | home | other
    number: str  # E.164


@dataclass(frozen=True)
class CvContact:
    id: str
    owner_user_id: str | None  # None: a company contact (the account's phone book, always public)
    visibility: str  # private | public
    display_name: str
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    emails: tuple[str, ...] = ()
    phone_numbers: tuple[PhoneNumber, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CvStatus:
    status: str  # one of STATUSES
    changed_at: datetime
    changed_by: str  # user | api | system


# -- the client ---------------------------------------------------------------
T = TypeVar("T")
API_PREFIX = "/api/1"
AUTH_HEADER = "X-Auth-Token"
PAGE_SIZE = 100  # the contract's maximum per_page: fewest round trips for 10,000 users
MAX_PAGES = 2_000  # 200,000 users or contacts of one owner: far past any account; more is a paging loop

# Domain name -> JSON name. Identity today; a vendor correction of a field name is a change here.
_USER_JSON: dict[str, str] = {name: name for name in (*USER_FIELDS, "external_application_id", "active")}
_USER_CREATE_KEYS = frozenset(USER_FIELDS) | {"external_application_id"}
_USER_UPDATE_KEYS = _USER_CREATE_KEYS | {"active"}
_CONTACT_JSON: dict[str, str] = {name: name for name in CONTACT_FIELDS}
_CONTACT_KEYS = frozenset(CONTACT_FIELDS)
_ID, _TEXT, _NULL = (str, int), (str,), type(None)
# The required properties of each schema of clearvox-api.yaml the client reads, with the JSON types allowed.
CONTRACT_SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "Page": {"page": (int,), "per_page": (int,), "total": (int,)},
    "Account": {"id": _ID, "name": _TEXT, "licenses": (dict,)},
    "User": {"id": _ID, "account_id": _ID, "first_name": _TEXT, "last_name": _TEXT, "email": _TEXT,
             "external_application_id": (str, _NULL), "active": (bool,)},
    "Status": {"status": _TEXT, "changed_at": _TEXT, "changed_by": _TEXT},
    "Contact": {"id": _ID, "owner_user_id": (*_ID, _NULL), "visibility": _TEXT, "display_name": _TEXT,
                "phone_numbers": (list,)},
}


class ClearVox(ClearVoxTransport):
    """Client of the ClearVox Nexxt REST API for one account (company); thread-safe. What fails is a
    typed `ClearVoxError` whose message says what to fix and never contains the API key."""

    def __init__(self, base_url: str, api_key: str, account_id: str, **options: Unpack[TransportOptions]) -> None:
        super().__init__(_api_root(base_url), api_key, AUTH_HEADER, **options)
        if not str(account_id or "").strip():
            raise ConfigError("NEXXT365_CLEARVOX_ACCOUNT is empty. Set the Company ID from /accounts/edit/<company-ID>.")
        self.account_id = str(account_id).strip()

    def __repr__(self) -> str:
        return f"ClearVox({self.base_url!r}, account_id={self.account_id!r})"

    # -- account -------------------------------------------------------------
    def get_account(self) -> Account:
        """The account the key belongs to; `office365` False means user creation will be refused."""
        data = self._data("GET", self._account_path(), what="account")
        licenses = data.get("licenses") or {}
        return Account(id=str(data["id"]), name=str(data.get("name") or ""), office365=bool(licenses.get("office365")))

    # -- users ---------------------------------------------------------------
    def iter_users(self, *, email: str | None = None, external_application_id: str | None = None) -> Iterator[CvUser]:
        """All users of the account (or those matching the filters), page by page."""
        params: dict[str, str] = {}
        if email is not None:
            params["email"] = email
        if external_application_id is not None:
            params["external_application_id"] = external_application_id
        for item in self._pages(self._account_path() + "/users", params, what="account"):
            yield _user(item)

    def list_users(self, concurrency: int = 8) -> list[CvUser]:
        """Every user of the account. Pages are fetched `concurrency` at a time (10,000 users are 100
        pages, too slow one by one) until a short or empty page; `meta.total` is never trusted."""
        users: dict[str, CvUser] = {}
        for item in self._pages(self._account_path() + "/users", {}, what="account", concurrency=concurrency):
            user = _user(item)
            users[user.id] = user  # a user created meanwhile may shift across a page boundary
        return list(users.values())

    def find_user_by_email(self, email: str) -> CvUser | None:
        """The user with this email, compared case-insensitively as ClearVox does."""
        wanted = email.strip().lower()
        return next((u for u in self.iter_users(email=email.strip()) if u.email.lower() == wanted), None)

    def find_user_by_external_id(self, object_id: str) -> CvUser | None:
        """The user linked to this Entra object id ("Extern toepassing ID")."""
        return next((u for u in self.iter_users(external_application_id=object_id)
                     if u.external_application_id == object_id), None)

    def get_user(self, user_id: str) -> CvUser:
        return _user(self._data("GET", _user_path(user_id), what=f"user {user_id}"))

    def create_user(self, fields: Mapping[str, Any]) -> CvUser:
        """Create a user; None values are left out so ClearVox applies its defaults. LicenseRequired
        without the Office 365 licence, EmailTaken when a user with this email (in any case) exists."""
        body = {_USER_JSON[k]: v for k, v in _checked(fields, _USER_CREATE_KEYS, "create_user").items() if v is not None}
        return _user(self._data("POST", self._account_path() + "/users", body=body, what="account"))

    def update_user(self, user_id: str, changes: Mapping[str, Any]) -> CvUser:
        """Send exactly the given keys (None clears a nullable field); other fields stay as they are."""
        body = {_USER_JSON[k]: v for k, v in _checked(changes, _USER_UPDATE_KEYS, "update_user").items()}
        return _user(self._data("PATCH", _user_path(user_id), body=body, what=f"user {user_id}"))

    # -- status --------------------------------------------------------------
    def get_status(self, user_id: str) -> CvStatus:
        return _status(self._data("GET", _user_path(user_id) + "/status", what=f"user {user_id}"))

    def set_status(self, user_id: str, status: str) -> CvStatus:
        """Set the personal status (one of STATUSES); ClearVox records it as changed_by "api"."""
        return _status(self._data("PUT", _user_path(user_id) + "/status", body={"status": status},
                                  what=f"user {user_id}"))

    # -- contacts ------------------------------------------------------------
    def iter_contacts(self, user_id: str, *, external_id: str | None = None) -> Iterator[CvContact]:
        """The contacts the user owns, private and public, page by page."""
        params = {"external_id": external_id} if external_id is not None else {}
        for item in self._pages(_user_path(user_id) + "/contacts", params, what=f"user {user_id}"):
            yield _contact(item)

    def iter_company_contacts(self, *, external_id: str | None = None) -> Iterator[CvContact]:
        """The company phone book: contacts owned by the account itself, all public (contract 1.1)."""
        params = {"external_id": external_id} if external_id is not None else {}
        for item in self._pages(self._account_path() + "/contacts", params, what="account"):
            yield _contact(item)

    def create_company_contact(self, fields: Mapping[str, Any]) -> CvContact:
        """Create a company contact (public, no owner); None values are left out. Changed and deleted
        through the same /contacts/{id} operations as a personal contact."""
        body = {k: v for k, v in _contact_body(fields, "create_company_contact").items() if v is not None}
        return _contact(self._data("POST", self._account_path() + "/contacts", body=body, what="account"))

    def get_contact(self, contact_id: str) -> CvContact:
        return _contact(self._data("GET", _contact_path(contact_id), what=f"contact {contact_id}"))

    def create_contact(self, user_id: str, fields: Mapping[str, Any]) -> CvContact:
        """Create a private contact owned by the user; None values are left out."""
        body = {k: v for k, v in _contact_body(fields, "create_contact").items() if v is not None}
        return _contact(self._data("POST", _user_path(user_id) + "/contacts", body=body, what=f"user {user_id}"))

    def update_contact(self, contact_id: str, changes: Mapping[str, Any]) -> CvContact:
        """Send exactly the given keys. Visibility is the user's choice in ClearVox and is never sent."""
        body = _contact_body(changes, "update_contact")
        return _contact(self._data("PATCH", _contact_path(contact_id), body=body, what=f"contact {contact_id}"))

    def delete_contact(self, contact_id: str) -> None:
        """Delete a contact; ClearVoxNotFound when it is already gone."""
        self._call("DELETE", _contact_path(contact_id), what=f"contact {contact_id}")

    # -- contract probe ------------------------------------------------------
    def contract_samples(self) -> Iterator[tuple[str, str, Any]]:
        """Read-only: (schema in CONTRACT_SCHEMAS, "GET path", envelope or ClearVoxError) for each answer relied on."""
        def get(path: str, **params: str) -> Any:
            try:
                return self._call("GET", path, params={**params, "page": "1", "per_page": "1"}, what="account")
            except ClearVoxError as exc:
                return exc
        account, users = self._account_path(), self._account_path() + "/users"
        yield "Account", f"GET {account}", get(account)
        yield "User[]", f"GET {users}", (page := get(users))
        first = _first(page)
        if isinstance(first.get("id"), str | int):
            person = _user_path(str(first["id"]))
            yield "Status", f"GET {person}/status", get(person + "/status")
            yield "Contact[]", f"GET {person}/contacts", (contacts := get(person + "/contacts"))
            if isinstance(_first(contacts).get("external_id"), str):
                yield "Contact[]", f"GET {person}/contacts?external_id=", get(person + "/contacts",
                                                                              external_id=_first(contacts)["external_id"])
            for key in ("email", "external_application_id"):
                if isinstance(first.get(key), str):
                    yield "User[]", f"GET {users}?{key}=", get(users, **{key: first[key]})
        yield "Contact[]", f"GET {account}/contacts", get(account + "/contacts")

    # -- HTTP ----------------------------------------------------------------
    def _account_path(self) -> str:
        return "/accounts/" + _seg(self.account_id)

    def _pages(self, path: str, params: Mapping[str, str], *, what: str,
               concurrency: int = 1) -> Iterator[dict[str, Any]]:
        """Items page by page, `concurrency` pages in flight, until a short or empty page. `meta.total`
        sizes nothing (a hostile total cannot queue requests); past MAX_PAGES pages is an error."""
        width = max(1, min(concurrency, 16))

        def page(number: int) -> tuple[list[dict[str, Any]], int, int]:
            query = {**params, "page": str(number), "per_page": str(PAGE_SIZE)}
            return _items(self._call("GET", path, params=query, what=what), f"GET {path}")

        with ThreadPoolExecutor(max_workers=width) as pool:
            number, wave = 1, 1
            while number <= MAX_PAGES:
                answers = list(pool.map(page, range(number, min(number + wave, MAX_PAGES + 1))))
                for items, per_page, _ in answers:
                    yield from items
                    if len(items) < per_page:
                        return
                number += wave
                per_page, total = answers[-1][1], answers[-1][2]
                # the total only hints how many pages to ask at once, never more than `width`
                wave = max(1, min(width, -(-(total - (number - 1) * per_page) // per_page)))
        raise ClearVoxRejected(f"ClearVox GET {path} still had items after {MAX_PAGES} pages of {PAGE_SIZE}; "
                               "no account holds that many: the PBX pages wrongly", 200, "bad_response")

    def _data(self, method: str, path: str, *, what: str, body: Any = None) -> dict[str, Any]:
        envelope = self._call(method, path, body=body, what=what)
        data = envelope.get("data")
        if not isinstance(data, dict):
            raise ClearVoxRejected(f"ClearVox {method} {path} answered without a data object", 200, "bad_response")
        return data

    def _call(self, method: str, path: str, *, what: str, params: Mapping[str, str] | None = None,
              body: Any = None) -> dict[str, Any]:
        """One request; the parsed envelope on 2xx ({} when empty), else a typed error."""
        resp = self._send(method, path, params, body)
        if 200 <= resp.status_code < 300:
            if resp.status_code == 204 or not resp.content:
                return {}
            try:
                envelope = resp.json()
            except ValueError:
                envelope = None
            if not isinstance(envelope, dict):
                raise ClearVoxRejected(f"ClearVox {method} {path} answered {resp.status_code} without a JSON object",
                                    resp.status_code, "bad_response")
            return envelope
        raise self._error(resp, method, path, what)

    def _error(self, resp: requests.Response, method: str, path: str, what: str) -> ClearVoxError:
        status = resp.status_code
        code, detail, fields = (self._scrub(v) for v in _error_body(resp))
        where = f"ClearVox {method} {path}"
        if 300 <= status < 400:  # never followed: the key would travel to wherever it points
            return ClearVoxMisdirected(
                f"{where}: ClearVox answered a {status} redirect; NEXXT365_CLEARVOX_URL must be the PBX's own https "
                "address, e.g. https://pbx.example.nl", status, "redirect")
        if status == 401:
            return ClearVoxUnauthorized(
                f"ClearVox rejected the API key: check NEXXT365_CLEARVOX_API_KEY (create a new key in ClearVox "
                f"Nexxt if it was revoked) [{where}: {status} {code or 'unauthorized'}]", status, code or "unauthorized")
        if status == 403 and code == "license_required":
            return LicenseRequired(
                f"the account {self.account_id} has no active Office 365 licence: ask ClearVox Customer Care to "
                f"activate the Office 365 koppeling for Company ID {self.account_id}", status, code)
        if status == 403:
            return ClearVoxForbidden(
                f"ClearVox refused {method} {path} for account {self.account_id}: the API key may not act on this "
                f"account; check NEXXT365_CLEARVOX_API_KEY and NEXXT365_CLEARVOX_ACCOUNT ({detail or code})",
                status, code or "forbidden")
        if status == 404 and what == "account":
            return AccountNotFound(
                f"ClearVox has no account {self.account_id}: check NEXXT365_CLEARVOX_ACCOUNT (the Company ID at "
                "the end of /accounts/edit/<company-ID> in the ClearVox admin)", status, code or "not_found")
        if status == 404:
            return ClearVoxNotFound(f"ClearVox has no {what}", status, code or "not_found")
        if status == 409 and code in ("email_taken", ""):
            return EmailTaken(f"{where}: a ClearVox user with this email already exists ({detail or code})",
                              status, code or "email_taken")
        if status == 422:
            listed = "; ".join(f"{k}: {v}" for k, v in sorted(fields.items())) or detail
            return ValidationFailed(f"{where}: ClearVox rejected the data: {listed}", status,
                                    code or "validation_failed", fields)
        if status == 429 or status >= 500:
            return ClearVoxUnavailable(
                f"{where}: ClearVox answered {status} ({code or 'no error code'}){after_retries(retries_made(resp))}; "
                "the next run tries again", status, code or ("rate_limited" if status == 429 else "internal"))
        return ClearVoxRejected(f"{where}: unexpected {status} {code} {detail}".rstrip(), status, code)



def _api_root(base_url: str) -> str:
    raw = (base_url or "").strip().rstrip("/")
    parts = urlsplit(raw)
    if "@" in parts.netloc:
        raise ConfigError("NEXXT365_CLEARVOX_URL must not contain a user name or password (user:pw@host): the API "
                          "key goes in NEXXT365_CLEARVOX_API_KEY. Example: https://pbx.example.nl")
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"NEXXT365_CLEARVOX_URL {base_url!r} is not an https URL. Example: https://pbx.example.nl")
    return raw if raw.endswith(API_PREFIX) else raw + API_PREFIX


def _first(envelope: Any) -> dict[str, Any]:
    data = envelope.get("data") if isinstance(envelope, dict) else None
    return data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}


def _seg(value: str) -> str:
    """One path segment: an id can never reach another path."""
    text = str(value)
    if not text:
        raise ValueError("an id must not be empty")
    return quote(text, safe="")


def _user_path(user_id: str) -> str:
    return "/users/" + _seg(user_id)


def _contact_path(contact_id: str) -> str:
    return "/contacts/" + _seg(contact_id)


def _checked(values: Mapping[str, Any], allowed: frozenset[str], op: str) -> Mapping[str, Any]:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"{op}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    return values


def _contact_body(values: Mapping[str, Any], op: str) -> dict[str, Any]:
    if "visibility" in values:
        raise ValueError(f"{op}: visibility is the user's choice in ClearVox and is never sent")
    body: dict[str, Any] = {}
    for key, value in _checked(values, _CONTACT_KEYS, op).items():
        if key == "phone_numbers" and value is not None:
            value = [_phone_json(p) for p in value]
        elif key == "emails" and value is not None:
            value = [str(e) for e in value]
        body[_CONTACT_JSON[key]] = value
    return body


def _phone_json(phone: PhoneNumber) -> dict[str, str]:
    if not isinstance(phone, PhoneNumber):
        raise TypeError(f"phone_numbers holds PhoneNumber values, not {type(phone).__name__}")
    return {"type": phone.type, "number": phone.number}


def _error_body(resp: requests.Response) -> tuple[str, str, dict[str, str]]:
    try:
        payload = resp.json()
    except ValueError:
        return "", "", {}
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return "", "", {}
    fields = error.get("fields")
    return (str(error.get("code") or ""), str(error.get("message") or ""),
            {str(k): str(v) for k, v in fields.items()} if isinstance(fields, dict) else {})


def _items(envelope: Mapping[str, Any], where: str) -> tuple[list[dict[str, Any]], int, int]:
    """The items of a list answer and the page size it used; ClearVoxRejected when it is not one."""
    data, meta = envelope.get("data"), envelope.get("meta") or {}
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data) or not isinstance(meta, dict):
        raise ClearVoxRejected(f"ClearVox {where} answered a list without a data array of objects and a meta object "
                               f"(got data {type(data).__name__}, meta {type(meta).__name__})", 200, "bad_response")
    per_page = meta.get("per_page")
    size = per_page if isinstance(per_page, int) and 0 < per_page <= PAGE_SIZE else PAGE_SIZE
    total = meta.get("total")
    return data, size, total if isinstance(total, int) else 0


def _parsed(what: str, with_id: bool = True) -> Callable[[Callable[[Mapping[str, Any]], T]], Callable[[Mapping[str, Any]], T]]:
    """A domain object from an answer; a missing id or a wrong type is ClearVoxRejected, never a traceback."""
    def wrap(build: Callable[[Mapping[str, Any]], T]) -> Callable[[Mapping[str, Any]], T]:
        def parse(data: Mapping[str, Any]) -> T:
            try:
                if with_id and (not isinstance(data.get("id"), str | int) or data.get("id") in ("", None)):
                    raise ValueError("id")
                return build(data)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ClearVoxRejected(f"ClearVox answered a {what} the contract does not allow (field {exc!s:.40})",
                                       200, "bad_response") from None
        return parse
    return wrap


@_parsed("user")
def _user(data: Mapping[str, Any]) -> CvUser:
    return CvUser(
        id=str(data["id"]),
        first_name=data.get("first_name") or "",
        last_name=data.get("last_name") or "",
        email=data.get("email") or "",
        external_application_id=data.get("external_application_id"),
        active=bool(data.get("active", True)),
        display_name=data.get("display_name"),
        phone_number=data.get("phone_number"),
        mobile_number=data.get("mobile_number"),
        job_title=data.get("job_title"),
        department=data.get("department"),
        language=data.get("language") or "nl",
    )


@_parsed("contact")
def _contact(data: Mapping[str, Any]) -> CvContact:
    return CvContact(
        id=str(data["id"]),
        owner_user_id=None if data.get("owner_user_id") is None else str(data["owner_user_id"]),
        visibility=data.get("visibility") or "private",
        display_name=data.get("display_name") or "",
        external_id=data.get("external_id"),
        first_name=data.get("first_name"),
        last_name=data.get("last_name"),
        company=data.get("company"),
        job_title=data.get("job_title"),
        emails=tuple(data.get("emails") or ()),
        phone_numbers=tuple(PhoneNumber(p["type"], p["number"]) for p in data.get("phone_numbers") or ()),
    )


@_parsed("status", with_id=False)
def _status(data: Mapping[str, Any]) -> CvStatus:
    if not isinstance(data["status"], str):
        raise TypeError("status")
    return CvStatus(status=data["status"], changed_at=_timestamp(data["changed_at"]), changed_by=str(data["changed_by"]))


def _timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
