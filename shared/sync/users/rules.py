"""Users sync, pure rules: which Entra users are synced, and with which ClearVox field values. No I/O.

* ClearVox is the truth about links: a ClearVox user is linked to the Entra
  user whose object id is in its external_application_id ("Extern toepassing
  ID"). The links table (`Link`) remembers what the connector last wrote.
* Only Entra changes are pushed. Per field, a hash of the value last written
  is kept; a field is sent when Entra's value moved away from it *and*
  ClearVox holds something else. Values compare without control characters,
  so what ClearVox stores after stripping them never looks like a change.
* `valid_email` is the one email rule: the users sync, doctor's count and the
  contacts sync's contact emails all use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast, get_args

from shared.clearvox import USER_FIELDS
from shared.digest import digest, digest_text
from shared.errors import (
    ConfigError,
)
from shared.phone import DEFAULT_REGION, UnparseablePhone, to_e164
from shared.text import without_controls

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
    deactivated_today: int = 0  # deactivations done in the last 24 hours (the guard's rolling cap)
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
        deactivated_today: int = 0,
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
            deactivated_today=deactivated_today,
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


def valid_email(text: Any) -> str | None:
    """The one email rule: the address (trimmed) when it looks deliverable (local@domain.tld, at most 254
    characters, ClearVox's limit), else None. Doctor and the contacts sync count and send emails by it too."""
    address = text.strip() if isinstance(text, str) else ""
    return address if len(address) <= 254 and _EMAIL.match(address) is not None else None


def is_valid_email(text: str) -> bool:
    return valid_email(text) is not None


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
    if valid_email(mail) is None:
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
    display = " ".join(without_controls(text_of(user.get("displayName"))).split())
    dn_first, dn_last = split_display_name(display)
    first = without_controls(text_of(user.get("givenName"))).strip() or dn_first
    last = without_controls(text_of(user.get("surname"))).strip() or dn_last
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
    for name, value in fields.items():
        if isinstance(value, str):
            fields[name] = without_controls(value).strip() or None
    for name, limit in MAX_LENGTHS.items():
        value = fields.get(name)
        if isinstance(value, str) and len(value) > limit:
            fields[name] = value[:limit].rstrip()
            warnings.append(f"{name} cut to {limit} characters (ClearVox's maximum)")
    return {name: fields[name] for name in USER_FIELDS if name in fields}, warnings


def _norm(name: str, value: Any) -> Any:
    """Comparison form: no control characters, empty means None, emails ignore case."""
    if isinstance(value, str):
        value = without_controls(value).strip()
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

