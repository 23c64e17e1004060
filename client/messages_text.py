"""How a worker's messages read to a model: one short block of plain lines (pure, no I/O).

Used by `chkdctl hook post-tool-use` (additionalContext) and chkd-mcp's worker tools, so
the model sees the same words whichever way a message reaches it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


def sender_words(m: Any) -> str:
    if m.sender == "worker":
        who = f"worker {m.from_worker}" if m.from_worker else "another worker"
    else:
        who = "the master" if m.sender == "master" else "the user"
    return who + (", to all workers" if m.broadcast else "")


def clock(ms: int) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(ms / 1000))


def message_line(m: Any) -> str:
    text = " ".join(str(m.text).split("\n")).strip()
    return f"- from {sender_words(m)} ({clock(m.created_at)}): {text}"


def messages_block(messages: Sequence[Any], worker_id: str | None = None) -> str:
    """'chkd: 2 new messages for you (worker w1):' and one line each; '' when there are none."""
    if not messages:
        return ""
    n = len(messages)
    head = f"chkd: {n} new message{'s' if n != 1 else ''} for you{f' (worker {worker_id})' if worker_id else ''}:"
    return "\n".join([head, *(message_line(m) for m in messages)])


def post_tool_use_output(messages: Sequence[Any], worker_id: str | None = None) -> dict[str, Any] | None:
    """The PostToolUse hook's stdout (Claude Code reads additionalContext into the model), or None."""
    block = messages_block(messages, worker_id)
    if not block:
        return None
    return {"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": block}}
