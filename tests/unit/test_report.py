"""The run report: reasons are capped, and text printed for a person cannot drive the terminal."""

from __future__ import annotations

import json

from shared.report import ELLIPSIS, REASON_MAX, RunReport, cap, printable
from shared.state import fit_report


def test_a_reason_quoting_a_huge_value_is_cut_with_an_ellipsis() -> None:
    report = RunReport("users", "t1")
    phone = "+31 6 " + "1" * 100_000
    report.add_skip("oid-1", f"unparseable phone number {phone!r}", name="Anna")
    report.add_failure("oid-2", "x" * 200_000)
    report.add_warning("oid-3", "y" * 200_000)
    for entry in (report.skipped[0], report.failed[0], report.warnings[0]):
        assert len(entry["reason"]) == REASON_MAX and entry["reason"].endswith(ELLIPSIS)
    assert report.skipped[0]["reason"].startswith("unparseable phone number '+31 6 111")
    assert cap("short") == "short"


def test_control_characters_are_escaped_for_the_terminal() -> None:
    assert printable("Eve\x1b]0;pwned\x07\x1b[2J") == "Eve\\x1b]0;pwned\\x07\\x1b[2J"
    assert printable("a\nb\x00c\x9bd\u2028") == "a\\nb\\x00c\\x9bd\\u2028"
    assert printable("Ren\u00e9e M\u00fcller-\u0141uk") == "Ren\u00e9e M\u00fcller-\u0141uk"  # letters stay as they are


def test_the_human_summary_escapes_every_value() -> None:
    report = RunReport("users", "t1")
    report.add_skip("oid-1", "no email", name="Eve\x1b[2J\nline")
    text = report.human_summary()
    assert "\x1b" not in text and "Eve\\x1b[2J\\nline (oid-1): no email" in text


def test_a_report_too_large_for_one_row_keeps_its_lists_shortened() -> None:
    report = {"sync": "users", "created": 3, "skipped": [{"id": f"u{i}", "reason": "r" * 400} for i in range(400)],
              "failed": [{"id": "f1", "reason": "boom"}], "warnings": [{"id": f"w{i}", "reason": "w" * 100} for i in range(50)]}
    body = fit_report(report, limit=30000)
    assert len(body) <= 30000
    doc = json.loads(body)
    assert doc["created"] == 3 and doc["failed"] == report["failed"]  # the short list is untouched
    assert 0 < len(doc["skipped"]) < 400 and doc["truncated"]["skipped"] == 400 - len(doc["skipped"])
    assert doc["skipped"][0] == report["skipped"][0]  # the first entries are kept
    assert fit_report({"sync": "users", "created": 1}) == json.dumps({"sync": "users", "created": 1})
