"""The plumbing every chkd-mcp tool shares: the daemon connection (one `Client` per SDK worker
thread), daemon errors as `ToolError(sentence)`, and results as structured content (a msgspec
Struct, whose JSON schema is the tool's outputSchema) plus compact text."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult, TextContent

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import Command, Result
from chkd.protocol.paths import Paths

from .. import daemonctl
from ..client import Client

R = TypeVar("R", bound=Result)
F = TypeVar("F", bound=Callable[..., Any])


class Chkd:
    """The daemon, as the tools see it. The SDK runs sync tools on worker threads and a zmq socket
    belongs to one thread, so each thread gets its own Client (all share one zmq context)."""

    def __init__(
        self, paths: Paths, *, worker_id: str | None, repo: str | None, autostart: bool, timeout: float = 30.0
    ) -> None:
        self.paths = paths
        self.worker_id = worker_id
        self.repo = repo
        self.autostart = autostart
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[Client] = []
        self._lock = threading.Lock()
        #: Called before every request (chkd-mcp opens its session row there once the daemon answers).
        self.before_call: Callable[[], None] = lambda: None

    def client(self) -> Client:
        c = getattr(self._local, "client", None)
        if c is None:
            c = Client(self.paths, timeout=self.timeout, autostart=self.autostart)
            self._local.client = c
            with self._lock:
                self._all.append(c)
        return c

    def call(self, body: Command[R], timeout: float | None = None) -> R:
        """One request; a daemon refusal (or no daemon) becomes the ToolError the model reads."""
        try:
            if not daemonctl.is_running(self.paths):  # a flock probe: say so now, not after the timeout
                self.client().ensure_daemon()  # starts it (a master may) or raises the sentence
            self.before_call()
            return self.client().call(body, timeout)
        except ChkdError as exc:
            raise ToolError(sentence(exc)) from None

    def close(self) -> None:
        with self._lock:
            for c in self._all:
                c.close()
            self._all.clear()


def sentence(exc: ChkdError) -> str:
    return f"{exc.message} {exc.hint}".strip() if exc.hint else exc.message


def answer(data: msgspec.Struct, text: str) -> CallToolResult:
    """Structured content (the Struct as JSON) and the text a model reads."""
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=msgspec.to_builtins(data))


@functools.cache
def output_schema(struct: type) -> dict[str, Any]:
    """The Struct's JSON schema with its definition at the root (MCP wants an object there)."""
    doc = msgspec.json.schema(struct)
    defs = doc.get("$defs", {})
    root = dict(defs[struct.__name__]) if "$ref" in doc else dict(doc)
    root.pop("title", None)
    if defs:
        root["$defs"] = defs
    return root


def make_tool(fn: Callable[..., CallToolResult], result: type, description: str) -> Tool:
    """An SDK Tool from a typed function (its arguments' Annotated Field descriptions become the
    input schema) whose outputSchema is `result`'s msgspec schema."""
    tool = Tool.from_function(fn, name=fn.__name__, description=description)
    tool.fn_metadata.output_schema = output_schema(result)
    return tool


def guarded(fn: F) -> F:
    """Any surprise in a tool becomes one sentence for the model (the SDK would only say
    "Error executing tool X"); the traceback goes to stderr, chkd-mcp's log."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ToolError:
            raise
        except ChkdError as exc:
            raise ToolError(sentence(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a tool must answer; the traceback goes to stderr
            import sys
            import traceback

            traceback.print_exc(file=sys.stderr)
            raise ToolError(f"chkd-mcp failed unexpectedly: {type(exc).__name__}: {exc}.") from None

    return wrapper  # type: ignore[return-value]
