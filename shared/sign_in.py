"""The three ways the app registration signs in, and the rule that exactly one is configured.

- a client secret (`NEXXT365_CLIENT_SECRET`, or the tenants-table column `ClientSecretName`);
- a certificate with its private key (`NEXXT365_CLIENT_CERTIFICATE` / `ClientCertificateName`);
- no secret at all (`NEXXT365_CLIENT_ASSERTION=managed-identity` / `ClientAssertion`): a federated
  identity credential on the app registration trusts the function app's user-assigned managed
  identity (`NEXXT365_MANAGED_IDENTITY_CLIENT_ID`), whose token is the client assertion.

Pure checks only (no I/O): `shared.settings` uses them for both the app settings and the
tenants table, so every error names the settings or columns that conflict or are missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import validate
from shared.errors import ConfigError

SECRET = "secret"
CERTIFICATE = "certificate"
MANAGED_IDENTITY = "managed-identity"

#: How doctor and the demo name each way.
LABELS = {
    SECRET: "client secret",
    CERTIFICATE: "certificate",
    MANAGED_IDENTITY: "managed identity (federated credential, no secret)",
}

_IDENTITY_STEP = "Managed Identities > <the function app's identity> > Overview > Client ID"


@dataclass(frozen=True)
class SignInNames:
    """Where each way is configured: app settings, or tenants-table columns."""

    secret: str
    certificate: str
    assertion: str
    identity: str = "NEXXT365_MANAGED_IDENTITY_CLIENT_ID"


APP_SETTINGS = SignInNames("NEXXT365_CLIENT_SECRET", "NEXXT365_CLIENT_CERTIFICATE", "NEXXT365_CLIENT_ASSERTION")
TABLE_COLUMNS = SignInNames("ClientSecretName", "ClientCertificateName", "ClientAssertion")


def choose_sign_in(names: SignInNames, *, secret: str, certificate: str, assertion: str, identity: str,
                   where: str = "") -> str:
    """SECRET, CERTIFICATE or MANAGED_IDENTITY; a ConfigError naming what conflicts or is missing otherwise."""
    prefix = f"{where}: " if where else ""
    given = [name for name, value in ((names.secret, secret), (names.certificate, certificate),
                                      (names.assertion, assertion)) if value.strip()]
    if len(given) > 1:
        both = "both" if len(given) == 2 else "all"
        raise ConfigError(
            f"{prefix}{' and '.join(given)} are {both} set, but exactly one sign-in way may be configured: a client secret "
            f"({names.secret}), a certificate ({names.certificate}) or no secret at all ({names.assertion}=managed-identity). "
            "Remove the others.")
    if not given:
        raise ConfigError(
            f"{prefix}no sign-in is configured: {names.secret} is not set (nor {names.certificate}, nor {names.assertion}). "
            f"Set {names.secret} to a client secret's Value (not its ID) from Entra ID > App registrations > your app > "
            f"Certificates & secrets, or {names.certificate}, or {names.assertion}=managed-identity with {names.identity} "
            "to sign in without a secret (docs/deploy.md, 'Sign-in without a secret').")
    if not assertion.strip():
        return SECRET if secret.strip() else CERTIFICATE
    if assertion.strip().lower() != MANAGED_IDENTITY:
        raise ConfigError(f"{prefix}{names.assertion} {assertion.strip()!r} is not supported; the only value is "
                          "'managed-identity'.")
    value = identity.strip()
    if not value:
        raise ConfigError(f"{prefix}{names.assertion}=managed-identity needs {names.identity}: the client ID of the function "
                          f"app's user-assigned managed identity ({_IDENTITY_STEP}).")
    if not validate.is_guid(value):
        raise ConfigError(f"{names.identity} {value!r} is not a GUID: use the client ID of the user-assigned managed "
                          f"identity ({_IDENTITY_STEP}), not its name or principal ID.")
    return MANAGED_IDENTITY
