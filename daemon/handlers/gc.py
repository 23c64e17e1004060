"""gc: the daemon's side of `chkdctl gc` — snapshots on the loop, the scan and the removal
off-loop (daemon/gc.py), each item re-checked on the loop right before it is removed."""

from __future__ import annotations

import os
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.messages import Gc, GcItem, GcReport

from .. import agent_profiles
from .. import gc as gcmod
from .. import repos as repo_area
from ..context import Ctx
from ..store import now_ms


def _snapshots(ctx: Ctx, ref: str | None) -> list[gcmod.RepoSnapshot]:
    repos = (
        [repo_area.resolve(ctx.store, ref)] if ref else ctx.store.dicts(f"SELECT {repo_area.REPO_COLUMNS} FROM repos")
    )
    now = now_ms()
    snaps = []
    for r in repos:
        workers = ctx.store.dicts(
            "SELECT id, status, worktree_path, branch_name, started_at, completed_at, heartbeat_at "
            "FROM workers WHERE repo_id=?",
            (r["id"],),
        )
        snaps.append(
            gcmod.RepoSnapshot(
                r["name"],
                r["path"],
                r["main_branch"],
                workers,
                ctx.config.branch_prefix,
                ctx.config.worktree_pattern,
                now,
                home=str(ctx.paths.state),
            )
        )
    return snaps


def _scan_all(snaps: list[gcmod.RepoSnapshot]) -> list[tuple[gcmod.RepoSnapshot, list[gcmod.Found]]]:
    return [(s, gcmod.scan(s)) for s in snaps if os.path.isdir(s.path)]


def _apply_all(
    plan: list[tuple[gcmod.RepoSnapshot, list[gcmod.Found]]],
) -> list[tuple[gcmod.RepoSnapshot, list[gcmod.Found]]]:
    return [(s, gcmod.apply(s, found)) for s, found in plan]


def _still_orphan(ctx: Ctx, f: gcmod.Found) -> bool:
    """Re-checked on the loop right before acting: a worker row's item needs that worker still
    finished; a marker's item needs no worker row to record it meanwhile (nor its worker to be live)."""
    live = gcmod.LIVE
    if f.worker_id is not None:
        status = ctx.store.scalar("SELECT status FROM workers WHERE id=?", (f.worker_id,))
        return status is not None and status not in live
    owner = ctx.store.scalar(
        "SELECT id FROM workers WHERE (worktree_path IS NOT NULL AND worktree_path=?) "
        "OR (branch_name IS NOT NULL AND branch_name=?)",
        (f.worktree, f.branch),
    )
    if owner is not None:
        return False
    status = ctx.store.scalar("SELECT status FROM workers WHERE id=?", (f.marker_worker,))
    return status not in live


def gc_handler(ctx: Ctx, req: Gc) -> Any:
    snaps = _snapshots(ctx, req.repo)
    deferred = ctx.defer()

    def _scanned(plan: list[tuple[gcmod.RepoSnapshot, list[gcmod.Found]]] | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert plan is not None
        if not req.apply:
            ctx.finish(deferred, GcReport(applied=False, items=[f.item for _, fs in plan for f in fs]))
            return
        for _, found in plan:
            for f in found:
                if f.item.removable and not _still_orphan(ctx, f):
                    f.item.removable, f.item.reason = False, "a worker took it over during gc; kept"
        ctx.submit(_apply_all, plan, then=_applied, reply_to=deferred)

    def _applied(plan: list[tuple[gcmod.RepoSnapshot, list[gcmod.Found]]] | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert plan is not None
        items: list[GcItem] = []
        for snap, found in plan:
            for f in found:
                items.append(f.item)
                if not f.item.removed:
                    continue
                if f.worker_id and f.drop_row:
                    live = ",".join(f"'{s}'" for s in sorted(gcmod.LIVE))
                    if ctx.store.x(f"DELETE FROM workers WHERE id=? AND status NOT IN ({live})", (f.worker_id,)):
                        agent_profiles.forget_claude_files(ctx, f.worker_id)
                ctx.emit(
                    ev.GcRemoved(what=f.item.what, item=f.item.kind, reason=f.item.reason),
                    repo=snap.name,
                    worker_id=f.worker_id,
                )
        ctx.finish(deferred, GcReport(applied=True, items=items))

    ctx.submit(_scan_all, snaps, then=_scanned, reply_to=deferred)
    return deferred


HANDLERS = {Gc: gc_handler}
