"""chkdctl repo add|list|rm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..output import ago, echo, fail, json_option, print_json, table


@click.group("repo")
def repo_group() -> None:
    """Repositories chkd serves (one daemon serves many)."""


@repo_group.command("add")
@click.argument("path", default=".")
@click.option("--name", default=None, help="Its name in chkd (default: the directory name).")
@click.option("--main-branch", default=None, metavar="B", help="The branch work merges into (default: HEAD's).")
@click.option("--test-cmd", default=None, metavar="CMD", help='The test gate, like "pytest -q" (split like a shell).')
@json_option
@click.pass_obj
def repo_add(app: Any, path: str, name: str | None, main_branch: str | None, test_cmd: str | None) -> None:
    """Register the git repository at PATH (default: the current directory)."""
    import shlex

    from chkd.protocol.messages import RepoAdd

    argv = None
    if test_cmd is not None:
        try:
            argv = shlex.split(test_cmd)
        except ValueError as exc:
            fail(f"--test-cmd cannot be split into words ({exc}).")
        if not argv:
            fail("--test-cmd is empty.")
    res = app.call(RepoAdd(path=str(Path(path).expanduser().absolute()), name=name, main_branch=main_branch,
                           test_cmd=argv))
    if app.json:
        print_json(res)
        return
    r = res.repo
    if res.created:
        echo(f"Added repository {r.name}: {r.path} (main branch {r.main_branch}).")
    else:
        echo(f"{r.path} is already registered as {r.name} (main branch {r.main_branch}).")


@repo_group.command("list")
@json_option
@click.pass_obj
def repo_list(app: Any) -> None:
    """Registered repositories with their task and live worker counts."""
    from chkd.protocol.messages import RepoList

    res = app.call(RepoList())
    if app.json:
        print_json(res.repos)
        return
    if not res.repos:
        echo("No repositories yet: `chkdctl repo add PATH`, or `chkdctl task add` inside one.")
        return
    rows = [[r.name, r.main_branch, str(r.tasks), str(r.live_workers), ago(r.added_at),
             " ".join(r.test_cmd) if r.test_cmd else "-", r.path] for r in res.repos]
    click.echo(table(rows, ["NAME", "MAIN", "TASKS", "LIVE", "ADDED", "TEST", "PATH"]))


@repo_group.command("rm")
@click.argument("name")
@json_option
@click.pass_obj
def repo_rm(app: Any, name: str) -> None:
    """Forget a repository and its tasks (refused while it has live workers; files are untouched)."""
    from chkd.protocol.messages import RepoRm

    res = app.call(RepoRm(repo=name))
    if app.json:
        print_json(res)
        return
    echo(res.message)


COMMANDS: list[click.Command] = [repo_group]
