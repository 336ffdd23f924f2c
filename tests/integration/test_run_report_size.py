"""A run whose items echo huge upstream values still stores a report with its lists."""

from __future__ import annotations

import json

from shared.report import REASON_MAX, RunReport
from shared.state import RUN_REPORT_MAX, Store


def test_a_report_with_huge_reasons_is_stored_with_its_lists(store: Store) -> None:
    report = RunReport("contacts", "t1")
    phone = "+31 6 " + "1" * 100_000
    for i in range(300):
        report.add_skip(f"contact-{i}", f"unparseable phone number {phone!r}")
    report.add_failure("contact-x", "ClearVox answered 500")
    report.add_warning("contact-y", "a warning")
    state = store.for_tenant("t1")
    state.save_run("contacts", report.to_json())
    row = next(iter(state.rows("runs").values()))
    assert len(row["report"]) <= RUN_REPORT_MAX
    stored = json.loads(row["report"])
    assert stored["failed"] == report.failed and stored["warnings"] == report.warnings
    assert stored["skipped"] and all(len(s["reason"]) <= REASON_MAX for s in stored["skipped"])
    assert stored["truncated"] == {"skipped": 300 - len(stored["skipped"])}
