"""Timer and queue trigger: the contacts sync for every configured tenant (schedule: NEXXT365_CONTACTS_SCHEDULE)."""

from __future__ import annotations

import azure.functions as func

from shared import dispatch
from shared.sync.base import spec_for
from shared.timer import tick

bp = func.Blueprint()


@bp.timer_trigger(schedule="%NEXXT365_CONTACTS_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def sync_contacts(timer: func.TimerRequest) -> None:
    """Thin on purpose: all logic is in shared/ and runs the same from the CLI and the tests."""
    tick("contacts", timer)


@bp.queue_trigger(arg_name="msg", queue_name=spec_for("contacts").queue, connection="AzureWebJobsStorage")
def sync_contacts_queue(msg: func.QueueMessage) -> None:
    """Queue fan-out: one tenant's run; an exception makes the host retry, then poison the message."""
    dispatch.handle(msg.get_body().decode("utf-8"), dequeue_count=msg.dequeue_count or 1)
