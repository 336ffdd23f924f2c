"""Users sync, the plan's pieces: independent ClearVox writes (create, update, link, deactivate) and what
is only reported. Pure data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from shared.sync.users.rules import Link


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
    held_reason: str = ""  # why the mass-change guard held `held`

    def actions(self) -> list[Action]:
        """Every ClearVox write of the plan; they do not depend on each other, so any order or concurrency works."""
        return [*self.creates, *self.link_actions, *self.updates, *self.deactivations]
