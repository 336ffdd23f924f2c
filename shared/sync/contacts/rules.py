"""Contacts sync, the plan (pure, no I/O): one round of Graph changes -> a `ContactsPlan` per owner.

An owner is a ClearVox user (personal contacts, from that user's mailbox) or the
company phone book (owner "", from the shared mailboxes in NEXXT365_COMPANY_CONTACTS).
The apply layer (shared.sync.contacts.apply) executes plans, `--dry-run` renders
them (shared.sync.contacts.render), shared.sync.contacts.run reads Graph, ClearVox
and the state store around them.

Rules the plan enforces, so that the apply layer cannot get them wrong:

* Only contacts this connector created are touched: they carry the Graph
  contact id as `external_id` and are known from the contactmap or from the
  caller's listing of the owner's contacts that have an `external_id`.
  Contacts people created in ClearVox (no `external_id`) never appear here.
* Nothing is created twice: a Graph contact without a contactmap row is first
  matched by `external_id` against the ClearVox listing; without a listing the
  `Create` is marked `reconcile` so the apply layer looks it up first.
* Visibility is the user's choice: never sent, and a personal contact the user
  made public is kept (and reported) when it disappears from Outlook. (Company
  contacts are public by nature: they follow the shared mailbox.)
* The one guard (shared.sync.base.hold_reason, rule DELETIONS below): an owner's
  deletions are held when they exceed DELETIONS.limit in one run, or when at least
  DELETIONS.floor of them would remove more than half of the owner's synced
  contacts. A hold is released by `--confirm-deletions`, or by Outlook itself no
  longer reporting the deletions (the delta links stay where they were, so the next
  run asks Graph again); never by seeing the same deletions again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.clearvox import CvContact
from shared.digest import digest
from shared.phone import DEFAULT_REGION
from shared.sync.base import MassChangeRule, hold_reason
from shared.sync.contacts.mapping import (
    MapEntry,
    MappedContact,
    Skip,
    changed_fields,
    contact_hash,
    cv_fields,
    differing_fields,
    map_contact,
)

REASON_DELETED = "deleted in Outlook"
REASON_FOLDER_REMOVED = "contact folder removed in Outlook"
REASON_ABSENT = "no longer in Outlook"
REASON_NO_LONGER_QUALIFIES = "no usable phone number any more"
REASON_DUPLICATE = "duplicate of the synced contact"
REASON_PUBLIC_KEPT = "public contact kept"

# The one guard, per owner: `known` is that owner's synced contacts.
DELETIONS = MassChangeRule("deletions", limit=100, share=0.5, floor=3)


@dataclass(frozen=True)
class ContactsOptions:
    """Tenant options of the contacts sync.

    `confirm_deletions` lets held deletions through (an operator looked);
    `deletions` is the guard rule (module docstring).
    """

    default_region: str = DEFAULT_REGION
    confirm_deletions: bool = False
    deletions: MassChangeRule = DELETIONS


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

    def map_entry(self, cv_contact_id: str) -> MapEntry:
        return MapEntry.for_contact(self.contact, cv_contact_id, self.owner_cv_user_id)


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
    """Deletions withheld for one owner by the guard (`why`).

    The caller stores `key` (for status) and keeps the owner's delta links where
    they are, so the next run asks Graph again: deletions Outlook no longer reports
    are not planned any more (the hold is gone); those it still reports are held
    again, until an operator confirms them.
    """

    owner_cv_user_id: str
    key: str
    deletes: tuple[Delete, ...]
    synced: int  # the owner's synced contacts (the guard's `known`)
    why: str = ""

    @property
    def count(self) -> int:
        return len(self.deletes)

    def reason(self) -> str:
        return (f"deletion of {self.count} of {self.synced} synced contacts held ({self.why}); check Outlook, then "
                "run `nexxt365 sync contacts --confirm-deletions` to let it through; it is dropped by itself "
                "when Outlook no longer reports these deletions")


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
    source: str = ""  # company contacts: the shared mailbox they come from
    released_hold: str | None = None  # key of deletions the guard would hold, let through by --confirm-deletions
    retained: Retained | None = None

    @property
    def needs_cv_index(self) -> bool:
        """True when the plan was made without the ClearVox listing and acting on it would need one."""
        return any(c.reconcile for c in self.creates) or any(d.verify for d in self.deletes)

    @property
    def is_noop(self) -> bool:
        return not (self.creates or self.updates or self.deletes or self.map_upserts or self.map_deletes
                    or self.kept_public)


# --------------------------------------------------------------------------- planning


def hold_key(owner_cv_user_id: str, graph_contact_ids: Iterable[str]) -> str:
    """Identity of a set of deletions: what a later run compares to recognise the same set."""
    return digest([owner_cv_user_id, sorted(set(graph_contact_ids))], 32)


def plan_contacts(owner_cv_user_id: str, changes: Sequence[Mapping[str, Any]], *,
                  removed_ids: Iterable[str] | Mapping[str, str | None] = (), removed_folder_ids: Collection[str] = (),
                  contactmap: Mapping[str, MapEntry] | None = None, cv_synced: Mapping[str, CvContact] | None = None,
                  options: ContactsOptions | None = None, complete: bool = False,
                  complete_folder_ids: Collection[str] = (), duplicates: Sequence[CvContact] = ()) -> ContactsPlan:
    """Plan one owner's contacts for this run (owner "": the company phone book).

    changes: Graph contacts of this round (all folders), each with `parentFolderId`.
    removed_ids: Graph ids reported `@removed`; as a mapping, id -> the folder whose
        round reported it, so that a removal from a folder the contact already moved
        out of is not taken for a deletion.
    removed_folder_ids: folders that disappeared: all their contacts are deleted.
    contactmap: this owner's rows, keyed by Graph contact id.
    cv_synced: the owner's ClearVox contacts that have an external_id, keyed by it;
        None when not listed (then creates reconcile and deletes verify at apply time).
        When given it must be complete: a contactmap row whose contact is missing
        from it is taken as gone from ClearVox.
    complete: `changes` holds every contact (a full round): what is synced but absent is
        deleted; complete_folder_ids: the same for single folders read in full.
    duplicates: extra ClearVox contacts sharing an external_id (`index_synced`): deleted.
    """
    opts = options or ContactsOptions()
    owner = owner_cv_user_id
    plan = ContactsPlan(owner)
    entries = {gid: e for gid, e in (contactmap or {}).items()
               if e.cv_contact_id and e.owner_cv_user_id in ("", owner)}
    synced: dict[str, CvContact] | None = None
    if cv_synced is not None:
        synced = {c.external_id: c for c in cv_synced.values()
                  if c.external_id and (c.owner_user_id or "") == owner}

    latest, removals = _split_changes(changes, removed_ids)
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
    _removal_candidates(candidates, latest, removals, entries, synced, removed_folder_ids,
                        complete, complete_folder_ids)

    for gid, reason in candidates.items():
        _plan_removal(plan, gid, reason, names.get(gid, ""), entries.get(gid), synced)

    if synced is not None:
        handled = set(latest) | set(candidates)
        plan.unmapped_synced = sorted(gid for gid in synced if gid not in entries and gid not in handled)
        _plan_duplicates(plan, duplicates, synced, owner)

    _apply_hold(plan, opts, len(set(entries) | set(synced or ())))
    return plan


def _split_changes(changes: Sequence[Mapping[str, Any]], removed_ids: Iterable[str] | Mapping[str, str | None],
                   ) -> tuple[dict[str, Mapping[str, Any]], dict[str, str | None]]:
    """The last version of each contact in the round (a contact may come twice), and the removals."""
    latest: dict[str, Mapping[str, Any]] = {}
    removals: dict[str, str | None] = (
        dict(removed_ids) if isinstance(removed_ids, Mapping) else dict.fromkeys(removed_ids)
    )
    for change in changes:
        gid = str(change.get("id") or "")
        if "@removed" in change:
            removals.setdefault(gid, None)
        else:
            latest[gid] = change
    return latest, removals


def _removal_candidates(candidates: dict[str, str], latest: Mapping[str, Any], removals: Mapping[str, str | None],
                        entries: Mapping[str, MapEntry], synced: Mapping[str, CvContact] | None,
                        removed_folder_ids: Collection[str], complete: bool, complete_folder_ids: Collection[str],
                        ) -> None:
    """Synced contacts that left Outlook: removed, in a removed folder, or absent from a complete round."""
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
        diff = changed_fields(new, written.field_hashes)  # only what Outlook changed since the last write
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
    if current.visibility == "public" and plan.owner_cv_user_id:  # company contacts are public by nature
        plan.kept_public.append(KeptPublic(current.id, gid, reason, name))
    else:
        plan.deletes.append(Delete(current.id, gid, reason, name))


def _plan_duplicates(plan: ContactsPlan, duplicates: Sequence[CvContact],
                     synced: Mapping[str, CvContact], owner: str) -> None:
    for dup in duplicates:
        keeper = synced.get(dup.external_id or "")
        if keeper is None or dup.id == keeper.id or (dup.owner_user_id or "") != owner:
            continue
        reason = f"{REASON_DUPLICATE} {keeper.id}"
        if dup.visibility == "public" and owner:
            plan.kept_public.append(KeptPublic(dup.id, dup.external_id or "", reason, dup.display_name, duplicate=True))
        else:
            plan.deletes.append(Delete(dup.id, dup.external_id or "", reason, dup.display_name, duplicate=True))


def _apply_hold(plan: ContactsPlan, opts: ContactsOptions, synced_count: int) -> None:
    """Withhold deletions the guard holds (duplicates are never held: the keeper stays), unless confirmed."""
    doomed = [d for d in plan.deletes if not d.duplicate]
    why = hold_reason(len(doomed), synced_count, opts.deletions)
    if why is None:
        return
    key = hold_key(plan.owner_cv_user_id, (d.graph_contact_id for d in doomed))
    if opts.confirm_deletions:
        plan.released_hold = key
        return
    plan.hold = Held(plan.owner_cv_user_id, key, tuple(doomed), synced_count, why)
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

