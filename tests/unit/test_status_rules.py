"""The pure rules of `nexxt365 status`: a stored report's result and error class, held counts, schedule intervals."""

from __future__ import annotations

import pytest

from shared.status import error_class as error_class_of
from shared.status import held_count, result_of


@pytest.mark.parametrize(("report", "result", "error_class"), [
    ({"exit_code": 0, "failed": []}, "ok", ""),
    ({"exit_code": 1, "failed": [{"id": "x", "reason": "y"}]}, "failed", "item"),
    ({"exit_code": 2, "error": "The client secret is wrong"}, "error", "admin_fix"),
    ({"exit_code": 1, "error": "ClearVox failed 10 requests in a row"}, "error", "transient"),
    ({"exit_code": 1, "error": "unexpected KeyError during the users sync"}, "error", "unexpected"),
    ({"exit_code": 3, "not_run": "another run holds the lease"}, "not_run", ""),
    ({"exit_code": 2, "error": "backed off after 3 failed runs", "backed_off": True}, "backed_off", "admin_fix"),
])
def test_result_and_error_class_of_a_stored_report(report: dict[str, object], result: str, error_class: str) -> None:
    assert result_of(report) == result
    assert error_class_of(report) == error_class


def test_held_changes_are_a_list_for_users_and_a_count_for_contacts() -> None:
    assert held_count({"held": [{"id": "a"}, {"id": "b"}]}) == 2
    assert held_count({"held": 4}) == 4
    assert held_count({}) == 0 and held_count({"held": True}) == 0


