"""Users sync, linking by hand: `nexxt365 report unlinked [--csv]` lists the Entra users whose email a
ClearVox user already has, with the Object-ID to paste; `nexxt365 link --csv FILE` links the reviewed rows.

The CSV is opened in Excel to review it, so a cell that Excel would read as a formula (starting with
= + - @, a tab or a carriage return) is written with a leading ' and read back without it. `link --csv`
reads the file as Excel saves it: separated by commas or, in a Dutch locale, by semicolons.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from shared.clearvox import ClearVox
from shared.clients import clearvox
from shared.errors import EXIT_CONFIG, EXIT_ITEM_FAILURES, EXIT_OK, ClearVoxNotFound, ItemError
from shared.report import printable
from shared.sync.users.rules import Link, links_from_rows, object_key

if TYPE_CHECKING:
    from shared.settings import Tenant
    from shared.state import State, Store

CSV_COLUMNS = ("clearvox_user_id", "email", "entra_display_name", "object_id")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A cell Excel shows as text: one that would start a formula gets a leading '."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def from_csv_cell(text: str) -> str:
    """The value of a cell written by `csv_cell` (the leading ' of a neutralised formula removed)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_START) else text


def _delimiter(header: str) -> str:
    return ";" if header.count(";") > header.count(",") else ","


def unlinked_rows(state: State) -> list[Link]:
    """Users waiting for an administrator to paste their Object-ID, as the last run left them."""
    links = links_from_rows(state.rows("links"))
    waiting = [link for link in links.values() if link.status == "unlinked" and link.cv_user_id]
    return sorted(waiting, key=lambda link: (link.email.casefold(), link.object_id))


def report_unlinked(tenant: Tenant, store: Store, out: TextIO, *, csv_format: bool) -> None:
    """`nexxt365 report unlinked [--csv]`: ClearVox users skipped for an existing email, with the Object-ID to paste."""
    rows = unlinked_rows(store.for_tenant(tenant.key))
    if csv_format:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for link in rows:
            writer.writerow([csv_cell(str(v)) for v in (link.cv_user_id, link.email, link.display_name, link.object_id)])
        return
    if not rows:
        print(f"No users wait for a link (tenant {tenant.key}).", file=out)
        return
    print(f"{len(rows)} Entra user(s) exist in ClearVox but are not linked (tenant {tenant.key}). Paste each Object-ID "
          "into \"Extern toepassing ID\" of the ClearVox user, or review `nexxt365 report unlinked --csv > FILE` and "
          "run `nexxt365 link --csv FILE`.", file=out)
    table = [("ClearVox user", "Email", "Entra display name", "Object-ID")]
    table += [(str(link.cv_user_id), link.email, link.display_name, link.object_id) for link in rows]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for row in table:
        print(printable("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()), file=out)


def link_from_csv(tenant: Tenant, store: Store, path: str, out: TextIO) -> int:
    """`nexxt365 link --csv FILE`: set Extern toepassing ID for each reviewed row, after checking it again.

    A row is linked only when its ClearVox user still has the row's email and
    no Object-ID, the Object-ID is still waiting for a link with that email
    and no other ClearVox user carries it. The next sync run sees the link and
    sends the Entra values. Returns the exit code: 0 all rows linked (or
    already), 1 some row refused or failed, 2 the file is unusable.
    """
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as fh:
            delimiter = _delimiter(fh.readline())
            fh.seek(0)
            reader = csv.DictReader(fh, delimiter=delimiter)
            missing = [c for c in ("clearvox_user_id", "email", "object_id") if c not in (reader.fieldnames or [])]
            if missing:
                print(f"{path}: missing column(s) {', '.join(missing)} (read as separated by {delimiter!r}); use the "
                      "file of `nexxt365 report unlinked --csv`, saved as CSV separated by commas or semicolons",
                      file=out)
                return EXIT_CONFIG
            entries = [(n, row) for n, row in enumerate(reader, start=2)]
    except OSError as exc:
        print(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})", file=out)
        return EXIT_CONFIG
    except (csv.Error, UnicodeDecodeError) as exc:
        print(f"{path}: not a CSV file ({exc})", file=out)
        return EXIT_CONFIG
    state = store.for_tenant(tenant.key)
    links = {object_key(k): v for k, v in links_from_rows(state.rows("links")).items()}
    code = EXIT_OK
    linked = 0
    with clearvox(tenant) as cv:
        for line, row in entries:
            cv_id, email, oid = (from_csv_cell((row.get(c) or "").strip()).strip()
                                 for c in ("clearvox_user_id", "email", "object_id"))
            if not (cv_id or email or oid):
                continue
            try:
                ok, message = _link_row(cv, links, cv_id, email, oid)
            except ItemError as exc:
                ok, message = False, f"not linked: {exc}"
            print(printable(f"line {line}: ClearVox user {cv_id or '?'} <{email}> Object-ID {oid or '?'}: {message}"),
                  file=out)
            if ok:
                linked += 1
            else:
                code = EXIT_ITEM_FAILURES
    print(f"{linked} row(s) linked or already linked; the next `nexxt365 sync users` sends the Entra values.", file=out)
    return code


def _link_row(cv: ClearVox, links: Mapping[str, Link], cv_id: str, email: str, oid: str) -> tuple[bool, str]:
    if not cv_id or not email or not oid:
        return False, "not linked: clearvox_user_id, email and object_id are all needed"
    link = links.get(object_key(oid))
    if link is None or link.status not in ("unlinked", "linked"):
        return False, "not linked: this Object-ID is not waiting for a link (run `nexxt365 sync users` and report again)"
    if link.cv_user_id != cv_id:
        return False, f"not linked: the last run pairs this Object-ID with ClearVox user {link.cv_user_id or '(none)'}"
    if link.email.casefold() != email.casefold():
        return False, f"not linked: the Entra user's email is now {link.email}"
    try:
        current = cv.get_user(cv_id)
    except ClearVoxNotFound:
        return False, "not linked: the ClearVox user no longer exists"
    ext = (current.external_application_id or "").strip()
    if object_key(ext) == object_key(oid):
        return True, "already linked"
    if current.email.strip().casefold() != email.casefold():
        return False, f"not linked: the ClearVox user's email is now {current.email}"
    if ext:
        return False, f"not linked: the ClearVox user already carries Object-ID {ext}"
    others = [u.id for u in cv.iter_users(external_application_id=oid) if u.id != cv_id]
    if others:
        return False, f"not linked: ClearVox user {', '.join(others)} already carries this Object-ID"
    cv.update_user(cv_id, {"external_application_id": oid})
    return True, "linked"

