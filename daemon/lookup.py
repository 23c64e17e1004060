"""Finding repositories and workers from what a user typed: names, paths, id prefixes.

Pure store reads, no git: a path is mapped to its repository through `.git` files
(`chkd.protocol.paths.find_repo_root`), and a worker's worktree maps to its repository.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chkd.protocol.errors import ChkdError
from chkd.protocol.paths import find_repo_root

from .store import Store

REPO_COLUMNS = "id, path, name, main_branch, test_cmd, added_at"


def existing_path(ref: str) -> Path | None:
    """`ref` as a path that exists, or None, also for a name the OS refuses (a part longer than
    it allows, `~nosuchuser`): a user's typo is "not found", never an internal error."""
    try:
        path = Path(ref).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError, RuntimeError):
        return None


def find_repo(store: Store, ref: str | None) -> dict[str, Any] | None:
    """The repository named `ref`, or containing the path `ref` (default: none given → the only one)."""
    if ref is None:
        rows = store.dicts(f"SELECT {REPO_COLUMNS} FROM repos")
        return rows[0] if len(rows) == 1 else None
    row = store.dict(f"SELECT {REPO_COLUMNS} FROM repos WHERE name=?", (ref,))
    if row is not None:
        return row
    if os.sep not in ref and not ref.startswith("."):
        return None
    path = existing_path(ref)
    if path is None:
        try:
            candidates = [os.path.realpath(os.path.expanduser(ref))]  # a worktree that is gone
        except (OSError, ValueError, RuntimeError):
            return None
    else:
        candidates = [str(path.resolve())]
        root = find_repo_root(path)
        if root is not None:
            candidates.insert(0, str(root))
    for candidate in candidates:
        row = store.dict(f"SELECT {REPO_COLUMNS} FROM repos WHERE path=?", (candidate,))
        if row is not None:
            return row
        # inside a worker's worktree whose .git link is gone, or any path below a worktree
        row = store.dict(
            f"SELECT {', '.join('r.' + c.strip() for c in REPO_COLUMNS.split(','))} FROM workers w "
            "JOIN repos r ON r.id = w.repo_id WHERE ? = w.worktree_path OR ? LIKE w.worktree_path || '/%' "
            "ORDER BY w.seq DESC LIMIT 1",
            (candidate, candidate),
        )
        if row is not None:
            return row
    return None


def repo(store: Store, ref: str | None) -> dict[str, Any]:
    """Like `find_repo`, but a clear `not_found` error instead of None."""
    row = find_repo(store, ref)
    if row is not None:
        return row
    if ref is None:
        count = store.scalar("SELECT count(*) FROM repos", (), 0)
        if count == 0:
            raise ChkdError("not_found", "No repository is registered yet.",
                            "Run `chkdctl repo add PATH`, or run the command inside a git repository.")
        raise ChkdError("not_found", f"{count} repositories are registered; say which one with --repo NAME.")
    raise ChkdError("not_found", f"No registered repository is named or contains '{ref}'.",
                    "See `chkdctl repo list`, or add it with `chkdctl repo add PATH`.")


def worker(store: Store, ref: str) -> dict[str, Any]:
    """The worker with id `ref`, or the only one whose id starts with `ref`."""
    row = store.dict("SELECT * FROM workers WHERE id=?", (ref,))
    if row is not None:
        return row
    ref_clean = ref.strip()
    if not ref_clean:
        raise ChkdError("bad_request", "No worker id was given.")
    escaped = ref_clean.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = store.dicts("SELECT * FROM workers WHERE id LIKE ? ESCAPE '\\' ORDER BY seq LIMIT 6", (escaped + "%",))
    if len(rows) == 1:
        return rows[0]
    if not rows:
        # also accept the task id a worker runs (most recent worker for it)
        rows = store.dicts("SELECT * FROM workers WHERE task_id=? ORDER BY seq DESC LIMIT 1", (ref_clean,))
        if rows:
            return rows[0]
        raise ChkdError("not_found", f"No worker has the id '{ref}'.", "See `chkdctl workers --all`.")
    names = ", ".join(r["id"] for r in rows[:5])
    raise ChkdError("conflict", f"'{ref}' matches several workers ({names}); type more of the id.")
