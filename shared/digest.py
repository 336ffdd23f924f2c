"""The one digest of stored field hashes: SHA-256 over canonical JSON, cut to a length.

Rows written by earlier versions stay readable: the users sync has always
hashed with ASCII escapes (`ascii=True`), the contacts sync without; both
forms are this one function, so a stored hash compares equal to a new one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(payload: Any, length: int, *, ascii: bool = False) -> str:
    """Stable hex digest of a JSON-able value: independent of dict order, process and platform."""
    return digest_text(json.dumps(payload, sort_keys=True, ensure_ascii=ascii, separators=(",", ":")), length)


def digest_text(text: str, length: int) -> str:
    """The digest of text that is already canonical (a key, or lines of earlier digests)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]
