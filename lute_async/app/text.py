"""Text from tasks made safe for a terminal: control characters are shown, never obeyed.

A task's log line, progress message, error or result may hold escape sequences (a title
change, a screen clear, an OSC 8 link); printed raw they would act on the user's terminal.
"""

from __future__ import annotations

import re

__all__ = ["visible"]

# C0 (but tab), DEL and C1; newline is its own case.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with each C0/C1 control character but tab shown as its escape (ESC as
    ``\\x1b``, newline as ``\\n``); newlines stay when ``newlines`` (a block of text)."""
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub(_shown, text)
