"""chkdctl top [--web [--port P]]: the live dashboard, in the terminal or in a browser.

Textual and textual-serve are imported here, inside the command, so every other chkdctl
command starts without them.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

import click

from chkd.protocol.errors import ChkdError

from ..output import echo


@click.command("top")
@click.option("--repo", metavar="R", help="Only this repository's workers, tasks and merges.")
@click.option("--web", is_flag=True, help="Serve the dashboard to a browser on localhost (textual-serve).")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port for --web (it listens on localhost only).",
)
@click.pass_obj
def top(app: Any, repo: str | None, web: bool, port: int) -> None:
    """The live dashboard: worker cards, task queue, events, merges, conflict radar, logs.

    Keys: w next worker, n spawn next, s spawn a task, p/r pause/resume (P/R all), m merge,
    v merge with review, a approve, j reject, x abort, u update, d diff, l log, t send a
    message, Enter attach, o autopilot, q quit. Cards are clickable.
    """
    import gc

    terminal = sys.stdin.isatty() and sys.stdout.isatty()
    if not web and not terminal and "TEXTUAL_DRIVER" not in os.environ:
        # (textual-serve runs this command on pipes with its own driver set: that is fine)
        raise ChkdError(
            "bad_request",
            "chkdctl top needs a terminal.",
            "Use `chkdctl watch` for plain event lines, or `chkdctl top --web` for a browser.",
        )
    gc.enable()  # a long-running app: collect as usual
    app.client.ensure_daemon()  # start chkdd (or its service) now, not from inside the app
    if web:
        _serve(app, repo, port)
        return
    from ..tui.app import run_top

    run_top(app.paths, repo=repo)


def _serve(app: Any, repo: str | None, port: int) -> None:
    from textual_serve.server import Server

    from chkd.protocol.launch import module_argv

    home = ["--home", str(app.paths.home)] if app.paths.home is not None else []
    argv = module_argv("chkd.client.cli", *home, "top", *(["--repo", repo] if repo else []))
    echo(f"chkd top on http://localhost:{port}/ (Ctrl-C stops it)")
    try:
        Server(shlex.join(argv), host="localhost", port=port, title="chkd top").serve()
    except OSError as exc:  # the port is taken, or localhost cannot be bound
        raise ChkdError(
            "busy", f"Cannot serve on localhost:{port} ({exc.strerror or exc}).", "Choose another port with --port."
        ) from None


COMMANDS: list[click.Command] = [top]
