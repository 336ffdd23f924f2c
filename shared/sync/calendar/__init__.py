"""The calendar status sync: the show-as of the event happening now (and, when on, Teams presence) sets the user's ClearVox status."""

from datetime import timedelta

from shared.graph.presence import PRESENCE_PERMISSION
from shared.sync.base import SyncSpec, register
from shared.sync.calendar.run import run_calendar

SPEC = register(SyncSpec(
    name="calendar",
    function="calendar_status",
    run=run_calendar,
    lease=timedelta(minutes=2),
    schedule_setting="NEXXT365_CALENDAR_SCHEDULE",
    schedule_default="0 * * * * *",
    permissions=("Calendars.Read",),
    extra_permissions=lambda options: {PRESENCE_PERMISSION: "NEXXT365_TEAMS_PRESENCE is on, which reads Teams presence "
                                       "with getPresencesByUserId"} if options.teams_presence else {},
    retry_cap=1,  # a status is decided again every minute: a failed write is simply tried on the next run
    budget=timedelta(seconds=45),  # inside its minute, so the next tick is never skipped
    graph_max_retry_after=10.0,  # waiting longer for a throttled Graph only delays the next run
))
