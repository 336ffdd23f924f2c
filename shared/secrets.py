"""Key Vault look-ups for multi-customer mode.

Secrets are fetched on first use, never at import time, and cached for the
run so that a run over many customers asks Key Vault once per secret.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date
from typing import Any

from shared.errors import ConfigError


class KeyVault:
    """Lazy, cached access to one vault with DefaultAzureCredential (managed identity in Azure)."""

    def __init__(self, vault_url: str, credential: Any = None, client: Any = None, **client_options: Any) -> None:
        if not vault_url.startswith("https://"):
            raise ConfigError(f"NEXXT365_KEY_VAULT_URL {vault_url!r} is not a vault URL. Example: https://kv-nexxt365.vault.azure.net")
        self.vault_url = vault_url
        self._credential = credential
        self._client = client
        self._client_options = client_options
        self._cache: dict[str, tuple[str, date | None]] = {}
        self._lock = threading.Lock()

    def _secret_client(self) -> Any:
        if self._client is None:
            from azure.keyvault.secrets import SecretClient

            from shared.state import azure_credential

            self._client = SecretClient(self.vault_url, self._credential or azure_credential(), **self._client_options)
        return self._client

    def _fetch(self, name: str) -> tuple[str, date | None]:
        with self._lock:
            if name in self._cache:
                return self._cache[name]
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

        try:
            secret = self._secret_client().get_secret(name)
        except ResourceNotFoundError:
            raise ConfigError(f"Key Vault {self.vault_url} has no secret named {name!r}. "
                              "Add it, or fix the name in the tenants table.") from None
        except ClientAuthenticationError:
            raise ConfigError(f"Could not authenticate to Key Vault {self.vault_url}: "
                              "check the managed identity (Key Vault Secrets User role).") from None
        except HttpResponseError as exc:
            raise ConfigError(f"Key Vault {self.vault_url} refused secret {name!r} (HTTP {exc.status_code}): "
                              "the identity needs the Key Vault Secrets User role.") from None
        expires = secret.properties.expires_on.date() if secret.properties.expires_on else None
        value = (str(secret.value or ""), expires)
        with self._lock:
            self._cache[name] = value
        return value

    def resolver(self, name: str) -> Callable[[], str]:
        """A callable that returns the secret's value on first call."""
        return lambda: self._fetch(name)[0]

    def expires(self, name: str) -> date | None:
        return self._fetch(name)[1]
