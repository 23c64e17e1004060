"""The fake Anthropic API itself (the real-CLI tests rely on it): streaming, ToolSearch for deferred
MCP tools, direct tools, scripted errors, recorded requests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from fakeapi.server import FakeAnthropic, Text, ToolUse, Turn, usage_limit_turn


def post(api: FakeAnthropic, body: dict[str, Any]) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    req = urllib.request.Request(
        api.url + "/v1/messages?beta=true",
        json.dumps(body).encode(),
        {"content-type": "application/json", "x-api-key": "k"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw, status, headers = resp.read().decode(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), [json.loads(exc.read())]
    if not body.get("stream"):
        return status, headers, [json.loads(raw)]
    return status, headers, [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]


def tool_calls(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    starts = {e["index"]: e["content_block"] for e in events if e["type"] == "content_block_start"}
    parts = {
        e["index"]: json.loads(e["delta"]["partial_json"])
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    }
    return [(b["name"], parts[i]) for i, b in starts.items() if b["type"] == "tool_use"]


def test_deferred_mcp_tools_are_found_with_toolsearch_first_and_direct_ones_are_called_at_once() -> None:
    script = [Turn([ToolUse("mcp__chkd__chkd_heartbeat", {"message": "hi"})]), Turn([Text("done")])]
    with FakeAnthropic(script) as api:
        deferred = {"stream": True, "tools": [{"name": "Bash"}, {"name": "ToolSearch"}], "messages": []}
        _, _, events = post(api, deferred)
        assert tool_calls(events) == [("ToolSearch", {"query": "select:mcp__chkd__chkd_heartbeat", "max_results": 5})]
        direct = {**deferred, "tools": [{"name": "ToolSearch"}, {"name": "mcp__chkd__chkd_heartbeat"}]}
        _, _, events = post(api, direct)
        assert tool_calls(events) == [("mcp__chkd__chkd_heartbeat", {"message": "hi"})]
        assert events[-2]["delta"]["stop_reason"] == "tool_use" and events[-1]["type"] == "message_stop"
        _, _, events = post(api, direct)
        assert [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"] == ["done"]
        _, _, (side,) = post(api, {"messages": [{"role": "user", "content": "title?"}]})  # no tools: a side request
        assert side["content"][0]["text"] == "ok"
        assert [r.main for r in api.requests] == [True, True, True, False]


def test_a_usage_limit_is_a_429_with_the_unified_headers_every_time() -> None:
    with FakeAnthropic([usage_limit_turn(1796238050)]) as api:
        for _ in range(2):
            status, headers, (body,) = post(api, {"stream": True, "tools": [{"name": "Bash"}], "messages": []})
            assert status == 429 and body["error"]["type"] == "rate_limit_error"
            assert headers["anthropic-ratelimit-unified-status"] == "rejected"
            assert headers["anthropic-ratelimit-unified-reset"] == "1796238050"
