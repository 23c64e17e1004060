"""Daily budgets that pause instead of kill.

`budget_usd_per_day` (global, and per repository in `[repos.NAME]`): at 80 % a
`budget.warning` event (and notification), at 100 % every running worker in scope is
paused through the ordinary pause path (SIGSTOP to its own group, `paused_by = 'budget'`)
and nothing new starts (the autopilot and `spawn` ask `blocked`). When the budget allows
again — raised in config.toml and the daemon restarted, or the next day — the workers the
budget paused are resumed by the budget tick itself. `resume --all --over-budget` lifts the
budget for the rest of the day. What was warned and exceeded is remembered per day in `meta`,
so a restart repeats nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError

from . import repos, usage, workerrecords
from .context import Ctx

WARN_AT = 0.8
OVERRIDE_KEY = "budget.override_day"
RUNNING = ("starting", "working", "stalled")
#: ctx.ext key: what the last budget evaluation saw (day, ledger version, override day).
TICK_INPUTS = "budget.tick_inputs"


def level(spent: float, cap: float | None) -> int:
    """0 fine, 1 past the warning line (80 %), 2 used up (100 %)."""
    if not cap:
        return 0
    if spent >= cap:
        return 2
    return 1 if spent >= WARN_AT * cap else 0


def _meta(ctx: Ctx, key: str) -> str | None:
    return ctx.store.scalar("SELECT value FROM meta WHERE key=?", (key,))


def _set_meta(ctx: Ctx, key: str, value: str) -> None:
    ctx.store.x(
        "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value)
    )


def overridden(ctx: Ctx, day: str) -> bool:
    return _meta(ctx, OVERRIDE_KEY) == day


def override_today(ctx: Ctx) -> None:
    _set_meta(ctx, OVERRIDE_KEY, usage.today())


def scopes(ctx: Ctx) -> list[tuple[str, dict[str, Any] | None, float]]:
    """(scope name, repository row or None for global, cap) for every budget configured."""
    out: list[tuple[str, dict[str, Any] | None, float]] = []
    if ctx.config.budget_usd_per_day:
        out.append(("global", None, ctx.config.budget_usd_per_day))
    for name, rc in ctx.config.repos.items():
        if rc.budget_usd_per_day:
            row = ctx.store.dict("SELECT id, name FROM repos WHERE name=?", (name,))
            if row is not None:
                out.append((name, row, rc.budget_usd_per_day))
    return out


def over_for(ctx: Ctx, repo: Mapping[str, Any] | None, day: str) -> str | None:
    """The sentence saying which budget is used up for `repo` (global counts for every repository)."""
    for scope, row, cap in scopes(ctx):
        if row is not None and (repo is None or row["id"] != repo["id"]):
            continue
        used = usage.spent(ctx, day, None if row is None else row["id"])
        if level(used, cap) == 2:
            return used_up_sentence(scope, used, cap)
    return None


def used_up_sentence(scope: str, used: float, cap: float) -> str:
    where = "The daily budget" if scope == "global" else f"The daily budget of '{scope}'"
    key = "budget_usd_per_day" if scope == "global" else f"[repos.\"{scope}\"] budget_usd_per_day"
    return (
        f"{where} of ${cap:.2f} is used up (${used:.2f} today): running workers are paused and nothing new "
        f"starts; raise {key} in config.toml and run `chkdctl daemon restart`, or run "
        f"`chkdctl resume --all --over-budget` to go on today anyway."
    )


def blocked(ctx: Ctx, repo: Mapping[str, Any] | None) -> str | None:
    """Why nothing may start in `repo` now (a used-up budget not overridden today), or None."""
    day = usage.today()
    if overridden(ctx, day):
        return None
    return over_for(ctx, repo, day)


def check_spawn(ctx: Ctx, repo: Mapping[str, Any]) -> None:
    """`spawn` refuses to start work over budget, with the sentence saying what to do."""
    why = blocked(ctx, repo)
    if why is not None:
        raise ChkdError("busy", why)


SOON = "budget.soon"


def soon(ctx: Ctx) -> None:
    """Judge the budgets as soon as this batch of requests is committed (one timer however many
    spends the batch holds): a spend that crosses a budget pauses the workers within milliseconds."""
    if ctx.ext.get(SOON):
        return
    ctx.ext[SOON] = True

    def due() -> None:
        ctx.ext[SOON] = False
        tick(ctx)

    ctx.timers.after(0.0, due, "budget.soon")


def tick(ctx: Ctx) -> None:
    """Every second: warn, pause, or resume by the budgets (idempotent; remembered per day).

    The decision depends only on the day, the ledger and today's override, so a second in which
    none of them changed is skipped: summing a busy day's ledger every second would load the loop."""
    day = usage.today()
    inputs = (day, usage.ledger_version(ctx), _meta(ctx, OVERRIDE_KEY))
    if ctx.ext.get(TICK_INPUTS) == inputs:
        return
    _evaluate(ctx, day)
    ctx.ext[TICK_INPUTS] = inputs  # only once the evaluation went through


def _evaluate(ctx: Ctx, day: str) -> None:
    lifted = overridden(ctx, day)
    over_repos: set[int] = set()
    over_all = False
    for scope, row, cap in scopes(ctx):
        used = usage.spent(ctx, day, None if row is None else row["id"])
        lvl = level(used, cap)
        data: dict[str, Any] = {
            "scope": scope,
            "day": day,
            "spent_usd": round(used, 4),
            "budget_usd": cap,
            "percent": round(100 * used / cap, 1),
        }  # the fields both budget events share
        repo_name = None if row is None else row["name"]
        if lvl >= 1 and _meta(ctx, f"budget.warned.{scope}") != day:
            _set_meta(ctx, f"budget.warned.{scope}", day)
            who = "the daily budget" if row is None else f"the daily budget of '{scope}'"
            ctx.emit(
                ev.BudgetWarned(
                    **data, message=f"{100 * used / cap:.0f} % of {who} (${cap:.2f}) is used (${used:.2f} today)."
                ),
                repo=repo_name,
            )
        if lvl < 2 or lifted:
            continue
        if row is None:
            over_all = True
        else:
            over_repos.add(row["id"])
        paused = _pause_running(ctx, None if row is None else row["id"])
        if _meta(ctx, f"budget.exceeded.{scope}") != day or paused:
            _set_meta(ctx, f"budget.exceeded.{scope}", day)
            ctx.emit(
                ev.BudgetExceeded(**data, paused=paused, message=used_up_sentence(scope, used, cap)), repo=repo_name
            )
    _resume_allowed(ctx, over_all, over_repos)


def _pause_running(ctx: Ctx, repo_id: int | None) -> list[str]:
    sql = f"SELECT * FROM workers WHERE status IN ({','.join('?' * len(RUNNING))})"
    params: list[Any] = list(RUNNING)
    if repo_id is not None:
        sql += " AND repo_id=?"
        params.append(repo_id)
    paused = []
    for row in ctx.store.dicts(sql + " ORDER BY seq", tuple(params)):
        workerrecords.pause_worker(ctx, row, reason="the daily budget is used up", by="budget")
        paused.append(row["id"])
    return paused


def _resume_allowed(ctx: Ctx, over_all: bool, over_repos: set[int]) -> None:
    """Workers the budget paused run again once no used-up budget covers them."""
    if over_all:
        return
    rows = ctx.store.dicts("SELECT * FROM workers WHERE status='paused' AND paused_by='budget' ORDER BY seq")
    resumed: dict[int, list[str]] = {}
    for row in rows:
        if row["repo_id"] in over_repos:
            continue
        workerrecords.resume_worker(ctx, row, reason="the budget allows work again")
        resumed.setdefault(row["repo_id"], []).append(row["id"])
    for repo_id, ids in resumed.items():
        ctx.emit(ev.BudgetResumed(workers=ids, day=usage.today()), repo=repos.repo_name(ctx.store, repo_id))


def resume_over_budget(ctx: Ctx, repo_id: int | None) -> list[dict[str, Any]]:
    """`resume --all --over-budget`: lift the budget for today and resume what it paused."""
    override_today(ctx)
    sql = "SELECT * FROM workers WHERE status='paused' AND paused_by='budget'"
    params: tuple[Any, ...] = ()
    if repo_id is not None:
        sql, params = sql + " AND repo_id=?", (repo_id,)
    out = [
        workerrecords.resume_worker(ctx, row, reason="resumed over budget by the user")
        for row in ctx.store.dicts(sql + " ORDER BY seq", params)
    ]
    ctx.emit(ev.BudgetOverridden(day=usage.today(), workers=[r["id"] for r in out]))
    return out
