"""`nexxt365 doctor --contract`: the configured PBX's answers checked against clearvox-api.yaml, read-only.

shared.clearvox knows the paths and fields (`ClearVox.contract_samples`, `CONTRACT_SCHEMAS`);
this module only compares and phrases each mismatch in the contract's terms:
path, schema property, expected vs got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.clearvox import CONTRACT_SCHEMAS, ClearVox
from shared.errors import ClearVoxError

_JSON_NAMES = {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array", type(None): "null"}


@dataclass(frozen=True)
class ContractFinding:
    path: str  # "GET /accounts/{id}/users"
    field: str  # "data[0].email", "meta.total", or "" for the answer itself
    expected: str
    got: str

    def __str__(self) -> str:
        where = f" {self.field}" if self.field else ""
        return f"{self.path}{where}: clearvox-api.yaml expects {self.expected}, got {self.got}"


def _type_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _object(path: str, where: str, schema: str, value: Any) -> list[ContractFinding]:
    if not isinstance(value, dict):
        return [ContractFinding(path, where, f"a {schema} object", _type_name(value))]
    found = []
    for name, types in CONTRACT_SCHEMAS[schema].items():
        label = f"{where}.{name}" if where else name
        if name not in value:
            found.append(ContractFinding(path, label, f"required property {name} of {schema}", "no such property"))
        elif not isinstance(value[name], types) or (isinstance(value[name], bool) and bool not in types):
            expected = " or ".join(_JSON_NAMES.get(t, t.__name__) for t in types)
            found.append(ContractFinding(path, label, expected, _type_name(value[name])))
    return found


def _answer(schema: str, path: str, envelope: Any) -> list[ContractFinding]:
    if isinstance(envelope, ClearVoxError):
        return [ContractFinding(path, "", "a 2xx answer", f"{envelope.status} {envelope.code}".strip())]
    if not isinstance(envelope, dict) or "data" not in envelope:
        return [ContractFinding(path, "data", "required property data", _type_name(envelope))]
    if not schema.endswith("[]"):
        return _object(path, "data", schema, envelope["data"])
    found = _object(path, "meta", "Page", envelope.get("meta"))
    data = envelope["data"]
    if not isinstance(data, list):
        return [*found, ContractFinding(path, "data", f"an array of {schema[:-2]}", _type_name(data))]
    for n, item in enumerate(data):
        found += _object(path, f"data[{n}]", schema[:-2], item)
    return found


def contract_check(cv: ClearVox) -> list[ContractFinding]:
    """Every mismatch between the PBX's answers and clearvox-api.yaml; [] when they agree."""
    findings: list[ContractFinding] = []
    for schema, path, envelope in cv.contract_samples():
        findings += _answer(schema, path, envelope)
    return findings
