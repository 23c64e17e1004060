"""spawn, workers, worker show, pause/resume/abort, rm, attic, and the agent's heartbeat/worker-status/done.

Spawn validates and records everything synchronously (repo, max_workers, agent, task
claim, the worker row `starting`), then does the slow part off-loop in two jobs: the
first picks free worktree and branch names, which the loop records on the row before
anything exists on disk; the second starts the shim (its Python start-up overlaps with
the checkout), runs `git worktree add` at the recorded names, and tells the shim `go`.
A kill -9 anywhere in between leaves a row that names everything the spawn may have
made, so start-up reconciliation can finish or undo it. The reply waits for the launch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from chkd.protocol import events as ev
from chkd.protocol import templates
from chkd.protocol.errors import ChkdError
from chkd.protocol.launch import module_argv
from chkd.protocol.messages import (
    Abort, ActivityAck, AtticEntry, AtticList, AtticListResult, AtticRestore, Done,
    Heartbeat, Ok, Pause, Remove, Resume, ResumeAgent, Spawn, WorkerList, WorkerListResult, WorkerResult,
    WorkerShow, WorkerState, encode_go,
)

from .. import agent_launch, agent_profiles, agent_resume, failpoints, lookup, procs, tasks, worktrees
from .. import workers as W
from ..context import Ctx, Deferred
from ..store import now_ms
from . import repos as repos_area


# -- spawn -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Launched:
    checkout: worktrees.Checkout
    argv: list[str]


def launch(spec: agent_launch.LaunchSpec) -> Launched:
    """Off-loop: start the shim (waiting), create the worktree, then let the shim start the agent."""
    shim = procs.start_shim(spec.shim_argv, Path(spec.log_path), spec.shim_env)
    try:
        checkout = worktrees.create_checkout(spec.repo_path, spec.path, spec.branch, spec.base_sha, spec.owner)
    except BaseException:
        procs.release_shim(shim, "stop")
        raise
    failpoints.hit("spawn.worktree_created")
    try:
        argv = agent_launch.agent_argv(spec, checkout.path, checkout.branch)
    except BaseException:
        procs.release_shim(shim, "stop")
        raise
    procs.release_shim(shim, encode_go(agent_launch.go_message(spec, argv, checkout.path)))
    failpoints.hit("spawn.released")
    return Launched(checkout, argv)


def _agent(ctx: Ctx, req: Spawn, repo: dict[str, Any]) -> agent_profiles.AgentPlan:
    """The agent run the spawn asks for; every refusal (unknown profile, program not installed, a
    permission mode Claude refuses) is a sentence here, before anything exists."""
    if req.cmd is not None:  # typed by hand: the placeholders are filled, every other brace is literal (JSON...)
        template = [templates.literal_braces(arg, templates.AGENT_PLACEHOLDERS) for arg in req.cmd]
        return agent_profiles.AgentPlan(name="cmd", template=template, env={})
    name = req.agent or ctx.config.for_repo(repo["name"]).default_agent or ctx.config.default_agent
    return agent_profiles.plan(name, agent_profiles.profile_named(ctx.config, name))


def _take_task(ctx: Ctx, req: Spawn, repo: dict[str, Any], wid: str) -> dict[str, Any]:
    if req.next:
        task = tasks.claim_next(ctx, repo, wid, req.tag)
        if task is None:
            what = f" tagged '{req.tag}'" if req.tag else ""
            raise ChkdError("nothing_ready", f"No task{what} in '{repo['name']}' is ready to be claimed.",
                            "See `chkdctl task list`, or add one with `chkdctl task add`.")
        return task
    assert req.task_id is not None
    task = tasks.find_task(ctx, repo["id"], req.task_id)
    if task is None:
        if not req.title:
            raise ChkdError("not_found", f"The repository '{repo['name']}' has no task '{req.task_id}'.",
                            "Pass --title TEXT to create it on the spot, or see `chkdctl task list`.")
        task = tasks.create_task(ctx, repo, title=req.title, id=req.task_id, description=req.description)
    return tasks.claim_task(ctx, task, wid)


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
    row = W.set_worker_status(ctx, row, "error", reason="could not start", last_error=msg)
    if counts:
        W.fail_task_attempt(ctx, row, f"worker {row['id']} could not start: {msg}")
    else:
        W.release_task(ctx, row, f"worker {row['id']} could not start: {msg}")
    if row["worktree_path"] or row["branch_name"]:
        wid = row["id"]

        def _discarded(gone: bool | None, exc: BaseException | None) -> None:
            if exc is None and gone:
                ctx.store.x("UPDATE workers SET worktree_path=NULL, branch_name=NULL WHERE id=?", (wid,))

        ctx.submit(worktrees.discard_unused, W.repo_path(ctx, row["repo_id"]), row["worktree_path"],
                   row["branch_name"], row["base_sha"], then=_discarded)
    return row


def _start(ctx: Ctx, req: Spawn, repo: dict[str, Any], deferred: Deferred) -> None:
    """On the loop: record the worker (`starting`) and claim its task; then off-loop pick free names
    (`_planned` records them before anything exists), then create the worktree and start the agent."""
    cap = ctx.config.max_workers_for(repo["name"])
    live = W.live_count(ctx, repo["id"])
    if live >= cap:
        raise ChkdError("busy", f"{live} workers already run in '{repo['name']}', the most max_workers allows ({cap}).",
                        f"Wait for one to finish, or raise the cap: max_workers = N in config.toml, or "
                        f"[repos.\"{repo['name']}\"] max_workers = N for this repository (then restart the daemon).")
    plan = _agent(ctx, req, repo)
    agent, template, agent_env = plan.name, plan.template, plan.env
    seq = ctx.store.meta_next("worker")
    wid = f"w{seq}"
    now = now_ms()
    ctx.store.x("INSERT INTO workers(id, seq, repo_id, status, agent, cmd, started_at) VALUES(?,?,?,?,?,?,?)",
                (wid, seq, repo["id"], "starting", agent, json.dumps(template), now))
    task = _take_task(ctx, req, repo, wid)
    ctx.store.x("UPDATE workers SET task_pk=?, task_id=?, task_title=? WHERE id=?",
                (task["pk"], task["id"], task["title"], wid))
    ctx.emit(ev.WorkerSpawned(agent=agent, title=task["title"]), repo=repo["name"], worker_id=wid,
             task_id=task["id"])
    home = ctx.paths.home
    env_home = {"CHKD_HOME": str(home)} if home is not None else {}
    values = {"worker_id": wid, "task_id": task["id"], "title": task["title"], "description": task["description"]}

    def _planned(checkout: worktrees.CheckoutPlan | None, exc: BaseException | None) -> None:
        row = W.load(ctx, wid)
        if row is None:
            ctx.finish(deferred, ChkdError("not_found", f"Worker {wid} was removed while it started."))
            return
        path = _free(ctx, repo["id"], "worktree_path", checkout.paths) if checkout else None
        branch = _free(ctx, repo["id"], "branch_name", checkout.branches) if checkout else None
        if exc is not None or checkout is None or path is None or branch is None:
            _failed(row, exc or ChkdError("conflict", "every free worktree path or branch name is taken by "
                                                      "other workers"))
            return
        W.update(ctx, row, worktree_path=path, branch_name=branch, base_sha=checkout.base_sha)
        ctx.after_commit(lambda: failpoints.hit("spawn.planned"))
        spec = agent_launch.LaunchSpec(
            worker_id=wid, repo_path=repo["path"], path=path, branch=branch, base_sha=checkout.base_sha,
            template=template, values=values, shim_argv=module_argv("chkd.client.shim", "--worker", wid),
            shim_env={**os.environ, **env_home},
            agent_env={**agent_env, **env_home, "CHKD_WORKER_ID": wid, "CHKD_TASK_ID": task["id"]},
            log_path=str(ctx.paths.worker_log(wid)), heartbeat_s=ctx.config.heartbeat_s,
            abort_grace_s=ctx.config.abort_grace_s,
            owner={"home": str(ctx.paths.state), "worker": wid, "purpose": "worker"},
            agent=plan, claude_dir=str(agent_profiles.claude_dir(ctx.paths, wid)) if plan.claude else None,
        )
        ctx.submit(launch, spec, then=_launched, reply_to=deferred)

    def _failed(row: dict[str, Any], exc: BaseException) -> None:
        msg = exc.message if isinstance(exc, ChkdError) else f"{type(exc).__name__}: {exc}"
        ctx.log.warning("spawn_failed", worker=wid, error=msg)
        spawn_failed(ctx, row, msg)
        code = exc.code if isinstance(exc, ChkdError) else "internal"
        ctx.finish(deferred, ChkdError(code, f"Worker {wid} could not start: {msg.rstrip('.')}."))

    def _launched(result: Launched | None, exc: BaseException | None) -> None:
        row = W.load(ctx, wid)
        if row is None:
            ctx.finish(deferred, ChkdError("not_found", f"Worker {wid} was removed while it started."))
            return
        if exc is not None or result is None:
            _failed(row, exc or ChkdError("internal", "the launch returned nothing"))
            return
        row = W.update(ctx, row, cmd=json.dumps(result.argv))
        ctx.emit(ev.WorkerStarted(worktree=result.checkout.path, branch=result.checkout.branch,
                                  base=result.checkout.base_sha),
                 repo=repo["name"], worker_id=wid, task_id=task["id"])
        ctx.finish(deferred, WorkerResult(worker=W.worker_info(ctx, row, repo["name"])))

    main_branch = ctx.config.for_repo(repo["name"]).main_branch or repo["main_branch"]
    ctx.submit(worktrees.plan_checkout, repo["path"], repo["name"], task["id"], main_branch,
               ctx.config.worktree_pattern, ctx.config.branch_prefix, then=_planned, reply_to=deferred)


def spawn(ctx: Ctx, req: Spawn) -> Deferred:
    if req.next and req.task_id:
        raise ChkdError("bad_request", "Give a task id or --next, not both.")
    if not req.next and not req.task_id:
        raise ChkdError("bad_request", "Say which task to work on: `spawn TASK_ID`, or `spawn --next`.")
    if req.cmd is not None and req.agent:
        raise ChkdError("bad_request", "Give --agent or --cmd, not both.")
    if req.cmd is not None and not [a for a in req.cmd if a.strip()]:
        raise ChkdError("bad_request", "The --cmd command is empty.")
    # Like repos.ensure_repo, but the reply comes from the launch job, not from the registration.
    deferred = ctx.defer()
    repo = lookup.find_repo(ctx.store, req.repo)
    if repo is not None:
        _start(ctx, req, repo, deferred)
        return deferred
    if req.repo is None or lookup.existing_path(req.repo) is None:
        lookup.repo(ctx.store, req.repo)  # raises the right not_found sentence

    def _registered(facts: repos_area.RepoFacts | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert facts is not None
        row, _ = repos_area.register(ctx, facts, None, None)
        _start(ctx, req, row, deferred)

    ctx.submit(repos_area.inspect_repo, req.repo, then=_registered, reply_to=deferred)
    return deferred


# -- listing -------------------------------------------------------------------------------------
def list_(ctx: Ctx, req: WorkerList) -> WorkerListResult:
    where, params = [], []
    if req.repo is not None:
        where.append("w.repo_id=?")
        params.append(lookup.repo(ctx.store, req.repo)["id"])
    if not req.all:
        where.append("w.status != 'merged'")
    sql = "SELECT w.*, r.name AS repo_name FROM workers w JOIN repos r ON r.id = w.repo_id"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = ctx.store.dicts(sql + " ORDER BY w.seq", tuple(params))
    return WorkerListResult(workers=[W.worker_info(ctx, r, r["repo_name"]) for r in rows])


def show(ctx: Ctx, req: WorkerShow) -> WorkerResult:
    return WorkerResult(worker=W.worker_info(ctx, lookup.worker(ctx.store, req.worker)))


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
        params.append(lookup.repo(ctx.store, repo)["id"])
    return ctx.store.dicts(sql + " ORDER BY seq", tuple(params))


def _infos(ctx: Ctx, rows: list[dict]) -> WorkerListResult:
    return WorkerListResult(workers=[W.worker_info(ctx, r) for r in rows])


def pause(ctx: Ctx, req: Pause) -> WorkerListResult:
    rows = _targets(ctx, req.worker, req.all, req.repo, W.ACTIONS["pause"])
    return _infos(ctx, [W.pause_worker(ctx, r) for r in rows])


def resume(ctx: Ctx, req: Resume) -> WorkerListResult:
    rows = _targets(ctx, req.worker, req.all, req.repo, W.ACTIONS["resume"])
    return _infos(ctx, [W.resume_worker(ctx, r) for r in rows])


def abort(ctx: Ctx, req: Abort) -> WorkerListResult:
    rows = _targets(ctx, req.worker, req.all, req.repo, W.ACTIONS["abort"])
    return _infos(ctx, [W.abort_worker(ctx, r, "aborted by the user", cancel_task=req.cancel_task) for r in rows])


# -- rm and the attic -------------------------------------------------------------------------------
def remove(ctx: Ctx, req: Remove) -> Deferred:
    row = lookup.worker(ctx.store, req.worker)
    wid = row["id"]
    err = W.transition_error(wid, row["status"], "rm")
    if err:
        raise ChkdError("conflict", err)
    repo = ctx.store.dict(f"SELECT {lookup.REPO_COLUMNS} FROM repos WHERE id=?", (row["repo_id"],))
    assert repo is not None
    deferred = ctx.defer()

    def _removed(result: worktrees.Removal | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert result is not None
        fresh = ctx.store.dict("SELECT * FROM workers WHERE id=?", (wid,))
        if fresh is not None:
            W.release_task(ctx, fresh, f"worker {wid} was removed")
            ctx.store.x("DELETE FROM workers WHERE id=?", (wid,))
        agent_profiles.forget_claude_files(ctx, wid)
        ctx.emit(ev.WorkerRemoved(worktree=row["worktree_path"], branch=row["branch_name"],
                                  attic_ref=result.attic_ref, attic_sha=result.attic_sha,
                                  snapshot=result.snapshot_sha, force=req.force),
                 repo=repo["name"], worker_id=wid, task_id=row["task_id"])
        parts = [f"Removed worker {wid}"]
        if result.worktree_removed:
            parts.append(f"its worktree {row['worktree_path']}")
        if result.branch_deleted:
            parts.append(f"its branch {row['branch_name']}")
        text = parts[0] + (" and " + " and ".join(parts[1:]) if len(parts) > 1 else "") + "."
        if result.attic_ref:
            text += (f" The work is kept as {result.attic_ref} ({result.attic_sha[:10] if result.attic_sha else ''});"
                     f" `chkdctl attic restore {wid}` brings it back.")
        for note in result.notes:
            text += f" Note: {note}"
        ctx.finish(deferred, Ok(message=text))

    snapshot = f"chkd: {row['task_id'] or wid}: snapshot of uncommitted work before removal ({wid})"
    ctx.submit(worktrees.remove_checkout, repo["path"], row["worktree_path"], row["branch_name"], force=req.force,
               target=repo["main_branch"], attic=worktrees.attic_ref(wid), snapshot_message=snapshot,
               who=f"Worker {wid}", then=_removed, reply_to=deferred)
    return deferred


def _attic_repos(ctx: Ctx, ref: str | None) -> list[dict[str, Any]]:
    if ref is not None:
        return [lookup.repo(ctx.store, ref)]
    return ctx.store.dicts(f"SELECT {lookup.REPO_COLUMNS} FROM repos ORDER BY name")


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
        entries = [AtticEntry(ref=i.ref, sha=i.sha, worker_id=i.ref.rsplit("/", 1)[-1], at=_removed_at(ctx, i))
                   for _path, i in items or []]
        ctx.finish(deferred, AtticListResult(entries=entries))

    ctx.submit(_list_attics, repos, then=_listed, reply_to=deferred)
    return deferred


def _removal_event(ctx: Ctx, attic_ref: str) -> dict[str, Any] | None:
    wid = attic_ref.rsplit("/", 1)[-1].split("-", 1)[0]
    for at, blob in ctx.store.all("SELECT at, data FROM events WHERE kind='worker.removed' AND worker_id=? "
                                  "ORDER BY seq DESC LIMIT 5", (wid,)):
        data = msgspec.msgpack.decode(blob) if blob else {}
        if data.get("attic_ref") == attic_ref:
            return {**data, "at": at}
    return None


def _removed_at(ctx: Ctx, item: worktrees.AtticItem) -> int:
    event = _removal_event(ctx, item.ref)
    return int(event["at"]) if event else item.at


def attic_restore(ctx: Ctx, req: AtticRestore) -> Deferred:
    """Only chkd's own attic entries (refused on the loop otherwise); the git checks run off-loop."""
    repo = lookup.repo(ctx.store, req.repo)
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

    ctx.submit(worktrees.attic_restore, repo["path"], full, wanted, explicit=req.branch is not None,
               then=_restored, reply_to=deferred)
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
        "activity_at": now, "tokens_in": min(TOTAL_CAP, (row["tokens_in"] or 0) + req.tokens_in),
        "tokens_out": min(TOTAL_CAP, (row["tokens_out"] or 0) + req.tokens_out),
        "cost_usd": min(float(TOTAL_CAP), (row["cost_usd"] or 0) + req.cost_usd),
    }
    if req.message is not None:
        fields["message"] = req.message[:500]
    row = W.update(ctx, row, **fields)
    used = bool(req.tokens_in or req.tokens_out or req.cost_usd)
    beat = ev.WorkerHeartbeat(
        message=fields["message"] if req.message is not None else None,
        tokens_in=row["tokens_in"] if used else None, tokens_out=row["tokens_out"] if used else None,
        cost_usd=row["cost_usd"] if used else None,
    )
    ctx.emit(beat, repo=W.repo_name(ctx, row["repo_id"]), worker_id=row["id"], task_id=row["task_id"])
    if row["status"] == "starting":
        row = W.set_worker_status(ctx, row, "working", reason="the agent reported")
        W.start_task(ctx, row)
    return _ack(ctx, row)


def state(ctx: Ctx, req: WorkerState) -> ActivityAck:
    return _ack(ctx, lookup.worker(ctx.store, req.worker))


def done(ctx: Ctx, req: Done) -> Deferred:
    row = lookup.worker(ctx.store, req.worker)
    wid = row["id"]
    err = W.transition_error(wid, row["status"], "done")
    if err:
        raise ChkdError("conflict", err)
    summary = " ".join(req.summary.split())[:300]
    message = f"chkd: {row['task_id'] or wid}: {summary or row['task_title'] or 'done'}"
    deferred = ctx.defer()

    def _committed(sha: str | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        fresh = ctx.store.dict("SELECT * FROM workers WHERE id=?", (wid,))
        if fresh is None:
            raise ChkdError("not_found", f"Worker {wid} was removed meanwhile.")
        if fresh["status"] not in W.ACTIONS["done"]:
            raise ChkdError("conflict", f"Worker {wid} became {fresh['status']} meanwhile; the work was committed"
                                        f"{' as ' + sha[:10] if sha else ''}.")
        fresh = W.set_worker_status(ctx, fresh, "done", reason="the agent said done", message=summary or None)
        W.finish_task(ctx, fresh, summary)
        ctx.finish(deferred, WorkerResult(worker=W.worker_info(ctx, fresh)))

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
    whose resume was recorded but never said hello."""
    W.reassert_signals(ctx)
    W.resume_finishes(ctx)
    agent_resume.setup(ctx)


HANDLERS = {
    Spawn: spawn, WorkerList: list_, WorkerShow: show, Pause: pause, Resume: resume, Abort: abort,
    Remove: remove, AtticList: attic_list, AtticRestore: attic_restore, Heartbeat: heartbeat,
    WorkerState: state, Done: done, ResumeAgent: resume_agent,
}
