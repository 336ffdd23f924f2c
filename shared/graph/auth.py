"""Microsoft Graph authentication: msal tokens, AADSTS messages, consent, and secrets kept out of logs.

The token and the client secret never reach a message or a log line: token-endpoint
errors are scrubbed of both before they are quoted, and msal's own loggers pass
through a filter that drops any record quoting a known secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msal
import requests

from shared.credentials import client_credential
from shared.errors import ConfigError, GraphAuthError
from shared.graph.federated import FEDERATED_AADSTS_MESSAGES
from shared.settings import Tenant

PERMISSIONS = ("User.Read.All", "Contacts.Read", "Calendars.Read")
CONSENT_STEP = ("Entra ID > App registrations > {app} > API permissions > Add a permission > Microsoft Graph > "
                "Application permissions > {perm}, then 'Grant admin consent'")

# What each AADSTS code means for an administrator, with the setting or portal step to fix it.
AADSTS_MESSAGES = {
    "7000215": "The client secret is wrong (AADSTS7000215). Set NEXXT365_CLIENT_SECRET to the secret's Value "
    "(not its Secret ID) from Entra ID > App registrations > {app} > Certificates & secrets.",
    "7000222": "The client secret has expired (AADSTS7000222). Create a new secret in Entra ID > App registrations > {app} > "
    "Certificates & secrets and update NEXXT365_CLIENT_SECRET (in Key Vault when deployed).",
    "700016": "The application {app} was not found in tenant {tenant} (AADSTS700016). Check NEXXT365_CLIENT_ID, and that "
    "NEXXT365_TENANT is the customer's tenant where the app is registered or consented.",
    "90002": "Tenant {tenant} was not found (AADSTS90002). Check NEXXT365_TENANT: use the tenant ID, the "
    "<name>.onmicrosoft.com domain or the token endpoint URL from the app registration.",
    "700027": "The certificate is not registered on the application (AADSTS700027). Upload it in Entra ID > App registrations > {app} > "
    "Certificates & secrets, or fix NEXXT365_CLIENT_CERTIFICATE.",
    "7000112": "The application {app} is disabled in tenant {tenant} (AADSTS7000112). Enable it in Entra ID > Enterprise applications.",
    "900023": "NEXXT365_TENANT {tenant} is not a valid tenant identifier (AADSTS900023).",
    **FEDERATED_AADSTS_MESSAGES,  # sign-in without a secret
}


def required_permission(path: str) -> str:
    """The application permission an endpoint needs (for the consent message)."""
    p = path.lower()
    if p.lstrip("/").startswith("groups"):
        return "GroupMember.Read.All"
    if "contact" in p:
        return "Contacts.Read"
    if "calendar" in p or "getschedule" in p or "/events" in p:
        return "Calendars.Read"
    if "presence" in p:
        return "Presence.Read.All"
    return "User.Read.All"


def decode_roles(token: str) -> set[str]:
    """The `roles` claim of an access token (the granted application permissions)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError):
        return set()
    roles = claims.get("roles") or []
    return {str(r) for r in roles}


def checked_root(url: str, setting: str) -> str:
    """An https root URL without credentials; ConfigError naming `setting` otherwise."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ConfigError(f"{setting} must not contain a user name or password (user:pw@host). "
                          "Example: https://graph.microsoft.com")
    return url


# -- secrets out of logs ------------------------------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_BEARER = re.compile(r"(?i)(bearer\s+|client_secret=|\"access_token\":\s*\")[^\s\"&,]+")


def remember_secret(value: str) -> None:
    """A credential or token to keep out of every message and msal log line."""
    if len(value) >= 6:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def scrub(text: str) -> str:
    """`text` without any known secret, bearer token or client_secret parameter."""
    with _SECRETS_LOCK:
        known = sorted(_SECRETS, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, "***")
    return _BEARER.sub(lambda m: m.group(1) + "***", text)


class SecretFilter(logging.Filter):
    """On msal's loggers: a record that would quote a secret is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return False
        return scrub(message) == message


_FILTER = SecretFilter()
for _name in [n for n in list(logging.root.manager.loggerDict) if n == "msal" or n.startswith("msal.")]:
    logging.getLogger(_name).addFilter(_FILTER)


def _remembered(token: str) -> str:
    remember_secret(token)
    return token


# Access tokens are kept for the life of the process (a warm Functions worker runs
# the calendar sync every minute): one token request an hour instead of one a run.
_TOKENS: dict[str, tuple[str, float]] = {}
_TOKENS_LOCK = threading.Lock()


class GraphAuth:
    """Token handling of `Graph`: one msal app per client, tokens shared across runs in the process."""

    tenant: Tenant
    session: requests.Session

    def _init_auth(self, reuse_tokens: bool) -> None:
        checked_root(self.tenant.authority_host, "NEXXT365_AUTHORITY_HOST")
        self._app: msal.ConfidentialClientApplication | None = None
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()
        self.reuse_tokens = reuse_tokens
        self._cache_key: str | None = None

    def _credential(self) -> Any:
        credential = client_credential(self.tenant)  # secret, certificate or managed-identity assertion
        if isinstance(credential, str):
            remember_secret(credential)
        elif callable(credential.get("client_assertion")):
            assertion = credential["client_assertion"]
            credential = {"client_assertion": lambda: _remembered(assertion())}
        return credential

    def _msal(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            microsoft = urlsplit(self.tenant.authority_host).hostname or ""
            known = microsoft.endswith((".microsoftonline.com", ".microsoftonline.us", ".chinacloudapi.cn", ".microsoftonline.de"))
            self._app = msal.ConfidentialClientApplication(
                self.tenant.client_id,
                client_credential=self._credential(),
                authority=self.tenant.authority,
                http_client=self.session,
                instance_discovery=None if known else False,
                validate_authority=known,
            )
        return self._app

    def _format(self, template: str) -> str:
        return template.format(app=self.tenant.client_id, tenant=self.tenant.tenant)

    def _process_key(self) -> str:
        """Identifies app + credential, without keeping the credential itself."""
        if self._cache_key is None:
            cred = self._credential()
            material = cred if isinstance(cred, str) else str(cred.get("private_key", ""))
            digest = hashlib.sha256(material.encode()).hexdigest()
            self._cache_key = f"{self.tenant.authority}|{self.tenant.client_id}|{self.tenant.graph_url}|{digest}"
        return self._cache_key

    def forget_token(self) -> None:
        """Drop the token (Graph rejected it): the next call fetches a fresh one past every cache."""
        with self._lock:
            self._token = None
            self._app = None
            if self._cache_key:
                with _TOKENS_LOCK:
                    _TOKENS.pop(self._cache_key, None)

    def token(self) -> str:
        """An access token, reused until shortly before it expires (across runs in this process)."""
        with self._lock:
            if self._token and time.time() < self._token_expires - 120:
                return self._token
            if self.reuse_tokens:
                with _TOKENS_LOCK:
                    cached = _TOKENS.get(self._process_key())
                if cached and time.time() < cached[1] - 120:
                    self._token, self._token_expires = cached
                    return cached[0]
            result = self._acquire()
            self._token = str(result["access_token"])
            remember_secret(self._token)
            self._token_expires = time.time() + float(result.get("expires_in", 3600))
            if self.reuse_tokens:
                with _TOKENS_LOCK:
                    _TOKENS[self._process_key()] = (self._token, self._token_expires)
            return self._token

    def _acquire(self) -> Mapping[str, Any]:
        try:
            result = self._msal().acquire_token_for_client(scopes=[f"{self.tenant.graph_url}/.default"])
        except requests.RequestException as exc:
            raise GraphAuthError(
                f"Cannot reach the Entra login host {self.tenant.authority_host} ({type(exc).__name__}). "
                "Check NEXXT365_AUTHORITY_HOST and the network."
            ) from None
        except ValueError as exc:  # msal: authority/tenant discovery failed
            text = scrub(str(exc))
            code = "90002" if "90002" in text or "tenant" in text.lower() else ""
            message = self._format(AADSTS_MESSAGES["90002"]) if code else f"Token request failed: {text[:300]}"
            raise GraphAuthError(message, aadsts=code) from None
        if not isinstance(result, Mapping) or "access_token" not in result:
            raise self._token_error(result if isinstance(result, Mapping) else {})
        return result

    def _token_error(self, result: Mapping[str, Any]) -> GraphAuthError:
        codes = [str(c) for c in (result.get("error_codes") or []) if isinstance(c, int | str)]
        desc = scrub(str(result.get("error_description") or ""))
        m = re.search(r"AADSTS(\d+)", desc)
        if m:
            codes.append(m.group(1))
        for code in codes:
            if code in AADSTS_MESSAGES:
                return GraphAuthError(self._format(AADSTS_MESSAGES[code]), aadsts=code)
        first = desc.splitlines()[0] if desc else scrub(str(result.get("error") or "unknown error"))
        return GraphAuthError(f"Entra refused the token request: {first[:300]}", aadsts=codes[0][:20] if codes else "")

    def roles(self) -> set[str]:
        return decode_roles(self.token())
