"""Contacts sync: each linked user's Outlook contacts become that user's private ClearVox contacts.

The first part is pure (no I/O): it maps Graph contacts to ClearVox fields,
hashes what was written, and turns one round of Graph changes into a
`ContactsPlan` that the apply layer executes and `--dry-run` prints.
shared.sync.contacts.run (`ContactsRun`, entry point `run_contacts`) reads
Graph, ClearVox and the state store, executes the plans and moves the cursors on.

Rules the plan enforces, so that the apply layer cannot get them wrong:

* Only contacts this connector created are touched: they carry the Graph
  contact id as `external_id` and are known from the contactmap or from the
  caller's listing of the owner's contacts that have an `external_id`.
  Contacts people created in ClearVox (no `external_id`) never appear here.
* Nothing is created twice: a Graph contact without a contactmap row is first
  matched by `external_id` against the ClearVox listing; without a listing the
  `Create` is marked `reconcile` so the apply layer looks it up first.
* Visibility is the user's choice: never sent, and a contact the user made
  public is kept (and reported) when it disappears from Outlook.
* A mass disappearance (more than half of a user's synced contacts, and more
  than `hold_min`) is held back until it is seen twice or confirmed.

How a run stays cheap and safe:

* Whose: links rows with status "linked". Whether the ClearVox user is active
  is read only for users with something to write (one GET each, or one paged
  listing of all users when that is fewer requests), never per user per run.
* Which: each folder has its own deltaLink (cursors table). The folder list is
  discovered with the full reconcile (every full_sync_hours, spread per user),
  and again when a folder's delta answers 404 or contacts were removed (they
  may have moved to a new folder). All delta rounds go through $batch.
* A deltaLink moves on only once its changes were applied; items that failed
  are kept in the retries table and fetched again next run. A hold keeps the
  user's deltaLinks where they are, so the next run sees the same deletions.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.clearvox import CONTACT_FIELDS, CvContact, PhoneNumber
from shared.digest import digest
from shared.phone import DEFAULT_REGION, UnparseablePhone, to_e164

if TYPE_CHECKING:
    pass

# Limits of ContactWrite in clearvox-api.yaml.
MAX_DISPLAY_NAME = 200
MAX_NAME = 100
MAX_TEXT = 200  # company, job_title
MAX_EMAILS = 3
MAX_PHONES = 10

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
REASON_DELETED = "deleted in Outlook"
REASON_FOLDER_REMOVED = "contact folder removed in Outlook"
REASON_ABSENT = "no longer in Outlook"
REASON_NO_LONGER_QUALIFIES = "no usable phone number any more"
REASON_DUPLICATE = "duplicate of the synced contact"
REASON_PUBLIC_KEPT = "public contact kept"


@dataclass(frozen=True)
class ContactsOptions:
    """Tenant options of the contacts sync.

    `confirm_deletions` lets a held mass deletion through (an operator looked);
    the hold triggers when a run would delete more than `hold_threshold_ratio`
    of a user's synced contacts and more than `hold_min` of them.
    """

    default_region: str = DEFAULT_REGION
    confirm_deletions: bool = False
    hold_threshold_ratio: float = 0.5
    hold_min: int = 10


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
    text = " ".join(value.split())
    if not text:
        return None
    if len(text) > limit:
        warnings.append(f"{label} shortened to {limit} characters")
        text = text[:limit].rstrip()
    return text


def _emails(graph_contact: Mapping[str, Any]) -> tuple[str, ...]:
    """Up to three distinct addresses; Exchange-internal (X500) addresses have no '@' and are left out."""
    seen: dict[str, str] = {}
    for entry in graph_contact.get("emailAddresses") or ():
        address = entry.get("address") if isinstance(entry, Mapping) else None
        if not isinstance(address, str):
            continue
        address = address.strip()
        if "@" in address and address.lower() not in seen:
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
    emails = _emails(graph_contact)
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

    def to_row(self) -> dict[str, str]:
        return {
            "cv_contact_id": self.cv_contact_id,
            "folder_id": self.folder_id,
            "hash": self.hash,
            "owner_cv_user_id": self.owner_cv_user_id,
            "field_hashes": json.dumps(dict(self.field_hashes), sort_keys=True, separators=(",", ":")),
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
        )

    @classmethod
    def for_contact(cls, contact: MappedContact, cv_contact_id: str, owner_cv_user_id: str) -> MapEntry:
        fields = contact.fields()
        return cls(contact.graph_contact_id, cv_contact_id, contact.folder_id, contact_hash(fields),
                   owner_cv_user_id, field_hashes(fields))


def contactmap_from_rows(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, MapEntry]:
    """`State.rows("contactmap", scope)` -> the mapping `plan_contacts` takes."""
    return {key: MapEntry.from_row(key, row) for key, row in rows.items() if row.get("cv_contact_id")}


# --------------------------------------------------------------------------- plan items


@dataclass(frozen=True)
class Create:
    """Create a private contact owned by the user.

    `reconcile` is set when the plan had no listing of the user's synced
    contacts: the apply layer must look the external_id up and update the
    contact it finds instead of creating a second one.
    """

    owner_cv_user_id: str
    contact: MappedContact
    reconcile: bool = False

    @property
    def graph_contact_id(self) -> str:
        return self.contact.graph_contact_id

    def fields(self) -> dict[str, Any]:
        return self.contact.create_fields()

    def map_entry(self, cv_contact_id: str) -> MapEntry:
        return MapEntry.for_contact(self.contact, cv_contact_id, self.owner_cv_user_id)

    def changes_against(self, existing: CvContact) -> dict[str, Any]:
        """For a `reconcile` create that found its contact: the fields to patch instead of creating."""
        return differing_fields(self.contact.fields(), cv_fields(existing))


@dataclass(frozen=True)
class Update:
    """Patch only `changes`; `before` holds the ClearVox values of those fields when they were listed."""

    owner_cv_user_id: str
    cv_contact_id: str
    contact: MappedContact
    changes: Mapping[str, Any]
    before: Mapping[str, Any] | None = None

    @property
    def graph_contact_id(self) -> str:
        return self.contact.graph_contact_id

    @property
    def map_entry(self) -> MapEntry:
        return MapEntry.for_contact(self.contact, self.cv_contact_id, self.owner_cv_user_id)


@dataclass(frozen=True)
class Delete:
    """Delete a synced contact.

    `verify` is set when the plan did not see the contact in ClearVox: the apply
    layer fetches it first and deletes only if it is still private and still
    carries this external_id (otherwise: public kept / not ours, no delete).
    A `duplicate` leaves the contactmap row alone: it points at the keeper.
    """

    cv_contact_id: str
    graph_contact_id: str
    reason: str
    name: str = ""
    verify: bool = False
    duplicate: bool = False


@dataclass(frozen=True)
class KeptPublic:
    """A contact gone from Outlook that the user made public in ClearVox: kept, and reported."""

    cv_contact_id: str
    graph_contact_id: str
    reason: str  # why it would otherwise have been deleted
    name: str = ""
    duplicate: bool = False

    def describe(self) -> str:
        return f"{REASON_PUBLIC_KEPT}: {self.reason}" + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class Held:
    """Deletions withheld for one user because too many of the user's contacts would go at once.

    The caller stores `key` and keeps the user's delta links where they are, so
    the next run sees the same removals: an identical set (same key) then goes
    through, a different one is held again under its new key.
    """

    owner_cv_user_id: str
    key: str
    deletes: tuple[Delete, ...]
    synced: int  # the user's synced contacts the ratio was taken of

    @property
    def count(self) -> int:
        return len(self.deletes)

    def reason(self) -> str:
        return (f"deletion of {self.count} of {self.synced} synced contacts held; it goes through when the next "
                "run finds the same deletions, or with confirm_deletions")


@dataclass(frozen=True)
class Retained:
    """A user whose contacts are not synced any more (unlinked, removed, inactive); what was synced stays."""

    owner_cv_user_id: str
    count: int
    reason: str

    def describe(self) -> str:
        return f"{self.reason}: {self.count} synced contacts kept"


@dataclass
class ContactsPlan:
    """Everything one run would do for one user's contacts, and the contactmap rows that follow from it."""

    owner_cv_user_id: str
    creates: list[Create] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    kept_public: list[KeptPublic] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    warnings: list[Skip] = field(default_factory=list)  # synced, but something was dropped
    unchanged: list[str] = field(default_factory=list)  # Graph ids whose content was already written
    reconciled: list[str] = field(default_factory=list)  # matched by external_id instead of the contactmap
    map_upserts: dict[str, MapEntry] = field(default_factory=dict)  # rows to write regardless of apply
    map_deletes: list[str] = field(default_factory=list)  # rows whose ClearVox contact is already gone
    unmapped_synced: list[str] = field(default_factory=list)  # synced in ClearVox, unknown to the contactmap
    hold: Held | None = None
    released_hold: str | None = None  # key of a hold let through this run (repeat or confirmed)
    retained: Retained | None = None

    @property
    def needs_cv_index(self) -> bool:
        """True when the plan was made without the ClearVox listing and acting on it would need one."""
        return any(c.reconcile for c in self.creates) or any(d.verify for d in self.deletes)

    @property
    def is_noop(self) -> bool:
        return not (self.creates or self.updates or self.deletes or self.map_upserts or self.map_deletes
                    or self.kept_public)

    def summary(self) -> dict[str, Any]:
        return summarize([self])


# --------------------------------------------------------------------------- planning


def hold_key(owner_cv_user_id: str, graph_contact_ids: Iterable[str]) -> str:
    """Identity of a set of deletions: what a later run compares to recognise the same set."""
    return digest([owner_cv_user_id, sorted(set(graph_contact_ids))], 32)


def _changed_fields(new: Mapping[str, Any], written: Mapping[str, str]) -> dict[str, Any]:
    """Fields whose value differs from what was last written (a field without a stored hash counts as changed)."""
    hashes = field_hashes(new)
    return {k: new[k] for k in SYNCED_FIELDS if written.get(k) != hashes[k]}


def differing_fields(new: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    return {k: new[k] for k in SYNCED_FIELDS if _plain(new[k]) != _plain(current.get(k))}


def plan_contacts(
    owner_cv_user_id: str,
    changes: Sequence[Mapping[str, Any]],
    *,
    removed_ids: Iterable[str] | Mapping[str, str | None] = (),
    removed_folder_ids: Collection[str] = (),
    contactmap: Mapping[str, MapEntry] | None = None,
    cv_synced: Mapping[str, CvContact] | None = None,
    options: ContactsOptions | None = None,
    previous_hold: str | None = None,
    complete: bool = False,
    complete_folder_ids: Collection[str] = (),
    duplicates: Sequence[CvContact] = (),
) -> ContactsPlan:
    """Plan one user's contacts for this run.

    changes: Graph contacts of this round (all folders), each with `parentFolderId`.
    removed_ids: Graph ids reported `@removed`; as a mapping, id -> the folder whose
        round reported it, so that a removal from a folder the contact already moved
        out of is not taken for a deletion.
    removed_folder_ids: folders that disappeared: all their contacts are deleted.
    contactmap: this user's rows, keyed by Graph contact id.
    cv_synced: the user's ClearVox contacts that have an external_id, keyed by it;
        None when not listed (then creates reconcile and deletes verify at apply time).
        When given it must be complete: a contactmap row whose contact is missing
        from it is taken as gone from ClearVox.
    complete: `changes` holds every contact of the user (a full round): whatever is
        synced but absent from it is deleted. complete_folder_ids: the same for the
        contactmap rows of single folders read in full (e.g. after an expired token).
    duplicates: extra ClearVox contacts sharing an external_id with one in cv_synced
        (see `index_synced`): private ones are deleted.
    previous_hold: `Held.key` stored by the previous run for this user.
    """
    opts = options or ContactsOptions()
    owner = owner_cv_user_id
    plan = ContactsPlan(owner)
    entries = {gid: e for gid, e in (contactmap or {}).items()
               if e.cv_contact_id and e.owner_cv_user_id in ("", owner)}
    synced: dict[str, CvContact] | None = None
    if cv_synced is not None:
        synced = {c.external_id: c for c in cv_synced.values() if c.external_id and c.owner_user_id == owner}

    latest: dict[str, Mapping[str, Any]] = {}
    removals: dict[str, str | None] = (
        dict(removed_ids) if isinstance(removed_ids, Mapping) else dict.fromkeys(removed_ids)
    )
    for change in changes:  # a contact may come twice in one round: the last one counts
        gid = str(change.get("id") or "")
        if "@removed" in change:
            removals.setdefault(gid, None)
        else:
            latest[gid] = change

    candidates: dict[str, str] = {}  # Graph id -> why it goes
    names: dict[str, str] = {}
    for gid, change in latest.items():
        mapped = map_contact(change, opts.default_region)
        entry = entries.get(gid)
        current = synced.get(gid) if synced is not None else None
        if isinstance(mapped, Skip):
            if entry is not None or current is not None:
                candidates[gid] = REASON_NO_LONGER_QUALIFIES
                names[gid] = mapped.name
            else:
                plan.skips.append(mapped)
            continue
        plan.warnings.extend(Skip(gid, w, mapped.display_name) for w in mapped.warnings)
        _plan_change(plan, mapped, entry, current, synced is not None)

    for gid, folder in removals.items():
        entry = entries.get(gid)
        if gid in latest or (folder and entry is not None and entry.folder_id and entry.folder_id != folder):
            continue  # moved: present in another folder, now or since an earlier run
        candidates.setdefault(gid, REASON_DELETED)
    for gid, entry in entries.items():
        if gid in latest:
            continue
        if entry.folder_id in removed_folder_ids:
            candidates.setdefault(gid, REASON_FOLDER_REMOVED)
        elif complete or entry.folder_id in complete_folder_ids:
            candidates.setdefault(gid, REASON_ABSENT)
    if complete and synced is not None:
        for gid in synced:
            if gid not in latest:
                candidates.setdefault(gid, REASON_ABSENT)

    for gid, reason in candidates.items():
        _plan_removal(plan, gid, reason, names.get(gid, ""), entries.get(gid), synced)

    if synced is not None:
        handled = set(latest) | set(candidates)
        plan.unmapped_synced = sorted(gid for gid in synced if gid not in entries and gid not in handled)
        _plan_duplicates(plan, duplicates, synced, owner)

    _apply_hold(plan, opts, previous_hold, len(set(entries) | set(synced or ())))
    return plan


def _plan_change(plan: ContactsPlan, mapped: MappedContact, entry: MapEntry | None,
                 current: CvContact | None, listed: bool) -> None:
    """Create, update or leave one contact that is in Outlook."""
    owner = plan.owner_cv_user_id
    gid = mapped.graph_contact_id
    if current is not None:
        cv_id = current.id
    elif entry is not None and not listed:
        cv_id = entry.cv_contact_id
    else:
        # Listed and absent: never created, or removed in ClearVox since. Not listed and
        # unmapped: the apply layer looks the external_id up before it creates.
        plan.creates.append(Create(owner, mapped, reconcile=not listed))
        return

    new = mapped.fields()
    written = entry if entry is not None and entry.cv_contact_id == cv_id else None
    if written is not None and written.hash == contact_hash(new):
        diff: dict[str, Any] = {}
    elif written is not None and written.field_hashes:
        diff = _changed_fields(new, written.field_hashes)  # only what Outlook changed since the last write
    elif current is not None:
        diff = differing_fields(new, cv_fields(current))  # reconciling: compare with what is there
    else:
        diff = dict(new)  # nothing known about what was written: write it all
    if written is None:
        plan.reconciled.append(gid)

    target = MapEntry.for_contact(mapped, cv_id, owner)
    if diff:
        before = {k: cv_fields(current)[k] for k in diff} if current is not None else None
        plan.updates.append(Update(owner, cv_id, mapped, diff, before))
        return
    plan.unchanged.append(gid)
    if entry != target:
        plan.map_upserts[gid] = target


def _plan_removal(plan: ContactsPlan, gid: str, reason: str, name: str,
                  entry: MapEntry | None, synced: Mapping[str, CvContact] | None) -> None:
    """Delete a synced contact that left Outlook, unless the user made it public."""
    if synced is None:
        if entry is not None:
            plan.deletes.append(Delete(entry.cv_contact_id, gid, reason, name, verify=True))
        return
    current = synced.get(gid)
    if current is None:
        if entry is not None:
            plan.map_deletes.append(gid)  # already gone from ClearVox (or no longer ours)
        return
    name = name or current.display_name
    if current.visibility == "public":
        plan.kept_public.append(KeptPublic(current.id, gid, reason, name))
    else:
        plan.deletes.append(Delete(current.id, gid, reason, name))


def _plan_duplicates(plan: ContactsPlan, duplicates: Sequence[CvContact],
                     synced: Mapping[str, CvContact], owner: str) -> None:
    for dup in duplicates:
        keeper = synced.get(dup.external_id or "")
        if keeper is None or dup.id == keeper.id or dup.owner_user_id != owner:
            continue
        reason = f"{REASON_DUPLICATE} {keeper.id}"
        if dup.visibility == "public":
            plan.kept_public.append(KeptPublic(dup.id, dup.external_id or "", reason, dup.display_name, duplicate=True))
        else:
            plan.deletes.append(Delete(dup.id, dup.external_id or "", reason, dup.display_name, duplicate=True))


def _apply_hold(plan: ContactsPlan, opts: ContactsOptions, previous_hold: str | None, synced_count: int) -> None:
    """Withhold a mass deletion unless it is confirmed or the same set was held last time."""
    doomed = [d for d in plan.deletes if not d.duplicate]
    if len(doomed) <= opts.hold_min or len(doomed) <= opts.hold_threshold_ratio * synced_count:
        return
    key = hold_key(plan.owner_cv_user_id, (d.graph_contact_id for d in doomed))
    if opts.confirm_deletions or key == previous_hold:
        plan.released_hold = key
        return
    plan.hold = Held(plan.owner_cv_user_id, key, tuple(doomed), synced_count)
    plan.deletes = [d for d in plan.deletes if d.duplicate]


def index_synced(contacts: Iterable[CvContact], contactmap: Mapping[str, MapEntry] | None = None,
                 ) -> tuple[dict[str, CvContact], list[CvContact]]:
    """Index a user's ClearVox contacts by external_id for `plan_contacts`.

    Contacts without an external_id (created by people) are dropped here and so
    never reach the plan. When several share an external_id, the one the
    contactmap points to is kept, else a public one, else the lowest id; the
    others are returned as duplicates.
    """
    groups: dict[str, list[CvContact]] = {}
    for contact in contacts:
        if contact.external_id:
            groups.setdefault(contact.external_id, []).append(contact)
    index: dict[str, CvContact] = {}
    extra: list[CvContact] = []
    mapped = {gid: e.cv_contact_id for gid, e in (contactmap or {}).items()}
    for gid, group in groups.items():
        group.sort(key=lambda c: (c.id != mapped.get(gid), c.visibility != "public", c.id))
        index[gid] = group[0]
        extra.extend(group[1:])
    return index, extra


def retained_plan(owner_cv_user_id: str, contactmap: Mapping[str, MapEntry], reason: str) -> ContactsPlan:
    """Plan for a user whose contacts are no longer synced (unlinked, removed, inactive): keep and report."""
    return ContactsPlan(owner_cv_user_id, retained=Retained(owner_cv_user_id, len(contactmap), reason))


# --------------------------------------------------------------------------- after apply


@dataclass(frozen=True)
class MapChanges:
    """The contactmap writes that follow from an applied plan."""

    upserts: dict[str, MapEntry]
    deletes: list[str]

    def rows(self) -> dict[str, dict[str, str]]:
        """`upserts` as `State.upsert` takes them."""
        return {gid: entry.to_row() for gid, entry in self.upserts.items()}


def map_changes(plan: ContactsPlan, created: Mapping[str, str] | None = None,
                failed: Collection[str] = ()) -> MapChanges:
    """Contactmap rows to write once the plan was applied.

    created: Graph contact id -> ClearVox id of each contact created (or found by
    reconciling, or written anew because an update found it gone); failed: Graph ids whose action failed. A failed update keeps
    its old hash, so the next run tries again; held deletions keep their rows.
    A `verify` delete that found the contact public or no longer ours counts as
    done: the contact left Outlook either way.
    """
    done = created or {}
    upserts = dict(plan.map_upserts)
    upserts.update({c.graph_contact_id: c.map_entry(done[c.graph_contact_id])
                    for c in plan.creates if c.graph_contact_id in done})
    for u in plan.updates:
        if u.graph_contact_id in done:  # gone from ClearVox meanwhile: written again under a new id
            upserts[u.graph_contact_id] = MapEntry.for_contact(u.contact, done[u.graph_contact_id], u.owner_cv_user_id)
        elif u.graph_contact_id not in failed:
            upserts[u.graph_contact_id] = u.map_entry
    deletes = list(plan.map_deletes)
    deletes += [d.graph_contact_id for d in plan.deletes if not d.duplicate and d.graph_contact_id not in failed]
    deletes += [k.graph_contact_id for k in plan.kept_public if not k.duplicate]
    gone = set(deletes)
    return MapChanges({gid: e for gid, e in upserts.items() if gid not in gone}, deletes)


# --------------------------------------------------------------------------- reporting


def summarize(plans: Iterable[ContactsPlan]) -> dict[str, Any]:
    """Counts and reported items in the run report's JSON shape (`failed` is the apply layer's to fill)."""
    out: dict[str, Any] = {
        "sync": "contacts", "created": 0, "updated": 0, "deleted": 0, "unchanged": 0,
        "kept_public": 0, "held": 0, "retained": 0,
        "skipped": [], "failed": [], "warnings": [],
    }
    for plan in plans:
        out["created"] += len(plan.creates)
        out["updated"] += len(plan.updates)
        out["deleted"] += len(plan.deletes)
        out["unchanged"] += len(plan.unchanged)
        out["kept_public"] += len(plan.kept_public)
        out["skipped"] += [s.to_json() for s in plan.skips]
        out["skipped"] += [{"id": k.graph_contact_id, "reason": k.describe()} for k in plan.kept_public]
        if plan.hold is not None:
            out["held"] += plan.hold.count
            out["skipped"].append({"id": plan.owner_cv_user_id, "reason": plan.hold.reason()})
        if plan.retained is not None:
            out["retained"] += plan.retained.count
            out["skipped"].append({"id": plan.owner_cv_user_id, "reason": plan.retained.describe()})
        out["warnings"] += [w.to_json() for w in plan.warnings]
    return out


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, PhoneNumber):
        return f"{value.number} {value.type}"
    return "-" if value is None else str(value)


def render_plan(plan: ContactsPlan) -> str:
    """What `--dry-run` prints for one user: a count line, then one line per action."""
    s = plan.summary()
    head = (f"contacts of ClearVox user {plan.owner_cv_user_id}: {s['created']} to create, {s['updated']} to update, "
            f"{s['deleted']} to delete, {s['unchanged']} unchanged, {s['kept_public']} public kept, "
            f"{len(plan.skips)} skipped")
    lines = [head]
    if plan.retained is not None:
        lines.append(f"  = keep    {plan.retained.describe()}")
    for c in plan.creates:
        phones = ", ".join(_show(p) for p in c.contact.phone_numbers)
        lines.append(f"  + create  {c.contact.display_name} ({phones})" + ("  [match by external_id first]"
                                                                            if c.reconcile else ""))
    for u in plan.updates:
        parts = []
        for name, value in u.changes.items():
            was = f"{_show(u.before[name])} -> " if u.before is not None else ""
            parts.append(f"{name}: {was}{_show(value)}")
        lines.append(f"  ~ update  {u.contact.display_name} [{u.cv_contact_id}]: " + "; ".join(parts))
    for d in plan.deletes:
        lines.append(f"  - delete  {d.name or d.graph_contact_id} [{d.cv_contact_id}]: {d.reason}"
                     + ("  [only if still private]" if d.verify else ""))
    for k in plan.kept_public:
        lines.append(f"  = keep    {k.name or k.graph_contact_id} [{k.cv_contact_id}]: {REASON_PUBLIC_KEPT}, {k.reason}")
    for sk in plan.skips:
        lines.append(f"  ! skip    {sk.name or sk.id}: {sk.reason}")
    for w in plan.warnings:
        lines.append(f"  ! note    {w.name or w.id}: {w.reason}")
    if plan.hold is not None:
        lines.append(f"  ! hold    {plan.hold.reason()}")
        lines += [f"      held  {d.name or d.graph_contact_id} [{d.cv_contact_id}]: {d.reason}"
                  for d in plan.hold.deletes]
    if plan.released_hold is not None:
        lines.append("  ! deletions previously held go through now")
    return "\n".join(lines)
