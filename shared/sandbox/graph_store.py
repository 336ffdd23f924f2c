"""The tenant behind the Graph simulator: directory, mailboxes and change tracking, in memory.

Everything is indexed (users by id, lower-cased UPN and mail; folders, contacts and
events by id) so a 10,000-user tenant answers each request without scanning it.
One RLock guards all of it; the HTTP layer holds it for the whole of a request.

Every mutation takes the next value of a global change counter. Objects remember
the counter of their last change, and each change is appended to a log (users:
one log; contacts: one log per folder). Deletions leave tombstones. A delta round
is then "what changed in (since, upto]" - a bisect in the log - which is what lets
the simulator answer delta queries the way Microsoft Graph does.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# -- time zones --------------------------------------------------------------

#: Windows zone names Exchange uses, mapped to IANA (CLDR windowsZones, territory "001").
WINDOWS_TO_IANA: dict[str, str] = {
    "UTC": "UTC",
    "Dateline Standard Time": "Etc/GMT+12",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Alaskan Standard Time": "America/Anchorage",
    "Pacific Standard Time": "America/Los_Angeles",
    "Mountain Standard Time": "America/Denver",
    "Central Standard Time": "America/Chicago",
    "Eastern Standard Time": "America/New_York",
    "Atlantic Standard Time": "America/Halifax",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "W. Central Africa Standard Time": "Africa/Lagos",
    "E. Europe Standard Time": "Europe/Chisinau",
    "GTB Standard Time": "Europe/Bucharest",
    "FLE Standard Time": "Europe/Kiev",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Turkey Standard Time": "Europe/Istanbul",
    "Russian Standard Time": "Europe/Moscow",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Calcutta",
    "SE Asia Standard Time": "Asia/Bangkok",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
}
_WINDOWS_LOWER = {k.lower(): v for k, v in WINDOWS_TO_IANA.items()}


class UnknownTimeZoneError(ValueError):
    """A time zone name that is neither a known Windows name nor an IANA name."""


def zone(name: str) -> tzinfo:
    """The tzinfo for a Windows or IANA zone name, as Graph accepts both in `Prefer` and `dateTimeTimeZone`."""
    key = name.strip()
    if key.upper() in ("UTC", "Z", "ETC/UTC", "GMT"):
        return UTC
    iana = _WINDOWS_LOWER.get(key.lower(), key)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimeZoneError(name) from exc


# -- ids ---------------------------------------------------------------------

def outlook_id() -> str:
    """An opaque Exchange-style id (url-safe base64, may end in '=') - clients must not parse it."""
    raw = b"\x00\x00\x00\x00" + uuid.uuid4().bytes + uuid.uuid4().bytes[:8]
    return "AAMkA" + base64.urlsafe_b64encode(raw).decode()


def change_key() -> str:
    return base64.b64encode(uuid.uuid4().bytes[:12]).decode()


# -- property sets -------------------------------------------------------------

#: user properties the simulator stores (Graph names).
USER_PROPERTIES: frozenset[str] = frozenset({
    "id", "displayName", "givenName", "surname", "mail", "userPrincipalName", "businessPhones",
    "mobilePhone", "jobTitle", "department", "officeLocation", "preferredLanguage", "accountEnabled",
    "userType", "companyName", "employeeId", "mailNickname", "otherMails", "proxyAddresses", "usageLocation",
})
#: what GET /users returns without $select (Graph's documented default set).
DEFAULT_USER_SELECT: tuple[str, ...] = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)
_USER_LIST_PROPS = frozenset({"businessPhones", "otherMails", "proxyAddresses"})

CONTACT_PROPERTIES: frozenset[str] = frozenset({
    "displayName", "givenName", "middleName", "surname", "nickName", "initials", "title", "generation",
    "companyName", "department", "jobTitle", "officeLocation", "profession", "manager", "assistantName",
    "emailAddresses", "businessPhones", "homePhones", "mobilePhone", "imAddresses", "businessHomePage",
    "personalNotes", "birthday", "categories", "fileAs", "spouseName", "children",
    "businessAddress", "homeAddress", "otherAddress", "yomiGivenName", "yomiSurname", "yomiCompanyName",
})
_CONTACT_LIST_PROPS = frozenset({"emailAddresses", "businessPhones", "homePhones", "imAddresses", "categories", "children"})
_CONTACT_ADDRESS_PROPS = frozenset({"businessAddress", "homeAddress", "otherAddress"})

SHOW_AS = ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown")
SENSITIVITY = ("normal", "personal", "private", "confidential")


# -- records -----------------------------------------------------------------

@dataclass
class User:
    """A directory user; `props` holds only the properties that were ever set."""

    id: str
    props: dict[str, Any]
    prop_changed: dict[str, int]
    created: int
    changed: int
    mailbox: Mailbox
    removed: str | None = None  # None, "changed" (soft-deleted, restorable) or "deleted" (permanently)
    has_mailbox: bool = True
    mailbox_in_scope: bool = True
    time_zone: str = "W. Europe Standard Time"

    @property
    def live(self) -> bool:
        return self.removed is None

    def get(self, prop: str) -> Any:
        if prop == "id":
            return self.id
        if prop in self.props:
            return self.props[prop]
        return [] if prop in _USER_LIST_PROPS else None


@dataclass
class Group:
    id: str
    display_name: str
    members: list[str]  # user or group ids


@dataclass
class ContactFolder:
    id: str
    user_id: str
    display_name: str
    parent_id: str
    changed: int
    children: dict[str, None] = field(default_factory=dict)  # ordered set of child folder ids
    contacts: dict[str, None] = field(default_factory=dict)  # ordered set of live contact ids
    log: list[tuple[int, str]] = field(default_factory=list)  # (counter, contact id), counters ascending
    deleted: bool = False


@dataclass
class Contact:
    id: str
    user_id: str
    folder_id: str
    props: dict[str, Any]
    created: int
    changed: int
    created_at: datetime
    modified_at: datetime
    change_key: str
    deleted: bool = False

    def get(self, prop: str) -> Any:
        if prop in self.props:
            return self.props[prop]
        if prop in _CONTACT_LIST_PROPS:
            return []
        if prop in _CONTACT_ADDRESS_PROPS:
            return {}
        return None


@dataclass
class Event:
    """A calendar item. Timed events keep their aware start/end; all-day events keep dates (end exclusive)."""

    id: str
    user_id: str
    subject: str
    start: datetime | None
    end: datetime | None
    start_date: date | None
    end_date: date | None
    show_as: str
    is_all_day: bool
    is_cancelled: bool
    sensitivity: str
    recurrence: dict[str, Any] | None
    location: str | None
    created: int
    changed: int
    created_at: datetime
    modified_at: datetime
    change_key: str


@dataclass
class Occurrence:
    """One instance of an event in a time window: absolute instants plus what rendering needs."""

    event: Event
    id: str
    start: datetime  # aware, UTC
    end: datetime
    start_date: date | None  # all-day only
    end_date: date | None
    type: str  # singleInstance | occurrence


@dataclass
class Mailbox:
    root_id: str
    contacts_folder_id: str
    folders: dict[str, ContactFolder] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)


@dataclass
class Secret:
    value: str
    expired: bool = False


@dataclass
class App:
    """An app registration with the application permissions (roles) an admin consented to."""

    client_id: str
    display_name: str
    roles: tuple[str, ...]
    secrets: list[Secret] = field(default_factory=list)
    certificates: list[Any] = field(default_factory=list)  # cryptography x509.Certificate


# -- the store ---------------------------------------------------------------

class GraphStore:
    """The tenant's data and its mutation API (used directly by tests and the demo)."""

    def __init__(self, *, tenant_id: str | None = None, domain: str = "contoso.onmicrosoft.com") -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.domain = domain
        self._data_lock = threading.RLock()
        self._counter = 0
        self.apps: dict[str, App] = {}
        self.users: dict[str, User] = {}  # includes tombstones
        self.groups: dict[str, Group] = {}
        self._by_upn: dict[str, str] = {}
        self._by_mail: dict[str, str] = {}
        self._live_user_ids: dict[str, None] = {}  # ordered set
        self._live_user_list: list[str] | None = None
        self.user_log: list[tuple[int, str]] = []
        self._folders: dict[str, ContactFolder] = {}
        self._contacts: dict[str, Contact] = {}
        self._events: dict[str, Event] = {}

    # -- counter -----------------------------------------------------------
    @property
    def change_counter(self) -> int:
        """The global change counter: the value taken by the last mutation."""
        return self._counter

    def _bump(self) -> int:
        self._counter += 1
        return self._counter

    # -- apps ----------------------------------------------------------------
    def add_app(self, client_id: str | None = None, secret: str | None = None, certificate_pem: str | bytes | None = None,
                roles: Iterable[str] = ("User.Read.All", "Contacts.Read", "Calendars.Read"),
                secret_expired: bool = False, display_name: str = "nexxt365") -> str:
        """Register an app in this tenant with its consented application permissions; returns the client id."""
        from cryptography import x509

        client_id = client_id or str(uuid.uuid4())
        app = App(client_id, display_name, tuple(roles))
        if secret is not None:
            app.secrets.append(Secret(secret, secret_expired))
        if certificate_pem is not None:
            pem = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
            app.certificates.extend(x509.load_pem_x509_certificates(pem))
        with self._data_lock:
            self.apps[client_id] = app
        return client_id

    def set_app_roles(self, client_id: str, roles: Iterable[str]) -> None:
        """Change the consented roles; like Entra, only tokens issued afterwards carry them."""
        with self._data_lock:
            self.apps[client_id].roles = tuple(roles)

    def add_app_secret(self, client_id: str, secret: str, expired: bool = False) -> None:
        with self._data_lock:
            self.apps[client_id].secrets.append(Secret(secret, expired))

    def expire_app_secrets(self, client_id: str) -> None:
        with self._data_lock:
            for s in self.apps[client_id].secrets:
                s.expired = True

    # -- users ---------------------------------------------------------------
    def add_user(self, *, has_mailbox: bool = True, mailbox_in_scope: bool = True,
                 time_zone: str = "W. Europe Standard Time", **fields: Any) -> str:
        """Create a user from Graph user fields (camelCase); returns its id."""
        unknown = set(fields) - USER_PROPERTIES
        if unknown:
            raise TypeError(f"unknown user fields: {sorted(unknown)}")
        zone(time_zone)  # validate early
        with self._data_lock:
            uid = str(fields.pop("id", None) or uuid.uuid4())
            if uid in self.users and self.users[uid].removed != "deleted":
                raise ValueError(f"user {uid} exists")
            props: dict[str, Any] = {"accountEnabled": True, "userType": "Member", "businessPhones": []}
            props.update(fields)
            if not props.get("userPrincipalName"):
                nick = str(props.get("mailNickname") or f"user{len(self.users) + 1}")
                props["userPrincipalName"] = f"{nick}@{self.domain}"
            upn_key = str(props["userPrincipalName"]).lower()
            if upn_key in self._by_upn:
                raise ValueError(f"userPrincipalName {props['userPrincipalName']} is taken")
            counter = self._bump()
            mailbox = self._new_mailbox(uid, counter)
            user = User(uid, props, dict.fromkeys(props, counter), counter, counter, mailbox,
                        has_mailbox=has_mailbox, mailbox_in_scope=mailbox_in_scope, time_zone=time_zone)
            self.users[uid] = user
            self._index_user(user)
            self._live_user_ids[uid] = None
            self._live_user_list = None
            self.user_log.append((counter, uid))
            return uid

    def update_user(self, user_id: str, **fields: Any) -> None:
        """Change Graph user fields and/or the simulator flags (has_mailbox, mailbox_in_scope, time_zone)."""
        with self._data_lock:
            user = self._live_user(user_id)
            flags = False
            for flag in ("has_mailbox", "mailbox_in_scope"):
                if flag in fields:
                    setattr(user, flag, bool(fields.pop(flag)))
                    flags = True
            if "time_zone" in fields:
                tz = str(fields.pop("time_zone"))
                zone(tz)
                user.time_zone = tz
                flags = True
            if flags and not fields:
                self._bump()  # a mailbox change: counted, but invisible to directory delta
                return
            unknown = set(fields) - (USER_PROPERTIES - {"id"})
            if unknown:
                raise TypeError(f"unknown or read-only user fields: {sorted(unknown)}")
            changed = {k: v for k, v in fields.items() if user.props.get(k, _MISSING) != v}
            if not changed:
                return
            new_upn = changed.get("userPrincipalName")
            if new_upn is not None and str(new_upn).lower() in self._by_upn \
                    and self._by_upn[str(new_upn).lower()] != user_id:
                raise ValueError(f"userPrincipalName {new_upn} is taken")
            self._unindex_user(user)
            counter = self._bump()
            user.props.update(changed)
            for k in changed:
                user.prop_changed[k] = counter
            user.changed = counter
            self._index_user(user)
            self.user_log.append((counter, user_id))

    def delete_user(self, user_id: str, *, permanent: bool = False) -> None:
        """Delete a user: soft (restorable, delta reason "changed") or permanent (reason "deleted")."""
        with self._data_lock:
            user = self.users[user_id]
            if user.removed == "deleted" or (user.removed == "changed" and not permanent):
                raise KeyError(user_id)
            if user.live:
                self._unindex_user(user)
                self._live_user_ids.pop(user_id, None)
                self._live_user_list = None
            counter = self._bump()
            user.removed = "deleted" if permanent else "changed"
            user.changed = counter
            self.user_log.append((counter, user_id))

    def restore_user(self, user_id: str) -> None:
        """Restore a soft-deleted user; it reappears in delta with all its properties."""
        with self._data_lock:
            user = self.users[user_id]
            if user.removed != "changed":
                raise KeyError(user_id)
            counter = self._bump()
            user.removed = None
            user.changed = counter
            user.prop_changed = dict.fromkeys(user.props, counter)
            self._index_user(user)
            self._live_user_ids[user_id] = None
            self._live_user_list = None
            self.user_log.append((counter, user_id))

    def _index_user(self, user: User) -> None:
        self._by_upn[str(user.props["userPrincipalName"]).lower()] = user.id
        mail = user.props.get("mail")
        if mail:
            self._by_mail[str(mail).lower()] = user.id

    def _unindex_user(self, user: User) -> None:
        self._by_upn.pop(str(user.props["userPrincipalName"]).lower(), None)
        mail = user.props.get("mail")
        if mail and self._by_mail.get(str(mail).lower()) == user.id:
            del self._by_mail[str(mail).lower()]

    def _live_user(self, user_id: str) -> User:
        user = self.users.get(user_id)
        if user is None or not user.live:
            raise KeyError(user_id)
        return user

    def find_user(self, key: str) -> User | None:
        """A live user by id, userPrincipalName or (for Outlook/getSchedule) primary SMTP address."""
        with self._data_lock:
            uid = key if key in self._live_user_ids else self._by_upn.get(key.lower()) or self._by_mail.get(key.lower())
            return self.users[uid] if uid else None

    def live_user_ids(self) -> list[str]:
        """Live users in creation order (cached between user additions/deletions)."""
        with self._data_lock:
            if self._live_user_list is None:
                self._live_user_list = list(self._live_user_ids)
            return self._live_user_list

    def users_by_prop(self, prop: str, value: Any) -> list[str]:
        """Live user ids whose `prop` equals `value` (strings case-insensitively, as Entra compares)."""
        with self._data_lock:
            if prop == "id":
                return [value] if value in self._live_user_ids else []
            if prop in ("userPrincipalName", "mail") and isinstance(value, str):
                uid = (self._by_upn if prop == "userPrincipalName" else self._by_mail).get(value.lower())
                return [uid] if uid else []
            out = []
            for uid in self.live_user_ids():
                v = self.users[uid].get(prop)
                if v == value or (isinstance(v, str) and isinstance(value, str) and v.lower() == value.lower()):
                    out.append(uid)
            return out

    # -- groups --------------------------------------------------------------
    def add_group(self, group_id: str | None = None, members: Iterable[str] = (), display_name: str | None = None) -> str:
        """A security group; members are user ids or group ids (nested groups count transitively)."""
        with self._data_lock:
            gid = group_id or str(uuid.uuid4())
            self.groups[gid] = Group(gid, display_name or f"Group {len(self.groups) + 1}", list(members))
            self._bump()
            return gid

    def set_group_members(self, group_id: str, members: Iterable[str]) -> None:
        with self._data_lock:
            self.groups[group_id].members = list(members)
            self._bump()

    def transitive_users(self, group_id: str) -> list[User]:
        """Live users in the group or any nested group, each once, in membership order."""
        with self._data_lock:
            seen_groups = {group_id}
            seen_users: dict[str, None] = {}
            stack = [group_id]
            while stack:
                for member in self.groups[stack.pop(0)].members:
                    if member in self.groups:
                        if member not in seen_groups:
                            seen_groups.add(member)
                            stack.append(member)
                    elif member in self._live_user_ids:
                        seen_users[member] = None
            return [self.users[u] for u in seen_users]

    def direct_users(self, group_id: str) -> list[User]:
        with self._data_lock:
            return [self.users[m] for m in self.groups[group_id].members if m in self._live_user_ids]

    # -- contacts ------------------------------------------------------------
    def _new_mailbox(self, user_id: str, counter: int) -> Mailbox:
        root, default = outlook_id(), outlook_id()
        mailbox = Mailbox(root_id=root, contacts_folder_id=default)
        folder = ContactFolder(default, user_id, "Contacts", root, counter)
        mailbox.folders[default] = folder
        self._folders[default] = folder
        return mailbox

    def default_contact_folder(self, user_id: str) -> str:
        return self.users[user_id].mailbox.contacts_folder_id

    def add_contact_folder(self, user_id: str, display_name: str, parent_id: str | None = None) -> str:
        """A personal contact folder; without parent it sits under the default Contacts folder, as Outlook does."""
        with self._data_lock:
            user = self._live_user(user_id)
            parent = self._live_folder(parent_id or user.mailbox.contacts_folder_id)
            if parent.user_id != user_id:
                raise KeyError(parent.id)
            fid = outlook_id()
            folder = ContactFolder(fid, user_id, display_name, parent.id, self._bump())
            user.mailbox.folders[fid] = folder
            self._folders[fid] = folder
            parent.children[fid] = None
            return fid

    def delete_contact_folder(self, folder_id: str) -> None:
        """Delete a folder with its subfolders and contacts; its delta then answers 404 ErrorItemNotFound."""
        with self._data_lock:
            folder = self._live_folder(folder_id)
            user = self.users[folder.user_id]
            if folder_id == user.mailbox.contacts_folder_id:
                raise ValueError("the default Contacts folder cannot be deleted")
            counter = self._bump()
            self._folders[folder.parent_id].children.pop(folder_id, None)
            stack = [folder]
            while stack:
                f = stack.pop()
                f.deleted = True
                f.changed = counter
                for cid in f.contacts:
                    c = self._contacts[cid]
                    c.deleted = True
                    c.changed = counter
                f.contacts.clear()
                stack.extend(self._folders[c] for c in f.children)

    def _live_folder(self, folder_id: str) -> ContactFolder:
        folder = self._folders.get(folder_id)
        if folder is None or folder.deleted:
            raise KeyError(folder_id)
        return folder

    def folder(self, folder_id: str) -> ContactFolder | None:
        return self._folders.get(folder_id)

    def add_contact(self, user_id: str, folder_id: str | None = None, **fields: Any) -> str:
        """A personal contact from Graph contact fields; in the default Contacts folder unless `folder_id`."""
        unknown = set(fields) - CONTACT_PROPERTIES
        if unknown:
            raise TypeError(f"unknown contact fields: {sorted(unknown)}")
        with self._data_lock:
            user = self._live_user(user_id)
            folder = self._live_folder(folder_id or user.mailbox.contacts_folder_id)
            if folder.user_id != user_id:
                raise KeyError(folder.id)
            counter = self._bump()
            now = datetime.now(UTC)
            props = dict(fields)
            if "displayName" not in props:
                props["displayName"] = " ".join(str(props[k]) for k in ("givenName", "surname") if props.get(k))
            cid = outlook_id()
            contact = Contact(cid, user_id, folder.id, props, counter, counter, now, now, change_key())
            self._contacts[cid] = contact
            folder.contacts[cid] = None
            folder.log.append((counter, cid))
            return cid

    def update_contact(self, contact_id: str, **fields: Any) -> None:
        unknown = set(fields) - CONTACT_PROPERTIES
        if unknown:
            raise TypeError(f"unknown contact fields: {sorted(unknown)}")
        with self._data_lock:
            contact = self._live_contact(contact_id)
            counter = self._bump()
            contact.props.update(fields)
            contact.changed = counter
            contact.modified_at = datetime.now(UTC)
            contact.change_key = change_key()
            self._folders[contact.folder_id].log.append((counter, contact_id))

    def delete_contact(self, contact_id: str) -> None:
        with self._data_lock:
            contact = self._live_contact(contact_id)
            counter = self._bump()
            contact.deleted = True
            contact.changed = counter
            folder = self._folders[contact.folder_id]
            folder.contacts.pop(contact_id, None)
            folder.log.append((counter, contact_id))

    def _live_contact(self, contact_id: str) -> Contact:
        contact = self._contacts.get(contact_id)
        if contact is None or contact.deleted:
            raise KeyError(contact_id)
        return contact

    def contact(self, contact_id: str) -> Contact | None:
        return self._contacts.get(contact_id)

    # -- calendar --------------------------------------------------------------
    def add_event(self, user_id: str, subject: str, start: datetime | date, end: datetime | date, *,
                  show_as: str = "busy", is_all_day: bool = False, is_cancelled: bool = False,
                  sensitivity: str = "normal", recurrence: dict[str, Any] | None = None,
                  location: str | None = None) -> str:
        """A calendar event. Timed events need aware datetimes; all-day events run midnight to
        midnight in the mailbox time zone (pass dates, or datetimes whose dates are used)."""
        with self._data_lock:
            self._live_user(user_id)
            counter = self._bump()
            now = datetime.now(UTC)
            event = Event(outlook_id(), user_id, subject, None, None, None, None, show_as, is_all_day,
                          is_cancelled, sensitivity, recurrence, location, counter, counter, now, now, change_key())
            self._set_event_times(event, start, end, is_all_day)
            self._check_event(event)
            self._events[event.id] = event
            self.users[user_id].mailbox.events[event.id] = event
            return event.id

    def update_event(self, event_id: str, **fields: Any) -> None:
        """Change event fields by their add_event names (subject, start, end, show_as, is_cancelled, ...)."""
        allowed = {"subject", "start", "end", "show_as", "is_all_day", "is_cancelled", "sensitivity", "recurrence",
                   "location"}
        if set(fields) - allowed:
            raise TypeError(f"unknown event fields: {sorted(set(fields) - allowed)}")
        with self._data_lock:
            event = self._events[event_id]
            start = fields.pop("start", event.start if not event.is_all_day else event.start_date)
            end = fields.pop("end", event.end if not event.is_all_day else event.end_date)
            for k, v in fields.items():
                setattr(event, k, v)
            assert start is not None and end is not None
            self._set_event_times(event, start, end, event.is_all_day)
            self._check_event(event)
            event.changed = self._bump()
            event.modified_at = datetime.now(UTC)
            event.change_key = change_key()

    def delete_event(self, event_id: str) -> None:
        with self._data_lock:
            event = self._events.pop(event_id)
            self.users[event.user_id].mailbox.events.pop(event_id, None)
            self._bump()

    @staticmethod
    def _set_event_times(event: Event, start: datetime | date, end: datetime | date, all_day: bool) -> None:
        if all_day:
            event.start_date = start.date() if isinstance(start, datetime) else start
            event.end_date = end.date() if isinstance(end, datetime) else end
            if event.end_date <= event.start_date:
                event.end_date = event.start_date + timedelta(days=1)
            event.start = event.end = None
            return
        if not isinstance(start, datetime) or not isinstance(end, datetime) \
                or start.tzinfo is None or end.tzinfo is None:
            raise ValueError("timed events need timezone-aware datetimes")
        if end <= start:
            raise ValueError("event end must be after its start")
        event.start, event.end = start, end.astimezone(start.tzinfo)
        event.start_date = event.end_date = None

    @staticmethod
    def _check_event(event: Event) -> None:
        if event.show_as not in SHOW_AS:
            raise ValueError(f"show_as must be one of {SHOW_AS}")
        if event.sensitivity not in SENSITIVITY:
            raise ValueError(f"sensitivity must be one of {SENSITIVITY}")

    def occurrences(self, user: User, start: datetime, end: datetime) -> list[Occurrence]:
        """Expanded instances overlapping [start, end), ordered by start; all-day spans use the mailbox zone."""
        tz = zone(user.time_zone)
        out: list[Occurrence] = []
        for event in user.mailbox.events.values():
            for occ in _expand(event, tz, start, end):
                if occ.start < end and occ.end > start:
                    out.append(occ)
        out.sort(key=lambda o: (o.start, o.end, o.id))
        return out


_MISSING = object()


def changed_keys(log: list[tuple[int, str]], since: int, upto: int) -> list[str]:
    """Keys changed in (since, upto], each once, ordered by their last change."""
    start = bisect.bisect_right(log, since, key=lambda entry: entry[0])
    last: dict[str, None] = {}
    for counter, key in log[start:]:
        if counter > upto:
            break
        last.pop(key, None)
        last[key] = None
    return list(last)

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MAX_EXPANSION = 100_000  # guard against runaway recurrences


def _expand(event: Event, tz: tzinfo, win_start: datetime, win_end: datetime) -> Iterator[Occurrence]:
    """Instances of `event` (a single one, or its recurrence expanded on the local wall clock)."""
    if event.is_all_day:
        assert event.start_date is not None and event.end_date is not None
        days = event.end_date - event.start_date
        first = event.start_date
    else:
        assert event.start is not None and event.end is not None
        duration = event.end - event.start
        first = event.start.date()
    if not event.recurrence:
        yield _occurrence(event, tz, first, None, "singleInstance")
        return
    pattern = event.recurrence.get("pattern", {})
    rng = event.recurrence.get("range", {})
    range_start = date.fromisoformat(rng["startDate"]) if rng.get("startDate") else first
    range_type = rng.get("type", "noEnd")
    range_end = date.fromisoformat(rng["endDate"]) if range_type == "endDate" and rng.get("endDate") else None
    max_count = int(rng.get("numberOfOccurrences", 0)) if range_type == "numbered" else 0
    # the earliest local date whose occurrence could still reach the window
    span = days if event.is_all_day else duration
    horizon = win_end.astimezone(tz).date() + timedelta(days=1)
    earliest = win_start.astimezone(tz).date() - span - timedelta(days=1)
    for count, day in enumerate(_pattern_dates(pattern, range_start), start=1):
        if count > _MAX_EXPANSION or day > horizon or (range_end is not None and day > range_end):
            return
        if max_count and count > max_count:
            return
        if day >= earliest:
            yield _occurrence(event, tz, day, day, "occurrence")


def _occurrence(event: Event, tz: tzinfo, day: date, occ_day: date | None, kind: str) -> Occurrence:
    occ_id = event.id if occ_day is None else "AAMkA" + base64.urlsafe_b64encode(
        hashlib.sha256(f"{event.id}/{occ_day.isoformat()}".encode()).digest()[:27]).decode()
    if event.is_all_day:
        assert event.start_date is not None and event.end_date is not None
        end_day = day + (event.end_date - event.start_date)
        start = datetime.combine(day, time(), tz).astimezone(UTC)
        end = datetime.combine(end_day, time(), tz).astimezone(UTC)
        return Occurrence(event, occ_id, start, end, day, end_day, kind)
    assert event.start is not None and event.end is not None
    if occ_day is None:
        return Occurrence(event, occ_id, event.start.astimezone(UTC), event.end.astimezone(UTC), None, None, kind)
    # a recurrence repeats the wall-clock times of the first instance in its own zone (DST-correct)
    local_start = datetime.combine(day, event.start.timetz())
    local_end = datetime.combine(day + (event.end.date() - event.start.date()), event.end.timetz())
    return Occurrence(event, occ_id, local_start.astimezone(UTC), local_end.astimezone(UTC), None, None, kind)


def _pattern_dates(pattern: dict[str, Any], start: date) -> Iterator[date]:
    """Candidate dates of a patternedRecurrence from the range start (daily, weekly, absoluteMonthly/Yearly)."""
    kind = pattern.get("type", "daily")
    interval = max(int(pattern.get("interval", 1)), 1)
    if kind == "daily":
        day = start
        while True:
            yield day
            day += timedelta(days=interval)
    elif kind == "weekly":
        wanted = {_WEEKDAYS.index(d.lower()) for d in pattern.get("daysOfWeek") or [_WEEKDAYS[start.weekday()]]}
        first_dow = _WEEKDAYS.index(str(pattern.get("firstDayOfWeek", "sunday")).lower())
        week_start = start - timedelta(days=(start.weekday() - first_dow) % 7)
        while True:
            for offset in range(7):
                day = week_start + timedelta(days=offset)
                if day >= start and day.weekday() in wanted:
                    yield day
            week_start += timedelta(weeks=interval)
    elif kind in ("absoluteMonthly", "absoluteYearly"):
        dom = int(pattern.get("dayOfMonth", start.day))
        month = int(pattern.get("month", start.month)) if kind == "absoluteYearly" else start.month
        year = start.year
        step = interval * (12 if kind == "absoluteYearly" else 1)
        while True:
            try:
                day = date(year, month, dom)
            except ValueError:
                day = None  # e.g. the 31st in a 30-day month is skipped
            if day is not None and day >= start:
                yield day
            month += step
            year += (month - 1) // 12
            month = (month - 1) % 12 + 1
    else:
        raise ValueError(f"unsupported recurrence pattern {kind!r}")
