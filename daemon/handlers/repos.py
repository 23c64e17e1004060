"""repo.add, repo.edit, repo.list, repo.rm (the area itself is daemon/repos.py; settings: daemon/reposettings.py)."""

from __future__ import annotations

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import Ok, RepoAdd, RepoEdit, RepoList, RepoListResult, RepoResult, RepoRm
from chkd.protocol.names import branch_problem

from .. import pool, repos, reposettings
from ..context import Ctx, Deferred


def add(ctx: Ctx, req: RepoAdd) -> Deferred:
    if req.name is not None:
        repos.check_repo_name(req.name)
    if req.main_branch is not None and (problem := branch_problem(req.main_branch)) is not None:
        raise ChkdError("bad_request", f"--main-branch is not a branch name: {problem}.")
    deferred = ctx.defer()

    def _inspected(facts: repos.RepoFacts | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert facts is not None
        row, created = repos.register(ctx, facts, req.name, req.test_cmd)
        ctx.finish(deferred, RepoResult(repo=repos.repo_info(ctx, row), created=created))

    ctx.submit(repos.inspect_repo, req.path, req.main_branch, then=_inspected, reply_to=deferred)
    return deferred


def edit(ctx: Ctx, req: RepoEdit) -> RepoResult:
    row = repos.resolve(ctx.store, req.repo)
    changed = reposettings.edit(ctx, row, req.set, list(req.unset))
    ctx.emit(ev.RepoEdited(keys=changed), repo=row["name"])
    pool.kick(ctx, row["id"])  # a new pool_size takes effect now (its jobs start after the commit)
    return RepoResult(repo=repos.repo_info(ctx, repos.resolve(ctx.store, row["name"])))


def list_(ctx: Ctx, _req: RepoList) -> RepoListResult:
    return RepoListResult(repos=repos.repo_infos(ctx))


def rm(ctx: Ctx, req: RepoRm) -> Ok:
    row = repos.resolve(ctx.store, req.repo)
    repos.remove(ctx, row)
    return Ok(message=f"Removed repository '{row['name']}' from chkd; its files and branches are untouched.")


HANDLERS = {RepoAdd: add, RepoEdit: edit, RepoList: list_, RepoRm: rm}


def setup(ctx: Ctx) -> None:
    pool.setup(ctx)
