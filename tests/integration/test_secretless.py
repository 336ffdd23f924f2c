"""Sign-in without a secret: the function app's managed identity is the app registration's credential.

The real azure-identity and msal code paths run: ManagedIdentityCredential asks the identity
endpoint simulator (IDENTITY_ENDPOINT + IDENTITY_HEADER, as in App Service and Functions) for a
token for api://AzureADTokenExchange, msal sends it as the client assertion, and the Graph
simulator checks it against the app's federated identity credential (issuer, subject, audience,
signature with the issuer's keys, expiry) as Entra does.
"""

from __future__ import annotations

import io
import logging
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from shared import cli, credentials
from shared.credentials import ManagedIdentityAssertion
from shared.errors import GraphAuthError
from shared.graph.client import Graph
from shared.sandbox.azurite import Azurite
from shared.sandbox.identity_sim import TOKEN_EXCHANGE, IdentitySim
from shared.sandbox.world import World
from shared.settings import Settings
from tests.integration.cli_run import nexxt365

pytestmark = pytest.mark.integration
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A world whose app registration has no secret; the process has the identity endpoint's variables."""
    with World(secretless=True) as w:
        assert w.identity_sim is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", w.verify)
        for name, value in w.identity_sim.env().items():
            monkeypatch.setenv(name, value)
        yield w


def identity_sim(world: World) -> IdentitySim:
    assert world.identity_sim is not None
    return world.identity_sim


def federate_wrongly(world: World, **wrong: str) -> None:
    """Replace the app's federated credential by one that differs from the identity token in one field."""
    sim, identity = identity_sim(world), world.identity
    assert identity is not None
    world.graph.federated_credentials[world.client_id].clear()
    world.graph.add_federated_credential(world.client_id, issuer=wrong.get("issuer", sim.issuer),
                                         subject=wrong.get("subject", identity.principal_id),
                                         audiences=(wrong.get("audience", TOKEN_EXCHANGE),))


# -- end to end -----------------------------------------------------------------------------

def test_users_sync_signs_in_with_the_managed_identity_and_no_secret(world: World, azurite: Azurite) -> None:
    world.graph.add_user(displayName="Jan de Vries", givenName="Jan", surname="de Vries", mail="jan@contoso.nl")
    env = world.env(azurite.connection_string)
    assert "NEXXT365_CLIENT_SECRET" not in env and not world.graph.apps[world.client_id].secrets

    code, out = nexxt365(world, azurite, "sync", "users")

    assert code == 0, out
    assert "created 1" in out
    assert [u["email"] for u in world.clearvox.users.values()] == ["jan@contoso.nl"]
    assert identity_sim(world).counts["token"] == 1
    assert world.graph.counts["token"] == 1


def test_a_wrong_subject_fails_with_exit_2_and_says_what_to_fix(world: World, azurite: Azurite) -> None:
    identity = world.identity
    assert identity is not None
    federate_wrongly(world, subject=identity.client_id)  # the usual mistake: the client ID instead of the principal ID
    world.graph.add_user(displayName="Jan", mail="jan@contoso.nl")

    code, out = nexxt365(world, azurite, "sync", "users")

    assert code == 2, out
    assert "AADSTS700213" in out
    assert "Set Subject to the Object (principal) ID - not the Client ID" in out
    assert f"App registrations > {world.client_id} > Certificates & secrets > Federated credentials" in out
    assert "Traceback" not in out and not world.clearvox.users


# -- doctor ---------------------------------------------------------------------------------

def test_doctor_names_the_sign_in_and_proves_the_identity_token_and_the_assertion(world: World, azurite: Azurite) -> None:
    code, out = nexxt365(world, azurite, "doctor")
    assert code == 0, out
    assert "OK   sign-in: managed identity (federated credential, no secret)" in out
    assert f"OK   managed identity token: identity {world.identity.client_id if world.identity else ''} got a token" in out
    assert "OK   Microsoft Entra token: Entra accepted the managed identity's assertion" in out
    assert "SKIP client secret expiry: no client secret" in out


def test_doctor_names_a_secret_sign_in(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    with World() as w:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", w.verify)
        out = io.StringIO()
        cli.main(["doctor"], out=out, settings=Settings(env=w.env(azurite.connection_string), local={}))
    assert "OK   sign-in: client secret" in out.getvalue()
    assert "managed identity token" not in out.getvalue()


FEDERATION_CASES = [
    ("wrong subject", {"subject": "00000000-0000-0000-0000-00000000abcd"}, "AADSTS700213",
     "Set Subject to the Object (principal) ID"),
    ("wrong audience", {"audience": "api://AzureADTokenExchangeChina"}, "AADSTS700212",
     "Set Audience to api://AzureADTokenExchange"),
    ("wrong issuer", {"issuer": "https://login.microsoftonline.com/11111111-1111-1111-1111-111111111111/v2.0"},
     "AADSTS700211", "the identity must be in the app registration's home tenant"),
]


@pytest.mark.parametrize(("name", "wrong", "code", "fix"), FEDERATION_CASES, ids=[c[0] for c in FEDERATION_CASES])
def test_doctor_says_which_part_of_the_federated_credential_is_wrong(world: World, azurite: Azurite, name: str,
                                                                     wrong: dict[str, str], code: str, fix: str) -> None:
    federate_wrongly(world, **wrong)
    exit_code, out = nexxt365(world, azurite, "doctor")
    assert exit_code == 2, out
    assert "OK   managed identity token" in out
    failed = next(line for line in out.splitlines() if "Microsoft Entra token" in line)
    assert "FAIL" in failed and code in failed and fix in failed


def test_doctor_when_the_app_has_no_federated_credential(world: World, azurite: Azurite) -> None:
    world.graph.federated_credentials[world.client_id].clear()
    exit_code, out = nexxt365(world, azurite, "doctor")
    assert exit_code == 2
    assert "AADSTS70021)" in out and "has no federated identity credential that trusts the managed identity" in out


def test_doctor_when_the_identity_is_not_assigned_to_the_app(world: World, azurite: Azurite) -> None:
    unknown = str(uuid.uuid4())
    exit_code, out = nexxt365(world, azurite, "doctor", NEXXT365_MANAGED_IDENTITY_CLIENT_ID=unknown)
    assert exit_code == 2
    line = next(line for line in out.splitlines() if "managed identity token" in line)
    assert "FAIL" in line and f"gave no token for identity {unknown}" in line and "User assigned" in line
    assert "SKIP Microsoft Entra token: needs the managed identity's token" in out


def test_doctor_when_the_identity_endpoint_cannot_be_reached(world: World, azurite: Azurite,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")  # discard port: nothing listens
    monkeypatch.setattr(credentials, "IDENTITY_RETRIES", 0)  # no real back-off waits in a test
    exit_code, out = nexxt365(world, azurite, "doctor")
    assert exit_code == 2
    line = next(line for line in out.splitlines() if "managed identity token" in line)
    assert "FAIL" in line and "http://127.0.0.1:9/msi/token (IDENTITY_ENDPOINT) cannot be reached" in line


def test_outside_azure_the_message_says_there_is_no_identity_endpoint(world: World, azurite: Azurite,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("IDENTITY_HEADER")
    code, out = nexxt365(world, azurite, "sync", "users")
    assert code == 2
    assert "IDENTITY_ENDPOINT and IDENTITY_HEADER are not set" in out


# -- the identity token is cached and refreshed before it expires ----------------------------

def test_the_identity_token_is_cached_and_refreshed_before_it_expires(world: World) -> None:
    sim, identity = identity_sim(world), world.identity
    assert identity is not None
    # below msal's own 5-minute cache floor, so that every refresh of ours reaches the endpoint
    sim.token_lifetime = 250
    now = [0.0]
    assertion = ManagedIdentityAssertion(identity.client_id, clock=lambda: now[0], margin=120)
    first = assertion()
    expires = assertion.expires_on
    now[0] = expires - 121
    assert assertion() == first and assertion() == first
    assert sim.counts["token"] == 1
    now[0] = expires - 120  # within the margin: a new token
    second = assertion()
    assert second != first and sim.counts["token"] == 2
    assert assertion.expires_on >= expires


def test_one_identity_token_serves_many_sign_ins(world: World) -> None:
    for _ in range(3):  # three runs that each prove their credentials (no Graph token reuse)
        g = Graph(world.tenant, verify=world.verify, reuse_tokens=False)
        try:
            assert g.token()
        finally:
            g.close()
    assert world.graph.counts["token"] == 3
    assert identity_sim(world).counts["token"] == 1


def test_a_token_from_an_untrusted_issuer_key_is_refused(world: World) -> None:
    """Same issuer name, another key: the signature check fails (AADSTS50013)."""
    world.graph.issuer_keys[identity_sim(world).issuer] = {identity_sim(world).kid: IdentitySim().public_keys().popitem()[1]}
    g = Graph(world.tenant, verify=world.verify, reuse_tokens=False)
    with pytest.raises(GraphAuthError) as err:
        g.token()
    g.close()
    assert err.value.aadsts == "50013" and "could not verify the signature" in str(err.value)


def test_an_expired_identity_token_is_refused_as_entra_does(world: World) -> None:
    """The Graph simulator checks the assertion's expiry (AADSTS700024), here with msal sending a stale token."""
    import msal

    sim, identity = identity_sim(world), world.identity
    assert identity is not None
    stale = sim.token_for(identity, issued=int(time.time()) - sim.token_lifetime - 3600)["access_token"]
    app = msal.ConfidentialClientApplication(world.client_id, client_credential={"client_assertion": lambda: stale},
                                             authority=world.graph.authority, instance_discovery=False,
                                             validate_authority=False)
    result = app.acquire_token_for_client(scopes=[f"{world.graph.url}/.default"])
    assert result.get("error_codes") == [700024], result
    fresh = sim.token_for(identity)["access_token"]
    app = msal.ConfidentialClientApplication(world.client_id, client_credential={"client_assertion": lambda: fresh},
                                             authority=world.graph.authority, instance_discovery=False,
                                             validate_authority=False)
    assert "access_token" in app.acquire_token_for_client(scopes=[f"{world.graph.url}/.default"])


def test_no_identity_token_or_header_in_logs_or_output(world: World, azurite: Azurite, capsys: pytest.CaptureFixture[str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    world.graph.add_user(displayName="Jan", givenName="Jan", surname="Jansen", mail="jan@contoso.nl")
    out = io.StringIO()
    env = world.env(azurite.connection_string)
    codes = []
    for argv in (["-v", "doctor"], ["-v", "sync", "users", "--json"]):
        caplog.set_level(logging.DEBUG)  # msal, azure-identity and urllib3 included
        codes.append(cli.main(argv, out=out, settings=Settings(env=env, local={})))
    federate_wrongly(world, subject="00000000-0000-0000-0000-00000000abcd")
    world.graph.expire_access_tokens()  # so that the next run must sign in again
    caplog.set_level(logging.DEBUG)
    codes.append(cli.main(["-v", "sync", "users"], out=out, settings=Settings(env=env, local={})))
    assert codes == [0, 0, 2]
    captured = capsys.readouterr()
    text = "\n".join([out.getvalue(), captured.out, captured.err, caplog.text])
    assert identity_sim(world).header not in text
    assert "Bearer " not in text
    assert not JWT.search(text), "a token leaked"
