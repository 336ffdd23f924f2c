"""One retrying HTTP session per client, shared by the Graph and ClearVox clients.

urllib3's `Retry` does the work: it honours `Retry-After` on 429/503/504 and
backs off with jitter otherwise. We subclass it only to cap `Retry-After`
(a server asking for ten minutes must not stall a one-minute timer) and to
count retries for the run report.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

DEFAULT_TIMEOUT = (10.0, 60.0)  # (connect, read) seconds, on every call
RETRY_STATUSES = frozenset({429, 503, 504})


@dataclass
class HttpStats:
    """Thread-safe counters for one client in one run."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def count_retry(self, status: int | None) -> None:
        with self._lock:
            self.retries += 1
            if status == 429:
                self.throttled += 1


def wait(seconds: float) -> None:
    """Every wait between retries goes through here (urllib3's Retry-After and back-off, Graph's
    per-item `$batch` retries), so tests replace it and never wait for real."""
    time.sleep(seconds)


class CountingRetry(Retry):
    """`Retry` that caps Retry-After, reports each retry to `HttpStats`, and retries the
    methods in `creating_methods` only on 429 (the server says it did not process the request):
    after a 5xx or a gateway 504 a create may have happened, and a second one would duplicate it."""

    def __init__(self, *args: Any, stats: HttpStats | None = None, max_retry_after: float = 60.0,
                 creating_methods: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stats = stats
        self.max_retry_after = max_retry_after
        self.creating_methods = creating_methods

    def new(self, **kw: Any) -> CountingRetry:
        kw.setdefault("stats", self.stats)
        kw.setdefault("max_retry_after", self.max_retry_after)
        kw.setdefault("creating_methods", self.creating_methods)
        return super().new(**kw)  # type: ignore[return-value]

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() in self.creating_methods and status_code != 429:
            return False
        return super().is_retry(method, status_code, has_retry_after)

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.max_retry_after)

    def sleep_for_retry(self, response: Any) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after:
            wait(retry_after)
            return True
        return False

    def _sleep_backoff(self) -> None:
        backoff = self.get_backoff_time()
        if backoff > 0:
            wait(backoff)

    def increment(self, method: str | None = None, url: str | None = None, response: Any = None,
                  error: Exception | None = None, _pool: Any = None, _stacktrace: Any = None) -> CountingRetry:
        if self.stats is not None:
            self.stats.count_retry(getattr(response, "status", None))
        return super().increment(method, url, response, error, _pool, _stacktrace)  # type: ignore[return-value]


class CountingSession(requests.Session):
    """A Session with a default timeout on every call and a request counter."""

    def __init__(self, stats: HttpStats, timeout: float | tuple[float, float]) -> None:
        super().__init__()
        self.stats = stats
        self.default_timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.default_timeout)
        if self.verify is not True:
            # requests lets REQUESTS_CA_BUNDLE override Session.verify; an explicit bundle must win.
            kwargs.setdefault("verify", self.verify)
        self.stats.count_request()
        return super().request(method, url, *args, **kwargs)


def make_session(
    stats: HttpStats | None = None,
    *,
    retries: int = 5,
    backoff: float = 0.5,
    max_retry_after: float = 60.0,
    pool_size: int = 16,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    creating_methods: frozenset[str] = frozenset(),
) -> CountingSession:
    """A session that retries 429/503/504, connection set-up failures, never a read timeout.

    `creating_methods` (ClearVox: POST creates) are retried on 429 only; every other
    method is retried on all three (Graph's POSTs, $batch and getSchedule, are reads).
    """
    stats = stats or HttpStats()
    retry = CountingRetry(
        total=retries,
        connect=2,
        other=0,  # e.g. a certificate that fails verification will not pass on a retry
        read=0,  # a read timeout may mean the server acted: let the caller reconcile instead
        status=retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,
        backoff_factor=backoff,
        backoff_max=30.0,
        backoff_jitter=backoff,
        respect_retry_after_header=True,
        raise_on_status=False,
        stats=stats,
        max_retry_after=max_retry_after,
        creating_methods=frozenset(m.upper() for m in creating_methods),
    )
    session = CountingSession(stats, timeout)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def retries_made(resp: requests.Response) -> int:
    """How many times the session retried before this response (0 when it was the first answer)."""
    retry = getattr(resp.raw, "retries", None)
    return len(getattr(retry, "history", None) or ())


def after_retries(count: int) -> str:
    """" after N retries" for a message, or "" when nothing was retried."""
    return f" after {count} {'retry' if count == 1 else 'retries'}" if count > 0 else ""
