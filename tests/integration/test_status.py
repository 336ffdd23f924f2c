"""`nexxt365 status`: every customer x sync from the runs and health tables, what needs attention, exit codes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from shared.sandbox.azurite import Azurite
from shared.sandbox.world import World
from shared.settings import Settings
from shared.state import Store
from shared.status import (
    HELD_CHANGES,
    MAILBOX_OUT_OF_SCOPE,
    SECRET_EXPIRING,
    SYNC_BACKED_OFF,
    SYNC_NEVER_RUN,
    SYNC_STALE,
    UNLINKED_USERS,
    tenant_status,
)
from tests.integration.cli_run import nexxt365

pytestmark = pytest.mark.integration


def people(world: World, n: int = 3) -> None:
    for i in range(n):
        world.graph.add_user(displayName=f"Medewerker {i}", givenName="Medewerker", surname=str(i),
                             mail=f"medewerker{i}@voorbeeld.nl", businessPhones=["020 123 4567"])


def codes(doc: dict[str, Any], key: str = "attention") -> set[str]:
    return {item["code"] for item in doc[key]}


def far() -> str:
    return (date.today() + timedelta(days=400)).isoformat()


def test_healthy_customer_exits_0_with_every_sync_in_the_documented_shape(world: World, azurite: Azurite) -> None:
    people(world)
    for sync in ("users", "contacts", "calendar"):
        assert nexxt365(world, azurite, "sync", sync)[0] == 0

    code, out = nexxt365(world, azurite, "status", "--json", NEXXT365_CLIENT_SECRET_EXPIRES=far())

    assert code == 0, out
    doc = json.loads(out)
    [tenant] = doc["tenants"]
    assert tenant["tenant"] == world.tenant.key
    assert set(tenant["syncs"]) == {"users", "contacts", "calendar"}
    users = tenant["syncs"]["users"]
    assert {"last_run", "result", "failures", "next_try"} <= set(users)
    assert users["result"] == "ok" and users["failures"] == 0 and users["next_try"] is None
    assert users["counts"]["created"] == 3
    assert datetime.fromisoformat(users["last_run"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert tenant["secret_expires"] == far() and tenant["secret_days_left"] == 400
    assert tenant["attention"] == []

    code, text = nexxt365(world, azurite, "status", NEXXT365_CLIENT_SECRET_EXPIRES=far())
    assert code == 0
    assert f"tenant {world.tenant.key}: healthy" in text and "1 of 1 customer(s) healthy" in text


def test_failing_sign_in_and_expiring_secret_need_attention_with_their_fix(world: World, azurite: Azurite) -> None:
    people(world, 1)
    assert nexxt365(world, azurite, "sync", "users")[0] == 0
    assert nexxt365(world, azurite, "sync", "users", NEXXT365_CLIENT_SECRET="a-wrong-secret")[0] == 2
    soon = (date.today() + timedelta(days=9)).isoformat()

    code, out = nexxt365(world, azurite, "status", "--json", NEXXT365_CLIENT_SECRET_EXPIRES=soon)

    assert code == 1
    [tenant] = json.loads(out)["tenants"]
    users = tenant["syncs"]["users"]
    assert users["result"] == "error" and users["failures"] == 1 and users["next_try"] is not None
    assert "AADSTS7000215" in users["last_error"]
    assert codes(tenant) == {SYNC_BACKED_OFF, SECRET_EXPIRING}
    assert codes(tenant, "notes") == {SYNC_NEVER_RUN}  # contacts and calendar never ran: a note, not attention
    assert all(item["fix"] for item in tenant["attention"])
    assert tenant["secret_days_left"] == 9

    code, text = nexxt365(world, azurite, "status", NEXXT365_CLIENT_SECRET_EXPIRES=soon)
    assert code == 1
    assert "needs attention" in text and "ATTENTION the client secret expires on" in text and "fix: create a new" in text


def test_held_changes_unlinked_users_and_out_of_scope_mailboxes(world: World, azurite: Azurite, store: Store) -> None:
    world.graph.add_user(displayName="Buiten Bereik", givenName="Buiten", surname="Bereik", mail="buiten@voorbeeld.nl",
                         mailbox_in_scope=False)
    world.graph.add_user(displayName="Al Bekend", givenName="Al", surname="Bekend", mail="al@voorbeeld.nl")
    world.clearvox.add_user(first_name="Al", last_name="Bekend", email="al@voorbeeld.nl")  # waits for a link
    from shared import runner

    tenant = world.tenant
    for sync in ("users", "calendar"):
        runner.run(sync, tenant, store, verify=world.verify)
    state = store.for_tenant(tenant.key)
    state.save_run("contacts", {"sync": "contacts", "held": 4, "exit_code": 0, "failed": []})

    status = tenant_status(tenant, state)

    assert status.syncs["contacts"].held == 4
    assert {i.code for i in status.attention} == {HELD_CHANGES}
    assert "--confirm-deletions" in status.attention[0].fix
    assert status.unlinked == 1 and status.out_of_scope == 1
    assert {i.code for i in status.notes} >= {UNLINKED_USERS, MAILBOX_OUT_OF_SCOPE}


def test_newest_run_is_read_with_one_small_query_and_stale_syncs_are_flagged(world: World, store: Store) -> None:
    state = store.for_tenant("staletenant")
    state.save_run("users", {"sync": "users", "exit_code": 0, "created": 1, "failed": []})
    for i in range(30):
        state.save_run("calendar", {"sync": "calendar", "exit_code": 0, "updated": i, "failed": []})

    at, report = state.newest_run("calendar")
    assert report is not None and report["updated"] == 29 and at is not None
    _, report = state.newest_run("users")
    assert report is not None and report["created"] == 1
    assert state.newest_run("contacts") == (None, None)

    later = datetime.now(UTC) + timedelta(minutes=30)  # calendar: 3 x 1 min + lease; users: 3 x 15 min + lease
    status = tenant_status(world.tenant_with(), state, now=later)
    assert status.syncs["calendar"].stale and not status.syncs["users"].stale
    assert {(i.code, i.sync) for i in status.attention} == {(SYNC_STALE, "calendar")}


def test_unknown_tenant_and_bad_settings_exit_2(world: World, azurite: Azurite) -> None:
    assert nexxt365(world, azurite, "status", "--tenant", "nosuchcustomer")[0] == 2
    assert nexxt365(world, azurite, "status", NEXXT365_TENANT="not a tenant")[0] == 2


def test_multi_customer_app_lists_every_customer_and_one_on_request(world: World, azurite: Azurite) -> None:
    from azure.data.tables import TableServiceClient

    from shared import runner
    from shared.sandbox.keyvault_sim import KeyVaultSim, StaticCredential
    from shared.sandbox.tls import ca_bundle_path
    from shared.secrets import KeyVault
    from shared.status import exit_code, fleet_status

    table = "nexxt365tenants" + datetime.now(UTC).strftime("%H%M%S%f")
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    service.create_table(table)
    rows = service.get_table_client(table)
    with World() as broken, KeyVaultSim() as vault:
        for key, w in (("contoso", world), ("fabrikam", broken)):
            rows.create_entity({"PartitionKey": "tenant", "RowKey": key, "Tenant": w.graph.tenant_id, "ClientId": w.client_id,
                                "ClientSecretName": f"{key}-graph", "ClearVoxUrl": w.clearvox.url,
                                "ClearVoxAccount": w.clearvox.account_id, "ClearVoxApiKeyName": f"{key}-clearvox",
                                "AuthorityHost": w.graph.url, "GraphUrl": w.graph.url})
        vault.set_secret("contoso-graph", world.secret, datetime.now(UTC) + timedelta(days=300))
        vault.set_secret("contoso-clearvox", world.clearvox.api_key)
        vault.set_secret("fabrikam-graph", "a-wrong-secret", datetime.now(UTC) + timedelta(days=20))
        vault.set_secret("fabrikam-clearvox", broken.clearvox.api_key)
        settings = Settings(env={"NEXXT365_STATE": azurite.connection_string, "NEXXT365_TENANTS_TABLE": table,
                                 "NEXXT365_KEY_VAULT_URL": vault.url}, local={})
        kv = KeyVault(vault.url, credential=StaticCredential(), connection_verify=ca_bundle_path(),
                      verify_challenge_resource=False)
        tenants = settings.tenants(kv)
        store = Store(azurite.connection_string)
        for tenant in tenants:
            for sync in ("users", "contacts", "calendar"):
                runner.run(sync, tenant, store, verify=world.verify)

        fleet = fleet_status(settings, tenants=tenants)
        only = fleet_status(settings, "contoso", tenants=tenants)

    assert [t.tenant for t in fleet] == ["contoso", "fabrikam"]
    contoso, fabrikam = fleet
    assert contoso.attention == [] and contoso.secret_days == 300
    assert {i.code for i in fabrikam.attention} == {SYNC_BACKED_OFF, SECRET_EXPIRING}
    assert fabrikam.syncs["users"].result == "error" and fabrikam.secret_days == 20
    assert exit_code(fleet) == 1
    assert [t.tenant for t in only] == ["contoso"] and exit_code(only) == 0
