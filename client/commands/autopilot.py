"""chkdctl run (the autopilot), cost, stats — and, for agents inside a worker, usage-limit."""

from __future__ import annotations

import os
import time
from typing import Any

import click

from ..output import echo, fail, json_option, print_json, table


def spend_words(spend: Any) -> str:
    """'today $0.42 of $5.00 (8 %)' — what `spawn`, `run` and `cost` print."""
    if spend is None:
        return ""

    def part(used: float, cap: float | None, what: str) -> str:
        return f"{what}${used:.2f}" + (f" of ${cap:.2f} ({100 * used / cap:.0f} %)" if cap else "")

    text = part(spend.today_usd, spend.budget_usd, "today ")
    if spend.repo and spend.repo_budget_usd:
        text += "; " + part(spend.repo_today_usd, spend.repo_budget_usd, f"{spend.repo} ")
    if spend.over:
        text += " — budget used up" + (" (overridden for today)" if spend.overridden else "")
    return text


def _clock(ms: int | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def _print_run(r: Any) -> None:
    state = {"running": "▶ running", "stopped": "■ stopped", "finished": "✔ finished"}.get(r.state, r.state)
    echo(
        f"{r.repo}: {state} — up to {r.workers} workers, merge {r.merge}"
        + (f", agent {r.agent}" if r.agent else "")
        + (", until empty" if r.until_empty else "")
        + f", since {_clock(r.started_at)}"
    )
    if r.stop_reason:
        echo(f"  {r.state}: {r.stop_reason}")
    echo(
        f"  tasks: {r.ready} ready, {r.waiting_on_deps} waiting on dependencies, {r.live} running, "
        f"{r.in_review} in review, {r.merged} merged, {r.failed} failed"
    )
    if r.blocked:
        echo(f"  blocked: {r.blocked}")
    for w in r.waits:
        echo(f"  {w.profile} waits until {_clock(w.until)} ({w.reason}; {w.tasks_waiting} tasks)")
    if r.spend is not None:
        echo(f"  spend: {spend_words(r.spend)}")


@click.command("run")
@click.option("--workers", "-n", type=click.IntRange(1, 1000), help="Keep up to N workers busy (default: max_workers).")
@click.option("--agent", help="Agent profile for tasks no tagged profile claims (default: default_agent).")
@click.option(
    "--merge",
    "merge",
    type=click.Choice(["auto", "review", "off"]),
    help="Merge finished workers: land them (auto), queue them for review, or leave them (off). Default auto.",
)
@click.option("--until-empty", is_flag=True, help="Stop by itself when nothing is left to run or merge.")
@click.option("--stop", is_flag=True, help="Stop the autopilot (running workers finish).")
@click.option("--status", "status", is_flag=True, help="Show the autopilot's settings and what it sees.")
@click.option("--repo", metavar="NAME|PATH", help="The repository (default: the one containing the current directory).")
@json_option
@click.pass_obj
def run(
    app: Any,
    workers: int | None,
    agent: str | None,
    merge: str | None,
    until_empty: bool,
    stop: bool,
    status: bool,
    repo: str | None,
) -> None:
    """Run the queue unattended: keep up to N workers on the most urgent ready tasks, start a
    dependent task as soon as its dependencies are merged, retry failures, merge what finishes.

    The settings live in the daemon's database and survive a restart. Over budget or at a usage
    limit it waits instead of starting more.
    """
    from chkd.protocol.messages import RunStart, RunStatus, RunStop

    if stop and status:
        raise click.UsageError("Give --stop or --status, not both.")
    where = repo or (None if status else os.getcwd())
    if stop:
        res = app.call(RunStop(repo=repo or os.getcwd()))
    elif status:
        res = app.call(RunStatus(repo=where))
    else:
        res = app.call(
            RunStart(
                repo=where,
                workers=workers,
                agent=agent,
                merge=merge,  # type: ignore[arg-type]
                until_empty=until_empty,
            )
        )
    if app.json:
        print_json(res if not status else res.runs)
        return
    if res.message:
        echo(res.message)
    if status and not res.runs:
        echo("The autopilot has never run here; start it with `chkdctl run`.")
    for r in res.runs:
        _print_run(r)


@click.command("cost")
@click.option("--by", type=click.Choice(["task", "worker", "day", "repo"]), default="task", show_default=True)
@click.option("--repo", metavar="NAME|PATH", help="Only this repository (default: all).")
@json_option
@click.pass_obj
def cost(app: Any, by: str, repo: str | None) -> None:
    """Tokens and US dollars the agents reported, summed per task, worker, day or repository."""
    from chkd.protocol.messages import Cost

    res = app.call(Cost(by=by, repo=repo))  # type: ignore[arg-type]
    if app.json:
        print_json(res)
        return
    rows = [[r.key, f"{r.tokens_in:,}", f"{r.tokens_out:,}", f"${r.cost_usd:.4f}", str(r.workers)] for r in res.rows]
    t = res.total
    rows.append(["total", f"{t.tokens_in:,}", f"{t.tokens_out:,}", f"${t.cost_usd:.4f}", str(t.workers)])
    echo(table(rows, [by.upper(), "TOKENS IN", "TOKENS OUT", "USD", "WORKERS"]))
    if res.spend is not None:
        echo(spend_words(res.spend))


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _since(text: str | None) -> int:
    """'2h', '30m', '1d', '90s' ago, or epoch seconds / ms, as ms since the epoch (0 = everything)."""
    if not text:
        return 0
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    now = time.time()
    try:
        if text[-1] in units:
            return int((now - float(text[:-1]) * units[text[-1]]) * 1000)
        value = float(text)
    except ValueError:
        raise click.BadParameter("use a duration like 30m, 2h, 1d, or a time in epoch seconds.") from None
    return int(value if value > 1e11 else value * 1000)


@click.command("stats")
@click.option("--since", metavar="30m|2h|1d|EPOCH", help="Only what happened since then (default: everything).")
@click.option("--repo", metavar="NAME|PATH", help="Only this repository (default: all).")
@json_option
@click.pass_obj
def stats(app: Any, since: str | None, repo: str | None) -> None:
    """Throughput, time to merge, conflict rate, speed-up, queue, utilisation, cost, ETA."""
    from chkd.protocol.messages import Stats

    s = app.call(Stats(repo=repo, since=_since(since)))
    if app.json:
        print_json(s)
        return
    pct = lambda v: "-" if v is None else f"{100 * v:.0f} %"  # noqa: E731
    pairs = [
        ("tasks merged", f"{s.tasks_merged} ({s.merged_per_hour:.1f} per hour)"),
        ("ready → merged", f"mean {_secs(s.ready_to_merged_mean_s)}, p90 {_secs(s.ready_to_merged_p90_s)}"),
        ("conflict rate", f"{pct(s.conflict_rate)} ({s.merge_conflicts} of {s.merge_attempts} merge attempts)"),
        (
            "speed-up",
            "-" if s.speedup is None else f"{s.speedup:.2f}x ({_secs(s.work_s)} of work in {_secs(s.wall_s)})",
        ),
        ("queue", f"{s.queue_ready} ready, {s.queue_waiting} waiting on dependencies, {s.queue_running} running"),
        ("utilisation", f"{pct(s.utilisation)} of {s.parallelism} workers"),
        (
            "cost",
            f"${s.cost_usd:.4f}"
            + (f" (${s.cost_per_merged_task:.4f} per merged task)" if s.cost_per_merged_task is not None else ""),
        ),
        (
            "ETA",
            "-"
            if s.eta_s is None
            else f"{_secs(s.eta_s)} at {s.parallelism} workers (mean task {_secs(s.mean_task_s)})",
        ),
    ]
    for e in s.eta_by_tag:
        pairs.append((f"ETA #{e.tag}", f"{_secs(e.eta_s)} ({e.remaining} tasks, mean {_secs(e.mean_s)})"))
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        echo(f"{k.rjust(width)}  {v}")


@click.command("usage-limit")
@click.option(
    "--resets-at",
    metavar="EPOCH",
    type=float,
    help="When the limit resets (epoch seconds); without it the autopilot waits usage_limit_margin_s.",
)
@click.option("--rate-limit", is_flag=True, help="An HTTP 429 (rate limited) rather than a usage limit.")
@click.option("--message", default="", help="What the agent saw.")
@click.option("--worker", help="The worker (default: $CHKD_WORKER_ID).")
@click.pass_obj
def usage_limit(app: Any, resets_at: float | None, rate_limit: bool, message: str, worker: str | None) -> None:
    """For agents inside a worker: report a usage limit (or a 429). The autopilot stops starting this
    agent profile until the reset, and the task goes back without counting an attempt."""
    from chkd.protocol.messages import AgentLimit

    from ..client import Client

    wid = worker or os.environ.get("CHKD_WORKER_ID")
    if not wid:
        fail("No worker id: this command runs inside a chkd worker (CHKD_WORKER_ID), or give --worker W.")
    body = AgentLimit(
        worker=wid,
        kind="rate_limit" if rate_limit else "usage_limit",
        resets_at=None if resets_at is None else int(resets_at * 1000),
        message=message,
    )
    with Client(app.paths, timeout=10.0, autostart=False) as client:
        client.call(body)


COMMANDS: list[click.Command] = [run, cost, stats, usage_limit]
