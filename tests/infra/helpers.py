"""Shared helpers of the infra tests: file lists, Bicep parsing, walking pycep's JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
ENTRA_APP = INFRA / "entra-app.bicep"

_USING = re.compile(r"^using\s+'(?P<path>[^']+)'\s*$")
_PARAM = re.compile(r"^(\s*)param(\s+\w+\s*=)", re.MULTILINE)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def param_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicepparam"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@cache
def parse(path: Path) -> dict[str, Any]:
    """pycep's JSON of a .bicep file."""
    result = BicepParser().parse(text=path.read_text(encoding="utf-8"))
    return dict(result)


def using_path(path: Path) -> Path:
    """The template a .bicepparam file is for: its first statement must be `using '<file>'`."""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("//"):
            continue
        match = _USING.match(stripped)
        if not match:
            raise AssertionError(f"{rel(path)}: the first statement must be `using '<template>'`, not {stripped!r}")
        return (path.parent / match["path"]).resolve()
    raise AssertionError(f"{rel(path)}: empty parameter file")


@cache
def parse_bicepparam(path: Path) -> dict[str, Any]:
    """The param assignments of a .bicepparam file, as pycep values.

    pycep has no grammar for .bicepparam, so after checking the `using` line the
    file is parsed as Bicep with each `param x = value` read as `var x = value`:
    that still checks the syntax of every value.
    """
    using_path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    body = "\n".join("" if _USING.match(line.strip()) else line for line in lines) + "\n"
    tree = BicepParser().parse(text=_PARAM.sub(r"\1var\2", body))
    unexpected = sorted(set(tree) - {"globals", "variables"})
    assert not unexpected, f"{rel(path)}: only `using` and `param` statements expected, found {unexpected}"
    return {name: spec["value"] for name, spec in tree.get("variables", {}).items()}


def resources(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Resource name -> {"type", "existing", "condition", "body"}, conditions unwrapped."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in tree.get("resources", {}).items():
        config = spec["config"]
        condition = None
        if isinstance(config, dict) and set(config) == {"condition", "config"}:
            condition, config = config["condition"], config["config"]
        out[name] = {"type": spec["type"], "existing": spec["existing"], "condition": condition, "body": config}
    return out


def variable(tree: dict[str, Any], name: str) -> Any:
    return tree["variables"][name]["value"]


def resolve(tree: dict[str, Any], value: Any) -> Any:
    """A bare identifier that names a variable becomes that variable's value."""
    if isinstance(value, str) and value in tree.get("variables", {}):
        return variable(tree, value)
    return value


def is_function(value: Any, *names: str) -> bool:
    return isinstance(value, dict) and "function" in value and value["function"]["type"] in names


def walk(value: Any) -> Iterator[Any]:
    """Every nested value of a pycep structure."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)
