"""Repositories: the one resolver (a name or any path inside one), registration (inspected
off-loop, inserted on the loop), rendering, removal; `with_repo` for commands run inside a
repository chkd does not know yet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import RepoInfo
from chkd.protocol.names import repo_name_problem
from chkd.protocol.paths import find_repo_root
from chkd.protocol.statuses import LIVE_WORKER_STATUSES

from . import git
from .context import Ctx, Deferred
from .store import Store, now_ms

REPO_COLUMNS = "id, path, name, main_branch, test_cmd, settings, added_at"


def existing_path(ref: str) -> Path | None:
    """`ref` as a path that exists, or None, also for a name the OS refuses (a part longer than
    it allows, `~nosuchuser`): a user's typo is "not found", never an internal error."""
    try:
        path = Path(ref).expanduser()
        return path if path.exists() else None
    except (OSError, ValueError, RuntimeError):
        return None


def _find(store: Store, ref: str | None) -> dict[str, Any] | None:
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


def find(store: Store, ref: str | None) -> dict[str, Any] | None:
    """The one repository resolver: the repository named `ref`, or containing the path `ref`
    (a worker's worktree maps back to its repository); nothing given, or a directory outside
    every git repository, means the only registered one. None when there is no such repository."""
    row = _find(store, ref)
    if row is None and ref and (os.sep in ref or ref.startswith(".")):
        path = existing_path(ref)
        if path is not None and path.is_dir() and find_repo_root(path) is None:
            row = _find(store, None)
    return row


def resolve(store: Store, ref: str | None) -> dict[str, Any]:
    """Like `find`, but a clear `not_found` sentence instead of None."""
    row = find(store, ref)
    if row is not None:
        return row
    if ref is None:
        count = store.scalar("SELECT count(*) FROM repos", (), 0)
        if count == 0:
            raise ChkdError(
                "not_found",
                "No repository is registered yet.",
                "Run `chkdctl repo add PATH`, or run the command inside a git repository.",
            )
        raise ChkdError("not_found", f"{count} repositories are registered; say which one with --repo NAME.")
    raise ChkdError(
        "not_found",
        f"No registered repository is named or contains '{ref}'.",
        "See `chkdctl repo list`, or add it with `chkdctl repo add PATH`.",
    )


def repo_name(store: Store, repo_id: int) -> str:
    """A repository's name from its id (`?` for one removed meanwhile)."""
    return store.scalar("SELECT name FROM repos WHERE id=?", (repo_id,), "?")


def of_worker(store: Store, worker: dict[str, Any]) -> dict[str, Any]:
    """The repository a worker row belongs to."""
    row = store.dict(f"SELECT {REPO_COLUMNS} FROM repos WHERE id=?", (worker["repo_id"],))
    if row is None:
        raise ChkdError("not_found", f"Worker {worker['id']}'s repository is no longer registered.")
    return row


@dataclass(frozen=True)
class RepoFacts:
    path: str
    main_branch: str


def inspect_repo(path: str, main_branch: str | None = None) -> RepoFacts:
    """Off-loop: check that `path` is inside a non-bare repository with commits; find its main branch."""
    p = existing_path(path)
    if p is None:
        raise ChkdError("not_found", f"The path {path} does not exist.")
    if not p.is_dir():
        p = p.parent
    proc = git.run(["rev-parse", "--is-bare-repository"], p, check=False)
    if proc.returncode != 0:
        raise ChkdError("bad_request", f"{p} is not inside a git repository.", "Run `git init` there first.")
    if proc.stdout.strip() == "true":
        raise ChkdError("bad_request", f"{p} is a bare repository; chkd needs one with a working tree.")
    common = git.out(["rev-parse", "--path-format=absolute", "--git-common-dir"], p)
    common_path = Path(common)
    root = common_path.parent if common_path.name == ".git" else Path(git.out(["rev-parse", "--show-toplevel"], p))
    if git.rev("HEAD", root) is None and not main_branch:
        raise ChkdError(
            "bad_request", f"The repository {root} has no commits yet.", "Make a first commit, then add it again."
        )
    if main_branch:
        if git.rev(f"refs/heads/{main_branch}", root) is None:
            raise ChkdError("not_found", f"The repository {root} has no branch '{main_branch}'.")
        branch = main_branch
    else:
        branch = git.current_branch(root) or ""
        if not branch:
            raise ChkdError(
                "bad_request", f"HEAD in {root} is detached, so the main branch is unclear.", "Pass --main-branch NAME."
            )
    return RepoFacts(path=str(root.resolve()), main_branch=branch)


_LIVE_IN = ",".join(f"'{s}'" for s in sorted(LIVE_WORKER_STATUSES))


def repo_info(ctx: Ctx, row: dict[str, Any]) -> RepoInfo:
    from . import reposettings

    settings = reposettings.effective(ctx, row)
    return RepoInfo(
        id=row["id"],
        name=row["name"],
        path=row["path"],
        main_branch=row["main_branch"],
        test_cmd=settings.test_cmd,
        settings=settings,
        from_config=reposettings.from_config(ctx, row["name"]),
        pool_ready=ctx.store.scalar("SELECT count(*) FROM pool WHERE repo_id=? AND status='ready'", (row["id"],), 0),
        added_at=row["added_at"],
        tasks=ctx.store.scalar("SELECT count(*) FROM task_queue WHERE repo_id=?", (row["id"],), 0),
        live_workers=ctx.store.scalar(
            f"SELECT count(*) FROM workers WHERE repo_id=? AND status IN ({_LIVE_IN})", (row["id"],), 0
        ),
    )


def repo_infos(ctx: Ctx) -> list[RepoInfo]:
    return [repo_info(ctx, r) for r in ctx.store.dicts(f"SELECT {REPO_COLUMNS} FROM repos ORDER BY name")]


def _free_name(ctx: Ctx, wanted: str) -> str:
    name, n = wanted, 1
    while ctx.store.scalar("SELECT 1 FROM repos WHERE name=?", (name,)):
        n += 1
        name = f"{wanted}-{n}"
    return name


def register(ctx: Ctx, facts: RepoFacts, name: str | None, test_cmd: list[str] | None) -> tuple[dict[str, Any], bool]:
    """Insert the repository (on the loop); returns (row, created). An existing path is returned as is."""
    existing = ctx.store.dict(f"SELECT {REPO_COLUMNS} FROM repos WHERE path=?", (facts.path,))
    if existing is not None:
        return existing, False
    if name is not None:
        if ctx.store.scalar("SELECT 1 FROM repos WHERE name=?", (name,)):
            raise ChkdError("conflict", f"A repository named '{name}' is already registered.", "Pick another --name.")
    else:
        name = _free_name(ctx, Path(facts.path).name or "repo")
    repo_id = ctx.store.insert(
        "INSERT INTO repos(path, name, main_branch, test_cmd, added_at) VALUES(?,?,?,?,?)",
        (facts.path, name, facts.main_branch, json.dumps(test_cmd) if test_cmd else None, now_ms()),
    )
    ctx.emit(ev.RepoAdded(path=facts.path, main_branch=facts.main_branch), repo=name)
    row = ctx.store.dict(f"SELECT {REPO_COLUMNS} FROM repos WHERE id=?", (repo_id,))
    assert row is not None
    return row, True


def with_repo(ctx: Ctx, ref: str | None, then: Callable[[dict[str, Any]], Any]) -> Any:
    """Call `then(repo_row)` with the repository `ref` names; an unknown path inside a git
    repository is registered first (off-loop check), and the request is answered with what
    `then` returns — unless that is the request's Deferred (then `then` answers it itself)."""
    row = find(ctx.store, ref)
    if row is not None:
        return then(row)
    if ref is None or existing_path(ref) is None:
        resolve(ctx.store, ref)  # raises the right not_found sentence
    deferred = ctx.defer()

    def _registered(facts: RepoFacts | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert facts is not None
        row, _ = register(ctx, facts, None, None)
        result = then(row)
        if not isinstance(result, Deferred):
            ctx.finish(deferred, result)

    ctx.submit(inspect_repo, ref, then=_registered, reply_to=deferred)
    return deferred


def check_repo_name(name: str) -> str:
    """A name given with `--name`: it becomes part of worktree paths, so nothing path-like or option-like."""
    problem = repo_name_problem(name)
    if problem is not None:
        shown = name if len(name) <= 80 else name[:79] + "…"
        raise ChkdError(
            "bad_request",
            f"'{shown}' is not a valid repository name: {problem}.",
            "Use letters, digits, spaces and - _ (like my-app).",
        )
    return name


def remove(ctx: Ctx, row: dict[str, Any]) -> None:
    """Forget a repository and everything chkd recorded for it (refused while workers live);
    its files and branches are untouched (chkd's own gate and pool worktrees of it are removed)."""
    from . import gate, pool, taskqueue  # they render repository names through this module

    info = repo_info(ctx, row)
    if info.live_workers:
        raise ChkdError(
            "refused",
            f"The repository '{row['name']}' has {info.live_workers} live worker(s).",
            "Abort them first (`chkdctl abort --all --repo NAME`).",
        )
    store = ctx.store
    store.x("DELETE FROM sessions WHERE repo_id=?", (row["id"],))
    store.x("DELETE FROM merges WHERE repo_id=?", (row["id"],))
    from . import agent_profiles  # the Claude files of its workers go with their rows

    for (wid,) in store.all("SELECT id FROM workers WHERE repo_id=?", (row["id"],)):
        agent_profiles.forget_claude_files(ctx, wid)
    store.x("DELETE FROM workers WHERE repo_id=?", (row["id"],))
    pool.forget_repo(ctx, row)  # chkd's own worktrees of it go: the warm pool's and the gate's
    ctx.submit(
        gate.remove,
        row["path"],
        gate.gate_path(ctx.paths.state, row["id"], row["name"]),
        str(ctx.paths.state),
        then=lambda _ok, _exc: None,
    )
    taskqueue.forget_repo(ctx, row["id"])
    store.x("DELETE FROM repos WHERE id=?", (row["id"],))
    ctx.emit(ev.RepoRemoved(path=row["path"]), repo=row["name"])
