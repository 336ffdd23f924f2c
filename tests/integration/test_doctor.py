"""`nexxt365 doctor`: a precise message for each misconfiguration, exit 0 only when all pass."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import date, timedelta

import pytest

from shared.cli import main
from shared.sandbox.azurite import Azurite
from shared.sandbox.world import World
from shared.settings import Settings
from tests.integration.cli_run import nexxt365


def doctor(world: World, azurite: Azurite, **env: str) -> tuple[int, str]:
    return nexxt365(world, azurite, "doctor", **env)


def test_all_checks_pass_on_a_good_configuration(world: World, azurite: Azurite) -> None:
    world.graph.add_user(displayName="Jan", mail="jan@contoso.nl")
    world.graph.add_user(displayName="Geen Mail")
    expires = (date.today() + timedelta(days=400)).isoformat()
    code, text = doctor(world, azurite, NEXXT365_CLIENT_SECRET_EXPIRES=expires)
    assert code == 0, text
    assert "FAIL" not in text
    assert "2 users, 1 with a valid email; 1 without an email" in text
    assert "all checks passed" in text


Breaker = Callable[[World], dict[str, str]]
CASES: list[tuple[str, Breaker, str]] = [
    ("wrong secret", lambda w: {"NEXXT365_CLIENT_SECRET": "not-the-secret"}, "The client secret is wrong (AADSTS7000215)"),
    ("expired secret", lambda w: (w.graph.expire_app_secrets(w.client_id), {})[1], "The client secret has expired (AADSTS7000222)"),
    ("unknown tenant", lambda w: {"NEXXT365_TENANT": "11111111-2222-3333-4444-555555555555"}, "was not found (AADSTS90002)"),
    ("app not in tenant", lambda w: {"NEXXT365_CLIENT_ID": "00000000-0000-0000-0000-000000000009"}, "was not found in tenant"),
    ("no admin consent", lambda w: (w.graph.set_app_roles(w.client_id, []), {})[1], "User.Read.All is not granted"),
    ("missing Contacts.Read", lambda w: (w.graph.set_app_roles(w.client_id, ["User.Read.All", "Calendars.Read"]), {})[1],
     "Contacts.Read is not granted. Fix: Entra ID > App registrations"),
    ("wrong ClearVox key", lambda w: {"NEXXT365_CLEARVOX_API_KEY": "wrong-key"}, "NEXXT365_CLEARVOX_API_KEY"),
    ("unknown account", lambda w: {"NEXXT365_CLEARVOX_ACCOUNT": "99999"}, "NEXXT365_CLEARVOX_ACCOUNT"),
    ("no licence", lambda w: (setattr(w.clearvox, "office365", False), {})[1], "Office 365"),
    ("secret expired by date", lambda w: {"NEXXT365_CLIENT_SECRET_EXPIRES": "2020-01-01"}, "expired on 2020-01-01"),
]


@pytest.mark.parametrize(("name", "break_it", "message"), CASES, ids=[c[0] for c in CASES])
def test_each_misconfiguration_gets_its_precise_message(world: World, azurite: Azurite, name: str, break_it: Breaker,
                                                         message: str) -> None:
    code, text = doctor(world, azurite, **break_it(world))
    assert code == 2, text
    fail_lines = [line for line in text.splitlines() if "FAIL" in line]
    assert any(message in line for line in fail_lines), text
    assert "Traceback" not in text
    assert world.secret not in text and world.clearvox.api_key not in text


def test_secret_expiring_within_30_days_is_a_warning_not_a_failure(world: World, azurite: Azurite) -> None:
    soon = (date.today() + timedelta(days=10)).isoformat()
    code, text = doctor(world, azurite, NEXXT365_CLIENT_SECRET_EXPIRES=soon)
    assert code == 0, text
    assert "WARN client secret expiry" in text and "rotate it now" in text


def test_doctor_json(world: World, azurite: Azurite) -> None:
    out = io.StringIO()
    settings = Settings(env=world.env(azurite.connection_string), local={})
    assert main(["doctor", "--json"], out=out, settings=settings) == 0
    doc = json.loads(out.getvalue())
    assert {c["check"] for c in doc["checks"]} >= {"Microsoft Entra token", "permission Contacts.Read", "ClearVox Office 365 licence"}


def test_a_missing_setting_exits_2_with_the_setting_named(world: World, azurite: Azurite, capsys: pytest.CaptureFixture[str]) -> None:
    env = world.env(azurite.connection_string)
    del env["NEXXT365_CLIENT_ID"]
    out = io.StringIO()
    code = main(["doctor"], out=out, settings=Settings(env=env, local={}))
    assert code == 2
    assert "FAIL settings: NEXXT365_CLIENT_ID is not set" in out.getvalue()


def test_group_scope_needs_group_member_read_all(world: World, azurite: Azurite) -> None:
    group = "22222222-3333-4444-5555-666666666666"
    code, text = doctor(world, azurite, NEXXT365_USERS_GROUP=group)
    assert code == 2
    assert "GroupMember.Read.All to read the group's members" in text
    world.graph.set_app_roles(world.client_id, ["User.Read.All", "Contacts.Read", "Calendars.Read", "GroupMember.Read.All"])
    code, text = doctor(world, azurite, NEXXT365_USERS_GROUP=group)
    assert code == 0, text


def test_valid_emails_are_counted_with_the_users_sync_rule(world: World, azurite: Azurite) -> None:
    from shared.sync.users.rules import is_valid_email

    mails = ["jan@contoso.nl", "jan..de.vries@contoso.nl", "piet@contoso.n", "a@b"]
    for i, mail in enumerate(mails):
        world.graph.add_user(displayName=f"User {i}", mail=mail)
    _, text = doctor(world, azurite)
    valid = sum(is_valid_email(m) for m in mails)
    assert valid == 1
    assert f"{len(mails)} users, {valid} with a valid email" in text


def test_contract_checks_run_only_with_the_flag(world: World, azurite: Azurite) -> None:
    settings = Settings(env=world.env(azurite.connection_string), local={})
    plain, with_contract = io.StringIO(), io.StringIO()
    main(["doctor"], out=plain, settings=settings)
    main(["doctor", "--contract"], out=with_contract, settings=settings)
    assert "ClearVox contract" not in plain.getvalue()
    assert "ClearVox contract" in with_contract.getvalue()


def test_doctor_lists_each_company_mailbox_and_whether_its_contacts_can_be_read(world: World, azurite: Azurite) -> None:
    world.graph.add_user(displayName="Receptie", mail="receptie@contoso.nl")
    world.graph.add_user(displayName="Info", mail="info@contoso.nl", mailbox_in_scope=False)
    code, text = doctor(world, azurite, NEXXT365_COMPANY_CONTACTS="receptie@contoso.nl,info@contoso.nl")
    assert code == 2
    assert "OK   company contacts receptie@contoso.nl: contacts can be read" in text
    assert "FAIL company contacts info@contoso.nl" in text and "Fix" in text


def test_doctor_shows_a_sync_that_another_run_holds(world: World, azurite: Azurite) -> None:
    from shared.state import Store

    Store(azurite.connection_string).for_tenant(world.tenant.key).acquire_lease("contacts", timedelta(minutes=3))
    _, text = doctor(world, azurite)
    assert "WARN contacts sync lease: a run holds the lease since" in text and "not run (exit 3)" in text
