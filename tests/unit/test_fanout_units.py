"""The fan-out's pure parts: NCRONTAB ticks, the message, the split, the setting, the host's queue options."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared import dispatch, ncrontab
from shared.errors import ConfigError
from shared.settings import Settings
from shared.sync import split

T = datetime(2026, 11, 30, 13, 37, 42, 500000, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(("expr", "tick", "following"), [
    ("0 * * * * *", "13:37:00", "13:38:00"),
    ("0 */15 * * * *", "13:30:00", "13:45:00"),
    ("0 */30 * * * *", "13:30:00", "14:00:00"),
    ("*/10 * * * * *", "13:37:40", "13:37:50"),
    ("0 0 9-17 * * *", "13:00:00", "14:00:00"),
    ("0 5,35 * * * *", "13:35:00", "14:05:00"),
])
def test_the_tick_a_moment_belongs_to_and_the_next(expr: str, tick: str, following: str) -> None:
    assert ncrontab.latest_at_or_before(expr, T) == datetime.fromisoformat(f"2026-11-30T{tick}+00:00")
    assert ncrontab.next_after(expr, T) == datetime.fromisoformat(f"2026-11-30T{following}+00:00")


def test_irregular_schedules_cross_days_and_weekdays() -> None:
    office = "0 0 9-17 * * mon-fri"
    friday_evening = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    assert ncrontab.next_after(office, friday_evening) == datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    assert ncrontab.latest_at_or_before(office, friday_evening) == datetime(2026, 12, 4, 17, 0, tzinfo=UTC)
    assert ncrontab.interval(office, datetime(2026, 12, 4, 17, 0, tzinfo=UTC)) == timedelta(hours=64)
    assert ncrontab.next_after("0 0 0 29 feb *", T) == datetime(2028, 2, 29, tzinfo=UTC)
    assert ncrontab.next_after("0 0 12 * * 0", T) == datetime(2026, 12, 6, 12, 0, tzinfo=UTC)  # Sunday
    assert ncrontab.next_after("0 0 12 * * 7", T) == datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_interval_of_the_default_schedules_and_the_timespan_form() -> None:
    assert ncrontab.interval("0 * * * * *", T) == timedelta(minutes=1)
    assert ncrontab.interval("0 */15 * * * *", T) == timedelta(minutes=15)
    assert ncrontab.interval("00:05:00", T) == timedelta(minutes=5)


@pytest.mark.parametrize("expr", ["* * * * *", "0 61 * * * *", "0 */0 * * * *", "0 x * * * *", "00:00:00"])
def test_unreadable_expressions_raise_value_error(expr: str) -> None:
    with pytest.raises(ValueError):
        ncrontab.parse(expr)


def test_message_round_trip_and_the_fixed_fields() -> None:
    due = datetime(2026, 11, 30, 13, 37, tzinfo=UTC)
    plain = dispatch.Message("users", "contoso", due)
    assert json.loads(plain.to_json()) == {"sync": "users", "tenant": "contoso", "due": "2026-11-30T13:37:00Z"}
    assert dispatch.Message.parse(plain.to_json()) == plain
    part = dispatch.Message("calendar", "contoso", due, (2000, None), 4100)
    assert dispatch.Message.parse(part.to_json()) == part
    assert part.args == {"range": [2000, None]}


@pytest.mark.parametrize("text", ["hello", "{}", '{"sync": "users", "tenant": "x", "due": "yesterday"}', '[1]'])
def test_an_unreadable_message_is_a_bad_message(text: str) -> None:
    with pytest.raises(dispatch.BadMessage, match="not a fan-out message"):
        dispatch.Message.parse(text)


def test_a_message_is_stale_from_its_syncs_next_tick() -> None:
    settings = Settings(env={}, local={})
    due = datetime(2026, 11, 30, 13, 37, tzinfo=UTC)
    message = dispatch.Message("calendar", "contoso", due)
    assert dispatch.stale_since(settings, message, due + timedelta(seconds=59.9)) is None
    assert dispatch.stale_since(settings, message, due + timedelta(minutes=1)) == due + timedelta(minutes=1)
    users = dispatch.Message("users", "contoso", due.replace(minute=30))
    assert dispatch.stale_since(settings, users, due + timedelta(minutes=7)) is None
    slow = Settings(env={"NEXXT365_CALENDAR_SCHEDULE": "0 */5 * * * *"}, local={})
    assert dispatch.stale_since(slow, dispatch.Message("calendar", "c", due.replace(minute=35)), due) is None


def test_split_parts_cover_every_user_once() -> None:
    assert split.parts(2000) == []
    assert split.parts(2001) == [(0, 1000), (1000, None)]
    assert split.parts(20_000, 5000) == [(0, 5000), (5000, 10000), (10000, 15000), (15000, None)]
    assert split.parts(9_000, 2000) == [(0, 1800), (1800, 3600), (3600, 5400), (5400, 7200), (7200, None)]
    assert split.lease_name("calendar", {}) == "calendar"
    assert split.lease_name("calendar", {"range": [4000, None]}) == "calendar@4000"


@pytest.mark.parametrize(("env", "mode"), [
    ({}, "inline"),
    ({"NEXXT365_TENANTS_TABLE": "tenants"}, "queue"),
    ({"NEXXT365_TENANTS_TABLE": "tenants", "NEXXT365_FANOUT": "Inline"}, "inline"),
    ({"NEXXT365_FANOUT": "queue"}, "queue"),
])
def test_fanout_defaults_to_inline_for_one_customer_and_queue_for_many(env: dict[str, str], mode: str) -> None:
    assert Settings(env=env, local={}).fanout() == mode


def test_a_wrong_fanout_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="NEXXT365_FANOUT 'queues' is not one of: inline"):
        Settings(env={"NEXXT365_FANOUT": "queues"}, local={}).fanout()


def test_host_json_queue_options_are_the_ones_work_mirrors() -> None:
    host = json.loads((Path(__file__).resolve().parents[2] / "host.json").read_text(encoding="utf-8"))
    queues = host["extensions"]["queues"]
    assert queues["batchSize"] == dispatch.BATCH_SIZE
    assert queues["newBatchThreshold"] == dispatch.NEW_BATCH_THRESHOLD
    assert queues["maxDequeueCount"] == dispatch.MAX_DEQUEUE
    assert queues["messageEncoding"] == "base64"
    assert queues["maxPollingInterval"] <= "00:00:10"  # a minute's calendar messages must be seen at once
