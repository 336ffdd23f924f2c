"""Users sync, rendering: the dry-run text, the `"plan"` of `--dry-run --json`, `--user` explanations and
the report's extra keys. Every name and email that came from Entra or ClearVox is printed through
`shared.report.printable` (the one escaping helper), so control characters (an ESC sequence in a
display name) show as escapes and never act on the terminal. No I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared.clearvox import CvUser
from shared.report import printable
from shared.sync.users.actions import Deactivate, UsersPlan
from shared.sync.users.rules import (
    GraphUser,
    Link,
    UsersOptions,
    ineligible_reason,
    is_disabled,
    is_guest,
    object_key,
    text_of,
)

if TYPE_CHECKING:
    from shared.report import RunReport

def _show(value: Any) -> str:
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _diff_lines(before: Mapping[str, Any], changes: Mapping[str, Any], indent: str) -> list[str]:
    return [f"{indent}{name}: {_show(before.get(name))} -> {_show(new)}" for name, new in changes.items()]


# --------------------------------------------------------------------------- --dry-run text


def render_plan(plan: UsersPlan) -> str:
    """The plan as an administrator reads it: what would be created, changed, linked and deactivated, and why not."""
    kind = "full round" if plan.full_round else "changes since the last run"
    lines = [
        f"Users plan ({kind}): {len(plan.creates)} to create, {len(plan.updates)} to update, "
        f"{len(plan.link_actions)} to link, {len(plan.deactivations)} to deactivate"
        + (f" ({len(plan.held)} held)" if plan.held else "")
        + f", {plan.unchanged} unchanged, {len(plan.skips)} skipped"
        + (f", {plan.out_of_scope} outside the users group" if plan.out_of_scope else ""),
    ]

    def section(title: str, body: list[str]) -> None:
        if body:
            lines.extend(["", title, *body])

    section("Create:", _create_lines(plan))
    section("Update:", [line for u in plan.updates for line in (
        f"  ~ ClearVox user {u.cv_user_id} <{u.link.email}>  Object-ID {u.object_id}",
        *_diff_lines(u.before, u.changes, "      "))])
    section("Link:", [line for a in plan.link_actions for line in (
        f"  = ClearVox user {a.cv_user_id} <{a.email}> <- Object-ID {a.object_id} "
        f"({'set Extern toepassing ID' if a.set_external_id else 'Object-ID pasted in ClearVox'})",
        *_diff_lines(a.before, a.changes, "      "))])
    section("Deactivate:", [f"  - ClearVox user {d.cv_user_id} <{d.email}>  Object-ID {d.object_id}: {d.reason}"
                            for d in plan.deactivations])
    section(f"Deactivations held ({plan.held_reason}; confirm with --confirm-deactivations):",
            [f"  ! ClearVox user {d.cv_user_id} <{d.email}>  Object-ID {d.object_id}: {d.reason}" for d in plan.held])
    section("Skipped:", [f"  {s.id}: {s.reason}" for s in plan.skips])
    section('Unlinked (paste the Object-ID into "Extern toepassing ID" of the ClearVox user):',
            [f"  ClearVox user {u.cv_user_id}  {u.email}  {u.display_name}  Object-ID {u.object_id}"
             for u in plan.unlinked])
    section("Conflicts:", [f"  {c.email}: {c.reason}" for c in plan.conflicts])
    section("Warnings:", [f"  {w.id}: {w.reason}" for w in plan.warnings])
    return "\n".join(printable(line) for line in lines) + "\n"


def _create_lines(plan: UsersPlan) -> list[str]:
    out: list[str] = []
    for c in plan.creates:
        out.append(f"  + {c.fields.get('display_name')} <{c.fields.get('email')}>  Object-ID {c.object_id}")
        out.extend(f"      {name}: {_show(value)}" for name, value in c.fields.items())
        if c.note:
            out.append(f"      note: {c.note}")
    return out


# --------------------------------------------------------------------------- the JSON plan and report keys


def _changes(before: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"before": before.get(name), "after": value} for name, value in changes.items()}


def _deactivation(d: Deactivate) -> dict[str, Any]:
    return {"object_id": d.object_id, "cv_user_id": d.cv_user_id, "email": d.email, "reason": d.reason}


def plan_json(plan: UsersPlan) -> dict[str, Any]:
    """Every ClearVox write the plan would make (`"plan"` of `--dry-run --json`), each with the Entra object id."""
    return {
        "full_round": plan.full_round,
        "create": [{"object_id": c.object_id, "fields": dict(c.fields), **({"note": c.note} if c.note else {})}
                   for c in plan.creates],
        "update": [{"object_id": u.object_id, "cv_user_id": u.cv_user_id, "changes": _changes(u.before, u.changes)}
                   for u in plan.updates if not u.reactivates],
        "link": [{"object_id": a.object_id, "cv_user_id": a.cv_user_id, "email": a.email,
                  "set_external_id": a.set_external_id, "changes": _changes(a.before, a.changes)}
                 for a in plan.link_actions],
        "reactivate": [{"object_id": u.object_id, "cv_user_id": u.cv_user_id, "changes": _changes(u.before, u.changes)}
                       for u in plan.updates if u.reactivates],
        "deactivate": [_deactivation(d) for d in plan.deactivations],
        "held": [{**_deactivation(d), "held": plan.held_reason} for d in plan.held],
    }


def report_plan(report: RunReport, plan: UsersPlan, replans: Sequence[UsersPlan] = (), *, dry_run: bool) -> None:
    """Skips, warnings and the extra JSON keys (unlinked, conflicts, held, deactivations with their reason);
    in a dry run also the planned counts and the `"plan"`."""
    plans = [plan, *replans]
    for p in plans:
        for s in p.skips:
            report.add_skip(s.id, s.reason, s.name)
    for w in plan.warnings:
        report.add_warning(w.id, w.reason)
    report.count("unchanged", plan.unchanged)
    if dry_run:
        report.count("created", len(plan.creates))
        report.count("updated", len(plan.updates))
        report.count("linked", len(plan.link_actions))
        report.count("deactivated", len(plan.deactivations))
        report.extra["plan"] = plan_json(plan)
    report.extra["unlinked"] = [{"cv_user_id": u.cv_user_id, "email": u.email, "display_name": u.display_name,
                                 "object_id": u.object_id} for p in plans for u in p.unlinked]
    report.extra["conflicts"] = [{"email": c.email, "object_ids": list(c.object_ids), "reason": c.reason,
                                  "cv_user_id": c.cv_user_id} for p in plans for c in p.conflicts]
    report.extra["held"] = [{**_deactivation(d), "held": plan.held_reason} for d in plan.held]
    report.extra["deactivations"] = [_deactivation(d) for d in plan.deactivations]
    report.extra["out_of_scope"] = plan.out_of_scope


# --------------------------------------------------------------------------- sync users --user


def explain_user(
    user: GraphUser | None, object_id: str, plan: UsersPlan, cv_users: Sequence[CvUser], links: Mapping[str, Link],
    options: UsersOptions,
) -> list[str]:
    """Every decision about one user in words (`sync users --user`): eligible or why not, linked or matched, fields."""
    key = object_key(object_id)
    link = {object_key(k): v for k, v in links.items()}.get(key)
    mail = text_of(user.get("mail")) if user is not None else (link.email if link else "")
    lines = _explain_entra(user, object_id, link, options)
    lines += _explain_clearvox(key, mail, cv_users)
    if link is not None:
        lines.append(f"Links table: {link.status}" + (f", ClearVox user {link.cv_user_id}" if link.cv_user_id else ""))
    lines += _explain_decision(key, plan)
    return [printable(line) for line in lines]


def _explain_entra(user: GraphUser | None, object_id: str, link: Link | None, options: UsersOptions) -> list[str]:
    if user is None:
        known = f"; the connector knew it as {link.display_name} <{link.email}>" if link else ""
        return [f"Entra: no user with Object-ID {object_id} (deleted){known}"]
    enabled = "disabled" if is_disabled(user) else "enabled"
    kind = "guest" if is_guest(user) else "member"
    lines = [f"Entra: {text_of(user.get('displayName')) or '(no display name)'} <{text_of(user.get('mail')) or 'no mail'}>, "
             f"Object-ID {object_id}, sign-in name {text_of(user.get('userPrincipalName')) or '-'}, {kind}, {enabled}"]
    members = options.users_group_members
    if members is not None:
        lines.append("Users group: a (transitive) member" if object_key(object_id) in members
                     else "Users group: not a member, so outside the sync's scope")
    reason = ineligible_reason(user, options)
    lines.append("Eligible: yes (member user, enabled, valid email in Entra contact info)" if reason is None
                 else f"Eligible: no - {reason}")
    return lines


def _explain_clearvox(key: str, mail: str, cv_users: Sequence[CvUser]) -> list[str]:
    by_ext = [u for u in cv_users if object_key(u.external_application_id or "") == key]
    by_email = [u for u in cv_users if mail and u.email.strip().casefold() == mail.casefold() and u not in by_ext]
    lines = [f"ClearVox: linked - user {cv.id} <{cv.email}>{'' if cv.active else ' (inactive)'} has this Object-ID "
             "in Extern toepassing ID" for cv in by_ext]
    for cv in by_email:
        ext = (cv.external_application_id or "").strip()
        has = f"another Object-ID ({ext})" if ext else "no Object-ID"
        lines.append(f"ClearVox: matched by email - user {cv.id} <{cv.email}> has this email and {has} "
                     "in Extern toepassing ID")
    if not by_ext and not by_email:
        lines.append("ClearVox: no user has this Object-ID" + (" or this email" if mail else ""))
    return lines


def _explain_decision(key: str, plan: UsersPlan) -> list[str]:
    def mine(oid: str) -> bool:
        return object_key(oid) == key

    decided: list[str] = []
    for c in (c for c in plan.creates if mine(c.object_id)):
        decided.append("Decision: create a ClearVox user with Extern toepassing ID = Object-ID; fields:")
        decided.extend(f"  {name}: {_show(value)}" for name, value in c.fields.items())
        decided.extend([f"  note: {c.note}"] if c.note else [])
    for u in (u for u in plan.updates if mine(u.object_id)):
        decided.append(f"Decision: update ClearVox user {u.cv_user_id}; fields changed:")
        decided.extend(_diff_lines(u.before, u.changes, "  "))
    for a in (a for a in plan.link_actions if mine(a.object_id)):
        how = "set its Extern toepassing ID (auto_link)" if a.set_external_id else "the Object-ID was pasted in ClearVox"
        decided.append(f"Decision: link ClearVox user {a.cv_user_id} ({how}); "
                       + ("fields changed:" if a.changes else "no field differs"))
        decided.extend(_diff_lines(a.before, a.changes, "  "))
    decided += [f"Decision: deactivate ClearVox user {d.cv_user_id} ({d.reason}); it is never deleted"
                for d in plan.deactivations if mine(d.object_id)]
    decided += [f"Decision: skip - {s.reason}" for s in plan.skips if mine(s.id)]
    notes = [f"Conflict: {c.reason}" for c in plan.conflicts if key in {object_key(o) for o in c.object_ids}]
    notes += [f"Warning: {w.reason}" for w in plan.warnings if mine(w.id)]
    if decided:
        return decided + notes
    if plan.out_of_scope:
        return [*notes, "Decision: nothing to do - not in the users group and never linked by the connector"]
    if plan.unchanged:
        return [*notes, "Decision: nothing to do - no field changed in Entra since it was last written"]
    return [*notes, "Decision: nothing to do"]
