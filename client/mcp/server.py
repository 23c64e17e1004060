"""chkd-mcp: chkd's MCP server over stdio, a thin client of the daemon.

Outside a worker it serves the master's tools; with CHKD_WORKER_ID in its environment (a
worker's own Claude) the worker's tools. Each run is one row in `sessions`, opened at start
(or at the first tool call, when the daemon was not up yet) and ended when the client
disconnects; the daemon ends it too if this process dies without a word.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ..shim import create_time

#: Taken before the SDK is imported (about 1.8 s): with the pid, this process's identity.
STARTED = create_time(os.getpid())

INSTRUCTIONS_MASTER = (
    "chkd runs several coding agents in parallel on one git repository, each in its own worktree and "
    "branch. Start with chkd_status. Add tasks (chkd_add_task, chkd_import_spec), start workers "
    "(chkd_spawn_worker), follow them (chkd_workers, chkd_worker), steer them (pause, resume, abort, "
    "chkd_send_message), and land their work (chkd_merge_worker, then chkd_approve_merge or chkd_reject_merge)."
)
INSTRUCTIONS_WORKER = (
    "You are a chkd worker: your task has its own git worktree and branch. Commit as you go, report "
    "progress with chkd_heartbeat, read messages with chkd_inbox, ask with chkd_request_help, and call "
    "chkd_complete_work when the task is finished."
)


class Session:
    """This process's `sessions` row: opened once the daemon answers, closed on the way out."""

    def __init__(self, chkd: object, worker_id: str | None, repo: str | None) -> None:
        self.chkd = chkd
        self.worker_id = worker_id
        self.repo = repo
        self.id: int | None = None
        self.last_problem = ""

    def ensure(self) -> None:
        """Open the row if it is not open yet: at start, then before each tool call until it is
        (a worker's server may start before its worker exists, or before the daemon)."""
        if self.id is not None:
            return
        from chkd.protocol.errors import ChkdError
        from chkd.protocol.messages import SessionOpen

        from .. import daemonctl

        try:
            if not daemonctl.is_running(self.chkd.paths):  # type: ignore[attr-defined]
                raise ChkdError("busy", "chkdd is not running")
            res = self.chkd.client().call(  # type: ignore[attr-defined]
                SessionOpen(pid=os.getpid(), started=STARTED, worker=self.worker_id, repo=self.repo), timeout=5.0
            )
            self.id = res.session.id
        except ChkdError as exc:
            if exc.message != self.last_problem:
                print(f"chkd-mcp: no session yet: {exc.message}", file=sys.stderr)
                self.last_problem = exc.message

    def close(self, reason: str = "disconnected") -> None:
        if self.id is None:
            return
        from chkd.protocol.errors import ChkdError
        from chkd.protocol.messages import SessionClose

        from .. import daemonctl

        if not daemonctl.is_running(self.chkd.paths):  # type: ignore[attr-defined]
            print(f"chkd-mcp: chkdd is not running; it ends session {self.id} when it starts.", file=sys.stderr)
            return
        try:
            self.chkd.client().call(SessionClose(id=self.id, reason=reason), timeout=3.0)  # type: ignore[attr-defined]
        except ChkdError as exc:
            print(f"chkd-mcp: could not end session {self.id}: {exc.message}", file=sys.stderr)
        self.id = None


def argument_sentence(tool: str, errors: Sequence[Mapping[str, Any]]) -> str:
    """pydantic's validation errors as one sentence a model can act on (pure)."""
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
        parts.append(f"{where}: {str(err.get('msg', 'invalid')).rstrip('.').lower()}")
    return f"Bad arguments for {tool}: {'; '.join(parts)}."


def build(worker_id: str | None, repo: str | None):  # type: ignore[no-untyped-def]
    """(the MCPServer, the Chkd connection, the Session) for this environment."""

    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from pydantic import ValidationError

    class ChkdServer(MCPServer):
        async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
            """A refusal is the daemon's sentence alone (the SDK prefixes "Error executing tool X: "),
            bad arguments one sentence instead of pydantic's multi-line report."""
            try:
                return await super().call_tool(name, arguments, context)
            except ToolError as exc:
                if isinstance(exc.__cause__, ValidationError):
                    raise ToolError(argument_sentence(name, exc.__cause__.errors())) from exc.__cause__
                prefix = f"Error executing tool {name}: "
                if str(exc).startswith(prefix):
                    raise ToolError(str(exc)[len(prefix) :]) from exc.__cause__
                raise

    import chkd
    from chkd.protocol.paths import resolve

    from .master_tools import master_tools
    from .tooling import Chkd
    from .worker_tools import worker_tools

    autostart = None if worker_id is None else False  # agents never start a daemon; a master may
    conn = Chkd(
        resolve(None),
        worker_id=worker_id,
        repo=repo,
        autostart=autostart if autostart is not None else os.environ.get("CHKD_NO_AUTOSTART") != "1",
    )
    session = Session(conn, worker_id, repo)
    conn.before_call = session.ensure
    tools = worker_tools(conn) if worker_id else master_tools(conn)
    server = ChkdServer(
        "chkd",
        version=chkd.__version__,
        tools=tools,
        log_level="WARNING",
        instructions=INSTRUCTIONS_WORKER if worker_id else INSTRUCTIONS_MASTER,
    )
    return server, conn, session


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print("usage: chkd-mcp\n\n" + (__doc__ or "").strip())
        return
    if args and args[0] == "--version":
        import chkd

        print(f"chkd-mcp {chkd.__version__}")
        return
    worker_id = os.environ.get("CHKD_WORKER_ID") or None
    repo = os.environ.get("CHKD_REPO") or os.getcwd()
    server, conn, session = build(worker_id, repo)
    session.ensure()
    try:
        server.run("stdio")
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
        conn.close()


if __name__ == "__main__":
    main()
