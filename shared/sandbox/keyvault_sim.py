"""A Key Vault secrets endpoint, enough for multi-customer mode: challenge auth and GET secret.

Key Vault clients first send an unauthenticated request and expect a 401
whose WWW-Authenticate header names the authority and resource; only then
do they fetch a token and retry. The simulator does the same.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from shared.sandbox.server import Request, Response, SimServer

TOKEN = "kv-sim-access-token"


class StaticCredential:
    """A TokenCredential for the simulator (the production code uses DefaultAzureCredential)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(TOKEN, int(time.time()) + 3600)


class KeyVaultSim(SimServer):
    def __init__(self, *, latency: float = 0.0) -> None:
        super().__init__(latency=latency)
        self.secrets: dict[str, tuple[str, datetime | None]] = {}
        self.reads: dict[str, int] = {}
        self._data = threading.Lock()

    def set_secret(self, name: str, value: str, expires: datetime | None = None) -> None:
        with self._data:
            self.secrets[name] = (value, expires)

    def handle(self, req: Request) -> Response:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            challenge = 'Bearer authorization="https://login.microsoftonline.com/common", resource="https://vault.azure.net"'
            return Response(401, {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer token."}},
                            {"WWW-Authenticate": challenge})
        parts = [p for p in req.path.split("/") if p]
        if req.method != "GET" or len(parts) < 2 or parts[0] != "secrets":
            return Response(400, {"error": {"code": "BadParameter", "message": "unsupported request"}})
        name = parts[1]
        with self._data:
            found = self.secrets.get(name)
            self.reads[name] = self.reads.get(name, 0) + 1
        if found is None:
            message = f"A secret with (name/id) {name} was not found in this key vault."
            return Response(404, {"error": {"code": "SecretNotFound", "message": message}})
        value, expires = found
        attributes: dict[str, Any] = {"enabled": True, "created": 1700000000, "updated": 1700000000,
                                      "recoveryLevel": "Recoverable+Purgeable"}
        if expires is not None:
            attributes["exp"] = int(expires.timestamp())
        return Response(200, {"value": value, "id": f"{self.url}/secrets/{name}/0123456789abcdef", "attributes": attributes})
