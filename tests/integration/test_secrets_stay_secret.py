"""Tokens, client secrets and API keys never appear in logs, output or reports - also when things fail."""

from __future__ import annotations

import io
import logging
import re

import pytest

from shared.cli import main
from shared.sandbox.azurite import Azurite
from shared.sandbox.world import World
from shared.settings import Settings

WRONG_SECRET = "wrong-client-secret-7f3a9c"
WRONG_KEY = "wrong-clearvox-key-51b2e8"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")


def test_no_secret_in_logs_output_or_reports(world: World, azurite: Azurite, capsys: pytest.CaptureFixture[str],
                                             caplog: pytest.LogCaptureFixture) -> None:
    for i in range(5):
        world.graph.add_user(displayName=f"User {i}", givenName="User", surname=str(i), mail=f"user{i}@voorbeeld.nl",
                             businessPhones=["020 123 4567"])
    env = world.env(azurite.connection_string)
    runs = [
        (["-v", "doctor"], {}),
        (["-v", "sync", "users", "--json"], {}),
        (["-v", "sync", "users", "--dry-run"], {}),
        (["-v", "sync", "contacts", "--json"], {}),
        (["-v", "sync", "calendar", "--json"], {}),
        (["-v", "doctor"], {"NEXXT365_CLIENT_SECRET": WRONG_SECRET}),
        (["-v", "sync", "users"], {"NEXXT365_CLIENT_SECRET": WRONG_SECRET}),
        (["-v", "doctor"], {"NEXXT365_CLEARVOX_API_KEY": WRONG_KEY}),
        (["-v", "sync", "users", "--json"], {"NEXXT365_CLEARVOX_API_KEY": WRONG_KEY}),
    ]
    out = io.StringIO()
    codes = []
    for argv, overrides in runs:
        caplog.set_level(logging.DEBUG)  # everything, urllib3 and msal included
        codes.append(main(argv, out=out, settings=Settings(env={**env, **overrides}, local={})))
    assert codes[:2] == [0, 0]  # the good runs really ran
    assert 2 in codes[5:]  # and the bad ones really failed
    captured = capsys.readouterr()
    text = "\n".join([out.getvalue(), captured.out, captured.err, caplog.text])
    for secret in (world.secret, world.clearvox.api_key, WRONG_SECRET, WRONG_KEY):
        assert secret not in text
    assert "Bearer " not in text
    assert not JWT.search(text), "an access token leaked"


def test_telemetry_records_carry_no_secret_token_or_personal_data(world: World, azurite: Azurite) -> None:
    """The records sent to Application Insights: counts and codes only, also when runs fail and warnings fire."""
    from datetime import UTC, datetime, timedelta

    from shared.observe import daily_warnings
    from shared.sandbox.demo_tenant import DOMAIN, PEOPLE, seed
    from shared.state import Store
    from tests.integration.telemetry_capture import captured

    seed(world, datetime.now(UTC))
    env = world.env(azurite.connection_string)
    soon = (datetime.now(UTC) + timedelta(days=5)).date().isoformat()
    runs = [
        (["sync", "users"], {"NEXXT365_CLIENT_SECRET_EXPIRES": soon}),
        (["sync", "contacts"], {}),
        (["sync", "calendar"], {}),
        (["sync", "users"], {"NEXXT365_CLIENT_SECRET": WRONG_SECRET}),
        (["sync", "contacts"], {"NEXXT365_CLEARVOX_API_KEY": WRONG_KEY}),
    ]
    with captured() as records:
        codes = [main(argv, out=io.StringIO(), settings=Settings(env={**env, **extra}, local={})) for argv, extra in runs]
        tenant = Settings(env={**env, "NEXXT365_CLIENT_SECRET_EXPIRES": soon}, local={}).single_tenant()
        state = Store(azurite.connection_string).for_tenant(tenant.key)
        daily_warnings(tenant, state, now=datetime.now(UTC) + timedelta(days=2))
    assert codes[:3] == [0, 0, 0] and codes[3] == 2, codes
    assert len(records.dimensions("run")) == len(runs) and records.dimensions("warning")  # really recorded
    text = records.text()
    for secret in (world.secret, world.clearvox.api_key, WRONG_SECRET, WRONG_KEY):
        assert secret not in text
    assert "Bearer " not in text and not JWT.search(text)
    assert "@" not in text and DOMAIN not in text, "an email address reached the telemetry"
    for given, surname, *_ in PEOPLE:
        assert given not in text and surname not in text, f"the name of {given} {surname} reached the telemetry"
    for name in ("Ursula", "Bestaat", "Victor", "Tom", "Yara", "Pieter", "Klant"):
        assert name not in text
