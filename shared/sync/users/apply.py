"""Users sync, the writes: a plan's actions through the one applier (`SyncContext.apply`), each outcome
recorded as it arrives (links rows batched 100 per transaction, counts, per-user results).

A failed write fails that user only: it is reported and kept in `failed` for the retry ledger, and
the run goes on. The applier's one outage rule decides when a run stops writing (ClearVox unreachable,
or many unavailable answers in a row); an AdminFix (key, licence, account) stops it too.

A create never runs twice: a create refused with 409 email_taken, or whose outcome is unknown
(ClearVox unavailable on the POST), is followed by a look-up by Object-ID and by email. A ClearVox
user carrying this Entra user's Object-ID is the one this run created: it counts as created. A user
with the email and no such Object-ID makes the Entra user "exists" (planned again, never created);
when nobody has it, the create failed and the next run looks the user up again before creating.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import ClearVoxUnavailable, EmailTaken, ItemError, Transient
from shared.sync.users.actions import Action, Create, Deactivate, LinkAction, Update, UsersPlan
from shared.sync.users.lookup import CvLookup
from shared.sync.users.plan import plan_users
from shared.sync.users.rules import GraphUser, Link, UsersOptions, object_key

if TYPE_CHECKING:
    from shared.sync.base import Applied, SyncContext

_FLUSH = 100  # rows per Table Storage transaction (its maximum)


@dataclass
class Outcome:
    """What one action did: the links rows of what succeeded, or a plan made again after email_taken."""

    done: list[tuple[Action, Link]] = field(default_factory=list)
    replan: UsersPlan | None = None
    failures: list[tuple[Action, Exception]] = field(default_factory=list)
    adopted: bool = False  # the create's outcome was unknown or refused, and the user proved to be ours


def _verb(action: Action) -> str:
    if isinstance(action, Create):
        return "create"
    if isinstance(action, Update):
        return "reactivation" if action.reactivates else "update"
    if isinstance(action, LinkAction):
        return "link"
    return "deactivation"


class Applier:
    """Runs a plan's actions against ClearVox and records each outcome in the calling thread."""

    def __init__(self, ctx: SyncContext, links: Mapping[str, Link], options: UsersOptions,
                 users: Mapping[str, GraphUser], gone: Iterable[str] = ()) -> None:
        self.ctx = ctx
        self.cv = ctx.clearvox
        self.links = links
        self.options = options
        self.users = users
        self.gone = frozenset(gone)  # linked ClearVox ids known to be deleted, for plans made again
        self.failed: dict[str, dict[str, Any]] = {}  # key -> retry row fields (reason)
        self.outcomes: dict[str, list[str]] = {}
        self.replans: list[UsersPlan] = []
        self.deactivated: list[str] = []  # keys deactivated by this run
        self._rows: dict[str, dict[str, Any]] = {}

    def apply(self, plan: UsersPlan) -> Applied[Action]:
        applied = self.ctx.apply(plan.actions(), self._write, self._record)
        self._flush(force=True)
        return applied

    # -- in the worker threads

    def _write(self, action: Action) -> Outcome:
        if not isinstance(action, Create):
            payload = action.payload()
            if payload:
                self.cv.update_user(action.cv_user_id, payload)
            return Outcome([(action, action.result_link(action.cv_user_id))])
        try:
            created = self.cv.create_user(action.payload())
        except EmailTaken as exc:
            return self._settle(action, exc)
        except ClearVoxUnavailable as exc:
            if exc.outage:
                raise
            return self._settle(action, exc)
        return Outcome([(action, action.result_link(created.id))])

    def _settle(self, action: Create, exc: EmailTaken | ClearVoxUnavailable) -> Outcome:
        """The create was refused with email_taken, or its outcome is unknown: look the user up by
        Object-ID and email before anything else. Ours (it carries the Object-ID) counts as created;
        another user with the email makes this one "exists"; nobody: the next run tries again."""
        key = object_key(action.object_id)
        user = self.users.get(key)
        lookup = CvLookup(self.cv, 1)
        lookup.for_users({key: user}, {})
        mine = [u for u in lookup.found.values() if object_key(u.external_application_id or "") == key]
        if len(mine) == 1:
            return Outcome([(action, action.result_link(mine[0].id))], adopted=True)
        if user is None:
            raise exc
        sub = plan_users([user], [], list(lookup.found.values()), self.links, self.options, full_round=False,
                         gone_cv_ids=self.gone | lookup.gone)
        if any(isinstance(again, Create) for again in sub.actions()):
            if isinstance(exc, EmailTaken):  # the email is taken, yet no user has it: never create twice
                raise EmailTaken("ClearVox answered email_taken but no user with this email was found; retried on "
                                 "the next run", 409, "email_taken") from exc
            raise exc
        out = Outcome(replan=sub)
        for again in sub.actions():
            try:
                out.done.extend(self._write(again).done)
            except (ItemError, Transient) as failed:
                out.failures.append((again, failed))
        return out

    # -- in the calling thread

    def _record(self, action: Action, result: Outcome | Exception) -> None:
        if isinstance(result, Exception):
            self._fail(action, result)
            return
        if result.replan is not None:
            self.replans.append(result.replan)
            for row in result.replan.rows:
                self._rows[row.object_id] = row.to_row()
            self._note(action, "ClearVox answered email_taken: planned again as existing")
        for failed, exc in result.failures:
            self._fail(failed, exc)
        for done, link in result.done:
            self._succeeded(done, link, result.adopted)
        self._flush()

    def _fail(self, action: Action, exc: Exception) -> None:
        reason = f"{_verb(action)} failed: {exc}"
        self.ctx.report.add_failure(action.object_id, reason)
        self.failed[object_key(action.object_id)] = {"kind": "failed", "reason": reason}
        self._note(action, reason)

    def _succeeded(self, action: Action, link: Link, adopted: bool) -> None:
        report, cv_id = self.ctx.report, link.cv_user_id
        self._rows[link.object_id] = link.to_row()
        if isinstance(action, Create):
            report.count("created")
            text = f"created ClearVox user {cv_id}" + (" (found by its Object-ID after an unclear answer)"
                                                        if adopted else "")
        elif isinstance(action, LinkAction):
            report.count("linked")
            text = f"linked ClearVox user {cv_id}" + (" and updated it" if action.changes else "")
        elif isinstance(action, Deactivate):
            report.count("deactivated")
            self.deactivated.append(object_key(action.object_id))
            text = f"deactivated ClearVox user {cv_id}"
        else:
            report.count("updated")
            text = f"{'reactivated' if action.reactivates else 'updated'} ClearVox user {cv_id}"
        self._note(action, text)

    def _note(self, action: Action, text: str) -> None:
        self.outcomes.setdefault(object_key(action.object_id), []).append(text)

    def _flush(self, *, force: bool = False) -> None:
        if self._rows and (force or len(self._rows) >= _FLUSH):
            rows, self._rows = self._rows, {}
            self.ctx.state.upsert("links", rows)
