"""The autopilot: keeps up to N workers busy on a repository's ready tasks, merges what they
finish, and stops by itself when the queue is empty (`--until-empty`).

It runs on the loop, from a 1-second timer and from event-driven wakeups (every worker,
task or merge event schedules one tick for the next loop turn), and does nothing slow
itself: spawns go through the workers area (its off-loop launch), merges through the merge
queue, `update` through its off-loop job. Its settings are rows of `autopilot`, so a daemon
restart (or kill -9) resumes the run: reconciliation first settles the workers, then the
next tick carries on. Decisions are pure (`daemon/schedule.py`).

Usage limits: an `agent.usage_limit` event (the shim's stream-json parsing, or `chkdctl
usage-limit` from inside a worker) or `agent.api_error` of kind rate_limit parks the
worker's profile in `profile_waits` until the reset plus `usage_limit_margin_s` (429s: a
growing back-off); the task goes back uncounted (`workers.usage_limited`). A timer wakes
the run at the reset — the row survives a restart, and setup re-arms the timer.

Events (kind → data):
    autopilot.started     workers, agent, merge, until_empty
    autopilot.stopped     reason
    autopilot.finished    reason
    autopilot.spawn       profile            (worker_id, task_id: the worker it started)
    autopilot.spawn_failed error
    autopilot.update      merged, files      (a conflicting worker was brought up to date)
    autopilot.needs_person message           (a conflict or a failed merge it cannot settle)
    autopilot.limit_wait  profile, until, tasks, message
    autopilot.limit_over  profile
    agent.usage_limit     profile, resets_at, message  (also from the shim's stream-json reading)
    agent.api_error       profile, error, message      (error rate_limit: a 429)
(each declared as a Struct in protocol/events.py)
    budget.warning        scope, day, spent_usd, budget_usd, percent, message   (daemon/budget.py)
    budget.exceeded       scope, day, spent_usd, budget_usd, percent, paused, message
    budget.resumed        workers, day
    budget.overridden     workers, day
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import LIVE_WORKER_STATUSES, Event, ProfileWait, RunInfo, Spawn

from . import (
    agent_resume,
    budget,
    mergeengine,
    mergequeue,
    repos,
    schedule,
    shimstandby,
    spawning,
    taskqueue,
    usage,
    workerrecords,
)
from .context import Ctx, Deferred
from .store import now_ms

EXT = "autopilot"
#: Event types that may change what the autopilot should do next.
WAKE_TYPES: tuple[type[ev.EventBody], ...] = (
    ev.WorkerStatusChanged,
    ev.TaskStatusChanged,
    ev.TaskAdded,
    ev.TaskRequeued,
    ev.TaskFailed,
    ev.TaskReleased,
    ev.MergeMerged,
    ev.MergeConflicted,
    ev.MergeFailed,
    ev.MergeRejected,
    ev.DepRemoved,
    ev.BudgetResumed,
    ev.BudgetOverridden,
    ev.LimitWaitOver,
    ev.SpecImported,
)
_LIVE = ",".join(f"'{s}'" for s in sorted(LIVE_WORKER_STATUSES))
#: Workers that take a slot: every live one, except a worker left `working` by `update` after its
#: agent exited (no process: it waits for a person). One whose agent exited 0 and whose leftovers
#: are being committed (`finish_pending`) still counts until it is `done`.
_RUNNING_SQL = (
    f"SELECT count(*) FROM workers WHERE repo_id=? AND status IN ({_LIVE}) "
    "AND NOT (exit_code IS NOT NULL AND finish_pending = 0)"
)
USAGE_LIMIT_MARGIN_MS = 60_000
RATE_LIMIT_BASE_S = 10.0
#: A reset time further out than this is not believed (a clock or parsing error): a day at most.
MAX_WAIT_MS = 86_400_000


# -- settings (rows of `autopilot`) -------------------------------------------------------------
def load_run(ctx: Ctx, repo_id: int) -> dict[str, Any] | None:
    return ctx.store.dict("SELECT * FROM autopilot WHERE repo_id=?", (repo_id,))


def start(
    ctx: Ctx, repo: Mapping[str, Any], workers: int | None, agent: str | None, merge: str | None, until_empty: bool
) -> dict[str, Any]:
    """Start or re-configure the repository's run (the previous settings are the defaults)."""
    old = load_run(ctx, repo["id"]) or {}
    n = workers or old.get("workers") or ctx.config.max_workers_for(repo["name"])
    if agent is not None and ctx.config.agent_profile(agent) is None:
        known = ", ".join(sorted({*ctx.config.agents, "demo", "claude"}))
        raise ChkdError("not_found", f"There is no agent profile '{agent}' (known: {known}).")
    row: dict[str, Any] = {
        "workers": n,
        "agent": agent if agent is not None else old.get("agent"),
        "merge": merge or old.get("merge") or "auto",
        "until_empty": int(until_empty),
    }
    ctx.store.x(
        "INSERT INTO autopilot(repo_id, workers, agent, merge, until_empty, state, started_at) "
        "VALUES(:repo, :workers, :agent, :merge, :until_empty, 'running', :now) "
        "ON CONFLICT(repo_id) DO UPDATE SET workers=:workers, agent=:agent, merge=:merge, "
        "until_empty=:until_empty, state='running', started_at=:now, stopped_at=NULL, stop_reason=NULL",
        {**row, "repo": repo["id"], "now": now_ms()},
    )
    ctx.emit(
        ev.AutopilotStarted(workers=n, agent=row["agent"], merge=row["merge"], until_empty=bool(until_empty)),
        repo=repo["name"],
    )
    wake(ctx)
    run = load_run(ctx, repo["id"])
    assert run is not None
    return run


def stop(ctx: Ctx, repo: Mapping[str, Any], reason: str, state: str = "stopped") -> dict[str, Any] | None:
    """Nothing new starts; running workers finish and are still merged by hand (or by a new run)."""
    run = load_run(ctx, repo["id"])
    if run is None or run["state"] != "running":
        return run
    ctx.store.x(
        "UPDATE autopilot SET state=?, stopped_at=?, stop_reason=? WHERE repo_id=?",
        (state, now_ms(), reason, repo["id"]),
    )
    ctx.emit(
        ev.AutopilotFinished(reason=reason) if state == "finished" else ev.AutopilotStopped(reason=reason),
        repo=repo["name"],
    )
    return load_run(ctx, repo["id"])


# -- wake-ups ------------------------------------------------------------------------------------
def wake(ctx: Ctx) -> None:
    """One tick at the next loop turn (coalesced)."""
    st = ctx.ext.setdefault(EXT, {})
    if st.get("woken"):
        return
    st["woken"] = True

    def _run() -> None:
        st["woken"] = False
        tick(ctx)

    ctx.timers.after(0, _run, "autopilot-wake")


def on_event(ctx: Ctx, event: Event) -> None:
    """Listener on every emitted event: usage limits park a profile; state changes wake the runs."""
    data = event.data
    if isinstance(data, (ev.AgentUsageLimited, ev.AgentApiFailed)):
        note_limit(ctx, event, data)
    elif isinstance(data, ev.WorkerStatusChanged) and data.to == "done" and event.worker_id:
        row = workerrecords.load(ctx, event.worker_id)
        if row is not None and row["agent"]:
            clear_strikes(ctx, row["agent"])  # it got through: the 429 back-off starts over
    if isinstance(data, WAKE_TYPES) and ctx.ext.get(EXT, {}).get("any_running", True):
        wake(ctx)


# -- the tick ------------------------------------------------------------------------------------
def tick(ctx: Ctx) -> None:
    expire_waits(ctx)
    runs = ctx.store.dicts(
        "SELECT a.*, r.name, r.path, r.main_branch FROM autopilot a JOIN repos r "
        "ON r.id = a.repo_id WHERE a.state='running' ORDER BY r.name"
    )
    ctx.ext.setdefault(EXT, {})["any_running"] = bool(runs)
    shimstandby.want(ctx, sum(run["workers"] for run in runs))  # each run may start N at once
    for run in runs:
        try:
            with ctx.savepoint():
                step(ctx, run)
        except Exception:  # one repository's trouble never stops the others
            ctx.log.error("autopilot_step_failed", repo=run["name"], exc_info=True)


def step(ctx: Ctx, run: dict[str, Any]) -> None:
    repo = {"id": run["repo_id"], "name": run["name"], "path": run["path"], "main_branch": run["main_branch"]}
    if run["merge"] != "off":
        merge_done(ctx, run, repo)
        settle_conflicts(ctx, repo)
    started = start_ready(ctx, run, repo)
    if run["until_empty"] and not started and queue_empty(ctx, repo, merging=run["merge"] != "off"):
        left = ctx.store.scalar(
            "SELECT count(*) FROM task_queue WHERE repo_id=? AND status='pending'", (repo["id"],), 0
        )
        why = "the queue is empty" + (f" ({left} tasks wait on dependencies that failed or on a hold)" if left else "")
        stop(ctx, repo, why, state="finished")


def running_count(ctx: Ctx, repo_id: int) -> int:
    return int(ctx.store.scalar(_RUNNING_SQL, (repo_id,), 0))


def ready_tasks(ctx: Ctx, repo_id: int) -> list[schedule.Ready]:
    rows = ctx.store.all(
        "SELECT t.id, t.tags FROM task_queue t WHERE t.repo_id=? AND t.status='pending' AND t.held=0 "
        "AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN task_queue u ON u.pk = d.depends_on_pk "
        "                WHERE d.task_pk = t.pk AND u.status != 'done') "
        "ORDER BY t.priority, t.created_at, t.pk",
        (repo_id,),
    )
    return [schedule.Ready(id=tid, tags=tuple(taskqueue._tags(tags))) for tid, tags in rows]


def tagged_profiles(ctx: Ctx) -> dict[str, list[str]]:
    return {name: list(p.tags) for name, p in ctx.config.agents.items() if p.tags}


def default_profile(ctx: Ctx, run: Mapping[str, Any], repo_name: str) -> str:
    return run.get("agent") or ctx.config.for_repo(repo_name).default_agent or ctx.config.default_agent


def parked(ctx: Ctx) -> dict[str, dict[str, Any]]:
    """Profiles whose wait has not run out (rows stay after it, keeping their 429 strikes)."""
    return {r["profile"]: r for r in ctx.store.dicts("SELECT * FROM profile_waits WHERE until_ms > ?", (now_ms(),))}


def blocked_reason(ctx: Ctx, run: Mapping[str, Any], repo: Mapping[str, Any]) -> str:
    """Why ready tasks do not start right now ("" when they would)."""
    why = budget.blocked(ctx, repo)
    if why is not None:
        return why
    ready = ready_tasks(ctx, repo["id"])
    if not ready:
        return ""
    waits = parked(ctx)
    plan = schedule.plan_starts(ready, len(ready), tagged_profiles(ctx), default_profile(ctx, run, repo["name"]), waits)
    if not plan and waits:
        first = min(waits.values(), key=lambda w: w["until_ms"])
        return f"every ready task waits for a usage limit ({first['profile']} until {_clock(first['until_ms'])})"
    return ""


def start_ready(ctx: Ctx, run: Mapping[str, Any], repo: Mapping[str, Any]) -> int:
    """Spawn workers for the most urgent ready tasks, up to the free capacity."""
    if budget.blocked(ctx, repo) is not None:
        return 0
    free = schedule.capacity(run["workers"], ctx.config.max_workers_for(repo["name"]), running_count(ctx, repo["id"]))
    if free <= 0:
        return 0
    # the spawn path refuses above max_workers counting every live worker (also those waiting for a person)
    free = min(free, ctx.config.max_workers_for(repo["name"]) - workerrecords.live_count(ctx, repo["id"]))
    plan = schedule.plan_starts(
        ready_tasks(ctx, repo["id"]), free, tagged_profiles(ctx), default_profile(ctx, run, repo["name"]), parked(ctx)
    )
    started = 0
    for task_id, profile in plan:
        try:
            with ctx.savepoint():
                spawn_task(ctx, repo, task_id, profile)
            started += 1
        except ChkdError as exc:
            ctx.emit(ev.AutopilotSpawnFailed(error=exc.message), repo=repo["name"], task_id=task_id)
            break
    return started


def spawn_task(ctx: Ctx, repo: Mapping[str, Any], task_id: str, profile: str) -> None:
    """Through the workers area's spawn (names recorded first, launch off-loop); nobody waits for
    the reply, a failed launch is the workers area's `spawn_failed` (a counted attempt)."""

    def _launched(result: Any) -> None:
        if isinstance(result, ChkdError):
            ctx.log.warning("autopilot_spawn_failed", repo=repo["name"], task=task_id, error=result.message)

    deferred = Deferred(envelope=[], request_id=0, callback=_launched)
    before = ctx.store.scalar("SELECT coalesce(max(seq), 0) FROM workers", (), 0)
    spawning.start(ctx, Spawn(repo=repo["name"], task_id=task_id, agent=profile), dict(repo), deferred)
    wid = ctx.store.scalar("SELECT id FROM workers WHERE seq > ? ORDER BY seq LIMIT 1", (before,))
    ctx.emit(ev.AutopilotSpawned(profile=profile), repo=repo["name"], worker_id=wid, task_id=task_id)


def queue_empty(ctx: Ctx, repo: Mapping[str, Any], *, merging: bool = True) -> bool:
    """Nothing ready, running, or (when the run merges) finished-but-unmerged or merging: the run
    has nothing left to do. With `--merge off` a done worker is the end of its task's road."""
    if ready_tasks(ctx, repo["id"]):
        return False
    unmerged = " OR status IN ('done', 'merging', 'conflict')" if merging else ""
    busy = ctx.store.scalar(
        f"SELECT count(*) FROM workers WHERE repo_id=? AND (status IN ({_LIVE}){unmerged})", (repo["id"],), 0
    )
    if busy:
        return False
    active = ",".join(f"'{s}'" for s in sorted(mergequeue.ACTIVE))
    return not ctx.store.scalar(
        f"SELECT count(*) FROM merges WHERE repo_id=? AND status IN ({active})", (repo["id"],), 0
    )


# -- merging -------------------------------------------------------------------------------------
def merge_done(ctx: Ctx, run: Mapping[str, Any], repo: Mapping[str, Any]) -> None:
    """Queue a merge for every done worker (with the run's strategy); a worker whose last merge
    failed (its test gate) is handed to a person once instead of being merged again and again."""
    active = ",".join(f"'{s}'" for s in sorted(mergequeue.ACTIVE))
    rows = ctx.store.dicts(
        f"SELECT w.*, (SELECT status FROM merges m WHERE m.worker_id = w.id ORDER BY m.id DESC LIMIT 1) AS last "
        f"FROM workers w WHERE w.repo_id=? AND w.status='done' AND w.finish_pending=0 AND NOT EXISTS "
        f"(SELECT 1 FROM merges m WHERE m.worker_id = w.id AND m.status IN ({active})) ORDER BY w.seq",
        (repo["id"],),
    )
    for row in rows:
        if row["last"] in ("failed", "rejected"):
            needs_person(
                ctx,
                row,
                f"the merge of worker {row['id']} {row['last']}; see `chkdctl merges` and "
                f"merge it by hand with `chkdctl merge {row['id']}`",
            )
            continue
        row.pop("last")
        mergequeue.enqueue(ctx, row, dict(repo), run["merge"], run_tests=True)


def settle_conflicts(ctx: Ctx, repo: Mapping[str, Any]) -> None:
    """A conflicting worker: `update` (the target into its branch, off-loop). A clean update is
    merged again; conflict markers go to the agent when its profile can resume, else to a person."""
    st = ctx.ext.setdefault(EXT, {})
    updating: set[str] = st.setdefault("updating", set())
    for row in ctx.store.dicts(
        "SELECT * FROM workers WHERE repo_id=? AND status='conflict' ORDER BY seq", (repo["id"],)
    ):
        wid = row["id"]
        if wid in updating or _handed_over(ctx, wid) or not row["worktree_path"]:
            continue
        updating.add(wid)
        target = mergequeue.target_of(ctx, dict(repo))

        def _then(
            res: mergeengine.UpdateOutcome | None, exc: BaseException | None, wid: str = wid, target: str = target
        ) -> None:
            _updated(ctx, repo, wid, target, res, exc)

        ctx.submit(mergeengine.update_branch, row["worktree_path"], target, then=_then)


def _handed_over(ctx: Ctx, wid: str) -> bool:
    """Already given to a person since its last merge attempt (remembered in the events table)."""
    last_merge = ctx.store.scalar("SELECT max(seq) FROM events WHERE worker_id=? AND kind='merge.queued'", (wid,), 0)
    return bool(
        ctx.store.scalar(
            "SELECT 1 FROM events WHERE worker_id=? AND kind='autopilot.needs_person' AND seq > ?",
            (wid, last_merge or 0),
        )
    )


def _updated(
    ctx: Ctx,
    repo: Mapping[str, Any],
    wid: str,
    target: str,
    res: mergeengine.UpdateOutcome | None,
    exc: BaseException | None,
) -> None:
    ctx.ext.setdefault(EXT, {}).setdefault("updating", set()).discard(wid)
    row = workerrecords.load(ctx, wid)
    if row is None or row["status"] != "conflict":
        return
    if exc is not None or res is None:
        why = exc.message if isinstance(exc, ChkdError) else f"{type(exc).__name__}: {exc}"
        needs_person(ctx, row, f"`chkdctl update {wid}` failed ({why}); resolve it in {row['worktree_path']}")
        return
    ctx.emit(
        ev.AutopilotUpdated(merged=res.merged, files=list(res.conflict_files)),
        repo=repo["name"],
        worker_id=wid,
        task_id=row["task_id"],
    )
    if res.merged:  # the target's new commits merged cleanly into the branch: merge it again
        workerrecords.set_worker_status(
            ctx, row, "done", reason=f"brought up to date with {target}", message=f"took in {target}; merging again"
        )
        return
    files = ", ".join(res.conflict_files)
    row = workerrecords.set_worker_status(
        ctx,
        row,
        "working",
        reason=f"conflicts with {target} in {files}",
        message=f"conflicts with {target} in {files}: resolve the markers, commit, then `chkdctl done --worker {wid}`",
    )
    tasks_row = workerrecords.task_of(ctx, row)
    if tasks_row is not None and tasks_row["status"] == "review":
        taskqueue.set_task_status(ctx, tasks_row, "in_progress", worker_id=wid, note=f"conflicts in {files}")
    if not resume_agent(ctx, row, agent_resume.conflict_prompt(target, list(res.conflict_files))):
        needs_person(
            ctx,
            row,
            f"worker {wid} ({row['task_id']}) conflicts with {target} in {files}: resolve "
            f"the markers in {row['worktree_path']}, commit, then `chkdctl done --worker {wid}`",
        )


def resume_agent(ctx: Ctx, row: Mapping[str, Any], prompt: str) -> bool:
    """Start the worker's agent again in its worktree with `prompt` (daemon/agent_resume.py) when
    it can be: its agent exited, its profile has `resume`, a session id was recorded. False (and
    nothing changed) otherwise: then a person gets the conflict."""
    return agent_resume.maybe_start(ctx, dict(row), prompt, "conflict markers after update")


def needs_person(ctx: Ctx, row: Mapping[str, Any], message: str) -> None:
    if _handed_over(ctx, row["id"]):
        return
    ctx.emit(
        ev.NeedsPerson(message=message),
        repo=repos.repo_name(ctx.store, row["repo_id"]),
        worker_id=row["id"],
        task_id=row["task_id"],
    )


# -- usage limits --------------------------------------------------------------------------------
def note_limit(ctx: Ctx, event: Event, data: ev.AgentUsageLimited | ev.AgentApiFailed) -> None:
    """An agent hit a usage limit or a 429: park its profile; its task goes back uncounted."""
    kind = data.error if isinstance(data, ev.AgentApiFailed) else "usage_limit"
    if kind not in ("usage_limit", "rate_limit"):
        return
    row = workerrecords.load(ctx, event.worker_id) if event.worker_id else None
    profile = str(data.profile or (row or {}).get("agent") or "")
    if not profile:
        return
    now = now_ms()
    old = ctx.store.dict("SELECT * FROM profile_waits WHERE profile=?", (profile,))
    strikes = (old["strikes"] if old else 0) + 1
    if kind == "usage_limit":
        margin = int(ctx.config.usage_limit_margin_s * 1000)
        resets = data.resets_at if isinstance(data, ev.AgentUsageLimited) else None
        until = min(now + MAX_WAIT_MS, int(resets) + margin) if resets else now + margin
        reason = "usage limit"
    else:
        until = now + int(1000 * schedule.backoff_s(strikes, ctx.config.rate_limit_backoff_s))
        reason = f"rate limited (HTTP 429, {strikes} in a row)"
    if row is not None:  # a limit is nobody's failure: the task goes back without counting an attempt
        workerrecords.update(ctx, row, usage_limited=1)
    until = max(until, old["until_ms"] if old else 0)
    ctx.store.x(
        "INSERT INTO profile_waits(profile, until_ms, reason, strikes, notified) VALUES(?,?,?,?,0) "
        "ON CONFLICT(profile) DO UPDATE SET until_ms=excluded.until_ms, reason=excluded.reason, "
        "strikes=excluded.strikes, notified=0",
        (profile, until, reason, strikes),
    )
    if old is None or old["until_ms"] != until:
        n = waiting_for(ctx, profile)
        message = f"{profile.capitalize()} {reason}: {n} task{'s' if n != 1 else ''} wait until {_clock(until)}."
        ctx.emit(
            ev.LimitWaitStarted(profile=profile, until=until, tasks=n, reason=reason, message=message), repo=event.repo
        )
    arm_wait_timer(ctx, until)


def waiting_for(ctx: Ctx, profile: str) -> int:
    """Ready (or going-back) tasks of running repositories that this profile would take."""
    n = 0
    for run in ctx.store.dicts(
        "SELECT a.*, r.name FROM autopilot a JOIN repos r ON r.id = a.repo_id WHERE a.state='running'"
    ):
        default = default_profile(ctx, run, run["name"])
        tagged = tagged_profiles(ctx)
        pending = ctx.store.all(
            "SELECT tags FROM task_queue WHERE repo_id=? AND status IN "
            "('pending', 'claimed', 'in_progress') AND held=0",
            (run["repo_id"],),
        )
        n += sum(1 for (tags,) in pending if schedule.profile_for(taskqueue._tags(tags), tagged, default) == profile)
    return n


def arm_wait_timer(ctx: Ctx, until_ms: int) -> None:
    ctx.timers.after(max(0.0, (until_ms - now_ms()) / 1000) + 0.01, lambda: tick(ctx), "autopilot-limit")


def expire_waits(ctx: Ctx) -> None:
    """A wait that ran out is announced once (`notified` = announced); the row keeps its strikes."""
    for row in ctx.store.dicts("SELECT * FROM profile_waits WHERE until_ms <= ? AND notified=0", (now_ms(),)):
        ctx.store.x("UPDATE profile_waits SET notified=1 WHERE profile=?", (row["profile"],))
        ctx.emit(ev.LimitWaitOver(profile=row["profile"], reason=row["reason"]))


def clear_strikes(ctx: Ctx, profile: str) -> None:
    """A worker of `profile` finished: the 429 back-off starts over (a wait still running stays)."""
    ctx.store.x("DELETE FROM profile_waits WHERE profile=? AND until_ms <= ?", (profile, now_ms()))
    ctx.store.x("UPDATE profile_waits SET strikes=0 WHERE profile=?", (profile,))


def wait_infos(ctx: Ctx) -> list[ProfileWait]:
    return [
        ProfileWait(
            profile=r["profile"],
            until=r["until_ms"],
            reason=r["reason"],
            strikes=r["strikes"],
            tasks_waiting=waiting_for(ctx, r["profile"]),
        )
        for r in sorted(parked(ctx).values(), key=lambda r: r["until_ms"])
    ]


def _clock(ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(ms / 1000))


# -- status --------------------------------------------------------------------------------------
def run_info(ctx: Ctx, run: Mapping[str, Any], repo: Mapping[str, Any]) -> RunInfo:
    counts: dict[str, int] = dict(
        ctx.store.all("SELECT status, count(*) FROM task_queue WHERE repo_id=? GROUP BY status", (repo["id"],))
    )
    ready = len(ready_tasks(ctx, repo["id"]))
    pending = counts.get("pending", 0)
    return RunInfo(
        repo=repo["name"],
        state=run["state"],
        workers=run["workers"],
        merge=run["merge"],
        agent=run["agent"],
        until_empty=bool(run["until_empty"]),
        started_at=run["started_at"],
        stopped_at=run["stopped_at"],
        stop_reason=run["stop_reason"],
        live=workerrecords.live_count(ctx, repo["id"]),
        ready=ready,
        waiting_on_deps=max(0, pending - ready),
        in_review=counts.get("review", 0),
        merged=counts.get("done", 0),
        failed=counts.get("failed", 0),
        blocked=blocked_reason(ctx, run, repo) if run["state"] == "running" else "",
        spend=usage.spend_info(ctx, repo),
        waits=wait_infos(ctx),
    )


def setup(ctx: Ctx) -> None:
    """Listen to events, tick every second, and re-arm the usage-limit timers the database holds."""
    ctx.listeners.append(lambda event: on_event(ctx, event))
    ctx.timers.every(1.0, lambda: tick(ctx), "autopilot", first_in=0.2)
    ctx.timers.every(1.0, lambda: budget.tick(ctx), "budget", first_in=0.1)
    ctx.ext[usage.ON_SPEND] = lambda: budget.soon(ctx)
    for (until,) in ctx.store.all("SELECT until_ms FROM profile_waits WHERE notified=0"):
        arm_wait_timer(ctx, until)
