"""events: the history query behind `chkdctl events`, `watch --since` and every client's replay."""

from __future__ import annotations

from typing import Any

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import EventList, Events

from .. import lookup, repos
from ..context import EVENT_COLUMNS, Ctx, row_event

#: The most events one page holds.
MAX_PAGE = 5000


def events(ctx: Ctx, req: Events) -> EventList:
    """History after `since`, oldest first; `last_seq` is the newest seq in the whole table,
    so a client that saw a short page knows nothing between its cursor and `last_seq` matched."""
    if req.since < 0 or req.limit < 1:
        raise ChkdError("bad_request", "since must be 0 or more and limit at least 1.")
    last_seq = ctx.store.scalar("SELECT max(seq) FROM events", (), 0) or 0
    where: list[str] = ["seq > ?"]
    params: list[Any] = [req.since]
    if req.worker:
        where.append("worker_id = ?")
        params.append(_worker_id(ctx, req.worker))
    if req.task:
        where.append("task_id = ?")
        params.append(req.task)
    if req.repo:
        row = repos.find(ctx.store, req.repo)
        where.append("repo = ?")
        params.append(row["name"] if row else req.repo)
    if req.tail < 0:
        raise ChkdError("bad_request", "tail must be 0 or more.")
    cond = " AND ".join(where)
    if req.tail:
        rows = ctx.store.all(
            f"SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events WHERE {cond} AND seq <= ? "
            "ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (*params, last_seq, min(req.tail, req.limit, MAX_PAGE)),
        )
    else:
        rows = ctx.store.all(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {cond} AND seq <= ? ORDER BY seq LIMIT ?",
            (*params, last_seq, min(req.limit, MAX_PAGE)),
        )
    return EventList(events=[row_event(r) for r in rows], last_seq=last_seq)


def _worker_id(ctx: Ctx, ref: str) -> str:
    """A full worker id from a prefix; an unknown id is kept as typed (its worker may be gone)."""
    try:
        return lookup.worker(ctx.store, ref)["id"]
    except ChkdError:
        return ref


HANDLERS = {Events: events}
