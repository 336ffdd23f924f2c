"""Users sync: Entra users become ClearVox users, linked by Object-ID, incrementally and safely.

Pure half: Entra users + ClearVox users + the links table -> a plan.
The plan is a list of independent actions (create, update, link, deactivate),
each carrying the links-table row to write once it succeeded, plus what is
only reported (skips with reasons, users waiting for a manual link,
conflicts, held deactivations, field warnings). Nothing there does I/O, so
the rules are tested without HTTP and `--dry-run` prints exactly what a real
run would do.

Rules that shape the code:

* ClearVox is the truth about links: a ClearVox user is linked to the Entra
  user whose object id is in its external_application_id ("Extern toepassing
  ID"). The links table remembers what the connector last wrote and why.
* Only Entra changes are pushed. Per field, a hash of the value last written
  is kept; a field is sent when Entra's value moved away from it *and*
  ClearVox holds something else. A value an administrator typed in ClearVox
  therefore survives until the field changes in Entra.
* Nothing destructive happens on thin evidence: deactivation needs a real
  Entra event (deleted, disabled, left the group) or, in a full round, a
  link the connector itself recorded; more than `max_deactivations` in one
  run holds them all; nothing is ever deleted.

I/O half (`run_users`, `report_unlinked`, `link_from_csv`), one run:

1. Graph `users/delta?$select=GRAPH_SELECT`. A full round (a delta round
   without a token: every user) on the first run, when the stored token
   expired (DeltaExpired), when the users group setting changed, and every
   NEXXT365_FULL_SYNC_HOURS to catch drift; otherwise the round resumes from
   the stored deltaLink and sees only changes.
2. Delta items carry only some properties (the round asks for
   `Prefer: return=minimal`, and Graph may leave properties out anyway), so
   the last seen copy of every Entra user is kept in the `entrausers` table
   and each item is merged into it: the plan always sees whole users.
3. ClearVox reads: a full round lists every ClearVox user once; a delta round
   looks up only the users it touches (by the links row's ClearVox id, by
   Object-ID, by email), the users still waiting for a manual link (to notice
   a pasted Object-ID) and the users to retry. A run without changes costs
   one Graph request and one ClearVox read per waiting user.
4. The actions run concurrently (NEXXT365_CLEARVOX_CONCURRENCY threads); each
   success's links row is written, batched 100 per transaction. A create
   refused with 409 email_taken is planned again for that one user with the
   ClearVox user found by email ("exists"), never retried as a create.
5. Failed items (and held deactivations, so that --confirm-deactivations
   finds them) go in the `retries` table and are planned again on the next
   run although the deltaLink moved on. The deltaLink is stored last, only
   when the round was applied. When ClearVox becomes unavailable (or refuses
   the key) mid-apply, the run stops, keeps the rows of what succeeded and
   leaves the cursor, so the next run replays the round; every created
   ClearVox user carries its Object-ID, so the replay finds it instead of
   creating it twice.

Users group scope (NEXXT365_USERS_GROUP): each run reads
`/groups/{id}/transitiveMembers/microsoft.graph.user`, which needs the
**GroupMember.Read.All** application permission (User.Read.All does not
cover group membership). The member set is kept in `entrausers` (partition
"group"): who joined is planned like a new user, who left like a removed
one. With a group, a run costs 1 + ceil(members / 999) Graph requests.

State: links (object id -> ClearVox user id, status, field hashes),
entrausers (last seen Graph user per object id; group members), retries
(partition "users"), cursors ("users": deltaLink, time of the last full
round, users group and $select it was taken with).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, TypeAlias, cast, get_args
from urllib.parse import quote

from shared.clearvox import USER_FIELDS, ClearVox, CvUser
from shared.errors import (
    EXIT_CONFIG,
    EXIT_ITEM_FAILURES,
    EXIT_OK,
    AccountNotFound,
    ClearVoxError,
    ClearVoxForbidden,
    ClearVoxNotFound,
    ClearVoxUnauthorized,
    ClearVoxUnavailable,
    ConfigError,
    ConsentError,
    DeltaExpired,
    EmailTaken,
    GraphError,
    LicenseRequired,
)
from shared.graph import CONSENT_STEP, BatchRequest, Graph
from shared.phone import DEFAULT_REGION, UnparseablePhone, to_e164

if TYPE_CHECKING:
    from shared.report import RunReport
    from shared.runner import SyncContext
    from shared.settings import Options, Tenant
    from shared.state import State, Store

# The properties the users delta asks for ($select).
GRAPH_SELECT = (
    "id", "displayName", "givenName", "surname", "mail", "userPrincipalName", "businessPhones", "mobilePhone",
    "jobTitle", "department", "preferredLanguage", "accountEnabled", "userType",
)
LANGUAGES = ("nl", "en", "de", "fr")
# ClearVox's maximum lengths (clearvox-api.yaml, UserCreate); longer values are cut rather than rejected.
MAX_LENGTHS = {"first_name": 100, "last_name": 100, "display_name": 200, "job_title": 200, "department": 200}

OnRemoved: TypeAlias = Literal["report", "deactivate"]
LinkStatus: TypeAlias = Literal["linked", "unlinked", "conflict", "deactivated"]
LINK_STATUSES: tuple[str, ...] = get_args(LinkStatus)
GraphUser: TypeAlias = Mapping[str, Any]

# Ineligibility reasons (also used by tests and the apply layer).
REASON_NO_EMAIL = "no email in Entra contact info (mail is empty; the sign-in name is not used)"
REASON_GUEST = "guest user (not synced unless NEXXT365_INCLUDE_GUESTS=true)"
REASON_DISABLED = "disabled in Entra (not synced unless NEXXT365_INCLUDE_DISABLED=true)"
# Why a linked user counts as removed.
WHY_DELETED = "deleted in Entra"
WHY_DISABLED = "disabled in Entra"
WHY_LEFT_GROUP = "no longer a member of the users group"
WHY_ABSENT = "no longer in Entra (not seen in the full round)"


def exists_reason(object_id: str) -> str:
    """The skip reason for an Entra user whose email a ClearVox user already has."""
    return f"exists in ClearVox: paste Object-ID {object_id} into Extern toepassing ID"


# --------------------------------------------------------------------------- options and links table


@dataclass(frozen=True)
class UsersOptions:
    """The settings that change the plan; `users_group_members` None means no group scope."""

    include_guests: bool = False
    include_disabled: bool = False
    auto_link: bool = False
    on_removed: OnRemoved = "report"
    max_deactivations: int = 10
    confirm_deactivations: bool = False
    default_region: str = DEFAULT_REGION
    users_group_members: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.on_removed not in ("report", "deactivate"):
            raise ConfigError(f"on_removed {self.on_removed!r} is not one of: report, deactivate.")
        if self.max_deactivations < 0:
            raise ConfigError(f"max_deactivations {self.max_deactivations} must be 0 or more.")
        if self.users_group_members is not None:
            # Object ids compare case-insensitively (GUIDs pasted by people come in both cases).
            object.__setattr__(self, "users_group_members", frozenset(_key(m) for m in self.users_group_members))

    @classmethod
    def from_settings(
        cls, options: Options, *, users_group_members: Iterable[str] | None = None, confirm_deactivations: bool = False,
    ) -> UsersOptions:
        """Build from the tenant's settings; the group members are fetched by the caller when users_group is set."""
        on_removed: OnRemoved = "deactivate" if options.on_removed == "deactivate" else "report"
        return cls(
            include_guests=options.include_guests,
            include_disabled=options.include_disabled,
            auto_link=options.auto_link,
            on_removed=on_removed,
            max_deactivations=options.max_deactivations,
            confirm_deactivations=confirm_deactivations,
            default_region=options.default_region,
            users_group_members=frozenset(users_group_members) if users_group_members is not None else None,
        )


@dataclass(frozen=True)
class Link:
    """One row of the links table, keyed by the Entra object id.

    status: linked (the connector syncs it), unlinked (same email exists in
    ClearVox, waiting for the Object-ID to be pasted; `report unlinked` lists
    these), conflict (not created: duplicate email or the ClearVox user is
    linked to someone else), deactivated (removed/disabled in Entra and
    inactive in ClearVox). `field_hashes` holds a hash per field last written,
    so a later run can tell which fields changed in Entra.
    """

    object_id: str
    cv_user_id: str | None
    email: str
    display_name: str
    status: LinkStatus
    field_hashes: Mapping[str, str] = field(default_factory=dict)
    deactivated_by_connector: bool = False

    @property
    def hash(self) -> str:
        """Hash of everything last written ("" when nothing was): equal hashes mean nothing changed in Entra."""
        return _combine(self.field_hashes) if self.field_hashes else ""

    @property
    def is_linked(self) -> bool:
        """The connector recorded this Entra user as linked to `cv_user_id` (active or deactivated)."""
        return self.status in ("linked", "deactivated") and bool(self.cv_user_id)

    def to_row(self) -> dict[str, str | int | bool]:
        """Table Storage properties; every column is always present so a merge-upsert never keeps a stale one."""
        return {
            "cv_user_id": self.cv_user_id or "",
            "email": self.email,
            "display_name": self.display_name,
            "status": self.status,
            "hash": self.hash,
            "field_hashes": json.dumps(dict(sorted(self.field_hashes.items())), separators=(",", ":")),
            "deactivated_by_connector": self.deactivated_by_connector,
        }

    @classmethod
    def from_row(cls, object_id: str, row: Mapping[str, Any]) -> Link:
        """Read a row back; tolerant of missing or damaged columns (they read as 'nothing written yet')."""
        try:
            loaded = json.loads(str(row.get("field_hashes") or "{}"))
        except ValueError:
            loaded = {}
        hashes = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        cv_user_id = str(row.get("cv_user_id") or "") or None
        status = str(row.get("status") or "")
        if status not in LINK_STATUSES:
            status = "linked" if cv_user_id else "unlinked"
        return cls(
            object_id=object_id,
            cv_user_id=cv_user_id,
            email=str(row.get("email") or ""),
            display_name=str(row.get("display_name") or ""),
            status=cast(LinkStatus, status),  # checked against LINK_STATUSES above
            field_hashes=hashes,
            deactivated_by_connector=bool(row.get("deactivated_by_connector", False)),
        )


def links_from_rows(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Link]:
    """`State.rows("links")` -> {object id: Link}."""
    return {key: Link.from_row(key, row) for key, row in rows.items()}


def awaiting_link(links: Mapping[str, Link]) -> list[str]:
    """Object ids waiting for an administrator to paste them into ClearVox.

    A delta round does not revisit these users, so the caller checks ClearVox
    for them and passes their (cached) Graph users to `plan_users`, which then
    recognises the pasted link.
    """
    return sorted(link.object_id for link in links.values() if link.status == "unlinked")


# --------------------------------------------------------------------------- Entra user -> ClearVox fields


_EMAIL = re.compile(
    r"^(?=[^@]{1,64}@)(?!\.)(?!.*\.\.)[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+(?<!\.)"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})$"
)


def is_valid_email(text: str) -> bool:
    """A deliverable-looking address: local@domain.tld, at most 254 characters (ClearVox's limit)."""
    return len(text) <= 254 and _EMAIL.match(text) is not None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def is_guest(user: GraphUser) -> bool:
    return _text(user.get("userType")).lower() == "guest"


def is_disabled(user: GraphUser) -> bool:
    """Only an explicit false counts: a missing accountEnabled is not evidence of a disabled account."""
    return user.get("accountEnabled") is False


def ineligible_reason(user: GraphUser, options: UsersOptions) -> str | None:
    """Why this Entra user is not synced, or None when it is. Guest, then disabled, then email."""
    if is_guest(user) and not options.include_guests:
        return REASON_GUEST
    if is_disabled(user) and not options.include_disabled:
        return REASON_DISABLED
    mail = _text(user.get("mail"))
    if not mail:
        return REASON_NO_EMAIL
    if not is_valid_email(mail):
        return f"invalid email {mail!r} in Entra contact info"
    return None


def split_display_name(display_name: str) -> tuple[str, str]:
    """'Jan de Vries' -> ('Jan', 'de Vries'); 'Vries, Jan de' -> ('Jan de', 'Vries'); 'Receptie' -> ('Receptie', '').

    Splitting at the first space keeps Dutch prefixes (van, de, ter) with the last name.
    """
    name = " ".join(display_name.split())
    if "," in name:
        last, _, first = name.partition(",")
        if first.strip() and last.strip():
            return first.strip(), last.strip()
        name = (first or last).strip()
    first, _, last = name.partition(" ")
    return first, last


def names(user: GraphUser) -> tuple[str, str, str]:
    """(first, last, display) from givenName/surname, falling back to displayName, then to the mail's local part.

    ClearVox requires both names, so a one-word name is used for both.
    """
    display = " ".join(_text(user.get("displayName")).split())
    dn_first, dn_last = split_display_name(display)
    first = _text(user.get("givenName")) or dn_first
    last = _text(user.get("surname")) or dn_last
    if not first and not last:
        first = last = _text(user.get("mail")).partition("@")[0]
    first, last = first or last, last or first
    if not display:
        display = first if first == last else f"{first} {last}"
    return first, last, display


def language(preferred: Any) -> str | None:
    """'nl-NL' -> 'nl'; None for anything ClearVox does not know, meaning: leave ClearVox's value (default nl)."""
    primary = _text(preferred).replace("_", "-").partition("-")[0].lower()
    return primary if primary in LANGUAGES else None


def desired_fields(user: GraphUser, region: str = DEFAULT_REGION) -> tuple[dict[str, Any], list[str]]:
    """The ClearVox fields (keyed by USER_FIELDS) this Entra user should have, and warnings.

    A field that cannot be derived is left out rather than guessed: an
    unparseable phone number (warning) and an unknown language (ClearVox keeps
    its value). Empty optional fields are None, which clears them in ClearVox.
    """
    warnings: list[str] = []
    first, last, display = names(user)
    fields: dict[str, Any] = {
        "first_name": first,
        "last_name": last,
        "display_name": display,
        "email": _text(user.get("mail")),
    }
    phones = user.get("businessPhones") or []
    business = phones[0] if isinstance(phones, list | tuple) and phones else None
    for name, raw in (("phone_number", business), ("mobile_number", user.get("mobilePhone"))):
        text = _text(raw)
        if not text:
            fields[name] = None
            continue
        try:
            fields[name] = to_e164(text, region)
        except UnparseablePhone as exc:
            warnings.append(f"{name} left out: {exc}")
    fields["job_title"] = _text(user.get("jobTitle")) or None
    fields["department"] = _text(user.get("department")) or None
    lang = language(user.get("preferredLanguage"))
    if lang:
        fields["language"] = lang
    for name, limit in MAX_LENGTHS.items():
        value = fields.get(name)
        if isinstance(value, str) and len(value) > limit:
            fields[name] = value[:limit].rstrip()
            warnings.append(f"{name} cut to {limit} characters (ClearVox's maximum)")
    return {name: fields[name] for name in USER_FIELDS if name in fields}, warnings


def _norm(name: str, value: Any) -> Any:
    """Comparison form: empty means None, emails ignore case."""
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        if name == "email":
            return value.casefold()
    return value


def same_value(name: str, a: Any, b: Any) -> bool:
    return bool(_norm(name, a) == _norm(name, b))


def field_hash(name: str, value: Any) -> str:
    """Stable short hash of one field value (independent of process, platform and Python version)."""
    data = json.dumps([name, _norm(name, value)], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def field_hashes(fields: Mapping[str, Any]) -> dict[str, str]:
    return {name: field_hash(name, value) for name, value in fields.items()}


def _combine(hashes: Mapping[str, str]) -> str:
    data = "\n".join(f"{name}={h}" for name, h in sorted(hashes.items()))
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def fields_hash(fields: Mapping[str, Any]) -> str:
    """Stable hash of a fields dict; equals `Link.hash` of a row written with these fields."""
    return _combine(field_hashes(fields))


def _key(object_id: str) -> str:
    return object_id.strip().lower()


# --------------------------------------------------------------------------- plan items


@dataclass(frozen=True)
class Create:
    """Create a ClearVox user linked to this Entra user."""

    object_id: str
    fields: Mapping[str, Any]
    link: Link  # cv_user_id is filled in from the created user
    note: str = ""

    def payload(self) -> dict[str, Any]:
        """What create_user gets: the known fields plus the link; None fields are left to ClearVox's defaults."""
        body = {name: value for name, value in self.fields.items() if value is not None}
        body["external_application_id"] = self.object_id
        return body

    def result_link(self, cv_user_id: str) -> Link:
        return replace(self.link, cv_user_id=cv_user_id)


@dataclass(frozen=True)
class Update:
    """Send only `changes` (field -> new value) to a linked ClearVox user; `before` has the old values."""

    cv_user_id: str
    object_id: str
    changes: Mapping[str, Any]
    before: Mapping[str, Any]
    link: Link

    @property
    def reactivates(self) -> bool:
        return self.changes.get("active") is True

    def payload(self) -> dict[str, Any]:
        return dict(self.changes)

    def result_link(self, cv_user_id: str) -> Link:
        return replace(self.link, cv_user_id=cv_user_id)


@dataclass(frozen=True)
class LinkAction:
    """A new link: auto-link (set external_application_id) or a pasted Object-ID seen for the first time.

    The Entra values are sent in the same request. An empty payload means
    ClearVox already matches: only the row is written.
    """

    cv_user_id: str
    object_id: str
    email: str
    display_name: str
    set_external_id: bool
    changes: Mapping[str, Any]
    before: Mapping[str, Any]
    link: Link

    def payload(self) -> dict[str, Any]:
        body = dict(self.changes)
        if self.set_external_id:
            body["external_application_id"] = self.object_id
        return body

    def result_link(self, cv_user_id: str) -> Link:
        return replace(self.link, cv_user_id=cv_user_id)


@dataclass(frozen=True)
class Deactivate:
    """Set a linked ClearVox user inactive (never delete)."""

    cv_user_id: str
    object_id: str
    email: str
    display_name: str
    reason: str
    link: Link

    def payload(self) -> dict[str, Any]:
        return {"active": False}

    def result_link(self, cv_user_id: str) -> Link:
        return replace(self.link, cv_user_id=cv_user_id)


Action: TypeAlias = Create | Update | LinkAction | Deactivate


@dataclass(frozen=True)
class Skip:
    id: str
    reason: str
    name: str = ""  # "Display Name <mail>" when known, so a report reads without looking up Object-IDs


@dataclass(frozen=True)
class FieldWarning:
    """A field left out or cut; the user itself is still synced."""

    id: str
    reason: str


@dataclass(frozen=True)
class Unlinked:
    """An Entra user whose email a ClearVox user already has: the admin pastes `object_id` into that user."""

    cv_user_id: str
    email: str
    display_name: str
    object_id: str


@dataclass(frozen=True)
class Conflict:
    """Entra users that cannot be created or linked until a person resolves `reason`."""

    email: str
    object_ids: tuple[str, ...]
    reason: str
    cv_user_id: str | None = None


@dataclass
class UsersPlan:
    """Independent actions and what is only reported. Apply = for each action: call, then write its row."""

    full_round: bool
    creates: list[Create] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    link_actions: list[LinkAction] = field(default_factory=list)
    deactivations: list[Deactivate] = field(default_factory=list)
    held: list[Deactivate] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    unlinked: list[Unlinked] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    warnings: list[FieldWarning] = field(default_factory=list)
    rows: list[Link] = field(default_factory=list)  # written without a ClearVox call
    stale: list[str] = field(default_factory=list)  # object ids whose row is deleted
    unchanged: int = 0
    out_of_scope: int = 0

    def actions(self) -> list[Action]:
        """Every ClearVox write of the plan; they do not depend on each other, so any order or concurrency works."""
        return [*self.creates, *self.link_actions, *self.updates, *self.deactivations]

    @property
    def reactivated(self) -> int:
        return sum(1 for u in self.updates if u.reactivates)

    def to_json(self) -> dict[str, Any]:
        """The run report's pieces (ARCHITECTURE.md `--json` shape) plus the plan's details under "plan"."""
        return {
            "created": len(self.creates),
            "updated": len(self.updates),
            "linked": len(self.link_actions),
            "deactivated": len(self.deactivations),
            "unchanged": self.unchanged,
            "skipped": [{"id": s.id, "reason": s.reason} for s in self.skips],
            "failed": [],
            "warnings": [{"id": w.id, "reason": w.reason} for w in self.warnings],
            "unlinked": [
                {"cv_user_id": u.cv_user_id, "email": u.email, "display_name": u.display_name, "object_id": u.object_id}
                for u in self.unlinked
            ],
            "conflicts": [
                {"email": c.email, "object_ids": list(c.object_ids), "reason": c.reason, "cv_user_id": c.cv_user_id}
                for c in self.conflicts
            ],
            "out_of_scope": self.out_of_scope,
            "plan": {
                "full_round": self.full_round,
                "create": [{"object_id": c.object_id, "fields": dict(c.fields)} for c in self.creates],
                "update": [
                    {"cv_user_id": u.cv_user_id, "object_id": u.object_id, "changes": _diff_json(u.before, u.changes)}
                    for u in self.updates
                ],
                "link": [
                    {"cv_user_id": a.cv_user_id, "object_id": a.object_id, "email": a.email,
                     "set_external_id": a.set_external_id, "changes": _diff_json(a.before, a.changes)}
                    for a in self.link_actions
                ],
                "deactivate": [_deactivation_json(d) for d in self.deactivations],
                "held": [_deactivation_json(d) for d in self.held],
            },
        }


def _diff_json(before: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"old": before.get(name), "new": value} for name, value in changes.items()}


def _deactivation_json(d: Deactivate) -> dict[str, Any]:
    return {"cv_user_id": d.cv_user_id, "object_id": d.object_id, "email": d.email, "reason": d.reason}


# --------------------------------------------------------------------------- what the caller must look up


@dataclass(frozen=True)
class CvLookups:
    """The ClearVox users a delta round's plan needs to see (a full round passes all users instead)."""

    emails: frozenset[str]
    external_ids: frozenset[str]
    user_ids: frozenset[str]


def cv_lookups(graph_users: Sequence[GraphUser], removed_ids: Sequence[str], links: Mapping[str, Link]) -> CvLookups:
    """By email (new users), by external id (links, pasted ones included) and by id (linked rows)."""
    ids = {_key(str(u["id"])) for u in graph_users if u.get("id")} | {_key(i) for i in removed_ids}
    by_key = {_key(k): v for k, v in links.items()}
    emails = {_text(u.get("mail")).casefold() for u in graph_users if _text(u.get("mail"))}
    user_ids = {link.cv_user_id for i in ids if (link := by_key.get(i)) is not None and link.cv_user_id}
    return CvLookups(frozenset(emails), frozenset(ids), frozenset(user_ids))


# --------------------------------------------------------------------------- the plan


def plan_users(
    graph_users: Sequence[GraphUser],
    removed_ids: Sequence[str],
    cv_users: Sequence[CvUser],
    links: Mapping[str, Link],
    options: UsersOptions,
    *,
    full_round: bool,
    gone_cv_ids: Iterable[str] = (),
) -> UsersPlan:
    """Decide what to do; no I/O.

    graph_users: full user dicts (a delta round's partial items merged with the
    cached copy), plus, in a delta round, the cached users waiting for a
    manual link (`awaiting_link`). An item carrying "@removed" counts as removed.
    removed_ids: object ids Graph reported as removed. A user both listed and
    removed counts as present (the less destructive reading; the next full
    round corrects it).
    cv_users: all ClearVox users in a full round; in a delta round at least
    those of `cv_lookups`. In a full round a linked ClearVox user that is not
    among them counts as gone; a delta round trusts the links row instead.
    full_round: linked users absent from the round count as removed, and
    unlinked/conflict rows of absent users are dropped.
    gone_cv_ids: ClearVox user ids a delta round looked up and did not find
    (deleted in ClearVox). Without it, a delta round trusts the links row of a
    ClearVox user it did not see; with it, that user counts as gone, as in a
    full round.
    """
    return _Planner(graph_users, removed_ids, cv_users, links, options, full_round, gone_cv_ids).plan()


class _Planner:
    def __init__(
        self,
        graph_users: Sequence[GraphUser],
        removed_ids: Sequence[str],
        cv_users: Sequence[CvUser],
        links: Mapping[str, Link],
        options: UsersOptions,
        full_round: bool,
        gone_cv_ids: Iterable[str] = (),
    ) -> None:
        self.options = options
        self.full_round = full_round
        self.gone_cv_ids = frozenset(gone_cv_ids)
        self.pending_warnings: list[str] = []
        self.out = UsersPlan(full_round=full_round)
        self.users: dict[str, GraphUser] = {}
        removed: dict[str, str] = {}
        for user in graph_users:
            oid = _text(user.get("id"))
            if not oid:
                continue
            if "@removed" in user:
                removed.setdefault(_key(oid), oid)
            else:
                self.users.pop(_key(oid), None)  # re-insert: the last copy wins, at its last position
                self.users[_key(oid)] = user
        for oid in removed_ids:
            removed.setdefault(_key(oid), oid)
        self.removed = {k: v for k, v in removed.items() if k not in self.users}
        self.links = {_key(k): v for k, v in links.items()}
        self.cv_by_id = {u.id: u for u in cv_users}
        self.cv_by_ext: dict[str, list[CvUser]] = {}
        self.cv_by_email: dict[str, list[CvUser]] = {}
        for u in cv_users:
            if u.external_application_id and u.external_application_id.strip():
                self.cv_by_ext.setdefault(_key(u.external_application_id), []).append(u)
            if u.email and u.email.strip():
                self.cv_by_email.setdefault(u.email.strip().casefold(), []).append(u)

    # ---- entry

    def plan(self) -> UsersPlan:
        candidates: list[tuple[str, GraphUser]] = []
        for key, user in self.users.items():
            oid = _text(user.get("id"))
            members = self.options.users_group_members
            if members is not None and key not in members:
                self._out_of_group(key, oid)
                continue
            reason = ineligible_reason(user, self.options)
            if reason == REASON_DISABLED and self._linked_target(key, require_row=False) is not None:
                self._removed(key, oid, WHY_DISABLED, require_row=False)
            elif reason:
                self._ineligible(key, oid, reason)
            else:
                candidates.append((key, user))
        duplicates = self._duplicates(candidates)
        for key, user in candidates:
            self._eligible(key, user, duplicates.get(_text(user.get("mail")).casefold()))
        for key, oid in self.removed.items():
            self._removed(key, oid, WHY_DELETED, require_row=False)
        if self.full_round:
            self._absent()
        self._hold_deactivations()
        self.out.stale = sorted(set(self.out.stale))
        return self.out

    # ---- helpers

    def _skip(self, item_id: str, reason: str) -> None:
        self.out.skips.append(Skip(item_id, reason, self._name(item_id)))

    def _name(self, item_id: str) -> str:
        user = self.users.get(_key(item_id))
        link = self.links.get(_key(item_id))
        display = _text(user.get("displayName")) if user else (link.display_name if link else "")
        mail = _text(user.get("mail")) if user else (link.email if link else "")
        return f"{display} <{mail}>" if display and mail else display or mail

    def _row(self, key: str, link: Link) -> None:
        """Write `link` unless the table already holds exactly that."""
        if self.links.get(key) != link:
            self.out.rows.append(link)

    def _warn(self, oid: str) -> None:
        """Field warnings count only for users whose fields are written (not for skipped ones)."""
        self.out.warnings.extend(FieldWarning(oid, w) for w in self.pending_warnings)
        self.pending_warnings = []

    def _drop_waiting_row(self, key: str) -> None:
        """An unlinked/conflict row no longer applies (user gone, ineligible or out of scope)."""
        link = self.links.get(key)
        if link is not None and link.status in ("unlinked", "conflict"):
            self.out.stale.append(link.object_id)

    def _linked_target(self, key: str, *, require_row: bool) -> CvUser | Link | None:
        """The ClearVox user linked to this object id, or the row to act on when ClearVox was not consulted.

        ClearVox decides: a ClearVox user carrying the object id. With
        require_row only a link the connector recorded counts (a pasted id
        with a typo must not lead to a deactivation). A row whose ClearVox user
        is gone or carries another id is stale.
        """
        link = self.links.get(key)
        matches = self.cv_by_ext.get(key, [])
        if len(matches) == 1:
            cv = matches[0]
            if require_row and not (link is not None and link.is_linked and link.cv_user_id == cv.id):
                return None
            return cv
        if matches:
            return None  # ambiguous paste, reported by the caller
        if link is None or not link.is_linked or link.cv_user_id is None:
            return None
        if link.cv_user_id in self.cv_by_id or self.full_round or link.cv_user_id in self.gone_cv_ids:
            return None  # the ClearVox user now carries another id, or no longer exists
        return link  # delta round, ClearVox user not looked up: trust the row

    # ---- cases

    def _out_of_group(self, key: str, oid: str) -> None:
        if self._linked_target(key, require_row=True) is not None:
            self._removed(key, oid, WHY_LEFT_GROUP, require_row=True)
        else:
            self.out.out_of_scope += 1
            self._drop_waiting_row(key)

    def _ineligible(self, key: str, oid: str, reason: str) -> None:
        target = self._linked_target(key, require_row=False)
        if isinstance(target, CvUser):
            reason += f"; linked ClearVox user {target.id} is not updated"
        self._skip(oid, reason)
        self._drop_waiting_row(key)

    def _ambiguous(self, key: str, oid: str, email: str) -> bool:
        matches = self.cv_by_ext.get(key, [])
        if len(matches) < 2:
            return False
        ids = ", ".join(sorted(u.id for u in matches))
        reason = f"Object-ID {oid} is pasted into several ClearVox users ({ids}); keep it in one"
        self._skip(oid, reason)
        self.out.conflicts.append(Conflict(email, (oid,), reason))
        return True

    def _duplicates(self, candidates: Sequence[tuple[str, GraphUser]]) -> dict[str, list[str]]:
        """Email (casefolded) -> object ids of all Entra users having it, for emails used more than once.

        A delta round sees only some users, so the emails the links table
        remembers for users not in this round count too.
        """
        owners: dict[str, list[str]] = {}
        for _, user in candidates:
            owners.setdefault(_text(user.get("mail")).casefold(), []).append(_text(user.get("id")))
        if not self.full_round:
            for key, link in sorted(self.links.items()):
                if key in self.users or key in self.removed or not link.email:
                    continue
                if link.status in ("linked", "unlinked", "conflict"):
                    owners.setdefault(link.email.casefold(), []).append(link.object_id)
        return {email: ids for email, ids in owners.items() if len(ids) > 1}

    def _eligible(self, key: str, user: GraphUser, duplicate_of: list[str] | None) -> None:
        oid = _text(user.get("id"))
        fields, self.pending_warnings = desired_fields(user, self.options.default_region)
        email = fields["email"]
        if self._ambiguous(key, oid, email):
            return
        if duplicate_of and not any(c.email.casefold() == email.casefold() for c in self.out.conflicts):
            others = ", ".join(sorted(duplicate_of))
            self.out.conflicts.append(Conflict(
                email, tuple(sorted(duplicate_of)),
                f"{len(duplicate_of)} Entra users have mail {email} ({others}); none is created until one has it"))
        matches = self.cv_by_ext.get(key, [])
        if matches:
            self._sync_linked(key, oid, fields, matches[0])
            return
        unseen = self._linked_target(key, require_row=False)
        if isinstance(unseen, Link):
            # Delta round and the linked ClearVox user was not among those looked up: creating could duplicate it.
            self._skip(oid, f"linked ClearVox user {unseen.cv_user_id} was not found in this run; "
                            "the next full round decides")
            return
        if duplicate_of:
            others = ", ".join(sorted(i for i in duplicate_of if _key(i) != key))
            self._skip(oid, f"conflict: mail {email} is also the mail of Entra user {others}; not created")
            self._row(key, Link(oid, None, email, fields["display_name"], "conflict"))
            return
        owners = self.cv_by_email.get(email.casefold(), [])
        if owners:
            self._existing_email(key, oid, fields, owners[0])
        else:
            self._create(key, oid, fields)

    def _create(self, key: str, oid: str, fields: dict[str, Any]) -> None:
        link = self.links.get(key)
        note = ""
        if link is not None and link.is_linked:
            note = (f"ClearVox user {link.cv_user_id} it was linked to no longer exists "
                    "or no longer carries this Object-ID")
        row = Link(oid, None, fields["email"], fields["display_name"], "linked", field_hashes(fields))
        self._warn(oid)
        self.out.creates.append(Create(oid, fields, row, note))

    def _existing_email(self, key: str, oid: str, fields: dict[str, Any], cv: CvUser) -> None:
        email, display = fields["email"], fields["display_name"]
        other = (cv.external_application_id or "").strip()
        if other:
            reason = (f"exists in ClearVox as user {cv.id}, which is linked to another Object-ID ({other}); "
                      "not linked")
            self._skip(oid, reason)
            self.out.conflicts.append(Conflict(email, (oid,), reason, cv.id))
            self._row(key, Link(oid, cv.id, email, display, "conflict"))
        elif self.options.auto_link:
            changes, before, hashes, _ = self._diff(fields, cv, {})
            row = Link(oid, cv.id, email, display, "linked", hashes)
            self._warn(oid)
            self.out.link_actions.append(LinkAction(cv.id, oid, email, display, True, changes, before, row))
        else:
            self._skip(oid, exists_reason(oid))
            self.out.unlinked.append(Unlinked(cv.id, cv.email, display, oid))
            self._row(key, Link(oid, cv.id, email, display, "unlinked"))

    def _diff(
        self, fields: Mapping[str, Any], cv: CvUser, written: Mapping[str, str],
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], list[str]]:
        """(changes, before, hashes to record, held-back fields) for a linked ClearVox user.

        A field is sent when Entra moved away from what was last written
        (`written`; empty = everything) and ClearVox differs. A field left out
        keeps its old hash, and so does an email another ClearVox user already
        has (sending it would fail; it is retried on a later run).
        """
        changes: dict[str, Any] = {}
        before: dict[str, Any] = {}
        held: list[str] = []
        for name, value in fields.items():
            if written.get(name) == field_hash(name, value):
                continue
            current = getattr(cv, name)
            if same_value(name, current, value):
                continue
            if name == "email" and any(u.id != cv.id for u in self.cv_by_email.get(str(value).casefold(), [])):
                held.append(name)
                continue
            changes[name] = value
            before[name] = current
        hashes = dict(written)
        hashes.update({name: h for name, h in field_hashes(fields).items() if name not in held})
        return changes, before, hashes, held

    def _sync_linked(self, key: str, oid: str, fields: dict[str, Any], cv: CvUser) -> None:
        link = self.links.get(key)
        known = link is not None and link.is_linked and link.cv_user_id == cv.id
        written = link.field_hashes if known and link is not None else {}
        changes, before, hashes, held = self._diff(fields, cv, written)
        self._warn(oid)
        for name in held:
            self.out.warnings.append(FieldWarning(
                oid, f"{name} not changed to {fields[name]}: another ClearVox user has that email"))
        by_connector = known and link is not None and link.deactivated_by_connector
        if not cv.active and by_connector:
            changes["active"] = True  # the connector deactivated it; the Entra user is back
            before["active"] = False
            by_connector = False
        email = cv.email if "email" in held else fields["email"]
        row = Link(oid, cv.id, email, fields["display_name"], "linked", hashes, by_connector)
        if not known:
            self.out.link_actions.append(
                LinkAction(cv.id, oid, email, fields["display_name"], False, changes, before, row))
        elif changes:
            self.out.updates.append(Update(cv.id, oid, changes, before, row))
        else:
            self.out.unchanged += 1
            self._row(key, row)

    def _removed(self, key: str, oid: str, why: str, *, require_row: bool) -> None:
        link = self.links.get(key)
        if self._ambiguous(key, oid, link.email if link else ""):
            return
        target = self._linked_target(key, require_row=require_row)
        if target is None:
            if link is not None and (link.status in ("unlinked", "conflict") or link.is_linked):
                self.out.stale.append(link.object_id)  # waiting row, or the linked ClearVox user is gone
            return
        if isinstance(target, CvUser):
            cv_id, email, display, active = target.id, target.email, target.display_name or "", target.active
        else:
            cv_id, email, display, active = str(target.cv_user_id), target.email, target.display_name, True
        display = (link.display_name if link else "") or display or email
        if link is not None and link.status == "deactivated":
            return  # handled already; if someone reactivated it in ClearVox, that choice stands
        hashes = link.field_hashes if link is not None and link.cv_user_id == cv_id else {}
        if not active:
            # Inactive already, not by this connector: remember that it must not be reactivated by it either.
            self._row(key, Link(oid, cv_id, email, display, "deactivated", hashes, False))
            return
        if self.options.on_removed == "report":
            self._skip(oid, f"{why}; ClearVox user {cv_id} <{email}> left active (on_removed=report)")
            return
        row = Link(oid, cv_id, email, display, "deactivated", hashes, True)
        self.out.deactivations.append(Deactivate(cv_id, oid, email, display, why, row))

    def _absent(self) -> None:
        """Full round: rows and pasted ids of users Entra no longer lists."""
        for key, link in sorted(self.links.items()):
            if key in self.users or key in self.removed:
                continue
            if link.status == "linked":
                self._removed(key, link.object_id, WHY_ABSENT, require_row=True)
            elif link.status == "deactivated":
                if self._linked_target(key, require_row=False) is None:
                    self.out.stale.append(link.object_id)
            else:
                self.out.stale.append(link.object_id)
        for ext, cv_users in sorted(self.cv_by_ext.items()):
            if ext in self.users or ext in self.removed or ext in self.links:
                continue
            for cv in cv_users:
                self._skip(cv.id, (f"ClearVox user {cv.id} <{cv.email}> has Extern toepassing ID "
                                   f"{cv.external_application_id}, which matches no Entra user: check for a typo"))

    def _hold_deactivations(self) -> None:
        plan, limit = self.out, self.options.max_deactivations
        if len(plan.deactivations) <= limit or self.options.confirm_deactivations:
            return
        n = len(plan.deactivations)
        plan.held, plan.deactivations = plan.deactivations, []
        for d in plan.held:
            self._skip(d.object_id, (f"{d.reason}; deactivation of ClearVox user {d.cv_user_id} held: {n} "
                                     f"deactivations exceed max_deactivations={limit}; confirm to let them through"))


# --------------------------------------------------------------------------- --dry-run text


def _show(value: Any) -> str:
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def render_plan(plan: UsersPlan) -> str:
    """The plan as an administrator reads it: what would be created, changed, linked and deactivated, and why not."""
    kind = "full round" if plan.full_round else "changes since the last run"
    lines = [
        f"Users plan ({kind}): {len(plan.creates)} to create, {len(plan.updates)} to update, "
        f"{len(plan.link_actions)} to link, {len(plan.deactivations)} to deactivate"
        + (f" ({len(plan.held)} held)" if plan.held else "")
        + f", {plan.unchanged} unchanged, {len(plan.skips)} skipped"
        + (f", {plan.out_of_scope} outside the users group" if plan.out_of_scope else ""),
    ]

    def section(title: str, body: list[str]) -> None:
        if body:
            lines.extend(["", title, *body])

    create_lines: list[str] = []
    for c in plan.creates:
        create_lines.append(f"  + {c.fields.get('display_name')} <{c.fields.get('email')}>  Object-ID {c.object_id}")
        create_lines.extend(f"      {name}: {_show(value)}" for name, value in c.fields.items())
        if c.note:
            create_lines.append(f"      note: {c.note}")
    section("Create:", create_lines)

    update_lines: list[str] = []
    for u in plan.updates:
        update_lines.append(f"  ~ ClearVox user {u.cv_user_id} <{u.link.email}>  Object-ID {u.object_id}")
        update_lines.extend(f"      {name}: {_show(u.before.get(name))} -> {_show(new)}" for name, new in u.changes.items())
    section("Update:", update_lines)

    link_lines: list[str] = []
    for a in plan.link_actions:
        how = "set Extern toepassing ID" if a.set_external_id else "Object-ID pasted in ClearVox"
        link_lines.append(f"  = ClearVox user {a.cv_user_id} <{a.email}> <- Object-ID {a.object_id} ({how})")
        link_lines.extend(f"      {name}: {_show(a.before.get(name))} -> {_show(new)}" for name, new in a.changes.items())
    section("Link:", link_lines)

    section("Deactivate:", [f"  - ClearVox user {d.cv_user_id} <{d.email}>  Object-ID {d.object_id}: {d.reason}"
                            for d in plan.deactivations])
    section("Deactivations held (more than max_deactivations; confirm to let them through):",
            [f"  ! ClearVox user {d.cv_user_id} <{d.email}>  Object-ID {d.object_id}: {d.reason}" for d in plan.held])
    section("Skipped:", [f"  {s.id}: {s.reason}" for s in plan.skips])
    section('Unlinked (paste the Object-ID into "Extern toepassing ID" of the ClearVox user):',
            [f"  ClearVox user {u.cv_user_id}  {u.email}  {u.display_name}  Object-ID {u.object_id}"
             for u in plan.unlinked])
    section("Conflicts:", [f"  {c.email}: {c.reason}" for c in plan.conflicts])
    section("Warnings:", [f"  {w.id}: {w.reason}" for w in plan.warnings])
    return "\n".join(lines) + "\n"


def explain_user(
    user: GraphUser | None, object_id: str, plan: UsersPlan, cv_users: Sequence[CvUser], links: Mapping[str, Link],
    options: UsersOptions,
) -> list[str]:
    """Every decision about one user in words (`sync users --user`): eligible or why not, linked or matched, fields."""
    key = _key(object_id)
    link = {_key(k): v for k, v in links.items()}.get(key)
    lines: list[str] = []
    mail = _text(user.get("mail")) if user is not None else (link.email if link else "")
    if user is None:
        known = f"; the connector knew it as {link.display_name} <{link.email}>" if link else ""
        lines.append(f"Entra: no user with Object-ID {object_id} (deleted){known}")
    else:
        enabled = "disabled" if is_disabled(user) else "enabled"
        kind = "guest" if is_guest(user) else "member"
        lines.append(f"Entra: {_text(user.get('displayName')) or '(no display name)'} <{mail or 'no mail'}>, "
                     f"Object-ID {object_id}, sign-in name {_text(user.get('userPrincipalName')) or '-'}, {kind}, {enabled}")
        members = options.users_group_members
        if members is not None:
            lines.append("Users group: a (transitive) member" if key in members
                         else "Users group: not a member, so outside the sync's scope")
        reason = ineligible_reason(user, options)
        lines.append("Eligible: yes (member user, enabled, valid email in Entra contact info)" if reason is None
                     else f"Eligible: no - {reason}")
    by_ext = [u for u in cv_users if _key(u.external_application_id or "") == key]
    by_email = [u for u in cv_users if mail and u.email.strip().casefold() == mail.casefold() and u not in by_ext]
    for cv in by_ext:
        state = "" if cv.active else " (inactive)"
        lines.append(f"ClearVox: linked - user {cv.id} <{cv.email}>{state} has this Object-ID in Extern toepassing ID")
    for cv in by_email:
        ext = (cv.external_application_id or "").strip()
        has = f"another Object-ID ({ext})" if ext else "no Object-ID"
        lines.append(f"ClearVox: matched by email - user {cv.id} <{cv.email}> has this email and {has} "
                     "in Extern toepassing ID")
    if not by_ext and not by_email:
        lines.append("ClearVox: no user has this Object-ID" + (" or this email" if mail else ""))
    if link is not None:
        lines.append(f"Links table: {link.status}" + (f", ClearVox user {link.cv_user_id}" if link.cv_user_id else ""))
    decided = False
    for c in plan.creates:
        if _key(c.object_id) == key:
            decided = True
            lines.append("Decision: create a ClearVox user with Extern toepassing ID = Object-ID; fields:")
            lines.extend(f"  {name}: {_show(value)}" for name, value in c.fields.items())
            if c.note:
                lines.append(f"  note: {c.note}")
    for u in plan.updates:
        if _key(u.object_id) == key:
            decided = True
            lines.append(f"Decision: update ClearVox user {u.cv_user_id}; fields changed:")
            lines.extend(f"  {name}: {_show(u.before.get(name))} -> {_show(new)}" for name, new in u.changes.items())
    for a in plan.link_actions:
        if _key(a.object_id) == key:
            decided = True
            how = "set its Extern toepassing ID (auto_link)" if a.set_external_id else "the Object-ID was pasted in ClearVox"
            lines.append(f"Decision: link ClearVox user {a.cv_user_id} ({how}); "
                         + ("fields changed:" if a.changes else "no field differs"))
            lines.extend(f"  {name}: {_show(a.before.get(name))} -> {_show(new)}" for name, new in a.changes.items())
    for d in plan.deactivations:
        if _key(d.object_id) == key:
            decided = True
            lines.append(f"Decision: deactivate ClearVox user {d.cv_user_id} ({d.reason}); it is never deleted")
    for s in plan.skips:
        if _key(s.id) == key:
            decided = True
            lines.append(f"Decision: skip - {s.reason}")
    for conflict in plan.conflicts:
        if key in {_key(o) for o in conflict.object_ids}:
            lines.append(f"Conflict: {conflict.reason}")
    for w in plan.warnings:
        if _key(w.id) == key:
            lines.append(f"Warning: {w.reason}")
    if not decided:
        if plan.out_of_scope:
            lines.append("Decision: nothing to do - not in the users group and never linked by the connector")
        elif plan.unchanged:
            lines.append("Decision: nothing to do - no field changed in Entra since it was last written")
        else:
            lines.append("Decision: nothing to do")
    return lines


# --------------------------------------------------------------------------- running the sync (I/O)

CURSOR = "users"
CACHE_TABLE = "entrausers"  # last seen Graph user per object id; the users group's members in partition "group"
MEMBERS_SCOPE = "group"
RETRY_SCOPE = "users"
GROUP_PERMISSION = "GroupMember.Read.All"
CSV_COLUMNS = ("clearvox_user_id", "email", "entra_display_name", "object_id")
_SELECT = ",".join(GRAPH_SELECT)
# Changed users carry only their changed properties (smaller pages); the cache supplies the rest.
_MINIMAL = {"Prefer": "return=minimal"}
_FLUSH = 100  # rows per Table Storage transaction (its maximum)
_FEW = 200  # up to this many cache rows are read one by one, more as one partition query
# Failures that no other item would survive: stop applying, keep what succeeded, leave the cursor.
_RUN_LEVEL = (ClearVoxUnavailable, ClearVoxUnauthorized, ClearVoxForbidden, LicenseRequired, AccountNotFound)


def run_users(ctx: SyncContext) -> None:
    """The users sync's entry point (runner.run("users", ...)); `--user` syncs one user and explains it."""
    who = str(ctx.args.get("user") or "").strip()
    if who:
        _OneUser(ctx, who).run()
    else:
        _UsersRun(ctx).run()


def _strip(item: Mapping[str, Any]) -> dict[str, Any]:
    """A Graph user without OData annotations (kept: @removed)."""
    return {k: v for k, v in item.items() if not k.startswith("@odata")}


def _by_key(items: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Items by lower-cased object id. A round may list a user more than once, each time with some
    properties: the copies are merged, the later value of a property winning."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        oid = _text(item.get("id"))
        if oid:
            out[_key(oid)] = {**out.pop(_key(oid), {}), **_strip(item)}
    return out


def _dump(user: Mapping[str, Any]) -> str:
    return json.dumps(user, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


# ---- Graph


@dataclass
class GraphRound:
    """One users delta round: complete (`full`) or the changes since the stored deltaLink."""

    full: bool
    reason: str  # why it is a full round
    items: dict[str, dict[str, Any]]
    removed: dict[str, str]  # key -> object id
    delta_link: str


def full_round_reason(cursor: Mapping[str, Any] | None, options: Options, now: datetime) -> str:
    """Why this run must be a full round ("" when the stored deltaLink can be used)."""
    if not cursor or not cursor.get("delta_link"):
        return "first run"
    if str(cursor.get("group") or "") != (options.users_group or ""):
        return "the users group setting changed"
    if str(cursor.get("select") or "") != _SELECT:
        return "the selected properties changed"
    full_at = cursor.get("full_at")
    if not isinstance(full_at, datetime):
        return "no full round recorded"
    if now - full_at >= timedelta(hours=options.full_sync_hours):
        return f"full reconcile (every {options.full_sync_hours} hours)"
    return ""


def graph_round(graph: Graph, cursor: Mapping[str, Any] | None, options: Options, now: datetime) -> GraphRound:
    """Resume from the stored deltaLink, or a full round when one is due or the token expired."""
    reason = full_round_reason(cursor, options, now)
    if not reason and cursor is not None:
        try:
            rnd = graph.delta(str(cursor["delta_link"]), headers=_MINIMAL)
        except DeltaExpired:
            reason = "the stored delta token expired"
        else:
            return GraphRound(False, "", _by_key(rnd.items), _removed_ids(rnd.removed), rnd.delta_link)
    rnd = graph.delta("/users/delta", params={"$select": _SELECT}, headers=_MINIMAL)
    return GraphRound(True, reason, _by_key(rnd.items), _removed_ids(rnd.removed), rnd.delta_link)


def _removed_ids(items: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {_key(oid): oid for item in items if (oid := _text(item.get("id")))}


def group_members(graph: Graph, group_id: str, client_id: str) -> frozenset[str]:
    """Object ids (lower-case) of the group's transitive user members."""
    path = f"/groups/{quote(group_id, safe='')}/transitiveMembers/microsoft.graph.user"
    try:
        return frozenset(_key(str(m["id"])) for m in graph.iter_items(
            path, params={"$select": "id", "$top": "999", "$count": "true"}, headers={"ConsistencyLevel": "eventual"})
            if m.get("id"))
    except ConsentError:
        raise ConsentError(
            f"Microsoft Graph denied the members of NEXXT365_USERS_GROUP {group_id}: reading a group's members needs the "
            f"{GROUP_PERMISSION} application permission (User.Read.All does not cover it). Fix: "
            f"{CONSENT_STEP.format(app=client_id, perm=GROUP_PERMISSION)}; or clear NEXXT365_USERS_GROUP.",
            permission=GROUP_PERMISSION) from None
    except GraphError as exc:
        if exc.status == 404:
            raise ConfigError(f"NEXXT365_USERS_GROUP {group_id} is not a group in this tenant: copy the Object ID from "
                              "Entra ID > Groups > the group > Overview.") from None
        raise


def fetch_users(graph: Graph, object_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """Whole Graph users by $batch (20 per request); None for a user Graph no longer has."""
    reqs = [BatchRequest(_key(oid), "GET", f"/users/{quote(oid, safe='')}?$select={_SELECT}")
            for oid in dict.fromkeys(object_ids)]
    out: dict[str, dict[str, Any] | None] = {}
    if not reqs:
        return out
    for key, resp in graph.batch(reqs).items():
        if resp.status == 200 and isinstance(resp.body, dict):
            out[key] = _strip(resp.body)
        elif resp.status == 404:
            out[key] = None
        else:
            raise graph.error_for(resp.status, resp.body, f"/users/{key}")
    return out


def find_graph_users(graph: Graph, who: str) -> list[dict[str, Any]]:
    """The Entra user(s) meant by an object id, an email (mail) or a sign-in name."""
    who = who.strip()
    if "@" not in who:
        try:
            return [_strip(graph.get(f"/users/{quote(who, safe='')}", params={"$select": _SELECT}))]
        except GraphError as exc:
            if exc.status in (400, 404):
                return []
            raise
    literal = who.replace("'", "''")
    for prop in ("mail", "userPrincipalName"):
        found = [_strip(u) for u in graph.iter_items("/users", params={"$filter": f"{prop} eq '{literal}'",
                                                                      "$select": _SELECT})]
        if found:
            return found
    return []


# ---- state


def load_cache(state: State, keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Last seen Graph users by key: all of them (keys None), or those asked for."""
    wanted = None if keys is None else sorted(set(keys))
    if wanted is None or len(wanted) > _FEW:
        rows = state.rows(CACHE_TABLE)
        keep = None if wanted is None else set(wanted)
        pairs = [(k, r) for k, r in rows.items() if keep is None or k in keep]
    else:
        got = _parallel(lambda k: (k, state.get(CACHE_TABLE, k)), wanted, 8)
        pairs = [(k, r) for k, r in got if r is not None]
    out: dict[str, dict[str, Any]] = {}
    for key, row in pairs:
        try:
            user = json.loads(str(row.get("user") or ""))
        except ValueError:
            continue  # a damaged row reads as "not cached"
        if isinstance(user, dict):
            out[key] = user
    return out


class _Background:
    """Run state writes while ClearVox is busy; `join` re-raises what failed."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self.error: BaseException | None = None

        def target() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to join()
                self.error = exc

        self.thread = threading.Thread(target=target, name="users-state", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


# ---- ClearVox reads


class CvLookup:
    """Concurrent ClearVox reads for a delta round; gathers users found and linked ids found missing."""

    def __init__(self, cv: ClearVox, concurrency: int) -> None:
        self.cv = cv
        self.concurrency = concurrency
        self.found: dict[str, CvUser] = {}
        self.gone: set[str] = set()
        self.results: dict[tuple[str, str], list[CvUser]] = {}

    def _one(self, job: tuple[str, str]) -> list[CvUser]:
        kind, value = job
        if kind == "id":
            try:
                return [self.cv.get_user(value)]
            except AccountNotFound:
                raise
            except ClearVoxNotFound:
                return []
        if kind == "ext":
            return list(self.cv.iter_users(external_application_id=value))
        return [u for u in self.cv.iter_users(email=value) if u.email.strip().casefold() == value]

    def run(self, jobs: Iterable[tuple[str, str]]) -> None:
        todo = sorted(set(jobs) - set(self.results))
        for job, users in zip(todo, _parallel(self._one, todo, self.concurrency), strict=True):
            self.results[job] = users
            self.found.update((u.id, u) for u in users)

    def for_users(self, users: Mapping[str, GraphUser | None], links: Mapping[str, Link]) -> None:
        """What the plan needs to see for these users (None: removed in Entra).

        A user with a links row is read by its ClearVox id (one request); only
        when that ClearVox user is gone or carries another Object-ID, or the
        Entra email changed, do the look-ups by Object-ID and by email follow.
        A user still waiting for a link therefore costs one read per run; an
        Object-ID pasted into some other ClearVox user than the one with the
        same email is found by the next full round.
        """
        rows = {_key(k): v for k, v in links.items()}

        def by_id_and_email(key: str, user: GraphUser | None) -> set[tuple[str, str]]:
            mail = _text(user.get("mail")).casefold() if user is not None else ""
            return {("ext", key)} | ({("email", mail)} if mail else set())

        first: dict[str, tuple[str, str]] = {}
        jobs: set[tuple[str, str]] = set()
        for key, user in users.items():
            link = rows.get(key)
            if link is not None and link.cv_user_id:
                first[key] = ("id", link.cv_user_id)
                jobs.add(first[key])
            else:
                jobs |= by_id_and_email(key, user)
        self.run(jobs)
        second: set[tuple[str, str]] = set()
        for key, job in first.items():
            user = users[key]
            got = self.results[job]
            mail = _text(user.get("mail")).casefold() if user is not None else ""
            if not got:
                self.gone.add(job[1])
                second |= by_id_and_email(key, user)
                continue
            ext = _key(got[0].external_application_id or "")
            waiting = rows[key].status == "unlinked" and not ext and (not mail or mail == got[0].email.casefold())
            if ext != key and not waiting:  # the Object-ID moved (or was pasted elsewhere): find where
                second |= by_id_and_email(key, user)
            elif mail and mail != got[0].email.casefold():
                second.add(("email", mail))
        self.run(second)


# ---- apply


@dataclass
class _Done:
    """The outcome of one action: `link` on success, `error` on failure, `replan` after email_taken."""

    action: Action
    link: Link | None = None
    error: ClearVoxError | None = None
    attempted: bool = True
    replan: UsersPlan | None = None


def _verb(action: Action) -> str:
    if isinstance(action, Create):
        return "create"
    if isinstance(action, Update):
        return "reactivation" if action.reactivates else "update"
    if isinstance(action, LinkAction):
        return "link"
    return "deactivation"


class Applier:
    """Runs a plan's actions against ClearVox concurrently and records each outcome as it arrives.

    Item failures are reported and remembered in `failed` (the run goes on);
    a run-level failure (`_RUN_LEVEL`) stops new work and is kept in `fatal`
    for the caller to raise once the successes are stored.
    """

    def __init__(self, ctx: SyncContext, links: Mapping[str, Link], options: UsersOptions,
                 users: Mapping[str, GraphUser], gone: Iterable[str] = ()) -> None:
        self.ctx = ctx
        self.cv = ctx.clearvox
        self.links = links
        self.options = options
        self.users = users
        self.gone = frozenset(gone)  # linked ClearVox ids known to be deleted, for plans made again
        self.stop = threading.Event()
        self.fatal: ClearVoxError | None = None
        self.failed: dict[str, str] = {}
        self.outcomes: dict[str, list[str]] = {}
        self.replans: list[UsersPlan] = []
        self._rows: dict[str, dict[str, Any]] = {}

    def apply(self, plan: UsersPlan) -> None:
        actions = plan.actions()
        if actions:
            workers = max(1, min(self.ctx.options.clearvox_concurrency, len(actions)))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(self._one, a) for a in actions]
                for future in as_completed(futures):
                    for done in future.result():
                        self._record(done)
        self._flush(force=True)

    # -- in the worker threads

    def _one(self, action: Action) -> list[_Done]:
        if self.stop.is_set():
            return [_Done(action, attempted=False)]
        try:
            try:
                if isinstance(action, Create):
                    created = self.cv.create_user(action.payload())
                    return [_Done(action, link=action.result_link(created.id))]
                payload = action.payload()
                if payload:
                    self.cv.update_user(action.cv_user_id, payload)
                return [_Done(action, link=action.result_link(action.cv_user_id))]
            except EmailTaken:
                if isinstance(action, Create):
                    return self._exists(action)
                raise
        except _RUN_LEVEL as exc:
            self.stop.set()
            return [_Done(action, error=exc)]
        except ClearVoxError as exc:
            return [_Done(action, error=exc)]

    def _exists(self, action: Create) -> list[_Done]:
        """409 email_taken: someone created the user meanwhile; plan this one user again, as "exists"."""
        user = self.users.get(_key(action.object_id))
        if user is None:
            return [_Done(action, error=EmailTaken("ClearVox already has a user with this email", 409, "email_taken"))]
        lookup = CvLookup(self.cv, 1)
        lookup.for_users({_key(action.object_id): user}, {})
        sub = plan_users([user], [], list(lookup.found.values()), self.links, self.options, full_round=False,
                         gone_cv_ids=self.gone | lookup.gone)
        out = [_Done(action, replan=sub)]
        for a in sub.actions():
            if isinstance(a, Create):  # the email is taken, yet no user has it: never create twice, try again later
                out.append(_Done(a, error=EmailTaken(
                    "ClearVox answered email_taken but no user with this email was found; retried on the next run",
                    409, "email_taken")))
            else:
                out.extend(self._one(a))
        return out

    # -- in the calling thread

    def _record(self, done: _Done) -> None:
        action, report = done.action, self.ctx.report
        oid = action.object_id
        if done.replan is not None:
            self.replans.append(done.replan)
            for row in done.replan.rows:
                self._rows[row.object_id] = row.to_row()
            self.outcomes.setdefault(_key(oid), []).append("ClearVox answered email_taken: planned again as existing")
            return
        if not done.attempted:
            return
        if done.error is not None:
            if isinstance(done.error, _RUN_LEVEL):
                self.fatal = self.fatal or done.error
                return
            reason = f"{_verb(action)} failed: {done.error}"
            report.add_failure(oid, reason)
            self.failed[_key(oid)] = reason
            self.outcomes.setdefault(_key(oid), []).append(reason)
            return
        assert done.link is not None
        self._rows[done.link.object_id] = done.link.to_row()
        cv_id = done.link.cv_user_id
        if isinstance(action, Create):
            report.count("created")
            text = f"created ClearVox user {cv_id}"
        elif isinstance(action, LinkAction):
            report.count("linked")
            text = f"linked ClearVox user {cv_id}" + (" and updated it" if action.changes else "")
        elif isinstance(action, Deactivate):
            report.count("deactivated")
            text = f"deactivated ClearVox user {cv_id}"
        else:
            report.count("updated")
            text = f"{'reactivated' if action.reactivates else 'updated'} ClearVox user {cv_id}"
        self.outcomes.setdefault(_key(oid), []).append(text)
        self._flush()

    def _flush(self, *, force: bool = False) -> None:
        if self._rows and (force or len(self._rows) >= _FLUSH):
            rows, self._rows = self._rows, {}
            self.ctx.state.upsert("links", rows)


def _report_plan(report: RunReport, plan: UsersPlan, replans: Sequence[UsersPlan] = (), *, counts: bool) -> None:
    """Skips, warnings and the extra JSON keys (unlinked, conflicts, held, deactivations with their reason);
    with `counts` (dry run) the planned counts too."""
    plans = [plan, *replans]
    for p in plans:
        for s in p.skips:
            report.add_skip(s.id, s.reason, s.name)
    for w in plan.warnings:
        report.add_warning(w.id, w.reason)
    report.count("unchanged", plan.unchanged)
    if counts:
        report.count("created", len(plan.creates))
        report.count("updated", len(plan.updates))
        report.count("linked", len(plan.link_actions))
        report.count("deactivated", len(plan.deactivations))
    docs = [p.to_json() for p in plans]
    report.extra["unlinked"] = [u for d in docs for u in d["unlinked"]]
    report.extra["conflicts"] = [c for d in docs for c in d["conflicts"]]
    report.extra["held"] = docs[0]["plan"]["held"]
    report.extra["deactivations"] = docs[0]["plan"]["deactivate"]
    report.extra["out_of_scope"] = plan.out_of_scope


def _retry_rows(old: Mapping[str, Mapping[str, Any]], failed: Mapping[str, str], plan: UsersPlan,
                removed: Iterable[str], now: datetime) -> dict[str, dict[str, Any]]:
    """Rows for the retries table: failed items and held deactivations, counting attempts."""
    gone = set(removed)
    rows: dict[str, dict[str, Any]] = {}
    for key, reason in failed.items():
        attempts = int((old.get(key) or {}).get("attempts") or 0) + 1
        rows[key] = {"kind": "failed", "reason": reason[:1000], "attempts": attempts, "removed": key in gone, "at": now}
    for d in plan.held:
        key = _key(d.object_id)
        rows.setdefault(key, {"kind": "held", "reason": d.reason[:1000], "attempts": 0, "removed": key in gone, "at": now})
    return rows


# ---- one run


@dataclass
class _Inputs:
    users: dict[str, dict[str, Any]]  # key -> whole Graph user
    removed: dict[str, str]  # key -> object id
    cv_users: list[CvUser]
    gone: frozenset[str]
    cache_writes: dict[str, dict[str, Any]]
    cache_deletes: set[str]


class _UsersRun:
    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.state = ctx.state

    def run(self) -> None:
        ctx, state = self.ctx, self.state
        links = links_from_rows(state.rows("links"))
        retries = state.rows("retries", RETRY_SCOPE)
        cursor = state.cursor(CURSOR)
        rnd = graph_round(ctx.graph, cursor, ctx.options, ctx.now)
        members: frozenset[str] | None = None
        members_before: set[str] = set()
        if ctx.options.users_group:
            members = group_members(ctx.graph, ctx.options.users_group, ctx.tenant.client_id)
            members_before = set(state.rows(CACHE_TABLE, MEMBERS_SCOPE))
        inputs = self._full(rnd, links) if rnd.full else self._delta(rnd, links, retries, members, members_before)
        options = UsersOptions.from_settings(ctx.options, users_group_members=members,
                                             confirm_deactivations=bool(ctx.args.get("confirm_deactivations")))
        plan = plan_users(list(inputs.users.values()), list(inputs.removed.values()), inputs.cv_users, links, options,
                          full_round=rnd.full, gone_cv_ids=inputs.gone)
        ctx.report.extra["full_round"] = rnd.full
        if rnd.full:
            ctx.report.extra["full_round_reason"] = rnd.reason
        if ctx.dry_run:
            _report_plan(ctx.report, plan, counts=True)
            ctx.report.plan_text = render_plan(plan)
            return
        cache = _Background(lambda: self._write_cache(inputs))
        applier = Applier(ctx, links, options, inputs.users, inputs.gone)
        try:
            applier.apply(plan)
        finally:
            cache.join()
        _report_plan(ctx.report, plan, applier.replans, counts=False)
        if plan.rows:
            state.upsert("links", {link.object_id: link.to_row() for link in plan.rows})
        state.delete("links", plan.stale)
        new_retries = _retry_rows(retries, applier.failed, plan, inputs.removed, ctx.now)
        if new_retries:
            state.upsert("retries", new_retries, RETRY_SCOPE)
        if applier.fatal is not None:
            raise applier.fatal  # the cursor stays: the next run replays this round
        state.delete("retries", sorted(set(retries) - set(new_retries)), RETRY_SCOPE)
        if members is not None:
            if members - members_before:
                state.upsert(CACHE_TABLE, {k: {"member": True} for k in sorted(members - members_before)}, MEMBERS_SCOPE)
            state.delete(CACHE_TABLE, sorted(members_before - members), MEMBERS_SCOPE)
        full_at = ctx.now if rnd.full else (cursor or {}).get("full_at")
        state.set_cursor(CURSOR, rnd.delta_link, full_at=full_at, group=ctx.options.users_group or "", select=_SELECT)

    def _write_cache(self, inputs: _Inputs) -> None:
        if inputs.cache_writes:
            self.state.upsert(CACHE_TABLE, {k: {"user": _dump(u)} for k, u in inputs.cache_writes.items()})
        self.state.delete(CACHE_TABLE, sorted(inputs.cache_deletes))

    def _full(self, rnd: GraphRound, links: Mapping[str, Link]) -> _Inputs:
        """Every Entra user and every ClearVox user, read once."""
        cache = load_cache(self.state)
        writes = {k: u for k, u in rnd.items.items() if cache.get(k) != u}
        removed = {k: v for k, v in rnd.removed.items() if k not in rnd.items}
        cv_users = self.ctx.clearvox.list_users()
        ids = {u.id for u in cv_users}
        gone = frozenset(link.cv_user_id for link in links.values() if link.cv_user_id and link.cv_user_id not in ids)
        return _Inputs(dict(rnd.items), removed, cv_users, gone, writes, set(cache) - set(rnd.items))

    def _delta(self, rnd: GraphRound, links: Mapping[str, Link], retries: Mapping[str, Mapping[str, Any]],
               members: frozenset[str] | None, members_before: set[str]) -> _Inputs:
        """The round's changes merged into the cached users, plus whoever else needs planning this run."""
        rows = {_key(k): v for k, v in links.items()}
        removed = {k: v for k, v in rnd.removed.items() if k not in rnd.items}
        touched = set(rnd.items) | set(removed)
        extra = {_key(o) for o in awaiting_link(links)} | set(retries)
        if members is not None:
            extra |= set(members) ^ members_before
        extra -= touched
        cache = load_cache(self.state, touched | extra)
        # Entra users sharing a mail with a touched user (old or new mail) may no longer be in conflict.
        mails = {_text(u.get("mail")).casefold() for k in touched for u in (cache.get(k), rnd.items.get(k)) if u}
        partners = {k for k, link in rows.items() if link.status == "conflict" and link.email.casefold() in mails}
        partners -= touched | extra
        cache.update(load_cache(self.state, partners))
        extra |= partners
        users: dict[str, dict[str, Any]] = {}
        fetch: list[str] = []
        for key, item in rnd.items.items():
            base = cache.get(key)
            users[key] = {**base, **item} if base else dict(item)
            if base is None and key in rows and not all(p in item for p in GRAPH_SELECT):
                fetch.append(key)  # a known user, a partial item and no cached copy: read it whole rather than guess
        for key in sorted(extra):
            if key in cache:
                users[key] = cache[key]
            elif (retries.get(key) or {}).get("removed"):
                removed[key] = key
            else:
                fetch.append(key)
        for key, user in fetch_users(self.ctx.graph, fetch).items():
            if user is None:
                users.pop(key, None)
                removed[key] = key
            else:
                users[key] = user
        # Outside the users group, only users with a links row can need ClearVox (to be treated as removed).
        in_view = {k: u for k, u in users.items() if members is None or k in members or k in rows}
        lookup = CvLookup(self.ctx.clearvox, self.ctx.options.clearvox_concurrency)
        lookup.for_users({**in_view, **dict.fromkeys(removed)}, links)
        writes = {k: u for k, u in users.items() if cache.get(k) != u}
        return _Inputs(users, removed, list(lookup.found.values()), frozenset(lookup.gone), writes,
                       {k for k in removed if k in cache})


class _OneUser:
    """`sync users --user X`: that user now, every decision explained; the deltaLink is not touched."""

    def __init__(self, ctx: SyncContext, who: str) -> None:
        self.ctx = ctx
        self.who = who

    def run(self) -> None:
        ctx, state, report = self.ctx, self.ctx.state, self.ctx.report
        links = links_from_rows(state.rows("links"))
        users = _by_key(find_graph_users(ctx.graph, self.who))
        removed: dict[str, str] = {}
        if not users:
            wanted = self.who.casefold()
            known = [link for link in links.values()
                     if _key(link.object_id) == _key(self.who) or (link.email and link.email.casefold() == wanted)]
            if not known:
                reason = (f"no Entra user has Object-ID, email (mail) or sign-in name {self.who}; "
                          "check the spelling, or whether the user was deleted")
                report.add_skip(self.who, reason)
                report.plan_text = f"User {self.who}:\n  {reason}\n"
                return
            removed = {_key(link.object_id): link.object_id for link in known}
        members = None
        if ctx.options.users_group:
            members = group_members(ctx.graph, ctx.options.users_group, ctx.tenant.client_id)
        options = UsersOptions.from_settings(ctx.options, users_group_members=members,
                                             confirm_deactivations=bool(ctx.args.get("confirm_deactivations")))
        lookup = CvLookup(ctx.clearvox, ctx.options.clearvox_concurrency)
        lookup.for_users({**users, **dict.fromkeys(removed)}, links)
        cv_users = list(lookup.found.values())
        plan = plan_users(list(users.values()), list(removed.values()), cv_users, links, options,
                          full_round=False, gone_cv_ids=lookup.gone)
        oids = {k: _text(u.get("id")) for k, u in users.items()} | removed
        explained = {key: explain_user(users.get(key), oid, plan, cv_users, links, options) for key, oid in oids.items()}
        if ctx.dry_run:
            _report_plan(report, plan, counts=True)
            report.plan_text = self._text(explained, {}) + "(dry run: nothing written)\n"
            return
        applier = Applier(ctx, links, options, users, lookup.gone)
        applier.apply(plan)
        _report_plan(report, plan, applier.replans, counts=False)
        if plan.rows:
            state.upsert("links", {link.object_id: link.to_row() for link in plan.rows})
        state.delete("links", plan.stale)
        state.upsert(CACHE_TABLE, {k: {"user": _dump(u)} for k, u in users.items()})
        state.delete(CACHE_TABLE, sorted(removed))
        old = {k: r for k in oids if (r := state.get("retries", k, RETRY_SCOPE)) is not None}
        new = _retry_rows(old, applier.failed, plan, removed, ctx.now)
        if new:
            state.upsert("retries", new, RETRY_SCOPE)
        if applier.fatal is None:
            state.delete("retries", sorted(set(old) - set(new)), RETRY_SCOPE)
        report.plan_text = self._text(explained, applier.outcomes)
        if applier.fatal is not None:
            raise applier.fatal

    def _text(self, explained: Mapping[str, list[str]], outcomes: Mapping[str, list[str]]) -> str:
        lines: list[str] = []
        for key, explanation in explained.items():
            lines.append(f"User {self.who}:")
            lines.extend(f"  {line}" for line in explanation)
            lines.extend(f"  Result: {outcome}" for outcome in outcomes.get(key, []))
        return "\n".join(lines) + "\n"


# ---- report unlinked and link --csv


def unlinked_rows(state: State) -> list[Link]:
    """Users waiting for an administrator to paste their Object-ID, as the last run left them."""
    links = links_from_rows(state.rows("links"))
    waiting = [link for link in links.values() if link.status == "unlinked" and link.cv_user_id]
    return sorted(waiting, key=lambda link: (link.email.casefold(), link.object_id))


def report_unlinked(tenant: Tenant, store: Store, out: TextIO, *, csv_format: bool) -> None:
    """`nexxt365 report unlinked [--csv]`: ClearVox users skipped for an existing email, with the Object-ID to paste."""
    rows = unlinked_rows(store.for_tenant(tenant.key))
    if csv_format:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for link in rows:
            writer.writerow([link.cv_user_id, link.email, link.display_name, link.object_id])
        return
    if not rows:
        print(f"No users wait for a link (tenant {tenant.key}).", file=out)
        return
    print(f"{len(rows)} Entra user(s) exist in ClearVox but are not linked (tenant {tenant.key}). Paste each Object-ID "
          "into \"Extern toepassing ID\" of the ClearVox user, or review `nexxt365 report unlinked --csv > FILE` and "
          "run `nexxt365 link --csv FILE`.", file=out)
    table = [("ClearVox user", "Email", "Entra display name", "Object-ID")]
    table += [(str(link.cv_user_id), link.email, link.display_name, link.object_id) for link in rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)


def link_from_csv(tenant: Tenant, store: Store, path: str, out: TextIO) -> int:
    """`nexxt365 link --csv FILE`: set Extern toepassing ID for each reviewed row, after checking it again.

    A row is linked only when its ClearVox user still has the row's email and
    no Object-ID, the Object-ID is still waiting for a link with that email
    and no other ClearVox user carries it. The next sync run sees the link and
    sends the Entra values. Returns the exit code: 0 all rows linked (or
    already), 1 some row refused or failed, 2 the file is unusable.
    """
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("clearvox_user_id", "email", "object_id") if c not in (reader.fieldnames or [])]
            if missing:
                print(f"{path}: missing column(s) {', '.join(missing)}; use the file of "
                      "`nexxt365 report unlinked --csv`", file=out)
                return EXIT_CONFIG
            entries = [(n, row) for n, row in enumerate(reader, start=2)]
    except OSError as exc:
        print(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})", file=out)
        return EXIT_CONFIG
    except (csv.Error, UnicodeDecodeError) as exc:
        print(f"{path}: not a CSV file ({exc})", file=out)
        return EXIT_CONFIG
    state = store.for_tenant(tenant.key)
    links = {_key(k): v for k, v in links_from_rows(state.rows("links")).items()}
    code = EXIT_OK
    linked = 0
    with ClearVox(tenant.clearvox_url, tenant.clearvox_api_key(), tenant.clearvox_account) as cv:
        for line, row in entries:
            cv_id = (row.get("clearvox_user_id") or "").strip()
            email = (row.get("email") or "").strip()
            oid = (row.get("object_id") or "").strip()
            if not (cv_id or email or oid):
                continue
            try:
                ok, message = _link_row(cv, links, cv_id, email, oid)
            except _RUN_LEVEL:
                raise
            except ClearVoxError as exc:
                ok, message = False, f"not linked: {exc}"
            print(f"line {line}: ClearVox user {cv_id or '?'} <{email}> Object-ID {oid or '?'}: {message}", file=out)
            if ok:
                linked += 1
            else:
                code = EXIT_ITEM_FAILURES
    print(f"{linked} row(s) linked or already linked; the next `nexxt365 sync users` sends the Entra values.", file=out)
    return code


def _link_row(cv: ClearVox, links: Mapping[str, Link], cv_id: str, email: str, oid: str) -> tuple[bool, str]:
    if not cv_id or not email or not oid:
        return False, "not linked: clearvox_user_id, email and object_id are all needed"
    link = links.get(_key(oid))
    if link is None or link.status not in ("unlinked", "linked"):
        return False, "not linked: this Object-ID is not waiting for a link (run `nexxt365 sync users` and report again)"
    if link.cv_user_id != cv_id:
        return False, f"not linked: the last run pairs this Object-ID with ClearVox user {link.cv_user_id or '(none)'}"
    if link.email.casefold() != email.casefold():
        return False, f"not linked: the Entra user's email is now {link.email}"
    try:
        current = cv.get_user(cv_id)
    except AccountNotFound:
        raise
    except ClearVoxNotFound:
        return False, "not linked: the ClearVox user no longer exists"
    ext = (current.external_application_id or "").strip()
    if _key(ext) == _key(oid):
        return True, "already linked"
    if current.email.strip().casefold() != email.casefold():
        return False, f"not linked: the ClearVox user's email is now {current.email}"
    if ext:
        return False, f"not linked: the ClearVox user already carries Object-ID {ext}"
    others = [u.id for u in cv.iter_users(external_application_id=oid) if u.id != cv_id]
    if others:
        return False, f"not linked: ClearVox user {', '.join(others)} already carries this Object-ID"
    cv.update_user(cv_id, {"external_application_id": oid})
    return True, "linked"
