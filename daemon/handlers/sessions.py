"""session.open/close/list: one row per MCP connection (a chkd-mcp process).

A session records its process (pid, create time). chkd-mcp closes its session when its
client disconnects; one killed with -9 cannot, so the daemon ends every open session whose
process is gone, at start-up and every few seconds while it runs.

Events (protocol/events.py): SessionOpened, SessionEnded.
"""

from __future__ import annotations

from typing import Any

import psutil

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    Ok,
    SessionClose,
    SessionInfo,
    SessionList,
    SessionListResult,
    SessionOpen,
    SessionResult,
)

from .. import lookup, repos
from ..context import Ctx
from ..liveness import proc_alive
from ..store import now_ms

#: How often the daemon looks for sessions whose chkd-mcp died without closing them.
SWEEP_S = 5.0
#: How far a client's own idea of its start may be from what psutil says (see own_create_time).
START_SLACK_S = 5.0
_LIST_LIMIT = 200


def session_info(ctx: Ctx, row: dict[str, Any]) -> SessionInfo:
    repo = repos.repo_name(ctx.store, row["repo_id"]) if row["repo_id"] else None
    return SessionInfo(
        id=row["id"],
        is_master=bool(row["is_master"]),
        started_at=row["started_at"],
        worker_id=row["worker_id"],
        repo=repo,
        client=row["client"] or "",
        pid=row["pid"],
        ended_at=row["ended_at"],
        end_reason=row["end_reason"],
    )


def own_create_time(pid: int, claimed: float) -> float:
    """The create time of the live process `pid`, which must be the one that asked (its own idea of
    its start, `claimed`, agrees within START_SLACK_S; clients have no psutil and off Linux only
    know it roughly). Recorded as measured here, so later checks compare like with like."""
    try:
        proc = psutil.Process(pid) if pid > 0 else None
        if proc is not None and proc.status() != psutil.STATUS_ZOMBIE:
            started = proc.create_time()
            if abs(started - claimed) <= START_SLACK_S:
                return started
    except (psutil.Error, OverflowError, ValueError):
        pass
    raise ChkdError("not_found", f"Process {pid} is not a running MCP server; a session belongs to a live process.")


def open_(ctx: Ctx, req: SessionOpen) -> SessionResult:
    started = own_create_time(req.pid, req.started)
    worker = lookup.worker(ctx.store, req.worker) if req.worker else None
    repo_id = worker["repo_id"] if worker else None
    if worker is None and req.repo:
        found = repos.find(ctx.store, req.repo)
        repo_id = found["id"] if found else None  # a master outside every repository is still a master
    sid = ctx.store.insert(
        "INSERT INTO sessions(repo_id, worker_id, is_master, started_at, pid, proc_started, client) "
        "VALUES(?,?,?,?,?,?,?)",
        (repo_id, worker["id"] if worker else None, int(worker is None), now_ms(), req.pid, started, req.client),
    )
    row = ctx.store.dict("SELECT * FROM sessions WHERE id=?", (sid,))
    assert row is not None
    info = session_info(ctx, row)
    ctx.emit(
        ev.SessionOpened(id=sid, master=info.is_master, client=req.client, pid=req.pid),
        repo=info.repo,
        worker_id=info.worker_id,
        task_id=worker["task_id"] if worker else None,
    )
    return SessionResult(session=info)


def end_session(ctx: Ctx, row: dict[str, Any], reason: str) -> None:
    ctx.store.x(
        "UPDATE sessions SET ended_at=?, end_reason=? WHERE id=? AND ended_at IS NULL", (now_ms(), reason, row["id"])
    )
    repo = repos.repo_name(ctx.store, row["repo_id"]) if row["repo_id"] else None
    ctx.emit(ev.SessionEnded(id=row["id"], reason=reason), repo=repo, worker_id=row["worker_id"])


def close(ctx: Ctx, req: SessionClose) -> Ok:
    row = ctx.store.dict("SELECT * FROM sessions WHERE id=?", (req.id,))
    if row is None:
        raise ChkdError("not_found", f"There is no MCP session {req.id}.")
    if row["ended_at"] is None:
        end_session(ctx, row, " ".join(req.reason.split()) or "disconnected")
    return Ok(message=f"Session {req.id} ended.")


def list_(ctx: Ctx, req: SessionList) -> SessionListResult:
    where = "" if req.all else "WHERE ended_at IS NULL "
    rows = ctx.store.dicts(
        f"SELECT * FROM (SELECT * FROM sessions {where}ORDER BY id DESC LIMIT ?) ORDER BY id", (_LIST_LIMIT,)
    )
    return SessionListResult(sessions=[session_info(ctx, r) for r in rows])


def sweep(ctx: Ctx) -> int:
    """End the open sessions whose chkd-mcp process is gone (checked by pid and create time)."""
    ended = 0
    for row in ctx.store.dicts("SELECT * FROM sessions WHERE ended_at IS NULL"):
        if proc_alive(row["pid"], row["proc_started"]) is not False and row["pid"]:
            continue
        end_session(ctx, row, "its chkd-mcp process is gone")
        ended += 1
    return ended


def setup(ctx: Ctx) -> None:
    """Start-up: sessions whose process died while the daemon was away end now (kill -9 safe)."""
    sweep(ctx)
    ctx.timers.every(SWEEP_S, lambda: sweep(ctx), "session-sweep")


HANDLERS = {SessionOpen: open_, SessionClose: close, SessionList: list_}
