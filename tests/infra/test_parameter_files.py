"""No secret value in any parameter file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.infra.helpers import INFRA, MAIN, ROOT, is_function, param_files, parse, parse_bicepparam, rel, walk

SENSITIVE = re.compile(r"secret|passw|pwd|apikey|api_key|token|credential|certificate|key$", re.IGNORECASE)
# Names that look sensitive but hold no secret.
NOT_SECRET = {
    "clientSecretExpires": "a date",
    "clientSecretName": "the name of a Key Vault secret",
    "clearvoxApiKeyName": "the name of a Key Vault secret",
    "secretsOfficerPrincipalId": "an Entra group object ID",
}
# The shape of an Entra ID client secret value, e.g. 'abc8Q~' followed by 34 characters.
ENTRA_SECRET = re.compile(r"[A-Za-z0-9_.~-]{3}\dQ~[A-Za-z0-9_.~-]{30,}")


def secure_params() -> set[str]:
    return {name for name, spec in parse(MAIN)["parameters"].items() if {"type": "secure"} in spec.get("decorators", [])}


def sensitive(name: str) -> bool:
    return name in secure_params() or (bool(SENSITIVE.search(name)) and name not in NOT_SECRET)


def test_secure_parameters_are_recognised() -> None:
    assert {"clientSecret", "clearvoxApiKey"} <= secure_params()
    assert all(sensitive(name) for name in secure_params())


@pytest.mark.parametrize("path", param_files(), ids=rel)
def test_bicepparam_holds_no_secret_value(path: Path) -> None:
    for name, value in parse_bicepparam(path).items():
        if not sensitive(name):
            continue
        # Allowed: a Key Vault look-up, or an environment variable without a default.
        if is_function(value, "getSecret", "az.getSecret"):
            continue
        if is_function(value, "readEnvironmentVariable"):
            default = value["function"]["parameters"].get("arg_2", "")
            assert default == "", f"{rel(path)}: {name} has a default value"
            continue
        pytest.fail(f"{rel(path)}: {name} is set to a value; secrets go into Key Vault (docs/deploy.md)")


def azd_parameters() -> dict[str, Any]:
    data = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    params: dict[str, Any] = data["parameters"]
    return params


def test_azd_parameters_fit_main_and_hold_no_secret() -> None:
    declared = parse(MAIN)["parameters"]
    for name, spec in azd_parameters().items():
        assert name in declared, f"main.parameters.json sets unknown parameter {name}"
        if sensitive(name):
            value = spec.get("value")
            assert isinstance(value, str) and re.fullmatch(r"\$\{[A-Z0-9_]+=?\}", value), name
    required = {name for name, spec in declared.items() if "default" not in spec}
    assert required <= set(azd_parameters())


@pytest.mark.parametrize(
    "path",
    [*param_files(), INFRA / "main.parameters.json", ROOT / "azure.yaml", ROOT / ".github/workflows/deploy.yml"],
    ids=rel,
)
def test_no_client_secret_shaped_string(path: Path) -> None:
    assert not ENTRA_SECRET.search(path.read_text(encoding="utf-8")), f"{rel(path)} holds what looks like a secret"


def test_the_scan_sees_values() -> None:
    # Guard against a parser change that would make the checks above pass vacuously.
    values = {name: value for path in param_files() for name, value in parse_bicepparam(path).items()}
    assert values, "no parameters read"
    assert any(isinstance(v, str) and v for v in walk(list(values.values())))
