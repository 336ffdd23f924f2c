"""The machinery every sync shares: the applier's outage rule, the mass-change guard, the retry ledger."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from shared.errors import ClearVoxUnauthorized, ClearVoxUnavailable, LeaseLost, ValidationFailed
from shared.sync.base import OUTAGE_IN_A_ROW, MassChangeRule, apply, due_retries, hold_reason, next_retries


def run(items: list[int], write, workers: int = 1, **kw):  # type: ignore[no-untyped-def]
    results: dict[int, object] = {}
    applied = apply(items, write, lambda item, result: results.__setitem__(item, result), workers=workers, **kw)
    return applied, results


def test_one_item_that_always_fails_fails_alone_and_the_others_are_written() -> None:
    def write(i: int) -> str:
        if i == 3:
            raise ClearVoxUnavailable("ClearVox answered 500", 500, "internal")
        return f"ok {i}"

    applied, results = run(list(range(200)), write, workers=4)
    assert applied.stopped is None and applied.not_started == []
    assert isinstance(results.pop(3), ClearVoxUnavailable)
    assert results == {i: f"ok {i}" for i in range(200) if i != 3}


def test_a_refused_connection_stops_the_run_at_once() -> None:
    def write(i: int) -> str:
        raise ClearVoxUnavailable("cannot reach ClearVox", 0, "unreachable")

    applied, results = run(list(range(50)), write)
    assert isinstance(applied.stopped, ClearVoxUnavailable) and len(results) == 1 and len(applied.not_started) == 49


def test_many_unavailable_answers_in_a_row_are_an_outage_but_scattered_ones_are_not() -> None:
    applied, results = run(list(range(100)), lambda i: (_ for _ in ()).throw(ClearVoxUnavailable("503", 503, "x")))
    assert applied.stopped is not None and "in a row" in str(applied.stopped)
    assert len(results) == OUTAGE_IN_A_ROW and len(applied.not_started) == 100 - OUTAGE_IN_A_ROW

    def every_other(i: int) -> int:
        if i % 2:
            raise ClearVoxUnavailable("503", 503, "x")
        return i

    applied, results = run(list(range(100)), every_other)
    assert applied.stopped is None and len(results) == 100


def test_an_item_error_or_a_bug_in_one_item_fails_that_item_only() -> None:
    def write(i: int) -> int:
        if i == 1:
            raise ValidationFailed("422", 422, "validation_failed")
        if i == 2:
            raise KeyError("a bug")
        return i

    applied, results = run([0, 1, 2, 3], write)
    assert applied.stopped is None
    assert isinstance(results[1], ValidationFailed) and isinstance(results[2], KeyError) and results[3] == 3


def test_an_admin_fix_stops_the_run_and_its_item_counts_as_not_started() -> None:
    def write(i: int) -> int:
        if i == 2:
            raise ClearVoxUnauthorized("key revoked", 401, "unauthorized")
        return i

    applied, results = run([0, 1, 2, 3, 4], write)
    assert isinstance(applied.stopped, ClearVoxUnauthorized)
    assert results == {0: 0, 1: 1} and applied.not_started == [2, 3, 4]
    with pytest.raises(ClearVoxUnauthorized):
        applied.raise_if_stopped()


def test_a_lost_lease_stops_every_further_write() -> None:
    lost = threading.Event()

    def check() -> None:
        if lost.is_set():
            raise LeaseLost("taken over")

    def write(i: int) -> int:
        if i == 1:
            lost.set()
        return i

    applied, results = run(list(range(10)), write, check=check)
    assert isinstance(applied.stopped, LeaseLost) and results == {0: 0, 1: 1} and applied.not_started == list(range(2, 10))


def test_the_time_budget_leaves_the_rest_for_the_next_run() -> None:
    applied, results = run(list(range(10)), lambda i: i, deadline=time.monotonic() - 1)
    assert applied.out_of_time and results == {} and applied.not_started == list(range(10))


RULE = MassChangeRule("deactivations", limit=10)


@pytest.mark.parametrize(("count", "known", "earlier", "held"), [
    (1, 8, 0, False),  # one leaver out of eight
    (2, 8, 0, False),  # below the floor of three
    (8, 8, 0, True),  # an empty answer would remove everyone
    (5, 8, 0, True),  # more than half
    (4, 100, 0, False),
    (11, 1000, 0, True),  # more than the limit in one run
    (5, 1000, 6, True),  # more than the limit in 24 hours: ten per run never trips it otherwise
    (10, 1000, 0, False),
])
def test_the_mass_change_guard(count: int, known: int, earlier: int, held: bool) -> None:
    assert (hold_reason(count, known, RULE, earlier_today=earlier) is not None) is held
    assert hold_reason(count, known, RULE, earlier_today=earlier, confirmed=True) is None


def test_the_retry_ledger_counts_attempts_and_forgets_what_succeeded() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    old = {"a": {"reason": "x", "attempts": 2}, "b": {"reason": "y", "attempts": 1}}
    rows, done = next_retries(old, {"a": {"reason": "again " * 500, "kind": "failed"}, "c": {"reason": "new"}}, now)
    assert rows["a"]["attempts"] == 3 and rows["a"]["kind"] == "failed" and len(rows["a"]["reason"]) == 1000
    assert rows["c"]["attempts"] == 1 and done == ["b"]
    assert due_retries({"a": {"attempts": 3}, "c": {"attempts": 10}}, cap=10) == ["a"]
