"""Checks of single setting values: schedules, URLs, certificates, table names, bounded numbers.

Each function names the setting in its ConfigError and says what a valid value
looks like, so that doctor and every run refuse a value with the same words.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from shared import ncrontab
from shared.errors import ConfigError

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_CRON_EXAMPLE = "'0 */15 * * * *' (second minute hour day month day-of-week)"


def is_guid(text: str) -> bool:
    """An Entra id (tenant, application, group, identity): 8-4-4-4-12 hex digits."""
    return _GUID.match(text) is not None


def validate_ncrontab(name: str, expr: str) -> str:
    """A schedule the Functions host can read: six-field NCRONTAB, seconds first (shared/ncrontab.py reads it)."""
    try:
        ncrontab.parse(expr)
    except ValueError as exc:
        raise ConfigError(f"{name} {expr!r} is not a valid NCRONTAB expression ({exc}): it needs six fields, seconds "
                          "first; each field *, numbers, names, ranges (a-b), lists (a,b) and steps (*/n). "
                          f"Example: {_CRON_EXAMPLE}.") from None
    return expr


def https_url(name: str, value: str, example: str) -> str:
    """An https URL with a host (no credentials in it), without its trailing slash."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        host = None
        parts = urlsplit("")
    if host and (parts.username or parts.password):  # never repeat the value: it holds a credential
        raise ConfigError(f"{name} must not contain a user name or password (user:password@host): give the plain URL, "
                          f"e.g. {example}; the API key has its own setting.")
    if parts.scheme != "https" or not host:
        raise ConfigError(f"{name} {value!r} is not an https URL. Example: {example}")
    return text.rstrip("/")


def is_local_http(value: str) -> bool:
    """An http:// URL whose host is exactly this machine (the storage emulator)."""
    try:
        parts = urlsplit(value.strip())
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() == "http" and host in LOCAL_HOSTS and not parts.username


def bounded_int(name: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None or not value.strip():
        return default
    text = value.strip()
    if not re.fullmatch(r"[+-]?\d{1,12}", text):
        raise ConfigError(f"{name} {value!r} is not a whole number from {low} to {high}. Example: {default}")
    number = int(text)
    if not low <= number <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, not {number}.")
    return number


def ascii_secret(name: str, value: str) -> str:
    """An API key goes into an HTTP header: ASCII only (the message never repeats the value)."""
    if not value.isascii() or any(ord(c) < 32 for c in value):
        raise ConfigError(f"{name} contains characters that are not printable ASCII: copy the key again from ClearVox "
                          "(a pasted key sometimes gains typographic quotes or a non-breaking space).")
    return value


def table_name(name: str, value: str) -> str:
    if not _TABLE_NAME.match(value):
        raise ConfigError(f"{name} {value!r} is not a Table Storage table name: 3-63 letters and digits, "
                          "starting with a letter (no spaces, dashes or underscores). Example: nexxt365tenants")
    return value


def certificate_pem(name: str, value: str) -> str:
    """A PEM with the certificate and its RSA private key (msal signs with RS256).

    A PEM pasted into an app setting often has literal `\\n` instead of line breaks: those are turned into newlines.
    """
    pem = value.strip().replace("\\r\\n", "\n").replace("\\n", "\n").strip()
    if "CERTIFICATE-----" not in pem:
        raise ConfigError(f"{name} has no certificate: it must be a PEM with the certificate (-----BEGIN CERTIFICATE-----) "
                          "and its private key, as exported for Entra ID > App registrations > Certificates & secrets.")
    if "PRIVATE KEY-----" not in pem:
        raise ConfigError(f"{name} has no private key: it must be a PEM with the certificate and its private key "
                          "(-----BEGIN PRIVATE KEY-----).")
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        x509.load_pem_x509_certificate(pem.encode())
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        reason = "the private key is encrypted: export it without a password" if isinstance(exc, TypeError) else \
            "the certificate or the private key cannot be read"
        raise ConfigError(f"{name} is not a usable PEM: {reason}.") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        kind = "an EC" if isinstance(key, ec.EllipticCurvePrivateKey) else "a non-RSA"
        raise ConfigError(f"{name} holds {kind} key: Microsoft Entra sign-in with a "
                          "certificate needs an RSA key (2048 bits or more). Create an RSA certificate and upload it again.")
    return pem
