"""chkdctl send, inbox, sessions — and `hook`, the command Claude Code's hooks run inside a worker."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..output import ago, echo, json_option, print_json, table


# -- send ------------------------------------------------------------------------------------------
def send_message(app: Any, to: str | None, all_: bool, text: str, repo: str | None = None) -> list[Any]:
    """Leave `text` for worker `to` (or every live worker): the agent gets it at its next tool use
    (the PostToolUse hook) or when it asks (chkd_inbox). One function, so an interactive worker's
    way (typing into its terminal) can be added beside it."""
    from chkd.protocol.messages import Send

    return app.call(Send(to=to, all=all_, text=text, repo=repo, sender="user")).messages


@click.command("inbox")
@click.argument("worker")
@click.option("--unread", is_flag=True, help="Only messages the agent has not received yet.")
@click.option(
    "-n", "limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="At most this many (the newest)."
)
@json_option
@click.pass_obj
def inbox(app: Any, worker: str, unread: bool, limit: int) -> None:
    """A worker's messages, oldest first, and whether the agent has received each (reading
    them here does not mark them read)."""
    from chkd.protocol.messages import Inbox

    res = app.call(Inbox(worker=worker, unread=unread, limit=limit))
    if app.json:
        print_json(res.messages)
        return
    if not res.messages:
        echo("No unread messages." if unread else "No messages.")
        return
    from ..messages_text import sender_words

    rows = [
        [
            str(m.id),
            sender_words(m),
            f"{ago(m.created_at)} ago",
            f"read {ago(m.read_at)} ago" if m.read_at else "unread",
            " ".join(m.text.split()),
        ]
        for m in res.messages
    ]
    click.echo(table(rows, ["ID", "FROM", "SENT", "STATE", "TEXT"]))


@click.command("sessions")
@click.option("--all", "all_", is_flag=True, help="Ended sessions too (the latest 200).")
@json_option
@click.pass_obj
def sessions(app: Any, all_: bool) -> None:
    """MCP sessions (chkd-mcp connections): masters' and workers' own."""
    from chkd.protocol.messages import SessionList

    res = app.call(SessionList(all=all_))
    if app.json:
        print_json(res.sessions)
        return
    if not res.sessions:
        echo("No MCP sessions." if all_ else "No open MCP sessions.")
        return
    rows = [
        [
            str(s.id),
            "master" if s.is_master else f"worker {s.worker_id}",
            s.repo or "-",
            str(s.pid or "-"),
            f"{ago(s.started_at)} ago",
            f"ended {ago(s.ended_at)} ago ({s.end_reason})" if s.ended_at else "open",
        ]
        for s in res.sessions
    ]
    click.echo(table(rows, ["ID", "WHO", "REPO", "PID", "STARTED", "STATE"]))


# -- hook ----------------------------------------------------------------------------------------------
HOOK_TIMEOUT_S = 3.0


def _hook_input(raw: str) -> dict[str, Any]:
    """Claude Code's hook JSON (session_id, hook_event_name, tool_name, message, ...); {} when unreadable."""
    import json

    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return value.replace("\x00", "")[:limit]


def run_hook(event: str, raw: str, worker_id: str | None, paths: Any) -> str | None:
    """Report the hook to the daemon; the stdout to print (post-tool-use with messages), or None.
    Raises on any trouble: the caller turns that into a line on stderr and exit 0."""
    from chkd.protocol import messages as M

    from ..client import Client
    from ..messages_text import post_tool_use_output

    if not worker_id:
        raise RuntimeError("CHKD_WORKER_ID is not set: this hook only reports inside a chkd worker")
    data = _hook_input(raw)
    body = M.Hook(
        worker=worker_id,
        event=event,  # type: ignore[arg-type]
        tool=_text(data.get("tool_name"), M.MAX_TITLE),
        message=_text(data.get("message"), 2000),
        session_id=_text(data.get("session_id"), M.MAX_ID),
    )
    with Client(paths, timeout=HOOK_TIMEOUT_S, autostart=False) as client:
        ack = client.call(body)
    out = post_tool_use_output(ack.messages, worker_id) if event == "post-tool-use" else None
    if out is None:
        return None
    import json

    return json.dumps(out)


@click.command("hook")
@click.argument("event", type=click.Choice(["post-tool-use", "notification", "stop"]))
@click.pass_obj
def hook(app: Any, event: str) -> None:
    """(Claude Code hooks, inside a worker) Report activity; post-tool-use also hands the model
    its unread messages (printed as hookSpecificOutput.additionalContext, each message once).

    Reads the hook's JSON on stdin and CHKD_WORKER_ID. Never breaks the agent: without a
    daemon, or on any error, it prints one line on stderr and exits 0."""
    try:
        raw = sys.stdin.read() if not sys.stdin.isatty() else ""
        out = run_hook(event, raw, os.environ.get("CHKD_WORKER_ID"), app.paths)
    except Exception as exc:  # noqa: BLE001 - a hook must never fail the agent's tool call
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        click.echo(f"chkd hook {event}: {message}", err=True)
        return
    if out is not None:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()


COMMANDS: list[click.Command] = [inbox, sessions, hook]  # `send` lives in terminal.py (types or messages)
