"""Liveness and recovery on the loop: the reaper tick, start-up reconciliation, and noticing
when the loop itself was not running (a freeze or a suspend).

The reaper's rules are pure (`daemon/reaper.py`); this module gathers the facts they need
(worker rows, psutil's view of the processes: fast syscalls, fine on the loop) and carries
out the actions: `dead` (task requeued, worktree and branch kept), `stalled` and back.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil

from chkd.protocol import events as ev

from . import notify, procs, reaper, spawning, workerrecords
from .context import Ctx
from .store import now_ms

_WATCHED_IN = ",".join(f"'{s}'" for s in sorted(reaper.WATCHED))
_WATCHED_SQL = f"SELECT * FROM workers WHERE status IN ({_WATCHED_IN}) ORDER BY seq"
#: What the reaper's rules read, for the rows that could need an action at all: those with
#: processes to check, and those whose heartbeat or activity is old enough to matter. A tick
#: over many quiet rows then costs one indexed query, not a dict per row.
_REAP_COLUMNS = (
    "id",
    "status",
    "pid",
    "proc_started",
    "shim_pid",
    "shim_started",
    "heartbeat_at",
    "activity_at",
    "started_at",
    "exit_code",
    "exit_signal",
    "worktree_path",
)
_REAP_SQL = (
    f"SELECT {', '.join(_REAP_COLUMNS)} FROM workers WHERE status IN ({_WATCHED_IN}) "
    "AND (pid IS NOT NULL OR shim_pid IS NOT NULL OR status = 'stalled' "
    "     OR coalesce(heartbeat_at, started_at) < :beat_cut "
    "     OR (status = 'working' AND max(coalesce(activity_at, 0), started_at) < :stall_cut)) ORDER BY seq"
)


# -- process facts -------------------------------------------------------------------------------
def proc_alive(pid: int | None, started: float | None) -> bool | None:
    """Whether the process (pid, create time) still runs; None when no pid was recorded."""
    if not pid:
        return None
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return True if started is None else reaper.identity_matches(p.create_time(), started)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _facts(ctx: Ctx, rows: list[dict[str, Any]], now: int) -> dict[str, reaper.ProcFacts]:
    gone_since: dict[str, int] = ctx.ext.setdefault("agent_gone_since", {})
    facts: dict[str, reaper.ProcFacts] = {}
    for row in rows:
        agent = proc_alive(row["pid"], row["proc_started"])
        shim = proc_alive(row["shim_pid"], row["shim_started"])
        if agent is False and shim is True:
            since = gone_since.setdefault(row["id"], now)
        else:
            gone_since.pop(row["id"], None)
            since = None
        facts[row["id"]] = reaper.ProcFacts(agent_alive=agent, shim_alive=shim, agent_gone_since=since)
    for wid in set(gone_since) - set(facts):
        del gone_since[wid]
    return facts


def kill_leftovers(row: dict[str, Any]) -> None:
    """SIGKILL what is left of a dead worker: its agent's process group and its shim, each only
    after checking (pid, create time), so a reused pid is never hit. SIGKILL also ends a stopped shim."""
    procs.signal_group(row["pgid"], row["pid"], row["proc_started"], signal.SIGKILL)
    if row["shim_pid"] and procs.same_process(row["shim_pid"], row["shim_started"]):
        try:
            os.kill(row["shim_pid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# -- acting on decisions -----------------------------------------------------------------------------
def mark_dead(ctx: Ctx, row: dict[str, Any], reason: str, *, kill: bool = False) -> dict[str, Any]:
    """`dead` with its reason; the task goes back to the queue (attempts + 1, escalated at
    max_attempts); the worktree and branch stay for inspection."""
    if kill:
        leftovers = dict(row)
        ctx.after_commit(lambda: kill_leftovers(leftovers))
    ctx.ext.get("agent_gone_since", {}).pop(row["id"], None)
    if kill or not row.get("pid"):  # an interactive agent nobody can signal any more: close its terminal
        workerrecords.end_terminal(ctx, row)
    fresh = workerrecords.set_worker_status(ctx, row, "dead", reason=reason, last_error=reason)
    workerrecords.fail_task_attempt(ctx, fresh, f"worker {row['id']} died: {reason}")
    return fresh


def _stalled(ctx: Ctx, row: dict[str, Any], action: reaper.Stalled) -> None:
    """`stalled` (event, notification); `on_stall` abort/requeue stop the worker too, and requeue
    counts the attempt first so a task that always hangs ends up failed and escalated."""
    reason = f"no agent activity for {action.idle_s} s (stall_timeout_s {ctx.config.stall_timeout_s:g})"
    fresh = workerrecords.set_worker_status(ctx, row, "stalled", reason=reason)
    if action.then == "requeue":
        workerrecords.fail_task_attempt(ctx, fresh, f"worker {row['id']} stalled: {reason}")
    if action.then in ("abort", "requeue"):
        workerrecords.abort_worker(ctx, fresh, f"stalled: {reason} (on_stall = {action.then})")


def apply_action(ctx: Ctx, row: dict[str, Any], action: reaper.Action) -> None:
    if isinstance(action, reaper.Dead):
        mark_dead(ctx, row, action.reason, kill=action.kill)
    elif isinstance(action, reaper.SpawnInterrupted):
        spawning.spawn_failed(ctx, row, action.reason, counts=False)
    elif isinstance(action, reaper.Stalled):
        _stalled(ctx, row, action)
    elif isinstance(action, reaper.Resumed):
        workerrecords.set_worker_status(ctx, row, "working", reason="agent activity resumed")


#: The reaper ticks every second; a longer gap between two ticks means the loop did not run
#: (SIGSTOP, a laptop suspend, a request that blocked it): the daemon then starts watching afresh.
GAP_MS = 2500
WATCHING_SINCE = "liveness.watching_since"
_CLOCK = "liveness.clock"


def watching_since(ctx: Ctx) -> int:
    """When the daemon last began watching without a gap (ms): its start, or the end of a pause."""
    return int(ctx.ext.get(WATCHING_SINCE, 0))


def notice_gap(ctx: Ctx, now: int) -> None:
    """Compare the loop's own clocks with the last tick: a gap on the monotonic clock (the process
    was stopped or blocked) or on the wall clock alone (a suspend, which monotonic time skips) means
    the daemon was not watching; workers get a fresh grace period instead of being judged for it,
    and heartbeats that queued up meanwhile are read before anyone is judged (requests are served
    before timers in every loop turn)."""
    mono = time.monotonic()
    last = ctx.ext.get(_CLOCK)
    ctx.ext[_CLOCK] = (mono, now)
    if last is None:
        return
    mono_gap, wall_gap = int((mono - last[0]) * 1000), now - last[1]
    gap = max(mono_gap, wall_gap)
    if gap <= GAP_MS:
        return
    ctx.ext[WATCHING_SINCE] = now
    cause = "suspend" if wall_gap - mono_gap > GAP_MS else "freeze"
    ctx.log.warning("daemon_gap", seconds=round(gap / 1000, 1), cause=cause)
    ctx.emit(ev.DaemonPaused(seconds=round(gap / 1000, 1), cause=cause))


def reap(ctx: Ctx) -> None:
    """The 1-second reaper tick."""
    now = now_ms()
    notice_gap(ctx, now)
    limits = reaper.Limits.from_config(ctx.config, watching_since(ctx))
    rows = [
        dict(zip(_REAP_COLUMNS, r, strict=False))
        for r in ctx.store.all(
            _REAP_SQL, {"beat_cut": now - limits.heartbeat_timeout_ms, "stall_cut": now - limits.stall_timeout_ms}
        )
    ]
    if not rows:
        ctx.ext.get("agent_gone_since", {}).clear()
        return
    for action in reaper.decide(rows, now, limits, _facts(ctx, rows, now)):
        row = workerrecords.load(ctx, action.worker_id)
        if row is None:
            continue
        try:
            with ctx.savepoint():
                apply_action(ctx, row, action)
        except Exception:  # one worker's trouble never stops the reaper for the others
            ctx.log.error("reaper_action_failed", worker=action.worker_id, action=type(action).__name__, exc_info=True)


def reconcile(ctx: Ctx) -> None:
    """Start-up: a worker whose processes still run (same pid and create time) stays, and silence
    before now does not count against it while its shim reconnects; one whose processes are gone
    is dead; a spawn cut off before it made anything is undone."""
    rows = ctx.store.dicts(_WATCHED_SQL)
    now = now_ms()
    ctx.ext[WATCHING_SINCE] = now
    ctx.ext[_CLOCK] = (time.monotonic(), now)  # a freeze before the first reaper tick is a gap too
    alive = gone = 0
    for row in rows:
        facts = reaper.ProcFacts(
            agent_alive=proc_alive(row["pid"], row["proc_started"]),
            shim_alive=proc_alive(row["shim_pid"], row["shim_started"]),
        )
        verdict = reaper.judge_at_start(row, facts)
        if verdict is None:
            alive += 1
            continue
        try:
            with ctx.savepoint():
                if isinstance(verdict, reaper.SpawnInterrupted):
                    apply_action(ctx, row, verdict)
                else:
                    mark_dead(ctx, row, verdict.reason, kill=verdict.kill)
            gone += 1
        except Exception:  # one bad row never blocks the others (the reaper retries it)
            ctx.log.error("reconcile_failed", worker=row["id"], exc_info=True)
    if rows:
        ctx.log.info("reconciled", alive=alive, dead=gone)


# -- start-up ---------------------------------------------------------------------------------------------
def setup(ctx: Ctx) -> None:
    """Timers first, so nothing reconciliation trips over can leave the daemon without a reaper;
    the notifier's cursor before reconciliation, so the dead it finds are notified."""
    ctx.timers.every(1.0, lambda: reap(ctx), "reaper")
    if ctx.config.notify:
        notify.start(ctx)
    reconcile(ctx)
