"""chkdctl attach, peek, send: pair with a worker — look at its screen, type into it, take its terminal.

Interactive workers (`interactive = true` profiles) run in tmux sessions on chkd's own tmux
server (`<run dir>/tmux.sock`); `attach` runs the tmux client right here, so the terminal is
yours until you detach (`Ctrl-b d`) and the agent keeps running. `peek` and `send` go through
the daemon (which runs tmux off its loop), so every client — chkd-mcp, the dashboard — gets the
same answers. A detached worker has no terminal: `peek` shows its log's tail.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..output import echo, fail, json_option, print_json

LIVE = frozenset({"starting", "working", "waiting", "stalled", "paused"})


def _worker(app: Any, worker: str) -> Any:
    from chkd.protocol.messages import WorkerShow

    return app.call(WorkerShow(worker=worker)).worker


@click.command("attach")
@click.argument("worker")
@click.option(
    "--read-only", is_flag=True, help="Only watch: typing and resizing are ignored; the worker stays waiting."
)
@click.pass_obj
def attach(app: Any, worker: str, read_only: bool) -> None:
    """Attach this terminal to an interactive WORKER's tmux session; returns when you detach
    (Ctrl-b d). The agent keeps running. Attaching (not --read-only) counts as answering a waiting worker."""
    import shutil
    import subprocess

    from chkd.protocol import tmux
    from chkd.protocol.messages import Attached

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail(
            f"chkdctl attach needs a terminal (stdin and stdout are not one); use `chkdctl peek {worker}` to "
            f"see its screen or `chkdctl send {worker} TEXT` to type into it."
        )
    if shutil.which(tmux.TMUX) is None:
        fail("chkdctl attach runs tmux, and tmux is not installed here.")
    w = _worker(app, worker)
    if not w.interactive or not w.tmux_session:
        fail(
            f"Worker {w.id} runs detached, not in a terminal, so there is nothing to attach to; "
            f"follow its output with `chkdctl logs {w.id} -f`."
        )
    if w.status not in LIVE:
        fail(f"Worker {w.id} is {w.status}; its terminal closed when its agent ended (see `chkdctl logs {w.id}`).")
    if not read_only:
        w = app.call(Attached(worker=w.id)).worker
    env = {k: v for k, v in os.environ.items() if k not in tmux.OUTER_TMUX_VARS}  # chkd's server, not yours
    how = "read-only, " if read_only else ""
    echo(f"Attaching to worker {w.id} ({how}detach with Ctrl-b d; the agent keeps running).", err=True)
    rc = subprocess.call(tmux.attach(str(app.paths.tmux_socket), w.tmux_session, read_only=read_only), env=env)
    if rc != 0:
        fail(f"tmux could not attach to worker {w.id}'s session (exit code {rc}); is the worker still running?")
    echo(f"Detached from worker {w.id}; it keeps running.", err=True)


@click.command("peek")
@click.argument("worker")
@click.option(
    "-n",
    "lines",
    type=click.IntRange(1, 10000),
    default=40,
    show_default=True,
    help="How many lines (of the screen and, above it, its history).",
)
@json_option
@click.pass_obj
def peek(app: Any, worker: str, lines: int) -> None:
    """Print WORKER's screen as it is now (an interactive worker), or its log's last lines (a detached one)."""
    from chkd.protocol.messages import Peek

    res = app.call(Peek(worker=worker, lines=lines), timeout=30)
    if app.json:
        print_json(res)
        return
    for line in res.text.splitlines():
        echo(line)


def type_into(app: Any, worker_id: str, text: str, enter: bool) -> Any:
    """Keys into an interactive worker's terminal (a waiting worker goes back to working)."""
    from chkd.protocol.messages import SendKeys

    return app.call(SendKeys(worker=worker_id, text=text, enter=enter), timeout=30).worker


def message_to(app: Any, to: str | None, text: str, all_: bool = False, repo: str | None = None) -> None:
    """A detached worker has no terminal: what reaches it is a message (issue 12's messages table),
    delivered at its next tool use (Claude's PostToolUse hook) or when it asks (chkd_inbox)."""
    from .messages import send_message

    sent = send_message(app, to, all_, text, repo)
    if app.json:
        print_json(sent)
        return
    who = ", ".join(m.to_worker for m in sent)
    echo(f"{'Messages' if len(sent) > 1 else 'Message'} sent to {who}; delivered at the next tool use.")


@click.command("send")
@click.argument("words", nargs=-1, required=True)
@click.option("--all", "all_", is_flag=True, help="A message to every live worker (then every argument is the text).")
@click.option("--repo", metavar="NAME|PATH", help="With --all: only this repository's workers.")
@click.option("--no-enter", is_flag=True, help="Type TEXT without pressing Enter after it.")
@json_option
@click.pass_obj
def send(app: Any, words: tuple[str, ...], all_: bool, repo: str | None, no_enter: bool) -> None:
    """Send TEXT to WORKER (`send W TEXT...`, or `send --all TEXT...`): an interactive worker gets
    it typed into its terminal (then Enter), which answers a waiting worker; a detached one gets
    a message it reads at its next tool use (see `chkdctl inbox W`)."""
    if all_:
        message_to(app, None, " ".join(words), all_=True, repo=repo)
        return
    if len(words) < 2:
        raise click.UsageError("Give a worker id and the text (or --all and the text).")
    worker, text = words[0], " ".join(words[1:])
    w = _worker(app, worker)
    if not w.interactive:
        message_to(app, w.id, text)
        return
    fresh = type_into(app, w.id, text, not no_enter)
    if app.json:
        print_json(fresh)
        return
    echo(f"Typed into worker {fresh.id} ({fresh.status}).")


COMMANDS: list[click.Command] = [attach, peek, send]
