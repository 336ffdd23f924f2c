"""Contacts sync, what is remembered between runs: one cursor per mailbox (cursors table, partition "contacts").

One row for the mailbox (schedule and bookkeeping) and one per folder (its
deltaLink), so a mailbox with many folders never outgrows a table property.
A linked user's rows are keyed by the Entra object id; a company mailbox's by
`company|<address>` (shared.sync.contacts.company).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.digest import digest

CURSOR_SCOPE = "contacts"  # cursors table partition of this sync: one row per user, one per folder
FULL_SPREAD = 0.25  # each user's full reconcile falls somewhere in the last quarter of full_sync_hours


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


@dataclass
class FolderCursor:
    """A contact folder of a user and the deltaLink that continues its contacts delta ("" = read it in full)."""

    folder_id: str
    name: str = ""
    delta_link: str = ""


@dataclass
class UserCursor:
    """What the sync remembers of one mailbox: rows in the cursors table, partition "contacts".

    `kind` "user" for a linked user's mailbox (keyed by its object id), "company"
    for a shared mailbox of the company phone book. The folder list is
    re-discovered with the full reconcile, not on every run.
    """

    object_id: str
    cv_user_id: str = ""
    folders: dict[str, FolderCursor] = field(default_factory=dict)
    full_at: datetime | None = None  # last full reconcile: folders re-discovered, every contact compared
    hold: str = ""  # Held.key of the deletions held by the last run
    synced: int = 0  # contactmap rows after the last run
    retries: int = 0  # rows waiting in the retries table
    unavailable: str = ""  # why the mailbox cannot be read; looked at again on the full-reconcile cadence
    checked_at: datetime | None = None
    retained: str = ""  # why the synced contacts are no longer synced (reported once)
    needs_full: bool = False  # e.g. the contactmap was found incomplete
    kind: str = "user"

    def folder_key(self, folder_id: str) -> str:
        return f"{self.object_id}|{digest(folder_id, 20)}"  # Graph ids are long and opaque: hash them into the key

    def rows(self) -> dict[str, dict[str, Any]]:
        """The table rows of this cursor (None values are left out by the state layer)."""
        out: dict[str, dict[str, Any]] = {self.object_id: {
            "kind": self.kind, "object_id": self.object_id, "cv_user_id": self.cv_user_id, "full_at": self.full_at,
            "hold": self.hold, "synced": self.synced, "retries": self.retries, "unavailable": self.unavailable,
            "checked_at": self.checked_at, "retained": self.retained, "needs_full": self.needs_full,
        }}
        for fid, folder in self.folders.items():
            out[self.folder_key(fid)] = {"kind": "folder", "object_id": self.object_id, "folder_id": fid,
                                         "name": folder.name, "delta_link": folder.delta_link}
        return out


def load_cursors(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, UserCursor]:
    """`State.rows("cursors", CURSOR_SCOPE)` -> {object id: UserCursor}; orphaned folder rows are ignored."""
    users: dict[str, UserCursor] = {}
    folders: list[Mapping[str, Any]] = []
    for key, row in rows.items():
        if row.get("kind") in ("user", "company"):
            oid = str(row.get("object_id") or key)
            users[oid] = UserCursor(
                oid, cv_user_id=str(row.get("cv_user_id") or ""), full_at=_as_datetime(row.get("full_at")),
                hold=str(row.get("hold") or ""), synced=int(row.get("synced") or 0), retries=int(row.get("retries") or 0),
                unavailable=str(row.get("unavailable") or ""), checked_at=_as_datetime(row.get("checked_at")),
                retained=str(row.get("retained") or ""), needs_full=bool(row.get("needs_full", False)),
                kind=str(row["kind"]))
        elif row.get("kind") == "folder" and row.get("folder_id"):
            folders.append(row)
    for row in folders:
        user = users.get(str(row.get("object_id") or ""))
        if user is not None:
            fid = str(row["folder_id"])
            user.folders[fid] = FolderCursor(fid, str(row.get("name") or ""), str(row.get("delta_link") or ""))
    return users


def full_reconcile_due(object_id: str, since: datetime | None, now: datetime, hours: int) -> bool:
    """True when `since` is older than this user's period: full_sync_hours, shortened by up to a quarter.

    The per-user shortening (stable, from the object id) spreads the full
    reconciles of users who were first synced together over several runs.
    """
    if since is None:
        return True
    spread = int(digest(object_id, 8), 16) / 16**8
    return now - since >= timedelta(hours=hours) * (1 - FULL_SPREAD * spread)

