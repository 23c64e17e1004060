"""Reading Claude Code's `--output-format stream-json --verbose` output, one line at a time.

Pure: no I/O. The shim feeds every output line to a `StreamReader` and sends what it returns
to the daemon as an `AgentReport`. What counts (claude-code/FACTS.md, samples/):

- `system`/`init`: the session id (what `--resume` continues) and the model;
- `result`: the run's totals — `usage` (input + cache creation + cache read tokens in, output
  tokens out), `total_cost_usd`, `is_error`, `terminal_reason`. Usage on `assistant` lines is
  partial and never summed. An API error still says `subtype: success`: judge by `is_error`;
- `rate_limit_event` with status `rejected` (subscription usage limit, `resetsAt` in seconds) and
  the CLI's synthetic assistant line for a failed API call (`error`: rate_limit, server_error,
  billing_error, authentication_failed; `api_error: usage_limit_reached` for the usage limit).

Lines that are not JSON (a crash, a warning) are only activity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from chkd.protocol.agents import ApiError, RunUsage, UsageLimit

#: The CLI's `error` words → chkd's API error kinds (protocol/agents.py ApiErrorKind).
_KINDS = {
    "rate_limit": "rate_limit",
    "server_error": "server_error",
    "overloaded": "server_error",
    "billing_error": "billing_error",
    "authentication_failed": "authentication_failed",
    "invalid_request": "invalid_request",
    "max_output_tokens": "max_output_tokens",
}
_TEXT_MAX = 1000


@dataclass
class Facts:
    """What one line told: any of session/model, a usage limit, an API error, a run's usage."""

    session_id: str | None = None
    model: str | None = None
    usage: RunUsage | None = None
    usage_limit: UsageLimit | None = None
    api_error: ApiError | None = None


@dataclass
class StreamReader:
    """Parses the stream of one agent run; remembers what it already reported (one usage limit per run)."""

    session_id: str | None = None
    model: str | None = None
    limit_reported: bool = False
    results: int = 0
    _partial: bytes = field(default=b"", repr=False)

    def feed(self, chunk: bytes) -> list[Facts]:
        """Bytes as they come from the pipe: complete lines are parsed, the rest kept for later."""
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        out = []
        for line in lines:
            facts = self.line(line)
            if facts is not None:
                out.append(facts)
        if len(self._partial) > 16 * 1024 * 1024:  # a line this long is no stream-json: drop it
            self._partial = b""
        return out

    def finish(self) -> list[Facts]:
        """The agent's output ended: a last line without its newline."""
        rest, self._partial = self._partial, b""
        facts = self.line(rest) if rest.strip() else None
        return [facts] if facts is not None else []

    def line(self, raw: bytes | str) -> Facts | None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(msg, dict):
            return None
        kind = msg.get("type")
        if kind == "system" and msg.get("subtype") == "init":
            return self._init(msg)
        if kind == "rate_limit_event":
            return self._rate_limit(msg.get("rate_limit_info"))
        if kind == "assistant" and (msg.get("error") or msg.get("is_api_error_message")):
            return self._api_error(msg)
        if kind == "result":
            return self._result(msg)
        return None

    # -- line kinds ------------------------------------------------------------------------------
    def _init(self, msg: dict[str, Any]) -> Facts | None:
        sid, model = _str(msg.get("session_id")), _str(msg.get("model"))
        if not sid:
            return None
        self.session_id, self.model = sid, model or self.model
        return Facts(session_id=sid, model=model or None)

    def _limit(self, info: Any, text: str = "") -> Facts | None:
        if self.limit_reported:
            return None
        info = info if isinstance(info, dict) else {}
        resets = info.get("resetsAt")
        resets_ms = int(resets * 1000) if isinstance(resets, (int, float)) and 0 < resets < 2**40 else None
        self.limit_reported = True
        return Facts(
            usage_limit=UsageLimit(
                resets_at=resets_ms, limit_type=_str(info.get("rateLimitType"))[:100], text=text[:_TEXT_MAX]
            )
        )

    def _rate_limit(self, info: Any) -> Facts | None:
        if not isinstance(info, dict) or info.get("status") != "rejected":
            return None  # allowed, allowed_warning: a note, not a stop
        return self._limit(info)

    def _api_error(self, msg: dict[str, Any]) -> Facts | None:
        text = _message_text(msg.get("message"))
        status = msg.get("api_error_status")
        status = status if isinstance(status, int) and 0 <= status < 1000 else None
        if msg.get("api_error") == "usage_limit_reached":
            params = msg.get("api_error_params")
            info = params.get("rate_limit_info") if isinstance(params, dict) else None
            return self._limit(info, text)
        error = _str(msg.get("error"))
        return Facts(
            api_error=ApiError(
                kind=_KINDS.get(error, "unknown"),  # type: ignore[arg-type]
                status=status,
                text=text[:_TEXT_MAX],
            )
        )

    def _result(self, msg: dict[str, Any]) -> Facts:
        self.results += 1
        raw_usage = msg.get("usage")
        usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
        tokens_in = sum(
            _count(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        cost = msg.get("total_cost_usd")
        is_error = msg.get("is_error") is True
        ref = _str(msg.get("uuid")) or f"{_str(msg.get('session_id')) or self.session_id}#{self.results}"
        run = RunUsage(
            ref=ref[:200],
            tokens_in=min(tokens_in, 2**40),
            tokens_out=min(_count(usage.get("output_tokens")), 2**40),
            cost_usd=float(cost) if isinstance(cost, (int, float)) and 0 <= cost <= 1_000_000 else 0.0,
            is_error=is_error,
            terminal_reason=_str(msg.get("terminal_reason"))[:100],
            subtype=_str(msg.get("subtype"))[:100],
            num_turns=min(_count(msg.get("num_turns")), 2**40),
            text=_str(msg.get("result"))[:_TEXT_MAX] if is_error else "",
        )
        facts = Facts(usage=run)
        if _str(msg.get("session_id")) and not self.session_id:
            facts.session_id = self.session_id = _str(msg.get("session_id"))
        if is_error and msg.get("api_error") == "usage_limit_reached":
            limit = self._limit(None, run.text)
            facts.usage_limit = limit.usage_limit if limit else None
        return facts


def _str(value: Any) -> str:
    return value.replace("\0", "") if isinstance(value, str) else ""


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _message_text(message: Any) -> str:
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return ""
    parts: list[str] = [b["text"] for b in message["content"] if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return _str(" ".join(parts))
