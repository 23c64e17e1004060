"""overview: one answer to "how is it going?" (the master's chkd_status): workers by status,
ready / waiting / running tasks, merges awaiting review, conflicts, cost today.

Everything comes from the store and the radar's latest scans (a stale scan is refreshed in the
background, never waited for), so the overview answers in one loop turn.
"""

from __future__ import annotations

import time
from typing import Any

from chkd.protocol.messages import CostSummary, Overview, OverviewResult, TaskList

from .. import radar, repos, workerrecords
from ..context import Ctx
from ..mergequeue import merge_info
from . import tasks as tasks_area

#: Workers shown by the overview: everything not merged (merged ones are history).
_SHOWN = "status != 'merged'"
_RUNNING_TASKS = frozenset({"claimed", "in_progress"})


def midnight_utc_ms(now_s: float | None = None) -> int:
    now = time.time() if now_s is None else now_s
    return int(now // 86400 * 86400 * 1000)


def cost_summary(ctx: Ctx, repo_ids: list[int]) -> CostSummary:
    """Tokens and cost from the usage ledger (daemon/usage.py: every increment a worker reported,
    dated), so a worker that runs across midnight counts today only for what it spent today."""
    since = midnight_utc_ms()
    marks = ",".join("?" * len(repo_ids)) or "NULL"
    today = ctx.store.one(
        "SELECT coalesce(sum(cost_usd), 0), coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0) "
        f"FROM usage WHERE repo_id IN ({marks}) AND at >= ?",
        (*repo_ids, since),
    ) or (0, 0, 0)
    total = ctx.store.scalar(
        f"SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE repo_id IN ({marks})", tuple(repo_ids), 0.0
    )
    return CostSummary(
        since=since,
        today_usd=round(float(today[0]), 6),
        today_tokens_in=int(today[1]),
        today_tokens_out=int(today[2]),
        total_usd=round(float(total), 6),
    )


def overview(ctx: Ctx, req: Overview) -> OverviewResult:
    chosen: list[dict[str, Any]]
    if req.repo is not None:
        chosen = [repos.resolve(ctx.store, req.repo)]
    else:
        chosen = ctx.store.dicts(f"SELECT {repos.REPO_COLUMNS} FROM repos ORDER BY name")
    ids = [r["id"] for r in chosen]
    marks = ",".join("?" * len(ids)) or "NULL"
    workers = ctx.store.dicts(f"SELECT * FROM workers WHERE repo_id IN ({marks}) AND {_SHOWN} ORDER BY seq", tuple(ids))
    names = {r["id"]: r["name"] for r in chosen}
    by_status: dict[str, int] = dict(
        ctx.store.all(f"SELECT status, count(*) FROM workers WHERE repo_id IN ({marks}) GROUP BY status", tuple(ids))
    )
    task_counts: dict[str, int] = dict(
        ctx.store.all(f"SELECT status, count(*) FROM task_queue WHERE repo_id IN ({marks}) GROUP BY status", tuple(ids))
    )
    tasks = [t for r in chosen for t in tasks_area.list_(ctx, TaskList(repo=r["name"])).tasks]
    review = ctx.store.dicts(
        f"SELECT * FROM merges WHERE repo_id IN ({marks}) AND status='awaiting_review' ORDER BY id", tuple(ids)
    )
    for r in chosen:
        if not radar.is_fresh(ctx, r):
            radar.refresh(ctx, r)
    return OverviewResult(
        repos=[r["name"] for r in chosen],
        workers_by_status=by_status,
        tasks_by_status=task_counts,
        workers=[workerrecords.worker_info(ctx, w, names.get(w["repo_id"])) for w in workers],
        ready=[t for t in tasks if t.ready],
        waiting=[t for t in tasks if t.status == "pending" and not t.ready and not t.held],
        running=[t for t in tasks if t.status in _RUNNING_TASKS],
        awaiting_review=[merge_info(ctx, m) for m in review],
        conflicts=radar.report(ctx, ids).overlaps,
        cost=cost_summary(ctx, ids),
    )


HANDLERS = {Overview: overview}
