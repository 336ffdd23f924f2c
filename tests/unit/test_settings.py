"""Settings: what an administrator may paste, and the messages when it is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import Options, Settings, parse_tenant

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"

BASE = {
    "NEXXT365_TENANT": TENANT_ID,
    "NEXXT365_CLIENT_ID": CLIENT_ID,
    "NEXXT365_CLIENT_SECRET": "s3cret-value",
    "NEXXT365_CLEARVOX_URL": "https://pbx.example.nl",
    "NEXXT365_CLEARVOX_API_KEY": "cv-key",
    "NEXXT365_CLEARVOX_ACCOUNT": "10001",
}


@pytest.mark.parametrize(
    "value",
    [
        TENANT_ID,
        TENANT_ID.upper(),
        f"https://login.microsoftonline.com/{TENANT_ID}/oauth2/token",
        f"https://login.microsoftonline.com/{TENANT_ID}/oauth2/v2.0/token",
        f"https://login.microsoftonline.com/{TENANT_ID}/oauth2/v2.0/authorize",
        f" https://login.microsoftonline.com/{TENANT_ID}/ ",
    ],
)
def test_tenant_accepts_guid_and_token_endpoints_as_copied_from_the_portal(value: str) -> None:
    assert parse_tenant(value) == TENANT_ID


def test_tenant_accepts_a_domain() -> None:
    assert parse_tenant("Contoso.onmicrosoft.com") == "contoso.onmicrosoft.com"
    assert parse_tenant("https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/token") == "contoso.onmicrosoft.com"


@pytest.mark.parametrize("value", ["", "not a tenant", "https://login.microsoftonline.com/", "1234"])
def test_bad_tenant_names_the_setting_and_shows_valid_examples(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_tenant(value)
    assert "NEXXT365_TENANT" in str(err.value)
    assert "onmicrosoft.com" in str(err.value)


def test_single_tenant_from_environment() -> None:
    tenant = Settings(env=BASE, local={}).single_tenant()
    assert tenant.tenant == TENANT_ID
    assert tenant.client_secret is not None and tenant.client_secret() == "s3cret-value"
    assert tenant.clearvox_api_key() == "cv-key"
    assert tenant.authority == f"https://login.microsoftonline.com/{TENANT_ID}"
    assert tenant.graph_url == "https://graph.microsoft.com"
    assert "s3cret" not in repr(tenant) and "cv-key" not in repr(tenant)


@pytest.mark.parametrize(
    ("missing", "hint"),
    [
        ("NEXXT365_CLIENT_ID", "Application (client) ID"),
        ("NEXXT365_CLIENT_SECRET", "Certificates & secrets"),
        ("NEXXT365_CLEARVOX_URL", "https://pbx.example.nl"),
        ("NEXXT365_CLEARVOX_API_KEY", "API key"),
        ("NEXXT365_CLEARVOX_ACCOUNT", "Company ID"),
    ],
)
def test_missing_setting_is_named_with_a_hint(missing: str, hint: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError) as err:
        Settings(env=env, local={}).single_tenant()
    assert missing in str(err.value)
    assert hint in str(err.value)


def test_malformed_values_are_rejected_with_examples() -> None:
    for name, value, expected in [
        ("NEXXT365_CLIENT_ID", "my-app", "not a GUID"),
        ("NEXXT365_CLEARVOX_URL", "pbx.example.nl", "https"),
        ("NEXXT365_AUTHORITY_HOST", "login.example", "https"),
        ("NEXXT365_CLIENT_SECRET_EXPIRES", "next year", "2027-06-30"),
        ("NEXXT365_AUTO_LINK", "maybe", "true or false"),
        ("NEXXT365_ON_REMOVED", "delete", "report, deactivate"),
        ("NEXXT365_MAX_DEACTIVATIONS", "ten", "whole number"),
        ("NEXXT365_DEFAULT_REGION", "Netherlands", "two-letter"),
        ("NEXXT365_USERS_GROUP", "Sales", "GUID"),
    ]:
        with pytest.raises(ConfigError) as err:
            Settings(env={**BASE, name: value}, local={}).single_tenant()
        assert name in str(err.value), name
        assert expected in str(err.value), name


def test_local_settings_json_values_are_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {**BASE, "NEXXT365_CLEARVOX_ACCOUNT": "from-file"}
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    monkeypatch.chdir(tmp_path)
    settings = Settings(env={"NEXXT365_CLEARVOX_ACCOUNT": "from-env"})
    tenant = settings.single_tenant()
    assert tenant.client_id == CLIENT_ID
    assert tenant.clearvox_account == "from-env"


def test_broken_local_settings_json_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "local.settings.json").write_text("{not json")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"local\.settings\.example\.json"):
        Settings(env={})


def test_state_falls_back_to_azure_web_jobs_storage() -> None:
    assert Settings(env={"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, local={}).state_connection() == "UseDevelopmentStorage=true"
    with pytest.raises(ConfigError, match="NEXXT365_STATE"):
        Settings(env={}, local={}).state_connection()


def test_options_defaults_match_the_documentation() -> None:
    opts = Options.from_values(lambda name: None)
    assert (opts.full_sync_hours, opts.auto_link, opts.on_removed, opts.max_deactivations) == (24, False, "report", 10)
    assert opts.default_region == "NL" and opts.users_group is None and not opts.include_guests


def test_tenants_table_mode_reads_secret_names_lazily() -> None:
    from shared.settings import tenant_from_row

    asked: list[str] = []

    def resolver(name: str):  # type: ignore[no-untyped-def]
        def get() -> str:
            asked.append(name)
            return f"value-of-{name}"
        return get

    row = {"RowKey": "contoso", "Tenant": TENANT_ID, "ClientId": CLIENT_ID, "ClientSecretName": "contoso-graph",
           "ClearVoxUrl": "https://pbx.example.nl", "ClearVoxAccount": "10001", "ClearVoxApiKeyName": "contoso-cv",
           "Option_AUTO_LINK": "true"}
    tenant = tenant_from_row(row, Options(), resolver)
    assert asked == []  # nothing fetched until a client needs it
    assert tenant.key == "contoso" and tenant.options.auto_link is True
    assert tenant.clearvox_api_key() == "value-of-contoso-cv"
    assert asked == ["contoso-cv"]
    with pytest.raises(ConfigError, match="ClearVoxAccount"):
        tenant_from_row({**row, "ClearVoxAccount": ""}, Options(), resolver)


def test_an_unresolved_key_vault_reference_is_named_as_such() -> None:
    env = {**BASE, "NEXXT365_CLIENT_SECRET": "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/graph/)"}
    with pytest.raises(ConfigError, match="NEXXT365_CLIENT_SECRET is an unresolved Key Vault reference"):
        Settings(env=env, local={}).single_tenant()
