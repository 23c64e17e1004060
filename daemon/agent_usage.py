"""Recording what an agent's output told its shim: session, usage, limits, API errors.

The shim parses the stream (client/claude_stream.py) and sends `AgentReport`s; this module
writes them on the worker row and emits the typed `agent.*` events (protocol/agents.py).
A run that ends with an error is remembered on the row (`agent_error`, one sentence, and its
kind) so the exit that follows makes the worker `error` with that sentence, never `done`.
"""

from __future__ import annotations

import time
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.agents import ApiError, RunUsage, UsageLimit
from chkd.protocol.messages import AgentReport

from . import repos
from . import usage as ledger
from . import workerrecords as W
from .context import Ctx
from .store import now_ms

#: Running totals stop here instead of overflowing SQLite's 64-bit integers.
TOTAL_CAP = 2**62

_API_WORDS = {
    "rate_limit": "the API kept answering 429 (rate limit) after its retries",
    "server_error": "the API was overloaded or failing (server error) after its retries",
    "billing_error": "the account has no credit left (billing error)",
    "authentication_failed": (
        "it is not logged in (authentication failed); run `claude /login` or set ANTHROPIC_API_KEY"
    ),
    "invalid_request": "the API refused the request (invalid request)",
    "max_output_tokens": "a reply hit the output token limit",
}
_LIMIT_WORDS = {
    "five_hour": "5-hour usage limit",
    "seven_day": "weekly usage limit",
    "seven_day_opus": "weekly Opus usage limit",
    "seven_day_sonnet": "weekly Sonnet usage limit",
}
_RESULT_WORDS = {
    "error_max_turns": "it used all the turns it was allowed (--max-turns)",
    "error_max_budget_usd": "it reached its budget (--max-budget-usd)",
    "error_during_execution": "it failed while running",
}


def reset_words(resets_at_ms: int | None, now_ms_: int | None = None) -> str:
    """`resets 19:00 UTC` (another day: `resets 2026-12-04 19:00 UTC`), or '' when unknown."""
    if not resets_at_ms:
        return ""
    at = time.gmtime(resets_at_ms / 1000)
    today = time.gmtime((now_ms_ if now_ms_ is not None else now_ms()) / 1000)
    when = time.strftime("%H:%M", at) if at[:3] == today[:3] else time.strftime("%Y-%m-%d %H:%M", at)
    return f"resets {when} UTC"


def limit_sentence(who: str, limit: UsageLimit, now_ms_: int | None = None) -> str:
    what = _LIMIT_WORDS.get(limit.limit_type, "usage limit")
    reset = reset_words(limit.resets_at, now_ms_)
    return f"{who} stopped: {what}{', ' + reset if reset else ''}."


def api_error_sentence(who: str, err: ApiError) -> str:
    words = _API_WORDS.get(err.kind)
    if words is None:
        detail = " ".join(err.text.split())[:200]
        words = f"an API error{f' ({err.status})' if err.status else ''}{': ' + detail.rstrip('.') if detail else ''}"
    return f"{who} stopped: {words}."


def result_sentence(who: str, usage: RunUsage) -> str:
    words = _RESULT_WORDS.get(usage.subtype) or _RESULT_WORDS.get(usage.terminal_reason)
    if words is None:
        detail = " ".join(usage.text.split())[:200].rstrip(".")
        reason = usage.terminal_reason or usage.subtype or "error"
        words = f"its run ended with an error ({reason}){': ' + detail if detail else ''}"
    return f"{who} stopped: {words}."


#: Reports come only from `claude-stream-json` profiles: the agent is Claude Code, whatever the profile's name.
WHO = "Claude"


def _emit(ctx: Ctx, row: dict[str, Any], data: ev.EventBody) -> None:
    ctx.emit(data, repo=repos.repo_name(ctx.store, row["repo_id"]), worker_id=row["id"], task_id=row["task_id"])  # type: ignore[arg-type]


def record(ctx: Ctx, row: dict[str, Any], req: AgentReport) -> dict[str, Any]:
    """Write one report on the worker row; emit its events. Idempotent for a repeated report."""
    profile = row["agent"] or ""
    name = WHO
    fields: dict[str, Any] = {"activity_at": max(row["activity_at"] or 0, min(req.activity_at or now_ms(), now_ms()))}
    events: list[ev.EventBody] = []
    if req.session_id and req.session_id != row["session_id"]:
        fields["session_id"] = req.session_id
        fields["model"] = req.model or row["model"]
        events.append(ev.AgentSessionStarted(session_id=req.session_id, model=req.model or "", profile=profile))
    elif req.model and req.model != row["model"] and req.model != "<synthetic>":
        fields["model"] = req.model
    error: tuple[str, str] | None = None
    if req.usage_limit is not None and row["agent_error_kind"] != "usage_limit":
        error = ("usage_limit", limit_sentence(name, req.usage_limit))
        events.append(
            ev.AgentUsageLimited(
                profile=profile,
                resets_at=req.usage_limit.resets_at,
                limit_type=req.usage_limit.limit_type,
                message=req.usage_limit.text,
            )
        )
    if req.api_error is not None and req.api_error.kind != "usage_limit" and row["agent_error_kind"] is None:
        error = error or (req.api_error.kind, api_error_sentence(name, req.api_error))
        events.append(
            ev.AgentApiFailed(
                profile=profile, error=req.api_error.kind, status=req.api_error.status, message=req.api_error.text
            )
        )
    usage = req.usage
    if usage is not None and usage.ref != row["usage_ref"]:
        totals = {
            "tokens_in": min(TOTAL_CAP, (row["tokens_in"] or 0) + usage.tokens_in),
            "tokens_out": min(TOTAL_CAP, (row["tokens_out"] or 0) + usage.tokens_out),
            "cost_usd": min(float(TOTAL_CAP), (row["cost_usd"] or 0.0) + usage.cost_usd),
        }
        fields.update(totals, usage_ref=usage.ref)
        # the dated ledger entry budgets and `chkdctl cost` sum (daemon/usage.py); once per run result, like the totals
        ledger.record(ctx, row, usage.tokens_in, usage.tokens_out, usage.cost_usd)
        events.append(
            ev.AgentUsageReported(
                tokens_in=usage.tokens_in,
                tokens_out=usage.tokens_out,
                cost_usd=usage.cost_usd,
                total_tokens_in=int(totals["tokens_in"]),
                total_tokens_out=int(totals["tokens_out"]),
                total_cost_usd=totals["cost_usd"],
                is_error=usage.is_error,
                terminal_reason=usage.terminal_reason,
                profile=profile,
            )
        )
        if usage.is_error and error is None and row["agent_error_kind"] is None:
            error = ("result", result_sentence(name, usage))
    if error is not None:
        fields["agent_error_kind"], fields["agent_error"] = error
        fields["last_error"] = error[1]
    row = W.update(ctx, row, **fields)
    for event in events:
        _emit(ctx, row, event)
    return row
