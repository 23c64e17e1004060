"""Worktrees and branches of workers: the blocking git work, run off-loop only.

Nothing here touches the store: each function takes plain values, runs git, and
returns plain values (or raises a ChkdError sentence) for a loop callback to record.

Nothing is lost: a worktree's uncommitted changes are committed to its branch before
it is removed, and a branch whose content is not in the target is only deleted with
`force`, after its tip was kept under `refs/chkd/attic/<worker>`.

chkd only removes what it made: every worktree it creates carries a marker (`chkd-owner.json`
in the worktree's own git admin directory) naming the chkd home that made it, so gc never has
to guess from a name.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from chkd.protocol import templates
from chkd.protocol.errors import ChkdError

from . import git

ATTIC_PREFIX = "refs/chkd/attic/"
#: The forms `attic restore` accepts, for its refusals.
ATTIC_FORMS = "w3, attic/w3 or refs/chkd/attic/w3"
#: The owner marker chkd writes into the admin directory of each worktree it creates.
MARKER = "chkd-owner.json"
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
        raise ChkdError(
            "refused",
            f"worktree_pattern {pattern!r} puts the worktree of {task_id} at {base}, which is "
            f"not inside {repo.parent} or is inside the repository.",
            "Use a pattern like ../{repo}-{task} in config.toml.",
        )
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


@dataclass(frozen=True)
class CheckoutPlan:
    """Free names for a new worktree, in order of preference (the loop picks and records one
    pair before anything is created, so a kill can never leave a checkout without a record)."""

    paths: list[str]
    branches: list[str]
    base_sha: str


#: How many free candidates a plan offers (the loop skips those another worker has recorded).
PLAN_CANDIDATES = 8


def plan_checkout(
    repo_path: str, repo_name: str, task_id: str, main_branch: str, pattern: str, branch_prefix: str
) -> CheckoutPlan:
    """Off-loop, read-only: the base commit and free worktree paths and branch names for `task_id`
    (`base`, `base-2`, …: a directory or branch that exists is never reused)."""
    base_sha = git.rev(f"refs/heads/{main_branch}", repo_path)
    if base_sha is None:
        raise ChkdError("not_found", f"The repository {repo_path} has no branch '{main_branch}' to start from.")
    base = str(worktree_base(repo_path, repo_name, task_id, pattern))
    paths = [c for c in suffixed(base) if not os.path.lexists(c)][:PLAN_CANDIDATES]
    wanted = f"{branch_prefix}{task_id}"
    taken = set(
        git.out(
            ["for-each-ref", "--format=%(refname:strip=2)", "--", f"refs/heads/{wanted}", f"refs/heads/{wanted}-*"],
            repo_path,
        ).splitlines()
    )
    branches = [b for b in suffixed(wanted) if b not in taken][:PLAN_CANDIDATES]
    if not paths:
        raise ChkdError("conflict", f"{base} and its -2 … -{MAX_SUFFIX} variants all exist; clean some up.")
    if not branches:
        raise ChkdError("conflict", f"Branch {wanted} and its -2 … -{MAX_SUFFIX} variants all exist.")
    return CheckoutPlan(paths, branches, base_sha)


def create_checkout(
    repo_path: str, path: str, branch: str, base_sha: str, owner: dict[str, Any] | None = None
) -> Checkout:
    """`git worktree add -b BRANCH PATH BASE` at names the loop has already recorded.

    A path that appeared meanwhile is never reused (git itself refuses a non-empty directory,
    and we refuse any directory that exists); a failure leaves nothing behind. `owner` (plain
    data: home, worker, purpose) is written as the worktree's marker, so gc knows it is chkd's."""
    if os.path.lexists(path):
        raise ChkdError("conflict", f"{path} appeared while the worker was starting; it was left alone.")
    proc = git.run(["worktree", "add", "--quiet", "-b", branch, "--", path, base_sha], repo_path, check=False)
    if proc.returncode != 0:
        discard_empty_dir(repo_path, path)
        raise git.GitError(f"git worktree add failed in {repo_path}: {git.reason(proc.stderr)}", proc.stderr)
    if owner is not None:
        mark_worktree(path, {**owner, "branch": branch})
    return Checkout(path, branch, base_sha)


def create_worktree(
    repo_path: str,
    repo_name: str,
    task_id: str,
    main_branch: str,
    pattern: str,
    branch_prefix: str,
    owner: dict[str, Any] | None = None,
) -> Checkout:
    """Plan and create in one go (for callers that need no record in between)."""
    plan = plan_checkout(repo_path, repo_name, task_id, main_branch, pattern, branch_prefix)
    return create_checkout(repo_path, plan.paths[0], plan.branches[0], plan.base_sha, owner)


def discard_empty_dir(repo_path: str, path: str) -> None:
    """Remove `path` only if it is an empty directory (what a failed `worktree add` may leave), and
    forget a half-made registration. `os.rmdir` refuses anything with content: nothing is lost."""
    try:
        os.rmdir(path)
    except OSError:
        return
    forget_worktree(repo_path, path)


def discard_unused(repo_path: str, path: str | None, branch: str | None, base_sha: str | None) -> bool:
    """Undo a spawn that never got going: remove its worktree and branch only while they hold
    nothing at all (no uncommitted or untracked file, the branch still at its base commit).
    True when nothing of it is left; False when something was kept because it holds work."""
    kept = False
    if path and os.path.isdir(path):
        if (Path(path) / ".git").exists():
            if dirty(path) or (branch and git.rev("HEAD", path) != base_sha):
                return False
            force = ["--force"] if copied_files(path) else []  # only chkd's copies are untracked there
            proc = git.run(["worktree", "remove", *force, "--", path], repo_path, check=False)
            kept = proc.returncode != 0
        else:
            discard_empty_dir(repo_path, path)
            kept = os.path.lexists(path)
    elif path:
        forget_worktree(repo_path, path)  # its directory is gone: only its registration may be left
    if branch and base_sha and git.rev(f"refs/heads/{branch}", repo_path) == base_sha:
        git.run(["update-ref", "-d", f"refs/heads/{branch}", base_sha], repo_path, check=False)
    elif branch and git.rev(f"refs/heads/{branch}", repo_path) is not None:
        kept = True
    return not kept


# -- the owner marker ---------------------------------------------------------------------------------
def admin_dir(worktree_path: str | Path) -> Path | None:
    """The git admin directory of the linked worktree at `worktree_path` (`<repo>/.git/worktrees/<name>`).

    None when the path is not a linked worktree: missing, the main checkout (it has no admin
    directory of its own), or a plain directory that merely lies inside some repository."""
    # Read as git itself finds it (no git process: this runs several times per spawn and merge): a
    # linked worktree's `.git` is a file `gitdir: <admin dir>`, and the admin dir's `gitdir` file points back.
    try:
        with open(os.path.join(worktree_path, ".git"), encoding="utf-8") as f:
            first = f.readline().strip()
    except (OSError, UnicodeDecodeError):  # missing, or `.git` is a directory: the main checkout
        return None
    if not first.startswith("gitdir:"):
        return None
    admin = Path(os.path.realpath(os.path.join(worktree_path, first[len("gitdir:") :].strip())))
    back = _gitdir_target(admin) if admin.parent.name == "worktrees" else None  # not a submodule's
    return admin if back is not None and back == os.path.realpath(worktree_path) else None


def _gitdir_target(admin: Path) -> str | None:
    """The real path of the worktree an admin directory belongs to (from its `gitdir` file)."""
    try:
        gitdir = (admin / "gitdir").read_text().strip()
    except OSError:
        return None
    if not gitdir:
        return None
    return os.path.realpath(os.path.dirname(admin / gitdir))  # absolute, or relative to the admin dir


def mark_worktree(worktree_path: str | Path, owner: dict[str, Any]) -> None:
    """Record that chkd made this worktree: `owner` (home, worker, purpose; `created_at` added) as JSON
    in its admin directory. git removes the file with the worktree, and it follows `git worktree move`."""
    admin = admin_dir(worktree_path)
    if admin is None:
        raise ChkdError("internal", f"{worktree_path} is not a linked git worktree, so it cannot be marked as chkd's.")
    data = {"created_at": int(time.time() * 1000), **owner}
    tmp = admin / (MARKER + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True) + "\n")
    os.replace(tmp, admin / MARKER)  # never a half-written marker


def update_marker(worktree_path: str | Path, **fields: Any) -> None:
    """Add or change fields of a chkd worktree's marker (e.g. `copied`, `setup_hash`, a new `purpose`)."""
    marker = read_marker(worktree_path)
    if marker is None:
        raise ChkdError("internal", f"{worktree_path} carries no chkd marker to update.")
    mark_worktree(worktree_path, {**marker, **fields})


def copied_files(worktree_path: str | Path) -> list[str]:
    """The untracked files chkd copied into this worktree (`copy`): never committed, never "work"."""
    marker = read_marker(worktree_path)
    return [p for p in (marker or {}).get("copied") or [] if isinstance(p, str)]


def dirty(worktree_path: str | Path, *, tracked_only: bool = False) -> list[str]:
    """Uncommitted files in a worktree, leaving out the files chkd copied in."""
    return git.dirty_files(worktree_path, tracked_only=tracked_only, exclude=copied_files(worktree_path))


def read_marker(worktree_path: str | Path) -> dict[str, Any] | None:
    """The marker of the worktree at `worktree_path`, or None (not a worktree, or not made by chkd)."""
    admin = admin_dir(worktree_path)
    return _load_marker(admin / MARKER) if admin is not None else None


def _load_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def worktree_markers(repo_path: str | Path) -> dict[str, dict[str, Any]]:
    """Every marked worktree of the repository, by the real path of its directory.

    Read from the admin directories, so a worktree whose directory was deleted by hand is still known."""
    common = git.out(["rev-parse", "--path-format=absolute", "--git-common-dir"], repo_path)
    try:
        admins = list((Path(common) / "worktrees").iterdir())
    except OSError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for admin in admins:
        marker = _load_marker(admin / MARKER)
        path = _gitdir_target(admin) if marker is not None else None
        if marker is not None and path is not None:
            found[path] = marker
    return found


def marked_by(marker: dict[str, Any] | None, home: str, purpose: str) -> bool:
    """Whether `marker` says this chkd home made the worktree, for `purpose` (worker | gate)."""
    return marker is not None and marker.get("home") == home and marker.get("purpose") == purpose


def forget_worktree(repo_path: str, path: str | Path) -> bool:
    """Drop git's registration of the worktree at `path` (its directory already gone) — that one only,
    unlike `git worktree prune`, which would also drop registrations of the user's own worktrees."""
    return git.run(["worktree", "remove", str(path)], repo_path, check=False).returncode == 0


# -- commits ----------------------------------------------------------------------------------------
def commit_all(worktree: str, message: str) -> str | None:
    """Commit every uncommitted change in `worktree` (untracked files too); the new sha, or None if clean.

    `--no-verify`: this is a mechanical save of the agent's work, a failing hook must not lose it.
    """
    if not Path(worktree).is_dir() or not dirty(worktree):
        return None
    copied = copied_files(worktree)
    git.run(["add", "-A", "--", *(git.exclude_pathspecs(copied) or ["."])], worktree)
    git.run(
        ["-c", "commit.gpgsign=false", "commit", "--quiet", "--no-verify", "-m", message],
        worktree,
        env=git.identity_env(worktree),
    )
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
    target = target or git.current_branch(repo_path) or "HEAD"
    dirty_now = dirty(wt) if wt is not None and (wt / ".git").exists() else []
    has_branch = bool(branch) and git.rev(f"refs/heads/{branch}", repo_path) is not None
    unmerged_content = has_branch and not git.content_in(f"refs/heads/{branch}", target, repo_path)
    if not force and (dirty_now or unmerged_content):
        _refuse_removal(repo_path, worktree, branch, target, dirty_now, unmerged_content, who)
    if dirty_now:
        if not has_branch:
            raise ChkdError("refused", f"{worktree} has uncommitted changes but no branch to save them to.")
        out.snapshot_sha = commit_all(str(wt), snapshot_message)
        unmerged_content = True
    if has_branch and unmerged_content:
        out.attic_ref, out.attic_sha = _keep_in_attic(repo_path, str(branch), attic)
    if wt is not None:
        _remove_worktree(repo_path, wt, out)
    if has_branch:
        _delete_branch(repo_path, str(branch), out)
    return out


def _refuse_removal(
    repo_path: str,
    worktree: str | None,
    branch: str | None,
    target: str,
    dirty: list[str],
    unmerged_content: bool,
    who: str,
) -> NoReturn:
    """The `refused` sentence listing the uncommitted files and the commits not in the target."""
    problems = []
    if dirty:
        problems.append(f"uncommitted changes in {worktree} ({_listing(dirty)})")
    if unmerged_content:
        commits = git.unmerged_commits(f"refs/heads/{branch}", target, repo_path, limit=LIST_LIMIT + 1)
        problems.append(f"commits on {branch} whose content is not in {target} ({_listing(commits)})")
    raise ChkdError(
        "refused",
        f"{who} has " + " and ".join(problems) + ".",
        "Merge the work first, or remove with --force (the work is kept as an attic ref for `chkdctl attic restore`).",
    )


def _keep_in_attic(repo_path: str, branch: str, attic: str | None) -> tuple[str, str | None]:
    """Point a free attic ref at the branch tip before the branch goes: (ref, sha)."""
    tip = git.rev(f"refs/heads/{branch}", repo_path)
    ref = _free_attic_ref(repo_path, attic or attic_ref(branch.rsplit("/", 1)[-1]))
    git.run(["update-ref", ref, str(tip)], repo_path)
    return ref, tip


def _remove_worktree(repo_path: str, wt: Path, out: Removal) -> None:
    """`git worktree remove`; a directory that is no longer a worktree is left alone (git cannot
    tell what in it is work), one deleted by hand only loses its registration."""
    if not wt.exists():
        forget_worktree(repo_path, wt)
        return
    proc = git.run(["worktree", "remove", "--force", str(wt)], repo_path, check=False)
    if proc.returncode == 0:
        out.worktree_removed = True
    elif not (wt / ".git").exists():
        out.notes.append(f"{wt} is no longer a git worktree; its files were left in place")
    else:
        raise git.GitError(f"git worktree remove failed for {wt}: {git.reason(proc.stderr)}", proc.stderr)


def _delete_branch(repo_path: str, branch: str, out: Removal) -> None:
    proc = git.run(["branch", "-D", branch], repo_path, check=False)
    if proc.returncode != 0:
        out.notes.append(f"branch {branch} was kept: {git.reason(proc.stderr)}")
    else:
        out.branch_deleted = True


# -- attic ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AtticItem:
    ref: str
    sha: str
    at: int  # ms: the commit time of the kept tip


def attic_list(repo_path: str) -> list[AtticItem]:
    text = git.out(
        ["for-each-ref", "--format=%(refname)%00%(objectname)%00%(committerdate:unix)", ATTIC_PREFIX], repo_path
    )
    items = []
    for line in text.splitlines():
        ref, sha, at = ([*line.split("\x00"), "", "", "0"])[:3]
        items.append(AtticItem(ref, sha, int(at or 0) * 1000))
    return items


def resolve_attic_ref(ref: str) -> str:
    """`w3`, `attic/w3` or `refs/chkd/attic/w3` → the full ref of one of chkd's own attic entries.

    Anything else — another ref, a nested or empty name, a name starting with `-` or `.` — is
    refused (bad_request): restore must never read, move or delete a ref that is not chkd's."""
    text = ref.strip()
    if text.startswith(ATTIC_PREFIX):
        name = text[len(ATTIC_PREFIX) :]
    elif text.startswith("refs/"):
        name = ""
    else:
        name = text[len("attic/") :] if text.startswith("attic/") else text
    if not name or "/" in name or name.startswith(("-", ".")):
        raise ChkdError(
            "bad_request",
            f"{_shown(ref)} is not a chkd attic entry: restore takes only refs directly "
            f"under {ATTIC_PREFIX} ({ATTIC_FORMS}).",
            "See `chkdctl attic list`.",
        )
    return ATTIC_PREFIX + name


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def attic_restore(repo_path: str, ref: str, branch: str, *, explicit: bool = True) -> tuple[str, str]:
    """Create `branch` at an attic entry's commit and drop the entry, atomically. (branch, sha).

    Only chkd's own attic entries are read, and no other ref is moved or deleted: the branch is
    created only if it does not exist and the attic ref is deleted only at the sha read, in one
    ref transaction (both or neither). An `explicit` branch that exists is refused; a taken default
    name gets the first free `-2`, `-3` variant."""
    full = resolve_attic_ref(ref)
    if not git.valid_ref(full, repo_path):
        raise ChkdError("bad_request", f"{_shown(ref)} is not a valid attic entry name.", "See `chkdctl attic list`.")
    sha = git.ref_sha(full, repo_path)
    if sha is None:
        raise ChkdError("not_found", f"There is no attic ref {full} in {repo_path}.", "See `chkdctl attic list`.")
    name = _restore_target(repo_path, branch, explicit)
    stdin = f"create refs/heads/{name} {sha}\ndelete {full} {sha}\n"
    proc = git.run(["update-ref", "-m", f"chkd: attic restore {full}", "--stdin"], repo_path, input=stdin, check=False)
    if proc.returncode != 0:
        if git.ref_sha(f"refs/heads/{name}", repo_path) is not None:
            raise _branch_exists(name, repo_path)
        if git.ref_sha(full, repo_path) != sha:
            raise ChkdError("conflict", f"The attic ref {full} changed while it was restored; nothing was restored.")
        raise ChkdError(
            "conflict", f"Branch {name} could not be created: {git.reason(proc.stderr)} Nothing was restored."
        )
    return name, sha


def _restore_target(repo_path: str, branch: str, explicit: bool) -> str:
    """The branch name to restore to: `branch` itself when explicit (refused when it exists), else
    the first free variant of the default; always a name `git check-ref-format --branch` accepts."""
    if not git.valid_branch_name(branch, repo_path):
        raise ChkdError(
            "bad_request",
            f"{_shown(branch)} is not a valid branch name (git check-ref-format --branch "
            "refuses it); nothing was restored.",
            "Pick another name with --branch NAME.",
        )
    if explicit:
        if git.ref_sha(f"refs/heads/{branch}", repo_path) is not None:
            raise _branch_exists(branch, repo_path)
        return branch
    for candidate in suffixed(branch):
        if git.ref_sha(f"refs/heads/{candidate}", repo_path) is None and git.valid_branch_name(candidate, repo_path):
            return candidate
    raise ChkdError(
        "conflict",
        f"Branch {branch} and its -2 … -{MAX_SUFFIX} variants all exist; nothing was restored.",
        "Pick a name with --branch NAME.",
    )


def _branch_exists(name: str, repo_path: str) -> ChkdError:
    return ChkdError(
        "conflict",
        f"A branch named {name} already exists in {repo_path}; nothing was restored.",
        "Pick another name with --branch NAME.",
    )
