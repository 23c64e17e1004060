"""`chkdctl stats`: the seed's success metrics, computed from what the database already holds
(task, worker and merge timestamps, the usage ledger) — nothing is sampled or kept extra."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from statistics import fmean
from typing import Any

from chkd.protocol.messages import StatsReport, TagEta

from . import schedule
from .context import Ctx
from .store import now_ms

#: Per-tag ETAs need at least this many finished tasks with the tag.
TAG_SAMPLES = 3


def _scope(repo_id: int | None, alias: str = "") -> tuple[str, tuple[Any, ...]]:
    col = f"{alias}repo_id" if alias else "repo_id"
    return (f" AND {col}=?", (repo_id,)) if repo_id is not None else ("", ())


def stats(ctx: Ctx, repo: Mapping[str, Any] | None, since: int) -> StatsReport:
    now = now_ms()
    repo_id = None if repo is None else repo["id"]
    where, params = _scope(repo_id)
    report = StatsReport(since=since, until=now)

    # tasks merged, and how long each took from ready (created, or its last dependency merged) to merged
    done = ctx.store.all(
        "SELECT t.pk, t.created_at, t.completed_at, t.tags, "
        "(SELECT max(u.completed_at) FROM task_deps d JOIN task_queue u ON u.pk = d.depends_on_pk "
        " WHERE d.task_pk = t.pk) FROM task_queue t WHERE t.status='done' AND t.completed_at >= ?"
        + _scope(repo_id, "t.")[0],
        (since, *params),
    )
    waits = [(c - max(created, dep or 0)) / 1000 for _pk, created, c, _tags, dep in done if c]
    report.tasks_merged = len(done)
    if waits:
        report.ready_to_merged_mean_s = round(fmean(waits), 3)
        report.ready_to_merged_p90_s = round(schedule.percentile(waits, 90) or 0.0, 3)

    # merge attempts that conflicted
    report.merge_attempts, report.merge_conflicts = ctx.store.one(
        "SELECT count(*), coalesce(sum(status='conflict'), 0) FROM merges WHERE created_at >= ?" + where,
        (since, *params),
    ) or (0, 0)
    if report.merge_attempts:
        report.conflict_rate = round(report.merge_conflicts / report.merge_attempts, 4)

    # parallel speed-up and utilisation from the workers' run times
    runs = ctx.store.all(
        "SELECT started_at, coalesce(completed_at, ?), task_id, status FROM workers WHERE started_at >= ?" + where,
        (now, since, *params),
    )
    if runs:
        first = min(r[0] for r in runs)
        last = max(r[1] for r in runs)
        report.work_s = round(sum(max(0, e - s) for s, e, _t, _st in runs) / 1000, 3)
        report.wall_s = round(max(0, last - first) / 1000, 3)
        if report.wall_s > 0:
            report.speedup = round(report.work_s / report.wall_s, 3)
        hours = max(1e-9, (now - first) / 3_600_000)
        report.merged_per_hour = round(report.tasks_merged / hours, 2)
    report.parallelism = parallelism(ctx, repo)
    if report.wall_s > 0:
        report.utilisation = round(min(1.0, report.work_s / (report.parallelism * report.wall_s)), 4)

    # the queue now
    counts: dict[str, int] = dict(
        ctx.store.all("SELECT status, count(*) FROM task_queue WHERE held=0" + where + " GROUP BY status", params)
    )
    ready = int(
        ctx.store.scalar(
            "SELECT count(*) FROM task_queue t WHERE t.status='pending' AND t.held=0 AND NOT EXISTS "
            "(SELECT 1 FROM task_deps d JOIN task_queue u ON u.pk = d.depends_on_pk WHERE d.task_pk = t.pk "
            " AND u.status != 'done')" + _scope(repo_id, "t.")[0],
            params,
            0,
        )
    )
    report.queue_ready = ready
    report.queue_waiting = max(0, counts.get("pending", 0) - ready)
    report.queue_running = sum(counts.get(s, 0) for s in ("claimed", "in_progress", "review"))

    # cost
    report.cost_usd = round(
        float(
            ctx.store.scalar("SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE at >= ?" + where, (since, *params), 0)
        ),
        6,
    )
    if report.tasks_merged:
        report.cost_per_merged_task = round(report.cost_usd / report.tasks_merged, 6)

    # ETA: the remaining tasks at the current parallelism, from the run times seen so far
    durations = task_durations(ctx, repo_id, since)
    remaining = report.queue_ready + report.queue_waiting + report.queue_running
    if durations:
        mean = fmean(d for d, _tags in durations)
        report.mean_task_s = round(mean, 3)
        report.eta_s = round(remaining * mean / max(1, report.parallelism), 1)
        report.eta_by_tag = eta_by_tag(ctx, repo_id, durations, report.parallelism)
    return report


def task_durations(ctx: Ctx, repo_id: int | None, since: int) -> list[tuple[float, list[str]]]:
    """(seconds its merged worker ran, the task's tags) for every merged task."""
    rows = ctx.store.all(
        "SELECT (w.completed_at - w.started_at) / 1000.0, t.tags FROM workers w JOIN task_queue t ON t.pk = w.task_pk "
        "WHERE w.status='merged' AND w.completed_at IS NOT NULL AND w.started_at >= ?" + _scope(repo_id, "w.")[0],
        (since, *_scope(repo_id)[1]),
    )
    return [(float(d), json.loads(tags or "[]")) for d, tags in rows if d is not None]


def eta_by_tag(
    ctx: Ctx, repo_id: int | None, durations: list[tuple[float, list[str]]], parallelism: int
) -> list[TagEta]:
    by_tag: dict[str, list[float]] = defaultdict(list)
    for d, tags in durations:
        for tag in tags:
            by_tag[tag].append(d)
    left: dict[str, int] = defaultdict(int)
    for (tags,) in ctx.store.all(
        "SELECT tags FROM task_queue WHERE held=0 AND status IN "
        "('pending', 'claimed', 'in_progress', 'review')" + _scope(repo_id)[0],
        _scope(repo_id)[1],
    ):
        for tag in json.loads(tags or "[]"):
            left[tag] += 1
    out = []
    for tag, samples in sorted(by_tag.items()):
        if len(samples) >= TAG_SAMPLES and left.get(tag):
            mean = fmean(samples)
            out.append(
                TagEta(
                    tag=tag,
                    remaining=left[tag],
                    mean_s=round(mean, 3),
                    eta_s=round(left[tag] * mean / max(1, parallelism), 1),
                )
            )
    return out


def parallelism(ctx: Ctx, repo: Mapping[str, Any] | None) -> int:
    """The running autopilot's N (the largest, over all repositories), else max_workers."""
    where, params = ("AND a.repo_id=?", (repo["id"],)) if repo is not None else ("", ())
    n = ctx.store.scalar(f"SELECT max(a.workers) FROM autopilot a WHERE a.state='running' {where}", params)
    if n:
        return int(n)
    return ctx.config.max_workers_for(repo["name"]) if repo is not None else ctx.config.max_workers
