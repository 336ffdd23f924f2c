"""The telemetry records' field names are the ones the workbook and alert queries use; export only with a connection string."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared import status, telemetry
from shared.sync.base import sync_names

ROOT = Path(__file__).resolve().parents[2]
QUERIES = sorted((ROOT / "infra").rglob("*.kql"))
FIELD = re.compile(r"Properties\.(\w+)")
LITERAL = re.compile(r'"([^"\n]*)"')
# Every string a query compares a field with: kinds, results, error classes, codes, sync names.
VOCABULARY = ({telemetry.RUN, telemetry.WARNING, status.OK, status.FAILED, status.ERROR, status.NOT_RUN, status.BACKED_OFF,
               "admin_fix", "transient", "unexpected", "item"} | set(status.CODES) | set(sync_names()))


def test_there_are_queries_for_the_workbook_and_every_alert() -> None:
    names = {p.stem for p in QUERIES}
    assert {"fleet-grid", "alert-sync-failing", "alert-secret-expiring", "alert-held-changes",
            "alert-calendar-overrun"} <= names


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.name)
def test_query_uses_only_fields_and_values_the_code_emits(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    fields = set(FIELD.findall(body))
    assert fields, f"{path.name} reads no telemetry field"
    assert fields <= telemetry.FIELDS, f"{path.name} reads fields no record carries: {sorted(fields - telemetry.FIELDS)}"
    literals = set(LITERAL.findall(body))
    assert literals <= VOCABULARY, f"{path.name} compares with values no record carries: {sorted(literals - VOCABULARY)}"
    assert telemetry.KIND in fields, f"{path.name} must select records by {telemetry.KIND}"


@pytest.mark.parametrize("path", QUERIES, ids=lambda p: p.name)
def test_query_parses_as_kql_pipeline(path: Path) -> None:
    """A light parse: balanced brackets and quotes, a table then `|` operators, every `let` ends with `;`."""
    body = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("//"))
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for char in re.sub(r'"[^"\n]*"', '""', body):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            assert stack and stack.pop() == pairs[char], f"{path.name}: unbalanced {char}"
    assert not stack, f"{path.name}: unclosed {stack}"
    assert body.count('"') % 2 == 0, f"{path.name}: unbalanced quotes"
    statements = [s.strip() for s in body.split(";") if s.strip()]
    for statement in statements[:-1]:
        assert statement.startswith("let "), f"{path.name}: only `let` statements end with ';'"
    final = statements[-1]
    assert re.match(r"^(AppTraces|\w+)\s*\n\s*\|", final), f"{path.name}: the query must start with a table and pipes"
    assert "AppTraces" in body


def test_bicep_loads_every_query_file() -> None:
    bicep = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "infra").rglob("*.bicep"))
    loaded = set(re.findall(r"loadTextContent\('\.\./queries/([\w.-]+)'\)", bicep))
    assert loaded == {p.name for p in QUERIES}


def test_nothing_is_exported_without_a_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_configured", None)
    assert telemetry.setup(env={}) is False
    assert telemetry.log.propagate is True and telemetry.log.handlers == []


def test_managed_identity_from_the_authentication_string() -> None:
    assert telemetry._credential({}) is None
    credential = telemetry._credential({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=0000-1;Authorization=AAD"})
    assert type(credential).__name__ == "ManagedIdentityCredential"


def test_with_a_connection_string_the_distro_exports_the_telemetry_logger_only() -> None:
    """In a process of its own: configure_azure_monitor attaches its handler to the telemetry logger only, and
    instruments no HTTP library."""
    script = textwrap.dedent("""
        import logging
        from shared import telemetry
        env = {"APPLICATIONINSIGHTS_CONNECTION_STRING":
               "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://127.0.0.1:9/"}
        assert telemetry.setup(env) is True
        assert telemetry.setup(env) is True  # once per process
        handlers = [type(h).__name__ for h in logging.getLogger(telemetry.LOGGER).handlers]
        assert handlers == ["LoggingHandler"], handlers
        assert telemetry.log.propagate is False
        assert logging.getLogger().handlers == [] and logging.getLogger("nexxt365").handlers == []
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
        from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
        assert not RequestsInstrumentor().is_instrumented_by_opentelemetry  # no request URL is exported
        assert not URLLib3Instrumentor().is_instrumented_by_opentelemetry
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
