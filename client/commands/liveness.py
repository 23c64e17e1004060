"""chkdctl watch, events, gc: following what happens, reading history, clearing leftovers."""

from __future__ import annotations

import time
from functools import cache
from typing import TYPE_CHECKING, Any

import click

from ..icons import STATUS_ICONS
from ..output import echo, fail, print_json, table, visible

if TYPE_CHECKING:
    from chkd.protocol.messages import Event

#: Data fields shown first (when present) after the who.
DETAIL_KEYS = ("status", "title", "reason", "message", "summary", "files", "attempts", "what")


@cache
def _icons() -> dict[type, str]:
    """Icons by event type (protocol/events.py is imported when the first event is shown)."""
    from chkd.protocol import events as ev

    return {
        ev.RepoAdded: "📁", ev.RepoRemoved: "📁",
        ev.TaskAdded: "➕", ev.TaskStatusChanged: "📋", ev.TaskEdited: "✏️", ev.TaskClaimed: "📌",
        ev.TaskRequeued: "🔁", ev.TaskFailed: "❌", ev.TaskEscalated: "🚨",
        ev.WorkerSpawned: "🚀", ev.WorkerStarted: "▶️", ev.WorkerExited: "🏁", ev.WorkerKilled: "🔪",
        ev.WorkerCommitted: "💾", ev.WorkerHeartbeat: "💓", ev.WorkerInput: "⌨️",
        ev.MergeQueued: "🔀", ev.MergeMerged: "🎉", ev.MergeConflicted: "⚠️", ev.MergeFailed: "❌",
        ev.MergeGateSuspect: "🕵️", ev.MergeTrainRan: "🚆", ev.RepoEdited: "📁",
        ev.PoolReady: "🧊", ev.PoolTaken: "🧊", ev.PoolFailed: "❌",
        ev.GcRemoved: "🧹",
    }  # fmt: skip


def icon(data: Any) -> str:
    """A worker status change shows the new status's icon; other events their type's."""
    from chkd.protocol.events import WorkerStatusChanged

    if isinstance(data, WorkerStatusChanged) and data.to in STATUS_ICONS:
        return STATUS_ICONS[data.to]
    return _icons().get(type(data), "•")


def _short(value: Any, width: int = 80) -> str:
    if isinstance(value, list):
        value = ", ".join(map(str, value[:8])) + (" …" if len(value) > 8 else "")
    text = str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def format_event(ev: Event) -> str:
    """One readable line: time, seq, icon, kind, who, then the telling details."""
    from chkd.protocol.events import TaskStatusChanged, WorkerStatusChanged, fields_of

    clock = time.strftime("%H:%M:%S", time.localtime(ev.at / 1000))
    who = " ".join(p for p in (ev.repo, ev.worker_id, ev.task_id and f"task {ev.task_id}") if p)
    data = fields_of(ev.data)
    details = []
    if isinstance(ev.data, (WorkerStatusChanged, TaskStatusChanged)):
        details.append(f"{ev.data.from_ or '?'} → {ev.data.to}")
        data.pop("from", None)
        data.pop("to", None)
    data = {k: v for k, v in data.items() if v not in (None, "", [], {})}
    details += [f"{k}={_short(data.pop(k))}" for k in DETAIL_KEYS if k in data]
    details += [f"{k}={_short(v, 40)}" for k, v in sorted(data.items())][:4]
    parts = [f"{clock} #{ev.seq:<5} {icon(ev.data)} {ev.kind:<16}", who, " ".join(details)]
    return visible("  ".join(p for p in parts if p).rstrip())


def _resolve_worker(app: Any, ref: str | None) -> str | None:
    """A full worker id for the live filter (it compares ids exactly); unknown ids stay as typed."""
    if ref is None:
        return None
    from chkd.protocol.errors import ChkdError
    from chkd.protocol.messages import WorkerShow

    try:
        return app.call(WorkerShow(worker=ref)).worker.id
    except ChkdError as exc:
        if exc.code in ("not_found", "bad_request"):
            return ref
        raise


@click.command("watch")
@click.option(
    "--since",
    type=int,
    default=None,
    metavar="SEQ",
    help="Replay every event after SEQ first (default: only new events; 0 = all history).",
)
@click.option("--worker", "-w", metavar="W", help="Only events of this worker (id or unique prefix).")
@click.option("--task", "-t", metavar="T", help="Only events of this task id.")
@click.option("--repo", metavar="R", help="Only events of this repository.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option(
    "--idle-exit",
    type=float,
    default=None,
    metavar="S",
    hidden=True,
    help="Exit after S seconds without events (for scripts and tests).",
)
@click.pass_obj
def watch(
    app: Any,
    since: int | None,
    worker: str | None,
    task: str | None,
    repo: str | None,
    as_json: bool,
    idle_exit: float | None,
) -> None:
    """Stream events live as they happen, in order, with no gaps; survives a daemon restart.

    Stop with Ctrl-C. `--since SEQ` replays history first, so a watcher that reconnects
    continues from the last seq it printed.
    """
    import gc
    import signal
    import sys
    import threading

    import msgspec

    from chkd.protocol.messages import Ping

    gc.enable()  # long-running: cli.py turned cyclic GC off for start-up speed
    as_json = as_json or app.json
    worker_id = _resolve_worker(app, worker)
    if since is None:
        since = app.call(Ping()).last_seq
    if since < 0:
        fail("--since must be 0 or more.")
    client = app.client
    client.timeout = 3.0  # a request lost in a daemon restart is retried quickly
    encoder = msgspec.json.Encoder()
    # Ctrl-C is how a watch ends (exit 0, no complaint). It only sets a flag the loop reads: a
    # KeyboardInterrupt raised at whatever line the signal lands on can fall inside a destructor,
    # where Python swallows it ("Exception ignored in …"), and the watch would then run on.
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda _sig, _frame: stopping.set())
    for ev in client.events(
        since, worker=worker_id, task=task, repo=repo, follow=True, idle_timeout=idle_exit, stop=stopping.is_set
    ):
        sys.stdout.write(encoder.encode(ev).decode() + "\n" if as_json else format_event(ev) + "\n")
        sys.stdout.flush()
        if stopping.is_set():
            break


@click.command("events")
@click.option(
    "-n",
    "count",
    type=click.IntRange(1, 5000),
    default=50,
    show_default=True,
    help="How many of the newest events to show.",
)
@click.option("--since", type=int, default=0, metavar="SEQ", help="Only events after SEQ.")
@click.option("--worker", "-w", metavar="W", help="Only events of this worker.")
@click.option("--task", "-t", metavar="T", help="Only events of this task id.")
@click.option("--repo", metavar="R", help="Only events of this repository.")
@click.pass_obj
def events(app: Any, count: int, since: int, worker: str | None, task: str | None, repo: str | None) -> None:
    """List the event history (newest last)."""
    from chkd.protocol.messages import Events

    res = app.call(Events(since=since, limit=count, tail=count, worker=worker, task=task, repo=repo))
    if app.json:
        print_json(res)
        return
    if not res.events:
        echo("No events match." if (worker or task or repo or since) else "No events yet.")
        return
    for ev in res.events:
        click.echo(format_event(ev))


@click.command("gc")
@click.option("--apply", "apply_", is_flag=True, help="Remove what is safe to remove (default: only list).")
@click.option("--repo", metavar="R", help="Only this repository (default: every registered one).")
@click.pass_obj
def gc_cmd(app: Any, apply_: bool, repo: str | None) -> None:
    """Find leftovers of what chkd itself created and recorded: finished workers whose worktree
    is gone (or an empty directory a spawn left), merged workers' left-behind worktrees and
    branches, dead workers older than a week, and worktrees carrying chkd's owner marker that
    no worker records.

    Never touches live or merging workers. Your own worktrees and branches (even ones matching
    worktree_pattern or branch_prefix) are listed as "not ours" and kept. Dry run unless
    --apply; never removes work that is not in the target branch (uncommitted changes or
    unmerged commits are kept)."""
    from chkd.protocol.messages import Gc

    res = app.call(Gc(repo=repo, apply=apply_), timeout=600)
    if app.json:
        print_json(res)
        return
    if not res.items:
        echo("Nothing to clean up.")
        return
    rows = []
    for it in res.items:
        if it.removed:
            action = "removed"
        elif it.removable:
            action = "would remove" if not res.applied else "kept"
        else:
            action = "kept"
        rows.append([it.kind, it.repo, it.what, action, it.reason])
    click.echo(table(rows, ["KIND", "REPO", "WHAT", "ACTION", "REASON"]))
    removable = sum(1 for it in res.items if it.removable and not it.removed)
    if not res.applied and removable:
        echo(f"{removable} item(s) can be removed safely; run `chkdctl gc --apply` to remove them.")


COMMANDS: list[click.Command] = [watch, events, gc_cmd]
