"""The Graph simulator behaves like Entra ID and Microsoft Graph v1.0, over real HTTPS.

These tests are its specification: each states a Microsoft behaviour the connector
must cope with (error codes, paging, delta rounds, limits, throttling) and checks
the simulator reproduces it with real `requests` and `msal` clients.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msal
import pytest
import requests

from shared.sandbox.graph_sim import GraphSim
from shared.sandbox.tls import ca_bundle_path, self_signed_certificate

pytestmark = pytest.mark.integration

SECRET = "s3cret-value"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
AMS = ZoneInfo("Europe/Amsterdam")


@pytest.fixture(autouse=True)
def _trust_sandbox_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests (and so msal) prefers REQUESTS_CA_BUNDLE over Session.verify: point it at the sandbox CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_bundle_path())


@pytest.fixture
def sim() -> Iterator[GraphSim]:
    with GraphSim(page_size=100) as s:
        yield s


@pytest.fixture
def app_id(sim: GraphSim) -> str:
    return sim.add_app("11111111-1111-1111-1111-111111111111", secret=SECRET)


class Graph:
    """A thin Graph client for assertions: base URL, bearer token, sandbox CA."""

    def __init__(self, sim: GraphSim, token: str) -> None:
        self.sim = sim
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def url(self, path: str) -> str:
        return path if path.startswith("https://") else f"{self.sim.url}/v1.0{path}"

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.url(path), verify=ca_bundle_path(), timeout=10, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> requests.Response:
        return self.session.post(self.url(path), json=body, verify=ca_bundle_path(), timeout=10, **kw)

    def all_pages(self, path: str, **kw: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Follow @odata.nextLink; return the items and the last page."""
        items: list[dict[str, Any]] = []
        page = self.get(path, **kw).json()
        items += page["value"]
        while "@odata.nextLink" in page:
            page = self.get(page["@odata.nextLink"], **kw).json()
            items += page["value"]
        return items, page


def token_for(sim: GraphSim, client_id: str, secret: str = SECRET) -> str:
    r = requests.post(f"{sim.url}/{sim.tenant_id}/oauth2/v2.0/token", verify=ca_bundle_path(), timeout=10,
                      data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
                            "scope": GRAPH_SCOPE})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture
def graph(sim: GraphSim, app_id: str) -> Graph:
    return Graph(sim, token_for(sim, app_id))


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def error_code(r: requests.Response) -> str:
    return str(r.json()["error"]["code"])


# -- tokens --------------------------------------------------------------------

def test_msal_with_a_client_secret_gets_a_graph_token_carrying_the_consented_roles(sim: GraphSim, app_id: str) -> None:
    app = msal.ConfidentialClientApplication(app_id, client_credential=SECRET, authority=sim.authority,
                                             instance_discovery=False, verify=ca_bundle_path())
    result = app.acquire_token_for_client([GRAPH_SCOPE])
    assert result["token_type"] == "Bearer" and result["expires_in"] > 3000
    c = claims(result["access_token"])
    assert c["aud"] == "https://graph.microsoft.com" and c["tid"] == sim.tenant_id
    assert c["appid"] == c["azp"] == app_id and c["idtyp"] == "app"
    assert sorted(c["roles"]) == ["Calendars.Read", "Contacts.Read", "User.Read.All"]
    assert c["exp"] > datetime.now(UTC).timestamp()


def test_v1_endpoint_takes_a_resource_and_the_tenant_domain(sim: GraphSim, app_id: str) -> None:
    r = requests.post(f"{sim.url}/{sim.domain}/oauth2/token", verify=ca_bundle_path(), timeout=10,
                      data={"grant_type": "client_credentials", "client_id": app_id, "client_secret": SECRET,
                            "resource": "https://graph.microsoft.com"})
    body = r.json()
    assert r.status_code == 200
    assert body["expires_in"] == "3599" and body["resource"] == "https://graph.microsoft.com"  # v1 sends strings
    assert Graph(sim, body["access_token"]).get("/users").status_code == 200


def test_msal_with_a_certificate_signs_a_client_assertion_the_sim_verifies(sim: GraphSim) -> None:
    key_pem, cert_pem = _self_signed()
    other_key, other_cert = _self_signed()
    client_id = sim.add_app("22222222-2222-2222-2222-222222222222", certificate_pem=cert_pem)
    good = msal.ConfidentialClientApplication(
        client_id, client_credential={"private_key": key_pem, "public_certificate": cert_pem},
        authority=sim.authority, instance_discovery=False, verify=ca_bundle_path())
    result = good.acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in result, result
    assert claims(result["access_token"])["appidacr"] == "2"

    wrong = msal.ConfidentialClientApplication(
        client_id, client_credential={"private_key": other_key, "public_certificate": other_cert},
        authority=sim.authority, instance_discovery=False, verify=ca_bundle_path())
    failed = wrong.acquire_token_for_client([GRAPH_SCOPE])
    assert failed["error"] == "invalid_client" and failed["error_codes"] == [700027]


@pytest.mark.parametrize(("tenant", "client", "secret", "expired", "status", "error", "code"), [
    ("unknown.onmicrosoft.com", "app", SECRET, False, 400, "invalid_request", 90002),
    ("{tenant}", "not-registered", SECRET, False, 400, "unauthorized_client", 700016),
    ("{tenant}", "app", "wrong", False, 401, "invalid_client", 7000215),
    ("{tenant}", "app", SECRET, True, 401, "invalid_client", 7000222),
])
def test_token_errors_are_entra_aadsts_errors(sim: GraphSim, tenant: str, client: str, secret: str, expired: bool,
                                              status: int, error: str, code: int) -> None:
    sim.add_app("app", secret=SECRET, secret_expired=expired)
    r = requests.post(f"{sim.url}/{tenant.format(tenant=sim.tenant_id)}/oauth2/v2.0/token", verify=ca_bundle_path(),
                      timeout=10, data={"grant_type": "client_credentials", "client_id": client,
                                        "client_secret": secret, "scope": GRAPH_SCOPE})
    body = r.json()
    assert (r.status_code, body["error"], body["error_codes"]) == (status, error, [code])
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert "Trace ID:" in body["error_description"] and body["correlation_id"]


def test_msal_surfaces_aadsts_codes(sim: GraphSim, app_id: str) -> None:
    bad = msal.ConfidentialClientApplication(app_id, client_credential="wrong", authority=sim.authority,
                                            instance_discovery=False, verify=ca_bundle_path())
    assert bad.acquire_token_for_client([GRAPH_SCOPE])["error_codes"] == [7000215]
    with pytest.raises(ValueError, match="authority configuration") as failed:  # msal discovers the tenant up front
        msal.ConfidentialClientApplication(app_id, client_credential=SECRET, authority=f"{sim.url}/nope.example",
                                           instance_discovery=False, verify=ca_bundle_path())
    assert "AADSTS90002" in str(failed.value.__context__)


def test_graph_rejects_a_missing_forged_or_expired_bearer(sim: GraphSim, graph: Graph) -> None:
    missing = requests.get(f"{sim.url}/v1.0/users", verify=ca_bundle_path(), timeout=10)
    assert missing.status_code == 401 and error_code(missing) == "InvalidAuthenticationToken"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    token = graph.session.headers["Authorization"].split()[1]
    head, payload, sig = str(token).split(".")
    forged = Graph(sim, f"{head}.{payload[:-2]}AA.{sig}").get("/users")
    assert forged.status_code == 401
    assert graph.get("/users").status_code == 200
    sim.expire_access_tokens()
    expired = graph.get("/users")
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


# -- permissions and mailboxes -------------------------------------------------------

def test_each_endpoint_needs_its_application_permission(sim: GraphSim) -> None:
    uid = sim.add_user(displayName="Ann", mail="ann@contoso.com")
    gid = sim.add_group(members=[uid])
    contacts_only = Graph(sim, token_for(sim, sim.add_app("contacts-only", secret=SECRET, roles=["Contacts.Read"])))
    users = contacts_only.get("/users")
    assert users.status_code == 403 and error_code(users) == "Authorization_RequestDenied"
    assert users.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    view = contacts_only.post(f"/users/{uid}/calendar/getSchedule",
                              _schedule_body(["ann@contoso.com"], datetime(2024, 1, 1, 9), datetime(2024, 1, 1, 10)))
    assert view.status_code == 403 and error_code(view) == "ErrorAccessDenied"
    assert view.json()["error"]["message"] == "Access is denied. Check credentials and try again."
    assert contacts_only.get(f"/users/{uid}/contacts").status_code == 200

    # group membership and mailbox settings need their own permissions, beyond the connector's three
    default = Graph(sim, token_for(sim, sim.add_app("default", secret=SECRET)))
    assert default.get(f"/groups/{gid}/transitiveMembers").status_code == 403
    assert default.get(f"/users/{uid}/mailboxSettings").status_code == 403
    broader = Graph(sim, token_for(sim, sim.add_app(
        "broader", secret=SECRET, roles=["User.Read.All", "GroupMember.Read.All", "MailboxSettings.Read"])))
    assert broader.get(f"/groups/{gid}/transitiveMembers").status_code == 200
    assert broader.get(f"/users/{uid}/mailboxSettings/timeZone").json()["value"] == "W. Europe Standard Time"


def test_mailbox_without_rest_access_and_mailbox_outside_the_access_policy(sim: GraphSim, graph: Graph) -> None:
    no_mailbox = sim.add_user(displayName="No Mailbox", has_mailbox=False)
    fenced = sim.add_user(displayName="Fenced", mailbox_in_scope=False)
    r = graph.get(f"/users/{no_mailbox}/contacts")
    assert r.status_code == 404 and error_code(r) == "MailboxNotEnabledForRESTAPI"
    assert r.json()["error"]["message"] == "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
    r = graph.get(f"/users/{fenced}/contactFolders")
    assert r.status_code == 403 and error_code(r) == "ErrorAccessDenied"
    assert r.json()["error"]["message"] == "Access to OData is disabled."
    assert graph.get(f"/users/{fenced}").status_code == 200  # the directory still shows the user
    r = graph.get("/users/nobody@contoso.com/contacts")
    assert r.status_code == 404 and error_code(r) == "ErrorInvalidUser"


# -- users and groups ----------------------------------------------------------

def test_users_page_by_next_link_and_support_select_filter_and_upn_lookup(sim: GraphSim, graph: Graph) -> None:
    for i in range(250):
        sim.add_user(displayName=f"User {i:03}", mail=f"u{i}@contoso.com", userPrincipalName=f"u{i}@contoso.onmicrosoft.com",
                     department="Sales" if i % 2 else None)
    first = graph.get("/users?$select=id,displayName,department").json()
    assert len(first["value"]) == 100 and "$skiptoken=" in first["@odata.nextLink"]
    assert set(first["value"][1]) == {"id", "displayName", "department"}
    users, last = graph.all_pages("/users?$select=id,displayName&$top=120")
    assert len(users) == 250 and len({u["id"] for u in users}) == 250 and "@odata.nextLink" not in last

    found = graph.get("/users", params={"$filter": "mail eq 'U7@contoso.com'"}).json()["value"]
    assert [u["displayName"] for u in found] == ["User 007"]
    by_upn = graph.get("/users/u8@contoso.onmicrosoft.com").json()
    assert by_upn["displayName"] == "User 008" and "department" not in by_upn  # not in the default set
    missing = graph.get("/users/ghost@contoso.onmicrosoft.com")
    assert missing.status_code == 404 and error_code(missing) == "Request_ResourceNotFound"
    assert graph.get("/users?$select=nonsense").status_code == 400


def test_users_delta_rounds_report_changes_then_removals(sim: GraphSim, graph: Graph) -> None:
    ids = [sim.add_user(displayName=f"User {i}", mail=f"u{i}@contoso.com") for i in range(230)]
    initial, last = graph.all_pages("/users/delta?$select=displayName,mail,jobTitle")
    assert len(initial) == 230 and "@odata.deltaLink" in last
    assert "jobTitle" not in initial[0]  # never set: omitted from delta
    delta_link = last["@odata.deltaLink"]

    sim.update_user(ids[0], jobTitle="Engineer")
    sim.update_user(ids[1], department="Sales")  # not selected: not tracked
    added = sim.add_user(displayName="New", mail="new@contoso.com")
    sim.delete_user(ids[2])
    sim.delete_user(ids[3], permanent=True)
    changes, last = graph.all_pages(delta_link)
    by_id = {c["id"]: c for c in changes}
    assert set(by_id) == {ids[0], added, ids[2], ids[3]}
    assert by_id[ids[0]] == {"displayName": "User 0", "mail": "u0@contoso.com", "jobTitle": "Engineer", "id": ids[0]}
    assert by_id[ids[2]]["@removed"] == {"reason": "changed"}  # soft-deleted, restorable
    assert by_id[ids[3]]["@removed"] == {"reason": "deleted"}

    sim.update_user(ids[4], mail="four@contoso.com")
    minimal = graph.get(last["@odata.deltaLink"], headers={"Prefer": "return=minimal"}).json()
    assert minimal["value"] == [{"mail": "four@contoso.com", "id": ids[4]}]
    assert graph.get(minimal["@odata.deltaLink"]).json()["value"] == []


def test_expired_directory_delta_token_asks_for_a_full_resync(sim: GraphSim, graph: Graph) -> None:
    sim.add_user(displayName="Ann")
    delta_link = graph.get("/users/delta").json()["@odata.deltaLink"]
    sim.expire_delta_tokens()
    r = graph.get(delta_link)
    assert r.status_code == 400 and error_code(r) == "syncStateNotFound"
    fresh = graph.get("/users/delta").json()["@odata.deltaLink"]
    sim.expire_delta_tokens(reset=True)
    r = graph.get(fresh)
    assert r.status_code == 410 and r.headers["Location"].endswith("/v1.0/users/delta?$deltatoken=")


def test_group_transitive_members_flatten_nested_groups(sim: GraphSim) -> None:
    users = [sim.add_user(displayName=f"U{i}") for i in range(150)]
    inner = sim.add_group(members=users[100:] + users[:5])
    outer = sim.add_group(members=[*users[:100], inner])
    g = Graph(sim, token_for(sim, sim.add_app("grp", secret=SECRET, roles=["User.Read.All", "GroupMember.Read.All"])))
    members, _ = g.all_pages(f"/groups/{outer}/transitiveMembers/microsoft.graph.user?$select=id,displayName")
    assert sorted(m["id"] for m in members) == sorted(users)
    untyped = g.get(f"/groups/{outer}/transitiveMembers?$top=999").json()["value"]
    assert {m["@odata.type"] for m in untyped} == {"#microsoft.graph.user", "#microsoft.graph.group"}


# -- contacts ------------------------------------------------------------------

def test_contact_folders_are_listed_inside_the_default_contacts_folder(sim: GraphSim, graph: Graph) -> None:
    uid = sim.add_user(displayName="Ann")
    work = sim.add_contact_folder(uid, "Work")
    sim.add_contact_folder(uid, "Clients", parent_id=work)
    default = sim.default_contact_folder(uid)
    top = graph.get(f"/users/{uid}/contactFolders").json()["value"]
    assert [(f["displayName"], f["parentFolderId"]) for f in top] == [("Work", default)]
    assert graph.get(f"/users/{uid}/contactFolders/contacts").json() == {  # the well-known name
        "id": default, "displayName": "Contacts", "parentFolderId": sim.users[uid].mailbox.root_id}
    children = graph.get(f"/users/{uid}/contactFolders/{work}/childFolders").json()["value"]
    assert [c["displayName"] for c in children] == ["Clients"]


def test_contacts_delta_rounds_with_max_page_size_and_removals(sim: GraphSim, graph: Graph) -> None:
    uid = sim.add_user(displayName="Ann")
    folder = sim.add_contact_folder(uid, "Work")
    cids = [sim.add_contact(uid, folder, givenName=f"C{i}", surname="Doe", companyName="Acme",
                            emailAddresses=[{"name": f"C{i}", "address": f"c{i}@acme.test"}],
                            businessPhones=["+31 20 123 4567"]) for i in range(7)]
    sim.add_contact(uid, givenName="Elsewhere")  # in the default folder, not tracked here
    path = f"/users/{uid}/contactFolders/{folder}/contacts/delta?$select=displayName,emailAddresses,businessPhones"
    prefer = {"Prefer": "odata.maxpagesize=3"}
    first = graph.get(path, headers=prefer)
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=3" and len(first.json()["value"]) == 3
    contacts, last = graph.all_pages(path, headers=prefer)
    assert sorted(c["id"] for c in contacts) == sorted(cids)
    assert contacts[0]["displayName"] == "C0 Doe" and contacts[0]["@odata.type"] == "#microsoft.graph.contact"
    assert "companyName" not in contacts[0]

    sim.update_contact(cids[0], mobilePhone="+31 6 1234 5678", displayName="Cee Zero")
    sim.delete_contact(cids[1])
    new = sim.add_contact(uid, folder, displayName="New Person")
    changes, last = graph.all_pages(last["@odata.deltaLink"], headers=prefer)
    by_id = {c["id"]: c for c in changes}
    assert set(by_id) == {cids[0], cids[1], new}
    assert by_id[cids[0]]["displayName"] == "Cee Zero"
    assert by_id[cids[1]]["@removed"] == {"reason": "deleted"}
    assert graph.get(last["@odata.deltaLink"]).json()["value"] == []

    default_delta = graph.get(f"/users/{uid}/contacts/delta").json()["value"]
    assert [c["givenName"] for c in default_delta] == ["Elsewhere"]


def test_contacts_delta_expired_token_is_gone_and_deleted_folder_is_not_found(sim: GraphSim, graph: Graph) -> None:
    uid = sim.add_user(displayName="Ann")
    folder = sim.add_contact_folder(uid, "Work")
    sim.add_contact(uid, folder, displayName="X")
    delta_link = graph.get(f"/users/{uid}/contactFolders/{folder}/contacts/delta").json()["@odata.deltaLink"]
    sim.expire_delta_tokens()
    r = graph.get(delta_link)
    assert r.status_code == 410 and error_code(r) == "SyncStateNotFound"
    sim.delete_contact_folder(folder)
    r = graph.get(f"/users/{uid}/contactFolders/{folder}/contacts/delta")
    assert r.status_code == 404 and error_code(r) == "ErrorItemNotFound"


# -- calendar --------------------------------------------------------------------

def _schedule_body(schedules: list[str], start: datetime, end: datetime, interval: int = 30) -> dict[str, Any]:
    return {"schedules": schedules, "availabilityViewInterval": interval,
            "startTime": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "W. Europe Standard Time"},
            "endTime": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "W. Europe Standard Time"}}


def test_get_schedule_returns_items_and_availability_and_per_schedule_errors(sim: GraphSim, graph: Graph) -> None:
    ann = sim.add_user(displayName="Ann", mail="ann@contoso.com")
    sim.add_user(displayName="Bob", mail="bob@contoso.com", has_mailbox=False)
    sim.add_event(ann, "Review", datetime(2024, 5, 6, 9, tzinfo=AMS), datetime(2024, 5, 6, 10, tzinfo=AMS))
    sim.add_event(ann, "Offsite", datetime(2024, 5, 6, 11, tzinfo=AMS), datetime(2024, 5, 6, 12, tzinfo=AMS),
                  show_as="workingElsewhere")
    sim.add_event(ann, "Doctor", datetime(2024, 5, 6, 9, 30, tzinfo=AMS), datetime(2024, 5, 6, 10, tzinfo=AMS),
                  show_as="oof", sensitivity="private")
    sim.add_event(ann, "Dropped", datetime(2024, 5, 6, 10, tzinfo=AMS), datetime(2024, 5, 6, 11, tzinfo=AMS),
                  is_cancelled=True)
    body = _schedule_body(["ann@contoso.com", "bob@contoso.com", "ghost@elsewhere.test"],
                          datetime(2024, 5, 6, 8), datetime(2024, 5, 6, 12))
    r = graph.post(f"/users/{ann}/calendar/getSchedule", body, headers={"Prefer": 'outlook.timezone="UTC"'})
    assert r.status_code == 200
    ann_info, bob_info, ghost_info = r.json()["value"]
    assert ann_info["scheduleId"] == "ann@contoso.com"
    assert ann_info["availabilityView"] == "00230044"  # cancelled events do not block time
    review, doctor, offsite = ann_info["scheduleItems"]
    assert review == {"isPrivate": False, "status": "busy", "subject": "Review", "location": "",
                      "start": {"dateTime": "2024-05-06T07:00:00.0000000", "timeZone": "UTC"},
                      "end": {"dateTime": "2024-05-06T08:00:00.0000000", "timeZone": "UTC"}}
    assert doctor["isPrivate"] is True and "subject" not in doctor and doctor["status"] == "oof"
    assert offsite["status"] == "workingElsewhere"
    assert bob_info["error"]["responseCode"] and "scheduleItems" not in bob_info
    assert ghost_info["error"]["responseCode"] == "5009"

    sim.schedule_status_casing = "pascal"  # Microsoft's examples show both casings
    items = graph.post(f"/users/{ann}/calendar/getSchedule", body).json()["value"][0]["scheduleItems"]
    assert [i["status"] for i in items] == ["Busy", "Oof", "WorkingElsewhere"]


def test_get_schedule_limits_are_microsofts(sim: GraphSim, graph: Graph) -> None:
    ann = sim.add_user(displayName="Ann", mail="ann@contoso.com")
    start = datetime(2024, 5, 1)
    too_many = graph.post(f"/users/{ann}/calendar/getSchedule",
                          _schedule_body([f"u{i}@contoso.com" for i in range(21)], start, start + timedelta(hours=1)))
    assert too_many.status_code == 400 and error_code(too_many) == "ErrorMailboxDataArrayTooBig"
    too_long = graph.post(f"/users/{ann}/calendar/getSchedule",
                          _schedule_body(["ann@contoso.com"], start, start + timedelta(days=63)))
    assert too_long.status_code == 400 and error_code(too_long) == "ErrorTimeIntervalTooBig"
    assert "allowed limit = 62 days" in too_long.json()["error"]["message"]
    fits = graph.post(f"/users/{ann}/calendar/getSchedule",
                      _schedule_body(["ann@contoso.com"] * 20, start, start + timedelta(days=62), interval=1440))
    assert fits.status_code == 200 and len(fits.json()["value"][0]["availabilityView"]) == 62


# -- $batch and throttling -----------------------------------------------------------

def test_batch_runs_relative_sub_requests_with_the_callers_token(sim: GraphSim, graph: Graph) -> None:
    ann = sim.add_user(displayName="Ann", mail="ann@contoso.com")
    r = graph.post("/$batch", {"requests": [
        {"id": "1", "method": "GET", "url": f"/users/{ann}?$select=displayName"},
        {"id": "2", "method": "GET", "url": "users/ghost"},
        {"id": "3", "method": "GET", "url": f"/users/{ann}/contacts"},
    ]})
    assert r.status_code == 200
    responses = {x["id"]: x for x in r.json()["responses"]}
    assert responses["1"]["status"] == 200 and responses["1"]["body"]["displayName"] == "Ann"
    assert responses["1"]["headers"]["Content-Type"] == "application/json"
    assert responses["2"]["status"] == 404 and responses["2"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert responses["3"]["status"] == 200
    assert [x.status for x in sim.batch_log] == [200, 404, 200]
    assert [x.path for x in sim.requests_to(lambda x: x.path.endswith("$batch"))] == ["/v1.0/$batch"]


def test_batch_of_more_than_twenty_is_rejected(graph: Graph) -> None:
    r = graph.post("/$batch", {"requests": [{"id": str(i), "method": "GET", "url": "/users"} for i in range(21)]})
    assert r.status_code == 400 and error_code(r) == "BadRequest"


def test_batch_beyond_four_requests_per_mailbox_is_throttled(sim: GraphSim, graph: Graph) -> None:
    ann = sim.add_user(displayName="Ann", mail="ann@contoso.com")
    bob = sim.add_user(displayName="Bob", mail="bob@contoso.com")
    reqs = [{"id": str(i), "method": "GET", "url": f"/users/{ann}/contacts"} for i in range(6)]
    reqs.append({"id": "bob", "method": "GET", "url": f"/users/{bob}/contacts"})
    responses = graph.post("/$batch", {"requests": reqs}).json()["responses"]
    statuses = {x["id"]: x["status"] for x in responses}
    assert [statuses[str(i)] for i in range(6)] == [200] * 4 + [429] * 2 and statuses["bob"] == 200
    throttled = next(x for x in responses if x["status"] == 429)
    assert throttled["body"]["error"]["code"] == "ApplicationThrottled"
    assert throttled["body"]["error"]["message"] == "Application is over its MailboxConcurrency limit."
    assert int(throttled["headers"]["Retry-After"]) >= 1


def test_injected_faults_throttle_whole_requests_and_single_batch_items(sim: GraphSim, graph: Graph) -> None:
    sim.add_user(displayName="Ann")
    sim.inject(429, count=1, retry_after=7, match=lambda rq: rq.path.endswith("/users"))
    throttled = graph.get("/users")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert throttled.json()["error"]["code"] == "TooManyRequests"
    assert throttled.json()["error"]["innerError"]["status"] == "429"
    assert graph.get("/users").status_code == 200

    sim.inject_batch_item(503, retry_after=3, match=lambda rq: rq.path.endswith("/users"))
    responses = graph.post("/$batch", {"requests": [{"id": "a", "method": "GET", "url": "/users"},
                                                    {"id": "b", "method": "GET", "url": "/users"}]}).json()["responses"]
    assert [(x["status"], x["headers"].get("Retry-After")) for x in responses] == [(503, "3"), (200, None)]


def test_unknown_routes_answer_in_graphs_error_shape(sim: GraphSim, graph: Graph) -> None:
    unknown = graph.get("/widgets")
    assert unknown.status_code == 400 and unknown.json()["error"]["message"] == \
        "Resource not found for the segment 'widgets'."
    assert set(unknown.json()["error"]["innerError"]) >= {"date", "request-id"}
    assert error_code(graph.get("/me")) == "BadRequest"  # app-only tokens have no /me
    assert graph.get(f"{sim.url}/beta/users").status_code == 400  # the simulator serves v1.0 only


def _self_signed() -> tuple[str, str]:
    return self_signed_certificate()
