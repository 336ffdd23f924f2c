"""Timer: the calendar sync for every configured tenant (schedule: NEXXT365_CALENDAR_SCHEDULE)."""

from __future__ import annotations

import azure.functions as func

from shared.timer import tick

bp = func.Blueprint()


@bp.timer_trigger(schedule="%NEXXT365_CALENDAR_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def calendar_status(timer: func.TimerRequest) -> None:
    """Thin on purpose: all logic is in shared/ and runs the same from the CLI and the tests."""
    tick("calendar", timer)
