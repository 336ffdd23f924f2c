"""Calendar status, the one decision per user: what to do given what applies now, the ledger and ClearVox.

Pure. One user, one moment:

    resolution = resolve(items, now, status_map)           # None instead when Graph gave no data
    decision = decide(resolution, ledger, None, now, respect_manual)
    if decision.action is Action.CHECK:                    # only at a transition
        decision = decide(resolution, ledger, clearvox.get_status(uid), now, respect_manual)

Reading ClearVox for 2,000 users every minute is not affordable, so `decide` asks
for the user's current ClearVox status (Action.CHECK) only when it is about to
act: when an event starts, the covering event changes, or the event ends. In the
steady state it answers from the status ledger alone.

Rules for manual changes (a ClearVox status with changed_by "user"):

* A status the user set while the connector did not own their status (no event
  of theirs was running, or the connector had left them alone) is never touched,
  except that `available` is not protected: it is what the connector would restore
  anyway. The connector records that it yielded, so it does not ask again during
  that event, and asks again when the next event starts.
* A change made during an event the connector set: by default the event's end
  still restores `available` (the guide). With respect_manual the status stays
  until the next event starts, which then sets its own status again.
* The next event also takes over when the connector owned the previous event and
  the user changed the status during it; a change made after that event ended is
  a change "while no event was running" and is left alone.
* Manual changes are only noticed at transitions, the only moments the connector acts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from shared.clearvox import CvStatus
from shared.sync.calendar.ledger import LedgerEntry
from shared.sync.calendar.rules import AVAILABLE, SOURCE_BOTH, SOURCE_CALENDAR, SOURCE_TEAMS, Resolution, as_utc


class Action(StrEnum):
    NOTHING = "nothing"  # ClearVox is in step; apply the ledger change only
    CHECK = "check"  # read the user's current ClearVox status and call decide again with it
    WRITE = "write"  # set `status` in ClearVox; apply the ledger change only when that succeeded
    LEAVE = "leave"  # deliberately leave the user's status alone; `reason` says why


class LedgerOp(StrEnum):
    KEEP = "keep"
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class Decision:
    """What to do for one user: the ClearVox action, and what the status ledger should say afterwards."""

    action: Action
    reason: str
    status: str | None = None  # the status to write (WRITE only)
    ledger_op: LedgerOp = LedgerOp.KEEP
    ledger: LedgerEntry | None = None  # the entry to store (PUT only)


REASON_NO_DATA = "no calendar data; keeping the last state"
REASON_IDLE = "no event now"
REASON_IN_STEP = "status already set for this event"
REASON_CHECK = "transition; the current ClearVox status is needed"
REASON_MANUAL_BEFORE = "status set by the user while no event of theirs ran; left alone"
REASON_MANUAL_AFTER = "status changed by the user after the event ended; left alone"
REASON_MANUAL_RESPECTED = "status changed by the user during the event; left alone until the next event"
REASON_YIELD_OVER = "event ended; the user's own status was left alone"
REASON_EVENT = "event now"
REASON_ALREADY = "ClearVox already shows the status"
REASON_ENDED = "event ended; back to available"
REASON_TEAMS = "Teams presence now"
REASON_BOTH = "event now; Teams presence agrees"
REASON_TEAMS_ENDED = "Teams presence ended; back to available"
_REASON_NOW = {SOURCE_CALENDAR: REASON_EVENT, SOURCE_TEAMS: REASON_TEAMS, SOURCE_BOTH: REASON_BOTH}
# A status set for Teams presence has no known end: a manual change within this time counts as made during it.
TEAMS_HOLD = timedelta(days=1)


def needs_current(resolution: Resolution | None, ledger: LedgerEntry | None) -> bool:
    """True when deciding needs the user's current ClearVox status: only at a transition."""
    if resolution is None:
        return False
    if resolution.key is None or resolution.status is None:
        return ledger is not None and ledger.status is not None and not ledger.manual
    if ledger is not None and ledger.key == resolution.key:
        return not (ledger.manual or ledger.status == resolution.status)
    return True


def decide(
    resolution: Resolution | None,
    ledger: LedgerEntry | None,
    current: CvStatus | None,
    now: datetime,
    respect_manual: bool = False,
) -> Decision:
    """What to do for one user now. `resolution` None means Graph gave no data for them.

    Call it with `current` None first; it answers Action.CHECK when, and only when,
    the current ClearVox status is needed, then call it again with that status.
    """
    moment = as_utc(now)
    if resolution is None:
        return Decision(Action.LEAVE, REASON_NO_DATA)
    if needs_current(resolution, ledger) and current is None:
        return Decision(Action.CHECK, REASON_CHECK)
    if resolution.key is None or resolution.status is None:
        return _decide_idle(ledger, current, respect_manual)
    return _decide_event(resolution, ledger, current, moment)


def _decide_event(resolution: Resolution, ledger: LedgerEntry | None, current: CvStatus | None,
                  now: datetime) -> Decision:
    target, key = resolution.status, resolution.key
    assert target is not None and key is not None
    teams = resolution.teams or ""
    if ledger is not None and ledger.key == key:
        if ledger.manual:
            reason = REASON_MANUAL_BEFORE if ledger.status is None else REASON_MANUAL_RESPECTED
            return Decision(Action.LEAVE, reason)
        if ledger.status == target:
            if ledger.source == resolution.source:
                return Decision(Action.NOTHING, REASON_IN_STEP)
            return Decision(Action.NOTHING, REASON_IN_STEP, ledger_op=LedgerOp.PUT,  # the reason changed, not the status
                            ledger=replace(ledger, source=resolution.source, teams=teams))
    if current is None:  # unreachable after needs_current; keeps the types honest
        return Decision(Action.CHECK, REASON_CHECK)
    entry = LedgerEntry(key=key, show_as=resolution.show_as or "", until=resolution.until or now + TEAMS_HOLD,
                        set_at=now, status=target, source=resolution.source, teams=teams)
    if _manual_outside_owned_event(current, ledger):
        return Decision(Action.LEAVE, REASON_MANUAL_BEFORE, ledger_op=LedgerOp.PUT,
                        ledger=replace(entry, status=None, manual=True))
    if current.status == target:
        return Decision(Action.NOTHING, REASON_ALREADY, ledger_op=LedgerOp.PUT, ledger=entry)
    return Decision(Action.WRITE, _REASON_NOW[resolution.source], status=target, ledger_op=LedgerOp.PUT, ledger=entry)


def _manual_outside_owned_event(current: CvStatus, ledger: LedgerEntry | None) -> bool:
    """A non-available status the user set while the connector owned no running event of theirs."""
    if current.changed_by != "user" or current.status == AVAILABLE:
        return False
    if ledger is None or ledger.status is None:
        return True
    return as_utc(current.changed_at) > ledger.until


def _decide_idle(ledger: LedgerEntry | None, current: CvStatus | None, respect_manual: bool) -> Decision:
    if ledger is None:
        return Decision(Action.NOTHING, REASON_IDLE)
    if ledger.status is None:
        return Decision(Action.NOTHING, REASON_YIELD_OVER, ledger_op=LedgerOp.DELETE)
    if ledger.manual:
        return Decision(Action.LEAVE, REASON_MANUAL_RESPECTED)
    if current is None:  # unreachable after needs_current; keeps the types honest
        return Decision(Action.CHECK, REASON_CHECK)
    if current.status == AVAILABLE:
        return Decision(Action.NOTHING, REASON_ALREADY, ledger_op=LedgerOp.DELETE)
    if current.changed_by == "user":
        if as_utc(current.changed_at) > ledger.until:
            return Decision(Action.LEAVE, REASON_MANUAL_AFTER, ledger_op=LedgerOp.DELETE)
        if respect_manual:
            return Decision(Action.LEAVE, REASON_MANUAL_RESPECTED, ledger_op=LedgerOp.PUT,
                            ledger=replace(ledger, manual=True))
    ended = REASON_TEAMS_ENDED if ledger.source == SOURCE_TEAMS else REASON_ENDED
    return Decision(Action.WRITE, ended, status=AVAILABLE, ledger_op=LedgerOp.DELETE)
