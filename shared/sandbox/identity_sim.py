"""The managed identity endpoint of App Service and Azure Functions, simulated on 127.0.0.1.

In a function app, `IDENTITY_ENDPOINT` (an http URL on localhost) and `IDENTITY_HEADER` (a
secret) are set; azure-identity's ManagedIdentityCredential (through msal's
ManagedIdentityClient) asks `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...&client_id=...`
with the header `X-IDENTITY-HEADER`, and gets `{"access_token", "expires_on" (epoch seconds as a
string), "resource", "token_type", "client_id"}`. An unknown identity gets HTTP 400
"Unable to load the proper Managed Identity.", as App Service answers.

The token is an RS256 JWT as Entra issues it for `api://AzureADTokenExchange`: issuer
`https://login.microsoftonline.com/<home tenant>/v2.0`, subject and oid the identity's principal
(object) ID. `federate()` registers this issuer's keys and a federated identity credential with
the Graph simulator, so that it can verify the assertion like Entra does.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.sandbox.server import Request, Response, SimServer

if TYPE_CHECKING:
    from shared.sandbox.graph_sim import GraphSim

TOKEN_EXCHANGE = "api://AzureADTokenExchange"
API_VERSION = "2019-08-01"


@dataclass(frozen=True)
class ManagedIdentity:
    """A user-assigned identity: its client ID (what the app settings name) and principal (object) ID (the subject)."""

    client_id: str
    principal_id: str


class IdentitySim(SimServer):
    """`IDENTITY_ENDPOINT` for user-assigned identities of one home tenant; `env()` gives the two variables."""

    def __init__(self, home_tenant: str | None = None, *, token_lifetime: int = 86_400, latency: float = 0.0) -> None:
        super().__init__(latency=latency, tls=False)  # App Service's endpoint is plain http on localhost too
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.home_tenant = home_tenant or str(uuid.uuid4())
        self.issuer = f"https://login.microsoftonline.com/{self.home_tenant}/v2.0"
        self.header = "ih-" + secrets.token_urlsafe(24)
        self.token_lifetime = token_lifetime
        self.identities: dict[str, ManagedIdentity] = {}
        self.counts: Counter[str] = Counter()
        self.kid = secrets.token_hex(8)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @property
    def endpoint(self) -> str:
        return f"{self.url}/msi/token"

    def env(self) -> dict[str, str]:
        """The environment App Service gives a function app with a managed identity."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self.header}

    def public_keys(self) -> dict[str, Any]:
        """kid -> public key of this issuer (what its jwks_uri publishes)."""
        return {self.kid: self._key.public_key()}

    def add_identity(self, client_id: str | None = None, principal_id: str | None = None) -> ManagedIdentity:
        identity = ManagedIdentity(client_id or str(uuid.uuid4()), principal_id or str(uuid.uuid4()))
        with self._lock:
            self.identities[identity.client_id] = identity
        return identity

    def federate(self, graph: GraphSim, app_client_id: str, *, subject: str | None = None,
                 audiences: tuple[str, ...] = (TOKEN_EXCHANGE,), issuer: str | None = None) -> ManagedIdentity:
        """A new identity, trusted by the app registration through a federated identity credential.

        `subject`, `audiences` and `issuer` override what the credential says, to test a wrong one.
        """
        identity = self.add_identity()
        graph.trust_issuer(self.issuer, self.public_keys())
        graph.add_federated_credential(app_client_id, issuer=issuer or self.issuer,
                                       subject=identity.principal_id if subject is None else subject, audiences=audiences)
        return identity

    def handle(self, req: Request) -> Response:
        if req.path.rstrip("/") != "/msi/token" or req.method != "GET":
            return Response(404, {"statusCode": 404, "message": f"{req.method} {req.path} is not the token endpoint."})
        if not secrets.compare_digest(req.headers.get("x-identity-header", ""), self.header):
            return Response(401, {"statusCode": 401, "message": "The X-IDENTITY-HEADER header is missing or wrong."})
        if req.query.get("api-version") != API_VERSION:
            return Response(400, {"statusCode": 400, "message": f"api-version must be {API_VERSION}."})
        resource = req.query.get("resource", "")
        if not resource:
            return Response(400, {"statusCode": 400, "message": "The resource parameter is required."})
        identity = self.identities.get(req.query.get("client_id", ""))
        self.counts["token"] += 1
        if identity is None:
            return Response(400, {"statusCode": 400, "message": "Unable to load the proper Managed Identity.",
                                  "correlationId": str(uuid.uuid4())})
        return Response(200, self.token_for(identity, resource))

    def token_for(self, identity: ManagedIdentity, resource: str = TOKEN_EXCHANGE, *, issued: int | None = None) -> dict[str, Any]:
        """The endpoint's answer for `identity`; `issued` (epoch seconds) back-dates it, e.g. to test an expired one."""
        import jwt

        now = int(time.time()) if issued is None else issued
        claims = {"aud": resource, "iss": self.issuer, "iat": now, "nbf": now, "exp": now + self.token_lifetime,
                  "sub": identity.principal_id, "oid": identity.principal_id, "azp": identity.client_id,
                  "appid": identity.client_id, "tid": self.home_tenant, "idtyp": "app", "ver": "2.0",
                  "uti": secrets.token_urlsafe(16), "xms_mirid": f"/subscriptions/sim/providers/Microsoft.ManagedIdentity/"
                                                                f"userAssignedIdentities/{identity.client_id}"}
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})
        return {"access_token": token, "expires_on": str(now + self.token_lifetime), "resource": resource,
                "token_type": "Bearer", "client_id": identity.client_id}
