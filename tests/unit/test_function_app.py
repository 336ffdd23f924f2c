"""The Functions app: three timers on app-setting schedules, thin bodies that call the runner."""

from __future__ import annotations

import importlib
import os

import pytest

EXPECTED = {
    "sync_users": ("%NEXXT365_USERS_SCHEDULE%", "users"),
    "sync_contacts": ("%NEXXT365_CONTACTS_SCHEDULE%", "contacts"),
    "calendar_status": ("%NEXXT365_CALENDAR_SCHEDULE%", "calendar"),
}


def _functions() -> dict[str, dict[str, object]]:
    import function_app

    found = {}
    for fn in function_app.app.get_functions():
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
