"""Each run emits one structured record; the timers emit the early warnings once a day per customer."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from shared import runner, telemetry
from shared.observe import daily_warnings
from shared.report import RunReport
from shared.sandbox.world import World
from shared.state import Store
from shared.status import HELD_CHANGES, MAILBOX_OUT_OF_SCOPE, SECRET_EXPIRING, UNLINKED_USERS
from tests.integration.telemetry_capture import captured

pytestmark = pytest.mark.integration


def test_each_run_emits_one_record_with_tenant_and_sync_as_dimensions(world: World, store: Store) -> None:
    for i in range(3):
        world.graph.add_user(displayName=f"Medewerker {i}", givenName="Medewerker", surname=str(i),
                             mail=f"medewerker{i}@voorbeeld.nl", businessPhones=["020 123 4567"])
    tenant = world.tenant
    with captured() as records:
        for sync in ("users", "contacts", "calendar"):
            runner.run(sync, tenant, store, verify=world.verify)
        runner.run("users", tenant, store, verify=world.verify, dry_run=True)  # a dry run is no fleet event

    runs = records.dimensions(telemetry.RUN)
    assert [r[telemetry.SYNC] for r in runs] == ["users", "contacts", "calendar"]
    users = runs[0]
    assert users[telemetry.TENANT] == tenant.key and users[telemetry.RESULT] == "ok" and users[telemetry.EXIT_CODE] == 0
    assert users[telemetry.COUNT_FIELDS["created"]] == 3 and users[telemetry.FAILED] == 0
    assert users[telemetry.GRAPH_REQUESTS] > 0 and users[telemetry.CLEARVOX_REQUESTS] > 0
    assert users[telemetry.DURATION_MS] >= 0 and users[telemetry.ERROR_CLASS] == ""
    assert set(users) <= telemetry.FIELDS
    assert records.records[0].getMessage() == "telemetry run users ok"


def test_a_failed_sign_in_and_a_run_not_started_are_recorded_by_class(world: World, store: Store) -> None:
    broken = replace(world.tenant, client_secret=lambda: "a-wrong-secret")
    state = store.for_tenant(world.tenant.key)
    assert state.acquire_lease("calendar", timedelta(minutes=2)) is not None  # another run is busy
    with captured() as records:
        runner.run("users", broken, store, verify=world.verify)
        runner.run("calendar", world.tenant, store, verify=world.verify)

    users, calendar = records.dimensions(telemetry.RUN)
    assert users[telemetry.RESULT] == "error" and users[telemetry.ERROR_CLASS] == "admin_fix"
    assert users[telemetry.EXIT_CODE] == 2
    assert calendar[telemetry.RESULT] == "not_run" and calendar[telemetry.EXIT_CODE] == 3


def test_early_warnings_once_a_day_with_their_age(world: World, store: Store) -> None:
    world.graph.add_user(displayName="Buiten Bereik", givenName="Buiten", surname="Bereik", mail="buiten@voorbeeld.nl",
                         mailbox_in_scope=False)
    world.graph.add_user(displayName="Al Bekend", givenName="Al", surname="Bekend", mail="al@voorbeeld.nl")
    world.clearvox.add_user(first_name="Al", last_name="Bekend", email="al@voorbeeld.nl")
    expires = date.today() + timedelta(days=10)
    tenant = replace(world.tenant, secret_expiry=lambda: expires)
    with captured() as records:
        runner.run("users", tenant, store, verify=world.verify)  # the first run of the day checks
        runner.run("calendar", tenant, store, verify=world.verify)  # checked already today: quiet
    first = {w[telemetry.CODE]: w for w in records.dimensions(telemetry.WARNING)}
    assert set(first) == {SECRET_EXPIRING, UNLINKED_USERS}
    assert first[SECRET_EXPIRING][telemetry.DAYS_LEFT] == 10 and first[SECRET_EXPIRING][telemetry.TENANT] == tenant.key

    state = store.for_tenant(tenant.key)
    held = RunReport("contacts", tenant.key)
    held.extra["held"] = 2
    state.save_run("contacts", held.to_json())
    with captured() as records:
        daily_warnings(tenant, state, held)  # held for the first time: warned at once, not tomorrow
    assert {w[telemetry.CODE] for w in records.dimensions(telemetry.WARNING)} >= {HELD_CHANGES}

    tomorrow = datetime.now(UTC) + timedelta(hours=25)
    with captured() as records:
        daily_warnings(tenant, state, now=tomorrow)
    later = {w[telemetry.CODE]: w for w in records.dimensions(telemetry.WARNING)}
    assert set(later) == {SECRET_EXPIRING, HELD_CHANGES, UNLINKED_USERS, MAILBOX_OUT_OF_SCOPE}
    assert later[HELD_CHANGES][telemetry.AGE_HOURS] >= 24 and later[HELD_CHANGES][telemetry.SYNC] == "contacts"
    assert later[HELD_CHANGES][telemetry.COUNT] == 2
    assert later[UNLINKED_USERS][telemetry.COUNT] == 1 and later[MAILBOX_OUT_OF_SCOPE][telemetry.COUNT] == 1

    released = RunReport("contacts", tenant.key)
    state.save_run("contacts", released.to_json())  # the held deletions were confirmed
    with captured() as records:
        daily_warnings(tenant, state, now=tomorrow + timedelta(hours=25))
    assert HELD_CHANGES not in {w[telemetry.CODE] for w in records.dimensions(telemetry.WARNING)}
    assert not any(key.startswith(HELD_CHANGES) for key in state.rows("notices", scope="warnings"))
