"""App settings -> `Tenant` objects.

Settings come from the environment (Azure app settings) and, for the CLI on a
laptop, from `local.settings.json` ("Values"). In multi-customer mode
(NEXXT365_TENANTS_TABLE) each customer is a row of that table and its
secrets are Key Vault secret names, resolved lazily (never at import time).
Every error names the setting and shows what a valid value looks like.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared import validate
from shared.errors import ConfigError
from shared.sign_in import APP_SETTINGS, MANAGED_IDENTITY, TABLE_COLUMNS, choose_sign_in
from shared.status_maps import parse_presence_map, parse_status_map

if TYPE_CHECKING:
    from shared.secrets import KeyVault

log = logging.getLogger("nexxt365")

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH = "https://graph.microsoft.com"
_DOMAIN = re.compile(r"^(?=.{3,253}$)([a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")
_SCHEDULE = re.compile(r"^NEXXT365_[A-Z]+_SCHEDULE$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_tenant(value: str) -> str:
    """Tenant id or domain from a GUID, a domain, or a token endpoint URL as copied from the portal.

    Accepts `https://login.microsoftonline.com/<tenant>/oauth2/token` (v1) and
    `.../<tenant>/oauth2/v2.0/token` (v2), also with `/authorize` or without a path tail.
    """
    raw = (value or "").strip()
    if not raw:
        raise ConfigError(
            "NEXXT365_TENANT is not set. Set it to the tenant ID (a GUID), the domain "
            "(contoso.onmicrosoft.com) or the token endpoint URL from Entra ID > App registrations > Endpoints."
        )
    if raw.lower().startswith(("https://", "http://")):
        try:
            parts = [p for p in urlsplit(raw).path.split("/") if p]
        except ValueError:
            parts = []
        candidate = parts[0] if parts else ""
    else:
        candidate = raw.strip("/")
    if validate.is_guid(candidate):
        return candidate.lower()
    if _DOMAIN.match(candidate):
        return candidate.lower()
    raise ConfigError(
        f"NEXXT365_TENANT {raw!r} is not a tenant ID, domain or token endpoint. Valid examples: "
        "'72f988bf-86f1-41af-91ab-2d7cd011db47', 'contoso.onmicrosoft.com', "
        "'https://login.microsoftonline.com/<tenant-id>/oauth2/v2.0/token'."
    )


_url = validate.https_url
FULL_SYNC_HOURS_MAX = 8760  # a year
CONCURRENCY_MAX = 64


def _bool(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False if v else default
    raise ConfigError(f"{name} {value!r} is not a boolean. Use true or false.")


def _int(name: str, value: str | None, default: int, minimum: int = 0) -> int:
    if value is None or not value.strip():
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"{name} {value!r} is not a whole number. Example: {default}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {number}.")
    return number


def _region(value: str | None) -> str:
    import phonenumbers

    region = (value or "NL").strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", region):
        raise ConfigError(f"NEXXT365_DEFAULT_REGION {region!r} is not a two-letter country code such as NL or BE.")
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"NEXXT365_DEFAULT_REGION {region!r} is not a region with a telephone numbering plan: "
                          "use a two-letter ISO country code such as NL, BE or DE.")
    return region


def _status_map(value: str | None) -> str | None:

    text = (value or "").strip() or None
    parse_status_map(text)  # a typo must fail doctor and every run alike, not only the calendar run
    return text


def _choice(name: str, value: str | None, choices: tuple[str, ...]) -> str:
    if value is None or not value.strip():
        return choices[0]
    v = value.strip().lower()
    if v not in choices:
        raise ConfigError(f"{name} {value!r} is not one of: {', '.join(choices)}.")
    return v


# -- NEXXT365_COMPANY_CONTACTS (the contacts sync's company phone book) ---------------
_MAILBOX = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")


def _mailboxes(value: str | None) -> tuple[str, ...]:
    """Comma-separated shared mailbox addresses, lower-cased, in the given order, each once."""
    found: dict[str, None] = {}
    for part in (value or "").split(","):
        address = part.strip().lower()
        if address and not _MAILBOX.match(address):
            raise ConfigError(f"NEXXT365_COMPANY_CONTACTS: {part.strip()[:60]!r} is not a mailbox address; give "
                              "shared mailbox addresses separated by commas, e.g. receptie@contoso.nl,info@contoso.nl.")
        if address:
            found[address] = None
    return tuple(found)


@dataclass(frozen=True)
class Options:
    """Behaviour settings of the syncs (all optional)."""

    full_sync_hours: int = 24
    auto_link: bool = False
    on_removed: str = "report"  # report | deactivate
    max_deactivations: int = 10
    users_group: str | None = None
    include_guests: bool = False
    include_disabled: bool = False
    clearvox_concurrency: int = 16
    default_region: str = "NL"
    status_map: str | None = None  # parsed by the calendar sync
    respect_manual: bool = False
    company_contacts: tuple[str, ...] = ()  # shared mailboxes whose contacts become the company phone book
    # -- Teams presence as a second input to the calendar status (shared.sync.calendar.teams)
    teams_presence: bool = False
    presence_map: str | None = None  # validated here, parsed by the calendar sync

    @classmethod
    def from_values(cls, get: Callable[[str], str | None]) -> Options:
        group = (get("NEXXT365_USERS_GROUP") or "").strip() or None
        if group and not validate.is_guid(group):
            raise ConfigError(f"NEXXT365_USERS_GROUP {group!r} is not an Entra group object ID (a GUID).")
        return cls(
            full_sync_hours=validate.bounded_int("NEXXT365_FULL_SYNC_HOURS", get("NEXXT365_FULL_SYNC_HOURS"), 24, 1,
                                                 FULL_SYNC_HOURS_MAX),
            auto_link=_bool("NEXXT365_AUTO_LINK", get("NEXXT365_AUTO_LINK"), False),
            on_removed=_choice("NEXXT365_ON_REMOVED", get("NEXXT365_ON_REMOVED"), ("report", "deactivate")),
            max_deactivations=_int("NEXXT365_MAX_DEACTIVATIONS", get("NEXXT365_MAX_DEACTIVATIONS"), 10, 0),
            users_group=group.lower() if group else None,
            include_guests=_bool("NEXXT365_INCLUDE_GUESTS", get("NEXXT365_INCLUDE_GUESTS"), False),
            include_disabled=_bool("NEXXT365_INCLUDE_DISABLED", get("NEXXT365_INCLUDE_DISABLED"), False),
            clearvox_concurrency=validate.bounded_int("NEXXT365_CLEARVOX_CONCURRENCY", get("NEXXT365_CLEARVOX_CONCURRENCY"),
                                                      16, 1, CONCURRENCY_MAX),
            default_region=_region(get("NEXXT365_DEFAULT_REGION")),
            status_map=_status_map(get("NEXXT365_STATUS_MAP")),
            respect_manual=_bool("NEXXT365_RESPECT_MANUAL", get("NEXXT365_RESPECT_MANUAL"), False),
            company_contacts=_mailboxes(get("NEXXT365_COMPANY_CONTACTS")),
            **_presence_options(get),
        )

    def merged(self, overrides: Mapping[str, Any]) -> Options:
        """These options with a customer's overrides (setting names without NEXXT365_) applied over them."""
        known = {f.name.upper() for f in fields(self)}
        given = {k.upper(): str(v) for k, v in overrides.items() if k.upper() in known and v is not None}
        if not given:
            return self
        parsed = Options.from_values(lambda n: given.get(n.removeprefix("NEXXT365_")))
        return replace(self, **{k.lower(): getattr(parsed, k.lower()) for k in given})


def _presence_options(get: Callable[[str], str | None]) -> dict[str, Any]:
    """NEXXT365_TEAMS_PRESENCE and NEXXT365_PRESENCE_MAP; a bad map fails doctor and every run alike."""

    text = (get("NEXXT365_PRESENCE_MAP") or "").strip() or None
    parse_presence_map(text)
    return {"teams_presence": _bool("NEXXT365_TEAMS_PRESENCE", get("NEXXT365_TEAMS_PRESENCE"), False),
            "presence_map": text}


SecretResolver = Callable[[], str]


@dataclass(frozen=True)
class Tenant:
    """One customer: Microsoft 365 tenant + ClearVox account + behaviour options.

    Secrets are callables so that Key Vault is only asked when a client is
    built; `repr` never shows them.
    """

    key: str  # short, stable, unique per customer; prefixes every state partition
    tenant: str  # tenant GUID or domain
    client_id: str
    clearvox_url: str
    clearvox_account: str
    client_secret: SecretResolver | None = field(default=None, repr=False)
    client_certificate: SecretResolver | None = field(default=None, repr=False)
    managed_identity_client_id: str | None = None  # sign-in without a secret (shared/credentials.py)
    clearvox_api_key: SecretResolver = field(default=lambda: "", repr=False)
    authority_host: str = DEFAULT_AUTHORITY
    graph_url: str = DEFAULT_GRAPH
    secret_expiry: Callable[[], date | None] = field(default=lambda: None, repr=False)
    secret_expires_source: str = ""
    options: Options = field(default_factory=Options)

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant}"

    def with_options(self, **changes: Any) -> Tenant:
        return replace(self, options=replace(self.options, **changes))


def _fixed(value: str) -> SecretResolver:
    return lambda: value


def read_local_settings(path: Path | None = None) -> dict[str, str]:
    """The "Values" of local.settings.json (the Functions Core Tools format), when present.

    A UTF-8 byte order mark (as some Windows editors save) is accepted; `"Values": null` means no values.
    """
    path = path or Path.cwd() / "local.settings.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}). Compare with local.settings.example.json.") from None
    values = data.get("Values", {}) if isinstance(data, dict) else {}
    if values is None:
        log.warning("%s has \"Values\": null: no settings are read from it", path)
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: \"Values\" must be an object of setting names and values. "
                          "Compare with local.settings.example.json.")
    return {str(k): str(v) for k, v in values.items() if v is not None}


class Settings:
    """Reads app settings: environment first, then local.settings.json."""

    def __init__(self, env: Mapping[str, str] | None = None, local: Mapping[str, str] | None = None) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.local: Mapping[str, str] = read_local_settings() if local is None else local

    def get(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            value = self.local.get(name)
        if value is not None and value.strip().startswith("@Microsoft.KeyVault("):
            # App Service leaves the reference text in place when it cannot resolve it.
            raise ConfigError(
                f"{name} is an unresolved Key Vault reference: the function app's managed identity cannot read that secret. "
                "Check that the secret exists, the identity has the Key Vault Secrets User role, and keyVaultReferenceIdentity "
                "is set (docs/deploy.md)."
            )
        return value

    def require(self, name: str, hint: str) -> str:
        value = (self.get(name) or "").strip()
        if not value:
            raise ConfigError(f"{name} is not set. {hint}")
        return value

    @property
    def multi_tenant(self) -> bool:
        return bool((self.get("NEXXT365_TENANTS_TABLE") or "").strip())

    def fanout(self) -> str:
        """NEXXT365_FANOUT: `inline` (the timer runs every tenant) or `queue` (one queue message per tenant);
        by default inline with one customer and queue in multi-customer mode (shared/dispatch.py)."""
        value = (self.get("NEXXT365_FANOUT") or "").strip().lower()
        if not value:
            return "queue" if self.multi_tenant else "inline"
        if value not in ("inline", "queue"):
            raise ConfigError(f"NEXXT365_FANOUT {value!r} is not one of: inline (the timer runs every customer), "
                              "queue (one queue message per customer, run by the queue-triggered functions).")
        return value

    def state_connection(self) -> str:
        value = (self.get("NEXXT365_STATE") or self.get("AzureWebJobsStorage") or "").strip()
        if not value:
            raise ConfigError(
                "NEXXT365_STATE is not set (nor AzureWebJobsStorage). Set a Table Storage connection string, "
                "e.g. 'UseDevelopmentStorage=true' for Azurite, or a table endpoint URL such as "
                "'https://<account>.table.core.windows.net' used with the managed identity."
            )
        if value.lower().startswith("http") and not value.lower().startswith("https://") and not validate.is_local_http(value):
            raise ConfigError(f"NEXXT365_STATE {value!r} must be an https table endpoint or a connection string "
                              "(plain http only for the storage emulator on 127.0.0.1, ::1 or localhost).")
        return value

    def schedules(self) -> dict[str, str]:
        """Every NEXXT365_<SYNC>_SCHEDULE that is set, checked as NCRONTAB (the host reads them; unset ones get the
        defaults of infra/main.bicep and local.settings.example.json, which are valid)."""
        names = sorted({n for source in (self.env, self.local) for n in source if _SCHEDULE.match(n)})
        return {name: validate.validate_ncrontab(name, (self.get(name) or "").strip()) for name in names}

    def options(self) -> Options:
        self.schedules()
        return Options.from_values(self.get)

    def single_tenant(self) -> Tenant:
        """The customer described by the NEXXT365_* settings."""
        tenant = parse_tenant(self.get("NEXXT365_TENANT") or "")
        client_id = self.require("NEXXT365_CLIENT_ID",
                                 "Copy the Application (client) ID from Entra ID > App registrations > your app > Overview.")
        if not validate.is_guid(client_id):
            raise ConfigError(f"NEXXT365_CLIENT_ID {client_id!r} is not a GUID. "
                              "Copy the Application (client) ID from the app's Overview page.")
        secret = (self.get("NEXXT365_CLIENT_SECRET") or "").strip()
        cert = (self.get("NEXXT365_CLIENT_CERTIFICATE") or "").strip()
        identity = (self.get("NEXXT365_MANAGED_IDENTITY_CLIENT_ID") or "").strip()
        way = choose_sign_in(APP_SETTINGS, secret=secret, certificate=cert,
                             assertion=self.get("NEXXT365_CLIENT_ASSERTION") or "", identity=identity)
        if cert:
            cert = validate.certificate_pem("NEXXT365_CLIENT_CERTIFICATE", cert)
        api_key = validate.ascii_secret("NEXXT365_CLEARVOX_API_KEY", self.require(
            "NEXXT365_CLEARVOX_API_KEY", "Create an API key in ClearVox Nexxt and set it here."))
        return Tenant(
            key=_tenant_key(tenant),
            tenant=tenant,
            client_id=client_id.lower(),
            client_secret=_fixed(secret) if secret else None,
            client_certificate=_fixed(cert) if cert else None,
            managed_identity_client_id=identity.lower() if way == MANAGED_IDENTITY else None,
            clearvox_url=_url("NEXXT365_CLEARVOX_URL", self.require("NEXXT365_CLEARVOX_URL", "Example: https://pbx.example.nl"),
                              "https://pbx.example.nl"),
            clearvox_api_key=_fixed(api_key),
            clearvox_account=self.require("NEXXT365_CLEARVOX_ACCOUNT",
                                          "Set the Company ID: the number at the end of /accounts/edit/<company-ID> in ClearVox."),
            authority_host=_url("NEXXT365_AUTHORITY_HOST", self.get("NEXXT365_AUTHORITY_HOST") or DEFAULT_AUTHORITY,
                                DEFAULT_AUTHORITY),
            graph_url=_url("NEXXT365_GRAPH_URL", self.get("NEXXT365_GRAPH_URL") or DEFAULT_GRAPH, DEFAULT_GRAPH),
            secret_expiry=_fixed_date(_date("NEXXT365_CLIENT_SECRET_EXPIRES", self.get("NEXXT365_CLIENT_SECRET_EXPIRES"))),
            secret_expires_source="NEXXT365_CLIENT_SECRET_EXPIRES",
            options=self.options(),
        )

    def tenants(self, vault: KeyVault | None = None) -> list[Tenant]:
        """Every customer this app serves: one from settings, or the rows of the tenants table."""
        if not self.multi_tenant:
            return [self.single_tenant()]
        from shared.secrets import KeyVault
        from shared.tenants import TENANTS_PARTITION, read_tenant_rows  # azure SDK imports only in this mode

        table_name = validate.table_name("NEXXT365_TENANTS_TABLE", (self.get("NEXXT365_TENANTS_TABLE") or "").strip())
        vault_url = (self.get("NEXXT365_KEY_VAULT_URL") or "").strip()
        if not vault_url and vault is None:
            raise ConfigError("NEXXT365_KEY_VAULT_URL is not set; it is needed with NEXXT365_TENANTS_TABLE. "
                              "Example: https://kv-nexxt365.vault.azure.net")
        kv = vault or KeyVault(vault_url)
        options = self.options()
        rows = read_tenant_rows(self.state_connection(), table_name)
        identity = self.get("NEXXT365_MANAGED_IDENTITY_CLIENT_ID") or ""
        tenants = [tenant_from_row(row, options, kv.resolver, lambda n: lambda: kv.expires(n), identity) for row in rows]
        if not tenants:
            raise ConfigError(f"NEXXT365_TENANTS_TABLE {table_name!r} has no rows with PartitionKey '{TENANTS_PARTITION}'.")
        return tenants


def _tenant_key(tenant: str) -> str:
    """A short stable key for a tenant (its GUID, or a UUID5 of its domain)."""
    if validate.is_guid(tenant):
        return tenant.replace("-", "")
    return uuid.uuid5(uuid.NAMESPACE_DNS, tenant).hex


def _fixed_date(value: date | None) -> Callable[[], date | None]:
    return lambda: value


def _date(name: str, value: str | None) -> date | None:
    if not value or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ConfigError(f"{name} {value!r} is not a date. Example: 2027-06-30") from None


def _checked_certificate(resolve: SecretResolver, name: str) -> SecretResolver:
    """A certificate from Key Vault, checked (and its literal \\n repaired) when it is first read."""
    return lambda: validate.certificate_pem(name, resolve())


def tenant_from_row(
    row: Mapping[str, Any],
    options: Options,
    secret: Callable[[str], SecretResolver],
    expiry: Callable[[str], Callable[[], date | None]] | None = None,
    managed_identity_client_id: str = "",
) -> Tenant:
    """A Tenant from a tenants-table row; secret fields hold Key Vault secret *names*.

    With `ClientAssertion` = managed-identity the app-wide NEXXT365_MANAGED_IDENTITY_CLIENT_ID signs in.
    """
    name = str(row.get("RowKey") or "")
    where = f"tenants table row {name!r}"

    def need(col: str) -> str:
        value = str(row.get(col) or "").strip()
        if not value:
            raise ConfigError(f"{where}: column {col} is empty.")
        return value

    tenant = parse_tenant(need("Tenant"))
    secret_name = str(row.get("ClientSecretName") or "").strip()
    cert_name = str(row.get("ClientCertificateName") or "").strip()
    way = choose_sign_in(TABLE_COLUMNS, secret=secret_name, certificate=cert_name,
                         assertion=str(row.get("ClientAssertion") or ""), identity=managed_identity_client_id, where=where)
    overrides = {k[len("Option_"):]: v for k, v in row.items() if isinstance(k, str) and k.startswith("Option_")}
    try:
        opts = options.merged(overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc} (column Option_<name> overrides NEXXT365_<name>)") from None
    return Tenant(
        key=re.sub(r"[^A-Za-z0-9]", "", name) or _tenant_key(tenant),
        tenant=tenant,
        client_id=need("ClientId").lower(),
        client_secret=secret(secret_name) if secret_name else None,
        client_certificate=_checked_certificate(secret(cert_name), f"Key Vault secret {cert_name}") if cert_name else None,
        managed_identity_client_id=managed_identity_client_id.strip().lower() if way == MANAGED_IDENTITY else None,
        clearvox_url=_url(f"{where}: ClearVoxUrl", need("ClearVoxUrl"), "https://pbx.example.nl"),
        clearvox_account=need("ClearVoxAccount"),
        clearvox_api_key=secret(need("ClearVoxApiKeyName")),
        authority_host=_url(f"{where}: AuthorityHost", str(row.get("AuthorityHost") or DEFAULT_AUTHORITY),
                            DEFAULT_AUTHORITY),
        graph_url=_url(f"{where}: GraphUrl", str(row.get("GraphUrl") or DEFAULT_GRAPH), DEFAULT_GRAPH),
        secret_expiry=expiry(secret_name) if expiry and secret_name else _fixed_date(None),
        secret_expires_source=f"Key Vault secret {secret_name}" if secret_name else "",
        options=opts,
    )
