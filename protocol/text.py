"""Text from users, agents and repositories, made safe to show on a terminal.

A task title, an agent's message or a file name can hold escape sequences (ANSI colours,
OSC window titles, cursor moves, a bell) or line breaks that would let it rewrite what a
person sees. `visible` shows each such character as text instead: ESC becomes the four
characters `\\x1b`. Ordinary unicode, emoji (with their joiners and variation selectors)
and the backslash stay as they are.
"""

from __future__ import annotations

import re

#: C0 and C1 controls and DEL; line and paragraph separators; bidirectional overrides and
#: isolates (they reorder what is shown); lone surrogates (they cannot even be encoded).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\x0a`, `\\u202e`): one line, inert."""
    return _CONTROL.sub(_escape, text)


def one_line(text: str, limit: int = 2000) -> str:
    """A sentence for an error reply: visible, on one line, at most `limit` characters."""
    text = visible(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
