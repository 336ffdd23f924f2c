"""Collects the telemetry records a test's runs emit (the records the Azure Monitor exporter would send)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared import telemetry

# Attributes every LogRecord has; anything else on a telemetry record is a custom dimension.
STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "", 0, "", None, None))) | {"message", "asctime"}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def dimensions(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Each record's custom dimensions (what Application Insights stores in customDimensions / Properties)."""
        docs = [{k: v for k, v in vars(r).items() if k not in STANDARD} for r in self.records]
        return [d for d in docs if kind is None or d.get(telemetry.KIND) == kind]

    def text(self) -> str:
        """Everything a record would export: its message and every custom dimension."""
        return "\n".join(f"{r.getMessage()} {sorted((k, str(v)) for k, v in vars(r).items() if k not in STANDARD)}"
                         for r in self.records)


@contextmanager
def captured() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger(telemetry.LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
