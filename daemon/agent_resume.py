"""Resume: start a worker's exited agent again in its worktree, continuing its session.

After `update` leaves conflict markers, or a reviewer's `reject --reason`, a worker whose agent
has exited gets its profile's `resume` argv (`claude --resume <session_id> -p <instructions>`)
with the conflict files or the reason as the prompt; `chkdctl resume-agent W` does it by hand.
The worker is `working` again and its usage keeps adding up.

Kill -9 safe: the intent (the prompt, `resume_prompt`, and when, `resume_at`) is written in the
same transaction that sets the worker `working`, before the new shim starts. The new shim's hello
clears it and starts the new run (its exit counts from then on). A daemon killed in between
finds the intent at start-up; it waits as long as a shim may need to reconnect (one that got
`go` says hello to the new daemon), then starts the agent again if no hello came.
"""

from __future__ import annotations

import json
import os
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.launch import module_argv
from chkd.protocol.messages import SHIM_RECONNECT_S, WorkerResult

from . import agent_launch, agent_profiles, repos, shimstandby, taskqueue
from . import workerrecords as W
from .context import Ctx, Deferred
from .mergequeue import ACTIVE
from .store import now_ms

#: Merge states in which the worker's branch must not move.
ACTIVE_MERGES = tuple(sorted(ACTIVE))
#: Worker states whose exited agent may be started again.
RESUMABLE = frozenset({"working", "stalled", "done", "conflict", "error", "dead"})


def exit_reported(row: dict[str, Any]) -> bool:
    return row["exit_code"] is not None or row["exit_signal"] is not None


def default_prompt(row: dict[str, Any]) -> str:
    return (
        f"Continue your task {row['task_id']}: {row['task_title']}. Commit as you go; when finished, call "
        f"chkd_complete_work with a one-line summary."
    )


def reject_prompt(row: dict[str, Any], reason: str) -> str:
    return (
        f"A reviewer rejected your work on {row['task_id']}: {reason}\n\nAddress it in your worktree, commit, "
        f"and call chkd_complete_work again."
    )


def conflict_prompt(target: str, files: list[str]) -> str:
    return (
        f"Merging {target} into your branch left conflict markers in: {', '.join(files)}. Resolve them, "
        f"`git add` the files and `git commit` the merge, then call chkd_complete_work again."
    )


def _check(ctx: Ctx, row: dict[str, Any]) -> agent_profiles.AgentPlan:
    """The profile's resume plan, or the sentence saying why this worker cannot be resumed now."""
    wid = row["id"]
    if row["resume_prompt"] is not None:
        raise ChkdError("conflict", f"Worker {wid}'s agent is already being started again.")
    if not exit_reported(row):
        raise ChkdError(
            "conflict",
            f"Worker {wid}'s agent is still running ({row['status']}); only an agent that exited can be resumed.",
        )
    marks = ",".join("?" * len(ACTIVE_MERGES))
    if ctx.store.scalar(f"SELECT 1 FROM merges WHERE worker_id=? AND status IN ({marks})", (wid, *ACTIVE_MERGES)):
        raise ChkdError(
            "conflict",
            f"Worker {wid} has a merge under way; reject it (`chkdctl reject {wid} --reason "
            f"TEXT`, which resumes the agent with the reason) or let it finish first.",
        )
    if row["status"] not in RESUMABLE:
        raise ChkdError(
            "conflict",
            f"Worker {wid} is {row['status']}; only a worker that is working, done, "
            f"in conflict, error or dead can have its agent resumed.",
        )
    if row["interactive"]:
        raise ChkdError(
            "conflict",
            f"Worker {wid} ran in a terminal (an interactive profile); its agent cannot be resumed in print mode.",
            "Spawn a new worker for the task instead.",
        )
    if row["agent"] in (None, "cmd"):
        raise ChkdError(
            "conflict",
            f"Worker {wid} runs a --cmd command, not an agent profile, so there is no `resume` to continue it with.",
        )
    plan = _resume_plan(ctx, row)
    if not row["session_id"] and any("{session_id}" in arg for arg in plan.template):
        raise ChkdError(
            "conflict",
            f"Worker {wid}'s agent never reported a session id, so there is no session to continue.",
            "Spawn a new worker for the task instead.",
        )
    if not row["worktree_path"] or not os.path.isdir(row["worktree_path"]):
        raise ChkdError("conflict", f"Worker {wid}'s worktree {row['worktree_path'] or ''} is gone.".replace(" .", "."))
    return plan


def _take_task_back(ctx: Ctx, row: dict[str, Any]) -> None:
    """The task is this worker's again and in progress (it may have gone back to the queue)."""
    task = W.task_of(ctx, row)
    if task is None:
        return
    if task["status"] == "pending":
        task = taskqueue.claim_task(ctx, task, row["id"])
    elif task["claimed_by"] != row["id"]:
        raise ChkdError(
            "conflict",
            f"Task {task['id']} is {task['status'].replace('_', ' ')}"
            f"{' by ' + task['claimed_by'] if task['claimed_by'] else ''}; worker "
            f"{row['id']} cannot take it back.",
        )
    if task["status"] != "in_progress":
        taskqueue.set_task_status(ctx, task, "in_progress", worker_id=row["id"], note="its agent was resumed")


def start(ctx: Ctx, row: dict[str, Any], prompt: str, why: str, deferred: Deferred | None = None) -> dict[str, Any]:
    """Record the intent and start the agent again (off-loop). Raises the sentence when it cannot."""
    _check(ctx, row)
    _take_task_back(ctx, row)
    fields: dict[str, Any] = {"resume_prompt": prompt[:60_000], "resume_at": now_ms(), "message": f"resuming: {why}"}
    if row["status"] == "working":
        row = W.update(ctx, row, **fields)
    else:
        row = W.set_worker_status(
            ctx, row, "working", reason=f"its agent is resumed: {why}", completed_at=None, **fields
        )
    _launch(ctx, row["id"], why, deferred)
    return row


def maybe_start(ctx: Ctx, row: dict[str, Any], prompt: str, why: str) -> bool:
    """For `update` and `reject`: resume when the worker's agent can be (exited, a resumable profile,
    a session); otherwise leave the worker for a person. Never raises."""
    try:
        with ctx.savepoint():
            start(ctx, row, prompt, why)
        return True
    except ChkdError as exc:
        ctx.log.info("not_resumed", worker=row["id"], why=exc.message)
        return False


def _launch(ctx: Ctx, wid: str, why: str, deferred: Deferred | None) -> None:
    row = W.load(ctx, wid)
    assert row is not None
    plan = _resume_plan(ctx, row)
    env_home = ctx.paths.home_env()
    values = {
        "worker_id": wid,
        "task_id": row["task_id"] or "",
        "title": row["task_title"] or "",
        "description": (W.task_of(ctx, row) or {}).get("description") or "",
        "prompt": row["resume_prompt"],
        "session_id": row["session_id"] or "",
    }
    spec = agent_launch.LaunchSpec(
        worker_id=wid,
        repo_path=W.repo_path(ctx, row["repo_id"]),
        path=row["worktree_path"],
        branch=row["branch_name"] or "",
        base_sha=row["base_sha"] or "",
        template=plan.template,
        values=values,
        shim_argv=module_argv("chkd.client.shim", "--worker", wid),
        shim_env=shimstandby.shim_env(ctx),
        agent_env={**plan.env, **env_home, "CHKD_WORKER_ID": wid, "CHKD_TASK_ID": row["task_id"] or ""},
        log_path=str(ctx.paths.worker_log(wid)),
        heartbeat_s=ctx.config.heartbeat_s,
        abort_grace_s=ctx.config.abort_grace_s,
        agent=plan,
        claude_dir=str(agent_profiles.claude_dir(ctx.paths, wid)) if plan.claude else None,
    )
    resume_at, prompt = row["resume_at"], row["resume_prompt"] or ""

    def _started(argv: list[str] | None, exc: BaseException | None) -> None:
        fresh = W.load(ctx, wid)
        if fresh is None or fresh["resume_at"] != resume_at:
            return
        if exc is not None or argv is None:
            msg = exc.message if isinstance(exc, ChkdError) else f"{type(exc).__name__}: {exc}"
            reason = f"Could not start the agent again: {msg.rstrip('.')}."
            if fresh["resume_prompt"] is not None:  # no new run said hello
                fresh = W.set_worker_status(ctx, fresh, "error", reason=reason, last_error=reason, resume_prompt=None)
            W.fail_task_attempt(ctx, fresh, f"worker {wid}: {reason}")
            if deferred is not None:
                ctx.finish(deferred, ChkdError("internal", reason))
            return
        fresh = W.update(ctx, fresh, cmd=json.dumps(argv), runs=(fresh["runs"] or 1) + 1)
        ctx.emit(
            ev.AgentResumed(profile=fresh["agent"], session_id=fresh["session_id"] or "", why=why, prompt=prompt[:500]),
            repo=repos.repo_name(ctx.store, fresh["repo_id"]),
            worker_id=wid,
            task_id=fresh["task_id"],
        )
        if deferred is not None:
            ctx.finish(deferred, WorkerResult(worker=W.worker_info(ctx, fresh)))

    ctx.submit(agent_launch.restart_agent, spec, shimstandby.standby_of(ctx), then=_started, reply_to=deferred)


def _resume_plan(ctx: Ctx, row: dict[str, Any]) -> agent_profiles.AgentPlan:
    """The profile's `resume` run, with the same cap as its first run (`max_task_usd`)."""
    profile = agent_profiles.profile_named(ctx.config, row["agent"])
    return agent_profiles.plan(row["agent"], profile, resume=True, task_cap_usd=ctx.config.max_task_usd)


def new_run(row: dict[str, Any]) -> dict[str, Any]:
    """The fields a resumed run's first hello resets: the old exit and error are history now."""
    return {
        "resume_prompt": None,
        "exit_code": None,
        "exit_signal": None,
        "agent_error": None,
        "agent_error_kind": None,
        "finish_pending": 0,
        "usage_limited": 0,
    }


def setup(ctx: Ctx) -> None:
    """At start-up: an intent without the new run's hello is started again once a shim that did get
    `go` from the previous daemon would have said hello."""
    wait = SHIM_RECONNECT_S  # a shim that got `go` retries its hello at most this long after we are back
    for row in ctx.store.dicts("SELECT id, resume_at FROM workers WHERE resume_prompt IS NOT NULL"):
        wid, at = row["id"], row["resume_at"]

        def _again(wid: str = wid, at: int = at) -> None:
            fresh = W.load(ctx, wid)
            if fresh is None or fresh["resume_prompt"] is None or fresh["resume_at"] != at:
                return  # the new shim said hello meanwhile
            if fresh["status"] not in RESUMABLE:
                W.update(ctx, fresh, resume_prompt=None)
                return
            try:
                _launch(ctx, wid, "resumed after a daemon restart", None)
            except ChkdError as exc:
                reason = f"Could not start the agent again: {exc.message}"
                W.set_worker_status(ctx, fresh, "error", reason=reason, last_error=reason, resume_prompt=None)

        ctx.timers.after(wait, _again, f"resume {wid}")
