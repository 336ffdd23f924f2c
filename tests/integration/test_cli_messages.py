"""What `nexxt365` prints when settings or the state storage are wrong: one message naming the setting, exit 2, no traceback.

Every case goes through `shared.cli.main` as an administrator would run it, with stdout and stderr captured.
"""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest

from shared import cli, state
from shared.errors import EXIT_CONFIG
from shared.sandbox.azurite import Azurite
from shared.sandbox.world import World
from shared.settings import Settings

pytestmark = pytest.mark.integration

TENANT_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
BASE = {
    "NEXXT365_TENANT": TENANT_ID,
    "NEXXT365_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "NEXXT365_CLIENT_SECRET": "s3cret-value",
    "NEXXT365_CLEARVOX_URL": "https://pbx.example.nl",
    "NEXXT365_CLEARVOX_API_KEY": "cv-key",
    "NEXXT365_CLEARVOX_ACCOUNT": "10001",
    "NEXXT365_STATE": "UseDevelopmentStorage=true",
}
CLOSED_PORT_STATE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                     "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                     "TableEndpoint=http://127.0.0.1:1/devstoreaccount1")
BAD_KEY_STATE = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=not*base64;EndpointSuffix=core.windows.net"


def run(argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = cli.main(argv, out=out, settings=Settings(env=env, local={}))
    return code, out.getvalue(), capsys.readouterr().err


def assert_clear(code: int, text: str, setting: str) -> None:
    assert code == EXIT_CONFIG, text
    assert setting in text, text
    assert "Traceback" not in text


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def no_managed_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real DefaultAzureCredential, without its managed-identity probe (nothing leaves this machine)."""
    from azure.identity import DefaultAzureCredential

    monkeypatch.setattr(state, "azure_credential", lambda: DefaultAzureCredential(exclude_managed_identity_credential=True))


STATE_CASES = {
    "no emulator": CLOSED_PORT_STATE,
    "AccountKey not base64": BAD_KEY_STATE,
    "https endpoint without a credential": "https://127.0.0.1:1/",
}
COMMANDS = {"sync": ["sync", "users"], "report": ["report", "unlinked"], "link": ["link", "--csv", "reviewed.csv"]}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(STATE_CASES))
def test_unusable_state_storage_names_the_setting(command: str, case: str, capsys: pytest.CaptureFixture[str],
                                                   no_managed_identity: None, tmp_path: Path) -> None:
    from shared.sync.users.linking import CSV_COLUMNS

    (tmp_path / "reviewed.csv").write_text(",".join(CSV_COLUMNS) + "\n")
    argv = [str(tmp_path / a) if a.endswith(".csv") else a for a in COMMANDS[command]]
    code, out, err = run(argv, {**BASE, "NEXXT365_STATE": STATE_CASES[case]}, capsys)
    assert_clear(code, out + err, "NEXXT365_STATE")


def test_development_storage_without_the_emulator_says_to_start_it(capsys: pytest.CaptureFixture[str]) -> None:
    if _port_open(10002):
        pytest.skip("a storage emulator listens on the default port here")
    code, out, err = run(["sync", "users"], BASE, capsys)
    assert_clear(code, out + err, "NEXXT365_STATE")
    assert "Azurite" in out + err


@pytest.mark.parametrize("case", ["AccountKey not base64", "no emulator"])
def test_doctor_names_the_state_setting(case: str, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["doctor"], world.env(STATE_CASES[case]), capsys)
    assert code == EXIT_CONFIG
    fail = [line for line in out.splitlines() if "FAIL" in line and "state storage" in line]
    assert fail and "NEXXT365_STATE" in fail[0], out
    assert "unexpected" not in out and "Traceback" not in out + err


def _pem(kind: str) -> str:
    from tests.unit.test_settings_validation import _pem as make

    return make(kind)


SETTING_CASES = {
    "certificate with only a key": ("NEXXT365_CLIENT_CERTIFICATE", lambda: _pem("rsa").split("-----END CERTIFICATE-----")[1],
                                    "no certificate"),
    "EC certificate": ("NEXXT365_CLIENT_CERTIFICATE", lambda: _pem("ec"), "RSA"),
    "invalid ClearVox URL": ("NEXXT365_CLEARVOX_URL", lambda: "https://[::1", "https URL"),
    "non-ASCII API key": ("NEXXT365_CLEARVOX_API_KEY", lambda: "sleutel\u00a0123", "ASCII"),
    "huge full sync hours": ("NEXXT365_FULL_SYNC_HOURS", lambda: "99999999999999999999", "1 to 8760"),
    "tenants table with spaces": ("NEXXT365_TENANTS_TABLE", lambda: "my tenants", "3-63"),
    "garbage status map": ("NEXXT365_STATUS_MAP", lambda: "garbage", "show-as=status"),
    "bad schedule": ("NEXXT365_CALENDAR_SCHEDULE", lambda: "* * * * *", "six fields"),
    "unknown region": ("NEXXT365_DEFAULT_REGION", lambda: "XX", "NL"),
    "huge concurrency": ("NEXXT365_CLEARVOX_CONCURRENCY", lambda: "100000000", "1 to 64"),
}


@pytest.mark.parametrize("case", list(SETTING_CASES))
def test_a_bad_setting_stops_sync_with_its_name(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    name, value, expected = SETTING_CASES[case]
    env = {**BASE, name: value(), "NEXXT365_KEY_VAULT_URL": "https://kv.vault.azure.net"}
    if name == "NEXXT365_CLIENT_CERTIFICATE":
        env["NEXXT365_CLIENT_SECRET"] = ""
    code, out, err = run(["sync", "users"], env, capsys)
    assert_clear(code, out + err, name)
    assert expected in err


def test_doctor_shows_a_setting_that_breaks_every_run_as_a_fail_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["doctor"], {**BASE, "NEXXT365_STATUS_MAP": "tentative=maybe"}, capsys)
    assert code == EXIT_CONFIG
    assert any(line.strip().startswith("FAIL settings:") and "NEXXT365_STATUS_MAP" in line for line in out.splitlines()), out
    code, out, _ = run(["doctor", "--json"], {**BASE, "NEXXT365_USERS_SCHEDULE": "every 5 minutes"}, capsys)
    assert code == EXIT_CONFIG
    assert json.loads(out)["checks"][0]["status"] == "FAIL"


def _with_local_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes) -> None:
    (tmp_path / "local.settings.json").write_bytes(content)
    monkeypatch.chdir(tmp_path)
    for name in BASE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)


def test_local_settings_with_a_bom_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    values = {**BASE, "NEXXT365_FULL_SYNC_HOURS": "0"}
    _with_local_settings(tmp_path, monkeypatch, b"\xef\xbb\xbf" + json.dumps({"Values": values}).encode())
    code = cli.main(["sync", "users"], out=io.StringIO())
    err = capsys.readouterr().err
    assert_clear(code, err, "NEXXT365_FULL_SYNC_HOURS")  # the file was read: its (bad) value is named


def test_local_settings_with_null_values_warns_and_reads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    _with_local_settings(tmp_path, monkeypatch, json.dumps({"IsEncrypted": False, "Values": None}).encode())
    code = cli.main(["sync", "users"], out=io.StringIO())
    err = capsys.readouterr().err
    assert_clear(code, err, "is not set")
    assert any('"Values": null' in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


class Crashing(Settings):
    def tenants(self, vault: object = None) -> list:  # type: ignore[override]
        raise RuntimeError("a bug with a secret s3cret-value in its message")


def test_an_unexpected_error_is_one_line_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sync", "users"], out=io.StringIO(), settings=Crashing(env=BASE, local={}))
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().count("\n") == 0, err
    assert "RuntimeError" in err and "--debug" in err and "Traceback" not in err and "s3cret" not in err


def test_with_debug_the_traceback_goes_to_the_debug_log(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    cli.main(["--debug", "sync", "users"], out=io.StringIO(), settings=Crashing(env=BASE, local={}))
    assert any(r.exc_info for r in caplog.records if r.name == "nexxt365")


def test_control_characters_from_entra_are_printed_escaped(world: World, azurite: Azurite,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    hostile = "Eve\x1b]0;pwned\x07\x1b[2J"
    world.graph.add_user(displayName=hostile, mail="not-an-email")
    _, out, err = run(["sync", "users"], world.env(azurite.connection_string), capsys)
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "Eve\\x1b]0;pwned\\x07\\x1b[2J" in out, out
    _, out, _ = run(["sync", "users", "--json"], world.env(azurite.connection_string), capsys)
    assert "\x1b" not in out  # JSON escapes them itself


def test_with_json_a_configuration_error_is_also_a_json_object_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["sync", "users", "--json"], {**BASE, "NEXXT365_DEFAULT_REGION": "XX"}, capsys)
    assert code == EXIT_CONFIG and "NEXXT365_DEFAULT_REGION" in err
    assert json.loads(out) == {"error": json.loads(out)["error"], "exit_code": EXIT_CONFIG}
    assert "NEXXT365_DEFAULT_REGION" in json.loads(out)["error"]
