"""The `nexxt365` command: doctor, sync, report unlinked, link, demo.

Exit codes (ARCHITECTURE.md): 0 success, 1 the run finished with item
failures, 2 configuration or permission error, 3 not run (another run holds
the lease). Messages, never tracebacks: an unexpected error is one line naming
its class; the traceback goes to the debug log (`--debug`). Human output goes
through `EscapingOut`, so control characters in upstream data (terminal escape
sequences, BEL, NUL) are printed escaped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from shared.errors import EXIT_CONFIG, EXIT_ITEM_FAILURES, EXIT_OK, ConfigError, Nexxt365Error
from shared.report import RunReport, printable_lines
from shared.settings import Settings, Tenant
from shared.state import Store
from shared.sync.base import sync_names

log = logging.getLogger("nexxt365")


class EscapingOut:
    """A text stream for a person: every character that is not printable, except the line break, is written escaped."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(printable_lines(text))
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def _parse_at(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at {text!r} is not ISO-8601, e.g. 2026-11-30T09:15:00+01:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexxt365", description="Microsoft 365 <-> ClearVox Nexxt connector.")
    parser.add_argument("--tenant", help="in multi-customer mode: only this customer (RowKey of the tenants table)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging (never secrets)")
    parser.add_argument("--debug", action="store_true", help="debug logging, with the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="check credentials, consent, permissions, ClearVox key/account/licence")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--contract", action="store_true",
                        help="also check, read-only, every ClearVox path and field the connector relies on")

    sync = sub.add_parser("sync", help="run one sync now")
    sync.add_argument("which", choices=sync_names())
    sync.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    sync.add_argument("--json", action="store_true", help="print one JSON object")
    sync.add_argument("--at", type=_parse_at, help="calendar: evaluate as if it were this moment (ISO-8601)")
    sync.add_argument("--user", help="users: sync this one user (email or object id) and explain every decision")
    sync.add_argument("--confirm-deactivations", action="store_true", help="users: let a held mass deactivation through")
    sync.add_argument("--confirm-deletions", action="store_true", help="contacts: let held mass deletions through")

    report = sub.add_parser("report", help="reports")
    report.add_argument("what", choices=["unlinked"])
    report.add_argument("--csv", action="store_true", help="CSV for review and `nexxt365 link --csv`")

    link = sub.add_parser("link", help="link the reviewed rows of `report unlinked --csv`")
    link.add_argument("--csv", required=True, metavar="FILE")

    dispatch = sub.add_parser("dispatch", help="put one message per tenant on the sync's queue (what the timer does in queue mode)")
    dispatch.add_argument("which", choices=sync_names())
    work = sub.add_parser("work", help="run the sync's queued messages (what the queue trigger does)")
    work.add_argument("which", choices=sync_names())
    work.add_argument("--until-empty", action="store_true", help="stop when the queue is empty (default: keep polling)")
    work.add_argument("--concurrency", type=int, default=16, help="messages run at a time (host.json batchSize)")

    sub.add_parser("demo", help="everything against the built-in sandbox")

    status = sub.add_parser("status", help="every customer x sync: last run, failures, held changes, what needs attention")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument("--tenant", dest="status_tenant", metavar="KEY", help="only this customer")
    return parser


def _tenants(settings: Settings, only: str | None) -> list[Tenant]:
    tenants = settings.tenants()
    if only:
        tenants = [t for t in tenants if t.key == only]
        if not tenants:
            raise Nexxt365Error(f"--tenant {only!r} is not in the tenants table.")
    return tenants


def cmd_doctor(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from shared.doctor import render, run_doctor

    store: Store | None
    try:
        store = Store(settings.state_connection())
    except Nexxt365Error as exc:
        print(f"  FAIL state storage: {exc}", file=out)
        store = None
    code = EXIT_OK if store is not None else EXIT_CONFIG
    try:
        tenants = _tenants(settings, args.tenant)
    except ConfigError as exc:  # the same message every run would give
        print(json.dumps({"checks": [{"check": "settings", "status": "FAIL", "detail": str(exc)}]}, indent=2) if args.json
              else f"  FAIL settings: {exc}", file=out)
        return EXIT_CONFIG
    results: list[dict[str, Any]] = []
    for tenant in tenants:
        checks = run_doctor(tenant, store, contract=args.contract)
        if not all(c.passed for c in checks):
            code = EXIT_CONFIG
        if args.json:
            results.append({"tenant": tenant.key, "checks": [c.to_json() for c in checks]})
        else:
            print(render(tenant, checks), file=out)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else {"tenants": results}, indent=2), file=out)
    return code


def cmd_sync(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from shared import runner

    store = Store(settings.state_connection())
    extra = {"user": args.user, "confirm_deactivations": args.confirm_deactivations, "confirm_deletions": args.confirm_deletions}
    reports = [runner.run(args.which, t, store, dry_run=args.dry_run, at=args.at, args=extra, respect_backoff=False)
               for t in _tenants(settings, args.tenant)]
    _print_reports(reports, args.json, out)
    return max((r.exit_code for r in reports), default=EXIT_OK)


def _print_reports(reports: Sequence[RunReport], as_json: bool, out: TextIO) -> None:
    if as_json:
        docs = [r.to_json() for r in reports]
        print(json.dumps(docs[0] if len(docs) == 1 else {"tenants": docs}, indent=2, default=str), file=out)
        return
    for r in reports:
        if r.plan_text:
            print(r.plan_text, file=out)
        print(r.human_summary(), file=out)


def cmd_report(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from shared.sync.users.linking import report_unlinked

    store = Store(settings.state_connection())
    for tenant in _tenants(settings, args.tenant):
        report_unlinked(tenant, store, out, csv_format=args.csv)
    return EXIT_OK


def cmd_link(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from shared.sync.users.linking import link_from_csv

    store = Store(settings.state_connection())
    code = EXIT_OK
    for tenant in _tenants(settings, args.tenant):
        code = max(code, link_from_csv(tenant, store, args.csv, out))
    return code


def cmd_demo(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from shared.sandbox.demo import run_demo

    return run_demo(out)


def cmd_dispatch(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from shared.dispatch import cli_dispatch

    return cli_dispatch(args, settings, out)


def cmd_work(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from shared.dispatch import cli_work

    return cli_work(args, settings, out)


def cmd_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from shared.status import run_status

    return run_status(settings, args.status_tenant or args.tenant, args.json, out)


COMMANDS = {"doctor": cmd_doctor, "sync": cmd_sync, "report": cmd_report, "link": cmd_link, "demo": cmd_demo,
            "status": cmd_status, "dispatch": cmd_dispatch, "work": cmd_work}


def _machine_output(args: argparse.Namespace) -> bool:
    """JSON and CSV are printed as they are (JSON escapes control characters itself; CSV cells are neutralised)."""
    return bool(getattr(args, "json", False) or getattr(args, "csv", False) is True)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, settings: Settings | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("azure").setLevel(logging.WARNING)
    log.setLevel(level)
    shown: TextIO = out if _machine_output(args) else EscapingOut(out)  # type: ignore[assignment]
    try:
        settings = settings or Settings()
        return COMMANDS[args.command](args, settings, shown)
    except Nexxt365Error as exc:
        code = exc.exit_code if exc.exit_code != EXIT_OK else EXIT_CONFIG
        print(f"nexxt365: {printable_lines(str(exc))}", file=sys.stderr)
        if getattr(args, "json", False):  # a script reading stdout gets the reason too
            print(json.dumps({"error": str(exc), "exit_code": code}), file=out)
        return code
    except KeyboardInterrupt:
        return EXIT_ITEM_FAILURES
    except Exception as exc:  # one line for the operator; the traceback only in the debug log
        log.debug("nexxt365 %s failed", args.command, exc_info=True)
        print(f"nexxt365: unexpected {type(exc).__name__} in `{args.command}`: run with --debug / see the log for details.",
              file=sys.stderr)
        return EXIT_ITEM_FAILURES


if __name__ == "__main__":
    sys.exit(main())
