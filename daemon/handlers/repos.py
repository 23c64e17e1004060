"""repo.add, repo.list, repo.rm — and `ensure_repo` for commands run inside an unknown repository."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.names import branch_problem, repo_name_problem
from chkd.protocol.messages import LIVE_WORKER_STATUSES, Ok, RepoAdd, RepoInfo, RepoList, RepoListResult, RepoResult, RepoRm

from .. import agent_profiles, git, lookup, tasks
from ..context import Ctx
from ..store import now_ms


@dataclass(frozen=True)
class RepoFacts:
    path: str
    main_branch: str


def inspect_repo(path: str, main_branch: str | None = None) -> RepoFacts:
    """Off-loop: check that `path` is inside a non-bare repository with commits; find its main branch."""
    p = lookup.existing_path(path)  # type: ignore[assignment]
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
        raise ChkdError("bad_request", f"The repository {root} has no commits yet.",
                        "Make a first commit, then add it again.")
    if main_branch:
        if git.rev(f"refs/heads/{main_branch}", root) is None:
            raise ChkdError("not_found", f"The repository {root} has no branch '{main_branch}'.")
        branch = main_branch
    else:
        branch = git.current_branch(root) or ""
        if not branch:
            raise ChkdError("bad_request", f"HEAD in {root} is detached, so the main branch is unclear.",
                            "Pass --main-branch NAME.")
    return RepoFacts(path=str(root.resolve()), main_branch=branch)


_LIVE_IN = ",".join(f"'{s}'" for s in sorted(LIVE_WORKER_STATUSES))


def repo_info(ctx: Ctx, row: dict[str, Any]) -> RepoInfo:
    return RepoInfo(
        id=row["id"],
        name=row["name"],
        path=row["path"],
        main_branch=row["main_branch"],
        test_cmd=json.loads(row["test_cmd"]) if row["test_cmd"] else None,
        added_at=row["added_at"],
        tasks=ctx.store.scalar("SELECT count(*) FROM task_queue WHERE repo_id=?", (row["id"],), 0),
        live_workers=ctx.store.scalar(
            f"SELECT count(*) FROM workers WHERE repo_id=? AND status IN ({_LIVE_IN})", (row["id"],), 0
        ),
    )


def repo_infos(ctx: Ctx) -> list[RepoInfo]:
    return [repo_info(ctx, r) for r in ctx.store.dicts(f"SELECT {lookup.REPO_COLUMNS} FROM repos ORDER BY name")]


def _free_name(ctx: Ctx, wanted: str) -> str:
    name, n = wanted, 1
    while ctx.store.scalar("SELECT 1 FROM repos WHERE name=?", (name,)):
        n += 1
        name = f"{wanted}-{n}"
    return name


def register(ctx: Ctx, facts: RepoFacts, name: str | None, test_cmd: list[str] | None) -> tuple[dict[str, Any], bool]:
    """Insert the repository (on the loop); returns (row, created). An existing path is returned as is."""
    existing = ctx.store.dict(f"SELECT {lookup.REPO_COLUMNS} FROM repos WHERE path=?", (facts.path,))
    if existing is not None:
        return existing, False
    if name is not None:
        if ctx.store.scalar("SELECT 1 FROM repos WHERE name=?", (name,)):
            raise ChkdError("conflict", f"A repository named '{name}' is already registered.",
                            "Pick another --name.")
    else:
        name = _free_name(ctx, Path(facts.path).name or "repo")
    repo_id = ctx.store.insert(
        "INSERT INTO repos(path, name, main_branch, test_cmd, added_at) VALUES(?,?,?,?,?)",
        (facts.path, name, facts.main_branch, json.dumps(test_cmd) if test_cmd else None, now_ms()),
    )
    ctx.emit(ev.RepoAdded(path=facts.path, main_branch=facts.main_branch), repo=name)
    row = ctx.store.dict(f"SELECT {lookup.REPO_COLUMNS} FROM repos WHERE id=?", (repo_id,))
    assert row is not None
    return row, True


def ensure_repo(ctx: Ctx, ref: str | None, then: Callable[[dict[str, Any]], Any]) -> Any:
    """Call `then(repo_row)` with the repository `ref` names; an unknown path inside a git
    repository is registered first (off-loop check), and the request is answered when done."""
    row = lookup.find_repo(ctx.store, ref)
    if row is not None:
        return then(row)
    if ref is None or lookup.existing_path(ref) is None:
        lookup.repo(ctx.store, ref)  # raises the right not_found sentence
    deferred = ctx.defer()

    def _registered(facts: RepoFacts | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert facts is not None
        row, _ = register(ctx, facts, None, None)
        ctx.finish(deferred, then(row))

    ctx.submit(inspect_repo, ref, then=_registered, reply_to=deferred)
    return deferred


def check_repo_name(name: str) -> str:
    """A name given with `--name`: it becomes part of worktree paths, so nothing path-like or option-like."""
    problem = repo_name_problem(name)
    if problem is not None:
        shown = name if len(name) <= 80 else name[:79] + "…"
        raise ChkdError("bad_request", f"'{shown}' is not a valid repository name: {problem}.",
                        "Use letters, digits, spaces and - _ (like my-app).")
    return name


def add(ctx: Ctx, req: RepoAdd) -> Any:
    if req.name is not None:
        check_repo_name(req.name)
    if req.main_branch is not None and (problem := branch_problem(req.main_branch)) is not None:
        raise ChkdError("bad_request", f"--main-branch is not a branch name: {problem}.")
    deferred = ctx.defer()

    def _inspected(facts: RepoFacts | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert facts is not None
        row, created = register(ctx, facts, req.name, req.test_cmd)
        ctx.finish(deferred, RepoResult(repo=repo_info(ctx, row), created=created))

    ctx.submit(inspect_repo, req.path, req.main_branch, then=_inspected, reply_to=deferred)
    return deferred


def list_(ctx: Ctx, _req: RepoList) -> RepoListResult:
    return RepoListResult(repos=repo_infos(ctx))


def rm(ctx: Ctx, req: RepoRm) -> Ok:
    row = lookup.repo(ctx.store, req.repo)
    info = repo_info(ctx, row)
    if info.live_workers:
        raise ChkdError("refused", f"The repository '{row['name']}' has {info.live_workers} live worker(s).",
                        "Abort them first (`chkdctl abort --all --repo NAME`).")
    store = ctx.store
    store.x("DELETE FROM sessions WHERE repo_id=?", (row["id"],))
    store.x("DELETE FROM merges WHERE repo_id=?", (row["id"],))
    for (wid,) in store.all("SELECT id FROM workers WHERE repo_id=?", (row["id"],)):
        agent_profiles.forget_claude_files(ctx, wid)
    store.x("DELETE FROM workers WHERE repo_id=?", (row["id"],))
    tasks.forget_repo(ctx, row["id"])
    store.x("DELETE FROM repos WHERE id=?", (row["id"],))
    ctx.emit(ev.RepoRemoved(path=row["path"]), repo=row["name"])
    return Ok(message=f"Removed repository '{row['name']}' from chkd; its files and branches are untouched.")


HANDLERS = {RepoAdd: add, RepoList: list_, RepoRm: rm}
