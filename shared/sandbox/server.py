"""Base for the simulators: a threaded HTTPS server with latency, faults and a request log.

Each simulator subclasses `SimHandler`-style routing by implementing
`handle(req) -> Response`. Everything runs in-process on 127.0.0.1 with an
ephemeral port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from shared.sandbox.tls import server_context


@dataclass
class Request:
    method: str
    path: str  # without query string
    query: dict[str, str]
    headers: dict[str, str]  # lower-case keys
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float


@dataclass
class Fault:
    """Injected failure: the next `count` requests matching `match` get `status`."""

    match: Callable[[Request], bool]
    status: int
    count: int
    retry_after: int | None = None
    body: Any = None


class SimServer:
    """A threaded HTTPS server on 127.0.0.1 calling `self.handle` for each request."""

    def __init__(self, *, latency: float = 0.0, tls: bool = True) -> None:
        self.latency = latency
        self.log: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        self._lock = threading.RLock()
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out as separate writes: without TCP_NODELAY, Nagle plus the
            # client's delayed ACK add ~40 ms to every keep-alive request
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                if sim.latency:
                    time.sleep(sim.latency)
                resp = sim._fault_for(req) or sim._safe_handle(req)
                with sim._lock:
                    sim.log.append(LoggedRequest(req.method, req.path, req.query, resp.status, time.time()))
                payload = resp.encode()
                self.send_response(resp.status)
                if resp.body is not None and not isinstance(resp.body, bytes):
                    self.send_header("Content-Type", "application/json")
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 128
        self.tls = tls
        if tls:
            self.httpd.socket = server_context().wrap_socket(self.httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host!s}:{port}"

    def start(self) -> Self:
        # A short poll interval makes stop() quick: tests start and stop simulators by the hundred.
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and log --------------------------------------------------
    def inject(self, status: int, *, count: int = 1, match: Callable[[Request], bool] | None = None,
               retry_after: int | None = None, body: Any = None) -> None:
        """Fail the next `count` matching requests with `status` (429/503 get Retry-After if given)."""
        with self._lock:
            self.faults.append(Fault(match or (lambda r: True), status, count, retry_after, body))

    def _fault_for(self, req: Request) -> Response | None:
        with self._lock:
            for fault in self.faults:
                if fault.count > 0 and fault.match(req):
                    fault.count -= 1
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    return Response(fault.status, fault.body if fault.body is not None else self.fault_body(fault.status), headers)
        return None

    def fault_body(self, status: int) -> Any:
        """Error body for an injected fault; simulators override with their own shape."""
        return {"error": {"code": str(status), "message": "injected fault"}}

    def requests_to(self, predicate: Callable[[LoggedRequest], bool] | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if predicate is None or predicate(r)]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def _safe_handle(self, req: Request) -> Response:
        try:
            return self.handle(req)
        except Exception as exc:  # a simulator bug must show as a 500, not hang the client
            return Response(500, {"error": {"code": "internal", "message": f"simulator error: {exc!r}"}})

    def handle(self, req: Request) -> Response:  # pragma: no cover - overridden
        return Response(404, {"error": {"code": "not_found", "message": req.path}})
