"""ping, status, shutdown."""

from __future__ import annotations

import os

import chkd
from chkd.protocol.messages import Ok, Ping, Pong, Shutdown, Status, StatusResult

from .. import shimstandby
from ..context import Ctx
from ..store import WAL_BACKSTOP_PAGES, checkpoint_wal


def ping(ctx: Ctx, _req: Ping) -> Pong:
    repos, tasks, workers, last_seq = ctx.store.one(
        "SELECT (SELECT count(*) FROM repos), (SELECT count(*) FROM task_queue),"
        " (SELECT count(*) FROM workers), (SELECT coalesce(max(seq), 0) FROM events)"
    ) or (0, 0, 0, 0)
    return Pong(
        version=chkd.__version__,
        pid=os.getpid(),
        uptime_s=round(ctx.uptime_s, 3),
        home=str(ctx.paths.home or ctx.paths.state),
        db=str(ctx.store.path),
        repos=repos,
        tasks=tasks,
        workers=workers,
        last_seq=last_seq,
        standby_shims=shimstandby.ready_count(ctx),
    )


def status(ctx: Ctx, req: Status) -> StatusResult:
    from ..repos import repo_infos  # the repos area owns RepoInfo rendering

    store = ctx.store
    return StatusResult(
        pong=ping(ctx, Ping()),
        repos=repo_infos(ctx),
        tasks_by_status=dict(store.all("SELECT status, count(*) FROM task_queue GROUP BY status")),
        workers_by_status=dict(store.all("SELECT status, count(*) FROM workers GROUP BY status")),
    )


def shutdown(ctx: Ctx, _req: Shutdown) -> Ok:
    ctx.running = False
    ctx.log.info("shutdown_requested")
    return Ok(message="chkdd is shutting down.")


def _checkpoint_tick(ctx: Ctx) -> None:
    if ctx.ext.get("checkpointing"):
        return
    ctx.ext["checkpointing"] = True

    def _done(_result: object, exc: BaseException | None) -> None:
        ctx.ext["checkpointing"] = False
        if exc is not None:
            ctx.log.warning("wal_checkpoint_failed", error=str(exc))

    ctx.submit(checkpoint_wal, str(ctx.store.path), then=_done)


def setup(ctx: Ctx) -> None:
    """WAL checkpoints run off the loop every second (see `store.checkpoint_wal`)."""
    ctx.store.x(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
    ctx.timers.every(1.0, lambda: _checkpoint_tick(ctx), "wal-checkpoint")


HANDLERS = {Ping: ping, Status: status, Shutdown: shutdown}
