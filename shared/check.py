"""One doctor check: a name, OK / FAIL / WARN / SKIP, and the detail with the fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    name: str
    status: str  # OK | FAIL | WARN | SKIP
    detail: str

    @property
    def passed(self) -> bool:
        return self.status in ("OK", "WARN", "SKIP")

    def to_json(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}
