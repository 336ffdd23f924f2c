"""The ClearVox contract (clearvox-api.yaml), the simulator and the client agree.

The contract is the project's reading of an API the vendor has not confirmed,
so the three must stay in step: a correction to the yaml has to show up here.

- Every operation of the contract is driven over real HTTPS against the
  simulator, with its success and error answers, and every response body is
  validated against the schema the contract declares for that status
  (OpenAPI 3.1 schemas are JSON Schema 2020-12).
- Each constraint of the request schemas is turned into an invalid body that
  the simulator must reject with 422 naming the field.
- A client exercise uses only the contract's paths, query parameters, auth
  header and request schemas, and covers every operation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from shared import clearvox
from shared.clearvox import ClearVox, PhoneNumber
from shared.errors import ClearVoxError
from shared.sandbox import clearvox_sim
from shared.sandbox.clearvox_sim import ClearVoxSim
from shared.sandbox.tls import ca_bundle_path

REPO = Path(__file__).resolve().parents[2]
SHARED_SPEC = REPO.parent / "shared" / "clearvox-api.yaml"
DOCS_SPEC = REPO / "docs" / "clearvox-api.yaml"
SPEC_PATH = SHARED_SPEC if SHARED_SPEC.exists() else DOCS_SPEC
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
SPEC_URI = "urn:nexxt365:clearvox-api"
REGISTRY: Registry = Registry().with_resource(SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012))
API_ROOT = urlsplit(SPEC["servers"][0]["url"]).path  # /api/1
METHODS = ("get", "put", "post", "patch", "delete")

KEY = "contract-test-key-3f9a"
ACCOUNT = "10001"
FOREIGN_ACCOUNT = "20002"
ALICE_OID = "6f1c2a7e-1d2b-4c3d-9e8f-0a1b2c3d4e5f"

# Answers the API gives that the contract does not list for that operation. They must
# still be the contract's Error shape; when the contract gains them, drop them here.
UNDECLARED = {
    ("/accounts/{accountId}/users", "get", 403), ("/accounts/{accountId}/users", "get", 404),
    ("/accounts/{accountId}/users", "post", 404), ("/users/{userId}", "get", 503),
}
# The contract's global security requirement makes 401 possible on every operation.
GLOBAL_STATUSES = {401}


# -- the contract as data -----------------------------------------------------------

def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _resolve(pointer: str) -> tuple[dict[str, Any], str]:
    """The object at a JSON pointer into the spec, following OpenAPI `$ref`s."""
    node: Any = SPEC
    for token in pointer.lstrip("/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    if isinstance(node, dict) and "$ref" in node:
        return _resolve(node["$ref"].removeprefix("#"))
    return node, pointer


def _schema_validator(pointer: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=REGISTRY,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def operations() -> list[tuple[str, str]]:
    return [(path, method) for path, item in SPEC["paths"].items() for method in METHODS if method in item]


def declared_responses() -> set[tuple[str, str, int]]:
    return {(path, method, int(status)) for path, method in operations()
            for status in SPEC["paths"][path][method]["responses"]}


def template_of(path: str) -> str:
    """The contract's path template that a concrete path (without the /api/1 root) matches."""
    parts = path.strip("/").split("/")
    templates: list[str] = list(SPEC["paths"])
    for template in templates:
        tparts = template.strip("/").split("/")
        if len(tparts) == len(parts) and all(t.startswith("{") or t == p for t, p in zip(tparts, parts, strict=True)):
            return template
    raise AssertionError(f"{path} is not a path of the contract")


def response_validator(template: str, method: str, status: int) -> Draft202012Validator | None:
    """Validator of the body the contract declares; None when the answer has no body (204)."""
    op_pointer = f"/paths/{_escape(template)}/{method}"
    responses = SPEC["paths"][template][method]["responses"]
    if str(status) in responses:
        response, pointer = _resolve(f"{op_pointer}/responses/{status}")
        if "content" not in response:
            return None
        return _schema_validator(f"{pointer}/content/application~1json/schema")
    assert status in GLOBAL_STATUSES or (template, method, status) in UNDECLARED, (
        f"{method.upper()} {template} answered {status}, which the contract does not declare")
    return _schema_validator("/components/schemas/Error")


def _request_pointer(template: str, method: str) -> str:
    return f"/paths/{_escape(template)}/{method}/requestBody/content/application~1json/schema"


def request_validator(template: str, method: str) -> Draft202012Validator:
    return _schema_validator(_request_pointer(template, method))


def request_schema(template: str, method: str) -> dict[str, Any]:
    return _resolve(_request_pointer(template, method))[0]


def query_parameters(template: str, method: str) -> set[str]:
    names = set()
    for param in SPEC["paths"][template].get("parameters", []) + SPEC["paths"][template][method].get("parameters", []):
        resolved, _ = _resolve(param["$ref"].removeprefix("#")) if "$ref" in param else (param, "")
        if resolved["in"] == "query":
            names.add(resolved["name"])
    return names


# -- the contract file itself -----------------------------------------------------

def test_the_contract_copies_are_identical() -> None:
    if not (SHARED_SPEC.exists() and DOCS_SPEC.exists()):
        pytest.skip("only one copy of the contract is present")
    assert SHARED_SPEC.read_bytes() == DOCS_SPEC.read_bytes(), "docs/clearvox-api.yaml differs from the shared contract"


def test_every_schema_in_the_contract_is_valid_json_schema() -> None:
    for schema in SPEC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_the_client_and_simulator_name_what_the_contract_names() -> None:
    assert SPEC["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
    assert clearvox.AUTH_HEADER == "X-Auth-Token"
    assert clearvox.API_PREFIX == clearvox_sim.API_PREFIX == API_ROOT
    schemas = SPEC["components"]["schemas"]
    assert set(clearvox_sim.USER_CREATE) == set(schemas["UserCreate"]["properties"])
    assert set(clearvox_sim.USER_CREATE_REQUIRED) == set(schemas["UserCreate"]["required"])
    assert set(clearvox_sim.USER_UPDATE) == set(schemas["UserUpdate"]["properties"])
    assert set(clearvox_sim.CONTACT_WRITE) == set(schemas["ContactWrite"]["properties"])
    assert set(clearvox.USER_FIELDS) | {"external_application_id"} <= set(schemas["UserCreate"]["properties"])
    assert set(clearvox.USER_FIELDS) | {"external_application_id", "active"} <= set(schemas["UserUpdate"]["properties"])
    assert set(clearvox.CONTACT_FIELDS) <= set(schemas["ContactWrite"]["properties"])
    assert "visibility" not in clearvox.CONTACT_FIELDS
    assert tuple(schemas["StatusCode"]["enum"]) == clearvox.STATUSES
    assert tuple(schemas["PhoneNumber"]["properties"]["type"]["enum"]) == clearvox_sim.PHONE_TYPES
    assert tuple(schemas["User"]["properties"]["language"]["enum"]) == clearvox_sim.LANGUAGES
    assert tuple(schemas["Status"]["properties"]["changed_by"]["enum"]) == clearvox_sim.CHANGED_BY


# -- driving the simulator ----------------------------------------------------------

@dataclass
class World:
    """A simulator seeded with two users, a synced private contact and a public one."""

    sim: ClearVoxSim
    session: requests.Session
    ids: dict[str, str]

    def send(self, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None,
             auth: str = "header") -> requests.Response:
        headers = {"X-Auth-Token": {"header": KEY, "wrong": "not-the-key"}[auth]} if auth in ("header", "wrong") else {}
        params = dict(query or {})
        if auth == "query":
            params["api_key"] = KEY
        return self.session.request(method, self.sim.url + API_ROOT + path.format(**self.ids), json=body,
                                    params=params, headers=headers, verify=ca_bundle_path())


def seeded_world(sim: ClearVoxSim) -> World:
    alice = sim.add_user(first_name="Alice", last_name="Jansen", email="alice@example.nl",
                         external_application_id=ALICE_OID, mobile_number="+31612345678")
    bob = sim.add_user(first_name="Bob", last_name="de Vries", email="bob@example.nl")
    synced = sim.add_contact(alice["id"], external_id="graph-contact-1", first_name="Piet", last_name="Pietersen",
                             display_name="Piet Pietersen", phone_numbers=[{"type": "work", "number": "+31201234567"}])
    public = sim.add_contact(alice["id"], display_name="Receptie", phone_numbers=[{"type": "work", "number": "+31107654321"}])
    sim.make_contact_public(public["id"])
    session = requests.Session()
    ids = {"account": ACCOUNT, "foreign": FOREIGN_ACCOUNT, "missing": "999999", "user": alice["id"], "bob": bob["id"],
           "contact": synced["id"], "public": public["id"], "alice_oid": ALICE_OID}
    return World(sim, session, ids)


@pytest.fixture
def world() -> Iterator[World]:
    with ClearVoxSim(account_id=ACCOUNT, api_key=KEY, foreign_accounts={FOREIGN_ACCOUNT}) as sim:
        w = seeded_world(sim)
        yield w
        w.session.close()


@pytest.fixture(scope="module")
def shared_world() -> Iterator[World]:
    """One simulator for the cases that only read or are rejected."""
    with ClearVoxSim(account_id=ACCOUNT, api_key=KEY, foreign_accounts={FOREIGN_ACCOUNT}) as sim:
        w = seeded_world(sim)
        yield w
        w.session.close()


def check_response(method: str, path: str, resp: requests.Response) -> Any:
    """Validate the answer against the contract and return its JSON (None for an empty body)."""
    template = template_of(urlsplit(resp.url).path.removeprefix(API_ROOT))
    validator = response_validator(template, method.lower(), resp.status_code)
    if validator is None:
        assert resp.content == b"", f"{method} {path} {resp.status_code} must have no body"
        return None
    assert resp.headers.get("Content-Type", "").startswith("application/json")
    body = resp.json()
    errors = sorted(validator.iter_errors(body), key=str)
    assert not errors, f"{method} {path} {resp.status_code}: " + "; ".join(e.message for e in errors)
    if resp.status_code == 429:
        assert resp.headers["Retry-After"].isdigit(), "a throttled answer carries Retry-After seconds"
    return body


NEW_USER = {"first_name": "Carla", "last_name": "Bakker", "email": "carla@example.nl", "external_application_id":
            "0d9a3f0e-9a3b-4f6c-8a1e-3b2c1d0e9f8a", "mobile_number": "+31687654321", "phone_number": "+31201112233",
            "display_name": "Carla Bakker", "job_title": "Sales", "department": "Verkoop", "language": "en"}
NEW_CONTACT = {"external_id": "graph-contact-2", "first_name": "Anna", "last_name": "Smit", "display_name": "Anna Smit",
               "company": "Smit BV", "job_title": "Inkoop", "emails": ["anna@smit.nl"],
               "phone_numbers": [{"type": "mobile", "number": "+31611122233"}, {"type": "work", "number": "+3215123456"}]}


@dataclass(frozen=True)
class Case:
    """One request, the status the contract leads us to expect, and what the body must show."""

    name: str
    method: str
    path: str  # placeholders: {account} {foreign} {missing} {user} {bob} {contact} {public} {alice_oid}
    status: int
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)
    auth: str = "header"  # header | query | wrong | none
    office365: bool = True
    fault: int | None = None  # make the simulator answer this status (throttling, outages)
    code: str | None = None  # expected error.code
    check: Callable[[Any], bool] | None = None


def _data(key: str, value: Any) -> Callable[[Any], bool]:
    return lambda body: bool(body["data"][key] == value)


def _ids(*placeholders: str) -> Callable[[Any], bool]:
    return lambda body: [item["id"] for item in body["data"]] == list(placeholders)


CASES = [
    # /accounts/{accountId}
    Case("account", "GET", "/accounts/{account}", 200,
         check=lambda b: b["data"] == {"id": ACCOUNT, "name": "Voorbeeld B.V.", "licenses": {"office365": True}}),
    Case("account without licence still answers", "GET", "/accounts/{account}", 200, office365=False,
         check=lambda b: b["data"]["licenses"]["office365"] is False),
    Case("api_key query parameter authenticates", "GET", "/accounts/{account}", 200, auth="query"),
    Case("no key", "GET", "/accounts/{account}", 401, auth="none", code="unauthorized"),
    Case("wrong key", "GET", "/accounts/{account}", 401, auth="wrong", code="unauthorized"),
    Case("account of another company", "GET", "/accounts/{foreign}", 403, code="forbidden"),
    Case("unknown account", "GET", "/accounts/{missing}", 404, code="not_found"),
    # /accounts/{accountId}/users GET
    Case("users, default page of 25", "GET", "/accounts/{account}/users", 200,
         check=lambda b: b["meta"] == {"page": 1, "per_page": 25, "total": 2} and len(b["data"]) == 2),
    Case("users filtered by email, any case", "GET", "/accounts/{account}/users", 200,
         query={"email": "ALICE@Example.NL"}, check=lambda b: [u["email"] for u in b["data"]] == ["alice@example.nl"]),
    Case("users filtered by external_application_id", "GET", "/accounts/{account}/users", 200,
         query={"external_application_id": ALICE_OID}, check=lambda b: b["meta"]["total"] == 1),
    Case("users filter without a match", "GET", "/accounts/{account}/users", 200, query={"email": "nobody@x.nl"},
         check=lambda b: b["data"] == [] and b["meta"]["total"] == 0),
    Case("users second page", "GET", "/accounts/{account}/users", 200, query={"page": "2", "per_page": "1"},
         check=lambda b: b["meta"] == {"page": 2, "per_page": 1, "total": 2} and len(b["data"]) == 1),
    Case("users per_page above 100 is clamped", "GET", "/accounts/{account}/users", 200, query={"per_page": "1000"},
         check=lambda b: b["meta"]["per_page"] == 100),
    Case("users without key", "GET", "/accounts/{account}/users", 401, auth="none", code="unauthorized"),
    Case("users of another company", "GET", "/accounts/{foreign}/users", 403, code="forbidden"),
    Case("users of an unknown account", "GET", "/accounts/{missing}/users", 404, code="not_found"),
    Case("users throttled", "GET", "/accounts/{account}/users", 429, fault=429, code="rate_limited"),
    # /accounts/{accountId}/users POST
    Case("create user", "POST", "/accounts/{account}/users", 201, body=NEW_USER,
         check=lambda b: {k: b["data"][k] for k in NEW_USER} == NEW_USER and b["data"]["active"] is True),
    Case("create user, required fields only", "POST", "/accounts/{account}/users", 201,
         body={"first_name": "Dirk", "last_name": "Visser", "email": "dirk@example.nl"},
         check=lambda b: b["data"]["external_application_id"] is None and b["data"]["language"] == "nl"),
    Case("create user without licence", "POST", "/accounts/{account}/users", 403, body=NEW_USER, office365=False,
         code="license_required"),
    Case("create user with a taken email, other case", "POST", "/accounts/{account}/users", 409,
         body={**NEW_USER, "email": "Alice@EXAMPLE.nl"}, code="email_taken"),
    Case("create user missing required fields", "POST", "/accounts/{account}/users", 422, body={"first_name": "X"},
         code="validation_failed", check=lambda b: set(b["error"]["fields"]) == {"last_name", "email"}),
    Case("create user throttled", "POST", "/accounts/{account}/users", 429, body=NEW_USER, fault=429),
    Case("create user without key", "POST", "/accounts/{account}/users", 401, body=NEW_USER, auth="none"),
    Case("create user in an unknown account", "POST", "/accounts/{missing}/users", 404, body=NEW_USER),
    # /users/{userId}
    Case("user", "GET", "/users/{user}", 200, check=_data("external_application_id", ALICE_OID)),
    Case("unknown user", "GET", "/users/{missing}", 404, code="not_found"),
    Case("user without key", "GET", "/users/{user}", 401, auth="none"),
    Case("patch user changes only the fields sent", "PATCH", "/users/{user}", 200, body={"job_title": "Directeur"},
         check=lambda b: b["data"]["job_title"] == "Directeur" and b["data"]["mobile_number"] == "+31612345678"),
    Case("patch user links the Entra object id", "PATCH", "/users/{bob}", 200,
         body={"external_application_id": ALICE_OID[::-1]}, check=_data("external_application_id", ALICE_OID[::-1])),
    Case("patch user clears a nullable field and deactivates", "PATCH", "/users/{user}", 200,
         body={"mobile_number": None, "active": False},
         check=lambda b: b["data"]["mobile_number"] is None and b["data"]["active"] is False),
    Case("patch user to own email in another case", "PATCH", "/users/{user}", 200, body={"email": "ALICE@example.nl"}),
    Case("patch unknown user", "PATCH", "/users/{missing}", 404, body={"job_title": "x"}, code="not_found"),
    Case("patch user to a taken email", "PATCH", "/users/{bob}", 409, body={"email": "alice@EXAMPLE.nl"},
         code="email_taken"),
    Case("patch user with no fields", "PATCH", "/users/{user}", 422, body={}, code="validation_failed"),
    Case("patch user throttled", "PATCH", "/users/{user}", 429, body={"job_title": "x"}, fault=429),
    # /users/{userId}/status
    Case("status", "GET", "/users/{user}/status", 200,
         check=lambda b: b["data"]["status"] == "available" and b["data"]["label"] == "Beschikbaar"),
    Case("status of unknown user", "GET", "/users/{missing}/status", 404),
    Case("set status", "PUT", "/users/{user}/status", 200, body={"status": "elsewhere"},
         check=lambda b: (b["data"]["status"], b["data"]["label"], b["data"]["changed_by"])
         == ("elsewhere", "Werkt ergens anders", "api")),
    Case("set status of unknown user", "PUT", "/users/{missing}/status", 404, body={"status": "busy"}),
    Case("set unknown status", "PUT", "/users/{user}/status", 422, body={"status": "lunch"},
         check=lambda b: "status" in b["error"]["fields"]),
    Case("set status throttled", "PUT", "/users/{user}/status", 429, body={"status": "busy"}, fault=429),
    # /users/{userId}/contacts
    Case("contacts of a user, private and public", "GET", "/users/{user}/contacts", 200,
         check=lambda b: [c["visibility"] for c in b["data"]] == ["private", "public"]),
    Case("contacts filtered by external_id", "GET", "/users/{user}/contacts", 200,
         query={"external_id": "graph-contact-1"}, check=lambda b: [c["display_name"] for c in b["data"]] ==
         ["Piet Pietersen"]),
    Case("contacts of a user without any", "GET", "/users/{bob}/contacts", 200,
         check=lambda b: b == {"data": [], "meta": {"page": 1, "per_page": 25, "total": 0}}),
    Case("contacts of unknown user", "GET", "/users/{missing}/contacts", 404),
    Case("contacts throttled", "GET", "/users/{user}/contacts", 429, fault=429),
    Case("create contact starts private", "POST", "/users/{bob}/contacts", 201, body=NEW_CONTACT,
         check=lambda b: b["data"]["visibility"] == "private" and b["data"]["phone_numbers"] ==
         NEW_CONTACT["phone_numbers"]),
    Case("create contact ignores a visibility sent anyway", "POST", "/users/{bob}/contacts", 201,
         body={**NEW_CONTACT, "visibility": "public"}, check=_data("visibility", "private")),
    Case("create contact for unknown user", "POST", "/users/{missing}/contacts", 404, body=NEW_CONTACT),
    Case("create contact without numbers in the list", "POST", "/users/{bob}/contacts", 422,
         body={**NEW_CONTACT, "phone_numbers": []}, check=lambda b: "phone_numbers" in b["error"]["fields"]),
    Case("create contact throttled", "POST", "/users/{bob}/contacts", 429, body=NEW_CONTACT, fault=429),
    # /accounts/{accountId}/contacts: the company phone book (contract 1.1)
    Case("company contacts, public and without owner", "GET", "/accounts/{account}/contacts", 200,
         check=lambda b: b == {"data": [], "meta": {"page": 1, "per_page": 25, "total": 0}}),
    Case("company contacts filtered by external_id", "GET", "/accounts/{account}/contacts", 200,
         query={"external_id": "nothing"}, check=lambda b: b["data"] == []),
    Case("company contacts without key", "GET", "/accounts/{account}/contacts", 401, auth="none"),
    Case("company contacts throttled", "GET", "/accounts/{account}/contacts", 429, fault=429),
    Case("create company contact is public with no owner", "POST", "/accounts/{account}/contacts", 201,
         body=NEW_CONTACT, check=lambda b: b["data"]["visibility"] == "public" and b["data"]["owner_user_id"] is None),
    Case("create company contact without licence", "POST", "/accounts/{account}/contacts", 403, body=NEW_CONTACT,
         office365=False, code="license_required"),
    Case("create company contact without numbers in the list", "POST", "/accounts/{account}/contacts", 422,
         body={**NEW_CONTACT, "phone_numbers": []}, check=lambda b: "phone_numbers" in b["error"]["fields"]),
    Case("create company contact throttled", "POST", "/accounts/{account}/contacts", 429, body=NEW_CONTACT, fault=429),
    # /contacts/{contactId}
    Case("contact", "GET", "/contacts/{contact}", 200, check=_data("external_id", "graph-contact-1")),
    Case("unknown contact", "GET", "/contacts/{missing}", 404),
    Case("patch contact", "PATCH", "/contacts/{contact}", 200, body={"company": "Pietersen & Zn"},
         check=lambda b: b["data"]["company"] == "Pietersen & Zn" and b["data"]["display_name"] == "Piet Pietersen"),
    Case("patch keeps a contact the user made public public", "PATCH", "/contacts/{public}", 200,
         body={"display_name": "Receptie Amsterdam", "visibility": "private"}, check=_data("visibility", "public")),
    Case("patch unknown contact", "PATCH", "/contacts/{missing}", 404, body={"company": "x"}),
    Case("patch contact with a non-E.164 number", "PATCH", "/contacts/{contact}", 422,
         body={"phone_numbers": [{"type": "work", "number": "020 123 4567"}]},
         check=lambda b: "phone_numbers[0].number" in b["error"]["fields"]),
    Case("patch contact throttled", "PATCH", "/contacts/{contact}", 429, body={"company": "x"}, fault=429),
    Case("delete contact", "DELETE", "/contacts/{contact}", 204),
    Case("delete unknown contact", "DELETE", "/contacts/{missing}", 404, code="not_found"),
    Case("delete contact throttled", "DELETE", "/contacts/{contact}", 429, fault=429),
    Case("unavailable", "GET", "/users/{user}", 503, fault=503),
]


def _concrete(path: str) -> str:
    return path.format(account=ACCOUNT, foreign=FOREIGN_ACCOUNT, missing="999999", user="1", bob="2", contact="3",
                       public="4", alice_oid=ALICE_OID)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_simulator_answers_as_the_contract_says(world: World, case: Case) -> None:
    if case.body is not None and case.status != 422:  # only the 422 cases send a body the contract forbids
        request_validator(template_of(_concrete(case.path)), case.method.lower()).validate(case.body)
    world.sim.office365 = case.office365
    if case.fault:
        world.sim.inject(case.fault, retry_after=1 if case.fault == 429 else None)
    resp = world.send(case.method, case.path, body=case.body, query=case.query, auth=case.auth)
    assert resp.status_code == case.status, resp.text
    body = check_response(case.method, case.path, resp)
    if case.code is not None:
        assert body["error"]["code"] == case.code
    if case.check is not None:
        assert case.check(body), body


def test_every_operation_and_declared_answer_is_exercised() -> None:
    exercised = {(template_of(_concrete(c.path)), c.method.lower(), c.status) for c in CASES}
    missing = declared_responses() - exercised
    assert not missing, f"no case for {sorted(missing)}"
    assert exercised >= UNDECLARED
    assert not UNDECLARED & declared_responses(), "the contract now declares these: remove them from UNDECLARED"


# -- every constraint of the request schemas is enforced ----------------------------

def _example(schema: dict[str, Any]) -> Any:
    if "$ref" in schema:
        return _example(_resolve(schema["$ref"].removeprefix("#"))[0])
    if "enum" in schema:
        return schema["enum"][0]
    if "E.164" in schema.get("description", ""):
        return "+31201234567"
    kind = schema["type"][0] if isinstance(schema["type"], list) else schema["type"]
    if kind == "object":
        return {name: _example(sub) for name, sub in schema["properties"].items() if name in schema.get("required", [])}
    return {"string": "x", "boolean": True, "integer": 1}[kind]


def violations(schema: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(property, what is wrong, bad value) for each constraint of an object schema's properties."""
    for name, prop in schema["properties"].items():
        if "$ref" in prop:
            prop = _resolve(prop["$ref"].removeprefix("#"))[0]
        types = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
        yield name, "wrong type", 12345 if "integer" not in types else "x"
        if "null" not in types:
            yield name, "null", None
        if "minLength" in prop:
            yield name, "too short", "x" * (prop["minLength"] - 1)
        if "maxLength" in prop:
            yield name, "too long", "x" * (prop["maxLength"] + 1)
        if "enum" in prop:
            yield name, "not in enum", "not-" + prop["enum"][0]
        if "array" in types:
            item_schema = prop["items"]
            item = _example(item_schema)
            if "minItems" in prop:
                yield name, "too few items", [item] * (prop["minItems"] - 1)
            if "maxItems" in prop:
                yield name, "too many items", [item] * (prop["maxItems"] + 1)
            if "$ref" in item_schema:
                item_obj = _resolve(item_schema["$ref"].removeprefix("#"))[0]
                for sub, why, bad in violations(item_obj):
                    yield name, f"item {sub} {why}", [{**item, sub: bad}]
                for req in item_obj.get("required", []):
                    yield name, f"item without {req}", [{k: v for k, v in item.items() if k != req}]
            elif item_schema.get("type") == "string":
                yield name, "item wrong type", [12345]


@dataclass(frozen=True)
class Target:
    """A write operation and a body the contract accepts, to be spoiled one property at a time."""

    method: str
    path: str
    base: dict[str, Any]

    @property
    def schema(self) -> dict[str, Any]:
        return request_schema(template_of(_concrete(self.path)), self.method.lower())


TARGETS = [
    Target("POST", "/accounts/{account}/users", {"first_name": "Eva", "last_name": "Mol", "email": "e@x.nl"}),
    Target("PATCH", "/users/{user}", {"job_title": "Sales"}),
    Target("PUT", "/users/{user}/status", {"status": "away"}),
    Target("POST", "/users/{user}/contacts",
           {"display_name": "Eva", "phone_numbers": [{"type": "work", "number": "+31201234567"}]}),
    Target("PATCH", "/contacts/{contact}", {"company": "Mol BV"}),
    Target("POST", "/accounts/{account}/contacts",
           {"display_name": "Leverancier", "phone_numbers": [{"type": "work", "number": "+31201234567"}]}),
]
INVALID_BODIES = [
    pytest.param(t, prop, {**t.base, prop: bad}, id=f"{t.method} {t.path} {prop} {why}")
    for t in TARGETS for prop, why, bad in violations(t.schema)
] + [
    pytest.param(t, prop, {k: v for k, v in t.base.items() if k != prop}, id=f"{t.method} {t.path} {prop} missing")
    for t in TARGETS for prop in t.schema.get("required", [])
]
# E.164 is a description in the contract, not a schema keyword: spelled out here.
E164_BODIES = [
    pytest.param(TARGETS[0], "mobile_number", {**TARGETS[0].base, "mobile_number": "06 12345678"}, id="user mobile"),
    pytest.param(TARGETS[1], "phone_number", {"phone_number": "0201234567"}, id="user phone"),
    pytest.param(TARGETS[3], "phone_numbers", {"phone_numbers": [{"type": "work", "number": "+31 20 123 4567"}]},
                 id="contact number"),
]


@pytest.mark.parametrize(("target", "prop", "body"), INVALID_BODIES)
def test_the_simulator_rejects_each_schema_violation(shared_world: World, target: Target, prop: str,
                                                     body: dict[str, Any]) -> None:
    template = template_of(_concrete(target.path))
    assert not request_validator(template, target.method.lower()).is_valid(body), "the case must violate the schema"
    if "email" in body and isinstance(body["email"], str) and body["email"] == "e@x.nl":
        body = {**body, "email": f"{uuid.uuid4().hex}@x.nl"}
    resp = shared_world.send(target.method, target.path, body=body)
    assert resp.status_code == 422, resp.text
    error = check_response(target.method, target.path, resp)["error"]
    assert error["code"] == "validation_failed"
    assert any(key == prop or key.startswith(prop + "[") for key in error["fields"]), error


@pytest.mark.parametrize(("target", "prop", "body"), E164_BODIES)
def test_the_simulator_rejects_numbers_that_are_not_e164(shared_world: World, target: Target, prop: str,
                                                       body: dict[str, Any]) -> None:
    resp = shared_world.send(target.method, target.path, body=body)
    assert resp.status_code == 422, resp.text
    assert any(key.startswith(prop) for key in check_response(target.method, target.path, resp)["error"]["fields"])


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.method} {t.path}")
def test_the_valid_base_bodies_are_accepted(world: World, target: Target) -> None:
    request_validator(template_of(_concrete(target.path)), target.method.lower()).validate(target.base)
    resp = world.send(target.method, target.path, body=target.base)
    assert resp.status_code in (200, 201), resp.text
    check_response(target.method, target.path, resp)


# -- the client speaks only the contract --------------------------------------------

def exercise_the_client(cv: ClearVox) -> None:
    """Every client method once, plus the error answers it has to understand."""
    cv.get_account()
    alice = cv.find_user_by_email("ALICE@example.nl")
    assert alice is not None
    assert cv.find_user_by_external_id(ALICE_OID) == alice
    assert cv.get_user(alice.id) == alice
    carla = cv.create_user({**{k: v for k, v in NEW_USER.items() if k != "external_application_id"},
                            "external_application_id": None, "department": None})
    cv.update_user(carla.id, {"job_title": "Directeur", "mobile_number": None, "active": False})
    cv.update_user(carla.id, {"external_application_id": "a2b3c4d5-0000-4000-8000-000000000001"})
    assert len(cv.list_users()) == 3
    cv.set_status(alice.id, "dnd")
    cv.get_status(alice.id)
    contact = cv.create_contact(carla.id, {"external_id": "g-1", "display_name": "Anna Smit", "first_name": None,
                                           "emails": ["anna@smit.nl"],
                                           "phone_numbers": [PhoneNumber("mobile", "+31611122233")]})
    cv.update_contact(contact.id, {"company": "Smit BV", "job_title": None, "emails": []})
    cv.get_contact(contact.id)
    assert [c.id for c in cv.iter_contacts(carla.id, external_id="g-1")] == [contact.id]
    assert len(list(cv.iter_contacts(alice.id))) == 2
    cv.delete_contact(contact.id)
    company = cv.create_company_contact({"external_id": "shared-1", "display_name": "Leverancier BV",
                                         "phone_numbers": [PhoneNumber("work", "+31201234567")]})
    assert (company.owner_user_id, company.visibility) == (None, "public")
    assert [c.id for c in cv.iter_company_contacts(external_id="shared-1")] == [company.id]
    cv.update_contact(company.id, {"company": "Leverancier BV"})
    cv.delete_contact(company.id)
    assert list(cv.iter_company_contacts()) == []
    for failing in (lambda: cv.delete_contact(contact.id), lambda: cv.get_user("999999"),
                    lambda: cv.create_user({"first_name": "A", "last_name": "B", "email": "alice@example.nl"})):
        with pytest.raises(ClearVoxError):
            failing()


def test_the_client_uses_only_the_contracts_paths_parameters_and_request_schemas(world: World) -> None:
    world.sim.clear_log()
    with ClearVox(world.sim.url, KEY, ACCOUNT, verify=ca_bundle_path()) as cv:
        exercise_the_client(cv)
    used: set[tuple[str, str]] = set()
    for entry in world.sim.requests_to():
        assert entry.path.startswith(API_ROOT + "/")
        template = template_of(entry.path.removeprefix(API_ROOT))
        method = entry.method.lower()
        assert method in SPEC["paths"][template], f"{entry.method} {template} is not in the contract"
        assert set(entry.query) <= query_parameters(template, method), f"{entry.method} {entry.path} {entry.query}"
        assert entry.status != 401, "the client authenticates with the contract's header"
        used.add((template, method))
    assert used == set(operations()), f"operations the client never used: {set(operations()) - used}"
    for write in world.sim.write_log:
        template = template_of(write.path.removeprefix(API_ROOT))
        if write.method != "DELETE":
            request_validator(template, write.method.lower()).validate(write.body)
        if "contacts" in template and isinstance(write.body, dict):
            assert "visibility" not in write.body, "the client never sends visibility"
