"""Calendar status, Teams presence as the second input: read it each tick, fold it into the calendar's resolution.

I/O (one getPresencesByUserId request per 650 users per tick). When presence cannot be read the
calendar part keeps working: without the permission (Presence.Read.All withdrawn) presence counts
as nothing for everyone; when Graph is throttled or down for presence, a status that Teams alone
set is kept until presence can be read again, the rest follows the calendar. Either way the run
says why presence was left out, once a day (a notices row, as for mailbox problems).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.errors import AdminFix, ItemError, Transient
from shared.graph.presence import get_presences
from shared.status_maps import parse_presence_map
from shared.sync.calendar.ledger import NOTICE_SCOPE, NOTICES_TABLE, LedgerEntry, notice_due, notice_row
from shared.sync.calendar.render import CalendarUser, clause
from shared.sync.calendar.rules import SOURCE_TEAMS, Resolution
from shared.sync.calendar.teams import Presence, combine, presence_from_graph

if TYPE_CHECKING:
    from shared.sync.base import SyncContext

PRESENCE_NOTICE_KEY = "~teams-presence"  # the tenant's own row in the notices partition (no object id starts with ~)
PRESENCE_NOTICE_KIND = "presence_left_out"
PRESENCE_REPORT_ID = "Teams presence"


@dataclass(frozen=True)
class PresenceReading:
    """Teams presence at one tick: by object id, or None when it could not be read (`refused`: no permission)."""

    by_id: Mapping[str, Presence] | None
    refused: bool
    presence_map: Mapping[str, str | None]

    def combine(self, object_id: str, calendar: Resolution | None, ledger: LedgerEntry | None) -> Resolution | None:
        if self.by_id is None:
            if not self.refused and ledger is not None and ledger.source == SOURCE_TEAMS:
                return None  # what Teams alone set stays until presence can be read again
            return calendar
        return combine(calendar, self.by_id.get(object_id.lower()), self.presence_map)


class PresenceInput:
    """Teams presence for one run: the map, each tick's reading, and why presence was left out (if it was)."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.presence_map = parse_presence_map(ctx.options.presence_map)
        self.left_out: str | None = None
        self.read_once = False

    def read(self, users: Sequence[CalendarUser]) -> PresenceReading:
        try:
            raw = get_presences(self.ctx.graph, [u.object_id for u in users])
        except AdminFix as exc:
            self.left_out = f"left out of the status: {clause(exc)}; the calendar part keeps working"
            return PresenceReading(None, True, self.presence_map)
        except (Transient, ItemError) as exc:
            self.left_out = (f"left out of the status this run: {clause(exc)}; statuses Teams set are kept, the "
                             "calendar part keeps working")
            return PresenceReading(None, False, self.presence_map)
        self.read_once = True
        return PresenceReading({key: presence_from_graph(p) for key, p in raw.items()}, False, self.presence_map)

    def report(self, notices: Mapping[str, Mapping[str, Any]], now: datetime) -> None:
        """Say once a day why presence was left out; forget the notice once presence was read again."""
        row = notices.get(PRESENCE_NOTICE_KEY)
        dry_run = self.ctx.dry_run
        if self.left_out is None:
            if row is not None and self.read_once and not dry_run:
                self.ctx.state.delete(NOTICES_TABLE, [PRESENCE_NOTICE_KEY], scope=NOTICE_SCOPE)
            return
        if not (dry_run or notice_due(row, PRESENCE_NOTICE_KIND, now)):
            self.ctx.report.extra["presence_notice_not_repeated"] = True
            return
        self.ctx.report.add_warning(PRESENCE_REPORT_ID, f"{self.left_out}; reported once a day")
        if not dry_run:
            self.ctx.state.upsert(NOTICES_TABLE, {PRESENCE_NOTICE_KEY: notice_row(row, PRESENCE_NOTICE_KIND, "", now)},
                                  scope=NOTICE_SCOPE)
