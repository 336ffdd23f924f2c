"""Every app setting the code reads is set by main.bicep, secrets as Key Vault references."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from shared.sync.base import syncs
from tests.infra.helpers import MAIN, MODULES, ROOT, parse, variable

SETTING = re.compile(r"NEXXT365_[A-Z0-9_]+")

# Read by the code but deliberately not set by main.bicep.
OPTIONAL = {
    "NEXXT365_CLIENT_CERTIFICATE": "an alternative to the client secret that this deployment does not offer: "
    "every customer signs in with a client secret or without any (secretless); a certificate would need its own "
    "parameter and Key Vault reference",
    "NEXXT365_DEMO_SIGN_IN": "read by `nexxt365 demo` only (the sandbox), never by the deployed app",
}
# Set by main.bicep although the code does not read it (yet).
SET_FOR_PLATFORM: dict[str, str] = {}
SECRETS = {"NEXXT365_CLIENT_SECRET", "NEXXT365_CLEARVOX_API_KEY"}
# Not settings on Flex Consumption (functionAppConfig replaces them), or a shared-key connection string.
FORBIDDEN = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "AzureWebJobsStorage",
}


def code_files() -> list[Path]:
    files = [*sorted((ROOT / "shared").rglob("*.py")), ROOT / "function_app.py"]
    for spec in syncs():
        files += sorted((ROOT / spec.function).glob("*.py"))
    return [f for f in files if f.is_file()]


def settings_read_by_code() -> set[str]:
    found: set[str] = set()
    for path in code_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.update(SETTING.findall(node.value))
    return found


def app_settings() -> dict[str, object]:
    """Every setting the function app may get: appSettings plus the client secret of the secret sign-in."""
    settings = variable(parse(MAIN), "appSettings")
    secret = variable(parse(MAIN), "clientSecretSetting")["operator"]["operands"]["false_value"]
    assert isinstance(settings, dict) and isinstance(secret, dict)
    return {**settings, **secret}


def test_code_settings_are_found() -> None:
    found = settings_read_by_code()
    assert {"NEXXT365_TENANT", "NEXXT365_CLIENT_ID", "NEXXT365_STATE"} <= found, "scan of shared/ found too little"


def test_every_setting_the_code_reads_is_set() -> None:
    missing = sorted(settings_read_by_code() - set(app_settings()) - set(OPTIONAL))
    assert not missing, f"main.bicep does not set {missing}; add them to appSettings (or to OPTIONAL with a reason)"


def test_every_nexxt365_setting_is_known_to_the_code() -> None:
    # Catches a misspelt setting name in main.bicep.
    ours = {name for name in app_settings() if name.startswith("NEXXT365_")}
    unknown = sorted(ours - settings_read_by_code() - set(SET_FOR_PLATFORM))
    assert not unknown, f"main.bicep sets {unknown}, which no code reads"


def test_secrets_are_key_vault_references() -> None:
    settings = app_settings()
    for name in SECRETS:
        value = settings[name]
        assert isinstance(value, str) and value.startswith("@Microsoft.KeyVault(SecretUri="), name
        assert value.endswith(")"), name


def test_flex_consumption_host_settings() -> None:
    settings = app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    for name in (
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__clientId",
        "AZURE_CLIENT_ID",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "NEXXT365_MANAGED_IDENTITY_CLIENT_ID",
    ):
        assert name in settings, name
    auth = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert isinstance(auth, str) and auth.startswith("ClientId=${identity.outputs.clientId}") and "AAD" in auth
    assert not FORBIDDEN & set(settings)


def test_documented_defaults() -> None:
    params = parse(MAIN)["parameters"]
    defaults = {
        **{f"{spec.name}Schedule": spec.schedule_default for spec in syncs()},  # the registry's, as ARCHITECTURE.md
        "authorityHost": "https://login.microsoftonline.com",
        "graphUrl": "https://graph.microsoft.com",
        "tenantsTable": "",
    }
    for name, value in defaults.items():
        assert params[name]["default"] == value, name


def test_settings_reach_the_function_app() -> None:
    module = parse(MAIN)["modules"]["functionApp"]
    assert module["detail"]["path"] == "modules/functionapp.bicep"
    union = module["config"]["params"]["appSettings"]["function"]
    assert union["type"] == "union" and union["parameters"] == {"arg_1": "appSettings", "arg_2": "clientSecretSetting"}
    assert parse(MODULES / "functionapp.bicep")["parameters"]["appSettings"]["type"] == "object"


def test_outputs_are_named_after_the_settings_they_feed() -> None:
    outputs = parse(MAIN)["outputs"]
    for name in app_settings():
        if not name.startswith("NEXXT365_") or name in SECRETS:
            continue
        assert name in outputs, f"output {name} missing: the smoke test runs doctor with the outputs"
        operands = outputs[name]["value"]["operator"]["operands"]
        assert (operands["operand_1"], operands["operand_2"]) == ("appSettings", name), name
    assert not SECRETS & set(outputs), "secrets must not be deployment outputs"
    assert {"AZURE_FUNCTIONAPP_NAME", "AZURE_KEY_VAULT_NAME"} <= set(outputs)
