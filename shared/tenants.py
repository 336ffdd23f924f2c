"""Multi-customer mode: the rows of the tenants table.

Table NEXXT365_TENANTS_TABLE, PartitionKey "tenant", one row per customer:
RowKey (short customer key), Tenant, ClientId, ClientSecretName (or
ClientCertificateName), ClearVoxUrl, ClearVoxAccount, ClearVoxApiKeyName, and
optional AuthorityHost, GraphUrl and Option_<SETTING> overrides such as
Option_AUTO_LINK=true. `Settings.tenants()` turns the rows into Tenant objects.
"""

from __future__ import annotations

from typing import Any

from shared.errors import ConfigError

TENANTS_PARTITION = "tenant"


def read_tenant_rows(connection: str, table_name: str) -> list[dict[str, Any]]:
    """Every customer row of the tenants table in the state storage account."""
    from azure.core.exceptions import ResourceNotFoundError

    from shared.state import state_errors, table_service

    table = table_service(connection).get_table_client(table_name)
    try:
        with state_errors():
            return [dict(row) for row in table.query_entities(f"PartitionKey eq '{TENANTS_PARTITION}'")]
    except ResourceNotFoundError:
        raise ConfigError(f"NEXXT365_TENANTS_TABLE {table_name!r} does not exist in the state storage account.") from None
