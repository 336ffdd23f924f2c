"""Azurite, the Azure Storage emulator (table and queue services), started from the project's node_modules.

Tests, the demo and bench/ run it in memory on free ports, so nothing
persists and several runs can share a machine. The queue service is started
only when asked (`Azurite(queue=True)`): the fan-out tests and the fleet bench.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from shared.errors import ConfigError

# Azurite's documented, public development account (not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ROOT = Path(__file__).resolve().parents[2]


def connection_string(port: int, host: str = "127.0.0.1", queue_port: int | None = None) -> str:
    queue = f"QueueEndpoint=http://{host}:{queue_port}/{DEV_ACCOUNT};" if queue_port else ""
    return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"TableEndpoint=http://{host}:{port}/{DEV_ACCOUNT};{queue}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary(name: str) -> str:
    local = ROOT / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise ConfigError("Azurite is not installed. Run `make test` or `npm ci` in the repository to install it.")


class Azurite:
    """In-memory Azurite services on free ports (table; queue too with `queue=True`); use as a context manager."""

    def __init__(self, *, queue: bool = False) -> None:
        self.port = _free_port()
        self.queue_port = _free_port() if queue else None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workdir = tempfile.mkdtemp(prefix="nexxt365-azurite-")

    @property
    def connection_string(self) -> str:
        return connection_string(self.port, queue_port=self.queue_port)

    def start(self) -> Azurite:
        try:
            self._start("table", self.port)
            if self.queue_port is not None:
                self._start("queue", self.queue_port)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, service: str, port: int) -> None:
        cmd = [_binary(f"azurite-{service}"), "--inMemoryPersistence", "--silent", "--disableTelemetry",
               "--skipApiVersionCheck", f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
        proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "NODE_NO_WARNINGS": "1"})
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"Azurite ({service}) exited at start: {err[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"Azurite ({service}) did not start within 30 s")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.procs = []
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
