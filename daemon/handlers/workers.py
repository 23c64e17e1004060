"""spawn, workers, worker show, pause/resume/abort, rm, attic, and the agent's heartbeat/worker-status/done.

Spawn itself lives in daemon/spawning.py; the worker records in daemon/workerrecords.py.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    Abort,
    ActivityAck,
    AtticEntry,
    AtticList,
    AtticListResult,
    AtticRestore,
    Done,
    Heartbeat,
    Ok,
    Pause,
    Remove,
    Resume,
    ResumeAgent,
    Spawn,
    WorkerList,
    WorkerListResult,
    WorkerResult,
    WorkerShow,
    WorkerState,
)

from .. import (
    agent_profiles,
    agent_resume,
    budget,
    lookup,
    repos,
    shimstandby,
    spawning,
    usage,
    workerrecords,
    worktrees,
)
from ..context import Ctx, Deferred
from ..store import now_ms


# -- spawn -------------------------------------------------------------------------------------
def spawn(ctx: Ctx, req: Spawn) -> Deferred:
    if req.next and req.task_id:
        raise ChkdError("bad_request", "Give a task id or --next, not both.")
    if not req.next and not req.task_id:
        raise ChkdError("bad_request", "Say which task to work on: `spawn TASK_ID`, or `spawn --next`.")
    if req.cmd is not None and req.agent:
        raise ChkdError("bad_request", "Give --agent or --cmd, not both.")
    if req.cmd is not None and not [a for a in req.cmd if a.strip()]:
        raise ChkdError("bad_request", "The --cmd command is empty.")
    # the reply comes from the launch job, not from a registration of the repository
    deferred = ctx.defer()

    def _start_in(repo: dict[str, Any]) -> Deferred:
        spawning.start(ctx, req, repo, deferred)
        return deferred

    repos.with_repo(ctx, req.repo, _start_in)
    return deferred


# -- listing -------------------------------------------------------------------------------------
def list_(ctx: Ctx, req: WorkerList) -> WorkerListResult:
    where, params = [], []
    if req.repo is not None:
        where.append("w.repo_id=?")
        params.append(repos.resolve(ctx.store, req.repo)["id"])
    if req.status is not None:
        where.append("w.status = ?")
        params.append(req.status)
    elif not req.all:
        where.append("w.status != 'merged'")
    sql = "SELECT w.*, r.name AS repo_name FROM workers w JOIN repos r ON r.id = w.repo_id"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = ctx.store.dicts(sql + " ORDER BY w.seq", tuple(params))
    return WorkerListResult(workers=[workerrecords.worker_info(ctx, r, r["repo_name"]) for r in rows])


def show(ctx: Ctx, req: WorkerShow) -> WorkerResult:
    return WorkerResult(worker=workerrecords.worker_info(ctx, lookup.worker(ctx.store, req.worker)))


# -- pause / resume / abort ----------------------------------------------------------------------
def _targets(ctx: Ctx, worker: str | None, all_: bool, repo: str | None, statuses: frozenset[str]) -> list[dict]:
    if worker and all_:
        raise ChkdError("bad_request", "Give a worker id or --all, not both.")
    if worker:
        return [lookup.worker(ctx.store, worker)]
    if not all_:
        raise ChkdError("bad_request", "Say which worker (an id like w3), or --all.")
    marks = ",".join("?" * len(statuses))
    sql = f"SELECT * FROM workers WHERE status IN ({marks})"
    params: list[Any] = sorted(statuses)
    if repo is not None:
        sql += " AND repo_id=?"
        params.append(repos.resolve(ctx.store, repo)["id"])
    return ctx.store.dicts(sql + " ORDER BY seq", tuple(params))


def _infos(ctx: Ctx, rows: list[dict]) -> WorkerListResult:
    return WorkerListResult(workers=[workerrecords.worker_info(ctx, r) for r in rows])


def pause(ctx: Ctx, req: Pause) -> WorkerListResult:
    rows = _targets(ctx, req.worker, req.all, req.repo, workerrecords.ACTIONS["pause"])
    return _infos(ctx, [workerrecords.pause_worker(ctx, r) for r in rows])


def resume(ctx: Ctx, req: Resume) -> WorkerListResult:
    """A worker the budget paused stays paused while the budget is used up, unless `over_budget`
    (which lifts the budget for the rest of the day: `budget.resume_over_budget`)."""
    if req.over_budget:
        if not req.all and not req.worker:
            raise ChkdError("bad_request", "Say which worker (an id like w3), or --all.")
        repo_id = repos.resolve(ctx.store, req.repo)["id"] if req.repo is not None else None
        rows = budget.resume_over_budget(ctx, repo_id)
        others = _targets(ctx, req.worker, req.all, req.repo, workerrecords.ACTIONS["resume"])
        return _infos(ctx, rows + [workerrecords.resume_worker(ctx, r) for r in others if r["status"] == "paused"])
    rows = _targets(ctx, req.worker, req.all, req.repo, workerrecords.ACTIONS["resume"])
    out = []
    for r in rows:
        why = budget.blocked(ctx, {"id": r["repo_id"]}) if r.get("paused_by") == "budget" else None
        if why is not None:
            if req.worker:
                raise ChkdError("busy", f"Worker {r['id']} was paused by the budget. {why}")
            continue
        out.append(workerrecords.resume_worker(ctx, r))
    return _infos(ctx, out)


def abort(ctx: Ctx, req: Abort) -> WorkerListResult:
    rows = _targets(ctx, req.worker, req.all, req.repo, workerrecords.ACTIONS["abort"])
    return _infos(
        ctx, [workerrecords.abort_worker(ctx, r, "aborted by the user", cancel_task=req.cancel_task) for r in rows]
    )


# -- rm and the attic -------------------------------------------------------------------------------
def remove(ctx: Ctx, req: Remove) -> Deferred:
    row = lookup.worker(ctx.store, req.worker)
    wid = row["id"]
    err = workerrecords.transition_error(wid, row["status"], "rm")
    if err:
        raise ChkdError("conflict", err)
    repo = ctx.store.dict(f"SELECT {repos.REPO_COLUMNS} FROM repos WHERE id=?", (row["repo_id"],))
    assert repo is not None
    deferred = ctx.defer()

    def _removed(result: worktrees.Removal | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert result is not None
        fresh = lookup.load_worker(ctx.store, wid)
        if fresh is not None:
            workerrecords.release_task(ctx, fresh, f"worker {wid} was removed")
            ctx.store.x("DELETE FROM workers WHERE id=?", (wid,))
        agent_profiles.forget_claude_files(ctx, wid)
        ctx.emit(
            ev.WorkerRemoved(
                worktree=row["worktree_path"],
                branch=row["branch_name"],
                attic_ref=result.attic_ref,
                attic_sha=result.attic_sha,
                snapshot=result.snapshot_sha,
                force=req.force,
            ),
            repo=repo["name"],
            worker_id=wid,
            task_id=row["task_id"],
        )
        parts = [f"Removed worker {wid}"]
        if result.worktree_removed:
            parts.append(f"its worktree {row['worktree_path']}")
        if result.branch_deleted:
            parts.append(f"its branch {row['branch_name']}")
        text = parts[0] + (" and " + " and ".join(parts[1:]) if len(parts) > 1 else "") + "."
        if result.attic_ref:
            text += (
                f" The work is kept as {result.attic_ref} ({result.attic_sha[:10] if result.attic_sha else ''});"
                f" `chkdctl attic restore {wid}` brings it back."
            )
        for note in result.notes:
            text += f" Note: {note}"
        ctx.finish(deferred, Ok(message=text))

    snapshot = f"chkd: {row['task_id'] or wid}: snapshot of uncommitted work before removal ({wid})"
    ctx.submit(
        worktrees.remove_checkout,
        repo["path"],
        row["worktree_path"],
        row["branch_name"],
        force=req.force,
        target=repo["main_branch"],
        attic=worktrees.attic_ref(wid),
        snapshot_message=snapshot,
        who=f"Worker {wid}",
        then=_removed,
        reply_to=deferred,
    )
    return deferred


def _attic_repos(ctx: Ctx, ref: str | None) -> list[dict[str, Any]]:
    if ref is not None:
        return [repos.resolve(ctx.store, ref)]
    return ctx.store.dicts(f"SELECT {repos.REPO_COLUMNS} FROM repos ORDER BY name")


def _list_attics(repos: list[tuple[str, str]]) -> list[tuple[str, worktrees.AtticItem]]:
    out = []
    for _name, path in repos:
        try:
            out += [(path, item) for item in worktrees.attic_list(path)]
        except ChkdError:
            continue  # a repository that moved away: nothing to list there
    return out


def attic_list(ctx: Ctx, req: AtticList) -> Deferred:
    repos = [(r["name"], r["path"]) for r in _attic_repos(ctx, req.repo)]
    deferred = ctx.defer()

    def _listed(items: list[tuple[str, worktrees.AtticItem]] | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        entries = [
            AtticEntry(ref=i.ref, sha=i.sha, worker_id=i.ref.rsplit("/", 1)[-1], at=_removed_at(ctx, i))
            for _path, i in items or []
        ]
        ctx.finish(deferred, AtticListResult(entries=entries))

    ctx.submit(_list_attics, repos, then=_listed, reply_to=deferred)
    return deferred


def _removal_event(ctx: Ctx, attic_ref: str) -> dict[str, Any] | None:
    wid = attic_ref.rsplit("/", 1)[-1].split("-", 1)[0]
    for at, blob in ctx.store.all(
        "SELECT at, data FROM events WHERE kind='worker.removed' AND worker_id=? ORDER BY seq DESC LIMIT 5", (wid,)
    ):
        data = msgspec.msgpack.decode(blob) if blob else {}
        if data.get("attic_ref") == attic_ref:
            return {**data, "at": at}
    return None


def _removed_at(ctx: Ctx, item: worktrees.AtticItem) -> int:
    event = _removal_event(ctx, item.ref)
    return int(event["at"]) if event else item.at


def attic_restore(ctx: Ctx, req: AtticRestore) -> Deferred:
    """Only chkd's own attic entries (refused on the loop otherwise); the git checks run off-loop."""
    repo = repos.resolve(ctx.store, req.repo)
    full = worktrees.resolve_attic_ref(req.ref)
    event = _removal_event(ctx, full)
    default = (event or {}).get("branch") or f"{ctx.config.branch_prefix}attic-{full.rsplit('/', 1)[-1]}"
    wanted = req.branch if req.branch is not None else default
    deferred = ctx.defer()

    def _restored(result: tuple[str, str] | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert result is not None
        name, sha = result
        ctx.emit(ev.AtticRestored(ref=full, branch=name, sha=sha), repo=repo["name"])
        taken = f" (a branch {wanted} already exists, so the default name was not used)" if name != wanted else ""
        ctx.finish(deferred, Ok(message=f"Restored {full} as branch {name} ({sha[:10]}) in {repo['path']}{taken}."))

    ctx.submit(
        worktrees.attic_restore,
        repo["path"],
        full,
        wanted,
        explicit=req.branch is not None,
        then=_restored,
        reply_to=deferred,
    )
    return deferred


# -- the agent's own commands --------------------------------------------------------------------------
def _ack(ctx: Ctx, row: dict[str, Any]) -> ActivityAck:
    return ActivityAck(status=row["status"], heartbeat_s=ctx.config.heartbeat_s)


#: Running totals stop here instead of overflowing SQLite's 64-bit integers.
TOTAL_CAP = 2**62


def heartbeat(ctx: Ctx, req: Heartbeat) -> ActivityAck:
    """Activity: the agent is getting somewhere. Token counts are increments, added up."""
    row = lookup.worker(ctx.store, req.worker)
    if req.tokens_in < 0 or req.tokens_out < 0 or req.cost_usd < 0:
        raise ChkdError("bad_request", "Token counts and cost are increments and cannot be negative.")
    now = now_ms()
    fields: dict[str, Any] = {
        "activity_at": now,
        "tokens_in": min(TOTAL_CAP, (row["tokens_in"] or 0) + req.tokens_in),
        "tokens_out": min(TOTAL_CAP, (row["tokens_out"] or 0) + req.tokens_out),
        "cost_usd": min(float(TOTAL_CAP), (row["cost_usd"] or 0) + req.cost_usd),
    }
    if req.message is not None:
        fields["message"] = req.message[:500]
    usage.record(ctx, row, req.tokens_in, req.tokens_out, req.cost_usd)
    row = workerrecords.update(ctx, row, **fields)
    used = bool(req.tokens_in or req.tokens_out or req.cost_usd)
    beat = ev.WorkerHeartbeat(
        message=fields["message"] if req.message is not None else None,
        tokens_in=row["tokens_in"] if used else None,
        tokens_out=row["tokens_out"] if used else None,
        cost_usd=row["cost_usd"] if used else None,
    )
    ctx.emit(beat, repo=repos.repo_name(ctx.store, row["repo_id"]), worker_id=row["id"], task_id=row["task_id"])
    if req.waiting is not None:
        return _ack(ctx, workerrecords.enter_waiting(ctx, row, req.waiting))
    if row["status"] == "waiting":  # any other sign of progress: nobody is needed any more
        row = workerrecords.leave_waiting(ctx, row, "the agent reported activity")
    if row["status"] == "starting":
        row = workerrecords.set_worker_status(ctx, row, "working", reason="the agent reported")
        workerrecords.start_task(ctx, row)
    return _ack(ctx, row)


def state(ctx: Ctx, req: WorkerState) -> ActivityAck:
    return _ack(ctx, lookup.worker(ctx.store, req.worker))


def done(ctx: Ctx, req: Done) -> Deferred:
    row = lookup.worker(ctx.store, req.worker)
    wid = row["id"]
    err = workerrecords.transition_error(wid, row["status"], "done")
    if err:
        raise ChkdError("conflict", err)
    summary = " ".join(req.summary.split())[:300]
    message = f"chkd: {row['task_id'] or wid}: {summary or row['task_title'] or 'done'}"
    deferred = ctx.defer()

    def _committed(sha: str | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        fresh = lookup.load_worker(ctx.store, wid)
        if fresh is None:
            raise ChkdError("not_found", f"Worker {wid} was removed meanwhile.")
        if fresh["status"] not in workerrecords.ACTIONS["done"]:
            raise ChkdError(
                "conflict",
                f"Worker {wid} became {fresh['status']} meanwhile; the work was committed"
                f"{' as ' + sha[:10] if sha else ''}.",
            )
        fresh = workerrecords.set_worker_status(
            ctx, fresh, "done", reason="the agent said done", message=summary or None
        )
        workerrecords.finish_task(ctx, fresh, summary)
        ctx.finish(deferred, WorkerResult(worker=workerrecords.worker_info(ctx, fresh)))

    if row["worktree_path"]:
        ctx.submit(worktrees.commit_all, row["worktree_path"], message, then=_committed, reply_to=deferred)
    else:
        ctx.submit(lambda: None, then=_committed, reply_to=deferred)
    return deferred


def resume_agent(ctx: Ctx, req: ResumeAgent) -> Deferred:
    """`chkdctl resume-agent W [--prompt TEXT]`: the exited agent continues its session in its worktree."""
    row = lookup.worker(ctx.store, req.worker)
    prompt = (req.prompt or "").strip() or agent_resume.default_prompt(row)
    deferred = ctx.defer()
    agent_resume.start(ctx, row, prompt, "resumed by the user", deferred)
    return deferred


def setup(ctx: Ctx) -> None:
    """Finish what a killed daemon left half done: re-send signals rows ask for, commit the
    leftovers of agents whose exit was recorded but not yet finished, and start again the agents
    whose resume was recorded but never said hello. The first standby shims start off-loop."""
    shimstandby.setup(ctx)
    workerrecords.reassert_signals(ctx)
    workerrecords.resume_finishes(ctx)
    agent_resume.setup(ctx)


HANDLERS = {
    Spawn: spawn,
    WorkerList: list_,
    WorkerShow: show,
    Pause: pause,
    Resume: resume,
    Abort: abort,
    Remove: remove,
    AtticList: attic_list,
    AtticRestore: attic_restore,
    Heartbeat: heartbeat,
    WorkerState: state,
    Done: done,
    ResumeAgent: resume_agent,
}
