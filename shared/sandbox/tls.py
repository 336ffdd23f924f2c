"""A throw-away certificate authority for the simulators (trustme).

The clients verify TLS as in production; they trust this CA through a bundle
file, which `ca_bundle_path` writes once per process.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

_lock = threading.Lock()


@lru_cache(maxsize=1)
def _ca() -> Any:
    import trustme  # dev dependency: only the sandbox needs it

    return trustme.CA()


@lru_cache(maxsize=1)
def _server_cert() -> Any:
    return _ca().issue_cert("127.0.0.1", "localhost")


def server_context() -> ssl.SSLContext:
    """SSL context for a simulator listening on 127.0.0.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _server_cert().configure_cert(ctx)
    return ctx


@lru_cache(maxsize=1)
def ca_bundle_path() -> str:
    """Path of a PEM file with the sandbox CA, for REQUESTS_CA_BUNDLE / verify=."""
    with _lock:
        fd, path = tempfile.mkstemp(prefix="nexxt365-sandbox-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as fh:
            fh.write(_ca().cert_pem.bytes())
        return path


def self_signed_certificate(common_name: str = "nexxt365") -> tuple[str, str]:
    """(private key PEM, certificate PEM) of a fresh RSA self-signed certificate, as an app registration takes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()
