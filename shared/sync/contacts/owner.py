"""Contacts sync, one mailbox in one run: what Graph said, what is planned, what was done."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.clearvox import CvContact
from shared.graph.client import DeltaRound
from shared.sync.contacts.cursors import FolderCursor, UserCursor
from shared.sync.contacts.mapping import MapEntry
from shared.sync.contacts.rules import ContactsPlan, Create, Delete, Update


@dataclass
class Outcome:
    """What happened to one owner's ClearVox writes (filled in by the run's main thread only)."""

    created: dict[str, str] = field(default_factory=dict)  # Graph id -> ClearVox id written anew or found
    failed: dict[str, str] = field(default_factory=dict)  # Graph id -> reason
    done: set[int] = field(default_factory=set)  # indexes of finished items
    user_missing: bool = False


@dataclass(eq=False)
class OwnerRun:
    """One mailbox in this run (a linked user's, or a shared mailbox of the company phone book):
    what Graph said, what is planned, what was done."""

    mailbox: str  # how Graph addresses it: the Entra object id, or the shared mailbox's address
    owner: str  # the ClearVox user who owns the contacts; "" for the company phone book
    cursor: UserCursor  # as stored (or new)
    full: bool  # folders re-discovered and every folder read from the start
    folders: dict[str, FolderCursor] = field(default_factory=dict)  # the folder list to keep
    rounds: dict[str, DeltaRound] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)  # folders read from the start this run (complete rounds)
    expired: set[str] = field(default_factory=set)  # of those, the ones whose delta token had expired
    missing: set[str] = field(default_factory=set)  # folders whose delta answered 404
    removed_folders: dict[str, str] = field(default_factory=dict)  # folder id -> name, gone from Outlook
    rediscover: bool = False
    retry_rows: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    retry_items: list[dict[str, Any]] = field(default_factory=list)
    retry_removed: dict[str, str | None] = field(default_factory=dict)
    problem: str = ""  # left out of this run, reported as a failure
    unavailable: str = ""  # mailbox cannot be read, reported as a skip
    checked: bool = False  # `unavailable` comes from Graph in this run (not from the cursor)
    contactmap: dict[str, MapEntry] = field(default_factory=dict)
    map_lost: bool = False
    need_listing: bool = False
    listing: tuple[dict[str, CvContact], list[CvContact]] | None = None
    cv_user: str = ""  # "", "active", "inactive" or "missing"
    plan: ContactsPlan | None = None
    items: list[Create | Update | Delete] = field(default_factory=list)
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def what(self) -> str:
        """How reports name this mailbox."""
        return f"user {self.mailbox}" if self.owner else f"shared mailbox {self.mailbox}"

    @property
    def key(self) -> str:
        """The cursor's row key."""
        return self.cursor.object_id

    @property
    def map_scope(self) -> str:
        """The contactmap partition of this mailbox's contacts."""
        return self.owner or self.key

    @property
    def retry_scope(self) -> str:
        return f"contacts|{self.map_scope}"

    @property
    def ok(self) -> bool:
        return not self.problem and not self.unavailable

    @property
    def has_changes(self) -> bool:
        return (self.full or bool(self.fresh or self.removed_folders or self.retry_items or self.retry_removed)
                or any(r.items or r.removed for r in self.rounds.values()))

    def changes(self) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
        """This run's contacts and removals; each contact carries the folder whose round returned it.

        Retried items come first so that a newer version from a delta round wins.
        The folder is taken from the round rather than `parentFolderId`, which
        may be in another id format than the folder list.
        """
        items = list(self.retry_items)
        removed: dict[str, str | None] = dict(self.retry_removed)
        for fid, rnd in self.rounds.items():
            items += [{**item, "parentFolderId": fid} for item in rnd.items]
            removed.update({str(item.get("id") or ""): fid for item in rnd.removed})
        return items, removed
