"""Users sync on demand: `sync users --user X` syncs that user now and explains every decision; the
deltaLink is not touched."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.errors import LeaseLost
from shared.report import printable
from shared.sync.users.apply import Applier
from shared.sync.users.ledger import RETRY_SCOPE, DeactivationLedger, retry_rows
from shared.sync.users.lookup import CvLookup
from shared.sync.users.plan import plan_users
from shared.sync.users.render import explain_user, report_plan
from shared.sync.users.rules import Link, UsersOptions, links_from_rows, object_key, text_of
from shared.sync.users.source import CACHE_TABLE, by_key, dump, find_graph_users, group_members

if TYPE_CHECKING:
    from shared.sync.base import SyncContext


class OneUser:
    def __init__(self, ctx: SyncContext, who: str) -> None:
        self.ctx = ctx
        self.who = who

    def _known(self, links: Mapping[str, Link]) -> dict[str, str]:
        """Users the connector knows by this object id or email although Graph has none: deleted."""
        wanted = self.who.casefold()
        return {object_key(link.object_id): link.object_id for link in links.values()
                if object_key(link.object_id) == object_key(self.who) or (link.email and link.email.casefold() == wanted)}

    def run(self) -> None:
        ctx, state, report = self.ctx, self.ctx.state, self.ctx.report
        links = links_from_rows(state.rows("links"))
        users = by_key(find_graph_users(ctx.graph, self.who))
        removed = {} if users else self._known(links)
        if not users and not removed:
            reason = (f"no Entra user has Object-ID, email (mail) or sign-in name {self.who}; "
                      "check the spelling, or whether the user was deleted")
            report.add_skip(self.who, reason)
            report.plan_text = printable(f"User {self.who}:") + f"\n  {printable(reason)}\n"
            return
        members = group_members(ctx.graph, ctx.options.users_group, ctx.tenant.client_id) \
            if ctx.options.users_group else None
        ledger = DeactivationLedger(state, ctx.now)
        options = UsersOptions.from_settings(ctx.options, users_group_members=members,
                                             confirm_deactivations=bool(ctx.args.get("confirm_deactivations")),
                                             deactivated_today=len(ledger.recent))
        lookup = CvLookup(ctx.clearvox, ctx.options.clearvox_concurrency)
        lookup.for_users({**users, **dict.fromkeys(removed)}, links)
        cv_users = list(lookup.found.values())
        plan = plan_users(list(users.values()), list(removed.values()), cv_users, links, options,
                          full_round=False, gone_cv_ids=lookup.gone)
        oids = {k: text_of(u.get("id")) for k, u in users.items()} | removed
        explained = {key: explain_user(users.get(key), oid, plan, cv_users, links, options) for key, oid in oids.items()}
        if ctx.dry_run:
            report_plan(report, plan, dry_run=True)
            report.plan_text = self.text_of(explained, {}) + "(dry run: nothing written)\n"
            return
        applier = Applier(ctx, links, options, users, lookup.gone)
        applied = applier.apply(plan)
        if isinstance(applied.stopped, LeaseLost):
            raise applied.stopped
        report_plan(report, plan, applier.replans, dry_run=False)
        if plan.rows:
            state.upsert("links", {link.object_id: link.to_row() for link in plan.rows})
        state.delete("links", plan.stale)
        state.upsert(CACHE_TABLE, {k: {"user": dump(u)} for k, u in users.items()})
        state.delete(CACHE_TABLE, sorted(removed))
        ledger.record(applier.deactivated)
        old = {k: r for k in oids if (r := state.get("retries", k, RETRY_SCOPE)) is not None}
        rows, done = retry_rows(old, applier.failed, plan, removed, ctx.now)
        if rows:
            state.upsert("retries", rows, RETRY_SCOPE)
        report.plan_text = self.text_of(explained, applier.outcomes)
        applied.raise_if_stopped()
        state.delete("retries", done, RETRY_SCOPE)

    def text_of(self, explained: Mapping[str, list[str]], outcomes: Mapping[str, list[str]]) -> str:
        lines: list[str] = []
        for key, explanation in explained.items():
            lines.append(f"User {printable(self.who)}:")
            lines.extend(f"  {line}" for line in explanation)
            lines.extend(f"  Result: {printable(outcome)}" for outcome in outcomes.get(key, []))
        return "\n".join(lines) + "\n"
