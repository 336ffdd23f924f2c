"""msal's `client_credential` for a tenant: a secret, a certificate, or a managed identity's token.

Without a secret, a federated identity credential on the app registration trusts the function
app's user-assigned managed identity: azure-identity's `ManagedIdentityCredential` gets a token
for `api://AzureADTokenExchange` from the App Service / Functions identity endpoint
(IDENTITY_ENDPOINT + IDENTITY_HEADER), and msal sends it as the client assertion. msal (1.39)
accepts a callable `client_assertion` and calls it only when it sends a token request; the
callable keeps the identity token until shortly before it expires.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.errors import GraphAuthError
from shared.settings import Tenant
from shared.sign_in import CERTIFICATE, LABELS, MANAGED_IDENTITY, SECRET

TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"
#: An identity token is used until this many seconds before it expires.
IDENTITY_RETRIES = 3  # a failing identity endpoint is asked again this often (azure-core's back-off) per token
REFRESH_MARGIN = 120.0
_IDENTITY_STEP = ("assign the user-assigned identity to the function app (Function App > Settings > Identity > "
                  "User assigned) and check NEXXT365_MANAGED_IDENTITY_CLIENT_ID ({client_id}) is its Client ID")


def sign_in_way(tenant: Tenant) -> str:
    """SECRET, CERTIFICATE or MANAGED_IDENTITY: what the tenant's settings chose."""
    if tenant.managed_identity_client_id:
        return MANAGED_IDENTITY
    return CERTIFICATE if tenant.client_certificate is not None else SECRET


def describe(tenant: Tenant) -> str:
    """The sign-in way in words, e.g. for doctor: never the secret itself."""
    way = sign_in_way(tenant)
    if way == MANAGED_IDENTITY:
        return f"{LABELS[way]}: identity {tenant.managed_identity_client_id} signs in as app {tenant.client_id}"
    return LABELS[way]


def client_credential(tenant: Tenant) -> str | dict[str, Any]:
    """What msal's ConfidentialClientApplication takes as `client_credential` for this tenant."""
    if tenant.managed_identity_client_id:
        return {"client_assertion": managed_identity_assertion(tenant.managed_identity_client_id)}
    if tenant.client_certificate is not None:
        pem = tenant.client_certificate()
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        cert = x509.load_pem_x509_certificate(pem.encode())
        return {"private_key": pem, "thumbprint": cert.fingerprint(hashes.SHA1()).hex(), "public_certificate": None}
    if tenant.client_secret is not None:
        return tenant.client_secret()
    raise GraphAuthError("No sign-in is configured: set NEXXT365_CLIENT_SECRET, NEXXT365_CLIENT_CERTIFICATE or "
                         "NEXXT365_CLIENT_ASSERTION=managed-identity.")


class ManagedIdentityAssertion:
    """The identity's token for api://AzureADTokenExchange, kept until REFRESH_MARGIN before it expires.

    Callable without arguments, as msal wants a `client_assertion`; thread-safe. `credential` and
    `clock` are for tests; by default azure-identity's ManagedIdentityCredential and time.time.
    """

    def __init__(self, client_id: str, *, credential: Any = None, clock: Callable[[], float] = time.time,
                 margin: float = REFRESH_MARGIN) -> None:
        self.client_id = client_id
        self._credential = credential
        self._clock = clock
        self._margin = margin
        self._token = ""
        self._expires_on = 0.0
        self._lock = threading.Lock()

    @property
    def expires_on(self) -> float:
        return self._expires_on

    def __call__(self) -> str:
        with self._lock:
            if not self._token or self._clock() >= self._expires_on - self._margin:
                self._token, self._expires_on = self._fetch()
            return self._token

    def _fetch(self) -> tuple[str, float]:
        from azure.core.exceptions import AzureError

        try:
            info = self._managed_identity().get_token_info(TOKEN_EXCHANGE_SCOPE)
        except AzureError as exc:
            raise self._error(exc) from None
        return str(info.token), float(info.expires_on)

    def _managed_identity(self) -> Any:
        if self._credential is None:
            if not (os.environ.get("IDENTITY_ENDPOINT") and os.environ.get("IDENTITY_HEADER")):
                raise GraphAuthError(
                    "NEXXT365_CLIENT_ASSERTION=managed-identity signs in with the function app's managed identity, but this "
                    "process has none (IDENTITY_ENDPOINT and IDENTITY_HEADER are not set): run it in the function app, or "
                    "use NEXXT365_CLIENT_SECRET or NEXXT365_CLIENT_CERTIFICATE on a workstation.")
            from azure.identity import ManagedIdentityCredential

            self._credential = ManagedIdentityCredential(client_id=self.client_id, retry_total=IDENTITY_RETRIES)
        return self._credential

    def _error(self, exc: Exception) -> GraphAuthError:
        from azure.core.exceptions import ServiceRequestError

        endpoint = os.environ.get("IDENTITY_ENDPOINT", "")
        if isinstance(exc, ServiceRequestError):
            return GraphAuthError(f"The managed identity endpoint {endpoint} (IDENTITY_ENDPOINT) cannot be reached "
                                  f"({type(exc).__name__}); the next run tries again. If it persists, "
                                  f"{_IDENTITY_STEP.format(client_id=self.client_id)}.")
        text = str(getattr(exc, "message", "") or exc)
        # App Service's answer for an identity that is not assigned to the app
        reason = "; it does not know that identity" if "Unable to load the proper Managed Identity" in text else ""
        return GraphAuthError(f"The managed identity endpoint gave no token for identity {self.client_id}{reason}: "
                              f"{_IDENTITY_STEP.format(client_id=self.client_id)}.")


# One assertion per identity for the life of the process, like the Graph access tokens.
_ASSERTIONS: dict[str, ManagedIdentityAssertion] = {}
_ASSERTIONS_LOCK = threading.Lock()


def managed_identity_assertion(client_id: str) -> ManagedIdentityAssertion:
    with _ASSERTIONS_LOCK:
        if client_id not in _ASSERTIONS:
            _ASSERTIONS[client_id] = ManagedIdentityAssertion(client_id)
        return _ASSERTIONS[client_id]


def check_managed_identity(tenant: Tenant) -> str:
    """For doctor: get a fresh identity token now (past every cache); what it proves, never the token."""
    client_id = tenant.managed_identity_client_id or ""
    assertion = ManagedIdentityAssertion(client_id)
    assertion()
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(assertion.expires_on))
    return (f"identity {client_id} got a token for {TOKEN_EXCHANGE_SCOPE.removesuffix('/.default')} from "
            f"{os.environ.get('IDENTITY_ENDPOINT', '')} (valid until {until})")
