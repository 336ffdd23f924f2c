"""State in Azure Table Storage: cursors, links, maps, presence ledger, runs, leases.

One storage account serves every customer; each row's PartitionKey starts
with the tenant key so customers never share a partition. Tables are created
on first use. Writes of many rows go through table transactions (at most 100
operations, one partition each).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.errors import ConfigError, LeaseLost

TABLES = ("cursors", "links", "entrausers", "contactmap", "presence", "runs", "leases", "retries", "notices", "health")
_BATCH = 100
_SYSTEM = {"PartitionKey", "RowKey", "Timestamp", "etag"}
_DEV_CONNECTION = "UseDevelopmentStorage=true"
RUN_REPORT_MAX = 30000  # a Table Storage string property holds 32K characters
log = logging.getLogger("nexxt365")


def azure_credential() -> Any:
    """DefaultAzureCredential, pinned to the user-assigned identity when NEXXT365_MANAGED_IDENTITY_CLIENT_ID is set."""
    import os

    from azure.identity import DefaultAzureCredential

    client_id = (os.environ.get("NEXXT365_MANAGED_IDENTITY_CLIENT_ID") or "").strip() or None
    return DefaultAzureCredential(managed_identity_client_id=client_id)


def table_service(connection: str, credential: Any = None) -> TableServiceClient:
    """A service client from a connection string, or from a table endpoint URL with managed identity."""
    conn = connection.strip()
    try:
        if conn.lower().startswith(("https://", "http://")):
            if credential is None:
                credential = azure_credential()
            return TableServiceClient(endpoint=conn, credential=credential)
        return TableServiceClient.from_connection_string(conn)
    except ValueError:
        raise ConfigError("NEXXT365_STATE is not a valid Table Storage connection string or table endpoint URL. "
                          "Copy the connection string from the storage account's Access keys page, or use "
                          "'https://<account>.table.core.windows.net' with the managed identity.") from None


@contextmanager
def state_errors() -> Iterator[None]:
    """Turn 'cannot reach or sign in to the state storage' into a ConfigError that names NEXXT365_STATE."""
    try:
        yield
    except ClientAuthenticationError as exc:  # also a malformed AccountKey (AzureSigningError) and no managed identity
        if type(exc).__name__ == "AzureSigningError":
            reason = "the AccountKey in the connection string is not valid base64: copy it again from Access keys"
        elif isinstance(exc, HttpResponseError) and exc.status_code in (401, 403):
            reason = ("the storage refused the credential: check the connection string, or give the managed identity "
                      "the Storage Table Data Contributor role")
        else:
            reason = ("no credential for the table endpoint: in Azure set NEXXT365_MANAGED_IDENTITY_CLIENT_ID to the "
                      "function app's identity, elsewhere use a connection string")
        raise ConfigError(f"The state storage (NEXXT365_STATE) cannot be used: {reason}.") from None
    except ServiceRequestError:
        raise ConfigError("The state storage (NEXXT365_STATE) cannot be reached: with 'UseDevelopmentStorage=true' start "
                          "Azurite (the storage emulator); otherwise check the account name and the network.") from None


def _clean(props: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in props.items():
        if key in _SYSTEM or value is None:
            continue
        if isinstance(value, dict | list | tuple):
            value = json.dumps(value)
        out[key] = value
    return out


def _plain(entity: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entity.items() if k not in _SYSTEM}


def _safe_key(key: str) -> str:
    """RowKey/PartitionKey may not contain / \\ # ? or control characters."""
    return "".join("_" if c in "/\\#?" or ord(c) < 32 else c for c in key)


class Store:
    """Table clients for one storage account, shared by every tenant in a process."""

    def __init__(self, connection: str, credential: Any = None, prefix: str = "nexxt365") -> None:
        self.service = table_service(connection, credential)
        self.prefix = prefix
        self._tables: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    def table(self, name: str) -> TableClient:
        with self._lock:
            client = self._tables.get(name)
            if client is None:
                client = self.service.get_table_client(f"{self.prefix}{name}")
                try:
                    with state_errors():
                        client.create_table()
                except ResourceExistsError:
                    pass
                except HttpResponseError as exc:
                    if exc.status_code in (401, 403):
                        raise ConfigError(
                            "The state storage refused access (NEXXT365_STATE): check the connection string, or give the "
                            "managed identity the Storage Table Data Contributor role."
                        ) from None
                    raise
                self._tables[name] = client
            return client

    def for_tenant(self, tenant_key: str) -> State:
        return State(self, tenant_key)


def fit_report(report: Mapping[str, Any], limit: int = RUN_REPORT_MAX) -> str:
    """The report as JSON of at most `limit` characters: the longest lists lose their tail first.

    `truncated` then says, per list, how many entries were left out.
    """
    body = json.dumps(report, default=str)
    if len(body) <= limit:
        return body
    doc = dict(report)
    lists = {k: list(v) for k, v in doc.items() if isinstance(v, list)}
    left_out = dict.fromkeys(lists, 0)
    while len(body) > limit and any(lists.values()):
        longest = max(lists, key=lambda k: len(json.dumps(lists[k], default=str)))
        drop = max(1, len(lists[longest]) // 4)
        del lists[longest][-drop:]
        left_out[longest] += drop
        doc |= lists
        doc["truncated"] = {k: n for k, n in left_out.items() if n}
        body = json.dumps(doc, default=str)
    if len(body) > limit:  # the counts alone are too long: keep only numbers and short texts
        body = json.dumps({k: v for k, v in doc.items() if isinstance(v, int | float | bool) or
                           (isinstance(v, str) and len(v) < 1000)} | {"truncated": True})
    return body


@dataclass(frozen=True)
class Lease:
    sync: str
    owner: str
    expires: datetime
    since: datetime | None = None
    etag: str = ""


class State:
    """The rows of one tenant. Keys are RowKeys; `scope` sub-partitions a table (e.g. per user)."""

    def __init__(self, store: Store, tenant_key: str) -> None:
        self.store = store
        self.tenant_key = tenant_key

    def _pk(self, scope: str) -> str:
        return _safe_key(f"{self.tenant_key}|{scope}" if scope else self.tenant_key)

    # -- generic rows ----------------------------------------------------
    def rows(self, table: str, scope: str = "") -> dict[str, dict[str, Any]]:
        pk = self._pk(scope)
        entities = self.store.table(table).query_entities("PartitionKey eq @pk", parameters={"pk": pk})
        return {str(e["RowKey"]): _plain(e) for e in entities}

    def get(self, table: str, key: str, scope: str = "") -> dict[str, Any] | None:
        try:
            return _plain(self.store.table(table).get_entity(self._pk(scope), _safe_key(key)))
        except ResourceNotFoundError:
            return None

    def upsert(self, table: str, rows: Mapping[str, Mapping[str, Any]], scope: str = "") -> None:
        pk = self._pk(scope)
        ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            ("upsert", {"PartitionKey": pk, "RowKey": _safe_key(k), **_clean(v)}, {"mode": UpdateMode.MERGE}) for k, v in rows.items()
        ]
        self._submit(table, ops)

    def replace(self, table: str, rows: Mapping[str, Mapping[str, Any]], scope: str = "") -> None:
        """Upsert that drops properties not given (for rows whose optional fields may disappear)."""
        pk = self._pk(scope)
        ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            ("upsert", {"PartitionKey": pk, "RowKey": _safe_key(k), **_clean(v)}, {"mode": UpdateMode.REPLACE}) for k, v in rows.items()
        ]
        self._submit(table, ops)

    def delete(self, table: str, keys: Iterable[str], scope: str = "") -> None:
        pk = self._pk(scope)
        client = self.store.table(table)
        for key in keys:
            try:
                client.delete_entity(pk, _safe_key(key))
            except ResourceNotFoundError:
                pass

    def _submit(self, table: str, ops: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        client = self.store.table(table)
        for i in range(0, len(ops), _BATCH):
            chunk = ops[i : i + _BATCH]
            if len(chunk) == 1:
                _, entity, kw = chunk[0]
                client.upsert_entity(entity, **kw)
            else:
                client.submit_transaction(chunk)  # type: ignore[arg-type]

    # -- cursors ---------------------------------------------------------
    def cursor(self, name: str) -> dict[str, Any] | None:
        return self.get("cursors", name)

    def set_cursor(self, name: str, delta_link: str, **extra: Any) -> None:
        self.replace("cursors", {name: {"delta_link": delta_link, "updated_at": datetime.now(UTC), **extra}})

    def clear_cursor(self, name: str) -> None:
        self.delete("cursors", [name])

    # -- runs ------------------------------------------------------------
    def save_run(self, sync: str, report: Mapping[str, Any]) -> None:
        """Newest first: RowKey sorts by inverted time; a random tail keeps two runs of the same millisecond
        (parts of a split calendar run) apart. A report too large for one row keeps its lists, shortened."""
        now = datetime.now(UTC)
        inverted = f"{10**13 - int(now.timestamp() * 1000):013d}"
        key = f"{inverted}-{sync}-{uuid.uuid4().hex[:8]}"
        self.upsert("runs", {key: {"sync": sync, "at": now, "report": fit_report(report)}})

    def newest_run(self, sync: str) -> tuple[datetime | None, dict[str, Any] | None]:
        """(when, report) of the newest stored run of `sync`: the first row of a filtered page of one,
        since RowKeys sort newest first."""
        rows = self.store.table("runs").query_entities("PartitionKey eq @pk and sync eq @sync",
                                                       parameters={"pk": self._pk(""), "sync": sync},
                                                       results_per_page=1, select=["at", "report"])
        row = next(iter(rows), None)
        if row is None:
            return None, None
        try:
            report = json.loads(str(row.get("report") or "{}"))
        except ValueError:
            report = {}
        at = row.get("at")
        return (at if isinstance(at, datetime) else None), (report if isinstance(report, dict) else {})

    # -- leases ----------------------------------------------------------
    def acquire_lease(self, sync: str, duration: timedelta, owner: str | None = None) -> Lease | None:
        """Take the (tenant, sync) lease, or None when another live run holds it.

        Insert when absent; take over an expired lease only with the ETag we
        read, so of two racing runs exactly one wins.
        """
        client = self.store.table("leases")
        owner = owner or uuid.uuid4().hex
        now = datetime.now(UTC)
        entity = {"PartitionKey": self._pk(""), "RowKey": sync, "owner": owner, "since": now, "expires": now + duration}
        try:
            meta = client.create_entity(entity)
            return Lease(sync, owner, now + duration, now, str(meta.get("etag") or ""))
        except ResourceExistsError:
            pass
        try:
            current = client.get_entity(self._pk(""), sync)
        except ResourceNotFoundError:
            return None  # released meanwhile; the next timer tick will take it
        expires = current.get("expires")
        if isinstance(expires, datetime) and expires > now:
            return None
        try:
            meta = client.update_entity(entity, mode=UpdateMode.REPLACE, etag=current.metadata["etag"],
                                        match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, HttpResponseError) as exc:
            if isinstance(exc, ResourceModifiedError) or exc.status_code == 412:
                return None
            raise
        return Lease(sync, owner, now + duration, now, str(meta.get("etag") or ""))

    def lease_holder(self, sync: str) -> tuple[datetime | None, datetime | None] | None:
        """(since, until) of the lease another run holds, or None when it is free."""
        try:
            row = self.store.table("leases").get_entity(self._pk(""), sync)
        except ResourceNotFoundError:
            return None
        since, until = row.get("since"), row.get("expires")
        return (since if isinstance(since, datetime) else None, until if isinstance(until, datetime) else None)

    def renew_lease(self, lease: Lease, duration: timedelta) -> Lease:
        """Extend our lease; LeaseLost when another run took it over meanwhile (its row changed)."""
        now = datetime.now(UTC)
        entity = {"PartitionKey": self._pk(""), "RowKey": lease.sync, "owner": lease.owner,
                  "since": lease.since or now, "expires": now + duration}
        try:
            meta = self.store.table("leases").update_entity(entity, mode=UpdateMode.REPLACE, etag=lease.etag,
                                                            match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise LeaseLost(f"the {lease.sync} lease was taken over by another run") from exc
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                raise LeaseLost(f"the {lease.sync} lease was taken over by another run") from exc
            raise
        return Lease(lease.sync, lease.owner, now + duration, lease.since, str(meta.get("etag") or ""))

    def release_lease(self, lease: Lease) -> None:
        client = self.store.table("leases")
        try:
            current = client.get_entity(self._pk(""), lease.sync)
        except ResourceNotFoundError:
            return
        if current.get("owner") != lease.owner:
            return
        try:
            client.delete_entity(self._pk(""), lease.sync, etag=current.metadata["etag"], match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError, HttpResponseError):
            pass


class LeaseKeeper:
    """Keeps a run's lease alive: renews it every third of its length from a thread. When a renewal
    finds the lease taken over, or cannot renew it before it expires, the lease is lost and
    `check()` raises LeaseLost, so the run stops writing. A run that dies stops renewing, and its
    lease is taken over once it expires (at most `duration` later)."""

    def __init__(self, state: State, lease: Lease, duration: timedelta) -> None:
        self.state = state
        self.lease = lease
        self.duration = duration
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{lease.sync}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.lost is None:
            try:
                self.state.release_lease(self.lease)
            except Exception:  # the lease expires by itself
                log.warning("nexxt365 could not release the %s lease; it expires by itself", self.lease.sync)

    def check(self) -> None:
        if self.lost is not None:
            raise LeaseLost(f"{self.lost}; this run stopped writing so two runs never write at once")

    def renew(self) -> None:
        """One renewal (the heartbeat's step; tests call it directly)."""
        try:
            self.lease = self.state.renew_lease(self.lease, self.duration)
        except LeaseLost as exc:
            self.lost = str(exc)
        except Exception as exc:  # storage hiccup: try again on the next beat, unless it is too late
            if datetime.now(UTC) >= self.lease.expires:
                self.lost = f"the {self.lease.sync} lease could not be renewed before it expired ({type(exc).__name__})"

    def _beat(self) -> None:
        while self.lost is None and not self._stop.wait(self.duration.total_seconds() / 3):
            self.renew()
