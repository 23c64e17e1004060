"""A fake Anthropic Messages API on 127.0.0.1 that the real `claude` CLI talks to in tests.

Scripted per test: a list of `Turn`s, one per model request that carries tools (the agent's
main loop); the CLI's side requests without tools (titles, quota checks) get a short text.
Streaming is Server-Sent Events exactly as the API sends them (message_start,
content_block_start/delta/stop, message_delta, message_stop). Every request is recorded so a
test can assert what the model saw (a hook's additionalContext, a reviewer's reason, the
earlier history of a resumed session).

MCP tools the CLI defers (2.1.332: only `ToolSearch` is offered until it is called with
`select:mcp__server__tool`) are handled for the script: a scripted tool_use of a tool the
request does not list, while `ToolSearch` is listed, is preceded by that ToolSearch call. CLIs
that send MCP tools directly (2.1.197) get the tool_use at once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "claude-fake-1"


@dataclass
class Text:
    text: str


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]


@dataclass
class Turn:
    """One model reply. `status` other than 200 makes it an API error with `headers` and `error`;
    `before` runs (in the server's thread) before the reply is sent, with the request body."""

    blocks: list[Text | ToolUse] = field(default_factory=list)
    input_tokens: int = 100
    output_tokens: int = 20
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    before: Callable[[dict[str, Any]], None] | None = None
    #: Use this turn again for every later request (an API that keeps failing).
    sticky: bool = False


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    main: bool

    def text(self) -> str:
        """Everything the model was shown (system, messages, tool results) as one string."""
        return json.dumps({"system": self.body.get("system"), "messages": self.body.get("messages")})

    def tool_names(self) -> list[str]:
        return [t.get("name", "") for t in self.body.get("tools") or []]


def usage_limit_turn(resets_at_s: int, limit_type: str = "five_hour") -> Turn:
    """What the API answers a subscription that is out of usage: 429 with the unified headers rejected."""
    return Turn(
        status=429,
        sticky=True,
        headers={
            "anthropic-ratelimit-unified-status": "rejected",
            "anthropic-ratelimit-unified-reset": str(resets_at_s),
            "anthropic-ratelimit-unified-representative-claim": limit_type,
            "anthropic-ratelimit-unified-5h-status": "rejected",
            "anthropic-ratelimit-unified-5h-reset": str(resets_at_s),
            "anthropic-ratelimit-unified-overage-status": "rejected",
            "anthropic-ratelimit-unified-overage-disabled-reason": "org_level_disabled",
            "retry-after": "3600",
        },
        error={"type": "rate_limit_error", "message": "Number of requests has exceeded your rate limit."},
    )


class FakeAnthropic:
    """`with FakeAnthropic(turns) as api:` then point the CLI at `api.url`."""

    def __init__(self, turns: list[Turn] | None = None) -> None:
        self.turns = list(turns or [])
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self._used = 0
        self._sticky: Turn | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._json(self, 404, {"type": "error", "error": {"type": "not_found_error", "message": "no"}})

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                fake._serve(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fakeapi", daemon=True)

    def __enter__(self) -> FakeAnthropic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what tests look at ------------------------------------------------------------------------
    def main_requests(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.main]

    def env(self, *, oauth: bool = False) -> dict[str, str]:
        """The CLI's environment for this fake (API key mode, or a subscription's OAuth token)."""
        env = {
            "ANTHROPIC_BASE_URL": self.url,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "ANTHROPIC_MODEL": MODEL,
            "ANTHROPIC_SMALL_FAST_MODEL": MODEL,
        }
        env["CLAUDE_CODE_OAUTH_TOKEN" if oauth else "ANTHROPIC_API_KEY"] = "sk-fake-for-tests"
        return env

    # -- serving -------------------------------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        path = h.path.split("?", 1)[0]
        if path.endswith("/count_tokens"):
            self._json(h, 200, {"input_tokens": 100})
            return
        if not path.endswith("/v1/messages"):
            self._json(h, 404, {"type": "error", "error": {"type": "not_found_error", "message": path}})
            return
        main = bool(body.get("tools"))
        rec = Recorded(
            path=h.path, headers={k.lower(): v for k, v in h.headers.items()}, body=body, at=time.time(), main=main
        )
        with self.lock:
            self.requests.append(rec)
            turn = self._next(rec) if main else Turn(blocks=[Text("ok")], input_tokens=10, output_tokens=2)
        if turn.before is not None:
            turn.before(body)
        if turn.status != 200:
            error = turn.error or {"type": "api_error", "message": "scripted failure"}
            self._json(h, turn.status, {"type": "error", "error": error}, turn.headers)
            return
        if body.get("stream"):
            self._stream(h, turn)
        else:
            self._json(h, 200, self._message(turn, complete=True))

    def _next(self, rec: Recorded) -> Turn:
        if self._sticky is not None:
            return self._sticky
        if self._used >= len(self.turns):
            return Turn(blocks=[Text("Nothing more to do.")])
        turn = self.turns[self._used]
        deferred = [b for b in turn.blocks if isinstance(b, ToolUse) and b.name not in rec.tool_names()]
        if deferred and "ToolSearch" in rec.tool_names():  # 2.1.332: find the deferred tool first
            return Turn(
                blocks=[
                    ToolUse("ToolSearch", {"query": "select:" + ",".join(b.name for b in deferred), "max_results": 5})
                ]
            )
        self._used += 1
        if turn.sticky:
            self._sticky = turn
        return turn

    def _message(self, turn: Turn, *, complete: bool) -> dict[str, Any]:
        content = []
        for block in turn.blocks:
            if isinstance(block, Text):
                content.append({"type": "text", "text": block.text if complete else ""})
            else:
                content.append(
                    {
                        "type": "tool_use",
                        "id": "toolu_" + uuid.uuid4().hex[:20],
                        "name": block.name,
                        "input": block.input if complete else {},
                    }
                )
        stop = "tool_use" if any(isinstance(b, ToolUse) for b in turn.blocks) else "end_turn"
        return {
            "id": "msg_" + uuid.uuid4().hex[:20],
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": stop if complete else None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": turn.input_tokens,
                "output_tokens": turn.output_tokens if complete else 1,
                "cache_creation_input_tokens": turn.cache_creation_input_tokens,
                "cache_read_input_tokens": turn.cache_read_input_tokens,
            },
        }

    def _stream(self, h: BaseHTTPRequestHandler, turn: Turn) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.send_header("request-id", "req_" + uuid.uuid4().hex[:20])
        for k, v in turn.headers.items():
            h.send_header(k, v)
        h.end_headers()
        message = self._message(turn, complete=True)
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}}
        ]
        for i, block in enumerate(message["content"]):
            if block["type"] == "text":
                events.append(
                    {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}
                )
                events.append(
                    {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": block["text"]}}
                )
            else:
                events.append(
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                    }
                )
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                    }
                )
            events.append({"type": "content_block_stop", "index": i})
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": turn.output_tokens},
            }
        )
        events.append({"type": "message_stop"})
        try:
            for event in events:
                h.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            h.wfile.flush()
        except OSError:
            pass
        h.close_connection = True

    @staticmethod
    def _json(
        h: BaseHTTPRequestHandler, status: int, data: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        raw = json.dumps(data).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.send_header("request-id", "req_" + uuid.uuid4().hex[:20])
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(raw)
        except OSError:
            pass
