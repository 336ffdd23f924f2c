"""The ClearVox client against hostile or broken answers: retries that could duplicate,
paging that could run away, secrets echoed back, control characters, malformed JSON."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from shared.clearvox import ClearVox
from shared.errors import ClearVoxRejected, ClearVoxUnavailable, ConfigError
from shared.sandbox.clearvox_sim import ClearVoxSim
from shared.sandbox.server import Response
from shared.sandbox.tls import ca_bundle_path

KEY = "cv-key-3b7f1e02-do-not-leak"
ACCOUNT = "10001"


@pytest.fixture
def sim() -> Iterator[ClearVoxSim]:
    with ClearVoxSim(account_id=ACCOUNT, api_key=KEY) as server:
        yield server


@pytest.fixture
def cv(sim: ClearVoxSim) -> Iterator[ClearVox]:
    with ClearVox(sim.url, KEY, ACCOUNT, verify=ca_bundle_path(), backoff=0.01) as c:
        yield c


def gateway_timeout(_: Response) -> Response:
    return Response(504, {"error": {"code": "gateway_timeout", "message": "upstream timed out"}})


def posts(sim: ClearVoxSim) -> int:
    return len(sim.requests_to(lambda r: r.method == "POST"))


# -- a create is never blindly retried ------------------------------------------------

def test_a_create_answered_504_after_the_pbx_created_it_is_sent_once(cv: ClearVox, sim: ClearVoxSim) -> None:
    owner = sim.add_user(first_name="Ann", last_name="Bos", email="ann@example.nl")
    sim.rewrite(gateway_timeout, count=5, match=lambda r: r.method == "POST")
    with pytest.raises(ClearVoxUnavailable) as err:
        cv.create_contact(str(owner["id"]), {"display_name": "Piet", "external_id": "g-1"})
    assert posts(sim) == 1
    assert len(sim.contacts_of(str(owner["id"]))) == 1  # created once: the next run reconciles, no duplicate
    assert "retr" not in str(err.value)
    assert err.value.status == 504


def test_a_create_is_retried_on_429_because_the_pbx_did_not_process_it(cv: ClearVox, sim: ClearVoxSim) -> None:
    owner = sim.add_user(first_name="Ann", last_name="Bos", email="ann@example.nl")
    sim.inject(429, count=1, retry_after=0, match=lambda r: r.method == "POST")
    cv.create_contact(str(owner["id"]), {"display_name": "Piet", "external_id": "g-1"})
    assert posts(sim) == 2
    assert len(sim.contacts_of(str(owner["id"]))) == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_idempotent_methods_are_still_retried_on_503(cv: ClearVox, sim: ClearVoxSim, method: str) -> None:
    owner = sim.add_user(first_name="Ann", last_name="Bos", email="ann@example.nl")
    contact = sim.add_contact(str(owner["id"]), display_name="Piet")
    sim.inject(503, count=1, match=lambda r: r.method == method)
    calls = {
        "GET": lambda: cv.get_contact(str(contact["id"])),
        "PUT": lambda: cv.set_status(str(owner["id"]), "busy"),
        "PATCH": lambda: cv.update_contact(str(contact["id"]), {"display_name": "Jan"}),
        "DELETE": lambda: cv.delete_contact(str(contact["id"])),
    }
    calls[method]()
    assert [r.status for r in sim.requests_to(lambda r: r.method == method)][:2] == [503, 200 if method != "DELETE" else 204]


def test_the_message_counts_the_retries_it_made(sim: ClearVoxSim) -> None:
    sim.inject(503, count=10)
    with ClearVox(sim.url, KEY, ACCOUNT, verify=ca_bundle_path(), backoff=0.01, retries=2) as c, \
            pytest.raises(ClearVoxUnavailable) as err:
        c.get_account()
    assert "after 2 retries" in str(err.value)


# -- paging never trusts meta.total ---------------------------------------------------

def huge_total(resp: Response) -> Response:
    resp.body["meta"]["total"] = 10**12
    return resp


def test_a_hostile_total_does_not_size_the_page_requests(cv: ClearVox, sim: ClearVoxSim) -> None:
    for n in range(150):
        sim.add_user(first_name="U", last_name=str(n), email=f"u{n}@example.nl")
    sim.rewrite(huge_total, count=10**6, match=lambda r: r.method == "GET")
    assert len(cv.list_users()) == 150
    assert len(list(cv.iter_users())) == 150
    assert len(sim.requests_to()) <= 1 + 8 + 2  # a wave of at most 8 pages after the first, not 10**10 requests


def test_paging_stops_at_a_hard_cap_when_pages_never_end(cv: ClearVox, sim: ClearVoxSim) -> None:
    sim.add_user(first_name="U", last_name="0", email="u0@example.nl")

    def endless(resp: Response) -> Response:
        resp.body["data"] = [{**sim.users[next(iter(sim.users))], "id": str(id(resp))}] * 100
        return resp

    sim.rewrite(endless, count=10**6, match=lambda r: r.method == "GET")
    import shared.clearvox as module
    cap = module.MAX_PAGES
    module.MAX_PAGES = 5
    try:
        with pytest.raises(ClearVoxRejected) as err:
            list(cv.iter_users())
        with pytest.raises(ClearVoxRejected):
            cv.list_users()
    finally:
        module.MAX_PAGES = cap
    assert "pages" in str(err.value)


# -- secrets echoed back, credentials in the URL ----------------------------------------

def test_a_key_echoed_in_every_error_field_reaches_no_message_or_log(cv: ClearVox, sim: ClearVoxSim,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = {"error": {"code": f"bad_{KEY}", "message": f"key {KEY} refused",
                      "fields": {f"x{KEY}": f"value {KEY}"}}}
    for status in (400, 409, 422, 500):
        sim.inject(status, body=echo)
        with pytest.raises(Exception) as err:
            cv.get_account()
        texts = [str(err.value), repr(getattr(err.value, "code", "")), repr(getattr(err.value, "fields", ""))]
        assert all(KEY not in t for t in texts), texts
    assert KEY not in caplog.text


@pytest.mark.parametrize("url", ["https://admin:hunter2x@pbx.example.nl", "https://hunter2x@pbx.example.nl"])
def test_credentials_in_the_clearvox_url_are_refused_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        ClearVox(url, KEY, ACCOUNT)
    assert "NEXXT365_CLEARVOX_URL" in str(err.value)
    assert "hunter2x" not in str(err.value)


# -- control characters never reach ClearVox ---------------------------------------------

def test_control_characters_are_stripped_from_everything_sent(cv: ClearVox, sim: ClearVoxSim) -> None:
    hostile = "\x1b]0;owned\x07\x1b[2JJan\x00\n\tde\x7f \x9bVries\r"
    user = cv.create_user({"first_name": hostile, "last_name": "Bos", "email": "jan@example.nl",
                           "display_name": hostile})
    cv.update_user(user.id, {"job_title": hostile})
    contact = cv.create_contact(user.id, {"display_name": hostile, "emails": [hostile + "@x.nl"]})
    cv.update_contact(contact.id, {"company": hostile})
    for record in sim.write_log:
        text = str(record.body)
        assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in str(record.body)), text
    assert sim.users[user.id]["display_name"] == "]0;owned[2JJan  de Vries "


# -- malformed answers -----------------------------------------------------------------

@pytest.mark.parametrize("change", [
    lambda r: Response(200, b"<html>gateway</html>"),
    lambda r: Response(200, b"null"),
    lambda r: Response(200, {"data": "users"}),
    lambda r: Response(200, {"data": [{"first_name": "no id"}]}),
    lambda r: Response(200, {"data": [17]}),
    lambda r: Response(200, {"data": [], "meta": "x"}),
])
def test_a_malformed_list_answer_is_rejected_saying_what_came(cv: ClearVox, sim: ClearVoxSim, change: object) -> None:
    sim.add_user(first_name="U", last_name="0", email="u0@example.nl")
    sim.rewrite(change, count=10)  # type: ignore[arg-type]
    with pytest.raises(ClearVoxRejected) as err:
        cv.list_users()
    assert "ClearVox" in str(err.value)


@pytest.mark.parametrize("body", [{"data": {"name": "no id"}}, {"data": {"id": None}}, {"data": {"id": "1", "status": 3}}])
def test_an_item_without_id_or_with_wrong_types_is_rejected(cv: ClearVox, sim: ClearVoxSim, body: object) -> None:
    owner = sim.add_user(first_name="U", last_name="0", email="u0@example.nl")
    sim.rewrite(lambda r: Response(200, body), count=10)
    with pytest.raises(ClearVoxRejected) as err:
        cv.get_contact("1") if "status" not in str(body) else cv.get_status(str(owner["id"]))
    assert "ClearVox" in str(err.value)
