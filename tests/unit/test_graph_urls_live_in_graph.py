"""Every Microsoft Graph URL path lives under shared/graph/: the syncs and doctor call resource functions."""

from __future__ import annotations

import re
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
# A string literal that starts a Graph path, or names a Graph-only endpoint.
GRAPH_PATH = re.compile(r"""["'][^"'\s]*/(users|groups|organization|me|\$batch|contactFolders|getSchedule|calendarView|"""
                        r"""transitiveMembers|childFolders|delta)\b""")
ALLOWED = {"clearvox.py"}  # ClearVox's own /users paths (shared/clearvox.py owns the ClearVox API)


def test_no_graph_url_literal_outside_shared_graph() -> None:
    found = []
    for path in sorted(SHARED.rglob("*.py")):
        rel = path.relative_to(SHARED)
        if rel.parts[0] in ("graph", "sandbox") or rel.name in ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if GRAPH_PATH.search(line) and not line.lstrip().startswith("#"):
                found.append(f"shared/{rel}:{number}: {line.strip()}")
    assert not found, "Graph URL literals outside shared/graph/:\n" + "\n".join(found)


def test_the_check_sees_a_literal() -> None:
    assert GRAPH_PATH.search('graph.get(f"/users/{oid}/contactFolders")')
    assert GRAPH_PATH.search("x = '/groups/1/transitiveMembers'")
    assert GRAPH_PATH.search('url = "/$batch"')
    assert not GRAPH_PATH.search('"""Contacts sync: folder discovery, delta rounds through $batch and getSchedule"""')
