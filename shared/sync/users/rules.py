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

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast, get_args

from shared.clearvox import USER_FIELDS, CvUser
from shared.digest import digest, digest_text
from shared.errors import (
    ConfigError,
)
from shared.phone import DEFAULT_REGION, UnparseablePhone, to_e164

if TYPE_CHECKING:
    from shared.settings import Options

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
            object.__setattr__(self, "users_group_members", frozenset(object_key(m) for m in self.users_group_members))

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


def text_of(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def is_guest(user: GraphUser) -> bool:
    return text_of(user.get("userType")).lower() == "guest"


def is_disabled(user: GraphUser) -> bool:
    """Only an explicit false counts: a missing accountEnabled is not evidence of a disabled account."""
    return user.get("accountEnabled") is False


def ineligible_reason(user: GraphUser, options: UsersOptions) -> str | None:
    """Why this Entra user is not synced, or None when it is. Guest, then disabled, then email."""
    if is_guest(user) and not options.include_guests:
        return REASON_GUEST
    if is_disabled(user) and not options.include_disabled:
        return REASON_DISABLED
    mail = text_of(user.get("mail"))
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
    display = " ".join(text_of(user.get("displayName")).split())
    dn_first, dn_last = split_display_name(display)
    first = text_of(user.get("givenName")) or dn_first
    last = text_of(user.get("surname")) or dn_last
    if not first and not last:
        first = last = text_of(user.get("mail")).partition("@")[0]
    first, last = first or last, last or first
    if not display:
        display = first if first == last else f"{first} {last}"
    return first, last, display


def language(preferred: Any) -> str | None:
    """'nl-NL' -> 'nl'; None for anything ClearVox does not know, meaning: leave ClearVox's value (default nl)."""
    primary = text_of(preferred).replace("_", "-").partition("-")[0].lower()
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
        "email": text_of(user.get("mail")),
    }
    phones = user.get("businessPhones") or []
    business = phones[0] if isinstance(phones, list | tuple) and phones else None
    for name, raw in (("phone_number", business), ("mobile_number", user.get("mobilePhone"))):
        text = text_of(raw)
        if not text:
            fields[name] = None
            continue
        try:
            fields[name] = to_e164(text, region)
        except UnparseablePhone as exc:
            warnings.append(f"{name} left out: {exc}")
    fields["job_title"] = text_of(user.get("jobTitle")) or None
    fields["department"] = text_of(user.get("department")) or None
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
    return digest([name, _norm(name, value)], 16, ascii=True)


def field_hashes(fields: Mapping[str, Any]) -> dict[str, str]:
    return {name: field_hash(name, value) for name, value in fields.items()}


def _combine(hashes: Mapping[str, str]) -> str:
    return digest_text("\n".join(f"{name}={h}" for name, h in sorted(hashes.items())), 32)


def fields_hash(fields: Mapping[str, Any]) -> str:
    """Stable hash of a fields dict; equals `Link.hash` of a row written with these fields."""
    return _combine(field_hashes(fields))


def object_key(object_id: str) -> str:
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
    ids = {object_key(str(u["id"])) for u in graph_users if u.get("id")} | {object_key(i) for i in removed_ids}
    by_key = {object_key(k): v for k, v in links.items()}
    emails = {text_of(u.get("mail")).casefold() for u in graph_users if text_of(u.get("mail"))}
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
            oid = text_of(user.get("id"))
            if not oid:
                continue
            if "@removed" in user:
                removed.setdefault(object_key(oid), oid)
            else:
                self.users.pop(object_key(oid), None)  # re-insert: the last copy wins, at its last position
                self.users[object_key(oid)] = user
        for oid in removed_ids:
            removed.setdefault(object_key(oid), oid)
        self.removed = {k: v for k, v in removed.items() if k not in self.users}
        self.links = {object_key(k): v for k, v in links.items()}
        self.cv_by_id = {u.id: u for u in cv_users}
        self.cv_by_ext: dict[str, list[CvUser]] = {}
        self.cv_by_email: dict[str, list[CvUser]] = {}
        for u in cv_users:
            if u.external_application_id and u.external_application_id.strip():
                self.cv_by_ext.setdefault(object_key(u.external_application_id), []).append(u)
            if u.email and u.email.strip():
                self.cv_by_email.setdefault(u.email.strip().casefold(), []).append(u)

    # ---- entry

    def plan(self) -> UsersPlan:
        candidates: list[tuple[str, GraphUser]] = []
        for key, user in self.users.items():
            oid = text_of(user.get("id"))
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
            self._eligible(key, user, duplicates.get(text_of(user.get("mail")).casefold()))
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
        user = self.users.get(object_key(item_id))
        link = self.links.get(object_key(item_id))
        display = text_of(user.get("displayName")) if user else (link.display_name if link else "")
        mail = text_of(user.get("mail")) if user else (link.email if link else "")
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
            owners.setdefault(text_of(user.get("mail")).casefold(), []).append(text_of(user.get("id")))
        if not self.full_round:
            for key, link in sorted(self.links.items()):
                if key in self.users or key in self.removed or not link.email:
                    continue
                if link.status in ("linked", "unlinked", "conflict"):
                    owners.setdefault(link.email.casefold(), []).append(link.object_id)
        return {email: ids for email, ids in owners.items() if len(ids) > 1}

    def _eligible(self, key: str, user: GraphUser, duplicate_of: list[str] | None) -> None:
        oid = text_of(user.get("id"))
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
            others = ", ".join(sorted(i for i in duplicate_of if object_key(i) != key))
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
    key = object_key(object_id)
    link = {object_key(k): v for k, v in links.items()}.get(key)
    lines: list[str] = []
    mail = text_of(user.get("mail")) if user is not None else (link.email if link else "")
    if user is None:
        known = f"; the connector knew it as {link.display_name} <{link.email}>" if link else ""
        lines.append(f"Entra: no user with Object-ID {object_id} (deleted){known}")
    else:
        enabled = "disabled" if is_disabled(user) else "enabled"
        kind = "guest" if is_guest(user) else "member"
        lines.append(f"Entra: {text_of(user.get('displayName')) or '(no display name)'} <{mail or 'no mail'}>, "
                     f"Object-ID {object_id}, sign-in name {text_of(user.get('userPrincipalName')) or '-'}, {kind}, {enabled}")
        members = options.users_group_members
        if members is not None:
            lines.append("Users group: a (transitive) member" if key in members
                         else "Users group: not a member, so outside the sync's scope")
        reason = ineligible_reason(user, options)
        lines.append("Eligible: yes (member user, enabled, valid email in Entra contact info)" if reason is None
                     else f"Eligible: no - {reason}")
    by_ext = [u for u in cv_users if object_key(u.external_application_id or "") == key]
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
        if object_key(c.object_id) == key:
            decided = True
            lines.append("Decision: create a ClearVox user with Extern toepassing ID = Object-ID; fields:")
            lines.extend(f"  {name}: {_show(value)}" for name, value in c.fields.items())
            if c.note:
                lines.append(f"  note: {c.note}")
    for u in plan.updates:
        if object_key(u.object_id) == key:
            decided = True
            lines.append(f"Decision: update ClearVox user {u.cv_user_id}; fields changed:")
            lines.extend(f"  {name}: {_show(u.before.get(name))} -> {_show(new)}" for name, new in u.changes.items())
    for a in plan.link_actions:
        if object_key(a.object_id) == key:
            decided = True
            how = "set its Extern toepassing ID (auto_link)" if a.set_external_id else "the Object-ID was pasted in ClearVox"
            lines.append(f"Decision: link ClearVox user {a.cv_user_id} ({how}); "
                         + ("fields changed:" if a.changes else "no field differs"))
            lines.extend(f"  {name}: {_show(a.before.get(name))} -> {_show(new)}" for name, new in a.changes.items())
    for d in plan.deactivations:
        if object_key(d.object_id) == key:
            decided = True
            lines.append(f"Decision: deactivate ClearVox user {d.cv_user_id} ({d.reason}); it is never deleted")
    for s in plan.skips:
        if object_key(s.id) == key:
            decided = True
            lines.append(f"Decision: skip - {s.reason}")
    for conflict in plan.conflicts:
        if key in {object_key(o) for o in conflict.object_ids}:
            lines.append(f"Conflict: {conflict.reason}")
    for w in plan.warnings:
        if object_key(w.id) == key:
            lines.append(f"Warning: {w.reason}")
    if not decided:
        if plan.out_of_scope:
            lines.append("Decision: nothing to do - not in the users group and never linked by the connector")
        elif plan.unchanged:
            lines.append("Decision: nothing to do - no field changed in Entra since it was last written")
        else:
            lines.append("Decision: nothing to do")
    return lines
