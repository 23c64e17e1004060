"""send, inbox, hook, help: notes between the master / the user and the workers, and the
Claude Code hooks that count as activity and carry those notes to the model.

A broadcast (`send --all`) is written as one row per live worker it reaches, so each worker
reads it exactly once and a worker spawned later does not get yesterday's notes. Delivering
a message (a PostToolUse hook, `chkd_inbox`, `chkd_worker_status`) marks it read in the same
transaction that hands it out: it reaches the model once.

Events (protocol/events.py): MessageSent, MessageDelivered, WorkerHooked, WorkerHelpRequested.
"""

from __future__ import annotations

from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    LIVE_WORKER_STATUSES,
    HelpRequest,
    Hook,
    HookAck,
    Inbox,
    MessageInfo,
    MessagesResult,
    Send,
)

from .. import lookup, repos, workerrecords
from ..context import Ctx
from ..store import now_ms

_COLUMNS = "id, to_worker, sender, from_worker, broadcast, text, created_at, read_at"
#: A worker that can no longer read anything: sending it a note is a mistake worth a sentence.
_GONE = frozenset({"merged"})
#: At most this many messages go into one hook's additionalContext (the rest wait for the next).
HOOK_BATCH = 20


def message_info(row: tuple[Any, ...]) -> MessageInfo:
    mid, to, sender, from_worker, broadcast, text, created, read = row
    return MessageInfo(
        id=mid,
        to_worker=to,
        sender=sender,
        text=text,
        created_at=created,
        from_worker=from_worker,
        broadcast=bool(broadcast),
        read_at=read,
    )


def _recipients(ctx: Ctx, req: Send) -> list[dict[str, Any]]:
    if req.all and req.to:
        raise ChkdError("bad_request", "Send to one worker or to all, not both.")
    if req.all:
        live = ",".join(f"'{s}'" for s in sorted(LIVE_WORKER_STATUSES))
        sql = f"SELECT id, repo_id, task_id FROM workers WHERE status IN ({live})"
        params: tuple[Any, ...] = ()
        if req.repo:
            sql += " AND repo_id=?"
            params = (repos.resolve(ctx.store, req.repo)["id"],)
        rows = ctx.store.dicts(sql + " ORDER BY seq", params)
        if not rows:
            raise ChkdError("not_found", "No live worker to send the message to.", "See `chkdctl workers`.")
        return rows
    if not req.to:
        raise ChkdError("bad_request", "Say whom the message is for: a worker id, or all.")
    row = lookup.worker(ctx.store, req.to)
    if row["status"] in _GONE:
        raise ChkdError("conflict", f"Worker {row['id']} is {row['status']}; nobody would read the message.")
    return [row]


def send(ctx: Ctx, req: Send) -> MessagesResult:
    """Write the message (one row per recipient) and emit `message.sent` for each."""
    text = req.text.strip()
    if not text:
        raise ChkdError("bad_request", "The message is empty.")
    if req.sender == "worker" and not req.from_worker:
        raise ChkdError("bad_request", "A message from a worker names that worker (from_worker).")
    from_worker = lookup.worker(ctx.store, req.from_worker)["id"] if req.from_worker else None
    now = now_ms()
    sent = []
    for row in _recipients(ctx, req):
        mid = ctx.store.insert(
            "INSERT INTO messages(to_worker, sender, from_worker, broadcast, text, created_at) VALUES(?,?,?,?,?,?)",
            (row["id"], req.sender, from_worker, int(req.all), text, now),
        )
        ctx.emit(
            ev.MessageSent(
                id=mid, to=row["id"], sender=req.sender, from_worker=from_worker, broadcast=req.all, chars=len(text)
            ),
            repo=repos.repo_name(ctx.store, row["repo_id"]),
            worker_id=row["id"],
            task_id=row["task_id"],
        )
        sent.append(
            MessageInfo(
                id=mid,
                to_worker=row["id"],
                sender=req.sender,
                text=text,
                created_at=now,
                from_worker=from_worker,
                broadcast=req.all,
            )
        )
    return MessagesResult(messages=sent)


def take_unread(ctx: Ctx, row: dict[str, Any], via: str, limit: int = HOOK_BATCH) -> list[MessageInfo]:
    """The worker's oldest unread messages, marked read now (delivered), with one event."""
    rows = ctx.store.all(
        f"SELECT {_COLUMNS} FROM messages WHERE to_worker=? AND read_at IS NULL ORDER BY id LIMIT ?", (row["id"], limit)
    )
    if not rows:
        return []
    now = now_ms()
    ids = [r[0] for r in rows]
    ctx.store.x(f"UPDATE messages SET read_at=? WHERE id IN ({','.join('?' * len(ids))})", (now, *ids))
    ctx.emit(
        ev.MessageDelivered(ids=ids, via=via),
        repo=repos.repo_name(ctx.store, row["repo_id"]),
        worker_id=row["id"],
        task_id=row["task_id"],
    )
    return [message_info((*r[:7], now)) for r in rows]


def inbox(ctx: Ctx, req: Inbox) -> MessagesResult:
    row = lookup.worker(ctx.store, req.worker)
    if req.mark_read:
        fresh = take_unread(ctx, row, "inbox", req.limit)
        if req.unread:
            return MessagesResult(messages=fresh)
    where = "to_worker=?" + (" AND read_at IS NULL" if req.unread else "")
    rows = ctx.store.all(
        f"SELECT * FROM (SELECT {_COLUMNS} FROM messages WHERE {where} ORDER BY id DESC LIMIT ?) ORDER BY id",
        (row["id"], req.limit),
    )
    return MessagesResult(messages=[message_info(r) for r in rows])


def _activity(ctx: Ctx, row: dict[str, Any], message: str | None) -> dict[str, Any]:
    """What a heartbeat does for liveness: activity now, and `starting` becomes `working`."""
    fields: dict[str, Any] = {"activity_at": now_ms()}
    if message is not None:
        fields["message"] = message[:500]
    row = workerrecords.update(ctx, row, **fields)
    if row["status"] == "starting":
        row = workerrecords.set_worker_status(ctx, row, "working", reason="the agent reported")
        workerrecords.start_task(ctx, row)
    return row


def hook(ctx: Ctx, req: Hook) -> HookAck:
    """A Claude Code hook: activity. `notification` (Claude waits for a permission or for input) makes
    the worker `waiting` with its message; the next tool use leaves it, as for `heartbeat --waiting`
    (`stop` only ends a turn, so it leaves a waiting worker waiting)."""
    row = lookup.worker(ctx.store, req.worker)
    message = " ".join(req.message.split()) if req.event == "notification" and req.message else None
    row = _activity(ctx, row, None)
    if req.event == "notification":
        row = workerrecords.enter_waiting(ctx, row, message or "needs your input")
    elif req.event == "post-tool-use" and row["status"] == "waiting":
        row = workerrecords.leave_waiting(ctx, row, "the agent used a tool")
    delivered = take_unread(ctx, row, "hook") if req.event == "post-tool-use" else []
    ctx.emit(
        ev.WorkerHooked(
            hook=req.event,
            tool=req.tool,
            message=message,
            session_id=req.session_id,
            delivered=[m.id for m in delivered] or None,
        ),
        repo=repos.repo_name(ctx.store, row["repo_id"]),
        worker_id=row["id"],
        task_id=row["task_id"],
    )
    return HookAck(status=row["status"], messages=delivered)


def help_request(ctx: Ctx, req: HelpRequest) -> HookAck:
    """The worker is `waiting` with the question as its message (shown in `workers`, notified once),
    plus a `worker.help` event; its next heartbeat or tool use leaves `waiting`."""
    question = " ".join(req.question.split())
    if not question:
        raise ChkdError("bad_request", "The question is empty.")
    row = _activity(ctx, lookup.worker(ctx.store, req.worker), None)
    row = workerrecords.enter_waiting(ctx, row, question)
    ctx.emit(
        ev.WorkerHelpRequested(question=question),
        repo=repos.repo_name(ctx.store, row["repo_id"]),
        worker_id=row["id"],
        task_id=row["task_id"],
    )
    return HookAck(status=row["status"])


HANDLERS = {Send: send, Inbox: inbox, Hook: hook, HelpRequest: help_request}
