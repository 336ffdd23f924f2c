"""The ClearVox client's transport: session, TLS, timeouts, unreachable PBX, secrets and control characters.

It knows no ClearVox path or JSON field (those are in shared.clearvox): it sends
a request to `base_url + path` with the key in `auth_header`, never follows a
redirect, strips control characters from every string it sends, and turns a
failed connection into ClearVoxUnavailable naming the setting to check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Self, TypedDict

import requests
import urllib3

from shared.errors import ClearVoxUnavailable, ConfigError
from shared.http import DEFAULT_TIMEOUT, HttpStats, make_session
from shared.text import without_controls

log = logging.getLogger("shared.clearvox")



class TransportOptions(TypedDict, total=False):
    stats: HttpStats | None
    verify: str | bool | None  # a CA bundle path; None: REQUESTS_CA_BUNDLE
    timeout: float | tuple[float, float]
    pool_size: int
    max_retry_after: float
    retries: int
    backoff: float


class ClearVoxTransport:
    """Thread-safe: one instance serves a ThreadPoolExecutor through a pool of `pool_size` connections.

    429/503/504 are retried by the session (honouring Retry-After up to `max_retry_after`
    seconds); a POST creates, so it is retried on 429 only (the PBX did not process it).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        auth_header: str,
        *,
        stats: HttpStats | None = None,
        verify: str | bool | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        pool_size: int = 16,
        max_retry_after: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
    ) -> None:
        if verify is False:
            raise ValueError("TLS verification cannot be turned off; pass a CA bundle path to trust a private CA")
        if not api_key:
            raise ConfigError("NEXXT365_CLEARVOX_API_KEY is empty. Create an API key in ClearVox Nexxt and set it.")
        self.base_url = base_url
        self.stats = stats or HttpStats()
        self._api_key = api_key
        self._verify = verify  # None: requests honours REQUESTS_CA_BUNDLE
        self._session = make_session(self.stats, retries=retries, backoff=backoff, max_retry_after=max_retry_after,
                                     pool_size=pool_size, timeout=timeout, creating_methods=frozenset({"POST"}))
        self._session.headers.update({auth_header: api_key, "Accept": "application/json"})

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, params: Mapping[str, str] | None, body: Any) -> requests.Response:
        kwargs: dict[str, Any] = {"params": dict(params) if params else None, "allow_redirects": False}
        if body is not None:
            kwargs["json"] = _sendable(body)
        if self._verify is not None:
            kwargs["verify"] = self._verify
        started = time.monotonic()
        try:
            resp = self._session.request(method, self.base_url + path, **kwargs)
        except requests.exceptions.RequestException as exc:
            raise self._unreachable(exc, method, path) from exc
        log.debug("clearvox %s %s -> %s in %.3fs", method, path, resp.status_code, time.monotonic() - started)
        return resp

    def _unreachable(self, exc: requests.exceptions.RequestException, method: str, path: str) -> ClearVoxUnavailable:
        if isinstance(exc, requests.exceptions.SSLError):
            return ClearVoxUnavailable(
                f"cannot set up a trusted TLS connection to {self.base_url}: check NEXXT365_CLEARVOX_URL, and "
                "REQUESTS_CA_BUNDLE when the PBX uses a private certificate authority", 0, "tls")
        if _timed_out(exc):
            return ClearVoxUnavailable(
                f"ClearVox at {self.base_url} did not answer {method} {path} in time: check NEXXT365_CLEARVOX_URL "
                "and that the PBX is up (the next run tries again)", 0, "timeout")
        return ClearVoxUnavailable(
            f"cannot reach ClearVox at {self.base_url} ({type(exc).__name__}): check NEXXT365_CLEARVOX_URL "
            "and that the PBX is reachable from this app", 0, "unreachable")

    def _scrub(self, value: Any) -> Any:
        """A server may echo the request: no field of its error (code, message, field names and values)
        may carry the key into a message, a log line or a report."""
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        return str(value).replace(self._api_key, "***")


def _timed_out(exc: requests.exceptions.RequestException) -> bool:
    """requests reports a read timeout that exhausted the retries as a ConnectionError around urllib3's."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # urllib3 2 still derives "connection refused" (NewConnectionError) from its TimeoutError
    return isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError)




def _sendable(value: Any) -> Any:
    """What is sent, without control characters: no NUL, BEL, ESC sequence or line break
    from an Entra or Outlook name reaches the PBX."""
    if isinstance(value, str):
        return without_controls(value)
    if isinstance(value, dict):
        return {k: _sendable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sendable(v) for v in value]
    return value
