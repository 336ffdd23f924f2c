"""Calendar status, the state rows: the status ledger (what the connector set, for what) and the notices.

Pure: the run reads and writes these rows; here they are built and read back.
Rows written by earlier versions read the same (no `v` field change).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.sync.calendar.rules import SOURCE_CALENDAR, as_utc

LEDGER_TABLE = "presence"  # the status ledger; the table name predates Teams presence and is kept for stored rows
NOTICES_TABLE = "notices"
NOTICE_SCOPE = "calendar"  # the notices table is shared; this sync keeps its rows in their own partition
NOTICE_INTERVAL = timedelta(days=1)
LEDGER_ROW_VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    """What the connector did about one user's status, and for which event (or Teams presence).

    `status` is what the connector set, or None when it left a manual status alone
    for this event. `manual` marks that the user's own status is being left alone:
    either from before the event (status None) or changed during the event with
    respect_manual (kept until the next event starts). No row at all means the
    connector does not own the user's status.
    """

    key: str
    show_as: str
    until: datetime
    set_at: datetime
    status: str | None
    manual: bool = False
    source: str = SOURCE_CALENDAR  # why: calendar, teams or both (rows from before Teams presence: calendar)
    teams: str = ""  # the Teams presence that decided or agreed, e.g. "Busy/InACall"

    def __post_init__(self) -> None:
        object.__setattr__(self, "until", as_utc(self.until))
        object.__setattr__(self, "set_at", as_utc(self.set_at))

    def to_row(self) -> dict[str, str | int | bool | datetime]:
        """Table Storage properties. Every field is written (None as ""), because upsert merges."""
        return {
            "v": LEDGER_ROW_VERSION,
            "status": self.status or "",
            "event_key": self.key,
            "show_as": self.show_as,
            "until": self.until,
            "set_at": self.set_at,
            "manual": self.manual,
            "source": self.source,
            "teams": self.teams,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> LedgerEntry:
        """The entry stored by `to_row`; extra properties (PartitionKey, etag...) are ignored."""
        try:
            return cls(
                key=str(row["event_key"]),
                show_as=str(row["show_as"]),
                until=row_datetime(row["until"]),
                set_at=row_datetime(row["set_at"]),
                status=str(row.get("status") or "") or None,
                manual=bool(row.get("manual", False)),
                source=str(row.get("source") or SOURCE_CALENDAR),
                teams=str(row.get("teams") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable status ledger row: {exc}") from None


def row_datetime(value: Any) -> datetime:
    """Table Storage hands back datetimes (UTC); tolerate ISO text and a missing zone, which is UTC there."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read_ledgers(rows: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, LedgerEntry], set[str]]:
    """The ledger entries by object id, and the keys of rows that cannot be read (treated as not owned)."""
    ledgers: dict[str, LedgerEntry] = {}
    unreadable: set[str] = set()
    for key, row in rows.items():
        try:
            ledgers[key] = LedgerEntry.from_row(row)
        except ValueError:
            unreadable.add(key)
    return ledgers, unreadable


# ---------------------------------------------------------------- notices


class NoticeKind(StrEnum):
    NO_MAILBOX = "no_mailbox"
    OUT_OF_SCOPE = "out_of_scope"
    NO_EMAIL = "no_email"
    CLEARVOX_USER_MISSING = "clearvox_user_missing"


MAILBOX_KINDS = frozenset({NoticeKind.NO_MAILBOX, NoticeKind.OUT_OF_SCOPE, NoticeKind.NO_EMAIL})
NOTICE_TEXT = {
    NoticeKind.NO_MAILBOX: "no Exchange Online mailbox to read free/busy from (no Exchange licence, on-premises, or an "
                           "unknown address), so no calendar status; the ClearVox status is left as it is",
    NoticeKind.OUT_OF_SCOPE: "mailbox outside the app's mailbox scope (Exchange application access policy or RBAC for "
                             "Applications): add the user to the scoped group if they have ClearVox (docs/calendar.md)",
    NoticeKind.NO_EMAIL: "no email address in the links table to look up the calendar with; the users sync fills it in",
    NoticeKind.CLEARVOX_USER_MISSING: "the linked ClearVox user no longer exists; the users sync relinks or reports it",
}


def notice_due(row: Mapping[str, Any] | None, kind: str, now: datetime) -> bool:
    """A notice is reported when new, when its kind changed, and then once a day (or when the clock went back)."""
    if row is None or row.get("kind") != str(kind):
        return True
    try:
        last = row_datetime(row["reported_at"])
    except (KeyError, TypeError, ValueError):
        return True
    return now >= last + NOTICE_INTERVAL or now < last


def notice_row(old: Mapping[str, Any] | None, kind: str, email: str, now: datetime) -> dict[str, Any]:
    """The notices row that records reporting `kind` now; `since` is kept while the kind stays the same."""
    since = old.get("since") if old and old.get("kind") == str(kind) else None
    return {"kind": str(kind), "email": email, "reported_at": now, "since": since if isinstance(since, datetime) else now}
