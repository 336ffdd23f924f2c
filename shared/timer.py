"""What every timer function does on a tick: note a late tick, then run the sync for every tenant
(inline) or dispatch one queue message per tenant (queue fan-out, shared/dispatch.py)."""

from __future__ import annotations

import logging
from typing import Any

from shared import dispatch

log = logging.getLogger("nexxt365")


def tick(sync: str, timer: Any) -> None:
    """`timer` is the host's TimerRequest; `past_due` is True when the tick fired later than its schedule."""
    if getattr(timer, "past_due", False):
        log.warning("timer.past_due sync=%s: this tick started late (the app was stopped or busy, or the previous run overran)",
                    sync)
    dispatch.on_timer(sync)
