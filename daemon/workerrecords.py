"""Worker records on the loop: rendering, status changes (one event each), pause/resume/abort.

Everything here runs on the daemon's loop inside the current transaction. Signals are
plain syscalls (no waiting), sent only to the worker's own process group after
`procs` checked (pid, create time). The SIGKILL after an abort's grace period is a
timer, never a sleep.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Mapping
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol import templates
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import WorkerInfo
from chkd.protocol.statuses import FINAL_WORKER_STATUSES, LIVE_WORKER_STATUSES

from . import lookup, procs, repos, taskqueue, terminal, worktrees
from .context import Ctx
from .store import now_ms

#: Columns `set_worker_status` and `update` may write.
COLUMNS = frozenset(
    {
        "status",
        "worktree_path",
        "branch_name",
        "task_pk",
        "task_id",
        "task_title",
        "agent",
        "cmd",
        "pid",
        "pgid",
        "proc_started",
        "shim_pid",
        "shim_started",
        "completed_at",
        "heartbeat_at",
        "activity_at",
        "message",
        "exit_code",
        "exit_signal",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "last_error",
        "base_sha",
        "finish_pending",
        "interactive",
        "paused_by",
        "usage_limited",
        "session_id",
        "model",
        "usage_ref",
        "agent_error",
        "agent_error_kind",
        "resume_prompt",
        "resume_at",
        "runs",
    }
)
FINAL_STATUSES = FINAL_WORKER_STATUSES
#: The ids chkd gives workers (`w1`, `w2`, ...); a claim under such a name must be a real worker's.
WORKER_ID_RE = re.compile(r"w[0-9]+")

#: What each action needs (pure rules; `transition_error` turns them into sentences).
ACTIONS: dict[str, frozenset[str]] = {
    "pause": frozenset({"starting", "working", "waiting", "stalled"}),
    "resume": frozenset({"paused"}),
    "abort": frozenset(LIVE_WORKER_STATUSES),
    "done": frozenset({"starting", "working", "waiting", "stalled"}),
    "rm": FINAL_WORKER_STATUSES,
}
_NEEDS = {
    "pause": "only a running worker can be paused",
    "resume": "only a paused worker can be resumed",
    "abort": "only a live worker can be aborted",
    "done": "only a running worker can finish",
    "rm": "abort it first (`chkdctl abort {id}`) or let it finish",
}


def transition_error(worker_id: str, status: str, action: str) -> str | None:
    """The sentence explaining why `action` is impossible in `status`, or None when it is fine."""
    if status in ACTIONS[action]:
        return None
    if action == "pause" and status == "paused":
        return f"Worker {worker_id} is already paused."
    if action == "resume" and status in ("starting", "working", "waiting", "stalled"):
        return f"Worker {worker_id} is not paused (it is {status})."
    if action == "rm" and status == "merging":
        return f"Worker {worker_id} is merging; wait for the merge to finish."
    return f"Worker {worker_id} is {status}; {_NEEDS[action].format(id=worker_id)}."


# -- placeholders in agent commands (pure) -------------------------------------------------
def render_argv(template: Iterable[str], values: Mapping[str, str]) -> list[str]:
    """Fill `{worker_id}` … `{prompt}` in each argument, `{{`/`}}` → literal braces (one pass:
    a title holding `{branch}` stays as typed). Templates were checked when they came in."""
    known = {k: v for k, v in values.items() if k in templates.RESUME_PLACEHOLDERS}
    return [templates.render(arg, known) for arg in template]


def default_prompt(
    worker_id: str,
    task_id: str,
    title: str,
    description: str,
    *,
    worktree: str = "",
    branch: str = "",
    mcp: bool = False,
) -> str:
    """What a worker is told when its profile has no `prompt`: its task, where it works, to commit as
    it goes, and how to say it is finished (the chkd MCP tools for Claude, chkdctl otherwise)."""
    text = f"You are chkd worker {worker_id}. Your task is {task_id}: {title}."
    if description:
        text += f"\n\n{description}"
    where = f"your own git worktree {worktree} on branch {branch}" if worktree else "your own git worktree and branch"
    text += f"\n\nWork in the current directory ({where}) and commit as you go with git."
    if mcp:
        text += (
            " Report progress with the chkd_heartbeat tool; when finished, commit and call "
            "chkd_complete_work with a one-line summary."
        )
    else:
        text += (
            " Report progress with `chkdctl heartbeat --message TEXT`; when finished run `chkdctl done --summary TEXT`."
        )
    return text


# -- reading --------------------------------------------------------------------------------
def load(ctx: Ctx, worker_id: str) -> dict[str, Any] | None:
    """The worker row with exactly this id (no prefix matching: see `lookup.worker` for user input)."""
    return lookup.load_worker(ctx.store, worker_id)


def reload(ctx: Ctx, row: Mapping[str, Any]) -> dict[str, Any] | None:
    return load(ctx, row["id"])


def repo_path(ctx: Ctx, repo_id: int) -> str:
    return ctx.store.scalar("SELECT path FROM repos WHERE id=?", (repo_id,), "")


def worker_info(ctx: Ctx, row: Mapping[str, Any], repo: str | None = None) -> WorkerInfo:
    return WorkerInfo(
        id=row["id"],
        repo=repo or repos.repo_name(ctx.store, row["repo_id"]),
        status=row["status"],
        task_id=row["task_id"],
        task_title=row["task_title"],
        agent=row["agent"],
        worktree=row["worktree_path"],
        branch=row["branch_name"],
        pid=row["pid"],
        shim_pid=row["shim_pid"],
        pgid=row["pgid"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        heartbeat_at=row["heartbeat_at"],
        activity_at=row["activity_at"],
        message=row["message"],
        exit_code=row["exit_code"],
        tokens_in=row["tokens_in"] or 0,
        tokens_out=row["tokens_out"] or 0,
        cost_usd=row["cost_usd"] or 0.0,
        last_error=row["last_error"],
        log_path=str(ctx.paths.worker_log(row["id"])),
        interactive=bool(row["interactive"]),
        tmux_session=tmux_session(row),
        session_id=row.get("session_id"),
        model=row.get("model"),
        runs=row.get("runs") or 1,
    )


def tmux_session(row: Mapping[str, Any]) -> str | None:
    """An interactive worker's tmux session on chkd's own server: named after the worker (ids are
    unique per chkd home, and the server is per home)."""
    return row["id"] if row.get("interactive") else None


def live_count(ctx: Ctx, repo_id: int) -> int:
    marks = ",".join("?" * len(LIVE_WORKER_STATUSES))
    return ctx.store.scalar(
        f"SELECT count(*) FROM workers WHERE repo_id=? AND status IN ({marks})",
        (repo_id, *sorted(LIVE_WORKER_STATUSES)),
        0,
    )


def task_of(ctx: Ctx, row: Mapping[str, Any]) -> dict[str, Any] | None:
    if row.get("task_pk") is None:
        return None
    return ctx.store.dict(f"SELECT {taskqueue.TASK_COLUMNS} FROM task_queue WHERE pk=?", (row["task_pk"],))


# -- writing --------------------------------------------------------------------------------
def update(ctx: Ctx, row: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """Write columns of a worker row (no event: for facts that are not a status change)."""
    bad = set(fields) - COLUMNS
    if bad:
        raise ValueError(f"unknown worker columns {sorted(bad)}")
    if fields:
        sets = ", ".join(f"{k}=?" for k in fields)
        ctx.store.x(f"UPDATE workers SET {sets} WHERE id=?", (*fields.values(), row["id"]))
    fresh = reload(ctx, row)
    assert fresh is not None
    return fresh


def set_worker_status(
    ctx: Ctx,
    row: Mapping[str, Any],
    status: str,
    *,
    reason: str | None = None,
    signalled: bool | None = None,
    question: str | None = None,
    by: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Change the status (and other columns) and emit WorkerStatusChanged (from, to, reason, signalled,
    a `waiting` worker's question, and who paused it)."""
    old = row["status"]
    if status in FINAL_STATUSES and "completed_at" not in fields and not row.get("completed_at"):
        fields["completed_at"] = now_ms()
    fresh = update(ctx, row, status=status, **fields)
    changed = ev.WorkerStatusChanged(
        from_=old, to=status, reason=reason or None, signalled=signalled, question=question, by=by
    )
    ctx.emit(changed, repo=repos.repo_name(ctx.store, row["repo_id"]), worker_id=row["id"], task_id=row["task_id"])
    return fresh


def release_task(ctx: Ctx, row: Mapping[str, Any], note: str, *, cancel: bool = False) -> None:
    """Give the worker's task back to the queue (not a failed attempt), or cancel it."""
    task = task_of(ctx, row)
    if task is None or task["claimed_by"] not in (row["id"], None):
        return
    if cancel:
        if task["status"] not in ("done", "cancelled"):
            taskqueue.set_task_status(ctx, task, "cancelled", worker_id=row["id"], note=note)
    elif task["status"] in ("claimed", "in_progress", "review"):
        taskqueue.set_task_status(ctx, task, "pending", worker_id=row["id"], note=note)


def fail_task_attempt(ctx: Ctx, row: Mapping[str, Any], reason: str) -> None:
    """The agent failed: count the attempt (requeue until max_attempts, then failed) — unless it
    stopped at a usage limit (`usage_limited`): that is nobody's failure, the task goes back uncounted."""
    task = task_of(ctx, row)
    if task is None or task["claimed_by"] != row["id"]:
        return
    fresh = reload(ctx, row) or row
    if fresh.get("usage_limited"):
        release_task(ctx, fresh, f"{reason} (at a usage limit: not counted as an attempt)")
        return
    taskqueue.requeue_task(ctx, task, reason)


def start_task(ctx: Ctx, row: Mapping[str, Any]) -> None:
    """The agent runs: its task goes claimed → in_progress."""
    task = task_of(ctx, row)
    if task is not None and task["status"] == "claimed" and task["claimed_by"] == row["id"]:
        taskqueue.set_task_status(ctx, task, "in_progress", worker_id=row["id"])


def finish_task(ctx: Ctx, row: Mapping[str, Any], summary: str | None) -> None:
    """The agent finished: its task goes to review (waiting for the merge)."""
    task = task_of(ctx, row)
    if task is not None and task["status"] in ("claimed", "in_progress") and task["claimed_by"] == row["id"]:
        taskqueue.set_task_status(ctx, task, "review", worker_id=row["id"], note=summary or None)


def commit_leftovers(ctx: Ctx, row: dict[str, Any], *, then_done: str | None = None) -> None:
    """Off-loop: commit whatever the agent left uncommitted, as `chkd: <task>: <title>`.

    With `then_done` (the agent exited 0), the worker becomes `done` (task → review) only
    once that commit is made, so a merge started the moment it is done never misses work.
    The row's `finish_pending` flag stays set until this completes: a daemon killed in
    between resumes it at start-up (`resume_finishes`).
    """
    wid = row["id"]
    if not row["worktree_path"]:
        update(ctx, row, finish_pending=0)
        return
    message = f"chkd: {row['task_id'] or wid}: {row['task_title'] or 'work left uncommitted'}"

    def _committed(sha: str | None, exc: BaseException | None) -> None:
        fresh = load(ctx, wid)
        if fresh is None:
            return
        fresh = update(ctx, fresh, finish_pending=0)
        repo = repos.repo_name(ctx.store, fresh["repo_id"])
        if exc is not None:
            msg = exc.message if isinstance(exc, ChkdError) else str(exc)
            error = f"Could not commit the work left uncommitted: {msg}"
            fresh = update(ctx, fresh, last_error=error)
            ctx.emit(ev.WorkerCommitFailed(error=msg), repo=repo, worker_id=wid, task_id=fresh["task_id"])
            if then_done is not None and fresh["status"] in LIVE_WORKER_STATUSES:
                fresh = set_worker_status(ctx, fresh, "error", reason=error)
                fail_task_attempt(ctx, fresh, f"worker {wid}: {error}")
            return
        if sha:
            ctx.emit(ev.WorkerCommitted(sha=sha, message=message), repo=repo, worker_id=wid, task_id=fresh["task_id"])
        if then_done is not None and fresh["status"] in LIVE_WORKER_STATUSES:
            fresh = set_worker_status(ctx, fresh, "done", reason=then_done)
            finish_task(ctx, fresh, None)

    ctx.submit(worktrees.commit_all, row["worktree_path"], message, then=_committed)


def resume_finishes(ctx: Ctx) -> None:
    """At start-up: an agent's exit 0 whose leftover commit (and `done`) died with the previous
    daemon is finished now — the commit is idempotent (a clean worktree commits nothing)."""
    for row in ctx.store.dicts("SELECT * FROM workers WHERE finish_pending=1 ORDER BY seq"):
        live = row["status"] in LIVE_WORKER_STATUSES
        commit_leftovers(
            ctx, row, then_done="the agent exited with code 0 (finished after a daemon restart)" if live else None
        )


# -- waiting: the agent needs a person ---------------------------------------------------------
#: Where `waiting` can start from: a running agent (a paused one cannot ask anything).
CAN_WAIT = frozenset({"starting", "working", "stalled"})
#: The longest question kept on the row and in the event (the rest is in the agent's screen).
QUESTION_MAX = 500


def enter_waiting(ctx: Ctx, row: Mapping[str, Any], question: str) -> dict[str, Any]:
    """`waiting` with the question as the worker's message (one `worker.status` event, which the
    notifier turns into "w2 is waiting for you: <question>"). Asking again the same question
    changes nothing; a new one while waiting updates the message and emits again."""
    question = " ".join(question.split())[:QUESTION_MAX] or "needs your input"
    if row["status"] == "waiting" and row["message"] == question:
        return dict(row)
    if row["status"] not in CAN_WAIT | {"waiting"}:
        return dict(row)
    if row["status"] == "starting":
        start_task(ctx, row)
    return set_worker_status(
        ctx, row, "waiting", reason="the agent asks for a person", message=question, question=question
    )


def leave_waiting(ctx: Ctx, row: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """Back to `working` (activity counts from now: the wait was for a person, not idleness)."""
    if row["status"] != "waiting":
        return dict(row)
    return set_worker_status(ctx, row, "working", reason=reason, activity_at=now_ms())


def end_terminal(ctx: Ctx, row: Mapping[str, Any]) -> None:
    """After commit, off-loop: close an interactive worker's tmux session (chkd made it and the row
    records it). For workers given up whose agent may still sit in its pane — a shim that died
    before it reported the agent's pid leaves nothing else to signal — so a task never runs twice."""
    session = tmux_session(row)
    if session is None:
        return
    wid = row["id"]

    def _ended(found: bool | None, exc: BaseException | None) -> None:
        if found:
            ctx.log.info("tmux_session_ended", worker=wid)

    ctx.submit(terminal.end_session, str(ctx.paths.tmux_socket), session, then=_ended)


# -- signals ---------------------------------------------------------------------------------
def _group(row: Mapping[str, Any]) -> tuple[int | None, int | None, float | None]:
    return row.get("pgid"), row.get("pid"), row.get("proc_started")


def signal_worker(row: Mapping[str, Any], sig: int) -> bool:
    return procs.signal_group(*_group(row), sig)


def signal_after_commit(ctx: Ctx, row: Mapping[str, Any], sig: int) -> bool:
    """Send `sig` to the worker's group once the status change is committed (a change that rolls
    back stops nothing). True when the group is still the worker's (it will be signalled)."""
    group = _group(row)
    if not procs.group_is_ours(*group):
        return False
    ctx.after_commit(lambda: procs.signal_group(*group, sig) and None)
    return True


def pause_worker(
    ctx: Ctx, row: Mapping[str, Any], *, reason: str = "paused by the user", by: str = "user"
) -> dict[str, Any]:
    """SIGSTOP the group; `by` records who paused it (`budget` pauses are lifted by the budget)."""
    err = transition_error(row["id"], row["status"], "pause")
    if err:
        raise ChkdError("conflict", err)
    signalled = signal_after_commit(ctx, row, signal.SIGSTOP)
    return set_worker_status(ctx, row, "paused", reason=reason, signalled=signalled, by=by, paused_by=by)


def resume_worker(ctx: Ctx, row: Mapping[str, Any], *, reason: str = "resumed by the user") -> dict[str, Any]:
    err = transition_error(row["id"], row["status"], "resume")
    if err:
        raise ChkdError("conflict", err)
    signalled = signal_after_commit(ctx, row, signal.SIGCONT)
    # the pause does not count as idleness: activity restarts now
    return set_worker_status(
        ctx, row, "working", reason=reason, signalled=signalled, activity_at=now_ms(), paused_by=None
    )


def stop_after_commit(ctx: Ctx, row: Mapping[str, Any]) -> None:
    """SIGTERM (+ SIGCONT, so a paused group can act on it) to the worker's group, after commit."""
    group = _group(row)
    ctx.after_commit(lambda: procs.stop_group(*group) and None)


def abort_worker(ctx: Ctx, row: Mapping[str, Any], reason: str, *, cancel_task: bool = False) -> dict[str, Any]:
    """Flag `aborted`, SIGTERM the group (SIGKILL after `abort_grace_s`), give the task back."""
    err = transition_error(row["id"], row["status"], "abort")
    if err:
        raise ChkdError("conflict", err)
    stop_after_commit(ctx, row)
    fresh = set_worker_status(ctx, row, "aborted", reason=reason, last_error=reason)
    release_task(ctx, fresh, f"worker {row['id']} aborted", cancel=cancel_task)
    arm_kill(ctx, fresh)
    return fresh


def arm_kill(ctx: Ctx, row: Mapping[str, Any]) -> None:
    """After the grace period, SIGKILL whatever is left of the worker's group (a timer, not a sleep)."""
    wid = row["id"]

    def _kill() -> None:
        fresh = lookup.load_worker(ctx.store, wid)
        if fresh is None or fresh["status"] != "aborted":
            return
        if procs.group_alive(*_group(fresh)) and signal_worker(fresh, signal.SIGKILL):
            ctx.emit(
                ev.WorkerKilled(after_s=ctx.config.abort_grace_s),
                repo=repos.repo_name(ctx.store, fresh["repo_id"]),
                worker_id=wid,
                task_id=fresh["task_id"],
            )

    ctx.timers.after(ctx.config.abort_grace_s, _kill, f"abort-kill {wid}")


def reassert_signals(ctx: Ctx) -> None:
    """At start-up: a signal sent just after a commit can die with the daemon, so every worker whose
    processes still run gets the state its row says once more — paused groups SIGSTOP, aborted ones
    SIGTERM again with a new SIGKILL timer (the old timer died with the previous daemon)."""
    for row in ctx.store.dicts("SELECT * FROM workers WHERE status IN ('paused', 'aborted') AND pid IS NOT NULL"):
        if not procs.group_alive(*_group(row)):
            continue
        if row["status"] == "paused":
            signal_after_commit(ctx, row, signal.SIGSTOP)
        else:
            stop_after_commit(ctx, row)
            arm_kill(ctx, row)
