"""`nexxt365 doctor`: every check a partner needs before the first sync, each with its fix."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from shared.check import Check
from shared.clearvox import ClearVox
from shared.clearvox_contract import contract_check
from shared.clients import clients
from shared.errors import AccountNotFound, ClearVoxError, Nexxt365Error
from shared.graph.auth import CONSENT_STEP
from shared.graph.client import Graph
from shared.graph.users import all_users
from shared.settings import Tenant
from shared.state import State, Store
from shared.sync.base import syncs
from shared.sync.users.rules import is_valid_email, text_of

EXPIRY_WARNING = timedelta(days=30)


def _attempt(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, "OK", fn())
    except Nexxt365Error as exc:
        return Check(name, "FAIL", str(exc))
    except Exception as exc:  # report, never a traceback
        return Check(name, "FAIL", f"unexpected {type(exc).__name__}")


def run_doctor(tenant: Tenant, store: Store | None, *, verify: str | bool | None = None, today: date | None = None,
               contract: bool = False) -> list[Check]:
    """All checks for one tenant; later checks are skipped when what they need failed.

    Settings (status map, schedules, region, bounds) were checked when `tenant` was read, as in every run.
    With `contract`, every ClearVox path and field the client relies on is checked as well (read-only).
    """
    checks: list[Check] = []
    with clients(tenant, verify, reuse_tokens=False) as (graph, cv):  # prove the credentials work now
        token = _attempt("Microsoft Entra token",
                         lambda: (graph.token(), f"token issued for app {tenant.client_id} in {tenant.tenant}")[1])
        checks.append(token)
        if token.passed:
            roles = graph.roles()
            checks.extend(_permission_checks(tenant, roles))
            if "User.Read.All" in roles:
                checks.append(_attempt("Microsoft Graph users", lambda: _users_summary(graph)))
            else:
                checks.append(Check("Microsoft Graph users", "SKIP", "needs User.Read.All"))
            for spec in syncs():
                checks.extend(spec.doctor(graph, tenant))
        else:
            checks.append(Check("permissions", "SKIP", "needs a token"))
        checks.append(_secret_expiry(tenant, today or datetime.now(UTC).date()))
        checks.extend(_clearvox_checks(cv, tenant))
        if contract:
            checks.extend(contract_checks(cv))
    if store is not None:
        storage = _attempt("state storage", lambda: (store.table("runs"), "tables reachable")[1])
        checks.append(storage)
        if storage.passed:
            checks.extend(_lease_checks(store.for_tenant(tenant.key)))
    return checks


# Broader application permissions that include a narrower one.
_INCLUDED_IN = {"GroupMember.Read.All": {"Group.Read.All", "Directory.Read.All"}}


def _permission_checks(tenant: Tenant, roles: set[str]) -> list[Check]:
    """One check per Graph permission the registered syncs need with this tenant's options."""
    needed: dict[str, list[str]] = {}
    for spec in syncs():
        for perm, why in spec.needs(tenant.options).items():
            needed.setdefault(perm, []).append(why)
    checks = []
    for perm, whys in needed.items():
        why = "; ".join(whys)
        if perm in roles or roles & _INCLUDED_IN.get(perm, set()):
            checks.append(Check(f"permission {perm}", "OK", f"granted with admin consent ({why})"))
        else:
            checks.append(Check(f"permission {perm}", "FAIL", f"{perm} is not granted. Fix: "
                                f"{CONSENT_STEP.format(app=tenant.client_id, perm=perm)} ({why})."))
    return checks


def _users_summary(graph: Graph) -> str:
    total = with_mail = 0
    for user in all_users(graph):
        total += 1
        if is_valid_email(text_of(user.get("mail"))):
            with_mail += 1
    without = total - with_mail
    note = (f"; {without} without an email in their contact info will be skipped "
            "(fill in Email in Entra ID > Users > Properties)") if without else ""
    return f"{total} users, {with_mail} with a valid email{note}"


def _lease_checks(state: State) -> list[Check]:
    """A sync whose lease another run holds right now will not run (exit 3) until it is released or expires."""
    checks = []
    for spec in syncs():
        holder = state.lease_holder(spec.name)
        if holder is None:
            continue
        since, until = holder
        if until is not None and until <= datetime.now(UTC):
            detail = f"the lease of a run that stopped renewing expired at {until:%H:%M:%S} UTC; the next run takes it over"
        else:
            detail = (f"a run holds the lease since {since:%Y-%m-%d %H:%M:%S} UTC" if since else "a run holds the lease") + (
                f", renewed until {until:%H:%M:%S} UTC; runs in between are not run (exit 3)" if until else "")
        checks.append(Check(f"{spec.name} sync lease", "WARN", detail))
    return checks


def _secret_expiry(tenant: Tenant, today: date) -> Check:
    try:
        expires = tenant.secret_expiry()
    except Nexxt365Error as exc:
        return Check("client secret expiry", "WARN", str(exc))
    if tenant.client_secret is None:
        return Check("client secret expiry", "SKIP", "a certificate is used")
    if expires is None:
        return Check("client secret expiry", "WARN", "unknown: set NEXXT365_CLIENT_SECRET_EXPIRES (or the Key Vault secret's expiry) "
                     "to the date shown in Certificates & secrets, so that doctor warns 30 days ahead")
    left = (expires - today).days
    if left < 0:
        return Check("client secret expiry", "FAIL", f"the client secret expired on {expires}: create a new one in Entra ID > "
                     "App registrations > Certificates & secrets and update NEXXT365_CLIENT_SECRET")
    if timedelta(days=left) <= EXPIRY_WARNING:
        return Check("client secret expiry", "WARN", f"the client secret expires on {expires} ({left} days): rotate it now "
                     "(docs/deploy.md, 'Rotating the secret')")
    return Check("client secret expiry", "OK", f"expires on {expires} ({left} days)")


def _clearvox_checks(cv: ClearVox, tenant: Tenant) -> list[Check]:
    try:
        account = cv.get_account()
    except AccountNotFound:
        return [Check("ClearVox API key", "OK", "accepted"),
                Check("ClearVox account", "FAIL", f"account {tenant.clearvox_account!r} does not exist or is not visible to this key: "
                      "check NEXXT365_CLEARVOX_ACCOUNT (the Company ID at the end of /accounts/edit/<company-ID>)")]
    except ClearVoxError as exc:
        return [Check("ClearVox API key", "FAIL", str(exc))]
    except Exception as exc:
        return [Check("ClearVox API key", "FAIL", f"unexpected {type(exc).__name__}")]
    checks = [Check("ClearVox API key", "OK", "accepted"),
              Check("ClearVox account", "OK", f"{account.name} ({account.id})")]
    if account.office365:
        checks.append(Check("ClearVox Office 365 licence", "OK", "active"))
    else:
        checks.append(Check("ClearVox Office 365 licence", "FAIL", f"not active for Company ID {account.id}: ask ClearVox Customer Care "
                            "to activate the Office 365 koppeling licence"))
    return checks


def render(tenant: Tenant, checks: list[Check]) -> str:
    lines = [f"nexxt365 doctor - tenant {tenant.tenant}, ClearVox account {tenant.clearvox_account}"]
    for c in checks:
        lines.append(f"  {c.status:<4} {c.name}: {c.detail}")
    failed = sum(not c.passed for c in checks)
    lines.append("  all checks passed" if not failed else f"  {failed} check(s) failed: fix them and run doctor again")
    return "\n".join(lines)


def contract_checks(cv: ClearVox) -> list[Check]:
    """`doctor --contract`: each mismatch between the PBX and clearvox-api.yaml as a failed check (read-only)."""
    try:
        findings = contract_check(cv)
    except Nexxt365Error as exc:
        return [Check("ClearVox contract", "FAIL", str(exc))]
    if not findings:
        return [Check("ClearVox contract", "OK", "every path and field the connector uses matches clearvox-api.yaml")]
    return [Check("ClearVox contract", "FAIL", str(finding)) for finding in findings]
