"""Timer and queue trigger: the calendar sync for every configured tenant (schedule: NEXXT365_CALENDAR_SCHEDULE)."""

from __future__ import annotations

import azure.functions as func

from shared import dispatch
from shared.sync.base import spec_for
from shared.timer import tick

bp = func.Blueprint()


@bp.timer_trigger(schedule="%NEXXT365_CALENDAR_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def calendar_status(timer: func.TimerRequest) -> None:
    """Thin on purpose: all logic is in shared/ and runs the same from the CLI and the tests."""
    tick("calendar", timer)


@bp.queue_trigger(arg_name="msg", queue_name=spec_for("calendar").queue, connection="AzureWebJobsStorage")
def calendar_status_queue(msg: func.QueueMessage) -> None:
    """Queue fan-out: one tenant's run; an exception makes the host retry, then poison the message."""
    dispatch.handle(msg.get_body().decode("utf-8"), dequeue_count=msg.dequeue_count or 1)
