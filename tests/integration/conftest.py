"""Real parts for integration tests: Azurite (tables and queues), the Graph and ClearVox simulators over HTTPS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.storage.queue import QueueServiceClient

from shared import http
from shared.sandbox.azurite import Azurite
from shared.sandbox.world import World
from shared.state import Store


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite(queue=True) as az:
        yield az


@pytest.fixture
def queues(azurite: Azurite) -> QueueServiceClient:
    """Azurite's queue service with every nexxt365 queue emptied: the queue names are fixed, so tests clear them."""
    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    for queue in service.list_queues(name_starts_with="nexxt365-"):
        service.get_queue_client(queue.name).clear_messages()
    return service


@pytest.fixture
def store(azurite: Azurite) -> Store:
    """A fresh set of tables per test (unique prefix), so tests never see each other's state."""
    return Store(azurite.connection_string, prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Both simulators with an app registration; the process trusts the sandbox CA."""
    with World() as w:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", w.verify)
        yield w


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits (Retry-After, back-off) are recorded instead of slept: no test waits for real."""
    recorded: list[float] = []
    monkeypatch.setattr(http, "wait", recorded.append)
    return recorded
