"""What a worker's shim learns from its agent's output, and the events it becomes.

The shim parses a `claude-stream-json` agent's stdout (client/claude_stream.py) into these
facts and sends them as one `AgentReport`; the daemon records them on the worker row
(session_id, model, tokens, cost) and turns limits and API errors into events.

The events these become (`agent.session`, `agent.usage`, `agent.usage_limit`, `agent.api_error`,
`agent.resumed`) are declared with every other kind in protocol/events.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

_Count = Annotated[int, Meta(ge=0, le=2**40)]
_Usd = Annotated[float, Meta(ge=0, le=1_000_000)]
_Ms = Annotated[int, Meta(ge=0, le=2**53)]
_Short = Annotated[str, Meta(max_length=1000, pattern=r"\A[^\x00]*\Z")]
_Id = Annotated[str, Meta(max_length=200, pattern=r"\A[^\x00]*\Z")]

#: How the CLI names an API failure (`error` on its synthetic assistant line), as chkd reports it.
ApiErrorKind = Literal[
    "rate_limit",
    "usage_limit",
    "server_error",
    "billing_error",
    "authentication_failed",
    "invalid_request",
    "max_output_tokens",
    "unknown",
]


class RunUsage(Struct, omit_defaults=True):
    """One agent run's totals, from the CLI's `result` line (cache tokens counted as input)."""

    #: The result line's uuid: a report the shim sends twice is added once.
    ref: _Id
    tokens_in: _Count = 0
    tokens_out: _Count = 0
    cost_usd: _Usd = 0.0
    is_error: bool = False
    terminal_reason: _Short = ""
    subtype: _Short = ""
    num_turns: _Count = 0
    #: The CLI's own words when is_error (the result text), for the worker's one sentence.
    text: _Short = ""


class UsageLimit(Struct, omit_defaults=True):
    """A subscription usage limit (`rate_limit_event` status rejected, or the usage-limit error)."""

    resets_at: _Ms | None = None
    limit_type: _Short = ""
    text: _Short = ""


class ApiError(Struct, omit_defaults=True):
    kind: ApiErrorKind
    status: int | None = None
    text: _Short = ""
