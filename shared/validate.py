"""Checks of single setting values: schedules, URLs, certificates, table names, bounded numbers.

Each function names the setting in its ConfigError and says what a valid value
looks like, so that doctor and every run refuse a value with the same words.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from shared.errors import ConfigError

LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")

# NCRONTAB (Azure Functions): second minute hour day month day-of-week.
_CRON_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("day-of-week", 0, 6),
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_EXAMPLE = "'0 */15 * * * *' (second minute hour day month day-of-week)"


def validate_ncrontab(name: str, expr: str) -> str:
    """A six-field NCRONTAB expression, seconds first; each field `*`, numbers, names, ranges, lists and steps."""
    fields = expr.split()
    if len(fields) != 6:
        raise ConfigError(f"{name} {expr!r} is not an NCRONTAB expression: it needs six fields, seconds first, "
                          f"not {len(fields)}. Example: {_CRON_EXAMPLE}.")
    for text, (label, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            if not _cron_part_ok(part, label, low, high):
                raise ConfigError(f"{name} {expr!r}: the {label} field {text!r} is not valid; use *, numbers {low}-{high}, "
                                  f"ranges (a-b), lists (a,b) and steps (*/n). Example: {_CRON_EXAMPLE}.")
    return expr


def _cron_value(text: str, label: str) -> int | None:
    names = _MONTHS if label == "month" else _DAYS if label == "day-of-week" else ()
    low = text.lower()
    if low in names:
        return names.index(low) + (1 if label == "month" else 0)
    return int(text) if text.isdigit() else None


def _cron_part_ok(part: str, label: str, low: int, high: int) -> bool:
    base, slash, step = part.partition("/")
    if slash and not (step.isdigit() and 0 < int(step) <= high):
        return False
    if base == "*":
        return True
    first, dash, last = base.partition("-")
    start, end = _cron_value(first, label), _cron_value(last, label) if dash else None
    if start is None or (dash and end is None):
        return False
    stop = end if end is not None else start
    return low <= start <= stop <= high


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
