"""chkdctl spawn, workers/ps, worker show, pause, resume, abort, logs, rm, attic — and, for agents
inside a worker, heartbeat, worker-status, done."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from chkd.protocol.statuses import FINAL_WORKER_STATUSES

from ..icons import STATUS_ICONS
from ..output import Exit, ago, echo, fail, json_option, print_json, table

#: `chkdctl worker-status` exit codes, so an agent's script can branch without parsing.
STATUS_EXIT = {"working": 0, "starting": 0, "waiting": 0, "stalled": 0, "paused": 10, "aborted": 11}
STATUS_EXIT_OTHER = 12


def status_word(status: str) -> str:
    return f"{STATUS_ICONS.get(status, '·')} {status}"


def _short(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def cost_words(usd: float) -> str:
    """`$0.21`, `$0.0042` for sub-cent amounts, `-` for none."""
    if not usd:
        return "-"
    return f"${usd:.2f}" if usd >= 0.01 else f"${usd:.4f}"


def worker_rows(workers: list[Any], now: int | None = None) -> list[list[str]]:
    return [
        [
            w.id,
            status_word(w.status),
            w.task_id or "-",
            _short(w.task_title, 40),
            ago(w.started_at, now),
            ago(w.heartbeat_at, now),
            cost_words(w.cost_usd),
            _short(w.message or w.last_error, 50),
            w.branch or "-",
        ]
        for w in workers
    ]


HEADERS = ["ID", "STATUS", "TASK", "TITLE", "AGE", "BEAT", "COST", "MESSAGE", "BRANCH"]


def _print_worker(w: Any) -> None:
    pairs = [
        ("worker", f"{w.id} ({w.repo})"),
        ("status", status_word(w.status)),
        ("task", f"{w.task_id or '-'}: {w.task_title or ''}".rstrip(": ")),
        ("agent", w.agent or "-"),
        ("worktree", w.worktree or "-"),
        ("branch", w.branch or "-"),
        ("terminal", f"tmux session {w.tmux_session} (`chkdctl attach {w.id}`)" if w.tmux_session else "- (detached)"),
        ("pid", f"{w.pid} (group {w.pgid})" if w.pid else "-"),
        ("started", f"{ago(w.started_at)} ago"),
        ("heartbeat", f"{ago(w.heartbeat_at)} ago" if w.heartbeat_at else "-"),
        ("activity", f"{ago(w.activity_at)} ago" if w.activity_at else "-"),
        ("message", w.message or "-"),
        ("tokens", f"{w.tokens_in:,} in, {w.tokens_out:,} out, ${w.cost_usd:.4f}"),
    ]
    if w.session_id or w.model:
        pairs.append(
            (
                "session",
                f"{w.session_id or '-'} ({w.model or 'model unknown'})" + (f", run {w.runs}" if w.runs > 1 else ""),
            )
        )
    if w.exit_code is not None:
        pairs.append(("exit code", str(w.exit_code)))
    if w.last_error:
        pairs.append(("last error", w.last_error))
    pairs.append(("log", w.log_path or "-"))
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        echo(f"{k.rjust(width)}  {v}")


def _worker_env(worker: str | None) -> str:
    wid = worker or os.environ.get("CHKD_WORKER_ID")
    if not wid:
        fail("No worker id: this command runs inside a chkd worker (CHKD_WORKER_ID), or give --worker W.")
    return wid


#: The reply to spawn comes once the agent started, after the repository's setup_cmd (which may take
#: minutes: a venv, `npm ci`); setup has its own timeout (setup_timeout_s), this only bounds the wait.
SPAWN_TIMEOUT_S = 3600.0


def _agent_client(app: Any, timeout: float = 10.0) -> Any:
    """Agents never start a daemon: a missing one is an error they can ignore and retry."""
    from ..client import Client

    return Client(app.paths, timeout=timeout, autostart=False)


# -- spawn --------------------------------------------------------------------------------------
@click.command("spawn")
@click.argument("task_id", required=False)
@click.option("--title", help="Create the task with this title when TASK_ID does not exist yet.")
@click.option("--description", default="", help="Description for a task created with --title.")
@click.option("--next", "next_", is_flag=True, help="Claim the most urgent ready task instead of naming one.")
@click.option("--tag", help="With --next: only tasks with this tag.")
@click.option("--agent", help="Agent profile (default: default_agent in config.toml, 'demo' if unset).")
@click.option("--cmd", "cmd", metavar='"CMD ARGS"', help="Run this command as the agent instead of a profile.")
@click.option(
    "--interactive",
    is_flag=True,
    help="Run the agent in a tmux session (attach, peek, send), as interactive profiles do.",
)
@click.option("--repo", metavar="NAME|PATH", help="The repository (default: the one containing the current directory).")
@json_option
@click.pass_obj
def spawn(
    app: Any,
    task_id: str | None,
    title: str | None,
    description: str,
    next_: bool,
    tag: str | None,
    agent: str | None,
    cmd: str | None,
    interactive: bool,
    repo: str | None,
) -> None:
    """Start a worker on TASK_ID (or --next) in its own worktree and branch."""
    import shlex

    from chkd.protocol.messages import Spawn

    if not task_id and not next_:
        raise click.UsageError("Give a TASK_ID or --next.")
    if task_id and next_:
        raise click.UsageError("Give a TASK_ID or --next, not both.")
    if agent and cmd:
        raise click.UsageError("Give --agent or --cmd, not both.")
    try:
        argv = shlex.split(cmd) if cmd is not None else None
    except ValueError as exc:
        raise click.UsageError(f"--cmd cannot be split into arguments: {exc}.") from None
    body = Spawn(
        repo=repo or os.getcwd(),
        task_id=task_id,
        title=title,
        description=description,
        next=next_,
        tag=tag,
        agent=agent,
        cmd=argv,
        interactive=interactive,
    )
    res = app.call(body, timeout=SPAWN_TIMEOUT_S)
    w = res.worker
    if app.json:
        print_json(w)
        return
    echo(f"{w.id}  {status_word(w.status)}  task {w.task_id}: {w.task_title}")
    echo(f"  worktree {w.worktree}")
    echo(f"  branch   {w.branch}")
    if w.interactive:
        echo(
            f"  in tmux  `chkdctl attach {w.id}` (detach: Ctrl-b d), `chkdctl peek {w.id}`, `chkdctl send {w.id} TEXT`"
        )
    if res.spend is not None:
        from .autopilot import spend_words

        echo(f"  spend    {spend_words(res.spend)}")


# -- listing --------------------------------------------------------------------------------------
#: How `workers` sums the table up in one line: who needs you, who works, who is finished.
GLANCE: list[tuple[str, frozenset[str]]] = [
    ("waiting for you", frozenset({"waiting"})),
    ("working", frozenset({"starting", "working", "stalled", "paused", "merging"})),
    ("done", frozenset({"done", "merged"})),
    ("need a look", frozenset({"conflict", "error", "dead", "aborted"})),
]


def glance(workers: list[Any]) -> str:
    """`🔔 1 waiting for you · 2 working · 1 done` (groups with nobody in them left out)."""
    parts = []
    for words, statuses in GLANCE:
        n = sum(1 for w in workers if w.status in statuses)
        if n:
            icon = STATUS_ICONS["waiting"] + " " if statuses == GLANCE[0][1] else ""
            parts.append(f"{icon}{n} {words}")
    return " · ".join(parts)


@click.command("workers")
@click.option("--all", "all_", is_flag=True, help="Merged workers too.")
@click.option("--waiting", is_flag=True, help="Only workers waiting for you (a question, a permission prompt).")
@click.option("--repo", metavar="NAME|PATH", help="Only this repository (default: all).")
@json_option
@click.pass_obj
def workers(app: Any, all_: bool, waiting: bool, repo: str | None) -> None:
    """List workers: status, task, age, last heartbeat, last message (a waiting worker's question), branch."""
    from chkd.protocol.messages import WorkerList

    res = app.call(WorkerList(repo=repo, all=all_, status="waiting" if waiting else None))
    if app.json:
        print_json(res.workers)
        return
    if not res.workers:
        echo(
            "No worker is waiting for you."
            if waiting
            else "No workers. Start one with `chkdctl spawn TASK_ID` or `chkdctl spawn --next`."
        )
        return
    click.echo(table(worker_rows(res.workers), HEADERS))
    if not waiting:
        echo(glance(res.workers))


ps = click.Command(
    "ps", callback=workers.callback, params=workers.params, help="Alias of `workers`.", short_help="Alias of `workers`."
)


@click.group("worker")
def worker_group() -> None:
    """One worker in detail."""


@worker_group.command("show")
@click.argument("worker")
@json_option
@click.pass_obj
def worker_show(app: Any, worker: str) -> None:
    """Everything about WORKER (id or unique prefix)."""
    from chkd.protocol.messages import WorkerShow

    res = app.call(WorkerShow(worker=worker))
    if app.json:
        print_json(res.worker)
        return
    _print_worker(res.worker)


# -- pause / resume / abort ------------------------------------------------------------------------
def _control(app: Any, body: Any, verb: str, worker: str | None, all_: bool) -> None:

    if not worker and not all_:
        raise click.UsageError("Give a worker id or --all.")
    if worker and all_:
        raise click.UsageError("Give a worker id or --all, not both.")
    res = app.call(body)
    if app.json:
        print_json(res.workers)
        return
    if not res.workers:
        echo(f"No worker to {verb}.")
    for w in res.workers:
        echo(f"{w.id}  {status_word(w.status)}  task {w.task_id}")


def _targets(which: str) -> Any:
    """The options pause, resume and abort share: one WORKER, or --all [--repo R]."""

    def wrap(fn: Any) -> Any:
        for option in reversed(
            [
                click.argument("worker", required=False),
                click.option("--all", "all_", is_flag=True, help=f"Every {which} worker."),
                click.option("--repo", metavar="NAME|PATH", help="With --all: only this repository."),
            ]
        ):
            fn = option(fn)
        return fn

    return wrap


@click.command("pause")
@_targets("running")
@json_option
@click.pass_obj
def pause(app: Any, worker: str | None, all_: bool, repo: str | None) -> None:
    """Freeze a worker's agent (SIGSTOP to its process group)."""
    from chkd.protocol.messages import Pause

    _control(app, Pause(worker=worker, all=all_, repo=repo), "pause", worker, all_)


@click.command("resume")
@_targets("paused")
@click.option(
    "--over-budget",
    is_flag=True,
    help="Resume workers the daily budget paused too, and let work start again, for the rest of today.",
)
@json_option
@click.pass_obj
def resume(app: Any, worker: str | None, all_: bool, repo: str | None, over_budget: bool) -> None:
    """Let a paused worker go on (SIGCONT)."""
    from chkd.protocol.messages import Resume

    _control(app, Resume(worker=worker, all=all_, repo=repo, over_budget=over_budget), "resume", worker, all_)


@click.command("abort")
@_targets("live")
@click.option("--cancel-task", is_flag=True, help="Cancel the task too (default: it goes back to pending).")
@json_option
@click.pass_obj
def abort(app: Any, worker: str | None, all_: bool, repo: str | None, cancel_task: bool) -> None:
    """Stop a worker: SIGTERM to its process group, SIGKILL after abort_grace_s. Its worktree stays."""
    from chkd.protocol.messages import Abort

    _control(app, Abort(worker=worker, all=all_, repo=repo, cancel_task=cancel_task), "abort", worker, all_)


# -- logs -------------------------------------------------------------------------------------------
def tail_lines(data: bytes, n: int) -> bytes:
    """The last `n` lines of `data`."""
    if n <= 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:])


def _read_tail(path: str, n: int | None) -> tuple[bytes, int]:
    """(the last n lines, or all; the offset after them)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if n is None:
                fh.seek(0)
                return fh.read(), size
            start = max(0, size - max(65536, n * 512))
            fh.seek(start)
            return tail_lines(fh.read(), n), size
    except FileNotFoundError:
        return b"", 0


@click.command("logs")
@click.argument("worker")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until the worker finishes.")
@click.option("-n", "lines", type=click.IntRange(0), default=None, help="Only the last N lines.")
@click.pass_obj
def logs(app: Any, worker: str, follow: bool, lines: int | None) -> None:
    """The agent's output (state/workers/<id>.log), printed raw, byte for byte as the agent wrote it:
    unlike every other command, terminal escapes in it are not made visible (pipe it through
    `cat -v` or `less` to see them as text)."""
    from chkd.protocol.messages import WorkerShow

    w = app.call(WorkerShow(worker=worker)).worker
    path = w.log_path or str(app.paths.worker_log(w.id))
    data, offset = _read_tail(path, lines)
    out = sys.stdout.buffer
    out.write(data)
    out.flush()
    if not follow:
        return
    import gc

    gc.enable()
    status, checked = w.status, time.monotonic()
    while True:
        offset = _copy_new(path, offset, out)
        if status in FINAL_WORKER_STATUSES:
            _copy_new(path, offset, out)
            return
        time.sleep(0.2)
        if time.monotonic() - checked > 1.0:
            checked = time.monotonic()
            status = app.call(WorkerShow(worker=w.id)).worker.status
            if status in FINAL_WORKER_STATUSES:
                time.sleep(0.3)  # let the shim write its last lines


def _copy_new(path: str, offset: int, out: Any) -> int:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return offset
    if chunk:
        out.write(chunk)
        out.flush()
    return offset + len(chunk)


# -- rm and the attic --------------------------------------------------------------------------------
@click.command("rm")
@click.argument("worker")
@click.option(
    "--force",
    is_flag=True,
    help="Remove even with uncommitted or unmerged work (saved first under refs/chkd/attic/<worker>).",
)
@json_option
@click.pass_obj
def rm(app: Any, worker: str, force: bool) -> None:
    """Remove a finished worker's worktree and branch; refuses if that would lose work."""
    from chkd.protocol.messages import Remove

    res = app.call(Remove(worker=worker, force=force), timeout=120)
    if app.json:
        print_json(res)
        return
    echo(res.message)


@click.group("attic")
def attic_group() -> None:
    """Work kept from forced removals (refs/chkd/attic/<worker>)."""


def _default_repo(repo: str | None) -> str | None:
    if repo:
        return repo
    from chkd.protocol.paths import find_repo_root

    return os.getcwd() if find_repo_root(os.getcwd()) else None


@attic_group.command("list")
@click.option("--repo", metavar="NAME|PATH", help="Only this repository (default: the current one, else all).")
@json_option
@click.pass_obj
def attic_list(app: Any, repo: str | None) -> None:
    """List the attic refs."""
    from chkd.protocol.messages import AtticList

    res = app.call(AtticList(repo=_default_repo(repo)), timeout=60)
    if app.json:
        print_json(res.entries)
        return
    if not res.entries:
        echo("The attic is empty.")
        return
    click.echo(
        table(
            [[e.worker_id, e.sha[:10], f"{ago(e.at)} ago", e.ref] for e in res.entries],
            ["WORKER", "COMMIT", "KEPT", "REF"],
        )
    )


@attic_group.command("restore")
@click.argument("ref")
@click.option("--branch", help="Branch to create (default: the worker's old branch, else chkd/attic-<worker>).")
@click.option("--repo", metavar="NAME|PATH", help="The repository (default: the one containing the current directory).")
@json_option
@click.pass_obj
def attic_restore(app: Any, ref: str, branch: str | None, repo: str | None) -> None:
    """Bring REF (a worker id like w3, or the full ref) back as a branch."""
    from chkd.protocol.messages import AtticRestore

    res = app.call(AtticRestore(ref=ref, branch=branch, repo=_default_repo(repo)), timeout=60)
    if app.json:
        print_json(res)
        return
    echo(res.message)


# -- for agents inside a worker -------------------------------------------------------------------------
@click.command("heartbeat")
@click.option("--message", "-m", help="What the agent is doing now.")
@click.option("--tokens-in", type=click.IntRange(0), default=0, help="Input tokens used since the last heartbeat.")
@click.option("--tokens-out", type=click.IntRange(0), default=0, help="Output tokens used since the last heartbeat.")
@click.option("--cost", type=click.FloatRange(0), default=0.0, help="Cost in USD since the last heartbeat.")
@click.option(
    "--waiting",
    metavar="QUESTION",
    help="The agent needs a person: the worker is `waiting` (with QUESTION shown and notified) "
    "until its next activity or input.",
)
@click.option("--worker", help="Worker id (default: $CHKD_WORKER_ID).")
@json_option
@click.pass_obj
def heartbeat(
    app: Any, message: str | None, tokens_in: int, tokens_out: int, cost: float, waiting: str | None, worker: str | None
) -> None:
    """(Agents) Report progress: proves the agent is getting somewhere. Never starts a daemon."""
    from chkd.protocol.messages import Heartbeat

    wid = _worker_env(worker)
    with _agent_client(app, timeout=5.0) as client:
        ack = client.call(
            Heartbeat(
                worker=wid, message=message, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost, waiting=waiting
            )
        )
    if app.json:
        print_json(ack)
    elif ack.status not in ("working", "waiting"):
        echo(ack.status)


@click.command("worker-status")
@click.option("--worker", help="Worker id (default: $CHKD_WORKER_ID).")
@json_option
@click.pass_obj
def worker_status(app: Any, worker: str | None) -> None:
    """(Agents) Print what the daemon wants: working, paused, aborted, …

    Exit code: 0 working (also starting, waiting, stalled), 10 paused, 11 aborted, 12 anything else
    (done, error, dead, merged, …), 1 when the daemon cannot be asked.
    """
    from chkd.protocol.messages import WorkerState

    wid = _worker_env(worker)
    with _agent_client(app, timeout=5.0) as client:
        ack = client.call(WorkerState(worker=wid))
    if app.json:
        print_json(ack)
    else:
        echo(ack.status)
    code = STATUS_EXIT.get(ack.status, STATUS_EXIT_OTHER)
    if code:
        raise Exit(code)


@click.command("done")
@click.option("--summary", "-s", default="", help="One line on what was done (the commit message).")
@click.option("--worker", help="Worker id (default: $CHKD_WORKER_ID).")
@json_option
@click.pass_obj
def done(app: Any, summary: str, worker: str | None) -> None:
    """(Agents) Finish: commit uncommitted work as `chkd: <task>: <summary>`, worker done, task in review."""
    from chkd.protocol.messages import Done

    wid = _worker_env(worker)
    with _agent_client(app, timeout=60.0) as client:
        res = client.call(Done(worker=wid, summary=summary))
    if app.json:
        print_json(res.worker)
        return
    echo(f"{res.worker.id} done; task {res.worker.task_id} is in review.")


COMMANDS: list[click.Command] = [
    spawn,
    workers,
    ps,
    worker_group,
    pause,
    resume,
    abort,
    logs,
    rm,
    attic_group,
    heartbeat,
    worker_status,
    done,
]
