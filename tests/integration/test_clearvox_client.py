"""The ClearVox client against the simulator over real HTTPS.

What the rest of the connector relies on: domain objects in and out, paging
through all users, case-insensitive email look-up, only the given fields sent,
visibility never sent, every failure a typed error with status and code and a
message that says what to fix, throttling and outages retried, and the API key
never in a message or a log line.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.clearvox import Account, ClearVox, CvContact, CvStatus, CvUser, PhoneNumber
from shared.errors import (
    AccountNotFound,
    AdminFix,
    ClearVoxError,
    ClearVoxForbidden,
    ClearVoxNotFound,
    ClearVoxRejected,
    ClearVoxUnauthorized,
    ClearVoxUnavailable,
    ConfigError,
    EmailTaken,
    ItemError,
    LicenseRequired,
    ValidationFailed,
)
from shared.sandbox.clearvox_sim import ClearVoxSim
from shared.sandbox.tls import ca_bundle_path

KEY = "cv-key-9d2e7c51-do-not-leak"
ACCOUNT = "10001"
OID = "6f1c2a7e-1d2b-4c3d-9e8f-0a1b2c3d4e5f"
WORK = PhoneNumber("work", "+31201234567")


@pytest.fixture
def sim() -> Iterator[ClearVoxSim]:
    with ClearVoxSim(account_id=ACCOUNT, api_key=KEY, foreign_accounts={"20002"}) as server:
        yield server


def client(sim: ClearVoxSim, *, account: str = ACCOUNT, key: str = KEY, **kwargs: object) -> ClearVox:
    kwargs.setdefault("verify", ca_bundle_path())
    kwargs.setdefault("backoff", 0.01)
    return ClearVox(sim.url, key, account, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def cv(sim: ClearVoxSim) -> Iterator[ClearVox]:
    with client(sim) as c:
        yield c


@pytest.fixture
def alice(sim: ClearVoxSim) -> dict[str, object]:
    return sim.add_user(first_name="Alice", last_name="Jansen", email="Alice.Jansen@example.nl",
                        external_application_id=OID, mobile_number="+31612345678")


def bodies(sim: ClearVoxSim, method: str) -> list[object]:
    return [w.body for w in sim.write_log if w.method == method]


# -- construction ---------------------------------------------------------------------

def test_the_base_url_may_be_given_with_or_without_api_1_and_a_trailing_slash(sim: ClearVoxSim) -> None:
    for url in (sim.url, sim.url + "/", sim.url + "/api/1", sim.url + "/api/1/"):
        with ClearVox(url, KEY, ACCOUNT, verify=ca_bundle_path()) as c:
            assert c.base_url == sim.url + "/api/1"
            assert c.get_account().id == ACCOUNT


@pytest.mark.parametrize(("url", "key", "account", "setting"), [
    ("http://pbx.example.nl", KEY, ACCOUNT, "NEXXT365_CLEARVOX_URL"),
    ("pbx.example.nl", KEY, ACCOUNT, "NEXXT365_CLEARVOX_URL"),
    ("https://pbx.example.nl", "", ACCOUNT, "NEXXT365_CLEARVOX_API_KEY"),
    ("https://pbx.example.nl", KEY, " ", "NEXXT365_CLEARVOX_ACCOUNT"),
])
def test_a_bad_setting_is_a_config_error_naming_it(url: str, key: str, account: str, setting: str) -> None:
    with pytest.raises(ConfigError, match=setting) as err:
        ClearVox(url, key, account)
    assert KEY not in str(err.value)


def test_tls_verification_cannot_be_turned_off() -> None:
    with pytest.raises(ValueError, match="cannot be turned off"):
        ClearVox("https://pbx.example.nl", KEY, ACCOUNT, verify=False)


def test_repr_names_url_and_account_but_not_the_key(cv: ClearVox) -> None:
    assert ACCOUNT in repr(cv) and KEY not in repr(cv)


# -- account and users ----------------------------------------------------------------

def test_get_account_reports_name_and_licence(cv: ClearVox, sim: ClearVoxSim) -> None:
    assert cv.get_account() == Account(id=ACCOUNT, name="Voorbeeld B.V.", office365=True)
    sim.office365 = False
    assert cv.get_account().office365 is False


def test_users_are_read_100_per_page_until_the_total_is_reached(cv: ClearVox, sim: ClearVoxSim) -> None:
    for i in range(250):
        sim.add_user(first_name="U", last_name=str(i), email=f"u{i}@example.nl")
    sim.clear_log()
    users = cv.list_users()
    assert [u.email for u in users] == [f"u{i}@example.nl" for i in range(250)]
    assert all(isinstance(u, CvUser) for u in users)
    # the first page gives the total; the other pages are fetched in parallel
    assert sorted((r.query["page"], r.query["per_page"]) for r in sim.requests_to()) == [("1", "100"), ("2", "100"),
                                                                                         ("3", "100")]
    assert [u.email for u in cv.iter_users()] == [f"u{i}@example.nl" for i in range(250)]


def test_an_empty_account_lists_no_users_in_one_request(cv: ClearVox, sim: ClearVoxSim) -> None:
    assert cv.list_users() == []
    assert len(sim.requests_to()) == 1


def test_find_user_by_email_ignores_case(cv: ClearVox, alice: dict[str, object]) -> None:
    found = cv.find_user_by_email("alice.jansen@EXAMPLE.nl")
    assert found is not None and found.id == alice["id"] and found.email == "Alice.Jansen@example.nl"
    assert cv.find_user_by_email("nobody@example.nl") is None


def test_find_user_by_external_id_finds_the_linked_user(cv: ClearVox, alice: dict[str, object]) -> None:
    assert cv.find_user_by_external_id(OID) == cv.get_user(str(alice["id"]))
    assert cv.find_user_by_external_id(OID.upper()) is None
    assert [u.id for u in cv.iter_users(external_application_id=OID)] == [alice["id"]]


def test_get_user_maps_every_field(cv: ClearVox, alice: dict[str, object]) -> None:
    assert cv.get_user(str(alice["id"])) == CvUser(
        id=str(alice["id"]), first_name="Alice", last_name="Jansen", email="Alice.Jansen@example.nl",
        external_application_id=OID, active=True, display_name="Alice Jansen", phone_number=None,
        mobile_number="+31612345678", job_title=None, department=None, language="nl")


def test_create_user_sends_the_given_fields_and_leaves_out_none(cv: ClearVox, sim: ClearVoxSim) -> None:
    user = cv.create_user({"first_name": "Carla", "last_name": "Bakker", "email": "carla@example.nl",
                           "external_application_id": OID, "job_title": "Sales", "department": None,
                           "language": "en", "phone_number": "+31201112233"})
    assert (user.first_name, user.email, user.external_application_id, user.language) == (
        "Carla", "carla@example.nl", OID, "en")
    assert bodies(sim, "POST") == [{"first_name": "Carla", "last_name": "Bakker", "email": "carla@example.nl",
                                    "external_application_id": OID, "job_title": "Sales", "language": "en",
                                    "phone_number": "+31201112233"}]
    assert (sim.user_by_email("CARLA@example.nl") or {}).get("id") == user.id  # found whatever the case of the email


def test_create_user_refuses_an_unknown_field_before_any_request(cv: ClearVox, sim: ClearVoxSim) -> None:
    with pytest.raises(ValueError, match="unknown field"):
        cv.create_user({"first_name": "A", "last_name": "B", "email": "a@example.nl", "active": True})
    assert sim.requests_to() == []


def test_update_user_sends_only_the_given_keys(cv: ClearVox, sim: ClearVoxSim, alice: dict[str, object]) -> None:
    user = cv.update_user(str(alice["id"]), {"job_title": "Directeur", "mobile_number": None})
    assert (user.job_title, user.mobile_number, user.first_name) == ("Directeur", None, "Alice")
    assert bodies(sim, "PATCH") == [{"job_title": "Directeur", "mobile_number": None}]
    assert cv.update_user(str(alice["id"]), {"active": False}).active is False
    with pytest.raises(ValueError, match="unknown field"):
        cv.update_user(str(alice["id"]), {"id": "1"})


# -- status ---------------------------------------------------------------------------

def test_set_status_is_recorded_as_changed_by_the_api(cv: ClearVox, sim: ClearVoxSim, alice: dict[str, object]) -> None:
    user_id = str(alice["id"])
    sim.set_user_status(user_id, "dnd", changed_by="user")
    before = cv.get_status(user_id)
    assert (before.status, before.changed_by) == ("dnd", "user")
    after = cv.set_status(user_id, "away")
    assert isinstance(after, CvStatus) and (after.status, after.changed_by) == ("away", "api")
    assert after.changed_at.tzinfo is not None and abs(datetime.now(UTC) - after.changed_at) < timedelta(minutes=1)
    assert cv.get_status(user_id) == after and sim.status_of(user_id) == "away"


# -- contacts -------------------------------------------------------------------------

def test_a_created_contact_is_private_and_round_trips(cv: ClearVox, sim: ClearVoxSim, alice: dict[str, object]) -> None:
    contact = cv.create_contact(str(alice["id"]), {
        "external_id": "graph-1", "first_name": "Piet", "last_name": "Pietersen", "display_name": "Piet Pietersen",
        "company": None, "emails": ("piet@example.nl",), "phone_numbers": [WORK, PhoneNumber("mobile", "+31611122233")]})
    assert contact == CvContact(id=contact.id, owner_user_id=str(alice["id"]), visibility="private",
                                display_name="Piet Pietersen", external_id="graph-1", first_name="Piet",
                                last_name="Pietersen", emails=("piet@example.nl",),
                                phone_numbers=(WORK, PhoneNumber("mobile", "+31611122233")))
    assert cv.get_contact(contact.id) == contact
    assert "company" not in bodies(sim, "POST")[0]  # type: ignore[operator]


def test_contacts_can_be_listed_and_filtered_by_external_id(cv: ClearVox, sim: ClearVoxSim,
                                                            alice: dict[str, object]) -> None:
    owner = str(alice["id"])
    by_hand = sim.add_contact(owner, display_name="Receptie", phone_numbers=[WORK])
    for i in range(120):
        sim.add_contact(owner, external_id=f"graph-{i}", display_name=f"C{i}", phone_numbers=[WORK])
    contacts = list(cv.iter_contacts(owner))
    assert len(contacts) == 121 and contacts[0].id == by_hand["id"] and contacts[0].external_id is None
    assert [c.display_name for c in cv.iter_contacts(owner, external_id="graph-7")] == ["C7"]


def test_update_contact_sends_no_visibility_and_keeps_a_public_contact_public(
        cv: ClearVox, sim: ClearVoxSim, alice: dict[str, object]) -> None:
    contact_id = str(sim.add_contact(str(alice["id"]), external_id="graph-1", display_name="Piet",
                                     phone_numbers=[WORK])["id"])
    sim.make_contact_public(contact_id)
    updated = cv.update_contact(contact_id, {"display_name": "Piet P.", "job_title": None})
    assert (updated.display_name, updated.visibility) == ("Piet P.", "public")
    assert bodies(sim, "PATCH") == [{"display_name": "Piet P.", "job_title": None}]


@pytest.mark.parametrize("fields", [
    {"display_name": "X", "visibility": "private"},
    {"display_name": "X", "owner_user_id": "1"},
])
def test_contact_writes_refuse_visibility_and_unknown_fields(cv: ClearVox, sim: ClearVoxSim,
                                                             alice: dict[str, object], fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        cv.create_contact(str(alice["id"]), fields)
    with pytest.raises(ValueError):
        cv.update_contact("5001", fields)
    assert sim.requests_to() == []


def test_phone_numbers_must_be_phone_number_values(cv: ClearVox, alice: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="PhoneNumber"):
        cv.create_contact(str(alice["id"]), {"display_name": "X", "phone_numbers": [{"type": "work", "number": "+31"}]})


def test_delete_contact_and_deleting_it_again_is_not_found(cv: ClearVox, sim: ClearVoxSim,
                                                          alice: dict[str, object]) -> None:
    contact_id = str(sim.add_contact(str(alice["id"]), display_name="Weg", phone_numbers=[WORK])["id"])
    cv.delete_contact(contact_id)
    assert contact_id not in sim.contacts
    with pytest.raises(ClearVoxNotFound) as err:
        cv.delete_contact(contact_id)
    assert (err.value.status, err.value.code) == (404, "not_found")
    assert contact_id in str(err.value)


# -- typed errors ---------------------------------------------------------------------

def test_a_wrong_key_is_unauthorized_with_the_setting_to_fix(sim: ClearVoxSim) -> None:
    with client(sim, key="a-revoked-key") as c, pytest.raises(ClearVoxUnauthorized) as err:
        c.get_account()
    assert (err.value.status, err.value.code, err.value.exit_code) == (401, "unauthorized", 2)
    assert str(err.value).startswith("ClearVox rejected the API key: check NEXXT365_CLEARVOX_API_KEY")
    assert "a-revoked-key" not in str(err.value)


def test_no_licence_refuses_user_creation_with_what_to_ask_customer_care(cv: ClearVox, sim: ClearVoxSim) -> None:
    sim.office365 = False
    with pytest.raises(LicenseRequired) as err:
        cv.create_user({"first_name": "A", "last_name": "B", "email": "a@example.nl"})
    assert (err.value.status, err.value.code, err.value.exit_code) == (403, "license_required", 2)
    assert str(err.value) == (f"the account {ACCOUNT} has no active Office 365 licence: ask ClearVox Customer Care "
                              f"to activate the Office 365 koppeling for Company ID {ACCOUNT}")


def test_another_companys_account_is_forbidden(sim: ClearVoxSim) -> None:
    with client(sim, account="20002") as c, pytest.raises(ClearVoxForbidden) as err:
        c.get_account()
    assert (err.value.status, err.value.code) == (403, "forbidden")
    assert "NEXXT365_CLEARVOX_ACCOUNT" in str(err.value)


@pytest.mark.parametrize("call", ["get_account", "list_users", "create_user"])
def test_an_unknown_account_is_not_found_naming_the_setting(sim: ClearVoxSim, call: str) -> None:
    args = {"create_user": ({"first_name": "A", "last_name": "B", "email": "a@example.nl"},)}.get(call, ())
    with client(sim, account="99999") as c, pytest.raises(AccountNotFound) as err:
        getattr(c, call)(*args)
    assert isinstance(err.value, AdminFix) and not isinstance(err.value, ItemError), "an admin fixes it; no item is at fault"
    assert (err.value.status, err.value.code, err.value.exit_code) == (404, "not_found", 2)
    assert "NEXXT365_CLEARVOX_ACCOUNT" in str(err.value) and "99999" in str(err.value)


@pytest.mark.parametrize("call", [
    lambda cv: cv.get_user("424242"), lambda cv: cv.update_user("424242", {"job_title": "x"}),
    lambda cv: cv.get_status("424242"), lambda cv: cv.set_status("424242", "busy"),
    lambda cv: list(cv.iter_contacts("424242")), lambda cv: cv.create_contact("424242", {"display_name": "x"}),
    lambda cv: cv.get_contact("424242"), lambda cv: cv.update_contact("424242", {"company": "x"}),
], ids=["get_user", "update_user", "get_status", "set_status", "iter_contacts", "create_contact", "get_contact",
        "update_contact"])
def test_an_unknown_user_or_contact_is_not_found_and_not_a_setting_problem(cv: ClearVox, call) -> None:
    with pytest.raises(ClearVoxNotFound) as err:
        call(cv)
    assert not isinstance(err.value, AccountNotFound)
    assert (err.value.status, err.value.code, err.value.exit_code) == (404, "not_found", 1)
    assert "424242" in str(err.value)


def test_a_taken_email_in_any_case_is_email_taken(cv: ClearVox, sim: ClearVoxSim, alice: dict[str, object]) -> None:
    with pytest.raises(EmailTaken) as err:
        cv.create_user({"first_name": "A", "last_name": "J", "email": "ALICE.JANSEN@example.nl"})
    assert (err.value.status, err.value.code) == (409, "email_taken")
    bob = sim.add_user(first_name="Bob", last_name="V", email="bob@example.nl")
    with pytest.raises(EmailTaken):
        cv.update_user(str(bob["id"]), {"email": "alice.jansen@example.nl"})


def test_invalid_data_is_validation_failed_with_the_fields(cv: ClearVox, alice: dict[str, object]) -> None:
    with pytest.raises(ValidationFailed) as err:
        cv.create_user({"first_name": "", "last_name": "B", "email": "b@example.nl", "mobile_number": "06-1234"})
    assert (err.value.status, err.value.code) == (422, "validation_failed")
    assert set(err.value.fields) == {"first_name", "mobile_number"}
    assert "first_name" in str(err.value) and "mobile_number" in str(err.value)
    with pytest.raises(ValidationFailed) as status_err:
        cv.set_status(str(alice["id"]), "lunch")
    assert set(status_err.value.fields) == {"status"}
    with pytest.raises(ValidationFailed) as contact_err:
        cv.create_contact(str(alice["id"]), {"display_name": "X", "phone_numbers": []})
    assert set(contact_err.value.fields) == {"phone_numbers"}


# -- throttling, outages, network -----------------------------------------------------

def test_a_429_is_retried_after_the_retry_after_seconds(cv: ClearVox, sim: ClearVoxSim, waits: list[float]) -> None:
    sim.inject(429, count=1, retry_after=7)
    assert cv.get_account().id == ACCOUNT
    assert waits == [7.0]
    assert (cv.stats.requests, cv.stats.retries, cv.stats.throttled) == (1, 1, 1)
    assert [r.status for r in sim.requests_to()] == [429, 200]


def test_a_503_is_retried(cv: ClearVox, sim: ClearVoxSim, alice: dict[str, object]) -> None:
    sim.inject(503, count=2)
    assert cv.set_status(str(alice["id"]), "busy").status == "busy"
    assert [r.status for r in sim.requests_to()] == [503, 503, 200]
    assert (cv.stats.retries, cv.stats.throttled) == (2, 0)


def test_retry_after_is_capped_so_a_run_is_not_stalled(sim: ClearVoxSim, waits: list[float]) -> None:
    sim.inject(429, count=1, retry_after=3600)
    with client(sim, max_retry_after=30) as c:
        c.get_account()
    assert waits == [30.0]


@pytest.mark.parametrize(("status", "code"), [(429, "rate_limited"), (503, "unavailable")])
def test_throttling_or_an_outage_that_outlasts_the_retries_is_unavailable(sim: ClearVoxSim, status: int,
                                                                         code: str) -> None:
    sim.inject(status, count=10, retry_after=0)
    with client(sim, retries=2) as c, pytest.raises(ClearVoxUnavailable) as err:
        c.list_users()
    assert (err.value.status, err.value.code, err.value.exit_code) == (status, code, 1)
    assert len(sim.requests_to()) == 3
    assert "next run" in str(err.value)


def test_a_server_error_is_unavailable_without_a_retry(cv: ClearVox, sim: ClearVoxSim) -> None:
    sim.inject(500)
    with pytest.raises(ClearVoxUnavailable) as err:
        cv.get_account()
    assert (err.value.status, err.value.code) == (500, "internal")
    assert len(sim.requests_to()) == 1


def test_an_unreachable_pbx_is_unavailable_naming_the_url_setting() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with ClearVox(f"https://127.0.0.1:{port}", KEY, ACCOUNT, verify=ca_bundle_path(), backoff=0.01) as c, \
            pytest.raises(ClearVoxUnavailable) as err:
        c.get_account()
    assert (err.value.status, err.value.code) == (0, "unreachable")
    assert "NEXXT365_CLEARVOX_URL" in str(err.value)


def test_a_pbx_that_does_not_answer_in_time_is_unavailable(sim: ClearVoxSim) -> None:
    sim.latency = 0.5
    with client(sim, timeout=(1.0, 0.1)) as c, pytest.raises(ClearVoxUnavailable) as err:
        c.get_account()
    assert (err.value.code, "NEXXT365_CLEARVOX_URL" in str(err.value)) == ("timeout", True)


def test_an_untrusted_certificate_is_refused(sim: ClearVoxSim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with ClearVox(sim.url, KEY, ACCOUNT, backoff=0.01) as c, pytest.raises(ClearVoxUnavailable) as err:
        c.get_account()
    assert err.value.code == "tls" and "REQUESTS_CA_BUNDLE" in str(err.value)
    assert sim.requests_to() == []


def test_a_redirect_is_not_followed_so_the_key_stays_with_the_pbx(cv: ClearVox, sim: ClearVoxSim) -> None:
    sim.inject(302)
    with pytest.raises(ClearVoxError) as err:
        cv.get_account()
    assert (err.value.status, err.value.code) == (302, "redirect") and "NEXXT365_CLEARVOX_URL" in str(err.value)
    assert isinstance(err.value, AdminFix)
    assert len(sim.requests_to()) == 1


def test_an_unexpected_status_fails_that_request_only_with_status_and_code(cv: ClearVox, sim: ClearVoxSim) -> None:
    sim.inject(418)
    with pytest.raises(ClearVoxError) as err:
        cv.get_account()
    assert type(err.value) is ClearVoxRejected and err.value.status == 418 and err.value.code == "internal"
    assert isinstance(err.value, ItemError)


# -- concurrency and secrecy ----------------------------------------------------------

def test_one_client_serves_many_threads(cv: ClearVox, sim: ClearVoxSim) -> None:
    def create(i: int) -> CvUser:
        return cv.create_user({"first_name": "T", "last_name": str(i), "email": f"t{i}@example.nl"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        users = list(pool.map(create, range(40)))
    assert len({u.id for u in users}) == 40 == len(sim.users)
    assert cv.stats.requests == 40 and sim.writes["POST"] == 40


def test_the_api_key_never_appears_in_errors_logs_or_urls(sim: ClearVoxSim, caplog: pytest.LogCaptureFixture,
                                                          alice: dict[str, object]) -> None:
    caplog.set_level(logging.DEBUG)
    sim.inject(422, match=lambda r: r.method == "PATCH", body={"error": {
        "code": "validation_failed", "message": f"bad token {KEY}", "fields": {"email": f"echo {KEY}"}}})
    sim.inject(503, count=5, match=lambda r: r.path.endswith(f"/accounts/{ACCOUNT}"))
    errors: list[ClearVoxError] = []
    with client(sim, retries=1) as c:
        for call in (lambda: c.update_user(str(alice["id"]), {"job_title": "x"}),  # the server echoes the key
                     lambda: c.get_user("424242"),
                     lambda: c.create_user({"first_name": "A", "last_name": "B", "email": "alice.jansen@example.nl"}),
                     c.get_account):
            with pytest.raises(ClearVoxError) as err:
                call()
            errors.append(err.value)
    assert [type(e) for e in errors] == [ValidationFailed, ClearVoxNotFound, EmailTaken, ClearVoxUnavailable]
    with client(sim, key=KEY + "-wrong") as wrong, pytest.raises(ClearVoxUnauthorized) as unauthorized:
        wrong.get_account()
    errors.append(unauthorized.value)
    for error in errors:
        assert KEY not in str(error) and KEY not in repr(error) and KEY not in repr(error.fields)
    assert caplog.records and KEY not in caplog.text
    assert all("api_key" not in r.query for r in sim.requests_to())
