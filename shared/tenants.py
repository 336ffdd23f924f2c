"""Multi-customer mode: tenants from a table, secrets from Key Vault.

Table NEXXT365_TENANTS_TABLE, PartitionKey "tenant", one row per customer:
RowKey (short customer key), Tenant, ClientId, ClientSecretName (or
ClientCertificateName, or ClientAssertion=managed-identity), ClearVoxUrl, ClearVoxAccount, ClearVoxApiKeyName, and
optional AuthorityHost, GraphUrl and Option_<SETTING> overrides such as
Option_AUTO_LINK=true.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.errors import ConfigError
from shared.secrets import KeyVault
from shared.settings import Tenant, tenant_from_row

if TYPE_CHECKING:
    from shared.settings import Settings

TENANTS_PARTITION = "tenant"


def load_tenants(settings: Settings, vault: KeyVault | None = None) -> list[Tenant]:
    from shared.state import table_service

    table_name = (settings.get("NEXXT365_TENANTS_TABLE") or "").strip()
    vault_url = (settings.get("NEXXT365_KEY_VAULT_URL") or "").strip()
    if not vault_url and vault is None:
        raise ConfigError("NEXXT365_KEY_VAULT_URL is not set; it is needed with NEXXT365_TENANTS_TABLE. Example: https://kv-nexxt365.vault.azure.net")
    kv = vault or KeyVault(vault_url)
    service = table_service(settings.state_connection())
    table = service.get_table_client(table_name)
    options = settings.options()
    from azure.core.exceptions import ResourceNotFoundError

    try:
        rows = list(table.query_entities(f"PartitionKey eq '{TENANTS_PARTITION}'"))
    except ResourceNotFoundError:
        raise ConfigError(f"NEXXT365_TENANTS_TABLE {table_name!r} does not exist in the state storage account.") from None
    identity = settings.get("NEXXT365_MANAGED_IDENTITY_CLIENT_ID") or ""
    tenants = [tenant_from_row(row, options, kv.resolver, lambda n: lambda: kv.expires(n), identity) for row in rows]
    if not tenants:
        raise ConfigError(f"NEXXT365_TENANTS_TABLE {table_name!r} has no rows with PartitionKey '{TENANTS_PARTITION}'.")
    return tenants
