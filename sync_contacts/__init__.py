"""Timer: the contacts sync for every configured tenant (schedule: NEXXT365_CONTACTS_SCHEDULE)."""

from __future__ import annotations

import azure.functions as func

from shared.timer import tick

bp = func.Blueprint()


@bp.timer_trigger(schedule="%NEXXT365_CONTACTS_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def sync_contacts(timer: func.TimerRequest) -> None:
    """Thin on purpose: all logic is in shared/ and runs the same from the CLI and the tests."""
    tick("contacts", timer)
