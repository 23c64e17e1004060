"""Orphan scan for `chkdctl gc`: leftovers that no worker accounts for, and what is safe to remove.

Four kinds (GcItem.kind): a managed worktree with no worker (`worktree`), a worker whose
worktree is gone (`worker`), a `chkd/*` branch with no worker (`branch`), a dead worker
older than a week (`dead_worker`). Something is removable only when it holds no work that
is not in the target branch: no uncommitted changes, and the branch's content already in
the target (`git.content_in`: by tree, so squash merges count). Everything here runs git,
so it only runs off-loop; the handler re-checks ownership on the loop before `apply`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chkd.protocol.messages import LIVE_WORKER_STATUSES, GcItem

from . import git

WEEK_MS = 7 * 24 * 3600 * 1000
#: Worker states whose processes may run: never touched by gc.
LIVE = LIVE_WORKER_STATUSES | {"merging"}


@dataclass
class RepoSnapshot:
    """What the loop knows about one repository at scan time (plain data, safe off-loop)."""

    name: str
    path: str
    main_branch: str
    workers: list[dict[str, Any]]
    branch_prefix: str = "chkd/"
    worktree_pattern: str = "../{repo}-{task}"
    now_ms: int = 0


@dataclass
class Found:
    """One scan result: the public item plus what `apply` needs to act on it."""

    item: GcItem
    worktree: str | None = None
    branch: str | None = None
    branch_sha: str | None = None
    worker_id: str | None = None


# -- pure helpers ---------------------------------------------------------------------------
def pattern_regex(pattern: str, repo_path: str, names: Iterable[str]) -> re.Pattern[str]:
    """A regex matching absolute worktree paths made from `worktree_pattern` for this repo."""
    base = Path(repo_path)
    marker_repo, marker_task = "\x00REPO\x00", "\x00TASK\x00"
    raw = pattern.replace("{repo}", marker_repo).replace("{task}", marker_task)
    full = os.path.normpath(str(base / raw)) if not os.path.isabs(raw) else os.path.normpath(raw)
    rx = re.escape(full)
    rx = rx.replace(re.escape(marker_repo), "(?:" + "|".join(re.escape(n) for n in names if n) + ")")
    rx = rx.replace(re.escape(marker_task), r"[^/]+")
    return re.compile(rx + "$")


def parse_worktrees(porcelain: str) -> list[dict[str, str]]:
    """`git worktree list --porcelain` → [{'worktree': path, 'branch': 'refs/heads/x', ...}]."""
    entries: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in porcelain.splitlines():
        if not line.strip():
            if cur:
                entries.append(cur)
            cur = {}
            continue
        key, _, value = line.partition(" ")
        cur[key] = value
    if cur:
        entries.append(cur)
    return entries


def short_branch(ref: str | None) -> str | None:
    return ref[len("refs/heads/"):] if ref and ref.startswith("refs/heads/") else ref


def last_seen(worker: dict[str, Any]) -> int:
    return worker.get("completed_at") or worker.get("heartbeat_at") or worker.get("started_at") or 0


# -- off-loop: the scan --------------------------------------------------------------------------
def _unmerged_reason(branch: str, target: str, cwd: str) -> str | None:
    """None when `branch` holds nothing that is not in `target`, else why it is kept."""
    if git.content_in(f"refs/heads/{branch}", f"refs/heads/{target}", cwd):
        return None
    commits = git.unmerged_commits(f"refs/heads/{branch}", f"refs/heads/{target}", cwd, limit=100)
    n = len(commits)
    return f"branch {branch} holds {n if n < 100 else '100+'} commit(s) not in {target}; kept"


def _worktree_reason(path: str, branch: str | None, target: str, cwd: str) -> str | None:
    """None when the worktree at `path` can go without losing anything, else why it stays."""
    dirty = git.dirty_files(path)
    if dirty:
        return f"{len(dirty)} uncommitted change(s) in {path}; kept"
    return _unmerged_reason(branch, target, cwd) if branch else None


def scan(snap: RepoSnapshot) -> list[Found]:
    """Off-loop: every orphan in one repository, with whether it is removable."""
    cwd, target = snap.path, snap.main_branch
    found: list[Found] = []
    worktrees = parse_worktrees(git.out(["worktree", "list", "--porcelain"], cwd))
    by_path = {os.path.realpath(w["worktree_path"]): w for w in snap.workers if w.get("worktree_path")}
    by_branch = {w["branch_name"]: w for w in snap.workers if w.get("branch_name")}
    rx = pattern_regex(snap.worktree_pattern, cwd, {snap.name, Path(cwd).name})
    main_path = os.path.realpath(cwd)
    checked_out: set[str] = set()

    for wt in worktrees:
        path = os.path.realpath(wt["worktree"])
        branch = short_branch(wt.get("branch"))
        if branch:
            checked_out.add(branch)
        if path == main_path or path in by_path:
            continue
        managed = bool(rx.match(path)) or bool(branch and branch.startswith(snap.branch_prefix))
        if not managed or (branch and branch in by_branch):
            continue
        item = GcItem(kind="worktree", repo=snap.name, what=path, reason="no worker uses this worktree")
        if not os.path.isdir(path):
            item.reason = "registered with git but the directory is gone"
            why = _unmerged_reason(branch, target, cwd) if branch else None
            if why:  # pruning the registration loses nothing; the branch itself stays
                item.reason += f"; {why}"
                branch = None
        else:
            why = _worktree_reason(path, branch, target, cwd)
            if why:
                item.removable, item.reason = False, f"no worker uses it, but {why}"
        found.append(Found(item, worktree=path, branch=branch))

    refs = git.out(["for-each-ref", "--format=%(refname:short) %(objectname)",
                    f"refs/heads/{snap.branch_prefix}"], cwd)
    for line in refs.splitlines():
        branch, _, sha = line.rpartition(" ")
        if not branch or branch in by_branch or branch in checked_out:
            continue
        item = GcItem(kind="branch", repo=snap.name, what=branch, reason="no worker uses this branch")
        why = _unmerged_reason(branch, target, cwd)
        if why:
            item.removable, item.reason = False, f"no worker uses it, but {why}"
        else:
            item.reason = f"no worker uses it and its content is in {target}"
        found.append(Found(item, branch=branch, branch_sha=sha))

    for w in snap.workers:
        found.extend(_worker_items(snap, w))
    return found


def _worker_items(snap: RepoSnapshot, w: dict[str, Any]) -> list[Found]:
    cwd, target = snap.path, snap.main_branch
    path, branch = w.get("worktree_path"), w.get("branch_name")
    live = w["status"] in LIVE
    # a merged worker's worktree is gone by design (the merge removed it): that is history, not an orphan
    gone = bool(path) and not os.path.isdir(path) and w["status"] != "merged"
    old_dead = w["status"] == "dead" and snap.now_ms - last_seen(w) > WEEK_MS
    if not gone and not old_dead:
        return []
    branch_exists = bool(branch) and git.rev(f"refs/heads/{branch}", cwd) is not None
    if gone:
        item = GcItem(kind="worker", repo=snap.name, what=w["id"], reason=f"its worktree {path} is gone")
    else:
        days = (snap.now_ms - last_seen(w)) // (24 * 3600 * 1000)
        item = GcItem(kind="dead_worker", repo=snap.name, what=w["id"], reason=f"dead for {days} days")
    why: str | None = None
    if live:
        why = f"it is {w['status']}; abort it first"
    elif not gone and path:
        why = _worktree_reason(path, branch if branch_exists else None, target, cwd)
    elif branch_exists:
        why = _unmerged_reason(branch, target, cwd)
    if why:
        item.removable, item.reason = False, f"{item.reason}, but {why}"
    sha = git.rev(f"refs/heads/{branch}", cwd) if branch_exists else None
    return [Found(item, worktree=None if gone else path, branch=branch if branch_exists else None,
                  branch_sha=sha, worker_id=w["id"])]


# -- off-loop: acting -----------------------------------------------------------------------------
def apply(snap: RepoSnapshot, found: list[Found]) -> list[Found]:
    """Off-loop: remove every removable item, re-checking right before each step; marks `removed`."""
    cwd, target = snap.path, snap.main_branch
    pruned = False
    for f in found:
        if not f.item.removable:
            continue
        try:
            if f.worktree and os.path.isdir(f.worktree):
                why = _worktree_reason(f.worktree, f.branch, target, cwd)
                if why:
                    f.item.removable, f.item.reason = False, why
                    continue
                git.run(["worktree", "remove", f.worktree], cwd)  # refuses by itself if anything is dirty
            elif f.item.kind in ("worktree", "worker") and not pruned:
                git.run(["worktree", "prune"], cwd)
                pruned = True
            if f.branch:
                _delete_branch(f, target, cwd)
            f.item.removed = True
        except git.GitError as exc:
            f.item.removable, f.item.reason = False, f"could not remove: {exc.message}"
    return found


def _delete_branch(f: Found, target: str, cwd: str) -> None:
    """Delete `f.branch` only if it still holds nothing unmerged, by compare-and-swap on its sha."""
    sha = git.rev(f"refs/heads/{f.branch}", cwd)
    if sha is None:
        return
    if f.branch_sha and sha != f.branch_sha:
        raise git.GitError(f"branch {f.branch} moved during gc; kept")
    if _unmerged_reason(f.branch, target, cwd):  # type: ignore[arg-type]
        raise git.GitError(f"branch {f.branch} holds work not in {target}; kept")
    git.run(["update-ref", "-d", f"refs/heads/{f.branch}", sha], cwd)
