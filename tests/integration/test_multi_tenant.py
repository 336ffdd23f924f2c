"""Multi-customer mode: tenants from a table, secrets from Key Vault fetched lazily and once per run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableServiceClient

from shared import runner
from shared.sandbox.azurite import Azurite
from shared.sandbox.keyvault_sim import KeyVaultSim, StaticCredential
from shared.sandbox.tls import ca_bundle_path
from shared.sandbox.world import World
from shared.secrets import KeyVault
from shared.settings import Settings
from shared.state import Store


@pytest.fixture
def vault() -> Iterator[KeyVaultSim]:
    with KeyVaultSim() as kv:
        yield kv  # type: ignore[misc]


def _row(key: str, world: World) -> dict[str, str]:
    return {"PartitionKey": "tenant", "RowKey": key, "Tenant": world.graph.tenant_id, "ClientId": world.client_id,
            "ClientSecretName": f"{key}-graph", "ClearVoxUrl": world.clearvox.url, "ClearVoxAccount": world.clearvox.account_id,
            "ClearVoxApiKeyName": f"{key}-clearvox", "AuthorityHost": world.graph.url, "GraphUrl": world.graph.url}


def test_each_customer_row_runs_isolated_with_secrets_from_key_vault(world: World, azurite: Azurite, vault: KeyVaultSim) -> None:
    table = "nexxt365tenants" + datetime.now(UTC).strftime("%H%M%S%f")
    TableServiceClient.from_connection_string(azurite.connection_string).create_table(table)
    client = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(table)
    with World() as broken:
        client.create_entity(_row("contoso", world))
        client.create_entity({**_row("fabrikam", broken), "Option_AUTO_LINK": "true"})
        expires = datetime.now(UTC) + timedelta(days=20)
        vault.set_secret("contoso-graph", world.secret, expires)
        vault.set_secret("contoso-clearvox", world.clearvox.api_key)
        vault.set_secret("fabrikam-graph", "a-wrong-secret")
        vault.set_secret("fabrikam-clearvox", broken.clearvox.api_key)
        settings = Settings(env={"NEXXT365_STATE": azurite.connection_string, "NEXXT365_TENANTS_TABLE": table,
                                 "NEXXT365_KEY_VAULT_URL": vault.url}, local={})
        kv = KeyVault(vault.url, credential=StaticCredential(), connection_verify=ca_bundle_path(), verify_challenge_resource=False)
        tenants = settings.tenants(kv)
        assert [t.key for t in tenants] == ["contoso", "fabrikam"]
        assert vault.reads == {}  # nothing fetched before a client needs it
        assert tenants[1].options.auto_link is True and tenants[0].options.auto_link is False
        store = Store(azurite.connection_string, prefix="mt" + table[-8:])
        reports = [runner.run("users", t, store, verify=world.verify) for t in tenants]
        assert reports[0].exit_code == 0, reports[0].error
        assert reports[1].exit_code == 2 and "AADSTS7000215" in (reports[1].error or "")
        assert tenants[0].secret_expiry() == expires.date()
        assert vault.reads["contoso-graph"] == 1  # cached for the run


def test_missing_vault_url_and_empty_table_are_configuration_errors(azurite: Azurite) -> None:
    from shared.errors import ConfigError

    settings = Settings(env={"NEXXT365_STATE": azurite.connection_string, "NEXXT365_TENANTS_TABLE": "nosuchtable"}, local={})
    with pytest.raises(ConfigError, match="NEXXT365_KEY_VAULT_URL"):
        settings.tenants()
