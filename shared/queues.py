"""Storage queue clients for the fan-out, on the account the queue triggers listen to.

The queue-triggered functions use the connection `AzureWebJobsStorage`, so the
dispatcher must put its messages on that account:

- `AzureWebJobsStorage` as a connection string (Azurite, a laptop), or
- identity-based: `AzureWebJobsStorage__queueServiceUri` (what infra/main.bicep
  sets), else `AzureWebJobsStorage__accountName`, with the managed identity
  (`NEXXT365_MANAGED_IDENTITY_CLIENT_ID`), or
- on a laptop without those: `NEXXT365_STATE` when it is a connection string
  that names a queue endpoint (or is the Azurite shorthand).

Messages are base64 text, the queue trigger's default `messageEncoding`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigError

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient, QueueServiceClient

    from shared.settings import Settings

CONNECTION = "AzureWebJobsStorage"  # the queue triggers' `connection`, fixed in the function folders
POISON_SUFFIX = "-poison"  # where the host moves a message after 5 failed dequeues
_clients: dict[tuple[str, str], QueueClient] = {}
_created: set[tuple[str, str]] = set()
_lock = threading.Lock()


def queue_endpoint(settings: Settings) -> str:
    """The connection string or queue endpoint URL the dispatcher and the workers use."""
    for value in (settings.get(CONNECTION), settings.get(f"{CONNECTION}__queueServiceUri")):
        if value and value.strip():
            return value.strip()
    account = (settings.get(f"{CONNECTION}__accountName") or "").strip()
    if account:
        return f"https://{account}.queue.core.windows.net"
    state = (settings.get("NEXXT365_STATE") or "").strip()
    if "QueueEndpoint=" in state or state == "UseDevelopmentStorage=true":
        return state
    raise ConfigError(
        "Queue fan-out needs the storage account of the queue triggers: set AzureWebJobsStorage (a connection string, "
        "e.g. 'UseDevelopmentStorage=true' for Azurite) or AzureWebJobsStorage__queueServiceUri "
        "('https://<account>.queue.core.windows.net', used with the managed identity), or set NEXXT365_FANOUT=inline.")


def queue_service(settings: Settings, credential: Any = None, **options: Any) -> QueueServiceClient:
    """The queue service client; `options` go to the Azure SDK client (e.g. retry_total)."""
    from azure.storage.queue import QueueServiceClient

    endpoint = queue_endpoint(settings)
    if endpoint.lower().startswith(("https://", "http://")):
        if credential is None:
            from shared.state import azure_credential

            credential = azure_credential()
        return QueueServiceClient(endpoint, credential=credential, **options)
    try:
        return QueueServiceClient.from_connection_string(endpoint, **options)
    except ValueError:
        raise ConfigError(f"{CONNECTION} is not a valid storage connection string.") from None


def queue_client(settings: Settings, name: str) -> QueueClient:
    """One client per (account, queue) and process, created on first use; the queue is created when missing
    (infra creates them in Azure; Azurite and a fresh account start empty)."""
    from azure.core.exceptions import HttpResponseError, ResourceExistsError
    from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

    key = (queue_endpoint(settings), name)
    with _lock:
        client = _clients.get(key)
        if client is None:
            service = queue_service(settings)
            client = service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy(),
                                              message_decode_policy=TextBase64DecodePolicy())
            _clients[key] = client
        if key not in _created:
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            except HttpResponseError as exc:
                if exc.status_code in (401, 403):
                    raise ConfigError(f"The storage account refused access to queue {name}: give the function app's identity "
                                      "the Storage Queue Data Contributor role (infra/modules/roles.bicep).") from None
                raise
            _created.add(key)
    return client


def poison_count(settings: Settings, queue: str) -> int:
    """Approximately how many messages of this queue were moved to its poison queue (for `nexxt365 status`); 0 when
    there is no such queue. Asks once, without the SDK's retries, so a status without queues stays quick."""
    from azure.core.exceptions import ResourceNotFoundError

    service = queue_service(settings, retry_total=0, connection_timeout=5)
    try:
        properties = service.get_queue_client(queue + POISON_SUFFIX).get_queue_properties()
    except ResourceNotFoundError:
        return 0
    return int(properties.approximate_message_count or 0)
