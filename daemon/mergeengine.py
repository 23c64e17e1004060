"""The merge engine: blocking git work, run only off-loop (`ctx.submit`).

Why these steps, in this order: the conflict check and the merge commit never touch a
working tree (`merge-tree --write-tree`, `commit-tree`), so a conflict changes nothing;
the test gate runs in a throw-away worktree of the exact merge result; the target moves
only by compare-and-swap (`update-ref NEW OLD`), and a checkout of the target is first
proven clean (and updatable) so nothing a user has there is ever overwritten.
Nothing in this module touches the store.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chkd.protocol.errors import ChkdError

from . import failpoints, git, procs, worktrees

#: Temporary directories of test gates start with this (leftovers are recognised by their marker, not by this).
GATE_PREFIX = "chkd-gate-"
#: The test gate keeps at most this much output (the tail) in the merge log.
MAX_LOG = 64 * 1024


@dataclass(frozen=True)
class Plan:
    """What merging `head` into `target` would give, computed without a checkout."""

    target_sha: str
    head_sha: str
    tree: str | None = None  # None on conflict
    conflict_files: list[str] = field(default_factory=list)
    already_in: bool = False  # the branch's content is already in the target (nothing to merge)
    commit: str | None = None  # the merge commit object (unreferenced until landed)


@dataclass(frozen=True)
class GateResult:
    ok: bool
    output: str
    seconds: float
    timed_out: bool = False
    returncode: int | None = None
    suspect: str | None = None  # a main-checkout file the gate's output names (see gate.suspect)


@dataclass(frozen=True)
class Landed:
    """Outcome of `land`: `moved` means the target changed under us (re-check, never force)."""

    moved: bool = False
    new_sha: str | None = None
    updated_checkouts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def target_ref(branch: str) -> str:
    return branch if branch.startswith("refs/") else f"refs/heads/{branch}"


def _both_shas(repo: str | Path, target: str, head: str, head_missing: str) -> tuple[str, str]:
    """The commits the target branch and `head` name, or a not_found sentence for the missing one."""
    target_sha = git.rev(target_ref(target), repo)
    if target_sha is None:
        raise ChkdError("not_found", f"The target branch '{target}' does not exist in {repo}.")
    head_sha = git.rev(head, repo)
    if head_sha is None:
        raise ChkdError("not_found", f"The branch '{head}' {head_missing}.")
    return target_sha, head_sha


def plan(
    repo: str | Path, target: str, head: str, message: str, known_head: str | None = None, worktree: str | None = None
) -> Plan:
    """Conflict check + merge commit object for `head` into `target` (no checkout, no ref moves).

    `known_head`: the commit an earlier check of this merge saw. When the branch is gone because
    that merge landed and cleaned up just before a daemon kill, the work is found in the target.
    `worktree`: the worker's; a file chkd copied into it (`copy`, e.g. `.env`) that the branch
    committed is refused, so a copied secret never reaches the target."""
    if known_head and git.rev(head, repo) is None:
        target_sha = git.rev(target_ref(target), repo)
        if target_sha is not None and _is_ancestor(known_head, target_sha, repo):
            return Plan(target_sha, known_head, already_in=True)
    target_sha, head_sha = _both_shas(repo, target, head, f"does not exist in {repo}; nothing to merge")
    if _is_ancestor(head_sha, target_sha, repo):
        return Plan(target_sha, head_sha, already_in=True)
    tree, conflicts = git.merge_tree(target_sha, head_sha, repo)
    if tree is None:
        return Plan(target_sha, head_sha, conflict_files=conflicts)
    if tree == git.out(["rev-parse", f"{target_sha}^{{tree}}"], repo):
        return Plan(target_sha, head_sha, tree=tree, already_in=True)  # squash-merged or cherry-picked
    copied = worktrees.copied_files(worktree) if worktree and os.path.isdir(worktree) else []
    if copied:
        added = git.out(
            ["diff", "--name-only", "--no-renames", "--diff-filter=A", target_sha, tree, "--", *copied], repo
        )
        if added.strip():
            raise ChkdError(
                "refused",
                f"The branch commits {_names(added.split())}, which chkd copied in from the main "
                "checkout (copy) and must never be committed; nothing was merged.",
                "Remove it from the branch (`git rm --cached FILE` and commit), then merge again.",
            )
    commit = git.out(
        ["commit-tree", tree, "-p", target_sha, "-p", head_sha, "-m", message], repo, env=git.identity_env(repo)
    )
    return Plan(target_sha, head_sha, tree=tree, commit=commit)


def _is_ancestor(a: str, b: str, repo: str | Path) -> bool:
    return git.run(["merge-base", "--is-ancestor", a, b], repo, check=False).returncode == 0


# -- test gate ------------------------------------------------------------------------------
# The gate itself runs in the persistent gate worktree (daemon/gate.py). Temporary gate worktrees
# (`chkd-gate-*`, made by versions before the persistent gate) may still be left behind by a
# killed daemon: `prune_gates` removes those that are recorded as this home's.
def prune_gates(repo: str | Path, before: float, home: str) -> int:
    """Remove test-gate worktrees a killed daemon left behind: only those recorded as this home's
    gates (marker, or the reservation in their temporary directory), made before `before` (epoch s).
    Their temporary directory goes only once it is empty."""
    markers = worktrees.worktree_markers(repo)
    listed = git.run(["worktree", "list", "--porcelain"], repo, check=False).stdout.splitlines()
    gone = 0
    for path in (ln[len("worktree ") :] for ln in listed if ln.startswith("worktree ")):
        marker = markers.get(os.path.realpath(path)) or _gate_reservation(Path(path))
        if marker is None or not worktrees.marked_by(marker, home, "gate") or _created_s(marker) >= before:
            continue
        if git.run(["worktree", "remove", "--force", path], repo, check=False).returncode != 0:
            continue
        gone += 1
        parent = Path(path).parent
        if parent.name.startswith(GATE_PREFIX):
            try:
                (parent / worktrees.MARKER).unlink(missing_ok=True)
                parent.rmdir()
            except OSError:
                pass
    return gone


def _gate_reservation(wt: Path) -> dict[str, Any] | None:
    """The record an older version's gate wrote into its temporary directory before `git worktree add`."""
    if wt.name != "tree" or not wt.parent.name.startswith(GATE_PREFIX):
        return None
    try:
        data = json.loads((wt.parent / worktrees.MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _created_s(marker: dict[str, Any]) -> float:
    at = marker.get("created_at")
    return at / 1000 if isinstance(at, (int, float)) else 0.0


def run_cmd(
    cmd: list[str], cwd: Path, timeout: float, started: float, extra_env: dict[str, str] | None = None
) -> GateResult:
    try:
        ran = procs.run_bounded(cmd, cwd, timeout, extra_env=extra_env)
    except OSError as exc:
        return GateResult(
            False, f"The test command {cmd[0]!r} could not start: {exc.strerror or exc}.", time.monotonic() - started
        )
    text = _tail(ran.output.decode(errors="replace"))
    seconds = time.monotonic() - started
    if ran.timed_out:
        text += f"\n[chkd] the test command ran longer than {timeout:g} s and was stopped.\n"
    return GateResult(not ran.timed_out and ran.returncode == 0, text, seconds, ran.timed_out, ran.returncode)


def _tail(text: str) -> str:
    if len(text) <= MAX_LOG:
        return text
    return "[chkd] output truncated to its last 64 KiB\n" + text[-MAX_LOG:]


# -- landing -------------------------------------------------------------------------------
def checkouts_of(repo: str | Path, branch: str) -> list[str]:
    """Every worktree (the main checkout included) that has `branch` checked out."""
    text = git.out(["worktree", "list", "--porcelain"], repo)
    ref = target_ref(branch)
    found: list[str] = []
    path: str | None = None
    for line in [*text.splitlines(), ""]:
        if line.startswith("worktree "):
            path = line[len("worktree ") :]
        elif line.startswith("branch ") and line[len("branch ") :] == ref and path and os.path.isdir(path):
            found.append(path)
        elif not line:
            path = None
    return found


def land(repo: str | Path, target: str, new: str, old: str) -> Landed:
    """Move `target` from `old` to `new` by CAS and bring every clean checkout of it along.

    Refuses (nothing written) when a checkout of the target has tracked changes, or any
    untracked or ignored file the merge would overwrite. Returns `moved=True` when the target
    is no longer at `old`: the caller re-checks against the new target. The caller has recorded
    (old, new) before this runs, so a kill between the CAS and the checkouts is finished
    by `finish_landing` at the next start.
    """
    if git.rev(target_ref(target), repo) != old:
        return Landed(moved=True)
    checkouts = checkouts_of(repo, target)
    for wt in checkouts:
        _require_updatable(wt, target, old, new)
    proc = git.run(["update-ref", "-m", "chkd: merge", target_ref(target), new, old], repo, check=False)
    if proc.returncode != 0:
        if git.rev(target_ref(target), repo) != old:
            return Landed(moved=True)
        raise git.GitError(f"The target '{target}' could not be moved: {git.reason(proc.stderr)}", proc.stderr)
    failpoints.hit("merge.cas_done")
    updated, notes = _bring_along(checkouts, old, new)
    return Landed(new_sha=new, updated_checkouts=updated, notes=notes)


def _bring_along(checkouts: list[str], old: str, new: str) -> tuple[list[str], list[str]]:
    """Move each checkout's index and files from `old` to `new` (`read-tree -m -u`, which never
    overwrites a local change); a checkout already at `new` is left as it is."""
    updated: list[str] = []
    notes: list[str] = []
    for wt in checkouts:
        if git.run(["diff-index", "--cached", "--quiet", new, "--"], wt, check=False).returncode == 0:
            updated.append(wt)
            continue
        late = in_the_way(wt, old, new)  # checked again: a user may have made one since
        res = None if late else git.run(["read-tree", "-m", "-u", old, new], wt, check=False)
        if res is not None and res.returncode == 0:
            updated.append(wt)
        else:  # a user touched it between the check and now: their files are untouched, say so
            why = f"{_names(late)} would be overwritten." if late else git.reason(res.stderr if res else "")
            notes.append(
                f"The checkout {wt} was not brought up to date ({why}) "
                f"Run `git reset --keep {new[:12]}` there once your files are saved."
            )
    return updated, notes


def finish_landing(repo: str | Path, target: str, old: str, new: str) -> list[str]:
    """At start-up, for a merge whose CAS may have happened before the daemon was killed: when the
    target is at `new`, bring its checkouts along (idempotent). Returns notes for the merge log."""
    if git.rev(target_ref(target), repo) != new:
        return []
    updated, notes = _bring_along(checkouts_of(repo, target), old, new)
    return [*notes, f"brought {', '.join(updated)} up to date after a daemon restart"] if updated else notes


def _require_updatable(wt: str, target: str, old: str, new: str) -> None:
    git.run(["update-index", "-q", "--refresh"], wt, check=False)
    dirty = git.dirty_files(wt, tracked_only=True)
    if dirty:
        raise ChkdError(
            "refused",
            f"The target '{target}' is checked out in {wt} with uncommitted changes to "
            f"{_names(dirty)}; nothing was merged.",
            "Commit or stash those changes there, then merge again.",
        )
    blocked = in_the_way(wt, old, new)
    if blocked:
        raise ChkdError(
            "refused",
            f"The checkout of '{target}' in {wt} has untracked or ignored files the merge would "
            f"overwrite ({_names(blocked)}); nothing was merged.",
            "Move or commit those files there, then merge again.",
        )
    probe = git.run(["read-tree", "-m", "-u", "-n", old, new], wt, check=False)  # anything else git objects to
    if probe.returncode != 0:
        files = [ln.strip() for ln in probe.stderr.splitlines() if ln.startswith(("\t", "    "))]
        files += re.findall(r"file '([^']+)' would be", probe.stderr)
        what = _names(files) if files else git.reason(probe.stderr).rstrip(".")
        raise ChkdError(
            "refused",
            f"The checkout of '{target}' in {wt} has files the merge would overwrite ({what}); nothing was merged.",
            "Move or commit those files there, then merge again.",
        )


def in_the_way(wt: str | Path, old: str, new: str) -> list[str]:
    """Paths in the checkout `wt` that are not tracked there but that moving it from `old` to `new`
    would overwrite: untracked and ignored files alike (read-tree would silently replace ignored ones).

    For each path the merge adds or changes that is not in the index: the path itself existing
    on disk, or a parent that is not a real directory (it would have to become one)."""
    changed = [
        p for p in git.run(["diff", "--name-only", "--no-renames", "-z", old, new, "--"], wt).stdout.split("\0") if p
    ]
    if not changed:
        return []
    tracked = {p for p in git.run(["ls-files", "-z", "--cached"], wt).stdout.split("\0") if p}
    blocked: dict[str, None] = {}
    for path in changed:
        if path in tracked:
            continue
        for rel in _blocking(Path(wt), path, tracked):
            blocked[rel] = None
    return list(blocked)


def _blocking(root: Path, path: str, tracked: set[str]) -> list[str]:
    """What on disk stands where the untracked `path` would be written (empty when nothing)."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        full = root / parent
        if parent in tracked:  # a tracked file turned into a directory: git replaces it, it is clean
            return []
        if os.path.islink(full) or (os.path.lexists(full) and not os.path.isdir(full)):
            return [parent]
        if not os.path.lexists(full):
            return []
    full = root / path
    if not os.path.lexists(full):
        return []
    if os.path.isdir(full) and not os.path.islink(full) and _only_tracked_below(root, path, tracked):
        return []  # a directory of tracked files turned into a file: git removes them, all clean
    return [path]


def _only_tracked_below(root: Path, rel: str, tracked: set[str]) -> bool:
    for dirpath, dirs, files in os.walk(root / rel):
        links = [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]  # os.walk lists them as dirs
        for name in files + links:
            if os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/") not in tracked:
                return False
    return True


def _names(files: list[str], limit: int = 8) -> str:
    shown = ", ".join(files[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


# -- after the merge ----------------------------------------------------------------------
def remove_checkout(repo: str | Path, worktree: str | None, branch: str | None, target: str) -> list[str]:
    """Remove the worker's worktree and branch once its content is in the target.

    The workers area does the removal (it never deletes content that is not in the target);
    returns notes for the merge log: a cleanup problem never undoes a merge."""
    try:
        removal = worktrees.remove_checkout(str(repo), worktree, branch, force=False, target=target)
    except ChkdError as exc:
        return [f"The worktree and branch were kept: {exc.message}"]
    except OSError as exc:  # the merge stands whatever happens here
        return [f"The worktree and branch were kept: {exc}"]
    return list(removal.notes)


def land_and_clean(
    repo: str | Path, target: str, new: str, old: str, worktree: str | None, branch: str | None
) -> Landed:
    """`land`, then (when it landed) remove the worker's worktree and branch; cleanup notes ride along."""
    landed = land(repo, target, new, old)
    if landed.moved:
        return landed
    notes = remove_checkout(repo, worktree, branch, target)
    failpoints.hit("merge.landed")
    return Landed(new_sha=landed.new_sha, updated_checkouts=landed.updated_checkouts, notes=landed.notes + notes)


def clean_merged(repo: str | Path, target: str, target_sha: str, worktree: str | None, branch: str | None) -> Landed:
    """Nothing to merge (the content is already in the target): only the cleanup."""
    return Landed(new_sha=target_sha, notes=remove_checkout(repo, worktree, branch, target))


# -- worker-side helpers: dirty check, diff, update ---------------------------------------------
def worktree_dirty(worktree: str | None) -> list[str]:
    """Uncommitted files (untracked too) in a worker's worktree; [] when it is gone."""
    if not worktree or not os.path.isdir(worktree):
        return []
    return worktrees.dirty(worktree)


def diff(repo: str | Path, target: str, head: str, worktree: str | None, stat: bool) -> tuple[str, str, str]:
    """The worker's change against the target: from their merge base to the worktree
    (committed and uncommitted tracked changes) or to the branch when the worktree is gone."""
    target_sha, head_sha = _both_shas(repo, target, head, "no longer exists; there is nothing to compare")
    base = git.out(["merge-base", target_sha, head_sha], repo)
    args = ["diff", "--no-color", "--no-ext-diff"] + (["--stat"] if stat else [])
    if worktree and os.path.isdir(worktree) and git.current_branch(worktree) == _short(head):
        text = git.run([*args, base, "--"], worktree).stdout
    else:
        text = git.run([*args, base, head_sha, "--"], repo).stdout
    return text, base, head_sha


def _short(ref: str) -> str:
    return ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ref


@dataclass(frozen=True)
class UpdateOutcome:
    merged: bool  # True: committed (or already up to date); False: conflict markers left
    conflict_files: list[str] = field(default_factory=list)
    up_to_date: bool = False
    head: str | None = None


def update_branch(worktree: str | None, target: str) -> UpdateOutcome:
    """Merge the target into the branch checked out in `worktree` (a real `git merge`)."""
    if not worktree or not os.path.isdir(worktree):
        raise ChkdError("not_found", f"The worktree {worktree} no longer exists; there is nothing to update.")
    if git.run(["rev-parse", "-q", "--verify", "MERGE_HEAD"], worktree, check=False).returncode == 0:
        raise ChkdError(
            "conflict",
            f"A merge is already in progress in {worktree}.",
            "Resolve the conflict markers and commit, or run `git merge --abort` there.",
        )
    dirty = git.dirty_files(worktree, tracked_only=True)
    if dirty:
        raise ChkdError(
            "refused",
            f"The worktree {worktree} has uncommitted changes to {_names(dirty)}.",
            "Commit them first, then update again.",
        )
    ref = target_ref(target)
    if _is_ancestor(ref, "HEAD", worktree):
        return UpdateOutcome(True, up_to_date=True, head=git.rev("HEAD", worktree))
    proc = git.run(
        ["merge", "--no-edit", "--no-ff", "-m", f"Merge {_short(ref)} into {git.current_branch(worktree)}", ref],
        worktree,
        check=False,
        env=git.identity_env(worktree),
    )
    if proc.returncode == 0:
        return UpdateOutcome(True, head=git.rev("HEAD", worktree))
    files = git.out(["diff", "--name-only", "--diff-filter=U"], worktree).splitlines()
    if not files:
        raise git.GitError(
            f"Merging '{target}' into {worktree} failed: {git.reason(proc.stderr or proc.stdout)}", proc.stderr
        )
    return UpdateOutcome(False, conflict_files=sorted(files))
