"""chkdctl db backup FILE, db check: the daemon's database, copied and checked while it runs."""

from __future__ import annotations

import os
from typing import Any

import click

from ..output import Exit, echo, json_option, print_json

#: A backup or check of a large database takes a while; the daemon keeps serving meanwhile.
DB_TIMEOUT = 900.0


@click.group("db")
def db_group() -> None:
    """The daemon's SQLite database: online backup and integrity check."""


@db_group.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@json_option
@click.pass_obj
def db_backup(app: Any, file: str, force: bool) -> None:
    """Copy the database to FILE while chkdd runs (SQLite online backup).

    The copy is written beside FILE under a temporary name, must open and pass
    integrity_check, and only then becomes FILE (mode 0600). An existing FILE is kept
    unless --force.
    """
    from chkd.protocol.messages import DbBackup

    path = os.path.abspath(os.path.expanduser(file))  # the daemon's cwd is not ours
    res = app.call(DbBackup(path=path, force=force), timeout=DB_TIMEOUT)
    if app.json:
        print_json(res)
        return
    echo(
        f"Backed up the database to {res.path}: {res.pages} pages, {_size(res.bytes)} in "
        f"{res.seconds:.2f} s; integrity_check ok."
    )


@db_group.command("check")
@json_option
@click.pass_obj
def db_check(app: Any) -> None:
    """Run integrity_check and foreign_key_check on the live database. Exit 1 when not ok."""
    from chkd.protocol.messages import DbCheck

    res = app.call(DbCheck(), timeout=DB_TIMEOUT)
    if app.json:
        print_json(res)
    elif res.ok:
        echo(f"{res.db}: ok (integrity_check and foreign_key_check, {res.seconds:.2f} s).")
    else:
        n = len(res.problems) + len(res.foreign_key_problems)
        echo(f"{res.db}: {n} problem(s) found.")
        for line in res.problems:
            echo(f"  integrity: {line}")
        for line in res.foreign_key_problems:
            echo(f"  foreign key: {line}")
        echo(
            "Stop the daemon and restore a backup (`chkdctl db backup` makes one), or ask for help with "
            "the lines above."
        )
    if not res.ok:
        raise Exit(1)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


COMMANDS: list[click.Command] = [db_group]
