"""repo.add, repo.list, repo.rm (the area itself is daemon/repos.py)."""

from __future__ import annotations

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import Ok, RepoAdd, RepoList, RepoListResult, RepoResult, RepoRm
from chkd.protocol.names import branch_problem

from .. import repos
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


def list_(ctx: Ctx, _req: RepoList) -> RepoListResult:
    return RepoListResult(repos=repos.repo_infos(ctx))


def rm(ctx: Ctx, req: RepoRm) -> Ok:
    row = repos.resolve(ctx.store, req.repo)
    repos.remove(ctx, row)
    return Ok(message=f"Removed repository '{row['name']}' from chkd; its files and branches are untouched.")


HANDLERS = {RepoAdd: add, RepoList: list_, RepoRm: rm}
