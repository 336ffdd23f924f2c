"""Text from upstream, made safe for the PBX: no control characters."""

from __future__ import annotations

_CONTROL = dict.fromkeys([*range(32), *range(127, 160)])  # C0, DEL, C1


def without_controls(text: str) -> str:
    """The text without control characters: no NUL, BEL, ESC sequence or line break from an Entra or
    Outlook value reaches ClearVox. (What is printed is escaped instead: report.printable.)"""
    return text.translate(_CONTROL)
