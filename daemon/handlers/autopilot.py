"""run (start/stop/status), cost, stats, and the agent's usage-limit report."""

from __future__ import annotations

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    ActivityAck,
    AgentLimit,
    Cost,
    CostReport,
    RunResult,
    RunStart,
    RunStatus,
    RunStop,
    Stats,
    StatsReport,
)

from .. import autopilot, lookup, metrics, repos, usage, workerrecords
from ..context import Ctx


def run_start(ctx: Ctx, req: RunStart) -> RunResult:
    repo = repos.resolve(ctx.store, req.repo)
    run = autopilot.start(ctx, repo, req.workers, req.agent, req.merge, req.until_empty)
    info = autopilot.run_info(ctx, run, repo)
    return RunResult(
        runs=[info],
        message=f"The autopilot runs '{repo['name']}' with up to {run['workers']} workers (merge: {run['merge']}).",
    )


def run_stop(ctx: Ctx, req: RunStop) -> RunResult:
    repo = repos.resolve(ctx.store, req.repo)
    run = autopilot.load_run(ctx, repo["id"])
    if run is None or run["state"] != "running":
        raise ChkdError(
            "conflict",
            f"The autopilot is not running in '{repo['name']}'.",
            f"Start it with `chkdctl run --repo {repo['name']}`.",
        )
    run = autopilot.stop(ctx, repo, "stopped by the user")
    assert run is not None
    live = workerrecords.live_count(ctx, repo["id"])
    return RunResult(
        runs=[autopilot.run_info(ctx, run, repo)],
        message=f"The autopilot of '{repo['name']}' stopped; nothing new starts"
        + (f" ({live} running workers carry on)." if live else "."),
    )


def run_status(ctx: Ctx, req: RunStatus) -> RunResult:
    if req.repo is not None:
        repo = repos.resolve(ctx.store, req.repo)
        rows = [(autopilot.load_run(ctx, repo["id"]), repo)]
    else:
        every = ctx.store.dicts(f"SELECT {repos.REPO_COLUMNS} FROM repos ORDER BY name")
        rows = [(autopilot.load_run(ctx, r["id"]), r) for r in every]
    return RunResult(runs=[autopilot.run_info(ctx, run, repo) for run, repo in rows if run is not None])


def cost(ctx: Ctx, req: Cost) -> CostReport:
    repo = repos.resolve(ctx.store, req.repo) if req.repo is not None else None
    rows, total = usage.cost_rows(ctx, req.by, None if repo is None else repo["id"])
    return CostReport(by=req.by, rows=rows, total=total, spend=usage.spend_info(ctx, repo))


def stats(ctx: Ctx, req: Stats) -> StatsReport:
    repo = repos.resolve(ctx.store, req.repo) if req.repo is not None else None
    return metrics.stats(ctx, repo, req.since)


def agent_limit(ctx: Ctx, req: AgentLimit) -> ActivityAck:
    """The agent (or its shim) says it hit a limit: the typed event; the autopilot listens to it."""
    row = lookup.worker(ctx.store, req.worker)
    repo = repos.repo_name(ctx.store, row["repo_id"])
    message = " ".join(req.message.split())[:300]
    if req.kind == "usage_limit":
        ctx.emit(
            ev.AgentUsageLimited(profile=row["agent"] or "", resets_at=req.resets_at, message=message),
            repo=repo,
            worker_id=row["id"],
            task_id=row["task_id"],
        )
    else:
        ctx.emit(
            ev.AgentApiFailed(profile=row["agent"] or "", error="rate_limit", message=message),
            repo=repo,
            worker_id=row["id"],
            task_id=row["task_id"],
        )
    fresh = workerrecords.load(ctx, row["id"]) or row
    return ActivityAck(status=fresh["status"], heartbeat_s=ctx.config.heartbeat_s)


def setup(ctx: Ctx) -> None:
    autopilot.setup(ctx)


HANDLERS = {
    RunStart: run_start,
    RunStop: run_stop,
    RunStatus: run_status,
    Cost: cost,
    Stats: stats,
    AgentLimit: agent_limit,
}
