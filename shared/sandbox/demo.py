"""`nexxt365 demo`: the connector end to end against the sandbox, with a readable summary.

Starts the Graph and ClearVox simulators and Azurite, seeds the demo tenant,
runs doctor and every sync, and shows what a partner would see. With
NEXXT365_DEMO_SIGN_IN=managed-identity it signs in without a secret, through the
managed identity endpoint simulator and a federated credential (doctor shows it).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TextIO

from shared import runner
from shared.credentials import describe
from shared.doctor import render, run_doctor
from shared.errors import ConfigError
from shared.report import RunReport
from shared.sandbox.azurite import Azurite
from shared.sandbox.demo_tenant import COMPANY_CONTACTS, DemoIds, seed, teams_call
from shared.sandbox.world import World
from shared.settings import Tenant
from shared.sign_in import MANAGED_IDENTITY, SECRET
from shared.state import Store

LABELS = {"available": "Beschikbaar", "away": "Afwezig", "busy": "Bezig", "dnd": "Niet storen", "elsewhere": "Werkt ergens anders"}


def _section(out: TextIO, title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 66 - len(title)), file=out)


def _report(out: TextIO, report: RunReport) -> None:
    print(report.human_summary(), file=out)


@contextmanager
def _sign_in(world: World) -> Iterator[None]:
    """The identity endpoint's variables in this process while the demo runs (App Service sets them)."""
    saved = {name: os.environ.get(name) for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
    os.environ.update(world.identity_sim.env() if world.identity_sim else {})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_demo(out: TextIO) -> int:
    logging.getLogger("nexxt365").setLevel(logging.CRITICAL)  # the summary below says it all
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    way = (os.environ.get("NEXXT365_DEMO_SIGN_IN") or SECRET).strip().lower()
    if way not in (SECRET, MANAGED_IDENTITY):
        raise ConfigError(f"NEXXT365_DEMO_SIGN_IN {way!r} is not one of: {SECRET}, {MANAGED_IDENTITY}.")
    with Azurite() as azurite, World(secretless=way == MANAGED_IDENTITY) as world, _sign_in(world):
        ids = seed(world, now)
        store = Store(azurite.connection_string)
        expires = (now + timedelta(days=540)).date()  # as noted from Certificates & secrets
        tenant = replace(world.tenant_with(company_contacts=COMPANY_CONTACTS), secret_expiry=lambda: expires)
        codes: list[int] = []
        print(f"Sandbox: Microsoft Graph {world.graph.url}, ClearVox {world.clearvox.url}, Azurite {azurite.port}", file=out)
        print(f"Sign-in: {describe(tenant)}", file=out)

        _section(out, "nexxt365 doctor")
        checks = run_doctor(tenant, store, verify=world.verify)
        print(render(tenant, checks), file=out)
        codes.append(0 if all(c.passed for c in checks) else 2)

        _section(out, "nexxt365 sync users")
        users = runner.run("users", tenant, store, verify=world.verify)
        _report(out, users)
        codes.append(users.exit_code)

        _section(out, "nexxt365 report unlinked")
        from shared.sync.users.linking import report_unlinked

        buf = io.StringIO()
        report_unlinked(tenant, store, buf, csv_format=False)
        print(buf.getvalue().rstrip() or "(none)", file=out)

        _section(out, "nexxt365 sync contacts")
        contacts = runner.run("contacts", tenant, store, verify=world.verify)
        _report(out, contacts)
        codes.append(contacts.exit_code)
        _public_contact_kept(out, world, store, ids, tenant)

        _section(out, f"nexxt365 sync calendar --at {now:%H:%M} UTC (meetings running)")
        codes.append(_calendar(out, tenant, world, store, ids, now))
        later = now + timedelta(hours=4)
        _section(out, f"nexxt365 sync calendar --at {later:%H:%M} UTC (meetings over)")
        codes.append(_calendar(out, tenant, world, store, ids, later))
        teams_call(world, ids)
        _section(out, f"nexxt365 sync calendar --at {later:%H:%M} UTC with NEXXT365_TEAMS_PRESENCE=true (Gert in a Teams call)")
        codes.append(_calendar(out, replace(tenant, options=replace(tenant.options, teams_presence=True)), world, store, ids,
                               later))

        _status(out, world, store, tenant, now)

        _section(out, "summary")
        cv_users = list(world.clearvox.users.values())
        linked = sum(1 for u in cv_users if u.get("external_application_id"))
        print(f"ClearVox users: {len(cv_users)} ({linked} linked to Entra); contacts: {len(world.clearvox.contacts)}; "
              f"Graph requests: {len(world.graph.log)}; ClearVox requests: {len(world.clearvox.log)}", file=out)
        worst = max(codes)
        print("demo finished: everything worked" if worst == 0 else f"demo finished with exit code {worst}", file=out)
        return worst


def _public_contact_kept(out: TextIO, world: World, store: Store, ids: DemoIds, tenant: Tenant) -> None:
    """A user made a synced contact public in ClearVox; then it is deleted in Outlook: it stays."""
    cv = world.clearvox
    match = [c for c in cv.contacts.values() if c.get("external_id") == ids.public_contact_graph_id]
    if not match:
        return
    cv.make_contact_public(match[0]["id"])
    world.graph.delete_contact(ids.public_contact_graph_id)
    print(f"\n(Anna made '{match[0]['display_name']}' public in ClearVox, then deleted it in Outlook)", file=out)
    again = runner.run("contacts", tenant, store, verify=world.verify)
    _report(out, again)


def _calendar(out: TextIO, tenant: Tenant, world: World, store: Store, ids: DemoIds, at: datetime) -> int:
    report = runner.run("calendar", tenant, store, verify=world.verify, at=at)
    _report(out, report)
    cv = world.clearvox
    by_oid = {u.get("external_application_id"): u for u in cv.users.values()}
    for name in ("Anna", "Bas", "Chantal", "Daan", "Emma", "Finn", "Gert"):
        user = by_oid.get(ids.by_name[name])
        if user:
            status = cv.status_of(user["id"])
            print(f"  {name:<8} {LABELS.get(status, status)}", file=out)
    return report.exit_code


def _status(out: TextIO, world: World, store: Store, tenant: Tenant, now: datetime) -> None:
    """`nexxt365 status` of two customers: this one, and a second whose client secret expires in 9 days."""
    from shared.status import exit_code, render, tenant_status

    soon = (now + timedelta(days=9)).date()
    second = replace(tenant, key="fabrikam", secret_expiry=lambda: soon)
    runner.run("users", second, store, verify=world.verify)
    _section(out, "nexxt365 status")
    statuses = [tenant_status(t, store.for_tenant(t.key)) for t in (tenant, second)]
    print(render(statuses), file=out)
    print(f"(exit code {exit_code(statuses)})", file=out)
