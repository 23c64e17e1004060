"""The one way the daemon runs git: argument lists, no shell, timeouts, errors as sentences.

Everything here blocks, so it is only ever called from off-loop jobs (`ctx.submit`),
never from a handler directly.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from chkd.protocol.errors import ChkdError

DEFAULT_TIMEOUT = 120.0

#: Identity for commits the daemon makes when the repository has none configured.
FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "chkd",
    "GIT_AUTHOR_EMAIL": "chkd@localhost",
    "GIT_COMMITTER_NAME": "chkd",
    "GIT_COMMITTER_EMAIL": "chkd@localhost",
}


class GitError(ChkdError):
    def __init__(self, message: str, stderr: str = "", returncode: int = 1) -> None:
        super().__init__("conflict", message)
        self.stderr = stderr
        self.returncode = returncode


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"})
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    if extra:
        env.update(extra)
    return env


#: How long a command waits for another git's lock (index.lock, a ref lock) to go: a git started by
#: a daemon that was killed goes on as an orphan and finishes; its lock is not a reason to fail.
LOCK_WAIT_S = 60.0
_LOCKED = (".lock': File exists", ".lock': file exists")


def run(
    args: Sequence[str],
    cwd: str | Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `git ARGS` in `cwd`. With `check`, a non-zero exit raises GitError with git's own reason.
    A command that finds another git's lock is run again until the lock goes (LOCK_WAIT_S)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    delay = 0.05
    while True:
        proc = _run_once(args, cwd, timeout, input, env)
        if proc.returncode == 0 or not any(m in proc.stderr for m in _LOCKED) or time.monotonic() > deadline:
            break
        time.sleep(delay)
        delay = min(1.0, delay * 2)
    if check and proc.returncode != 0:
        raise GitError(
            f"git {args[0]} failed in {cwd}: {reason(proc.stderr or proc.stdout)}", proc.stderr, proc.returncode
        )
    return proc


def _run_once(
    args: Sequence[str], cwd: str | Path, timeout: float, input: str | None, env: dict[str, str] | None
) -> subprocess.CompletedProcess[str]:
    argv = ["git", *args]
    try:
        return subprocess.run(
            argv,
            cwd=str(cwd),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=git_env(env),
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} took longer than {timeout:.0f} s in {cwd} and was stopped.") from None
    except FileNotFoundError:
        if not Path(cwd).exists():
            raise GitError(f"The directory {cwd} does not exist.") from None
        raise GitError("git is not installed or not on PATH.") from None
    except NotADirectoryError:
        raise GitError(f"{cwd} is not a directory.") from None


def out(
    args: Sequence[str],
    cwd: str | Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """stdout of a git command that must succeed, stripped."""
    return run(args, cwd, timeout=timeout, input=input, env=env).stdout.strip()


def reason(stderr: str) -> str:
    """git's most telling line, as the end of a sentence."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("fatal:", "error:")):
            text = ln.split(":", 1)[1].strip()
            return text.rstrip(".") + "."
    return (lines[-1].rstrip(".") + ".") if lines else "no reason given."


def identity_env(cwd: str | Path) -> dict[str, str]:
    """The fallback identity, only for the parts git config does not already provide."""
    env: dict[str, str] = {}
    name = run(["config", "user.name"], cwd, check=False).stdout.strip()
    email = run(["config", "user.email"], cwd, check=False).stdout.strip()
    if not name:
        env.update({k: v for k, v in FALLBACK_IDENTITY.items() if k.endswith("_NAME")})
    if not email:
        env.update({k: v for k, v in FALLBACK_IDENTITY.items() if k.endswith("_EMAIL")})
    return env


def rev(ref: str, cwd: str | Path) -> str | None:
    """The commit `ref` names, or None."""
    proc = run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def ref_sha(ref: str, cwd: str | Path) -> str | None:
    """The object the full ref `ref` (`refs/...`) points at, read exactly: no revision syntax, no DWIM."""
    if not ref.startswith("refs/"):
        raise ValueError(f"not a full ref: {ref!r}")
    proc = run(["show-ref", "--verify", "--hash", ref], cwd, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def valid_ref(ref: str, cwd: str | Path) -> bool:
    """Whether `ref` is a well-formed full ref name (`git check-ref-format`)."""
    return ref.startswith("refs/") and run(["check-ref-format", ref], cwd, check=False).returncode == 0


def valid_branch_name(name: str, cwd: str | Path) -> bool:
    """Whether `name` can name a new branch (`git check-ref-format --branch`).

    A leading `-` is refused before git sees it (never read as an option), and the name must
    stand for itself: `@{-1}` and friends expand to another branch's name, so they are refused."""
    if not name or name.startswith("-"):
        return False
    proc = run(["check-ref-format", "--branch", name], cwd, check=False)
    return proc.returncode == 0 and proc.stdout.strip() == name


def exclude_pathspecs(paths: Sequence[str]) -> list[str]:
    """Pathspecs for "everything but these literal paths" (after a `--`)."""
    return ["."] + [f":(exclude,literal){p}" for p in paths] if paths else []


def dirty_files(cwd: str | Path, *, tracked_only: bool = False, exclude: Sequence[str] = ()) -> list[str]:
    """Paths with uncommitted changes (untracked too unless `tracked_only`), leaving out `exclude`."""
    args = ["status", "--porcelain=v1", "-z"]
    if tracked_only:
        args.append("--untracked-files=no")
    if exclude:
        args += ["--", *exclude_pathspecs(exclude)]
    raw = run(args, cwd).stdout
    files: list[str] = []
    entries = raw.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        files.append(entry[3:])
        if entry[0] in "RC":  # a rename carries its source path in the next entry
            i += 1
    return files


def current_branch(cwd: str | Path) -> str | None:
    proc = run(["symbolic-ref", "--quiet", "--short", "HEAD"], cwd, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def merge_tree(ours: str, theirs: str, cwd: str | Path) -> tuple[str | None, list[str]]:
    """Merge two commits in memory (`git merge-tree --write-tree`, no checkout, no index).

    Returns (tree, []) when clean, or (None, conflicting paths) on conflict.
    """
    proc = run(["merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs], cwd, check=False)
    if proc.returncode == 0:
        return proc.stdout.split("\0", 1)[0].strip(), []
    if proc.returncode == 1:
        parts = proc.stdout.split("\0")
        files = sorted({p for p in parts[1:] if p.strip()})
        return None, files
    raise GitError(f"git merge-tree failed in {cwd}: {reason(proc.stderr)}", proc.stderr, proc.returncode)


def content_in(branch: str, target: str, cwd: str | Path) -> bool:
    """Whether everything `branch` holds is already in `target` — by content, not reachability.

    True when `branch` is an ancestor of `target`, or when merging it into `target`
    would change nothing (so squash and cherry-picked merges count as merged).
    """
    branch_sha, target_sha = rev(branch, cwd), rev(target, cwd)
    if branch_sha is None:
        return True  # nothing there to lose
    if target_sha is None:
        return False
    if run(["merge-base", "--is-ancestor", branch_sha, target_sha], cwd, check=False).returncode == 0:
        return True
    tree, conflicts = merge_tree(target_sha, branch_sha, cwd)
    return not conflicts and tree == out(["rev-parse", f"{target_sha}^{{tree}}"], cwd)


def unmerged_commits(branch: str, target: str, cwd: str | Path, limit: int = 20) -> list[str]:
    """One line per commit on `branch` not reachable from `target` (`sha subject`)."""
    text = out(["log", f"--max-count={limit}", "--format=%h %s", f"{target}..{branch}", "--"], cwd)
    return [ln for ln in text.splitlines() if ln]
