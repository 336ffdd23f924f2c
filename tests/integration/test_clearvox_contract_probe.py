"""`doctor --contract`: the PBX's answers against clearvox-api.yaml, read-only, in the contract's terms."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.clearvox import ClearVox
from shared.clearvox_contract import contract_check
from shared.doctor import contract_checks
from shared.sandbox.clearvox_sim import ClearVoxSim
from shared.sandbox.server import Request, Response
from shared.sandbox.tls import ca_bundle_path

KEY = "cv-key-contract-probe"


@pytest.fixture
def sim() -> Iterator[ClearVoxSim]:
    with ClearVoxSim(api_key=KEY) as server:
        user = server.add_user(first_name="Ann", last_name="Bos", email="ann@example.nl", external_application_id="oid-1")
        server.add_contact(str(user["id"]), display_name="Piet", external_id="g-1")
        yield server


@pytest.fixture
def cv(sim: ClearVoxSim) -> Iterator[ClearVox]:
    with ClearVox(sim.url, KEY, sim.account_id, verify=ca_bundle_path()) as c:
        yield c


def test_a_pbx_that_follows_the_contract_has_no_findings_and_is_only_read(cv: ClearVox, sim: ClearVoxSim) -> None:
    assert contract_check(cv) == []
    assert {r.method for r in sim.requests_to()} == {"GET"}
    paths = {r.path for r in sim.requests_to()}
    assert any(p.endswith("/status") for p in paths) and any(p.endswith("/contacts") for p in paths)
    assert {q for r in sim.requests_to() for q in r.query} >= {"email", "external_application_id", "external_id"}
    assert [c.status for c in contract_checks(cv)] == ["OK"]


def renamed(old: str, new: str):  # type: ignore[no-untyped-def]
    def change(resp: Response) -> Response:
        data = resp.body["data"]
        for item in data if isinstance(data, list) else [data]:
            item[new] = item.pop(old)
        return resp
    return change


def test_a_renamed_user_field_is_a_finding_naming_path_and_field(cv: ClearVox, sim: ClearVoxSim) -> None:
    sim.rewrite(renamed("email", "mail"), count=1, match=lambda r: r.path.endswith("/users") and not r.query.get("email"))
    findings = contract_check(cv)
    assert [(f.field, f.got) for f in findings] == [("data[0].email", "no such property")]
    assert findings[0].path.endswith("/users")
    assert "clearvox-api.yaml expects required property email of User" in str(findings[0])


def test_a_wrong_type_and_a_missing_page_total_are_findings(cv: ClearVox, sim: ClearVoxSim) -> None:
    def broken(resp: Response) -> Response:
        resp.body["data"]["changed_at"] = 1700000000
        return resp

    sim.rewrite(broken, match=lambda r: r.path.endswith("/status"))
    sim.rewrite(lambda resp: Response(200, {"data": resp.body["data"], "meta": {"page": 1, "per_page": 1}}),
                match=lambda r: r.path.endswith("/contacts") and "/accounts/" in r.path)
    found = {(f.field, f.expected, f.got) for f in contract_check(cv)}
    assert found == {("data.changed_at", "string", "integer"), ("meta.total", "required property total of Page",
                                                                 "no such property")}


def test_an_endpoint_the_pbx_lacks_is_a_finding(cv: ClearVox, sim: ClearVoxSim) -> None:
    def missing(req: Request) -> bool:
        return req.path.endswith("/contacts") and "/accounts/" in req.path

    sim.inject(404, match=missing)
    (finding,) = contract_check(cv)
    assert finding.path.endswith("/contacts") and finding.got.startswith("404")
