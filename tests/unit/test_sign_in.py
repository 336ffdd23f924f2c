"""Exactly one sign-in way: client secret, certificate, or a managed identity (no secret at all).

Every combination of the three app settings and of the three tenants-table columns is either
accepted or refused with a message that names the settings that conflict or are missing.
"""

from __future__ import annotations

import itertools

import pytest

from shared.errors import ConfigError
from shared.settings import Options, Settings, Tenant, tenant_from_row
from shared.sign_in import CERTIFICATE, MANAGED_IDENTITY, SECRET
from tests.unit.test_settings_validation import _pem

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
IDENTITY = "99999999-8888-7777-6666-555555555555"
PEM = _pem("rsa")
BASE = {
    "NEXXT365_TENANT": TENANT_ID,
    "NEXXT365_CLIENT_ID": CLIENT_ID,
    "NEXXT365_CLEARVOX_URL": "https://pbx.example.nl",
    "NEXXT365_CLEARVOX_API_KEY": "cv-key",
    "NEXXT365_CLEARVOX_ACCOUNT": "10001",
}
WAYS = {
    SECRET: {"NEXXT365_CLIENT_SECRET": "s3cret-value"},
    CERTIFICATE: {"NEXXT365_CLIENT_CERTIFICATE": PEM},
    MANAGED_IDENTITY: {"NEXXT365_CLIENT_ASSERTION": "managed-identity", "NEXXT365_MANAGED_IDENTITY_CLIENT_ID": IDENTITY},
}
SETTING = {SECRET: "NEXXT365_CLIENT_SECRET", CERTIFICATE: "NEXXT365_CLIENT_CERTIFICATE",
           MANAGED_IDENTITY: "NEXXT365_CLIENT_ASSERTION"}
COLUMN = {SECRET: "ClientSecretName", CERTIFICATE: "ClientCertificateName", MANAGED_IDENTITY: "ClientAssertion"}
COLUMN_VALUE = {SECRET: "contoso-graph", CERTIFICATE: "contoso-cert", MANAGED_IDENTITY: "managed-identity"}
PAIRS_AND_ALL = [c for n in (2, 3) for c in itertools.combinations(WAYS, n)]


def tenant(**env: str) -> Tenant:
    return Settings(env={**BASE, **env}, local={}).single_tenant()


def way_of(t: Tenant) -> str:
    from shared.credentials import sign_in_way

    return sign_in_way(t)


@pytest.mark.parametrize("way", list(WAYS))
def test_each_way_alone_is_accepted(way: str) -> None:
    t = tenant(**WAYS[way])
    assert way_of(t) == way
    assert (t.managed_identity_client_id == IDENTITY) is (way == MANAGED_IDENTITY)
    assert (t.client_secret is not None) is (way == SECRET)
    assert (t.client_certificate is not None) is (way == CERTIFICATE)


@pytest.mark.parametrize("ways", PAIRS_AND_ALL, ids=["+".join(c) for c in PAIRS_AND_ALL])
def test_two_or_three_ways_conflict_and_the_error_names_them(ways: tuple[str, ...]) -> None:
    env = {k: v for way in ways for k, v in WAYS[way].items()}
    with pytest.raises(ConfigError) as err:
        tenant(**env)
    text = str(err.value)
    assert "exactly one sign-in way" in text
    for way in ways:
        assert SETTING[way] in text
    for way in set(WAYS) - set(ways):
        assert f"{SETTING[way]} and" not in text and f"and {SETTING[way]}" not in text


def test_no_way_at_all_names_the_three_settings() -> None:
    with pytest.raises(ConfigError) as err:
        tenant()
    text = str(err.value)
    assert "NEXXT365_CLIENT_SECRET is not set" in text and "Certificates & secrets" in text
    assert "NEXXT365_CLIENT_CERTIFICATE" in text and "NEXXT365_CLIENT_ASSERTION=managed-identity" in text


def test_managed_identity_without_its_client_id_is_named() -> None:
    with pytest.raises(ConfigError, match="NEXXT365_CLIENT_ASSERTION=managed-identity needs NEXXT365_MANAGED_IDENTITY_CLIENT_ID"):
        tenant(NEXXT365_CLIENT_ASSERTION="managed-identity")


def test_managed_identity_client_id_must_be_a_guid() -> None:
    with pytest.raises(ConfigError, match="NEXXT365_MANAGED_IDENTITY_CLIENT_ID 'id-nexxt365' is not a GUID"):
        tenant(NEXXT365_CLIENT_ASSERTION="managed-identity", NEXXT365_MANAGED_IDENTITY_CLIENT_ID="id-nexxt365")


def test_an_unknown_assertion_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="NEXXT365_CLIENT_ASSERTION 'github' is not supported; the only value is 'managed-identity'"):
        tenant(NEXXT365_CLIENT_ASSERTION="github", NEXXT365_MANAGED_IDENTITY_CLIENT_ID=IDENTITY)


def test_an_identity_client_id_alone_does_not_switch_the_sign_in() -> None:
    t = tenant(NEXXT365_CLIENT_SECRET="s3cret-value", NEXXT365_MANAGED_IDENTITY_CLIENT_ID=IDENTITY)
    assert way_of(t) == SECRET and t.managed_identity_client_id is None


# -- tenants table ---------------------------------------------------------------------

ROW = {"RowKey": "contoso", "Tenant": TENANT_ID, "ClientId": CLIENT_ID, "ClearVoxUrl": "https://pbx.example.nl",
       "ClearVoxAccount": "10001", "ClearVoxApiKeyName": "contoso-cv"}


def from_row(*ways: str, identity: str = IDENTITY) -> Tenant:
    row = {**ROW, **{COLUMN[w]: COLUMN_VALUE[w] for w in ways}}
    return tenant_from_row(row, Options(), lambda name: lambda: f"value-of-{name}", None, identity)


@pytest.mark.parametrize("way", list(WAYS))
def test_each_column_alone_is_accepted(way: str) -> None:
    assert way_of(from_row(way)) == way


def test_a_managed_identity_row_needs_no_key_vault_secret_for_graph() -> None:
    t = from_row(MANAGED_IDENTITY)
    assert t.client_secret is None and t.client_certificate is None
    assert t.managed_identity_client_id == IDENTITY


@pytest.mark.parametrize("ways", PAIRS_AND_ALL, ids=["+".join(c) for c in PAIRS_AND_ALL])
def test_two_or_three_columns_conflict_and_the_error_names_the_row_and_columns(ways: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as err:
        from_row(*ways)
    text = str(err.value)
    assert text.startswith("tenants table row 'contoso': ") and "exactly one sign-in way" in text
    for way in ways:
        assert COLUMN[way] in text


def test_a_row_without_any_way_names_the_three_columns() -> None:
    with pytest.raises(ConfigError) as err:
        from_row()
    text = str(err.value)
    assert "tenants table row 'contoso'" in text
    assert all(col in text for col in COLUMN.values())


def test_a_managed_identity_row_needs_the_app_wide_identity_client_id() -> None:
    with pytest.raises(ConfigError, match="ClientAssertion=managed-identity needs NEXXT365_MANAGED_IDENTITY_CLIENT_ID"):
        from_row(MANAGED_IDENTITY, identity="")
