"""The run report: counts and per-item reasons, stored in the runs table and printed by the CLI.

Every reason, warning and failure text is cut to REASON_MAX characters (with an
ellipsis), so that one item echoing a huge upstream value cannot crowd out the
rest of the report. Text printed for a person goes through `printable`, which
escapes control characters (terminal escape sequences, BEL, NUL, newlines)
that upstream data may hold.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import EXIT_CONFIG, EXIT_ITEM_FAILURES, EXIT_NOT_RUN, EXIT_OK

REASON_MAX = 500
ELLIPSIS = "\u2026"
SHOWN_SKIPPED = 50
SHOWN_WARNINGS = 20
SHOWN_FAILED = 50


def cap(text: str, limit: int = REASON_MAX) -> str:
    """At most `limit` characters: a longer text keeps its start and ends with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def printable(text: object) -> str:
    """Text for a terminal: control characters (C0, DEL, C1) shown as escapes, so upstream data cannot drive it."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


def printable_lines(text: str) -> str:
    """Several lines for a terminal: the line breaks kept, everything else as `printable`."""
    return "\n".join(printable(line) for line in text.split("\n"))


@dataclass
class RunReport:
    sync: str
    tenant: str
    dry_run: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    created: int = 0
    updated: int = 0
    linked: int = 0
    deleted: int = 0
    deactivated: int = 0
    unchanged: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a run-level error (configuration, permission, outage)
    error_exit: int = EXIT_OK
    graph_requests: int = 0
    clearvox_requests: int = 0
    retries: int = 0
    plan_text: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + n)

    def add_skip(self, item_id: str, reason: str, name: str = "") -> None:
        with self._lock:
            self.skipped.append({"id": cap(item_id), "reason": cap(reason), **({"name": cap(name)} if name else {})})

    def add_failure(self, item_id: str, reason: str) -> None:
        with self._lock:
            self.failed.append({"id": cap(item_id), "reason": cap(reason)})

    def add_warning(self, item_id: str, reason: str) -> None:
        with self._lock:
            self.warnings.append({"id": cap(item_id), "reason": cap(reason)})

    def fail_run(self, message: str, exit_code: int = EXIT_CONFIG) -> None:
        self.error = cap(message, 4 * REASON_MAX)
        self.error_exit = exit_code

    @property
    def exit_code(self) -> int:
        if self.extra.get("not_run"):
            return EXIT_NOT_RUN
        if self.error:
            return self.error_exit or EXIT_ITEM_FAILURES
        return EXIT_ITEM_FAILURES if self.failed else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sync": self.sync,
            "tenant": self.tenant,
            "dry_run": self.dry_run,
            "started": self.started.isoformat(),
            "created": self.created,
            "updated": self.updated,
            "linked": self.linked,
            "deleted": self.deleted,
            "deactivated": self.deactivated,
            "unchanged": self.unchanged,
            "skipped": list(self.skipped),
            "failed": list(self.failed),
            "warnings": list(self.warnings),
            "requests": {"graph": self.graph_requests, "clearvox": self.clearvox_requests, "retries": self.retries},
            "exit_code": self.exit_code,
        }
        if self.error:
            out["error"] = self.error
        out.update(self.extra)
        return out

    def summary(self) -> str:
        """One log line: the counts, never item details (those are in the runs table)."""
        parts = [f"sync={self.sync}", f"tenant={self.tenant}", f"created={self.created}", f"updated={self.updated}",
                 f"linked={self.linked}", f"deleted={self.deleted}", f"deactivated={self.deactivated}",
                 f"skipped={len(self.skipped)}", f"failed={len(self.failed)}", f"graph_requests={self.graph_requests}",
                 f"clearvox_requests={self.clearvox_requests}", f"retries={self.retries}"]
        if self.dry_run:
            parts.append("dry_run=true")
        if self.error:
            parts.append(f"error={self.error!r}")
        return "nexxt365 run " + " ".join(parts)

    def human_summary(self) -> str:
        """What the CLI and the demo print for a person: counts, then the first items with their reasons."""
        head = f"{self.sync} sync{' (dry run: nothing written)' if self.dry_run else ''} - tenant {self.tenant}"
        if self.extra.get("not_run"):
            return printable(f"{head}: not run, {self.extra['not_run']}")
        lines = [head,
                 f"  created {self.created}, updated {self.updated}, linked {self.linked}, deleted {self.deleted}, "
                 f"deactivated {self.deactivated}, unchanged {self.unchanged}, skipped {len(self.skipped)}, failed {len(self.failed)}"]
        lines += [f"  skipped {s['name'] + ' (' + s['id'] + ')' if s.get('name') else s['id']}: {s['reason']}"
                  for s in self.skipped[:SHOWN_SKIPPED]]
        if len(self.skipped) > SHOWN_SKIPPED:
            lines.append(f"  ... and {len(self.skipped) - SHOWN_SKIPPED} more skipped (use --json for all)")
        lines += [f"  warning {w['id']}: {w['reason']}" for w in self.warnings[:SHOWN_WARNINGS]]
        lines += [f"  FAILED {f['id']}: {f['reason']}" for f in self.failed[:SHOWN_FAILED]]
        if self.error:
            lines.append(f"  ERROR: {self.error}")
        lines.append(f"  requests: Graph {self.graph_requests}, ClearVox {self.clearvox_requests}, retries {self.retries}")
        return "\n".join(printable(line) for line in lines)
