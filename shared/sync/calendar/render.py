"""Calendar status, rendering: the run report, the dry-run text and the JSON plan.

Pure: everything here is computed from the users' way through the run (`UserRun`).
With --dry-run the report holds `plan`: every user whose status would change,
with the ClearVox user, the Entra object id, from -> to and why (the event's
show-as); the text dry-run prints the same lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.status_maps import SHOW_AS_SPELLING
from shared.sync.calendar.decision import Action, Decision
from shared.sync.calendar.ledger import NOTICE_TEXT, LedgerEntry, NoticeKind, notice_due
from shared.sync.calendar.rules import Resolution

if TYPE_CHECKING:
    from shared.clearvox import CvStatus
    from shared.report import RunReport


@dataclass(frozen=True)
class CalendarUser:
    """A linked user as this sync sees them: the Entra object id, the ClearVox user, the mailbox to ask for."""

    object_id: str
    cv_user_id: str
    email: str  # lower-cased; the getSchedule id


@dataclass
class UserRun:
    """One user's way through a run: what the calendar said, what was decided and what happened."""

    user: CalendarUser
    resolution: Resolution | None
    ledger: LedgerEntry | None
    decision: Decision
    current: CvStatus | None = None
    written: bool = False
    failure: str | None = None
    notice: NoticeKind | None = None
    checked: bool = False  # ClearVox was read successfully this run
    not_reached: bool = False  # the run's time budget ran out before this user's turn

    @property
    def ledger_applies(self) -> bool:
        """The decision's ledger change may be stored: nothing failed (a failed write is retried next run)."""
        return self.failure is None and self.notice is None and not self.not_reached

    @property
    def who(self) -> str:
        return self.user.email or self.user.object_id


def clause(error: Exception) -> str:
    """An error's message to embed in a sentence of ours."""
    return str(error).strip().rstrip(".")


def render_report(report: RunReport, ticks: Sequence[Sequence[UserRun]], notices: Mapping[str, Mapping[str, Any]],
                  now: datetime, dry_run: bool) -> None:
    """Counts, per-user reasons and the calendar's own report fields; with dry_run the plan and its text.

    `ticks` holds every user's way through each tick of the run (one tick without Teams presence):
    every status written in any tick is listed; everything else is reported as the last tick left it.
    """
    written = [run for runs in ticks for run in runs if _is_written(run, dry_run)]
    statuses = [transition(run) for run in written]
    report.count("updated", len(statuses))
    written_ids = {run.user.object_id for run in written}
    left_alone = _left_alone(ticks)
    quiet = kept = 0
    not_reached: list[str] = []
    for run in ticks[-1] if ticks else ():
        if run.notice is not None:
            if dry_run or notice_due(notices.get(run.user.object_id), run.notice, now):
                report.add_skip(run.who, f"{NOTICE_TEXT[run.notice]}; reported once a day")
            else:
                quiet += 1
        elif run.failure is not None:
            report.add_failure(run.who, run.failure)
            kept += run.resolution is None
        elif run.not_reached:
            not_reached.append(run.who)
        elif run.user.object_id not in written_ids:
            report.count("unchanged")
            kept += run.resolution is None
    if not_reached:
        report.add_warning("time budget", f"{len(not_reached)} user(s) at a transition were not reached within the "
                           "run's time budget; their status is kept and decided again next minute")
    report.extra.update({"at": now.isoformat(), "linked_users": len(ticks[-1]) if ticks else 0, "ticks": len(ticks),
                         "statuses": statuses, "left_alone": left_alone, "kept_without_data": kept,
                         "mailbox_notices_not_repeated": quiet, "not_reached": not_reached})
    if dry_run:
        report.extra["plan"] = [plan_entry(run, s) for run, s in zip(written, statuses, strict=True)]
        report.plan_text = plan_text(now, report.extra["plan"], left_alone, len(ticks[-1]) if ticks else 0)


def _is_written(run: UserRun, dry_run: bool) -> bool:
    return (run.notice is None and run.failure is None and not run.not_reached
            and run.decision.action is Action.WRITE and (run.written or dry_run))


def _left_alone(ticks: Sequence[Sequence[UserRun]]) -> list[dict[str, str]]:
    """Manual statuses kept at a transition (read from ClearVox this run), once per user."""
    seen: dict[str, dict[str, str]] = {}
    for runs in ticks:
        for run in runs:
            if run.decision.action is Action.LEAVE and run.checked and run.current is not None:
                seen.setdefault(run.who, {"id": run.who, "status": run.current.status, "reason": run.decision.reason})
    return list(seen.values())


def transition(run: UserRun) -> dict[str, Any]:
    """One status set (or, in a dry run, that would be set): who, from, to and why."""
    resolution = run.resolution
    event = resolution.event if resolution is not None and resolution.show_as is not None else None
    entry = {
        "id": run.who,
        "from": run.current.status if run.current is not None else None,
        "to": run.decision.status,
        "reason": run.decision.reason,
        "show_as": SHOW_AS_SPELLING.get(event.show_as, event.show_as) if event is not None else None,
        "until": f"{event.end:%Y-%m-%d %H:%M} UTC" if event is not None else None,
    }
    if resolution is not None and resolution.teams is not None:
        entry.update({"teams": resolution.teams, "source": resolution.source})
    return entry


def plan_entry(run: UserRun, status: Mapping[str, Any]) -> dict[str, Any]:
    """A change of the dry-run plan: the ClearVox user and the Entra object id with the transition."""
    return {"clearvox_user": run.user.cv_user_id, "object_id": run.user.object_id, **status}


def plan_text(now: datetime, plan: Sequence[Mapping[str, Any]], left_alone: Sequence[Mapping[str, str]],
              users: int) -> str:
    lines = [f"calendar status at {now:%Y-%m-%d %H:%M} UTC: {len(plan)} change(s) for {users} linked user(s)"]
    for s in plan:
        why = s["reason"] + (f"; show as {s['show_as']} until {s['until']}" if s.get("show_as") else "") + (
            f"; Teams {s['teams']}" if s.get("teams") else "")
        lines.append(f"  {s['id']}: {s['from']} -> {s['to']} ({why}) "
                     f"[ClearVox user {s['clearvox_user']}, object id {s['object_id']}]")
    lines += [f"  {s['id']}: {s['status']} left alone ({s['reason']})" for s in left_alone]
    return "\n".join(lines)
