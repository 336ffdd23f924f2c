"""Contacts sync, rendering: the run report's counts, the `--dry-run` text and the JSON `"plan"`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.clearvox import PhoneNumber
from shared.sync.contacts.rules import REASON_PUBLIC_KEPT, ContactsPlan, Delete


def owner_label(plan: ContactsPlan) -> str:
    if plan.owner_cv_user_id:
        return f"contacts of ClearVox user {plan.owner_cv_user_id}"
    return f"company contacts from {plan.source}"


def summarize(plans: Iterable[ContactsPlan]) -> dict[str, Any]:
    """Counts and reported items in the run report's JSON shape (`failed` is the apply layer's to fill)."""
    out: dict[str, Any] = {
        "sync": "contacts", "created": 0, "updated": 0, "deleted": 0, "unchanged": 0,
        "kept_public": 0, "held": 0, "retained": 0,
        "skipped": [], "failed": [], "warnings": [],
    }
    for plan in plans:
        out["created"] += len(plan.creates)
        out["updated"] += len(plan.updates)
        out["deleted"] += len(plan.deletes)
        out["unchanged"] += len(plan.unchanged)
        out["kept_public"] += len(plan.kept_public)
        out["skipped"] += [s.to_json() for s in plan.skips]
        out["skipped"] += [{"id": k.graph_contact_id, "reason": k.describe()} for k in plan.kept_public]
        if plan.hold is not None:
            out["held"] += plan.hold.count
            out["skipped"].append({"id": plan.owner_cv_user_id or plan.source, "reason": plan.hold.reason()})
        if plan.retained is not None:
            out["retained"] += plan.retained.count
            out["skipped"].append({"id": plan.owner_cv_user_id, "reason": plan.retained.describe()})
        out["warnings"] += [w.to_json() for w in plan.warnings]
    return out


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, PhoneNumber):
        return f"{value.number} {value.type}"
    return "-" if value is None else str(value)


def render_plan(plan: ContactsPlan) -> str:
    """What `--dry-run` prints for one user: a count line, then one line per action."""
    s = summarize([plan])
    head = (f"{owner_label(plan)}: {s['created']} to create, {s['updated']} to update, "
            f"{s['deleted']} to delete, {s['unchanged']} unchanged, {s['kept_public']} public kept, "
            f"{len(plan.skips)} skipped")
    lines = [head]
    if plan.retained is not None:
        lines.append(f"  = keep    {plan.retained.describe()}")
    for c in plan.creates:
        phones = ", ".join(_show(p) for p in c.contact.phone_numbers)
        lines.append(f"  + create  {c.contact.display_name} ({phones})" + ("  [match by external_id first]"
                                                                            if c.reconcile else ""))
    for u in plan.updates:
        parts = []
        for name, value in u.changes.items():
            was = f"{_show(u.before[name])} -> " if u.before is not None else ""
            parts.append(f"{name}: {was}{_show(value)}")
        lines.append(f"  ~ update  {u.contact.display_name} [{u.cv_contact_id}]: " + "; ".join(parts))
    for d in plan.deletes:
        lines.append(f"  - delete  {d.name or d.graph_contact_id} [{d.cv_contact_id}]: {d.reason}"
                     + ("  [only if still private]" if d.verify else ""))
    for k in plan.kept_public:
        lines.append(f"  = keep    {k.name or k.graph_contact_id} [{k.cv_contact_id}]: {REASON_PUBLIC_KEPT}, {k.reason}")
    for sk in plan.skips:
        lines.append(f"  ! skip    {sk.name or sk.id}: {sk.reason}")
    for w in plan.warnings:
        lines.append(f"  ! note    {w.name or w.id}: {w.reason}")
    if plan.hold is not None:
        lines.append(f"  ! hold    {plan.hold.reason()}")
        lines += [f"      held  {d.name or d.graph_contact_id} [{d.cv_contact_id}]: {d.reason}"
                  for d in plan.hold.deletes]
    if plan.released_hold is not None:
        lines.append("  ! deletions the guard would hold go through (--confirm-deletions)")
    return "\n".join(lines)


def _json(value: Any) -> Any:
    if isinstance(value, PhoneNumber):
        return {"type": value.type, "number": value.number}
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    return value


def _deletion(d: Delete) -> dict[str, Any]:
    return {"graph_contact_id": d.graph_contact_id, "clearvox_contact_id": d.cv_contact_id, "name": d.name,
            "reason": d.reason, **({"only_if_still_private": True} if d.verify else {})}


def _changes(changes: Mapping[str, Any], before: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Each changed field `after`, and `before` where ClearVox was read (else only the hash said it changed)."""
    return {name: {**({"before": _json(before[name])} if before is not None else {}), "after": _json(value)}
            for name, value in changes.items()}


def plan_json(plan: ContactsPlan) -> dict[str, Any]:
    """One owner's part of the JSON `"plan"` of `--dry-run --json`: every change with its ids."""
    held = list(plan.hold.deletes) if plan.hold is not None else []
    return {
        "clearvox_user": plan.owner_cv_user_id or None,
        **({"company_mailbox": plan.source} if not plan.owner_cv_user_id else {}),
        "create": [{"graph_contact_id": c.graph_contact_id, "fields": _json_fields(c.contact.fields()),
                    **({"look_up_first": True} if c.reconcile else {})} for c in plan.creates],
        "update": [{"graph_contact_id": u.graph_contact_id, "clearvox_contact_id": u.cv_contact_id,
                    "changes": _changes(u.changes, u.before)} for u in plan.updates],
        "delete": [_deletion(d) for d in plan.deletes],
        "held": [_deletion(d) for d in held],
        **({"held_reason": plan.hold.reason()} if plan.hold is not None else {}),
        "kept_public": [{"graph_contact_id": k.graph_contact_id, "clearvox_contact_id": k.cv_contact_id,
                         "reason": k.describe()} for k in plan.kept_public],
        "skipped": [s.to_json() for s in plan.skips],
    }


def _json_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _json(v) for k, v in fields.items()}


def shown(plans: Sequence[ContactsPlan]) -> list[ContactsPlan]:
    """The plans worth showing in a dry run: something to do or to say."""
    return [p for p in plans if not p.is_noop or p.skips or p.hold or p.retained or p.warnings]


def render_all(plans: Iterable[ContactsPlan]) -> tuple[str, list[dict[str, Any]]]:
    """The dry-run text and the JSON plan of a run."""
    chosen = shown(list(plans))
    return ("\n".join(render_plan(p) for p in chosen) or "contacts: nothing to do",
            [plan_json(p) for p in chosen if p.retained is None])
