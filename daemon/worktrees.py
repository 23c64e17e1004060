"""Worktrees and branches of workers: the blocking git work, run off-loop only.

Nothing here touches the store: each function takes plain values, runs git, and
returns plain values (or raises a ChkdError sentence) for a loop callback to record.

Nothing is lost: a worktree's uncommitted changes are committed to its branch before
it is removed, and a branch whose content is not in the target is only deleted with
`force`, after its tip was kept under `refs/chkd/attic/<worker>`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chkd.protocol import templates
from chkd.protocol.errors import ChkdError

from . import git

ATTIC_PREFIX = "refs/chkd/attic/"
#: How many `-N` suffixes to try before giving up on a name.
MAX_SUFFIX = 100
#: How many dirty files / unmerged commits a refusal lists.
LIST_LIMIT = 10


# -- names (pure) -------------------------------------------------------------------------------
def path_safe(task_id: str) -> str:
    """A task id as one path component (`a/b` → `a-b`)."""
    return task_id.replace("/", "-").replace(os.sep, "-")


def worktree_base(repo_path: str, repo_name: str, task_id: str, pattern: str) -> Path:
    """Where the worktree for `task_id` goes: `pattern` relative to the repository, normalised.

    Only `{repo}` and `{task}` are substituted (never `str.format`, which evaluates what it is
    given), and the result must land inside the repository's parent directory, not inside the
    repository (config.toml checks the pattern; this checks the actual names too)."""
    rel = templates.render(pattern, {"repo": path_safe(repo_name), "task": path_safe(task_id)})
    repo = Path(os.path.normpath(repo_path))
    base = Path(os.path.normpath(repo / rel))
    if repo.parent not in base.parents or base == repo or repo in base.parents:
        raise ChkdError("refused", f"worktree_pattern {pattern!r} puts the worktree of {task_id} at {base}, which is "
                                   f"not inside {repo.parent} or is inside the repository.",
                        "Use a pattern like ../{repo}-{task} in config.toml.")
    return base


def suffixed(base: str) -> Iterator[str]:
    """`base`, `base-2`, `base-3`, …"""
    yield base
    for n in range(2, MAX_SUFFIX + 1):
        yield f"{base}-{n}"


def attic_ref(worker_id: str) -> str:
    return ATTIC_PREFIX + worker_id


# -- create ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkout:
    path: str
    branch: str
    base_sha: str


def _reserve_dir(base: Path) -> Path:
    """Create a fresh empty directory `base`, `base-2`, …: never reuse one that exists."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for candidate in suffixed(str(base)):
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return Path(candidate)
    raise ChkdError("conflict", f"{base} and its -2 … -{MAX_SUFFIX} variants all exist; clean some up.")


def create_worktree(
    repo_path: str, repo_name: str, task_id: str, main_branch: str, pattern: str, branch_prefix: str
) -> Checkout:
    """`git worktree add -b <prefix><task> <path> <main>`, with `-2`, `-3` for taken paths and branches."""
    base_sha = git.rev(f"refs/heads/{main_branch}", repo_path)
    if base_sha is None:
        raise ChkdError("not_found", f"The repository {repo_path} has no branch '{main_branch}' to start from.")
    path = _reserve_dir(worktree_base(repo_path, repo_name, task_id, pattern))
    try:
        for branch in suffixed(f"{branch_prefix}{task_id}"):
            if git.rev(f"refs/heads/{branch}", repo_path) is not None:
                continue
            proc = git.run(["worktree", "add", "--quiet", "-b", branch, str(path), base_sha], repo_path, check=False)
            if proc.returncode == 0:
                return Checkout(str(path), branch, base_sha)
            if "already exists" in proc.stderr and git.rev(f"refs/heads/{branch}", repo_path) is not None:
                continue  # another spawn took this branch name a moment ago
            raise git.GitError(f"git worktree add failed in {repo_path}: {git.reason(proc.stderr)}", proc.stderr)
        raise ChkdError("conflict", f"Branch {branch_prefix}{task_id} and its -2 … -{MAX_SUFFIX} variants all exist.")
    except BaseException:
        _discard_dir(repo_path, path)
        raise


def _discard_dir(repo_path: str, path: Path) -> None:
    """Undo a reservation: the directory we made (and any half-made worktree registration)."""
    shutil.rmtree(path, ignore_errors=True)
    git.run(["worktree", "prune"], repo_path, check=False)


# -- commits ----------------------------------------------------------------------------------------
def commit_all(worktree: str, message: str) -> str | None:
    """Commit every uncommitted change in `worktree` (untracked files too); the new sha, or None if clean.

    `--no-verify`: this is a mechanical save of the agent's work, a failing hook must not lose it.
    """
    if not Path(worktree).is_dir() or not git.dirty_files(worktree):
        return None
    git.run(["add", "-A", "--", "."], worktree)
    git.run(["-c", "commit.gpgsign=false", "commit", "--quiet", "--no-verify", "-m", message], worktree,
            env=git.identity_env(worktree))
    return git.rev("HEAD", worktree)


# -- remove -------------------------------------------------------------------------------------------
@dataclass
class Removal:
    worktree_removed: bool = False
    branch_deleted: bool = False
    snapshot_sha: str | None = None
    attic_ref: str | None = None
    attic_sha: str | None = None
    notes: list[str] = field(default_factory=list)


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:LIST_LIMIT])
    more = len(items) - LIST_LIMIT
    return shown + (f" and {more} more" if more > 0 else "")


def _free_attic_ref(repo_path: str, wanted: str) -> str:
    for candidate in suffixed(wanted):
        if git.rev(candidate, repo_path) is None:
            return candidate
    return wanted


def remove_checkout(
    repo_path: str,
    worktree: str | None,
    branch: str | None,
    *,
    force: bool,
    target: str | None = None,
    attic: str | None = None,
    snapshot_message: str = "chkd: snapshot of uncommitted work before removal",
    who: str = "The worker",
) -> Removal:
    """Remove a worker's worktree and branch without losing work.

    Without `force`: refuse (ChkdError `refused`, listing them) when the worktree has
    uncommitted changes or the branch holds content not in `target` (default: the branch
    checked out in `repo_path`). With `force`: commit the changes to the branch first and
    keep the branch tip under `attic` (default `refs/chkd/attic/<branch name>`), then remove.
    """
    out = Removal()
    wt = Path(worktree) if worktree else None
    wt_exists = wt is not None and (wt / ".git").exists()
    target = target or git.current_branch(repo_path) or "HEAD"
    dirty = git.dirty_files(wt) if wt_exists else []
    has_branch = bool(branch) and git.rev(f"refs/heads/{branch}", repo_path) is not None
    unmerged_content = has_branch and not git.content_in(f"refs/heads/{branch}", target, repo_path)
    if not force and (dirty or unmerged_content):
        problems = []
        if dirty:
            problems.append(f"uncommitted changes in {worktree} ({_listing(dirty)})")
        if unmerged_content:
            commits = git.unmerged_commits(f"refs/heads/{branch}", target, repo_path, limit=LIST_LIMIT + 1)
            problems.append(f"commits on {branch} whose content is not in {target} ({_listing(commits)})")
        raise ChkdError("refused", f"{who} has " + " and ".join(problems) + ".",
                        "Merge the work first, or remove with --force (the work is kept as an attic ref "
                        "for `chkdctl attic restore`).")
    if dirty:
        if not has_branch:
            raise ChkdError("refused", f"{worktree} has uncommitted changes but no branch to save them to.")
        out.snapshot_sha = commit_all(str(wt), snapshot_message)
        unmerged_content = True
    if has_branch and unmerged_content:
        tip = git.rev(f"refs/heads/{branch}", repo_path)
        ref = _free_attic_ref(repo_path, attic or attic_ref(str(branch).rsplit("/", 1)[-1]))
        git.run(["update-ref", ref, str(tip)], repo_path)
        out.attic_ref, out.attic_sha = ref, tip
    if wt is not None and wt.exists():
        proc = git.run(["worktree", "remove", "--force", str(wt)], repo_path, check=False)
        if proc.returncode == 0:
            out.worktree_removed = True
        elif not (wt / ".git").exists():
            # no longer a git worktree: git cannot tell what in it is work, so nothing is deleted
            out.notes.append(f"{wt} is no longer a git worktree; its files were left in place")
        else:
            raise git.GitError(f"git worktree remove failed for {wt}: {git.reason(proc.stderr)}", proc.stderr)
    git.run(["worktree", "prune"], repo_path, check=False)
    if has_branch:
        proc = git.run(["branch", "-D", str(branch)], repo_path, check=False)
        if proc.returncode != 0:
            out.notes.append(f"branch {branch} was kept: {git.reason(proc.stderr)}")
        else:
            out.branch_deleted = True
    return out


# -- attic ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AtticItem:
    ref: str
    sha: str
    at: int  # ms: the commit time of the kept tip


def attic_list(repo_path: str) -> list[AtticItem]:
    text = git.out(["for-each-ref", "--format=%(refname)%00%(objectname)%00%(committerdate:unix)", ATTIC_PREFIX],
                   repo_path)
    items = []
    for line in text.splitlines():
        ref, sha, at = (line.split("\0") + ["", "", "0"])[:3]
        items.append(AtticItem(ref, sha, int(at or 0) * 1000))
    return items


def resolve_attic_ref(ref: str) -> str:
    """`w3`, `attic/w3` or `refs/chkd/attic/w3` → the full ref."""
    ref = ref.strip()
    if ref.startswith("refs/"):
        return ref
    if ref.startswith("attic/"):
        ref = ref[len("attic/"):]
    return ATTIC_PREFIX + ref


def attic_restore(repo_path: str, ref: str, branch: str) -> tuple[str, str]:
    """Create `branch` (or `branch-2`, …) at the attic ref's commit, then drop the attic ref. (branch, sha)."""
    full = resolve_attic_ref(ref)
    sha = git.rev(full, repo_path)
    if sha is None:
        raise ChkdError("not_found", f"There is no attic ref {full} in {repo_path}.", "See `chkdctl attic list`.")
    for candidate in suffixed(branch):
        if git.rev(f"refs/heads/{candidate}", repo_path) is None:
            git.run(["branch", candidate, sha], repo_path)
            git.run(["update-ref", "-d", full, sha], repo_path)
            return candidate, sha
    raise ChkdError("conflict", f"Branch {branch} and its numbered variants all exist.")
