"""The warm pool: `pool_size` worktrees per repository kept ready (created, set up, detached at
the main branch's tip), so spawn costs a `git worktree move` instead of a checkout and a setup.

Rules that keep it safe:
- Record before create: a `pool` row (status `creating`, its path) is committed before the job
  that runs `git worktree add` starts, so a kill -9 mid-refill leaves only recorded paths, which
  start-up reconciliation removes (`discard`: only a worktree carrying this home's pool marker).
- Never handed out twice: `take` runs on the loop and flips one `ready` row to `taken` (naming
  the worker) in the spawn's transaction; the loop is the only writer.
- A taken entry's worktree becomes the worker's (moved, `switch -c` its branch at the current
  tip, re-marked `worker`); its row is dropped when the spawn ends either way.
Loop-side functions use the store; the off-loop ones (`create_entry`, `take_checkout`,
`discard`) take plain values only.

Events (kind → data; each carries repo too):
    pool.ready    path, base (a warm worktree is ready)
    pool.taken    path (handed to worker_id)
    pool.failed   path, reason (a refill failed; retried after RETRY_S)
(`repo.edited` keys — the settings `repo edit` changed — is emitted by handlers/repos.py.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError

from . import failpoints, git, reposettings, workspace, worktrees
from .context import Ctx
from .store import now_ms

EXT = "pool"
#: After a refill failed, wait this long before trying again (a broken setup_cmd must not spin).
RETRY_S = 30.0


@dataclass(frozen=True)
class Entry:
    base_sha: str
    setup_hash: str | None


class NotTaken(Exception):
    """A pool entry that could not be used, before anything moved: spawn checks out anew instead."""


@dataclass(frozen=True)
class Taken:
    """A pool entry handed to one spawn (plain data for the off-loop launch)."""

    id: int
    path: str
    base_sha: str
    setup_hash: str | None
    home: str


# -- off-loop --------------------------------------------------------------------------------------
def pool_dir(repo_path: str, repo_name: str) -> Path:
    """Beside the repository (same filesystem as the workers' worktrees, so a move is a rename)."""
    repo = Path(os.path.normpath(repo_path))
    return repo.parent / f".chkd-pool-{worktrees.path_safe(repo_name)}"


def create_entry(
    repo_path: str, path: str, main_branch: str, owner: dict[str, Any], ws: reposettings.Workspace, log_path: str
) -> Entry:
    """`git worktree add --detach` at the recorded path, marked as this home's pool entry, then set up."""
    sha = git.rev(f"refs/heads/{main_branch}", repo_path)
    if sha is None:
        raise ChkdError("not_found", f"The repository {repo_path} has no branch '{main_branch}'.")
    if os.path.lexists(path):
        raise ChkdError("conflict", f"{path} exists already; it was left alone.")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    proc = git.run(["worktree", "add", "--quiet", "--detach", "--", path, sha], repo_path, check=False, timeout=600)
    if proc.returncode != 0:
        worktrees.discard_empty_dir(repo_path, path)
        raise git.GitError(f"git worktree add failed in {repo_path}: {git.reason(proc.stderr)}", proc.stderr)
    worktrees.mark_worktree(path, {**owner, "purpose": "pool"})
    failpoints.hit("pool.created")
    prepared = workspace.prepare(ws, path, log_path)
    return Entry(sha, prepared.setup_hash)


def discard(repo_path: str, path: str, home: str) -> bool:
    """Remove a pool entry's worktree: only one this home marked as its pool's (it holds no work:
    no agent ever ran there). True when nothing is left at `path`."""
    marker = worktrees.worktree_markers(repo_path).get(os.path.realpath(path))
    if worktrees.marked_by(marker, home, "pool"):
        if os.path.isdir(path):
            git.run(["worktree", "remove", "--force", "--", path], repo_path, check=False)
        else:
            worktrees.forget_worktree(repo_path, path)
    elif marker is None and os.path.isdir(path) and os.path.lexists(os.path.join(path, ".git")):
        # killed between `worktree add` and marking it: the path is recorded and did not exist before
        # the add, so it is ours; without --force git keeps it if anything at all was written there
        git.run(["worktree", "remove", "--", path], repo_path, check=False)
    elif marker is None and os.path.isdir(path):
        worktrees.discard_empty_dir(repo_path, path)  # a kill before `worktree add` wrote anything
    try:
        os.rmdir(os.path.dirname(path))  # the pool directory, once empty
    except OSError:
        pass
    return not os.path.lexists(path)


def take_checkout(
    repo_path: str,
    taken: Taken,
    path: str,
    branch: str,
    base_sha: str,
    owner: dict[str, Any] | None,
    ws: reposettings.Workspace | None,
    log_path: str,
) -> worktrees.Checkout:
    """Make a warm worktree the worker's: move it to the worker's path, `switch -c` its branch at
    `base_sha` (the current tip: files change only if main moved), re-mark it, and re-run setup
    only when its inputs changed."""
    marker = worktrees.read_marker(taken.path)
    if not worktrees.marked_by(marker, taken.home, "pool"):
        raise NotTaken(f"{taken.path} is gone or no longer chkd's")
    if os.path.lexists(path):
        raise ChkdError("conflict", f"{path} appeared while the worker was starting; it was left alone.")
    moved = git.run(["worktree", "move", taken.path, path], repo_path, check=False)
    if moved.returncode != 0:
        if os.path.lexists(path):
            raise git.GitError(f"git worktree move failed: {git.reason(moved.stderr)}", moved.stderr)
        raise NotTaken(f"git worktree move failed: {git.reason(moved.stderr).rstrip('.')}")
    _branch_here(path, branch, base_sha, taken.base_sha)
    assert marker is not None
    keep: dict[str, Any] = {k: marker[k] for k in ("copied", "setup_hash") if k in marker}
    worktrees.mark_worktree(path, {**(owner or {}), **keep, "branch": branch, "pool_entry": taken.id})
    if ws is not None:
        workspace.prepare(ws, path, log_path, done_hash=taken.setup_hash)
    return worktrees.Checkout(path, branch, base_sha)


def _branch_here(path: str, branch: str, base_sha: str, at_sha: str) -> None:
    """The worktree (detached at `at_sha`) on a new `branch` at `base_sha`. When main has not moved
    no file changes: the branch is created (only if it does not exist) and HEAD pointed at it, which
    reads no file — `git switch -c` would refresh the whole index (~50 ms on 20,000 files)."""
    if base_sha == at_sha:
        made = git.run(["update-ref", f"refs/heads/{branch}", base_sha, "0" * 40], path, check=False)
        if made.returncode != 0:
            raise git.GitError(f"git update-ref {branch} failed in {path}: {git.reason(made.stderr)}", made.stderr)
        git.run(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], path)
        return
    switched = git.run(["switch", "--quiet", "--no-guess", "-c", branch, base_sha], path, check=False)
    if switched.returncode != 0:
        raise git.GitError(f"git switch -c {branch} failed in {path}: {git.reason(switched.stderr)}", switched.stderr)


# -- on the loop -----------------------------------------------------------------------------------
def _retry_after(ctx: Ctx) -> dict[int, float]:
    return ctx.ext.setdefault(EXT, {})


def take(ctx: Ctx, repo: dict[str, Any], worker_id: str) -> Taken | None:
    """Hand one ready entry to `worker_id` (on the loop, in its transaction), or None."""
    row = ctx.store.dict("SELECT * FROM pool WHERE repo_id=? AND status='ready' ORDER BY id LIMIT 1", (repo["id"],))
    if row is None:
        return None
    ctx.store.x("UPDATE pool SET status='taken', worker_id=? WHERE id=? AND status='ready'", (worker_id, row["id"]))
    ctx.emit(ev.PoolTaken(path=row["path"]), repo=repo["name"], worker_id=worker_id)
    return Taken(row["id"], row["path"], row["base_sha"], row["setup_hash"], str(ctx.paths.state))


def spawn_ended(ctx: Ctx, worker_id: str) -> None:
    """The spawn that took an entry finished (started or failed): the entry's row goes, a worktree
    still at the pool's path (the move never happened) is removed, and the pool refills now."""
    for row in ctx.store.dicts(
        "SELECT p.*, r.path AS repo_path FROM pool p JOIN repos r ON r.id = p.repo_id "
        "WHERE p.worker_id=? AND p.status='taken'",
        (worker_id,),
    ):
        _drop(ctx, row)  # the refill follows the drop (`_drop`)


def _dropping(ctx: Ctx) -> dict[int, int]:
    """Per repository, how many entry removals are running off-loop now."""
    counts: dict[int, int] = ctx.ext.setdefault("pool.dropping", {})
    return counts


def _drop(ctx: Ctx, row: dict[str, Any]) -> None:
    """Off-loop removal of an entry's worktree; the row goes once nothing is left at its path, and
    the pool refills once the removal is over (it may remove the pool's directory, once empty)."""
    home = str(ctx.paths.state)
    repo_id: int = row["repo_id"]
    ctx.store.x("UPDATE pool SET status='dropping' WHERE id=?", (row["id"],))
    _dropping(ctx)[repo_id] = _dropping(ctx).get(repo_id, 0) + 1

    def _gone(ok: bool | None, exc: BaseException | None) -> None:
        _dropping(ctx)[repo_id] -= 1
        if exc is not None:
            ctx.log.warning("pool_discard_failed", path=row["path"], error=str(exc))
        if exc is None and ok:
            ctx.store.x("DELETE FROM pool WHERE id=?", (row["id"],))
        kick(ctx, repo_id)

    ctx.submit(discard, row["repo_path"], row["path"], home, then=_gone)


def kick(ctx: Ctx, repo_id: int) -> None:
    """Top the repository's pool up to `pool_size` (or trim it down), off-loop."""
    repo = ctx.store.dict("SELECT * FROM repos WHERE id=?", (repo_id,))
    if repo is None:
        return
    size = reposettings.pool_size(ctx, repo)
    if _dropping(ctx).get(repo_id) or ctx.store.scalar(
        "SELECT 1 FROM pool WHERE repo_id=? AND status='taken' LIMIT 1", (repo_id,)
    ):
        # No `git worktree add` beside a spawn moving an entry into place (the move can read the new
        # entry half made and fail) nor beside a removal (it removes the pool's directory once empty,
        # under the add's feet). Each of them ends with a refill.
        return
    rows = ctx.store.dicts(
        "SELECT p.*, ? AS repo_path FROM pool p WHERE repo_id=? AND status IN ('creating', 'ready') ORDER BY id",
        (repo["path"], repo_id),
    )
    for extra in [r for r in rows if r["status"] == "ready"][size:] if len(rows) > size else []:
        _drop(ctx, extra)
    if len(rows) >= size or time.monotonic() < _retry_after(ctx).get(repo_id, 0.0):
        return
    main_branch = ctx.config.for_repo(repo["name"]).main_branch or repo["main_branch"]
    ws = reposettings.workspace(ctx, repo)
    for _ in range(size - len(rows)):
        seq = ctx.store.meta_next("pool")
        path = str(pool_dir(repo["path"], repo["name"]) / f"p{seq}")
        entry_id = ctx.store.insert(
            "INSERT INTO pool(repo_id, path, status, created_at) VALUES(?,?,?,?)", (repo_id, path, "creating", now_ms())
        )
        owner = {"home": str(ctx.paths.state), "pool_entry": entry_id}
        log = str(ctx.paths.state / "pool" / f"p{seq}.log")
        ctx.submit(
            create_entry,
            repo["path"],
            path,
            main_branch,
            owner,
            ws,
            log,
            then=_when_created(ctx, entry_id, repo["path"], path),
        )


def _when_created(
    ctx: Ctx, entry_id: int, repo_path: str, path: str
) -> Callable[[Entry | None, BaseException | None], None]:
    """The job's callback for one entry (a closure per entry: the loop's `then` takes (result, exc))."""
    return lambda res, exc: _created(ctx, entry_id, repo_path, path, res, exc)


def _created(ctx: Ctx, entry_id: int, repo_path: str, path: str, res: Entry | None, exc: BaseException | None) -> None:
    row = ctx.store.dict(
        "SELECT p.*, r.path AS repo_path, r.name AS repo_name FROM pool p "
        "JOIN repos r ON r.id = p.repo_id WHERE p.id=?",
        (entry_id,),
    )
    if row is None:  # the repository was removed meanwhile: what the job made goes too
        ctx.submit(discard, repo_path, path, str(ctx.paths.state), then=lambda _ok, _exc: None)
        return
    if exc is not None or res is None:
        msg = exc.message if isinstance(exc, ChkdError) else f"{type(exc).__name__}: {exc}"
        ctx.log.warning("pool_refill_failed", repo=row["repo_name"], path=row["path"], error=msg)
        ctx.emit(ev.PoolFailed(path=row["path"], reason=msg), repo=row["repo_name"])
        _retry_after(ctx)[row["repo_id"]] = time.monotonic() + RETRY_S
        _drop(ctx, row)
        return
    ctx.store.x(
        "UPDATE pool SET status='ready', base_sha=?, setup_hash=? WHERE id=? AND status='creating'",
        (res.base_sha, res.setup_hash, entry_id),
    )
    ctx.emit(ev.PoolReady(path=row["path"], base=res.base_sha), repo=row["repo_name"])


def kick_all(ctx: Ctx) -> None:
    for (repo_id,) in ctx.store.all("SELECT id FROM repos"):
        kick(ctx, repo_id)


def forget_repo(ctx: Ctx, repo: dict[str, Any]) -> None:
    """`repo rm`: its pool entries' worktrees go (off-loop), and their rows now."""
    home = str(ctx.paths.state)
    for row in ctx.store.dicts("SELECT * FROM pool WHERE repo_id=?", (repo["id"],)):
        ctx.submit(discard, repo["path"], row["path"], home, then=lambda _ok, _exc: None)
    ctx.store.x("DELETE FROM pool WHERE repo_id=?", (repo["id"],))


def setup(ctx: Ctx) -> None:
    """Start-up: entries cut off mid-refill (`creating`), handed to a spawn the kill interrupted
    (`taken`) or being dropped are removed (only what the pool marked); then refill on a timer."""
    for row in ctx.store.dicts(
        "SELECT p.*, r.path AS repo_path FROM pool p JOIN repos r ON r.id = p.repo_id WHERE p.status != 'ready'"
    ):
        _drop(ctx, row)
    ctx.timers.every(2.0, lambda: kick_all(ctx), "pool-refill", first_in=0.1)
