"""The one factory of the Graph and ClearVox clients of a tenant, closed after use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.clearvox import ClearVox
from shared.graph.client import Graph
from shared.settings import Tenant


def clearvox_client(tenant: Tenant, verify: str | bool | None = None) -> ClearVox:
    """A ClearVox client sized to the tenant's write concurrency; `verify` None honours REQUESTS_CA_BUNDLE."""
    return ClearVox(tenant.clearvox_url, tenant.clearvox_api_key(), tenant.clearvox_account, verify=verify,
                    pool_size=max(tenant.options.clearvox_concurrency * 2, 8))


@contextmanager
def clients(tenant: Tenant, verify: str | bool | None = None, *, graph_max_retry_after: float = 60.0,
            reuse_tokens: bool = True) -> Iterator[tuple[Graph, ClearVox]]:
    """Both clients of one run; their connection pools are closed when the run ends."""
    graph = Graph(tenant, verify=verify, max_retry_after=graph_max_retry_after, reuse_tokens=reuse_tokens)
    try:
        with clearvox_client(tenant, verify) as cv:
            yield graph, cv
    finally:
        graph.close()


@contextmanager
def clearvox(tenant: Tenant, verify: str | bool | None = None) -> Iterator[ClearVox]:
    with clearvox_client(tenant, verify) as cv:
        yield cv
