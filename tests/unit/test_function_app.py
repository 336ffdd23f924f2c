"""The Functions app: three timers on app-setting schedules, thin bodies that call the runner."""

from __future__ import annotations

import functools
import importlib
import os
from typing import Any

import pytest

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


def test_three_timer_functions_with_schedule_expressions() -> None:
    functions = {name: b for name, b in _functions().items() if b["type"] == "timerTrigger"}
    assert set(functions) == set(EXPECTED)
    for name, (schedule, _) in EXPECTED.items():
        binding = functions[name]
        assert binding["type"] == "timerTrigger"
        assert binding["schedule"] == schedule
        assert binding.get("runOnStartup") is False


def test_schedules_default_to_the_documented_values() -> None:
    import function_app  # noqa: F401 - importing sets the defaults

    assert os.environ["NEXXT365_USERS_SCHEDULE"] == "0 */15 * * * *"
    assert os.environ["NEXXT365_CONTACTS_SCHEDULE"] == "0 */30 * * * *"
    assert os.environ["NEXXT365_CALENDAR_SCHEDULE"] == "0 * * * * *"


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
