"""`nexxt365 demo` runs the whole connector against the sandbox and shows the guide's cases."""

from __future__ import annotations

import io
import os

import pytest

from shared.cli import main


def test_demo_shows_every_case_and_exits_0() -> None:
    out = io.StringIO()
    assert main(["demo"], out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "Sign-in: client secret" in text
    assert "all checks passed" in text
    assert "no email in Entra contact info" in text
    assert "exists in ClearVox: paste Object-ID" in text
    assert "guest user" in text and "disabled in Entra" in text
    assert "ursula@voorbeeld.nl" in text  # the unlinked report
    assert "no usable phone number" in text
    assert "public contact kept" in text
    meetings, after = text.split("(meetings running)")[1].split("(meetings over)")
    assert "Anna     Bezig" in meetings and "Daan     Afwezig" in meetings and "Chantal  Werkt ergens anders" in meetings
    assert "Emma     Beschikbaar" in meetings  # cancelled meeting
    assert "Anna     Beschikbaar" in after and "Chantal  Beschikbaar" in after
    status = text.split("=== nexxt365 status")[1].split("=== summary")[0]
    assert ": healthy; secret expires" in status  # the demo customer
    assert "tenant fabrikam: needs attention" in status and "ATTENTION the client secret expires on" in status
    assert "1 of 2 customer(s) healthy" in status and "(exit code 1)" in status
    after, teams = after.split("(Gert in a Teams call)")
    assert "Gert     Beschikbaar" in after and "Gert     Bezig" in teams
    assert "demo finished: everything worked" in text


def test_demo_signs_in_without_a_secret_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXXT365_DEMO_SIGN_IN", "managed-identity")
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    out = io.StringIO()
    assert main(["demo"], out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "Sign-in: managed identity (federated credential, no secret)" in text
    assert "OK   managed identity token" in text and "Entra accepted the managed identity's assertion" in text
    assert "SKIP client secret expiry: no client secret" in text
    assert "demo finished: everything worked" in text
    assert "IDENTITY_ENDPOINT" not in os.environ  # only while the demo runs


def test_an_unknown_demo_sign_in_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXXT365_DEMO_SIGN_IN", "password")
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    assert main(["demo"], out=io.StringIO()) == 2
    assert "NEXXT365_DEMO_SIGN_IN 'password' is not one of: secret, managed-identity" in err.getvalue()
