"""A throw-away certificate authority for the simulators (trustme).

The clients verify TLS as in production; they trust this CA through a bundle
file, which `ca_bundle_path` writes once per process.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
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
