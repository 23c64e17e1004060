"""Spawning a worker: record, claim, name, check out, launch — each step resumable.

Spawn validates and records everything synchronously (repo, max_workers, agent, task
claim, the worker row `starting`), then does the slow part off-loop in two jobs: the
first picks free worktree and branch names, which the loop records on the row before
anything exists on disk; the second takes a standby shim (daemon/shimstandby.py: one whose
Python start-up is already done; else it starts one, its start-up overlapping the checkout),
runs `git worktree add` at the recorded names (or takes a warm pool worktree), and tells the shim `go`.
A kill -9 anywhere in between leaves a row that names everything the spawn may have
made, so start-up reconciliation can finish or undo it. The reply waits for the launch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol import templates
from chkd.protocol.errors import ChkdError
from chkd.protocol.launch import module_argv
from chkd.protocol.messages import Spawn, TmuxTarget, WorkerResult, encode_go

from . import (
    agent_launch,
    agent_profiles,
    budget,
    failpoints,
    pool,
    procs,
    reposettings,
    shimstandby,
    taskqueue,
    terminal,
    usage,
    workerrecords,
    workspace,
    worktrees,
)
from .context import Ctx, Deferred
from .store import now_ms

LaunchSpec = agent_launch.LaunchSpec


@dataclass(frozen=True)
class Launched:
    checkout: worktrees.Checkout
    argv: list[str]


def launch(spec: LaunchSpec, standby: shimstandby.Standby | None = None) -> Launched:
    """Off-loop: take a standby shim (or start one, waiting), create the worktree (or take a warm
    one from the pool), copy files in and run setup, then let the shim start the agent."""
    shim = shimstandby.start_shim(standby, spec)
    try:
        checkout = _pooled_checkout(spec) if spec.pooled is not None else None
        fresh = checkout is None
        if checkout is None:
            checkout = worktrees.create_checkout(spec.repo_path, spec.path, spec.branch, spec.base_sha, spec.owner)
        failpoints.hit("spawn.worktree_created")
        if spec.workspace is not None and fresh:
            workspace.prepare(spec.workspace, checkout.path, spec.log_path)
    except BaseException:
        procs.release_shim(shim, "stop")
        raise
    try:
        argv = agent_launch.agent_argv(spec, checkout.path, checkout.branch)
    except BaseException:
        procs.release_shim(shim, "stop")
        raise
    shimstandby.release(shim, encode_go(agent_launch.go_message(spec, argv, checkout.path)), spec)
    failpoints.hit("spawn.released")
    return Launched(checkout, argv)


def _pooled_checkout(spec: LaunchSpec) -> worktrees.Checkout | None:
    """The warm worktree made the worker's; None when the entry could not be used before anything
    moved (gone, not ours, the move refused): the spawn then makes a fresh checkout, as without a pool."""
    assert spec.pooled is not None
    try:
        return pool.take_checkout(
            spec.repo_path,
            spec.pooled,
            spec.path,
            spec.branch,
            spec.base_sha,
            spec.owner,
            spec.workspace,
            spec.log_path,
        )
    except pool.NotTaken as exc:
        with open(spec.log_path, "a") as log:
            log.write(f"[chkd] the warm worktree {spec.pooled.path} could not be used ({exc}); checking out anew\n")
        return None


def _agent(ctx: Ctx, req: Spawn, repo: dict[str, Any]) -> agent_profiles.AgentPlan:
    """The agent run the spawn asks for; every refusal (unknown profile, program not installed, a
    permission mode Claude refuses, no tmux for an interactive one) is a sentence here, before anything exists.
    A Claude profile gets `max_task_usd` as --max-budget-usd (agent_profiles.claude_args)."""
    if req.cmd is not None:  # typed by hand: the placeholders are filled, every other brace is literal (JSON...)
        template = [templates.literal_braces(arg, templates.AGENT_PLACEHOLDERS) for arg in req.cmd]
        plan = agent_profiles.AgentPlan(name="cmd", template=template, env={}, interactive=req.interactive)
    else:
        name = req.agent or ctx.config.for_repo(repo["name"]).default_agent or ctx.config.default_agent
        profile = agent_profiles.profile_named(ctx.config, name)
        plan = agent_profiles.plan(name, profile, task_cap_usd=ctx.config.max_task_usd)
        if req.interactive and not plan.interactive:
            plan = dataclasses.replace(plan, interactive=True)
    if plan.interactive:
        terminal.require_tmux()
    return plan


def _take_task(ctx: Ctx, req: Spawn, repo: dict[str, Any], wid: str) -> dict[str, Any]:
    if req.next:
        task = taskqueue.claim_next(ctx, repo, wid, req.tag)
        if task is None:
            what = f" tagged '{req.tag}'" if req.tag else ""
            raise ChkdError(
                "nothing_ready",
                f"No task{what} in '{repo['name']}' is ready to be claimed.",
                "See `chkdctl task list`, or add one with `chkdctl task add`.",
            )
        return task
    assert req.task_id is not None
    task = taskqueue.find_task(ctx, repo["id"], req.task_id)
    if task is None:
        if not req.title:
            raise ChkdError(
                "not_found",
                f"The repository '{repo['name']}' has no task '{req.task_id}'.",
                "Pass --title TEXT to create it on the spot, or see `chkdctl task list`.",
            )
        task = taskqueue.create_task(ctx, repo, title=req.title, id=req.task_id, description=req.description)
    return taskqueue.claim_task(ctx, task, wid)


def _free(ctx: Ctx, repo_id: int, column: str, candidates: list[str]) -> str | None:
    """The first candidate no worker of the repository has recorded (the loop is the only writer,
    so two spawns can never record the same worktree or branch)."""
    for candidate in candidates:
        if not ctx.store.scalar(f"SELECT 1 FROM workers WHERE repo_id=? AND {column}=?", (repo_id, candidate)):
            return candidate
    return None


def spawn_failed(ctx: Ctx, row: dict[str, Any], msg: str, *, counts: bool = True) -> dict[str, Any]:
    """The worker could not start: `error`, and its task back in the queue — as a failed attempt
    (a task git cannot check out must not wedge the queue), or, when the daemon itself was the
    cause (`counts=False`: killed mid-spawn), without one. What was created holding nothing is removed."""
    row = workerrecords.set_worker_status(ctx, row, "error", reason="could not start", last_error=msg)
    workerrecords.end_terminal(ctx, row)  # an interactive spawn may have opened its tmux session already
    if counts:
        workerrecords.fail_task_attempt(ctx, row, f"worker {row['id']} could not start: {msg}")
    else:
        workerrecords.release_task(ctx, row, f"worker {row['id']} could not start: {msg}")
    if row["worktree_path"] or row["branch_name"]:
        wid = row["id"]

        def _discarded(gone: bool | None, exc: BaseException | None) -> None:
            if exc is None and gone:
                ctx.store.x("UPDATE workers SET worktree_path=NULL, branch_name=NULL WHERE id=?", (wid,))

        ctx.submit(
            worktrees.discard_unused,
            workerrecords.repo_path(ctx, row["repo_id"]),
            row["worktree_path"],
            row["branch_name"],
            row["base_sha"],
            then=_discarded,
        )
    return row


def _check_capacity(ctx: Ctx, repo: dict[str, Any]) -> None:
    cap = ctx.config.max_workers_for(repo["name"])
    live = workerrecords.live_count(ctx, repo["id"])
    if live >= cap:
        raise ChkdError(
            "busy",
            f"{live} workers already run in '{repo['name']}', the most max_workers allows ({cap}).",
            f"Wait for one to finish, or raise the cap: max_workers = N in config.toml, or "
            f"[repos.\"{repo['name']}\"] max_workers = N for this repository (then restart the daemon).",
        )


def _record(
    ctx: Ctx, req: Spawn, repo: dict[str, Any], agent: str, template: list[str], interactive: bool
) -> tuple[str, dict[str, Any]]:
    """The worker row (`starting`) and its claimed task, in this transaction: (worker id, task row)."""
    seq = ctx.store.meta_next("worker")
    wid = f"w{seq}"
    ctx.store.x(
        "INSERT INTO workers(id, seq, repo_id, status, agent, cmd, started_at, interactive) VALUES(?,?,?,?,?,?,?,?)",
        (wid, seq, repo["id"], "starting", agent, json.dumps(template), now_ms(), int(interactive)),
    )
    task = _take_task(ctx, req, repo, wid)
    ctx.store.x(
        "UPDATE workers SET task_pk=?, task_id=?, task_title=? WHERE id=?", (task["pk"], task["id"], task["title"], wid)
    )
    ctx.emit(ev.WorkerSpawned(agent=agent, title=task["title"]), repo=repo["name"], worker_id=wid, task_id=task["id"])
    return wid, task


def _launch_spec(
    ctx: Ctx,
    repo: dict[str, Any],
    wid: str,
    task: dict[str, Any],
    plan: agent_profiles.AgentPlan,
    path: str,
    branch: str,
    base_sha: str,
    pooled: pool.Taken | None = None,
) -> LaunchSpec:
    """Everything the off-loop launch needs, from the recorded names and the daemon's config."""
    env_home = ctx.paths.home_env()
    values = {"worker_id": wid, "task_id": task["id"], "title": task["title"], "description": task["description"]}
    return LaunchSpec(  # the prompt is filled in off-loop, once the worktree and branch exist
        worker_id=wid,
        repo_path=repo["path"],
        path=path,
        branch=branch,
        base_sha=base_sha,
        template=plan.template,
        values=values,
        shim_argv=module_argv("chkd.client.shim", "--worker", wid),
        shim_env=shimstandby.shim_env(ctx),
        agent_env={**plan.env, **env_home, "CHKD_WORKER_ID": wid, "CHKD_TASK_ID": task["id"]},
        log_path=str(ctx.paths.worker_log(wid)),
        heartbeat_s=ctx.config.heartbeat_s,
        abort_grace_s=ctx.config.abort_grace_s,
        owner={"home": str(ctx.paths.state), "worker": wid, "purpose": "worker"},
        agent=plan,
        claude_dir=str(agent_profiles.claude_dir(ctx.paths, wid)) if plan.claude else None,
        tmux=TmuxTarget(socket=str(ctx.paths.tmux_socket), session=wid) if plan.interactive else None,
        workspace=reposettings.workspace(ctx, repo),
        pooled=pooled,
    )


def start(ctx: Ctx, req: Spawn, repo: dict[str, Any], deferred: Deferred) -> None:
    """On the loop: record the worker (`starting`) and claim its task; then off-loop pick free names
    (`_planned` records them before anything exists), then create the worktree and start the agent."""
    _check_capacity(ctx, repo)
    budget.check_spawn(ctx, repo)  # over budget nothing new starts (the sentence says what to do)
    agent = _agent(ctx, req, repo)
    wid, task = _record(ctx, req, repo, agent.name, agent.template, agent.interactive)

    def _planned(plan: worktrees.CheckoutPlan | None, exc: BaseException | None) -> None:
        row = workerrecords.load(ctx, wid)
        if row is None:
            ctx.finish(deferred, ChkdError("not_found", f"Worker {wid} was removed while it started."))
            return
        path = _free(ctx, repo["id"], "worktree_path", plan.paths) if plan else None
        branch = _free(ctx, repo["id"], "branch_name", plan.branches) if plan else None
        if exc is not None or plan is None or path is None or branch is None:
            _failed(
                row, exc or ChkdError("conflict", "every free worktree path or branch name is taken by other workers")
            )
            return
        workerrecords.update(ctx, row, worktree_path=path, branch_name=branch, base_sha=plan.base_sha)
        pooled = pool.take(ctx, repo, wid)  # on the loop, in this transaction: never handed out twice
        ctx.after_commit(lambda: failpoints.hit("spawn.planned"))
        spec = _launch_spec(ctx, repo, wid, task, agent, path, branch, plan.base_sha, pooled)
        ctx.submit(launch, spec, shimstandby.standby_of(ctx), then=_launched, reply_to=deferred)

    def _failed(row: dict[str, Any], exc: BaseException) -> None:
        pool.spawn_ended(ctx, wid)
        msg = exc.message if isinstance(exc, ChkdError) else f"{type(exc).__name__}: {exc}"
        ctx.log.warning("spawn_failed", worker=wid, error=msg)
        spawn_failed(ctx, row, msg)
        code = exc.code if isinstance(exc, ChkdError) else "internal"
        ctx.finish(deferred, ChkdError(code, f"Worker {wid} could not start: {msg.rstrip('.')}."))

    def _launched(result: Launched | None, exc: BaseException | None) -> None:
        row = workerrecords.load(ctx, wid)
        if row is None:
            ctx.finish(deferred, ChkdError("not_found", f"Worker {wid} was removed while it started."))
            return
        if exc is not None or result is None:
            _failed(row, exc or ChkdError("internal", "the launch returned nothing"))
            return
        pool.spawn_ended(ctx, wid)
        row = workerrecords.update(ctx, row, cmd=json.dumps(result.argv))
        ctx.emit(
            ev.WorkerStarted(
                worktree=result.checkout.path, branch=result.checkout.branch, base=result.checkout.base_sha
            ),
            repo=repo["name"],
            worker_id=wid,
            task_id=task["id"],
        )
        ctx.finish(
            deferred,
            WorkerResult(worker=workerrecords.worker_info(ctx, row, repo["name"]), spend=usage.spend_info(ctx, repo)),
        )

    main_branch = ctx.config.for_repo(repo["name"]).main_branch or repo["main_branch"]
    ctx.submit(
        worktrees.plan_checkout,
        repo["path"],
        repo["name"],
        task["id"],
        main_branch,
        ctx.config.worktree_pattern,
        ctx.config.branch_prefix,
        then=_planned,
        reply_to=deferred,
    )
