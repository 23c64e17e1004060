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
    res = app.call(
        RepoAdd(path=str(Path(path).expanduser().absolute()), name=name, main_branch=main_branch, test_cmd=argv)
    )
    if app.json:
        print_json(res)
        return
    r = res.repo
    if res.created:
        echo(f"Added repository {r.name}: {r.path} (main branch {r.main_branch}).")
    else:
        echo(f"{r.path} is already registered as {r.name} (main branch {r.main_branch}).")


def _argv(option: str, text: str | None) -> list[str] | None:
    import shlex

    if text is None:
        return None
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        fail(f"{option} cannot be split into words ({exc}).")
    if not argv:
        fail(f"{option} is empty (use --unset KEY to clear a setting).")
    return argv


@repo_group.command("edit")
@click.argument("name")
@click.option("--test-cmd", default=None, metavar="CMD", help='The test gate, like "pytest -q" (split like a shell).')
@click.option(
    "--test-timeout", "test_timeout_s", type=float, default=None, metavar="S", help="Seconds the gate may run."
)
@click.option(
    "--setup-cmd",
    default=None,
    metavar="CMD",
    help='Run in every new worktree (and the gate\'s) before use, like "npm ci".',
)
@click.option(
    "--setup-timeout", "setup_timeout_s", type=float, default=None, metavar="S", help="Seconds setup may run."
)
@click.option(
    "--copy",
    "copy",
    multiple=True,
    metavar="GLOB",
    help="Untracked files copied from the main checkout into each worktree (repeatable); never committed.",
)
@click.option(
    "--setup-input",
    "setup_inputs",
    multiple=True,
    metavar="GLOB",
    help="Files whose change re-runs setup in the gate and pooled worktrees (repeatable).",
)
@click.option(
    "--gate-strict/--no-gate-strict",
    default=None,
    help="A gate that read files from the main checkout fails the merge.",
)
@click.option("--pool-size", type=int, default=None, metavar="N", help="Worktrees kept ready for spawn (0: none).")
@click.option(
    "--merge-batch",
    type=int,
    default=None,
    metavar="N",
    help="Merges gated together in one merge train (1: one at a time).",
)
@click.option("--unset", "unset", multiple=True, metavar="KEY", help="Clear a setting (repeatable), e.g. setup_cmd.")
@json_option
@click.pass_obj
def repo_edit(
    app: Any,
    name: str,
    test_cmd: str | None,
    test_timeout_s: float | None,
    setup_cmd: str | None,
    setup_timeout_s: float | None,
    copy: tuple[str, ...],
    setup_inputs: tuple[str, ...],
    gate_strict: bool | None,
    pool_size: int | None,
    merge_batch: int | None,
    unset: tuple[str, ...],
) -> None:
    """Change a registered repository's settings (kept in chkd's database; keys that config.toml's
    [repos.NAME] sets live there instead and are refused here)."""
    from chkd.protocol.messages import RepoEdit, RepoSettings

    changes = RepoSettings(
        test_cmd=_argv("--test-cmd", test_cmd),
        test_timeout_s=test_timeout_s,
        setup_cmd=_argv("--setup-cmd", setup_cmd),
        setup_timeout_s=setup_timeout_s,
        copy=list(copy) or None,
        setup_inputs=list(setup_inputs) or None,
        gate_strict=gate_strict,
        pool_size=pool_size,
        merge_batch=merge_batch,
    )
    res = app.call(RepoEdit(repo=name, set=changes, unset=list(unset)))
    if app.json:
        print_json(res)
        return
    echo(f"Changed repository {res.repo.name} (stored in chkd's database):")
    _show_settings(res.repo)


def _show_settings(repo: Any) -> None:
    import msgspec

    from chkd.protocol.messages import REPO_SETTING_KEYS

    values = msgspec.to_builtins(repo.settings) if repo.settings is not None else {}
    for key in REPO_SETTING_KEYS:
        if key in values:
            where = "config.toml" if key in repo.from_config else "database"
            value = values[key]
            shown = (
                " ".join(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) else value
            )
            echo(f"  {key} = {shown}  ({where})")


@repo_group.command("show")
@click.argument("name")
@json_option
@click.pass_obj
def repo_show(app: Any, name: str) -> None:
    """One repository's settings and where each lives (config.toml or chkd's database)."""
    from chkd.protocol.messages import RepoList

    res = app.call(RepoList())
    found = [r for r in res.repos if r.name == name]
    if not found:
        fail(f"There is no repository named '{name}' (see `chkdctl repo list`).")
    if app.json:
        print_json(found[0])
        return
    r = found[0]
    echo(f"{r.name}: {r.path} (main branch {r.main_branch})")
    _show_settings(r)


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
    rows = [
        [
            r.name,
            r.main_branch,
            str(r.tasks),
            str(r.live_workers),
            ago(r.added_at),
            " ".join(r.test_cmd) if r.test_cmd else "-",
            r.path,
        ]
        for r in res.repos
    ]
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
