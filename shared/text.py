"""Text from upstream, made safe for the PBX: no control characters."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # C0 (but the whitespace ones), DEL, C1
_SPACES = re.compile(r"[\t\n\r\v\f]")


def without_controls(text: str) -> str:
    """The text without control characters: line breaks and tabs become spaces, the rest (NUL, BEL, an
    ESC sequence's ESC ...) is dropped, so no Entra or Outlook value can drive the PBX or a terminal.
    (What the CLI prints is escaped instead: report.printable.)"""
    return _CONTROL.sub("", _SPACES.sub(" ", text))
