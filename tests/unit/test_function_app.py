"""The Functions app: three timers on app-setting schedules, thin bodies that call the runner."""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE_DEFAULTS = {"NEXXT365_USERS_SCHEDULE": "0 */15 * * * *", "NEXXT365_CONTACTS_SCHEDULE": "0 */30 * * * *",
                         "NEXXT365_CALENDAR_SCHEDULE": "0 * * * * *"}

EXPECTED = {
    "sync_users": ("%NEXXT365_USERS_SCHEDULE%", "users"),
    "sync_contacts": ("%NEXXT365_CONTACTS_SCHEDULE%", "contacts"),
    "calendar_status": ("%NEXXT365_CALENDAR_SCHEDULE%", "calendar"),
}


@functools.cache
def _registered() -> list[Any]:
    import function_app

    return list(function_app.app.get_functions())  # builds the functions once per process


def _functions() -> dict[str, dict[str, object]]:
    found = {}
    for fn in _registered():
        bindings = [b.get_dict_repr() for b in fn.get_bindings()]
        found[fn.get_function_name()] = bindings[0]
    return found


def test_every_registered_sync_has_its_function_folder_with_a_timer_and_a_queue_trigger() -> None:
    from shared.sync.base import syncs

    assert {spec.function: (f"%{spec.schedule_setting}%", spec.name) for spec in syncs()} == EXPECTED
    bindings = _functions()
    for spec in syncs():
        assert bindings[spec.function]["schedule"] == f"%{spec.schedule_setting}%"
        assert bindings[f"{spec.function}_queue"]["queueName"] == spec.queue


def test_three_timer_functions_with_schedule_expressions() -> None:
    functions = {name: b for name, b in _functions().items() if b["type"] == "timerTrigger"}
    assert set(functions) == set(EXPECTED)
    for name, (schedule, _) in EXPECTED.items():
        binding = functions[name]
        assert binding["type"] == "timerTrigger"
        assert binding["schedule"] == schedule
        assert binding.get("runOnStartup") is False


def test_the_worker_does_not_set_schedule_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host resolves %NEXXT365_*_SCHEDULE% before the worker starts: the defaults live in the app settings."""
    for name in ("NEXXT365_USERS_SCHEDULE", "NEXXT365_CONTACTS_SCHEDULE", "NEXXT365_CALENDAR_SCHEDULE"):
        monkeypatch.delenv(name, raising=False)
    import function_app

    importlib.reload(function_app)
    assert not any(name.endswith("_SCHEDULE") and name.startswith("NEXXT365_") for name in os.environ)


def test_local_settings_example_has_the_documented_schedule_defaults() -> None:
    from shared.sync.base import syncs

    values = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    registered = {spec.schedule_setting: spec.schedule_default for spec in syncs()}
    assert registered == ARCHITECTURE_DEFAULTS
    assert {k: values[k] for k in registered} == registered


@dataclass
class FakeTimer:
    past_due: bool


@pytest.mark.parametrize("module", list(EXPECTED))
def test_a_late_tick_is_logged_as_past_due_naming_the_sync(module: str, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from shared import runner

    monkeypatch.setattr(runner, "run_all", lambda sync, *a, **k: [])
    user_fn = importlib.import_module(module).bp._function_builders[0]._function._func
    with caplog.at_level(logging.INFO, logger="nexxt365"):
        user_fn(FakeTimer(past_due=False))
        assert "timer.past_due" not in caplog.text
        user_fn(FakeTimer(past_due=True))
    late = [r for r in caplog.records if "timer.past_due" in r.getMessage()]
    assert len(late) == 1 and late[0].levelno == logging.WARNING
    assert f"sync={EXPECTED[module][1]}" in late[0].getMessage()


@pytest.mark.parametrize("module", list(EXPECTED))
def test_each_timer_body_only_calls_the_runner(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import runner

    calls: list[str] = []
    monkeypatch.setattr(runner, "run_all", lambda sync, *a, **k: calls.append(sync) or [])
    mod = importlib.import_module(module)
    user_fn = mod.bp._function_builders[0]._function._func
    user_fn(None)
    assert calls == [EXPECTED[module][1]]


def _queue_functions() -> dict[str, dict[str, object]]:
    found = {}
    for fn in _registered():
        binding = fn.get_bindings()[0].get_dict_repr()
        if binding["type"] == "queueTrigger":
            found[fn.get_function_name()] = binding
    return found


def test_a_queue_trigger_beside_each_timer_on_the_syncs_queue_with_the_host_connection() -> None:
    functions = _queue_functions()
    assert set(functions) == {f"{name}_queue" for name in EXPECTED}
    for name, (_, sync) in EXPECTED.items():
        binding = functions[f"{name}_queue"]
        assert binding["queueName"] == f"nexxt365-{sync}"
        assert binding["connection"] == "AzureWebJobsStorage"


@pytest.mark.parametrize("module", list(EXPECTED))
def test_in_queue_mode_the_timer_dispatches_and_the_queue_trigger_handles(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import dispatch

    calls: list[tuple[str, object]] = []
    monkeypatch.setenv("NEXXT365_FANOUT", "queue")
    monkeypatch.setattr(dispatch, "dispatch", lambda settings, sync: calls.append(("dispatch", sync)))
    monkeypatch.setattr(dispatch, "handle", lambda text, **kw: calls.append(("handle", text)))
    mod = importlib.import_module(module)
    timer_fn, queue_fn = (b._function._func for b in mod.bp._function_builders)
    timer_fn(None)

    class Msg:
        dequeue_count = 1

        def get_body(self) -> bytes:
            return b'{"sync": "x"}'

    queue_fn(Msg())
    assert calls == [("dispatch", EXPECTED[module][1]), ("handle", '{"sync": "x"}')]
