"""shim.hello, shim.beat, shim.exit: what each worker's chkd-shim reports.

Every reply is an `ActivityAck` carrying the status the daemon wants, so a shim
learns about a pause or an abort even when the daemon's own signal could not reach
the agent (a restart in between). All three are idempotent: a shim that did not get
its reply (daemon restarting) sends again, and the second copy changes nothing more.
"""

from __future__ import annotations

import signal
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.messages import LIVE_WORKER_STATUSES, ActivityAck, AgentReport, ShimBeat, ShimExit, ShimHello

from .. import agent_resume, agent_usage, failpoints, lookup, repos, workerrecords
from ..context import Ctx
from ..store import now_ms

#: Statuses in which an exit of the agent changes the worker's status.
RUNNING = LIVE_WORKER_STATUSES


#: A shim that still reports for a worker in one of these gets `stop`: the worker was given up
#: (the daemon judged it dead, or its spawn was undone) and its task handed back.
GIVEN_UP = frozenset({"dead", "error"})


def _ack(ctx: Ctx, row: dict[str, Any]) -> ActivityAck:
    return ActivityAck(status=row["status"], heartbeat_s=ctx.config.heartbeat_s, stop=row["status"] in GIVEN_UP)


def hello(ctx: Ctx, req: ShimHello) -> ActivityAck:
    row = lookup.worker(ctx.store, req.worker)
    if row["resume_prompt"] is not None and req.agent_pid != row["pid"]:
        row = workerrecords.update(ctx, row, **agent_resume.new_run(row))  # the resumed agent's first hello: a new run
    if row["exit_code"] is not None or row["exit_signal"] is not None:
        return _ack(ctx, row)  # a late duplicate after the exit report
    now = now_ms()
    row = workerrecords.update(
        ctx,
        row,
        pid=req.agent_pid,
        pgid=req.pgid,
        proc_started=req.agent_started,
        shim_pid=req.shim_pid,
        shim_started=req.shim_started,
        heartbeat_at=now,
    )
    status = row["status"]
    if status == "starting":
        row = workerrecords.set_worker_status(ctx, row, "working", reason="the agent started", pid=req.agent_pid)
        workerrecords.start_task(ctx, row)
    elif status == "paused":  # paused before its processes were known: freeze them now
        workerrecords.signal_after_commit(ctx, row, signal.SIGSTOP)
    elif status == "aborted":  # aborted while starting: stop what just started
        workerrecords.stop_after_commit(ctx, row)
        workerrecords.arm_kill(ctx, row)
    return _ack(ctx, row)


#: One statement per heartbeat (the hot path: every worker, every `heartbeat_s`): record the
#: shim's beat and the agent's latest output or heartbeat as activity, and read the status back.
_BEAT_SQL = (
    "UPDATE workers SET heartbeat_at = :now, activity_at = CASE WHEN :latest > coalesce(activity_at, 0) "
    "THEN min(:latest, :now) ELSE activity_at END WHERE id = :id RETURNING status"
)


def beat(ctx: Ctx, req: ShimBeat) -> ActivityAck:
    """The processes live; record the shim's heartbeat and the agent's last output as activity."""
    params = {"now": now_ms(), "latest": max(req.activity_at or 0, req.output_at or 0), "id": req.worker}
    rows = ctx.store.all(_BEAT_SQL, params)  # all(): run the statement to completion
    if not rows:  # not an exact id: a prefix, or unknown (lookup raises the not_found sentence)
        params["id"] = lookup.worker(ctx.store, req.worker)["id"]
        rows = ctx.store.all(_BEAT_SQL, params)
    status = rows[0][0]
    return ActivityAck(status=status, heartbeat_s=ctx.config.heartbeat_s, stop=status in GIVEN_UP)


def _exit_words(code: int | None, sig: int | None) -> str:
    if sig is not None:
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by {name}"
    if code is None:
        return "ended without an exit status (its terminal went away)"
    if code == 127:
        return "could not be started (exit code 127: is the command installed? see `chkdctl logs`)"
    return f"exited with code {code}"


def exited(ctx: Ctx, req: ShimExit) -> ActivityAck:
    """The agent ended: 0 = done once its leftover changes are committed (off-loop); a non-zero
    code = error, a signal = dead (both a failed attempt)."""
    row = lookup.worker(ctx.store, req.worker)
    if row["exit_code"] is not None or row["exit_signal"] is not None:
        return _ack(ctx, row)  # already recorded: the shim is retrying a report we got
    code = req.exit_code if req.signal is None else None
    row = workerrecords.update(ctx, row, exit_code=code, exit_signal=req.signal, heartbeat_at=now_ms())
    words = _exit_words(code, req.signal)
    ctx.emit(
        ev.WorkerExited(exit_code=code, signal=req.signal),
        repo=repos.repo_name(ctx.store, row["repo_id"]),
        worker_id=row["id"],
        task_id=row["task_id"],
    )
    status = row["status"]
    if status in RUNNING and row["agent_error"]:
        # The agent's own stream said its run failed (a usage limit, an API error; the CLI may even
        # exit 0): `error` with that sentence, never `done`. A usage limit is not the task's fault,
        # so its task goes back without counting an attempt.
        reason = row["agent_error"]
        row = workerrecords.set_worker_status(ctx, row, "error", reason=reason, last_error=reason)
        if row["agent_error_kind"] == "usage_limit":
            workerrecords.release_task(ctx, row, f"worker {row['id']}: {reason}")
        else:
            workerrecords.fail_task_attempt(ctx, row, f"worker {row['id']}: {reason}")
    elif status in RUNNING and code == 0:
        # `done` once the leftovers are committed (off-loop), so a merge never misses work;
        # finish_pending records that step so a restart resumes it (workerrecords.resume_finishes)
        row = workerrecords.update(ctx, row, finish_pending=1)
        ctx.after_commit(lambda: failpoints.hit("exit.recorded"))
        workerrecords.commit_leftovers(ctx, row, then_done=f"the agent {words}")
    elif status in RUNNING:
        # Killed by a signal chkd did not send (an abort is `aborted` already): the process is
        # gone without a word of its own, so `dead`. A non-zero exit code is the agent's own
        # verdict: `error`. Either way the attempt counts and the task is requeued.
        reason = f"The agent {words}."
        outcome = "dead" if req.signal is not None else "error"
        row = workerrecords.set_worker_status(ctx, row, outcome, reason=reason, last_error=reason)
        workerrecords.fail_task_attempt(ctx, row, f"worker {row['id']}: the agent {words}")
    elif status == "done" and code == 0:
        row = workerrecords.update(ctx, row, finish_pending=1)
        workerrecords.commit_leftovers(ctx, row)  # `chkdctl done`, then more edits before exiting
    return _ack(ctx, row)


def report(ctx: Ctx, req: AgentReport) -> ActivityAck:
    """What the shim read in the agent's stream: session, usage, limits, API errors (activity too)."""
    row = agent_usage.record(ctx, lookup.worker(ctx.store, req.worker), req)
    return _ack(ctx, row)


HANDLERS = {ShimHello: hello, ShimBeat: beat, ShimExit: exited, AgentReport: report}
