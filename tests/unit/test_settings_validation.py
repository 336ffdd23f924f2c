"""Settings that would break every run are refused where settings are read, with the setting named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import Options, Settings, read_local_settings, tenant_from_row
from shared.validate import validate_ncrontab
from tests.unit.test_settings import BASE, CLIENT_ID, TENANT_ID

ROW = {"RowKey": "contoso", "Tenant": TENANT_ID, "ClientId": CLIENT_ID, "ClientSecretName": "contoso-graph",
       "ClearVoxUrl": "https://pbx.example.nl", "ClearVoxAccount": "10001", "ClearVoxApiKeyName": "contoso-cv"}


def _resolver(name: str):  # type: ignore[no-untyped-def]
    return lambda: f"value-of-{name}"


def single(**env: str) -> Settings:
    return Settings(env={**BASE, **env}, local={})


# ---------------------------------------------------------------- multi-customer option overrides


def test_a_row_override_merges_over_the_app_wide_options() -> None:
    app_wide = Options.from_values({"NEXXT365_DEFAULT_REGION": "BE", "NEXXT365_CLEARVOX_CONCURRENCY": "4",
                                    "NEXXT365_AUTO_LINK": "true"}.get)
    tenant = tenant_from_row({**ROW, "Option_INCLUDE_GUESTS": "true"}, app_wide, _resolver)
    assert tenant.options.include_guests is True
    assert (tenant.options.default_region, tenant.options.clearvox_concurrency, tenant.options.auto_link) == ("BE", 4, True)


def test_a_bad_row_override_names_the_row_and_the_setting() -> None:
    with pytest.raises(ConfigError, match="NEXXT365_CLEARVOX_CONCURRENCY"):
        tenant_from_row({**ROW, "Option_CLEARVOX_CONCURRENCY": "0"}, Options(), _resolver)


# ---------------------------------------------------------------- values that broke every run


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("NEXXT365_STATUS_MAP", "garbage", "NEXXT365_STATUS_MAP"),
    ("NEXXT365_DEFAULT_REGION", "XX", "region"),
    ("NEXXT365_CLEARVOX_CONCURRENCY", "10000000", "1 to 64"),
    ("NEXXT365_CLEARVOX_CONCURRENCY", "0", "1 to 64"),
    ("NEXXT365_FULL_SYNC_HOURS", "99999999999999999999", "1 to 8760"),
    ("NEXXT365_USERS_SCHEDULE", "*/5 * * * *", "six fields"),
    ("NEXXT365_CONTACTS_SCHEDULE", "0 */30 * * * mon-fri-sat", "NEXXT365_CONTACTS_SCHEDULE"),
    ("NEXXT365_CALENDAR_SCHEDULE", "0 61 * * * *", "0-59"),
    ("NEXXT365_CLEARVOX_URL", "https://[::1", "not an https URL"),
    ("NEXXT365_CLEARVOX_API_KEY", "sleutel-\u00e9\u00e9n", "ASCII"),
])
def test_a_value_that_breaks_every_run_is_refused_naming_the_setting(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        single(**{name: value}).tenants()
    assert name in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize("expr", ["0 */15 * * * *", "0 * * * * *", "*/30 0-59/5 8-18 * 1-12 1-5", "0 0 0 1,15 * 0",
                                  "0 30 9 * Jan Mon", "5,10 0 12 * * Sun-Sat"])
def test_valid_ncrontab_expressions_pass(expr: str) -> None:
    validate_ncrontab("NEXXT365_USERS_SCHEDULE", expr)


@pytest.mark.parametrize("expr", ["", "0 * * * *", "0 * * * * * *", "60 * * * * *", "0 0 24 * * *", "0 0 0 0 * *",
                                  "0 0 0 * 13 *", "0 0 0 * * 8", "a * * * * *", "*/0 * * * * *", "5-1 * * * * *", "1,,2 * * * * *"])
def test_invalid_ncrontab_expressions_are_refused(expr: str) -> None:
    with pytest.raises(ConfigError, match="NEXXT365_USERS_SCHEDULE"):
        validate_ncrontab("NEXXT365_USERS_SCHEDULE", expr)


@pytest.mark.parametrize("value", ["http://evil.example/?127.0.0.1", "http://127.0.0.1.evil.example/", "http://localhost@evil.example/"])
def test_plain_http_state_is_only_for_the_local_machine(value: str) -> None:
    with pytest.raises(ConfigError, match="NEXXT365_STATE"):
        Settings(env={"NEXXT365_STATE": value}, local={}).state_connection()


@pytest.mark.parametrize("value", ["http://127.0.0.1:10002/devstoreaccount1", "http://localhost:10002/x", "http://[::1]:10002/x",
                                   "https://acct.table.core.windows.net"])
def test_https_or_a_local_http_endpoint_is_accepted(value: str) -> None:
    assert Settings(env={"NEXXT365_STATE": value}, local={}).state_connection() == value


def test_credentials_in_the_clearvox_url_are_refused_without_repeating_them() -> None:
    with pytest.raises(ConfigError, match="NEXXT365_CLEARVOX_URL must not contain a user name or password") as err:
        single(NEXXT365_CLEARVOX_URL="https://admin:hunter2@pbx.example.nl").single_tenant()
    assert "hunter2" not in str(err.value)


def test_a_tenants_table_name_with_spaces_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"NEXXT365_TENANTS_TABLE.*3-63"):
        Settings(env={"NEXXT365_TENANTS_TABLE": "my tenants", "NEXXT365_KEY_VAULT_URL": "https://kv.vault.azure.net",
                      "NEXXT365_STATE": "UseDevelopmentStorage=true"}, local={}).tenants()


# ---------------------------------------------------------------- certificates


def _pem(kind: str) -> str:
    """A self-signed certificate with its private key, as the portal's upload expects (RSA) or not (EC)."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nexxt365")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode() + key_pem.decode()


def test_a_certificate_pasted_with_literal_newlines_is_accepted() -> None:
    pem = _pem("rsa")
    tenant = single(NEXXT365_CLIENT_SECRET="", NEXXT365_CLIENT_CERTIFICATE=pem.replace("\n", "\\n")).single_tenant()
    assert tenant.client_certificate is not None and tenant.client_certificate() == pem.strip()


@pytest.mark.parametrize(("make", "expected"), [
    (lambda: _pem("rsa").split("-----END CERTIFICATE-----")[1], "no certificate"),
    (lambda: _pem("rsa").split("-----BEGIN PRIVATE KEY-----")[0], "private key"),
    (lambda: _pem("ec"), "RSA"),
    (lambda: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
             "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----", "NEXXT365_CLIENT_CERTIFICATE"),
])
def test_a_certificate_that_msal_cannot_use_is_refused_with_the_reason(make, expected: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as err:
        single(NEXXT365_CLIENT_SECRET="", NEXXT365_CLIENT_CERTIFICATE=make()).single_tenant()
    assert "NEXXT365_CLIENT_CERTIFICATE" in str(err.value) and expected in str(err.value)


# ---------------------------------------------------------------- local.settings.json


def test_local_settings_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_bytes("\ufeff".encode() + json.dumps({"Values": {"NEXXT365_TENANT": TENANT_ID}}).encode())
    assert read_local_settings(path) == {"NEXXT365_TENANT": TENANT_ID}


def test_local_settings_with_null_values_means_none_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": None}))
    with caplog.at_level(logging.WARNING, logger="nexxt365"):
        assert read_local_settings(path) == {}
    assert "Values" in caplog.text


def test_a_certificate_from_key_vault_is_checked_when_first_read() -> None:
    row = {**ROW, "ClientSecretName": "", "ClientCertificateName": "contoso-cert"}
    pems = {"contoso-cert": _pem("ec"), "contoso-cv": "key"}
    tenant = tenant_from_row(row, Options(), lambda name: lambda: pems[name])
    assert tenant.client_certificate is not None
    with pytest.raises(ConfigError, match="Key Vault secret contoso-cert holds an EC key"):
        tenant.client_certificate()
    pems["contoso-cert"] = _pem("rsa").replace("\n", "\\n")
    assert tenant.client_certificate().startswith("-----BEGIN CERTIFICATE-----\n")
