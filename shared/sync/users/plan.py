"""Users sync, the plan: Entra users + ClearVox users + the links table -> a `UsersPlan`. No I/O, so the
rules are tested without HTTP and `--dry-run` shows exactly what a real run would do.

Nothing destructive happens on thin evidence: deactivation needs a real Entra
event (deleted, disabled, left the group) or, in a full round, a link the
connector itself recorded; nothing is ever deleted. The deactivations of a run
go through the one mass-change guard (`shared.sync.base.hold_reason`):
they are all held when they exceed `max_deactivations` in one run or in 24
hours (with those done earlier that day), or when at least 3 of them would
touch more than half of the linked users (an empty or truncated full round
from Graph). A hold is released by `--confirm-deactivations` or by Graph no
longer reporting the removal, never by seeing it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.clearvox import CvUser
from shared.sync.base import MassChangeRule, hold_reason
from shared.sync.users.actions import (
    Conflict,
    Create,
    Deactivate,
    FieldWarning,
    LinkAction,
    Skip,
    Unlinked,
    Update,
    UsersPlan,
)
from shared.sync.users.rules import (
    REASON_DISABLED,
    WHY_ABSENT,
    WHY_DELETED,
    WHY_DISABLED,
    WHY_LEFT_GROUP,
    GraphUser,
    Link,
    UsersOptions,
    desired_fields,
    exists_reason,
    field_hash,
    field_hashes,
    ineligible_reason,
    object_key,
    same_value,
    text_of,
)


def plan_users(
    graph_users: Sequence[GraphUser],
    removed_ids: Sequence[str],
    cv_users: Sequence[CvUser],
    links: Mapping[str, Link],
    options: UsersOptions,
    *,
    full_round: bool,
    gone_cv_ids: Iterable[str] = (),
) -> UsersPlan:
    """Decide what to do; no I/O.

    graph_users: full user dicts (a delta round's partial items merged with the
    cached copy), plus, in a delta round, the cached users waiting for a
    manual link (`awaiting_link`). An item carrying "@removed" counts as removed.
    removed_ids: object ids Graph reported as removed. A user both listed and
    removed counts as present (the less destructive reading; the next full
    round corrects it).
    cv_users: all ClearVox users in a full round; in a delta round at least
    the users it touches, looked up by id, Object-ID and email. In a full round a linked ClearVox user that is not
    among them counts as gone; a delta round trusts the links row instead.
    full_round: linked users absent from the round count as removed, and
    unlinked/conflict rows of absent users are dropped.
    gone_cv_ids: ClearVox user ids a delta round looked up and did not find
    (deleted in ClearVox). Without it, a delta round trusts the links row of a
    ClearVox user it did not see; with it, that user counts as gone, as in a
    full round.
    """
    return _Planner(graph_users, removed_ids, cv_users, links, options, full_round, gone_cv_ids).plan()


class _Planner:
    def __init__(
        self,
        graph_users: Sequence[GraphUser],
        removed_ids: Sequence[str],
        cv_users: Sequence[CvUser],
        links: Mapping[str, Link],
        options: UsersOptions,
        full_round: bool,
        gone_cv_ids: Iterable[str] = (),
    ) -> None:
        self.options = options
        self.full_round = full_round
        self.gone_cv_ids = frozenset(gone_cv_ids)
        self.pending_warnings: list[str] = []
        self.out = UsersPlan(full_round=full_round)
        self.users: dict[str, GraphUser] = {}
        removed: dict[str, str] = {}
        for user in graph_users:
            oid = text_of(user.get("id"))
            if not oid:
                continue
            if "@removed" in user:
                removed.setdefault(object_key(oid), oid)
            else:
                self.users.pop(object_key(oid), None)  # re-insert: the last copy wins, at its last position
                self.users[object_key(oid)] = user
        for oid in removed_ids:
            removed.setdefault(object_key(oid), oid)
        self.removed = {k: v for k, v in removed.items() if k not in self.users}
        self.links = {object_key(k): v for k, v in links.items()}
        self.cv_by_id = {u.id: u for u in cv_users}
        self.cv_by_ext: dict[str, list[CvUser]] = {}
        self.cv_by_email: dict[str, list[CvUser]] = {}
        for u in cv_users:
            if u.external_application_id and u.external_application_id.strip():
                self.cv_by_ext.setdefault(object_key(u.external_application_id), []).append(u)
            if u.email and u.email.strip():
                self.cv_by_email.setdefault(u.email.strip().casefold(), []).append(u)

    # ---- entry

    def plan(self) -> UsersPlan:
        candidates: list[tuple[str, GraphUser]] = []
        for key, user in self.users.items():
            oid = text_of(user.get("id"))
            members = self.options.users_group_members
            if members is not None and key not in members:
                self._out_of_group(key, oid)
                continue
            reason = ineligible_reason(user, self.options)
            if reason == REASON_DISABLED and self._linked_target(key, require_row=False) is not None:
                self._removed(key, oid, WHY_DISABLED, require_row=False)
            elif reason:
                self._ineligible(key, oid, reason)
            else:
                candidates.append((key, user))
        duplicates = self._duplicates(candidates)
        for key, user in candidates:
            self._eligible(key, user, duplicates.get(text_of(user.get("mail")).casefold()))
        for key, oid in self.removed.items():
            self._removed(key, oid, WHY_DELETED, require_row=False)
        if self.full_round:
            self._absent()
        self._hold_deactivations()
        self.out.stale = sorted(set(self.out.stale))
        return self.out

    # ---- helpers

    def _skip(self, item_id: str, reason: str) -> None:
        self.out.skips.append(Skip(item_id, reason, self._name(item_id)))

    def _name(self, item_id: str) -> str:
        user = self.users.get(object_key(item_id))
        link = self.links.get(object_key(item_id))
        display = text_of(user.get("displayName")) if user else (link.display_name if link else "")
        mail = text_of(user.get("mail")) if user else (link.email if link else "")
        return f"{display} <{mail}>" if display and mail else display or mail

    def _row(self, key: str, link: Link) -> None:
        """Write `link` unless the table already holds exactly that."""
        if self.links.get(key) != link:
            self.out.rows.append(link)

    def _warn(self, oid: str) -> None:
        """Field warnings count only for users whose fields are written (not for skipped ones)."""
        self.out.warnings.extend(FieldWarning(oid, w) for w in self.pending_warnings)
        self.pending_warnings = []

    def _drop_waiting_row(self, key: str) -> None:
        """An unlinked/conflict row no longer applies (user gone, ineligible or out of scope)."""
        link = self.links.get(key)
        if link is not None and link.status in ("unlinked", "conflict"):
            self.out.stale.append(link.object_id)

    def _linked_target(self, key: str, *, require_row: bool) -> CvUser | Link | None:
        """The ClearVox user linked to this object id, or the row to act on when ClearVox was not consulted.

        ClearVox decides: a ClearVox user carrying the object id. With
        require_row only a link the connector recorded counts (a pasted id
        with a typo must not lead to a deactivation). A row whose ClearVox user
        is gone or carries another id is stale.
        """
        link = self.links.get(key)
        matches = self.cv_by_ext.get(key, [])
        if len(matches) == 1:
            cv = matches[0]
            if require_row and not (link is not None and link.is_linked and link.cv_user_id == cv.id):
                return None
            return cv
        if matches:
            return None  # ambiguous paste, reported by the caller
        if link is None or not link.is_linked or link.cv_user_id is None:
            return None
        if link.cv_user_id in self.cv_by_id or self.full_round or link.cv_user_id in self.gone_cv_ids:
            return None  # the ClearVox user now carries another id, or no longer exists
        return link  # delta round, ClearVox user not looked up: trust the row

    # ---- cases

    def _out_of_group(self, key: str, oid: str) -> None:
        if self._linked_target(key, require_row=True) is not None:
            self._removed(key, oid, WHY_LEFT_GROUP, require_row=True)
        else:
            self.out.out_of_scope += 1
            self._drop_waiting_row(key)

    def _ineligible(self, key: str, oid: str, reason: str) -> None:
        target = self._linked_target(key, require_row=False)
        if isinstance(target, CvUser):
            reason += f"; linked ClearVox user {target.id} is not updated"
        self._skip(oid, reason)
        self._drop_waiting_row(key)

    def _ambiguous(self, key: str, oid: str, email: str) -> bool:
        matches = self.cv_by_ext.get(key, [])
        if len(matches) < 2:
            return False
        ids = ", ".join(sorted(u.id for u in matches))
        reason = f"Object-ID {oid} is pasted into several ClearVox users ({ids}); keep it in one"
        self._skip(oid, reason)
        self.out.conflicts.append(Conflict(email, (oid,), reason))
        return True

    def _duplicates(self, candidates: Sequence[tuple[str, GraphUser]]) -> dict[str, list[str]]:
        """Email (casefolded) -> object ids of all Entra users having it, for emails used more than once.

        A delta round sees only some users, so the emails the links table
        remembers for users not in this round count too.
        """
        owners: dict[str, list[str]] = {}
        for _, user in candidates:
            owners.setdefault(text_of(user.get("mail")).casefold(), []).append(text_of(user.get("id")))
        if not self.full_round:
            for key, link in sorted(self.links.items()):
                if key in self.users or key in self.removed or not link.email:
                    continue
                if link.status in ("linked", "unlinked", "conflict"):
                    owners.setdefault(link.email.casefold(), []).append(link.object_id)
        return {email: ids for email, ids in owners.items() if len(ids) > 1}

    def _eligible(self, key: str, user: GraphUser, duplicate_of: list[str] | None) -> None:
        oid = text_of(user.get("id"))
        fields, self.pending_warnings = desired_fields(user, self.options.default_region)
        email = fields["email"]
        if self._ambiguous(key, oid, email):
            return
        if duplicate_of and not any(c.email.casefold() == email.casefold() for c in self.out.conflicts):
            others = ", ".join(sorted(duplicate_of))
            self.out.conflicts.append(Conflict(
                email, tuple(sorted(duplicate_of)),
                f"{len(duplicate_of)} Entra users have mail {email} ({others}); none is created until one has it"))
        matches = self.cv_by_ext.get(key, [])
        if matches:
            self._sync_linked(key, oid, fields, matches[0])
            return
        unseen = self._linked_target(key, require_row=False)
        if isinstance(unseen, Link):
            # Delta round and the linked ClearVox user was not among those looked up: creating could duplicate it.
            self._skip(oid, f"linked ClearVox user {unseen.cv_user_id} was not found in this run; "
                            "the next full round decides")
            return
        if duplicate_of:
            others = ", ".join(sorted(i for i in duplicate_of if object_key(i) != key))
            self._skip(oid, f"conflict: mail {email} is also the mail of Entra user {others}; not created")
            self._row(key, Link(oid, None, email, fields["display_name"], "conflict"))
            return
        owners = self.cv_by_email.get(email.casefold(), [])
        if owners:
            self._existing_email(key, oid, fields, owners[0])
        else:
            self._create(key, oid, fields)

    def _create(self, key: str, oid: str, fields: dict[str, Any]) -> None:
        link = self.links.get(key)
        note = ""
        if link is not None and link.is_linked:
            note = (f"ClearVox user {link.cv_user_id} it was linked to no longer exists "
                    "or no longer carries this Object-ID")
        row = Link(oid, None, fields["email"], fields["display_name"], "linked", field_hashes(fields))
        self._warn(oid)
        self.out.creates.append(Create(oid, fields, row, note))

    def _existing_email(self, key: str, oid: str, fields: dict[str, Any], cv: CvUser) -> None:
        email, display = fields["email"], fields["display_name"]
        other = (cv.external_application_id or "").strip()
        if other:
            reason = (f"exists in ClearVox as user {cv.id}, which is linked to another Object-ID ({other}); "
                      "not linked")
            self._skip(oid, reason)
            self.out.conflicts.append(Conflict(email, (oid,), reason, cv.id))
            self._row(key, Link(oid, cv.id, email, display, "conflict"))
        elif self.options.auto_link:
            changes, before, hashes, _ = self._diff(fields, cv, {})
            row = Link(oid, cv.id, email, display, "linked", hashes)
            self._warn(oid)
            self.out.link_actions.append(LinkAction(cv.id, oid, email, display, True, changes, before, row))
        else:
            self._skip(oid, exists_reason(oid))
            self.out.unlinked.append(Unlinked(cv.id, cv.email, display, oid))
            self._row(key, Link(oid, cv.id, email, display, "unlinked"))

    def _diff(
        self, fields: Mapping[str, Any], cv: CvUser, written: Mapping[str, str],
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], list[str]]:
        """(changes, before, hashes to record, held-back fields) for a linked ClearVox user.

        A field is sent when Entra moved away from what was last written
        (`written`; empty = everything) and ClearVox differs. A field left out
        keeps its old hash, and so does an email another ClearVox user already
        has (sending it would fail; it is retried on a later run).
        """
        changes: dict[str, Any] = {}
        before: dict[str, Any] = {}
        held: list[str] = []
        for name, value in fields.items():
            if written.get(name) == field_hash(name, value):
                continue
            current = getattr(cv, name)
            if same_value(name, current, value):
                continue
            if name == "email" and any(u.id != cv.id for u in self.cv_by_email.get(str(value).casefold(), [])):
                held.append(name)
                continue
            changes[name] = value
            before[name] = current
        hashes = dict(written)
        hashes.update({name: h for name, h in field_hashes(fields).items() if name not in held})
        return changes, before, hashes, held

    def _sync_linked(self, key: str, oid: str, fields: dict[str, Any], cv: CvUser) -> None:
        link = self.links.get(key)
        known = link is not None and link.is_linked and link.cv_user_id == cv.id
        written = link.field_hashes if known and link is not None else {}
        changes, before, hashes, held = self._diff(fields, cv, written)
        self._warn(oid)
        for name in held:
            self.out.warnings.append(FieldWarning(
                oid, f"{name} not changed to {fields[name]}: another ClearVox user has that email"))
        by_connector = known and link is not None and link.deactivated_by_connector
        if not cv.active and by_connector:
            changes["active"] = True  # the connector deactivated it; the Entra user is back
            before["active"] = False
            by_connector = False
        email = cv.email if "email" in held else fields["email"]
        row = Link(oid, cv.id, email, fields["display_name"], "linked", hashes, by_connector)
        if not known:
            self.out.link_actions.append(
                LinkAction(cv.id, oid, email, fields["display_name"], False, changes, before, row))
        elif changes:
            self.out.updates.append(Update(cv.id, oid, changes, before, row))
        else:
            self.out.unchanged += 1
            self._row(key, row)

    def _removed(self, key: str, oid: str, why: str, *, require_row: bool) -> None:
        link = self.links.get(key)
        if self._ambiguous(key, oid, link.email if link else ""):
            return
        target = self._linked_target(key, require_row=require_row)
        if target is None:
            if link is not None and (link.status in ("unlinked", "conflict") or link.is_linked):
                self.out.stale.append(link.object_id)  # waiting row, or the linked ClearVox user is gone
            return
        if isinstance(target, CvUser):
            cv_id, email, display, active = target.id, target.email, target.display_name or "", target.active
        else:
            cv_id, email, display, active = str(target.cv_user_id), target.email, target.display_name, True
        display = (link.display_name if link else "") or display or email
        if link is not None and link.status == "deactivated":
            return  # handled already; if someone reactivated it in ClearVox, that choice stands
        hashes = link.field_hashes if link is not None and link.cv_user_id == cv_id else {}
        if not active:
            # Inactive already, not by this connector: remember that it must not be reactivated by it either.
            self._row(key, Link(oid, cv_id, email, display, "deactivated", hashes, False))
            return
        if self.options.on_removed == "report":
            self._skip(oid, f"{why}; ClearVox user {cv_id} <{email}> left active (on_removed=report)")
            return
        row = Link(oid, cv_id, email, display, "deactivated", hashes, True)
        self.out.deactivations.append(Deactivate(cv_id, oid, email, display, why, row))

    def _absent(self) -> None:
        """Full round: rows and pasted ids of users Entra no longer lists."""
        for key, link in sorted(self.links.items()):
            if key in self.users or key in self.removed:
                continue
            if link.status == "linked":
                self._removed(key, link.object_id, WHY_ABSENT, require_row=True)
            elif link.status == "deactivated":
                if self._linked_target(key, require_row=False) is None:
                    self.out.stale.append(link.object_id)
            else:
                self.out.stale.append(link.object_id)
        for ext, cv_users in sorted(self.cv_by_ext.items()):
            if ext in self.users or ext in self.removed or ext in self.links:
                continue
            for cv in cv_users:
                self._skip(cv.id, (f"ClearVox user {cv.id} <{cv.email}> has Extern toepassing ID "
                                   f"{cv.external_application_id}, which matches no Entra user: check for a typo"))

    def _hold_deactivations(self) -> None:
        """The one mass-change guard over this run's deactivations; known = the users linked now."""
        plan = self.out
        known = sum(1 for link in self.links.values() if link.status == "linked" and link.cv_user_id)
        reason = hold_reason(len(plan.deactivations), known,
                             MassChangeRule("deactivations", limit=self.options.max_deactivations),
                             confirmed=self.options.confirm_deactivations,
                             earlier_today=self.options.deactivated_today)
        if reason is None:
            return
        plan.held, plan.deactivations, plan.held_reason = plan.deactivations, [], reason
        for d in plan.held:
            self._skip(d.object_id, (f"{d.reason}; deactivation of ClearVox user {d.cv_user_id} held: {reason}; "
                                     "confirm with `nexxt365 sync users --confirm-deactivations`"))
