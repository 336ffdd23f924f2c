"""main.bicep with secretless=true: no secret is needed anywhere.

No Key Vault secret for Graph is written, no NEXXT365_CLIENT_SECRET app setting exists (the
app signs in with NEXXT365_CLIENT_ASSERTION=managed-identity), and no output carries a secret.
The templates are evaluated for each value of the parameter: every `secretless ? a : b` becomes
the branch that mode takes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.helpers import MAIN, MODULES, parse, variable, walk

SECURE_PARAMS = {"clientSecret", "clearvoxApiKey"}


def settle(value: Any, secretless: bool) -> Any:
    """`value` with every conditional on the secretless parameter replaced by the branch taken."""
    if isinstance(value, dict):
        op = value.get("operator")
        if isinstance(op, dict) and op.get("type") == "conditional" and op["operands"]["condition"] == "secretless":
            return settle(op["operands"]["true_value" if secretless else "false_value"], secretless)
        return {k: settle(v, secretless) for k, v in value.items()}
    if isinstance(value, list):
        return [settle(v, secretless) for v in value]
    return value


def function_app_settings(secretless: bool) -> dict[str, Any]:
    """What modules/functionapp.bicep receives: union(appSettings, clientSecretSetting) in that mode."""
    tree = parse(MAIN)
    union = tree["modules"]["functionApp"]["config"]["params"]["appSettings"]["function"]
    assert union["type"] == "union"
    merged: dict[str, Any] = {}
    for arg in union["parameters"].values():
        part = settle(variable(tree, arg), secretless)
        assert isinstance(part, dict), arg
        merged.update(part)
    return merged


def test_the_parameter_is_off_by_default() -> None:
    spec = parse(MAIN)["parameters"]["secretless"]
    assert spec["type"] == "bool" and spec["default"] is False


def test_secretless_app_settings_sign_in_with_the_managed_identity_and_hold_no_secret() -> None:
    settings = function_app_settings(secretless=True)
    assert settings["NEXXT365_CLIENT_ASSERTION"] == "managed-identity"
    assert "'operand_1': 'identity'" in str(settings["NEXXT365_MANAGED_IDENTITY_CLIENT_ID"])  # identity.outputs.clientId
    assert "NEXXT365_CLIENT_SECRET" not in settings
    assert settings["NEXXT365_CLIENT_SECRET_EXPIRES"] == ""
    text = json.dumps(settings)
    assert "clientSecretUri" not in text and "clientSecret}" not in text


def test_with_a_secret_the_settings_are_as_before() -> None:
    settings = function_app_settings(secretless=False)
    assert settings["NEXXT365_CLIENT_SECRET"] == "@Microsoft.KeyVault(SecretUri=${keyVault.outputs.clientSecretUri})"
    assert settings["NEXXT365_CLIENT_ASSERTION"] == ""
    assert settings["NEXXT365_CLIENT_SECRET_EXPIRES"] == "clientSecretExpires"


def test_secretless_writes_no_key_vault_secret_for_graph() -> None:
    params = parse(MAIN)["modules"]["keyVault"]["config"]["params"]
    assert settle(params["clientSecret"], secretless=True) == ""
    assert settle(params["clientSecret"], secretless=False) == "clientSecret"
    # keyvault.bicep writes the Graph secret only for a non-empty value
    condition = parse(MODULES / "keyvault.bicep")["modules"]["clientSecretValue"]["config"]["condition"]
    assert condition["operator"]["operands"]["bool_value"]["function"]["parameters"]["item_to_test"] == "clientSecret"


@pytest.mark.parametrize("secretless", [True, False])
def test_outputs_carry_no_secret(secretless: bool) -> None:
    outputs = settle(parse(MAIN)["outputs"], secretless)
    for name, spec in outputs.items():
        for value in walk(spec["value"]):
            if isinstance(value, str):
                assert value not in SECURE_PARAMS, f"output {name} carries a secure parameter"
                assert "SecretUri" not in value and "clientSecretUri" not in value, name
    assert "NEXXT365_CLIENT_SECRET" not in outputs and "NEXXT365_CLEARVOX_API_KEY" not in outputs
    if secretless:
        assert outputs["GRAPH_CLIENT_SECRET_NAME"]["value"] == ""  # nothing for the pipeline to read for Graph
