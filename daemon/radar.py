"""The conflict radar: which workers touch the same files, and would they conflict.

Per repository, for every pair of active workers: the files both have changed since
they left the target (committed and uncommitted), and whether their work would conflict
with each other or with the target (`merge-tree` on snapshots, no checkout). Uncommitted
work is snapshotted through a temporary index, so the agent's own index is never touched.

Recomputed off-loop, at most every `radar_interval_s` per repository, when the workers'
heartbeats or states changed; a new overlap raises an `overlap` event so someone can
act before the conflict happens.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import LIVE_WORKER_STATUSES, ConflictReport, Overlap

from . import git
from .context import Ctx, Deferred
from .store import now_ms

#: Workers whose work is not in the target yet: running, or finished but not merged.
RADAR_STATUSES: frozenset[str] = LIVE_WORKER_STATUSES | {"done", "conflict", "merging"}
EXT = "radar"


# -- blocking part (off-loop) ---------------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """One worker's work: a commit holding it (uncommitted changes included) and the files it changed."""

    worker_id: str
    commit: str
    files: frozenset[str]


@dataclass(frozen=True)
class WorkerRef:
    id: str
    worktree: str | None
    branch: str | None


def snapshot(worktree: str) -> str | None:
    """A commit of the worktree as it is now (HEAD when clean), made with a temporary index."""
    head = git.rev("HEAD", worktree)
    if head is None or not git.dirty_files(worktree):
        return head
    index = git.out(["rev-parse", "--path-format=absolute", "--git-path", "index"], worktree)
    tmpdir = tempfile.mkdtemp(prefix="chkd-radar-")
    tmp_index = os.path.join(tmpdir, "index")
    try:
        if os.path.exists(index):
            shutil.copy2(index, tmp_index)  # stat data and mtime kept: only changed (or racy) files are hashed
        env = {"GIT_INDEX_FILE": tmp_index}
        if not os.path.exists(index):
            git.run(["read-tree", head], worktree, env=env)
        git.run(["add", "-A", "--", "."], worktree, env=env)
        tree = git.out(["write-tree"], worktree, env=env)
        return git.out(
            ["commit-tree", tree, "-p", head, "-m", "chkd radar snapshot"], worktree, env=git.identity_env(worktree)
        )
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def changed_files(base: str, commit: str, cwd: str) -> frozenset[str]:
    text = git.run(["diff", "--name-only", "-z", "--no-renames", base, commit, "--"], cwd).stdout
    return frozenset(p for p in text.split("\0") if p)


def side_of(repo: str, target_sha: str, w: WorkerRef) -> Side | None:
    """The worker's side, or None when it has nothing (yet) or its checkout is gone."""
    if w.worktree and os.path.isdir(w.worktree):
        commit = snapshot(w.worktree)
    elif w.branch:
        commit = git.rev(f"refs/heads/{w.branch}", repo)
    else:
        commit = None
    if commit is None:
        return None
    base = git.run(["merge-base", target_sha, commit], repo, check=False).stdout.strip()
    if not base:
        return None
    files = changed_files(base, commit, repo)
    return Side(w.id, commit, files) if files else None


def scan(repo_name: str, repo_path: str, target: str, workers: list[WorkerRef]) -> list[Overlap]:
    """Every overlap in one repository (blocking: runs off-loop)."""
    target_sha = git.rev(f"refs/heads/{target}", repo_path)
    if target_sha is None:
        return []
    sides = []
    for w in workers:
        try:
            side = side_of(repo_path, target_sha, w)
        except ChkdError:
            if w.worktree and os.path.isdir(w.worktree):
                # git failed on a worktree that is still there: this scan cannot see that worker, so
                # it must not replace the last complete one (its overlaps would silently vanish)
                raise
            continue  # a worktree vanishing mid-scan is not an error of the radar
        if side is not None:
            sides.append(side)
    overlaps: list[Overlap] = []
    for a, b in pairs_sharing_files(sides):
        shared = sorted(a.files & b.files)
        _tree, conflicts = git.merge_tree(a.commit, b.commit, repo_path)
        overlaps.append(
            Overlap(
                repo=repo_name,
                a=a.worker_id,
                b=b.worker_id,
                files=shared,
                conflict=bool(conflicts),
                conflict_files=conflicts,
            )
        )
    for s in sides:
        base = git.out(["merge-base", target_sha, s.commit], repo_path)
        shared = sorted(s.files & changed_files(base, target_sha, repo_path)) if base != target_sha else []
        if shared:
            _tree, conflicts = git.merge_tree(target_sha, s.commit, repo_path)
            overlaps.append(
                Overlap(
                    repo=repo_name,
                    a=s.worker_id,
                    b=None,
                    files=shared,
                    conflict=bool(conflicts),
                    conflict_files=conflicts,
                )
            )
    return overlaps


# -- pure logic ----------------------------------------------------------------------------------------
def pairs_sharing_files(sides: list[Side]) -> list[tuple[Side, Side]]:
    """Pairs of workers (ordered by id) that changed at least one common file."""
    ordered = sorted(sides, key=lambda s: _id_key(s.worker_id))
    return [(a, b) for a, b in combinations(ordered, 2) if a.files & b.files]


def _id_key(worker_id: str) -> tuple[int, str]:
    digits = "".join(ch for ch in worker_id if ch.isdigit())
    return (int(digits) if digits else 0, worker_id)


def overlap_key(o: Overlap) -> tuple[str, str | None]:
    return (o.a, o.b)


def news(previous: dict[tuple[str, str | None], Overlap], current: list[Overlap]) -> list[Overlap]:
    """Overlaps worth an event: a new pair, a new shared file, or a newly predicted conflict."""
    out = []
    for o in current:
        old = previous.get(overlap_key(o))
        if old is None or not set(o.files) <= set(old.files) or (o.conflict and not old.conflict):
            out.append(o)
    return out


# -- on the loop -----------------------------------------------------------------------------------------
@dataclass
class RepoRadar:
    overlaps: list[Overlap] = field(default_factory=list)
    computed_at: int = 0  # ms
    signature: tuple = ()
    running: bool = False
    waiting: list[Deferred] = field(default_factory=list)


def _state(ctx: Ctx) -> dict[int, RepoRadar]:
    return ctx.ext.setdefault(EXT, {})


def setup(ctx: Ctx) -> None:
    interval = ctx.config.radar_interval_s
    ctx.timers.every(interval, lambda: tick(ctx), "radar", first_in=interval)


def _workers(ctx: Ctx, repo_id: int) -> list[dict[str, Any]]:
    marks = ",".join("?" * len(RADAR_STATUSES))
    return ctx.store.dicts(
        f"SELECT id, status, worktree_path, branch_name, heartbeat_at, activity_at FROM workers "
        f"WHERE repo_id=? AND status IN ({marks}) ORDER BY seq",
        (repo_id, *sorted(RADAR_STATUSES)),
    )


def _signature(ctx: Ctx, repo: dict[str, Any], workers: list[dict[str, Any]]) -> tuple:
    last_merge = ctx.store.scalar("SELECT max(finished_at) FROM merges WHERE repo_id=?", (repo["id"],))
    return (last_merge, *((w["id"], w["status"], w["heartbeat_at"], w["activity_at"]) for w in workers))


def tick(ctx: Ctx) -> None:
    """Recompute every repository whose workers sent heartbeats or changed since the last scan."""
    for repo in ctx.store.dicts("SELECT id, name, path, main_branch FROM repos"):
        workers = _workers(ctx, repo["id"])
        st = _state(ctx).setdefault(repo["id"], RepoRadar())
        if not workers:
            if st.overlaps:
                st.overlaps, st.computed_at = [], now_ms()
            continue
        if st.running or _signature(ctx, repo, workers) == st.signature:
            continue
        refresh(ctx, repo)


def refresh(ctx: Ctx, repo: dict[str, Any], reply_to: Deferred | None = None) -> None:
    """Start a scan of `repo` off-loop (one at a time per repository); answer `reply_to` when done."""
    st = _state(ctx).setdefault(repo["id"], RepoRadar())
    if reply_to is not None:
        st.waiting.append(reply_to)
    if st.running:
        return
    workers = _workers(ctx, repo["id"])
    st.running = True
    st.signature = _signature(ctx, repo, workers)
    refs = [WorkerRef(w["id"], w["worktree_path"], w["branch_name"]) for w in workers]
    from .mergequeue import target_of

    ctx.submit(
        scan,
        repo["name"],
        repo["path"],
        target_of(ctx, repo),
        refs,
        then=lambda res, exc: _scanned(ctx, repo, res, exc),
    )


def _scanned(ctx: Ctx, repo: dict[str, Any], result: list[Overlap] | None, exc: BaseException | None) -> None:
    st = _state(ctx)[repo["id"]]
    st.running = False
    waiting, st.waiting = st.waiting, []
    if exc is not None:
        st.signature = ()  # try again next tick
        ctx.log.warning("radar_failed", repo=repo["name"], error=str(exc))
        for d in waiting:
            ctx.finish(
                d,
                exc
                if isinstance(exc, ChkdError)
                else ChkdError("internal", f"The conflict radar failed for '{repo['name']}'; see the daemon log."),
            )
        return
    assert result is not None
    previous = {overlap_key(o): o for o in st.overlaps}
    for o in news(previous, result):
        ctx.emit(
            ev.OverlapFound(a=o.a, b=o.b, files=o.files, conflict=o.conflict, conflict_files=o.conflict_files),
            repo=repo["name"],
            worker_id=o.a,
        )
    st.overlaps, st.computed_at = result, now_ms()
    for d in waiting:
        ctx.finish(d, report(ctx, [repo["id"]]))


def report(ctx: Ctx, repo_ids: list[int]) -> ConflictReport:
    states = [_state(ctx).get(rid) for rid in repo_ids]
    overlaps = [o for s in states if s for o in s.overlaps]
    computed = min((s.computed_at for s in states if s), default=0)
    return ConflictReport(overlaps=overlaps, computed_at=computed)


def is_fresh(ctx: Ctx, repo: dict[str, Any]) -> bool:
    """A cached scan can answer: made recently, or nothing changed since."""
    st = _state(ctx).get(repo["id"])
    if st is None or not st.computed_at or st.running:
        return False
    if now_ms() - st.computed_at < ctx.config.radar_interval_s * 1000:
        return True
    return _signature(ctx, repo, _workers(ctx, repo["id"])) == st.signature
