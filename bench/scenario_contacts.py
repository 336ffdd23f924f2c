"""Contacts sync benchmarks (issue 4's performance targets).

contacts-nochange  `args.contact_users` linked users with one folder (the default Contacts folder) each; the
                   second run, with nothing changed in Outlook, is measured. Target: at most
                   ceil(users / 20) Graph HTTP requests besides the token, and zero ClearVox requests.
contacts-initial   first run over `args.contact_users` x `args.contacts_per_user` contacts (default
                   1,000 x 200). Reports wall time and request counts, and the ideal for comparison:
                   Graph batches + ClearVox list pages, plus creates x latency / NEXXT365_CLEARVOX_CONCURRENCY
                   (the bound the concurrent, bounded writes cannot beat).
company-nochange   the company phone book (NEXXT365_COMPANY_CONTACTS): COMPANY_MAILBOXES shared mailboxes with
                   a Contacts folder and a subfolder each; the second run, with nothing changed, is measured.
                   Target: Graph requests per mailbox at most 2 folders / 20 per $batch, zero ClearVox requests.
company-initial    first run over COMPANY_INITIAL company contacts in one shared mailbox (Contacts + 4 subfolders
                   of equal size), against its ideal: the $batch rounds Graph needs in sequence (folder levels,
                   then delta pages of 200, at most 4 requests per mailbox at once), plus one phone book page
                   and the creates x latency / NEXXT365_CLEARVOX_CONCURRENCY.

Linked users are seeded as the users sync leaves them: a ClearVox user carrying the Entra object id
and a links row with status "linked". Both simulators answer every request after `args.latency_ms`.
"""

from __future__ import annotations

import math

from bench.common import BenchArgs, Result, new_store, started_world, timed_run
from shared.sandbox.world import World
from shared.state import Store
from shared.sync.users.rules import Link

BATCH = 20
CLEARVOX_PAGE = 100


def _populate(world: World, store: Store, users: int, contacts_per_user: int) -> None:
    """Linked users, each with `contacts_per_user` contacts in the default Contacts folder."""
    links = {}
    serial = 0
    for i in range(users):
        mail = f"user{i:05d}@contoso.nl"
        oid = world.graph.add_user(displayName=f"Gebruiker {i}", givenName="Gebruiker", surname=str(i), mail=mail)
        cv = world.clearvox.add_user(email=mail, first_name="Gebruiker", last_name=str(i), external_application_id=oid)
        links[oid] = Link(oid, str(cv["id"]), mail, f"Gebruiker {i}", "linked").to_row()
        for j in range(contacts_per_user):
            serial += 1
            world.graph.add_contact(oid, displayName=f"Relatie {j} van {i}", givenName="Relatie", surname=f"{j}-{i}",
                                    companyName=f"Bedrijf {j % 50}", emailAddresses=[{"address": f"r{serial}@klant.nl"}],
                                    businessPhones=[f"06 1{serial % 10_000_000:07d}"])
    store.for_tenant(world.tenant.key).upsert("links", links)


def contacts_nochange(args: BenchArgs) -> list[Result]:
    world = started_world(args)
    try:
        store = new_store(args)
        users = args.contact_users
        _populate(world, store, users, 1)
        latency = world.graph.latency
        world.graph.latency = world.clearvox.latency = 0.0  # the first run is not what this scenario measures
        timed_run("contacts-nochange (setup)", world, store, "contacts")
        world.graph.latency = world.clearvox.latency = latency
        result, report = timed_run("contacts-nochange", world, store, "contacts")
        limit = math.ceil(users / BATCH)
        result.extra.update({
            "users": users, "graph_limit": limit, "failed": len(report.failed),
            "ok": result.graph_requests <= limit and result.clearvox_requests == 0 and not report.failed,
        })
        return [result]
    finally:
        world.stop()


def contacts_initial(args: BenchArgs) -> list[Result]:
    world = started_world(args)
    try:
        store = new_store(args)
        users, per_user = args.contact_users, args.contacts_per_user
        _populate(world, store, users, per_user)
        result, report = timed_run("contacts-initial", world, store, "contacts")
        latency = args.latency_ms / 1000
        concurrency = world.tenant.options.clearvox_concurrency
        total = users * per_user
        graph_batches = math.ceil(2 * users / BATCH) + math.ceil(users / BATCH)  # folders, then delta rounds
        cv_reads = users + math.ceil(users / CLEARVOX_PAGE)  # contact listings + the users' activity
        ideal = graph_batches * latency + (cv_reads + total) * latency / concurrency
        result.extra.update({
            "users": users, "contacts": total, "created": report.created, "failed": len(report.failed),
            "concurrency": concurrency, "ideal_s": round(ideal, 1), "ratio": round(result.wall_s / ideal, 2),
            "creates_per_s": round(report.created / result.wall_s, 1) if result.wall_s else 0.0,
            "ok": report.created == total and not report.failed,
        })
        return [result]
    finally:
        world.stop()


COMPANY_MAILBOXES = 5
COMPANY_INITIAL = 5_000
COMPANY_FOLDERS = 5
DELTA_PAGE = 200
PER_MAILBOX = 4  # Graph: at most 4 concurrent requests per mailbox


def _shared_mailboxes(world: World, count: int, contacts: int, folders: int) -> tuple[str, ...]:
    """`count` shared mailboxes, each with `contacts` company contacts over `folders` folders (Contacts + subfolders)."""
    addresses = []
    for m in range(count):
        address = f"gedeeld{m}@contoso.nl"
        oid = world.graph.add_user(displayName=f"Gedeeld {m}", mail=address, userPrincipalName=address,
                                   accountEnabled=False)
        places: list[str | None] = [None] + [world.graph.add_contact_folder(oid, f"Map {f}") for f in range(1, folders)]
        for j in range(contacts):
            world.graph.add_contact(oid, places[j % folders], displayName=f"Relatie {j} van {m}",
                                    companyName=f"Bedrijf {j % 50}", businessPhones=[f"030 {m}{j % 1_000_000:06d}"])
        addresses.append(address)
    return tuple(addresses)


def company_nochange(args: BenchArgs) -> list[Result]:
    world = started_world(args)
    try:
        store = new_store(args)
        tenant = world.tenant_with(company_contacts=_shared_mailboxes(world, COMPANY_MAILBOXES, 20, 2))
        latency = world.graph.latency
        world.graph.latency = world.clearvox.latency = 0.0  # the first run is not what this scenario measures
        timed_run("company-nochange (setup)", world, store, "contacts", tenant=tenant)
        world.graph.latency = world.clearvox.latency = latency
        result, report = timed_run("company-nochange", world, store, "contacts", tenant=tenant)
        limit = math.ceil(2 * COMPANY_MAILBOXES / BATCH)
        result.extra.update({
            "mailboxes": COMPANY_MAILBOXES, "graph_per_mailbox": round(result.graph_requests / COMPANY_MAILBOXES, 2),
            "graph_limit": limit, "failed": len(report.failed),
            "ok": result.graph_requests <= limit and result.clearvox_requests == 0 and not report.failed,
        })
        return [result]
    finally:
        world.stop()


def company_initial(args: BenchArgs) -> list[Result]:
    world = started_world(args)
    try:
        store = new_store(args)
        tenant = world.tenant_with(company_contacts=_shared_mailboxes(world, 1, COMPANY_INITIAL, COMPANY_FOLDERS))
        result, report = timed_run("company-initial", world, store, "contacts", tenant=tenant)
        latency = args.latency_ms / 1000
        concurrency = tenant.options.clearvox_concurrency
        pages = math.ceil(COMPANY_INITIAL / COMPANY_FOLDERS / DELTA_PAGE)
        graph_rounds = 2 + pages * math.ceil(COMPANY_FOLDERS / PER_MAILBOX)  # two folder levels, then the pages
        ideal = graph_rounds * latency + latency + COMPANY_INITIAL * latency / concurrency
        result.extra.update({
            "contacts": COMPANY_INITIAL, "created": report.created, "failed": len(report.failed),
            "concurrency": concurrency, "ideal_s": round(ideal, 1), "ratio": round(result.wall_s / ideal, 2),
            "creates_per_s": round(report.created / result.wall_s, 1) if result.wall_s else 0.0,
            "ok": report.created == COMPANY_INITIAL and not report.failed and
            len(world.clearvox.company_contacts()) == COMPANY_INITIAL,
        })
        return [result]
    finally:
        world.stop()


SCENARIOS = {"contacts-nochange": contacts_nochange, "contacts-initial": contacts_initial,
             "company-nochange": company_nochange, "company-initial": company_initial}
