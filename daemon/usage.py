"""The usage ledger: every token and dollar a worker reports, with when and for which task.

Why a ledger next to the worker row's running totals: budgets are per day and a worker
can run across midnight, so "today's spend" must be summed from dated entries; and the
cost of a task is the sum over every worker that tried it (retries cost money too).
Days are the daemon's local dates (a person's "today").
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from chkd.protocol.messages import CostRow, SpendInfo

from .context import Ctx
from .store import now_ms


def day_of(ms: int) -> str:
    """The local date of a timestamp, YYYY-MM-DD."""
    return time.strftime("%Y-%m-%d", time.localtime(ms / 1000))


#: ctx.ext key: bumped by every ledger entry, so readers (the budget tick) can tell "nothing new".
LEDGER_VERSION = "usage.ledger_version"


#: ctx.ext key: a callable run after every ledger entry. The budget sets it (autopilot.setup) to
#: judge a spend at once: on its one-second tick alone, a fast agent overspent a small budget 5x.
ON_SPEND = "usage.on_spend"


def ledger_version(ctx: Ctx) -> int:
    return int(ctx.ext.get(LEDGER_VERSION, 0))


def today() -> str:
    return day_of(now_ms())


def record(ctx: Ctx, row: Mapping[str, Any], tokens_in: int, tokens_out: int, cost_usd: float) -> None:
    """One increment of a worker's usage (heartbeat, stream-json result): a dated ledger entry."""
    if not (tokens_in or tokens_out or cost_usd):
        return
    ctx.ext[LEDGER_VERSION] = ctx.ext.get(LEDGER_VERSION, 0) + 1
    at = now_ms()
    ctx.store.x(
        "INSERT INTO usage(at, day, repo_id, worker_id, task_id, tokens_in, tokens_out, cost_usd) "
        "VALUES(?,?,?,?,?,?,?,?)",
        (at, day_of(at), row["repo_id"], row["id"], row.get("task_id"), tokens_in, tokens_out, cost_usd),
    )
    if (on_spend := ctx.ext.get(ON_SPEND)) is not None:
        on_spend()


def spent(ctx: Ctx, day: str, repo_id: int | None = None) -> float:
    if repo_id is None:
        return float(ctx.store.scalar("SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE day=?", (day,), 0))
    return float(
        ctx.store.scalar("SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE day=? AND repo_id=?", (day, repo_id), 0)
    )


_GROUPS = {
    "task": "coalesce(u.task_id, '-')",
    "worker": "coalesce(u.worker_id, '-')",
    "day": "u.day",
    "repo": "coalesce(r.name, '-')",
}


def cost_rows(ctx: Ctx, by: str, repo_id: int | None) -> tuple[list[CostRow], CostRow]:
    """Sums per task, worker, day or repository (most expensive first), and the total."""
    key = _GROUPS[by]
    where, params = ("WHERE u.repo_id=?", (repo_id,)) if repo_id is not None else ("", ())
    select = (
        "sum(u.tokens_in), sum(u.tokens_out), sum(u.cost_usd), count(DISTINCT u.worker_id), "
        "count(DISTINCT coalesce(r.name, '') || ':' || coalesce(u.task_id, ''))"
    )
    sql = f"SELECT {key}, {select} FROM usage u LEFT JOIN repos r ON r.id = u.repo_id {where} GROUP BY 1"
    order = "ORDER BY 1" if by == "day" else "ORDER BY 4 DESC, 1"
    rows = [
        CostRow(
            key=str(k),
            tokens_in=int(ti or 0),
            tokens_out=int(to or 0),
            cost_usd=round(float(c or 0), 6),
            workers=int(nw or 0),
            tasks=int(nt or 0),
        )
        for k, ti, to, c, nw, nt in ctx.store.all(f"{sql} {order}", params)
    ]
    t = ctx.store.one(f"SELECT {select} FROM usage u LEFT JOIN repos r ON r.id = u.repo_id {where}", params)
    ti, to, c, nw, nt = t or (0, 0, 0, 0, 0)
    total = CostRow(
        key="total",
        tokens_in=int(ti or 0),
        tokens_out=int(to or 0),
        cost_usd=round(float(c or 0), 6),
        workers=int(nw or 0),
        tasks=int(nt or 0),
    )
    return rows, total


def spend_info(ctx: Ctx, repo: Mapping[str, Any] | None) -> SpendInfo:
    """Today's use against the global budget and, for `repo`, its own."""
    from . import budget  # budget reads the ledger; the ledger only reports

    day = today()
    info = SpendInfo(day=day, today_usd=round(spent(ctx, day), 6), budget_usd=ctx.config.budget_usd_per_day)
    if repo is not None:
        info.repo = repo["name"]
        info.repo_today_usd = round(spent(ctx, day, repo["id"]), 6)
        info.repo_budget_usd = ctx.config.for_repo(repo["name"]).budget_usd_per_day
    info.over = budget.over_for(ctx, repo, day) is not None
    info.overridden = budget.overridden(ctx, day)
    return info
