"""A sandbox world: the Graph and ClearVox simulators, Azurite, and a Tenant pointing at them.

Tests, `nexxt365 demo` and bench/ all build on this, so they exercise the
same code path as production: msal against a token endpoint, HTTPS with
certificate verification, Table Storage through azure-data-tables.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace
from typing import Any

from shared.sandbox.clearvox_sim import ClearVoxSim
from shared.sandbox.graph_sim import GraphSim
from shared.sandbox.identity_sim import IdentitySim, ManagedIdentity
from shared.sandbox.tls import ca_bundle_path
from shared.settings import Options, Tenant


class World:
    """Both simulators plus an app registration; `tenant` is the matching Tenant config.

    `secretless=True`: the app registration has no secret; a federated credential trusts a managed
    identity of the identity endpoint simulator (`identity`), whose `env()` the process must carry.
    """

    def __init__(self, *, latency: float = 0.0, graph_latency: float | None = None, cv_latency: float | None = None,
                 options: Options | None = None, secretless: bool = False, **graph_kwargs: Any) -> None:
        self.secret = "sim-" + secrets.token_urlsafe(24)
        self.graph = GraphSim(latency=latency if graph_latency is None else graph_latency, **graph_kwargs)
        self.clearvox = ClearVoxSim(latency=latency if cv_latency is None else cv_latency,
                                    api_key="cv-" + secrets.token_urlsafe(24))
        self.client_id = self.graph.add_app(str(uuid.uuid4()), secret=None if secretless else self.secret)
        self.identity_sim = IdentitySim() if secretless else None
        self.identity: ManagedIdentity | None = self.identity_sim.federate(self.graph, self.client_id) if self.identity_sim else None
        self.verify = ca_bundle_path()
        self._options = options or Options()

    def start(self) -> World:
        self.graph.start()
        self.clearvox.start()
        if self.identity_sim:
            self.identity_sim.start()
        return self

    def stop(self) -> None:
        self.graph.stop()
        self.clearvox.stop()
        if self.identity_sim:
            self.identity_sim.stop()

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def tenant(self) -> Tenant:
        secret, api_key = self.secret, self.clearvox.api_key
        return Tenant(
            key=self.graph.tenant_id.replace("-", ""),
            tenant=self.graph.tenant_id,
            client_id=self.client_id,
            client_secret=None if self.identity else lambda: secret,
            managed_identity_client_id=self.identity.client_id if self.identity else None,
            clearvox_url=self.clearvox.url,
            clearvox_api_key=lambda: api_key,
            clearvox_account=self.clearvox.account_id,
            authority_host=self.graph.url,
            graph_url=self.graph.url,
            options=self._options,
        )

    def tenant_with(self, **options: Any) -> Tenant:
        return replace(self.tenant, options=replace(self._options, **options))

    def env(self, state: str) -> dict[str, str]:
        """App settings for this world, as the CLI reads them (the identity endpoint's are in `identity_sim.env()`)."""
        sign_in = ({"NEXXT365_CLIENT_ASSERTION": "managed-identity", "NEXXT365_MANAGED_IDENTITY_CLIENT_ID": self.identity.client_id}
                   if self.identity else {"NEXXT365_CLIENT_SECRET": self.secret})
        return {
            "NEXXT365_TENANT": f"{self.graph.url}/{self.graph.tenant_id}/oauth2/v2.0/token",
            "NEXXT365_CLIENT_ID": self.client_id,
            **sign_in,
            "NEXXT365_CLEARVOX_URL": self.clearvox.url,
            "NEXXT365_CLEARVOX_API_KEY": self.clearvox.api_key,
            "NEXXT365_CLEARVOX_ACCOUNT": self.clearvox.account_id,
            "NEXXT365_AUTHORITY_HOST": self.graph.url,
            "NEXXT365_GRAPH_URL": self.graph.url,
            "NEXXT365_STATE": state,
            "REQUESTS_CA_BUNDLE": self.verify,
        }

