"""peek, send.keys, attached: looking at and typing into an interactive worker's terminal.

The tmux calls run off-loop (`daemon/terminal.py`); the loop only checks the worker and,
once the keys are in, records that a person answered: a `waiting` worker goes back to
`working` and a `worker.input` event says how. A detached worker has no terminal: `peek`
shows its log's tail instead, and typing into it is refused with a sentence (chkd's
messages reach a detached agent instead).
"""

from __future__ import annotations

from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import LIVE_WORKER_STATUSES, Attached, Peek, PeekResult, SendKeys, WorkerResult

from .. import lookup, repos, terminal, workerrecords
from ..context import Ctx, Deferred


def _session(ctx: Ctx, row: dict[str, Any], doing: str) -> str:
    """The live interactive worker's tmux session, or the sentence why there is none."""
    wid = row["id"]
    if not row["interactive"]:
        raise ChkdError(
            "conflict",
            f"Worker {wid} runs detached, not in a terminal, so there is nothing to {doing}.",
            f"Its output: `chkdctl logs {wid} -f`; interactive workers come from a profile with "
            "interactive = true (e.g. --agent claude-interactive).",
        )
    if row["status"] not in LIVE_WORKER_STATUSES:
        raise ChkdError(
            "conflict",
            f"Worker {wid} is {row['status']}; its terminal closed when its agent ended.",
            f"Its output: `chkdctl logs {wid}`.",
        )
    session = workerrecords.tmux_session(row)
    assert session is not None
    return session


def peek(ctx: Ctx, req: Peek) -> Deferred:
    """The screen of a live interactive worker; the log's tail otherwise (or once its session is gone)."""
    row = lookup.worker(ctx.store, req.worker)
    wid, log = row["id"], str(ctx.paths.worker_log(row["id"]))
    deferred = ctx.defer()
    socket = str(ctx.paths.tmux_socket)

    def _from_log() -> None:
        ctx.submit(
            terminal.log_tail, log, req.lines, reply_to=deferred, then=lambda text, exc: _answer("log", text, exc)
        )

    def _answer(source: str, text: str | None, exc: BaseException | None) -> None:
        if isinstance(exc, ChkdError) and exc.code == "not_found" and source == "screen":
            _from_log()  # the agent ended between the check and the capture
            return
        if exc is not None:
            raise exc
        ctx.finish(deferred, PeekResult(worker=wid, source=source, text=text or ""))  # type: ignore[arg-type]

    if row["interactive"] and row["status"] in LIVE_WORKER_STATUSES:
        ctx.submit(
            terminal.capture,
            socket,
            workerrecords.tmux_session(row),
            req.lines,
            reply_to=deferred,
            then=lambda text, exc: _answer("screen", text, exc),
        )
    else:
        _from_log()
    return deferred


def _person_was_here(ctx: Ctx, wid: str, how: str, reason: str, **data: Any) -> dict[str, Any] | None:
    """A person's input: out of `waiting`, and a `worker.input` event."""
    row = workerrecords.load(ctx, wid)
    if row is None:
        return None
    row = workerrecords.leave_waiting(ctx, row, reason)
    ctx.emit(
        ev.WorkerInput(how=how, **data),
        repo=repos.repo_name(ctx.store, row["repo_id"]),
        worker_id=wid,
        task_id=row["task_id"],
    )
    return row


def send_keys(ctx: Ctx, req: SendKeys) -> Deferred:
    row = lookup.worker(ctx.store, req.worker)
    session = _session(ctx, row, "type into")
    if not req.text and not req.enter:
        raise ChkdError("bad_request", "Nothing to type: give some text, or leave Enter on.")
    wid = row["id"]
    deferred = ctx.defer()

    def _typed(_: None, exc: BaseException | None) -> None:
        if isinstance(exc, ChkdError) and exc.code == "not_found":
            raise ChkdError("conflict", f"Worker {wid}'s terminal is gone (its agent ended); nothing was typed.")
        if exc is not None:
            raise exc
        fresh = _person_was_here(
            ctx, wid, "send", "a person answered (chkdctl send)", chars=len(req.text), enter=req.enter
        )
        if fresh is None:
            raise ChkdError("not_found", f"Worker {wid} was removed meanwhile.")
        ctx.finish(deferred, WorkerResult(worker=workerrecords.worker_info(ctx, fresh)))

    ctx.submit(
        terminal.type_keys, str(ctx.paths.tmux_socket), session, req.text, req.enter, then=_typed, reply_to=deferred
    )
    return deferred


def attached(ctx: Ctx, req: Attached) -> WorkerResult:
    """A person attaches a terminal that can type: the worker is no longer waiting for one."""
    row = lookup.worker(ctx.store, req.worker)
    _session(ctx, row, "attach to")
    fresh = _person_was_here(ctx, row["id"], "attach", "a person attached (chkdctl attach)")
    assert fresh is not None
    return WorkerResult(worker=workerrecords.worker_info(ctx, fresh))


HANDLERS = {Peek: peek, SendKeys: send_keys, Attached: attached}
