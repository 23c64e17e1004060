"""Liveness and recovery on the loop: the reaper tick, start-up reconciliation, the events
query, the notifier and gc.

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
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import EventList, Events, Gc, GcItem, GcReport

from .. import gc as gcmod
from .. import agent_profiles, lookup, notify, procs, reaper
from .. import workers as W
from ..context import EVENT_COLUMNS, Ctx, row_event
from ..store import now_ms

MAX_PAGE = 5000
_WATCHED_IN = ",".join(f"'{s}'" for s in sorted(reaper.WATCHED))
_WATCHED_SQL = f"SELECT * FROM workers WHERE status IN ({_WATCHED_IN}) ORDER BY seq"
#: What the reaper's rules read, for the rows that could need an action at all: those with
#: processes to check, and those whose heartbeat or activity is old enough to matter. A tick
#: over many quiet rows then costs one indexed query, not a dict per row.
_REAP_COLUMNS = ("id", "status", "pid", "proc_started", "shim_pid", "shim_started", "heartbeat_at",
                 "activity_at", "started_at", "exit_code", "exit_signal", "worktree_path")
_REAP_SQL = (
    f"SELECT {', '.join(_REAP_COLUMNS)} FROM workers WHERE status IN ({_WATCHED_IN}) "
    "AND (pid IS NOT NULL OR shim_pid IS NOT NULL OR status = 'stalled' "
    "     OR coalesce(heartbeat_at, started_at) < :beat_cut "
    "     OR (status = 'working' AND max(coalesce(activity_at, 0), started_at) < :stall_cut)) ORDER BY seq"
)


# -- events ------------------------------------------------------------------------------------
def events(ctx: Ctx, req: Events) -> EventList:
    """History after `since`, oldest first; `last_seq` is the newest seq in the whole table,
    so a client that saw a short page knows nothing between its cursor and `last_seq` matched."""
    if req.since < 0 or req.limit < 1:
        raise ChkdError("bad_request", "since must be 0 or more and limit at least 1.")
    last_seq = ctx.store.scalar("SELECT max(seq) FROM events", (), 0) or 0
    where, params = ["seq > ?"], [req.since]
    if req.worker:
        where.append("worker_id = ?")
        params.append(_worker_id(ctx, req.worker))
    if req.task:
        where.append("task_id = ?")
        params.append(req.task)
    if req.repo:
        row = lookup.find_repo(ctx.store, req.repo)
        where.append("repo = ?")
        params.append(row["name"] if row else req.repo)
    if req.tail < 0:
        raise ChkdError("bad_request", "tail must be 0 or more.")
    cond = " AND ".join(where)
    if req.tail:
        rows = ctx.store.all(
            f"SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events WHERE {cond} AND seq <= ? "
            "ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (*params, last_seq, min(req.tail, req.limit, MAX_PAGE)),
        )
    else:
        rows = ctx.store.all(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {cond} AND seq <= ? ORDER BY seq LIMIT ?",
            (*params, last_seq, min(req.limit, MAX_PAGE)),
        )
    return EventList(events=[row_event(r) for r in rows], last_seq=last_seq)


def _worker_id(ctx: Ctx, ref: str) -> str:
    """A full worker id from a prefix; an unknown id is kept as typed (its worker may be gone)."""
    try:
        return lookup.worker(ctx.store, ref)["id"]
    except ChkdError:
        return ref


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
    fresh = W.set_worker_status(ctx, row, "dead", reason=reason, last_error=reason)
    W.fail_task_attempt(ctx, fresh, f"worker {row['id']} died: {reason}")
    return fresh


def _stalled(ctx: Ctx, row: dict[str, Any], action: reaper.Stalled) -> None:
    """`stalled` (event, notification); `on_stall` abort/requeue stop the worker too, and requeue
    counts the attempt first so a task that always hangs ends up failed and escalated."""
    reason = f"no agent activity for {action.idle_s} s (stall_timeout_s {ctx.config.stall_timeout_s:g})"
    fresh = W.set_worker_status(ctx, row, "stalled", reason=reason)
    if action.then == "requeue":
        W.fail_task_attempt(ctx, fresh, f"worker {row['id']} stalled: {reason}")
    if action.then in ("abort", "requeue"):
        W.abort_worker(ctx, fresh, f"stalled: {reason} (on_stall = {action.then})")


def apply_action(ctx: Ctx, row: dict[str, Any], action: reaper.Action) -> None:
    if isinstance(action, reaper.Dead):
        mark_dead(ctx, row, action.reason, kill=action.kill)
    elif isinstance(action, reaper.SpawnInterrupted):
        from .workers import spawn_failed  # the workers area owns the spawn and its undo

        spawn_failed(ctx, row, action.reason, counts=False)
    elif isinstance(action, reaper.Stalled):
        _stalled(ctx, row, action)
    elif isinstance(action, reaper.Resumed):
        W.set_worker_status(ctx, row, "working", reason="agent activity resumed")


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
    rows = [dict(zip(_REAP_COLUMNS, r)) for r in ctx.store.all(
        _REAP_SQL, {"beat_cut": now - limits.heartbeat_timeout_ms, "stall_cut": now - limits.stall_timeout_ms})]
    if not rows:
        ctx.ext.get("agent_gone_since", {}).clear()
        return
    for action in reaper.decide(rows, now, limits, _facts(ctx, rows, now)):
        row = W.load(ctx, action.worker_id)
        if row is None:
            continue
        try:
            with ctx.savepoint():
                apply_action(ctx, row, action)
        except Exception:  # one worker's trouble never stops the reaper for the others
            ctx.log.error("reaper_action_failed", worker=action.worker_id, action=type(action).__name__,
                          exc_info=True)


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
        facts = reaper.ProcFacts(agent_alive=proc_alive(row["pid"], row["proc_started"]),
                                 shim_alive=proc_alive(row["shim_pid"], row["shim_started"]))
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


# -- notifications ----------------------------------------------------------------------------------
def notifier_setup(ctx: Ctx) -> None:
    last = ctx.store.scalar("SELECT max(seq) FROM events", (), 0) or 0
    saved = ctx.store.scalar("SELECT value FROM meta WHERE key=?", (notify.CURSOR_KEY,))
    cursor = int(saved) if saved is not None else last
    n = notify.Notifier(cursor=min(cursor, last))
    recent = ctx.store.all(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq <= ? AND seq > ? ORDER BY seq",
                           (n.cursor, n.cursor - notify.REMEMBER))
    n.remember([row_event(r) for r in recent])
    ctx.ext["notifier"] = n


def notify_tick(ctx: Ctx) -> None:
    """Queue a notification for each new notable event, advance the saved cursor, and hand the
    queue to one off-loop job at a time (a slow notify_cmd never ties up the git job pool)."""
    n: notify.Notifier = ctx.ext["notifier"]
    rows = ctx.store.all(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT 500", (n.cursor,))
    if rows:
        before = n.cursor
        n.outbox.extend(n.pick([row_event(r) for r in rows]))
        if n.cursor != before:
            ctx.store.x("INSERT INTO meta(key, value) VALUES(?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (notify.CURSOR_KEY, str(n.cursor)))
    if n.sending or not n.outbox:
        return
    argvs = notify.commands(ctx.config.notify_cmd)
    batch, n.outbox = n.outbox, []
    if not argvs:
        return
    jobs = [(*notify.text(cls, ev), notify.event_json(ev)) for cls, ev in batch]
    n.sending = True
    ctx.submit(notify.send_all, argvs, jobs, then=lambda failures, exc: _notified(ctx, failures, exc))


def _notified(ctx: Ctx, failures: list[str] | None, exc: BaseException | None) -> None:
    ctx.ext["notifier"].sending = False
    for problem in failures or ([f"{type(exc).__name__}: {exc}"] if exc else []):
        ctx.log.warning("notify_failed", problem=problem)


# -- gc -------------------------------------------------------------------------------------------------
def _snapshots(ctx: Ctx, ref: str | None) -> list[gcmod.RepoSnapshot]:
    repos = [lookup.repo(ctx.store, ref)] if ref else ctx.store.dicts(f"SELECT {lookup.REPO_COLUMNS} FROM repos")
    now = now_ms()
    snaps = []
    for r in repos:
        workers = ctx.store.dicts(
            "SELECT id, status, worktree_path, branch_name, started_at, completed_at, heartbeat_at "
            "FROM workers WHERE repo_id=?", (r["id"],))
        snaps.append(gcmod.RepoSnapshot(r["name"], r["path"], r["main_branch"], workers,
                                        ctx.config.branch_prefix, ctx.config.worktree_pattern, now,
                                        home=str(ctx.paths.state)))
    return snaps


def _scan_all(snaps: list[gcmod.RepoSnapshot]) -> list[tuple[gcmod.RepoSnapshot, list[gcmod.Found]]]:
    return [(s, gcmod.scan(s)) for s in snaps if os.path.isdir(s.path)]


def _apply_all(plan: list[tuple[gcmod.RepoSnapshot, list[gcmod.Found]]]) -> list[tuple[gcmod.RepoSnapshot, list[gcmod.Found]]]:
    return [(s, gcmod.apply(s, found)) for s, found in plan]


def _still_orphan(ctx: Ctx, f: gcmod.Found) -> bool:
    """Re-checked on the loop right before acting: a worker row's item needs that worker still
    finished; a marker's item needs no worker row to record it meanwhile (nor its worker to be live)."""
    live = gcmod.LIVE
    if f.worker_id is not None:
        status = ctx.store.scalar("SELECT status FROM workers WHERE id=?", (f.worker_id,))
        return status is not None and status not in live
    owner = ctx.store.scalar("SELECT id FROM workers WHERE (worktree_path IS NOT NULL AND worktree_path=?) "
                             "OR (branch_name IS NOT NULL AND branch_name=?)", (f.worktree, f.branch))
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
                ctx.emit(ev.GcRemoved(what=f.item.what, item=f.item.kind, reason=f.item.reason),
                         repo=snap.name, worker_id=f.worker_id)
        ctx.finish(deferred, GcReport(applied=True, items=items))

    ctx.submit(_scan_all, snaps, then=_scanned, reply_to=deferred)
    return deferred


# -- start-up ---------------------------------------------------------------------------------------------
def setup(ctx: Ctx) -> None:
    """Timers first, so nothing reconciliation trips over can leave the daemon without a reaper;
    the notifier's cursor before reconciliation, so the dead it finds are notified."""
    ctx.timers.every(1.0, lambda: reap(ctx), "reaper")
    if ctx.config.notify:
        notifier_setup(ctx)
        ctx.timers.every(0.25, lambda: notify_tick(ctx), "notifier")
    reconcile(ctx)


HANDLERS = {Events: events, Gc: gc_handler}
