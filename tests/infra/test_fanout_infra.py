"""Infra of the queue fan-out: the queues of every sync (and their -poison queues), the identity-based
queue connection, the queue role and NEXXT365_FANOUT."""

from __future__ import annotations

from shared.queues import POISON_SUFFIX
from shared.sync.base import syncs
from tests.infra.helpers import MAIN, MODULES, parse, resources, variable

QUEUE_ROLE = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"  # Storage Queue Data Contributor


def test_storage_creates_each_syncs_queue_and_its_poison_queue() -> None:
    tree = parse(MODULES / "storage.bicep")
    wanted = {name for spec in syncs() for name in (spec.queue, spec.queue + POISON_SUFFIX)}
    assert set(variable(tree, "fanoutQueues")) == wanted
    types = {r["type"] for r in resources(tree).values()}
    assert "Microsoft.Storage/storageAccounts/queueServices/queues" in types


def test_queue_connection_is_identity_based_and_fanout_is_set() -> None:
    settings = variable(parse(MAIN), "appSettings")
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert "AzureWebJobsStorage__queueServiceUri" in settings and "AzureWebJobsStorage" not in settings
    assert settings["NEXXT365_FANOUT"] == "fanout"
    decorators = parse(MAIN)["parameters"]["fanout"]["decorators"]
    assert {"type": "allowed", "argument": ["", "inline", "queue"]} in decorators


def test_the_app_identity_may_use_the_queues_of_its_storage_account() -> None:
    tree = parse(MODULES / "roles.bicep")
    assert variable(tree, "storageQueueDataContributor") == QUEUE_ROLE
    grants = [r["body"] for r in resources(tree).values()
              if r["body"].get("properties", {}).get("principalId") == "appPrincipalId" and r["condition"] is None]
    assert any(g["scope"] == "storage" and "storageQueueDataContributor" in str(g["properties"]["roleDefinitionId"])
               for g in grants)
