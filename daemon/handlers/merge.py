"""merge, approve, reject, merge.list, merge.show, diff, update, conflicts.

Every git step runs off-loop (daemon/mergeengine.py, daemon/radar.py); these handlers check
what can be checked from the store, then answer through a deferred reply.
"""

from __future__ import annotations

from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    Approve,
    ConflictReport,
    Conflicts,
    Diff,
    DiffResult,
    Merge,
    MergeList,
    MergeListResult,
    MergeResult,
    MergeShow,
    Reject,
    Update,
    WorkerResult,
)

from .. import agent_resume, lookup, mergeengine, mergequeue, radar, repos, workerrecords
from ..context import Ctx, Deferred
from ..mergequeue import ACTIVE, merge_info

#: `merges` without --all: every active merge plus this many of the latest finished ones.
RECENT = 20


def _active_merge(ctx: Ctx, worker_id: str) -> dict[str, Any] | None:
    marks = ",".join("?" * len(ACTIVE))
    return ctx.store.dict(
        f"SELECT * FROM merges WHERE worker_id=? AND status IN ({marks}) ORDER BY id DESC LIMIT 1",
        (worker_id, *sorted(ACTIVE)),
    )


def mergeable_error(worker: dict[str, Any], active: dict[str, Any] | None) -> str | None:
    """Why `worker` cannot be merged now (a sentence), or None."""
    wid, status = worker["id"], worker["status"]
    if active is not None:
        return f"Worker {wid} is already being merged (merge {active['id']} is {active['status'].replace('_', ' ')})."
    if status == "done":
        return None
    if status == "merged":
        return f"Worker {wid} is already merged."
    if status == "conflict":
        return (
            f"Worker {wid} conflicts with the target; run `chkdctl update {wid}`, resolve the conflict markers, "
            "commit, then merge again."
        )
    return f"Worker {wid} is {status}; only a done worker can be merged."


def merge(ctx: Ctx, req: Merge) -> Deferred:
    worker = lookup.worker(ctx.store, req.worker)
    repo = repos.of_worker(ctx.store, worker)
    err = mergeable_error(worker, _active_merge(ctx, worker["id"]))
    if err:
        raise ChkdError("conflict", err, "See `chkdctl workers` and `chkdctl merges`.")
    strategy = req.strategy or mergequeue.default_strategy(ctx, repo)
    deferred = ctx.defer()

    def _checked(dirty: list[str] | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        if dirty:
            raise ChkdError(
                "refused",
                f"Worker {worker['id']}'s worktree {worker['worktree_path']} has uncommitted "
                f"changes ({', '.join(dirty[:10])}); nothing was queued.",
                "Commit them in the worktree (or let the agent finish), then merge again.",
            )
        fresh = lookup.load_worker(ctx.store, worker["id"])
        if fresh is None:
            raise ChkdError("not_found", f"Worker {worker['id']} was removed meanwhile.")
        again = mergeable_error(fresh, _active_merge(ctx, fresh["id"]))
        if again:
            raise ChkdError("conflict", again)
        m = mergequeue.enqueue(ctx, fresh, repo, strategy, run_tests=not req.no_test)
        ctx.finish(deferred, MergeResult(merge=merge_info(ctx, m)))

    ctx.submit(mergeengine.worktree_dirty, worker["worktree_path"], then=_checked, reply_to=deferred)
    return deferred


def _awaiting(ctx: Ctx, ref: str) -> dict[str, Any]:
    worker = lookup.worker(ctx.store, ref)
    m = _active_merge(ctx, worker["id"])
    if m is None or m["status"] != "awaiting_review":
        what = f"its merge {m['id']} is {m['status'].replace('_', ' ')}" if m else "it has no merge in progress"
        raise ChkdError(
            "conflict",
            f"Worker {worker['id']} has no merge waiting for review ({what}).",
            f"Merge it with `chkdctl merge {worker['id']} --strategy review` first.",
        )
    return m


def approve(ctx: Ctx, req: Approve) -> MergeResult:
    return MergeResult(merge=merge_info(ctx, mergequeue.approve(ctx, _awaiting(ctx, req.worker))))


def reject(ctx: Ctx, req: Reject) -> MergeResult:
    return MergeResult(merge=merge_info(ctx, mergequeue.reject(ctx, _awaiting(ctx, req.worker), req.reason)))


def list_(ctx: Ctx, req: MergeList) -> MergeListResult:
    where, params = "", []
    if req.repo is not None:
        repo = repos.find(ctx.store, req.repo)
        if repo is not None:  # a path outside every repository lists them all
            where, params = "WHERE repo_id=?", [repo["id"]]
    rows = ctx.store.dicts(f"SELECT * FROM merges {where} ORDER BY id", tuple(params))
    if not req.all:
        finished = [m["id"] for m in rows if m["status"] not in ACTIVE][-RECENT:]
        keep = set(finished)
        rows = [m for m in rows if m["status"] in ACTIVE or m["id"] in keep]
    return MergeListResult(merges=[merge_info(ctx, m) for m in rows])


def show(ctx: Ctx, req: MergeShow) -> MergeResult:
    if req.id is not None:
        m = ctx.store.dict("SELECT * FROM merges WHERE id=?", (req.id,))
        if m is None:
            raise ChkdError("not_found", f"There is no merge {req.id}.", "See `chkdctl merges --all`.")
    elif req.worker:
        worker = lookup.worker(ctx.store, req.worker)
        m = ctx.store.dict("SELECT * FROM merges WHERE worker_id=? ORDER BY id DESC LIMIT 1", (worker["id"],))
        if m is None:
            raise ChkdError(
                "not_found",
                f"Worker {worker['id']} has never been merged.",
                f"Merge it with `chkdctl merge {worker['id']}`.",
            )
    else:
        raise ChkdError("bad_request", "Say which merge to show: a merge id or a worker.")
    return MergeResult(merge=merge_info(ctx, m))


def diff(ctx: Ctx, req: Diff) -> Deferred:
    worker = lookup.worker(ctx.store, req.worker)
    repo = repos.of_worker(ctx.store, worker)
    if not worker["branch_name"]:
        raise ChkdError("not_found", f"Worker {worker['id']} has no branch.")
    deferred = ctx.defer()

    def _done(res: tuple[str, str, str] | None, exc: BaseException | None) -> None:
        if exc is not None:
            if worker["status"] == "merged":
                raise ChkdError(
                    "not_found",
                    f"Worker {worker['id']} is merged and its branch is gone; its change is in the target's history.",
                )
            raise exc
        assert res is not None
        text, base, head = res
        ctx.finish(deferred, DiffResult(text=text, base=base, head=head))

    ctx.submit(
        mergeengine.diff,
        repo["path"],
        mergequeue.target_of(ctx, repo),
        f"refs/heads/{worker['branch_name']}",
        worker["worktree_path"],
        req.stat,
        then=_done,
        reply_to=deferred,
    )
    return deferred


def update(ctx: Ctx, req: Update) -> Deferred:
    worker = lookup.worker(ctx.store, req.worker)
    repo = repos.of_worker(ctx.store, worker)
    if worker["status"] in ("merging", "merged") or _active_merge(ctx, worker["id"]) is not None:
        raise ChkdError("conflict", f"Worker {worker['id']} is {worker['status']}; its branch cannot be updated now.")
    deferred = ctx.defer()
    target = mergequeue.target_of(ctx, repo)

    def _done(res: mergeengine.UpdateOutcome | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert res is not None
        fresh = lookup.load_worker(ctx.store, worker["id"]) or worker
        if res.merged:
            message = (
                f"already up to date with {target}" if res.up_to_date else f"took in {target}; ready to merge again"
            )
            if fresh["status"] == "conflict":
                fresh = mergequeue_set(ctx, fresh, "done", message)
            elif not res.up_to_date:
                fresh = workerrecords.update(ctx, fresh, message=message)
        else:
            files = ", ".join(res.conflict_files)
            message = (
                f"conflicts with {target} in {files}: resolve the markers, commit, "
                f"then `chkdctl done --worker {worker['id']}`"
            )
            fresh = mergequeue_set(ctx, fresh, "working", message)
            mergequeue.set_task(ctx, fresh, "in_progress", note=f"conflicts with {target} in {files}")
            fresh = lookup.load_worker(ctx.store, worker["id"]) or fresh
            agent_resume.maybe_start(
                ctx,
                fresh,
                agent_resume.conflict_prompt(target, res.conflict_files),
                f"conflicts with {target} in {files}",
            )
        ctx.emit(
            ev.WorkerUpdated(merged=res.merged, files=res.conflict_files, up_to_date=res.up_to_date),
            repo=repo["name"],
            worker_id=worker["id"],
            task_id=worker["task_id"],
        )
        ctx.finish(deferred, WorkerResult(worker=workerrecords.worker_info(ctx, fresh, repo["name"])))

    ctx.submit(mergeengine.update_branch, worker["worktree_path"], target, then=_done, reply_to=deferred)
    return deferred


def mergequeue_set(ctx: Ctx, worker: dict[str, Any], status: str, message: str) -> dict[str, Any]:
    mergequeue.set_worker(ctx, worker, status, message=message)
    return worker


def conflicts(ctx: Ctx, req: Conflicts) -> ConflictReport | Deferred:
    repo = repos.find(ctx.store, req.repo)
    if repo is None and req.repo is not None and "/" not in req.repo and not req.repo.startswith("."):
        repos.resolve(ctx.store, req.repo)  # an unknown name: the not_found sentence
    if repo is None:  # every repository, from the latest scans (stale ones refresh in the background)
        every = ctx.store.dicts(f"SELECT {repos.REPO_COLUMNS} FROM repos ORDER BY name")
        for r in every:
            if not radar.is_fresh(ctx, r):
                radar.refresh(ctx, r)
        return radar.report(ctx, [r["id"] for r in every])
    if radar.is_fresh(ctx, repo):
        return radar.report(ctx, [repo["id"]])
    deferred = ctx.defer()
    radar.refresh(ctx, repo, reply_to=deferred)
    return deferred


HANDLERS = {
    Merge: merge,
    Approve: approve,
    Reject: reject,
    MergeList: list_,
    MergeShow: show,
    Diff: diff,
    Update: update,
    Conflicts: conflicts,
}


def setup(ctx: Ctx) -> None:
    mergequeue.setup(ctx)
    radar.setup(ctx)
