"""Leftover scan for `chkdctl gc`: what chkd made and no longer needs, and what is safe to remove.

gc only ever removes what chkd itself created and recorded: the worktree and branch a worker
row records, or a worktree carrying this home's owner marker (`worktrees.mark_worktree`).
Whatever merely looks like chkd's — a directory matching `worktree_pattern`, a branch under
`branch_prefix` — proves nothing: it is listed as "not ours" and kept.

Kinds (GcItem.kind): `worker` — a finished worker whose worktree was deleted by hand, is an
empty directory git does not know (a spawn killed before `git worktree add`), or, once merged,
whose worktree or branch the merge's cleanup left behind; `dead_worker` — a dead worker older
than a week; `worktree` — a marked worktree no worker row records (a spawn killed before its
record), or a "not ours" one; `branch` — a branch a finished worker records without a worktree,
or a "not ours" one. Live and merging workers are never touched. Something is removable only
when it holds no work that is not in the target branch: no uncommitted changes, and the
branch's content already in the target (`git.content_in`: by tree, so squash merges count).
Everything here runs git, so it only runs off-loop; the handler re-checks on the loop before
`apply`, and `apply` re-checks each item right before removing it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chkd.protocol.messages import LIVE_WORKER_STATUSES, GcItem, GcKind

from . import git
from . import worktrees as wt

WEEK_MS = 7 * 24 * 3600 * 1000
NOT_OURS = "not created by chkd (no record or marker); kept"
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
    home: str = ""  # this chkd instance (its state directory), as written in worktree markers


@dataclass
class Found:
    """One scan result: the public item plus what `apply` needs to act on it."""

    item: GcItem
    worktree: str | None = None  # a worktree to remove (or, its directory gone, its registration)
    branch: str | None = None
    branch_sha: str | None = None
    worker_id: str | None = None  # the worker row this comes from (re-checked on the loop)
    drop_row: bool = False  # delete that worker row once everything is removed
    empty_dir: bool = False  # `worktree` is an empty directory git does not know: os.rmdir only
    marker_worker: str | None = None  # from this home's marker, not a row: the worker it names


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
    return ref[len("refs/heads/") :] if ref and ref.startswith("refs/heads/") else ref


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
    dirty = wt.dirty(path)
    if dirty:
        return f"{len(dirty)} uncommitted change(s) in {path}; kept"
    return _unmerged_reason(branch, target, cwd) if branch else None


@dataclass
class _Facts:
    """What git and the disk say, gathered once per scan."""

    registered: dict[str, str | None]  # real path → checked-out branch, every worktree git knows
    markers: dict[str, dict[str, Any]]  # real path → owner marker
    by_path: set[str]  # real paths worker rows record
    by_branch: set[str]  # branches worker rows record


def scan(snap: RepoSnapshot) -> list[Found]:
    """Off-loop: every leftover in one repository, with whether it is removable."""
    listed = parse_worktrees(git.out(["worktree", "list", "--porcelain"], snap.path))
    facts = _Facts(
        registered={os.path.realpath(w["worktree"]): short_branch(w.get("branch")) for w in listed},
        markers=wt.worktree_markers(snap.path),
        by_path={os.path.realpath(w["worktree_path"]) for w in snap.workers if w.get("worktree_path")},
        by_branch={w["branch_name"] for w in snap.workers if w.get("branch_name")},
    )
    found = _worktree_items(snap, facts) + _branch_items(snap, facts)
    for w in snap.workers:
        found.extend(_worker_items(snap, facts, w))
    return found


def _not_ours(kind: GcKind, snap: RepoSnapshot, what: str, marker: dict[str, Any] | None = None) -> Found:
    reason = NOT_OURS
    if marker is not None and marker.get("home") != snap.home:
        reason = f"made by another chkd ({marker.get('home')}); kept"
    return Found(GcItem(kind=kind, repo=snap.name, what=what, reason=reason, removable=False))


def _worktree_items(snap: RepoSnapshot, facts: _Facts) -> list[Found]:
    """Worktrees no worker row records: this home's marked ones, and "not ours" look-alikes."""
    rx = pattern_regex(snap.worktree_pattern, snap.path, {snap.name, Path(snap.path).name})
    live = {w["id"] for w in snap.workers if w["status"] in LIVE}
    main_path = os.path.realpath(snap.path)
    found: list[Found] = []
    for path, branch in facts.registered.items():
        if path == main_path or path in facts.by_path:
            continue
        marker = facts.markers.get(path)
        if wt.marked_by(marker, snap.home, "gate") or wt.marked_by(marker, snap.home, "gatetree"):
            continue  # a test gate's: prune_gates removes those, never while a merge runs
        if wt.marked_by(marker, snap.home, "pool"):
            continue  # the warm pool's: recorded in the pool table, reconciled at start-up
        if wt.marked_by(marker, snap.home, "worker"):
            assert marker is not None
            if marker.get("worker") not in live:  # a live worker may not have recorded it yet
                found.append(_marked_worktree(snap, facts, path, branch, marker))
        elif rx.match(path) or (branch is not None and branch.startswith(snap.branch_prefix)):
            found.append(_not_ours("worktree", snap, path, marker))
    return found


def _marked_worktree(snap: RepoSnapshot, facts: _Facts, path: str, branch: str | None, marker: dict[str, Any]) -> Found:
    """A worktree chkd made (its marker says so) that no worker row records."""
    cwd, target = snap.path, snap.main_branch
    who = marker.get("worker") or "?"
    # the branch goes too only if it is the one chkd made there and no worker row records it
    own = branch if branch and branch == marker.get("branch") and branch not in facts.by_branch else None
    item = GcItem(kind="worktree", repo=snap.name, what=path, reason=f"made by chkd for worker {who}, unused")
    if not os.path.isdir(path):
        item.reason = f"made by chkd for worker {who}; registered with git but the directory is gone"
        why = _unmerged_reason(own, target, cwd) if own else None
        if why:  # dropping the registration loses nothing; the branch itself stays
            item.reason += f"; {why}"
            own = None
    elif not os.path.lexists(os.path.join(path, ".git")):
        item.removable, item.reason = False, f"{item.reason}, but it is no longer a git worktree; its files are kept"
    else:
        why = _worktree_reason(path, own, target, cwd)
        if why:
            item.removable, item.reason = False, f"{item.reason}, but {why}"
    sha = git.ref_sha(f"refs/heads/{own}", cwd) if own else None
    return Found(item, worktree=path, branch=own, branch_sha=sha, marker_worker=str(who))


def _branch_items(snap: RepoSnapshot, facts: _Facts) -> list[Found]:
    """Branches under branch_prefix that nothing of chkd's records: listed as "not ours", kept."""
    refs = git.out(["for-each-ref", "--format=%(refname)", "refs/heads/"], snap.path)
    checked_out = {b for b in facts.registered.values() if b}
    found: list[Found] = []
    for ref in refs.splitlines():
        branch = ref[len("refs/heads/") :]
        if (
            not branch.startswith(snap.branch_prefix)
            or branch == snap.main_branch
            or branch in facts.by_branch
            or branch in checked_out
        ):
            continue
        found.append(_not_ours("branch", snap, branch))
    return found


def _worktree_state(path: str | None, facts: _Facts) -> str:
    """What is at a worker's recorded worktree path: none | worktree | gone | empty | stray."""
    if not path:
        return "none"
    known = os.path.realpath(path) in facts.registered
    if not os.path.isdir(path):
        return "gone"
    if known and os.path.lexists(os.path.join(path, ".git")):
        return "worktree"
    return "empty" if not known and not any(os.scandir(path)) else "stray"


def _worker_items(snap: RepoSnapshot, facts: _Facts, w: dict[str, Any]) -> list[Found]:
    """What one worker row records and no longer needs."""
    cwd, target = snap.path, snap.main_branch
    path, branch, status = w.get("worktree_path"), w.get("branch_name"), w["status"]
    if status == "starting":
        return []  # a spawn in flight: its worktree may not exist yet
    state = _worktree_state(path, facts)
    sha = git.ref_sha(f"refs/heads/{branch}", cwd) if branch else None
    registered = path is not None and os.path.realpath(path) in facts.registered
    f = Found(
        GcItem(kind="worker", repo=snap.name, what=w["id"], reason=""),
        worker_id=w["id"],
        worktree=path if registered or state == "empty" else None,
        branch=branch if sha else None,
        branch_sha=sha,
        drop_row=status != "merged",
        empty_dir=state == "empty",
    )
    if status in LIVE:
        if state not in ("gone", "empty"):
            return []
        f.item.reason, f.item.removable = f"its worktree {path} is gone, but it is {status}; abort it first", False
        return [f]
    if state == "stray":
        f.item.reason = f"its worktree {path} is no longer a git worktree; its files are kept"
        f.item.removable = False
        return [f]
    if status == "merged":
        return _merged_leftovers(snap, f, state, path)
    if state == "worktree":
        if status != "dead" or snap.now_ms - last_seen(w) <= WEEK_MS:
            return []  # kept for inspection, or waiting to be merged
        days = (snap.now_ms - last_seen(w)) // (24 * 3600 * 1000)
        f.item.kind, f.item.reason = "dead_worker", f"dead for {days} days"
        why = _worktree_reason(str(path), f.branch, target, cwd)
    elif state == "none":
        if not sha:
            return []
        f.item.kind, f.item.what = "branch", str(branch)
        f.item.reason, f.drop_row = f"recorded by worker {w['id']} ({status}), which has no worktree", False
        why = _unmerged_reason(str(branch), target, cwd)
    else:
        f.item.reason = (
            f"its worktree {path} is gone"
            if state == "gone"
            else f"its worktree directory {path} is empty and unknown to git (a spawn that did not finish)"
        )
        why = _unmerged_reason(str(branch), target, cwd) if sha else None
    if why:
        f.item.removable, f.item.reason = False, f"{f.item.reason}, but {why}"
    return [f]


def _merged_leftovers(snap: RepoSnapshot, f: Found, state: str, path: str | None) -> list[Found]:
    """A merged worker is history; what its merge's cleanup left behind is a leftover."""
    cwd, target = snap.path, snap.main_branch
    parts = []
    if state == "worktree":
        parts.append(f"its worktree {path}")
    elif f.empty_dir:
        parts.append(f"its empty worktree directory {path}")
    elif f.worktree:
        parts.append(f"git's registration of its deleted worktree {path}")
    if f.branch:
        parts.append(f"its branch {f.branch}")
    if not parts:
        return []
    f.item.reason = f"merged, but {' and '.join(parts)} {'were' if len(parts) > 1 else 'was'} left behind"
    if state == "worktree":
        why = _worktree_reason(str(path), f.branch, target, cwd)
    else:
        why = _unmerged_reason(f.branch, target, cwd) if f.branch else None
    if why:
        f.item.removable, f.item.reason = False, f"{f.item.reason}, but {why}"
    return [f]


# -- off-loop: acting -----------------------------------------------------------------------------
class _Kept(Exception):
    """A re-check right before removal found a reason to keep the item."""


def apply(snap: RepoSnapshot, found: list[Found]) -> list[Found]:
    """Off-loop: remove every removable item, re-checking right before each step; marks `removed`."""
    for f in found:
        if not f.item.removable:
            continue
        try:
            _remove(snap, f)
            f.item.removed = True
        except _Kept as why:
            f.item.removable, f.item.reason = False, str(why)
        except git.GitError as exc:
            f.item.removable, f.item.reason = False, f"could not remove: {exc.message}"
        except OSError as exc:
            f.item.removable, f.item.reason = False, f"could not remove: {exc.strerror or exc}"
    return found


def _remove(snap: RepoSnapshot, f: Found) -> None:
    cwd, target = snap.path, snap.main_branch
    if f.marker_worker is not None and f.worktree is not None:
        marker = wt.worktree_markers(cwd).get(os.path.realpath(f.worktree))
        if not wt.marked_by(marker, snap.home, "worker"):
            raise _Kept(f"{f.worktree} no longer carries chkd's marker; kept")
    if f.empty_dir and f.worktree:
        _remove_empty_dir(cwd, f.worktree)
    elif f.worktree and os.path.isdir(f.worktree):
        why = _worktree_reason(f.worktree, f.branch, target, cwd)
        if why:
            raise _Kept(why)
        force = ["--force"] if wt.copied_files(f.worktree) and not wt.dirty(f.worktree) else []  # chkd's copies
        git.run(["worktree", "remove", *force, f.worktree], cwd)  # else refuses by itself if anything is dirty
    elif f.worktree:
        wt.forget_worktree(cwd, f.worktree)  # its directory is gone: only its own registration goes
    if f.branch:
        _delete_branch(f, target, cwd)


def _remove_empty_dir(cwd: str, path: str) -> None:
    """An empty directory a spawn reserved: only if git still does not know it, and only `os.rmdir`
    (which refuses a directory that is not empty)."""
    listed = parse_worktrees(git.out(["worktree", "list", "--porcelain"], cwd))
    if os.path.realpath(path) in {os.path.realpath(w["worktree"]) for w in listed}:
        raise _Kept(f"{path} became a git worktree during gc; kept")
    os.rmdir(path)


def _delete_branch(f: Found, target: str, cwd: str) -> None:
    """Delete `f.branch` only if it still holds nothing unmerged, by compare-and-swap on its sha."""
    sha = git.ref_sha(f"refs/heads/{f.branch}", cwd)
    if sha is None:
        return
    if f.branch_sha and sha != f.branch_sha:
        raise git.GitError(f"branch {f.branch} moved during gc; kept")
    if _unmerged_reason(str(f.branch), target, cwd):
        raise git.GitError(f"branch {f.branch} holds work not in {target}; kept")
    git.run(["update-ref", "-d", f"refs/heads/{f.branch}", sha], cwd)
