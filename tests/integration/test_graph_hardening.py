"""The Graph client against hostile or broken answers: links to other hosts, looping pages,
secrets echoed by the token endpoint, credentials in URLs, malformed JSON."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from shared.errors import ConfigError, GraphAuthError, GraphError, GraphItemError, GraphUnavailable
from shared.graph.client import Graph
from shared.sandbox.server import Request, Response, SimServer
from shared.sandbox.world import World


def graph(world: World, **tenant_changes: object) -> Graph:
    return Graph(replace(world.tenant, **tenant_changes), verify=world.verify, max_retry_after=0)  # type: ignore[arg-type]


class Evil(SimServer):
    """Another HTTPS host that records every Authorization header it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.authorizations: list[str] = []
        self.hits = threading.Event()

    def handle(self, req: Request) -> Response:
        self.authorizations.append(req.headers.get("authorization", ""))
        self.hits.set()
        return Response(200, {"value": [], "@odata.deltaLink": "https://evil.example/next"})


@pytest.fixture
def evil() -> Iterator[Evil]:
    with Evil() as server:
        yield server


# -- the token follows only links to the configured Graph root ----------------------------------

def test_a_stored_delta_link_to_another_host_is_refused_without_sending_the_token(world: World, evil: Evil) -> None:
    g = graph(world)
    for link in (f"{evil.url}/v1.0/users/delta?$deltatoken=x", "http://evil.example/v1.0/users/delta",
                 world.graph.url.replace("https://", "http://") + "/v1.0/users/delta?$deltatoken=x"):
        with pytest.raises(ConfigError) as err:
            g.delta(link, origin="state row users/cursor")
        assert "state row users/cursor" in str(err.value)
        assert "NEXXT365_GRAPH_URL" in str(err.value)
    with pytest.raises(ConfigError):
        g.delta_many({"a": f"{evil.url}/v1.0/users/x/contactFolders/y/contacts/delta"}, origin="state row a")
    assert evil.authorizations == []
    assert "127.0.0.1" in str(err.value) or "evil" in str(err.value)


def test_a_next_link_to_another_host_is_refused_naming_the_response(world: World, evil: Evil) -> None:
    world.graph.add_user(displayName="A", mail="a@contoso.nl")

    def away(req: Request, resp: Response) -> Response:
        resp.body["@odata.nextLink"] = f"{evil.url}/v1.0/users?$skiptoken=steal"
        return resp

    world.graph.rewrite(away, count=3, match=lambda r: r.path.endswith("/users"))
    with pytest.raises(GraphUnavailable) as err:
        list(graph(world).iter_items("/users"))
    assert "/users" in str(err.value) and "127.0.0.1" in str(err.value)
    assert evil.authorizations == []


# -- looping pages ----------------------------------------------------------------------------

def test_a_next_link_pointing_back_to_itself_is_an_error_not_a_loop(world: World) -> None:
    world.graph.add_user(displayName="A", mail="a@contoso.nl")
    root = world.graph.url

    def loop(req: Request, resp: Response) -> Response:
        return Response(200, {"value": [], "@odata.nextLink": f"{root}{req.path}?$skiptoken=same"})

    world.graph.rewrite(loop, count=100, match=lambda r: r.path.endswith("/users") or r.path.endswith("/delta"))
    g = graph(world)
    with pytest.raises(GraphUnavailable, match="/users"):
        list(g.iter_items("/users"))
    with pytest.raises(GraphUnavailable, match="/users/delta"):
        g.delta("/users/delta")
    assert len(world.graph.requests_to()) < 10


def test_a_delta_round_through_batch_that_repeats_a_link_is_that_rounds_error(world: World) -> None:
    uid = world.graph.add_user(displayName="A", mail="a@contoso.nl")
    root = world.graph.url

    def loop(req: Request, resp: Response) -> Response:
        link = f"{root}/v1.0/users/{uid}/contactFolders/contacts/contacts/delta?$skiptoken=s"
        return Response(200, {"responses": [{"id": item["id"], "status": 200, "body": {"value": [], "@odata.nextLink": link}}
                                            for item in req.json()["requests"]]})

    world.graph.rewrite(loop, count=100, match=lambda r: r.path.endswith("$batch"))
    result = graph(world).delta_many({uid: f"/users/{uid}/contactFolders/contacts/contacts/delta"})
    assert isinstance(result[uid], GraphUnavailable)
    assert "contacts/delta" in str(result[uid])
    assert len(world.graph.requests_to()) < 10


def test_pages_are_capped_by_what_the_data_can_need(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.graph.client as client

    world.graph.add_user(displayName="A", mail="a@contoso.nl")
    counter = iter(range(10**6))

    def fresh(req: Request, resp: Response) -> Response:
        return Response(200, {"value": [], "@odata.nextLink": f"{world.graph.url}{req.path}?$skiptoken={next(counter)}"})

    world.graph.rewrite(fresh, count=100, match=lambda r: r.path.endswith("/users"))
    monkeypatch.setattr(client, "MAX_PAGES", 5)
    with pytest.raises(GraphUnavailable, match="pages"):
        list(graph(world).iter_items("/users"))


# -- secrets echoed by the token endpoint, credentials in URLs ----------------------------------

def test_a_secret_echoed_by_the_token_endpoint_reaches_no_message_or_log(world: World,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = world.secret

    def echo(req: Request, resp: Response) -> Response:
        return Response(401, {"error": f"invalid_client {secret}", "error_codes": [7000215],
                              "error_description": f"AADSTS7000215: Invalid client secret {secret} provided."})

    world.graph.rewrite(echo, count=5, match=lambda r: r.path.endswith("/token"))
    g = graph(world, client_secret=lambda: secret)
    g.reuse_tokens = False
    with pytest.raises(GraphAuthError) as err:
        g.token()
    world.graph.rewrite(lambda req, resp: Response(400, {"error": "x", "error_description": f"bad {secret}"}),
                        count=5, match=lambda r: r.path.endswith("/token"))
    g2 = graph(world, client_secret=lambda: secret)
    g2.reuse_tokens = False
    with pytest.raises(GraphAuthError) as err2:
        g2.token()
    logging.getLogger("msal.application").debug("msal would say %s", secret)
    assert secret not in str(err.value) and secret not in str(err2.value)
    assert secret not in caplog.text
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_a_graph_error_echoing_the_token_is_scrubbed(world: World) -> None:
    g = graph(world)
    token = g.token()
    world.graph.rewrite(lambda req, resp: Response(400, {"error": {"code": f"x{token}", "message": f"Bearer {token}"}}),
                        match=lambda r: r.path.endswith("/users"))
    with pytest.raises(GraphError) as err:
        g.get("/users")
    assert token not in str(err.value) and token not in err.value.code


@pytest.mark.parametrize("field", ["graph_url", "authority_host"])
def test_credentials_in_graph_urls_are_refused_naming_the_setting(world: World, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        graph(world, **{field: "https://admin:hunter2x@graph.microsoft.com"})
    assert ("NEXXT365_GRAPH_URL" if field == "graph_url" else "NEXXT365_AUTHORITY_HOST") in str(err.value)
    assert "hunter2x" not in str(err.value)


# -- malformed answers ------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"<html>proxy</html>", b"null", {"value": "x"}, {"value": [1, 2]}, [1]])
def test_a_malformed_collection_is_graph_unavailable_saying_what_came(world: World, body: Any) -> None:
    world.graph.rewrite(lambda req, resp: Response(200, body), match=lambda r: r.path.endswith("/users"))
    with pytest.raises(GraphUnavailable) as err:
        list(graph(world).iter_items("/users"))
    assert "/users" in str(err.value)


@pytest.mark.parametrize("body", [{"responses": "x"}, b"<html/>", {"nothing": 1}, {"responses": [{"status": 200}]}])
def test_batch_garbage_is_an_error_for_each_request(world: World, body: Any) -> None:
    uid = world.graph.add_user(displayName="A", mail="a@contoso.nl")
    world.graph.rewrite(lambda req, resp: Response(200, body), count=10, match=lambda r: r.path.endswith("$batch"))
    result = graph(world).delta_many({uid: f"/users/{uid}/contactFolders/contacts/contacts/delta"})
    assert isinstance(result[uid], GraphError)


@pytest.mark.parametrize("item", [{"status": "abc", "body": {}}, {"status": 200, "body": "x"}, {"status": 200}])
def test_a_garbled_batch_item_is_that_items_error(world: World, item: dict[str, Any]) -> None:
    uid = world.graph.add_user(displayName="A", mail="a@contoso.nl")
    world.graph.rewrite(lambda req, resp: Response(200, {"responses": [{"id": uid, **item}]}), count=10,
                        match=lambda r: r.path.endswith("$batch"))
    result = graph(world).delta_many({uid: f"/users/{uid}/contactFolders/contacts/contacts/delta"})
    assert isinstance(result[uid], GraphItemError)


def test_contact_folder_paging_that_repeats_a_link_is_that_users_error(world: World) -> None:
    from shared.graph.contacts import Folders, discover_folders

    uid = world.graph.add_user(displayName="A", mail="a@contoso.nl")
    other = world.graph.add_user(displayName="B", mail="b@contoso.nl")
    root = world.graph.url

    def loop(req: Request, resp: Response) -> Response:
        urls = {r["id"]: r["url"] for r in req.json()["requests"]}
        for item in resp.body["responses"]:
            if urls[item["id"]].startswith(f"/users/{uid}/contactFolders?"):  # the first user's folder listing
                item["body"]["@odata.nextLink"] = f"{root}/v1.0/users/{uid}/contactFolders?$skiptoken=again"
        return resp

    world.graph.rewrite(loop, count=100, match=lambda r: r.path.endswith("$batch"))
    found = discover_folders(graph(world), [uid, other])
    assert isinstance(found[uid], GraphUnavailable) and "repeated" in str(found[uid])
    assert isinstance(found[other], Folders)
    assert len(world.graph.requests_to()) < 10


def test_graph_posts_are_reads_and_stay_retried(world: World) -> None:
    uid = world.graph.add_user(displayName="A", mail="a@contoso.nl")
    world.graph.inject(503, count=1, match=lambda r: r.path.endswith("$batch"))
    result = graph(world).delta_many({uid: f"/users/{uid}/contactFolders/contacts/contacts/delta"})
    assert not isinstance(result[uid], GraphError)
    assert [r.status for r in world.graph.requests_to(lambda r: r.path.endswith("$batch"))] == [503, 200]


@pytest.mark.parametrize("body", [b"<html/>", b"null", {"value": "x"}, {"value": [7, {"scheduleId": "a@contoso.nl", "error": "?"}]}])
def test_a_malformed_get_schedule_answer_is_each_mailboxs_error(world: World, body: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.graph.schedule import get_schedule

    for e in ("a@contoso.nl", "b@contoso.nl"):
        world.graph.add_user(displayName=e, mail=e, userPrincipalName=e)
    world.graph.rewrite(lambda req, resp: Response(200, body), count=10, match=lambda r: r.path.endswith("getSchedule"))
    now = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
    result = get_schedule(graph(world), ["a@contoso.nl", "b@contoso.nl"], now, now + timedelta(minutes=15))
    assert isinstance(result["a@contoso.nl"], GraphError)
    assert all(isinstance(v, GraphError) for v in result.values())
