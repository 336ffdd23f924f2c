"""Contacts sync, mapping (pure): a Graph contact in ClearVox terms, its hashes and its contactmap row.

What is stored per synced contact is a contactmap row: the ClearVox id, the
folder, and hashes of what was written (never the values, never subject or
body content), so an update patches only the fields Outlook changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.clearvox import CONTACT_FIELDS, CvContact, PhoneNumber
from shared.digest import digest
from shared.phone import DEFAULT_REGION, UnparseablePhone, to_e164
from shared.sync.users.rules import is_valid_email
from shared.text import without_controls

MAX_DISPLAY_NAME = 200
MAX_NAME = 100
MAX_TEXT = 200  # company, job_title
MAX_EMAILS = 3
MAX_PHONES = 10
QUOTE_LIMIT = 60  # characters of an input value quoted in a warning

# What is compared, hashed and patched: every written field except external_id,
# which never changes for a given contact.
SYNCED_FIELDS: tuple[str, ...] = tuple(name for name in CONTACT_FIELDS if name != "external_id")

# Graph contact properties -> ClearVox phone type, in the order numbers are listed.
_PHONE_SOURCES: tuple[tuple[str, str], ...] = (
    ("businessPhones", "work"),
    ("mobilePhone", "mobile"),
    ("homePhones", "home"),
)

REASON_NO_NUMBER = "no usable phone number"

# --------------------------------------------------------------------------- mapping


@dataclass(frozen=True)
class Skip:
    """An item left alone, with the reason an administrator reads."""

    id: str
    reason: str
    name: str = ""  # the contact's name, to find it in Outlook; ids alone are opaque

    def describe(self) -> str:
        return f"{self.reason} ({self.name})" if self.name else self.reason

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "reason": self.describe()}


@dataclass(frozen=True)
class MappedContact:
    """A Graph contact in ClearVox terms: the fields to write and what was dropped on the way."""

    graph_contact_id: str
    folder_id: str
    display_name: str
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    emails: tuple[str, ...] = ()
    phone_numbers: tuple[PhoneNumber, ...] = ()
    warnings: tuple[str, ...] = ()

    def fields(self) -> dict[str, Any]:
        """The synced fields, keyed like CONTACT_FIELDS (without external_id)."""
        return {name: getattr(self, name) for name in SYNCED_FIELDS}

    def create_fields(self) -> dict[str, Any]:
        """The body of a create: the synced fields plus external_id. Never visibility."""
        return {"external_id": self.graph_contact_id, **self.fields()}

    @property
    def hash(self) -> str:
        return contact_hash(self.fields())


def _clipped_text(value: Any, limit: int, label: str, warnings: list[str]) -> str | None:
    """Stripped text or None; cut to the contract's limit (reported) instead of failing the write."""
    if not isinstance(value, str):
        return None
    text = without_controls(" ".join(value.split()))
    if not text:
        return None
    if len(text) > limit:
        warnings.append(f"{label} shortened to {limit} characters")
        text = text[:limit].rstrip()
    return text


def _emails(graph_contact: Mapping[str, Any], warnings: list[str]) -> tuple[str, ...]:
    """Up to three distinct valid addresses, by the users sync's email rule. Exchange-internal (X500)
    addresses have no '@' and are left out silently; other invalid ones (`a@b`, `@@`) with a warning."""
    seen: dict[str, str] = {}
    for entry in graph_contact.get("emailAddresses") or ():
        address = entry.get("address") if isinstance(entry, Mapping) else None
        if not isinstance(address, str) or "@" not in address:
            continue
        address = address.strip()
        if not is_valid_email(address):
            warnings.append(f"invalid email {address[:QUOTE_LIMIT]!r} dropped")
        elif address.lower() not in seen:
            seen[address.lower()] = address
    return tuple(seen.values())[:MAX_EMAILS]


def _phones(graph_contact: Mapping[str, Any], region: str, warnings: list[str]) -> tuple[PhoneNumber, ...]:
    """E.164 numbers typed work/mobile/home; a number seen twice keeps its first type."""
    numbers: dict[str, PhoneNumber] = {}
    for prop, kind in _PHONE_SOURCES:
        raw = graph_contact.get(prop)
        texts = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list | tuple) else []
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                continue
            try:
                e164 = to_e164(text, region)
            except UnparseablePhone as exc:
                warnings.append(f"phone number dropped: {exc}")
                continue
            numbers.setdefault(e164, PhoneNumber(type=kind, number=e164))
    phones = tuple(numbers.values())
    if len(phones) > MAX_PHONES:
        warnings.append(f"only the first {MAX_PHONES} of {len(phones)} phone numbers kept")
        phones = phones[:MAX_PHONES]
    return phones


def contact_name(graph_contact: Mapping[str, Any]) -> str:
    """Best human name of a Graph contact, for reports about it."""
    for key in ("displayName", "companyName"):
        value = graph_contact.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    parts = [graph_contact.get(k) for k in ("givenName", "surname")]
    return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def map_contact(graph_contact: Mapping[str, Any], region: str = DEFAULT_REGION) -> MappedContact | Skip:
    """Map one Graph contact, or say why it cannot be a ClearVox contact.

    The display name falls back to given (+ middle) + surname, then company,
    then the first email, then the first number: ClearVox requires a name and
    a number-only phonebook entry is still useful for caller ID.
    """
    graph_id = str(graph_contact.get("id") or "")
    folder_id = str(graph_contact.get("parentFolderId") or "")
    warnings: list[str] = []
    phones = _phones(graph_contact, region, warnings)
    if not graph_id:
        return Skip("", "contact without an id", contact_name(graph_contact))
    if not phones:
        dropped = [w.removeprefix("phone number dropped: ") for w in warnings if w.startswith("phone number dropped")]
        reason = REASON_NO_NUMBER + (f": {'; '.join(dropped)}" if dropped else "")
        return Skip(graph_id, reason, contact_name(graph_contact))

    first = _clipped_text(graph_contact.get("givenName"), MAX_NAME, "first name", warnings)
    last = _clipped_text(graph_contact.get("surname"), MAX_NAME, "last name", warnings)
    company = _clipped_text(graph_contact.get("companyName"), MAX_TEXT, "company", warnings)
    emails = _emails(graph_contact, warnings)
    middle = graph_contact.get("middleName")
    full_name = " ".join(
        p.strip() for p in (graph_contact.get("givenName"), middle, graph_contact.get("surname"))
        if isinstance(p, str) and p.strip()
    )
    candidates = (graph_contact.get("displayName"), full_name, graph_contact.get("companyName"),
                  emails[0] if emails else None, phones[0].number)
    raw_display = next(c for c in candidates if isinstance(c, str) and c.strip())
    display = _clipped_text(raw_display, MAX_DISPLAY_NAME, "display name", warnings) or phones[0].number

    return MappedContact(
        graph_contact_id=graph_id,
        folder_id=folder_id,
        display_name=display,
        first_name=first,
        last_name=last,
        company=company,
        job_title=_clipped_text(graph_contact.get("jobTitle"), MAX_TEXT, "job title", warnings),
        emails=emails,
        phone_numbers=phones,
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------- hashing


def _plain(value: Any) -> Any:
    """JSON-able form of a field value, so equal values hash equally whatever their container."""
    if isinstance(value, PhoneNumber):
        return [value.type, value.number]
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def contact_hash(fields: Mapping[str, Any]) -> str:
    """Stable hash of the synced fields: equal for equal content, independent of key order and containers."""
    return digest({k: _plain(fields.get(k)) for k in SYNCED_FIELDS}, 32)


def field_hashes(fields: Mapping[str, Any]) -> dict[str, str]:
    """One short hash per synced field: lets an update patch only what changed, without storing the values."""
    return {k: digest(_plain(fields.get(k)), 16) for k in SYNCED_FIELDS}


def cv_fields(contact: CvContact) -> dict[str, Any]:
    """The synced fields of a ClearVox contact, normalised like `MappedContact.fields()`."""
    def text(value: str | None) -> str | None:
        return (" ".join(value.split()) or None) if isinstance(value, str) else None

    return {
        "first_name": text(contact.first_name),
        "last_name": text(contact.last_name),
        "display_name": contact.display_name,
        "company": text(contact.company),
        "job_title": text(contact.job_title),
        "emails": tuple(contact.emails),
        "phone_numbers": tuple(contact.phone_numbers),
    }


def changed_fields(new: Mapping[str, Any], written: Mapping[str, str]) -> dict[str, Any]:
    """Fields whose value differs from what was last written (a field without a stored hash counts as changed)."""
    hashes = field_hashes(new)
    return {k: new[k] for k in SYNCED_FIELDS if written.get(k) != hashes[k]}


def differing_fields(new: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    return {k: new[k] for k in SYNCED_FIELDS if _plain(new[k]) != _plain(current.get(k))}


# --------------------------------------------------------------------------- contactmap


@dataclass(frozen=True)
class MapEntry:
    """A contactmap row: which ClearVox contact a Graph contact was written to, and a hash of what was written.

    The row key is the Graph contact id (not part of `to_row()`); values are
    plain strings so Table Storage holds them as-is. Per-field hashes rather
    than the values themselves keep personal data out of the state store.
    """

    graph_contact_id: str
    cv_contact_id: str
    folder_id: str
    hash: str
    owner_cv_user_id: str = ""
    field_hashes: Mapping[str, str] = field(default_factory=dict)
    person: str = ""  # company contacts only: `person_key`, to tell the same person in two mailboxes

    def to_row(self) -> dict[str, str]:
        return {
            "cv_contact_id": self.cv_contact_id,
            "folder_id": self.folder_id,
            "hash": self.hash,
            "owner_cv_user_id": self.owner_cv_user_id,
            "field_hashes": json.dumps(dict(self.field_hashes), sort_keys=True, separators=(",", ":")),
            **({"person": self.person} if self.person else {}),
        }

    @classmethod
    def from_row(cls, graph_contact_id: str, row: Mapping[str, Any]) -> MapEntry:
        """Read a row; unknown properties (PartitionKey, Timestamp, ...) are ignored, damaged hashes forgotten."""
        hashes: dict[str, str] = {}
        try:
            loaded = json.loads(str(row.get("field_hashes") or "{}"))
        except ValueError:
            loaded = {}
        if isinstance(loaded, dict):
            hashes = {str(k): str(v) for k, v in loaded.items()}
        return cls(
            graph_contact_id=graph_contact_id,
            cv_contact_id=str(row.get("cv_contact_id") or ""),
            folder_id=str(row.get("folder_id") or ""),
            hash=str(row.get("hash") or ""),
            owner_cv_user_id=str(row.get("owner_cv_user_id") or ""),
            field_hashes=hashes,
            person=str(row.get("person") or ""),
        )

    @classmethod
    def for_contact(cls, contact: MappedContact, cv_contact_id: str, owner_cv_user_id: str) -> MapEntry:
        fields = contact.fields()
        return cls(contact.graph_contact_id, cv_contact_id, contact.folder_id, contact_hash(fields),
                   owner_cv_user_id, field_hashes(fields), "" if owner_cv_user_id else person_key(contact))


def person_key(contact: MappedContact) -> str:
    """Who a company contact is: its name (case and spacing ignored) and its set of E.164 numbers, hashed.
    Two mailboxes holding the same person give the same key."""
    name = " ".join(contact.display_name.casefold().split())
    return digest([name, sorted({p.number for p in contact.phone_numbers})], 16)


def contactmap_from_rows(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, MapEntry]:
    """`State.rows("contactmap", scope)` -> the mapping `plan_contacts` takes."""
    return {key: MapEntry.from_row(key, row) for key, row in rows.items() if row.get("cv_contact_id")}

