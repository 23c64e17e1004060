"""chkdctl demo."""

from __future__ import annotations

from typing import Any

import click


@click.command("demo")
@click.option(
    "--workers", "-w", type=click.IntRange(1, 8), default=3, show_default=True, help="How many agents run in parallel."
)
@click.option(
    "--speed",
    type=click.FloatRange(0.1, 20),
    default=1.0,
    show_default=True,
    help="Scale the agents' pace (2 = twice as fast).",
)
@click.option("--keep", is_flag=True, help="Keep the temporary directory (repository, logs, database) and print where.")
@click.option("--plain", is_flag=True, help="Plain event lines, even on a terminal.")
@click.pass_obj
def demo(app: Any, workers: int, speed: float, keep: bool, plain: bool) -> None:
    """Run a real session on the autopilot in a temporary repository and show it live.

    A private daemon (its own home in the temporary directory) imports a spec of eight
    tasks with priorities and dependencies and runs them with `chkdctl run`: demo agents
    in parallel, each in its own worktree and branch, merged as they finish. One pair is
    steered into a conflict that is detected, brought up to date with `update`, resolved
    and merged. Your own daemon, config and repositories are not touched.
    """
    from ..demo import run_demo, summary_lines
    from ..output import echo, fail, print_json

    result = run_demo(
        workers=workers,
        speed=speed,
        keep=keep,
        live=False if plain or app.json else None,
        out=(lambda _line: None) if app.json else print,
    )
    if app.json:
        print_json(
            {
                "ok": result.ok,
                "directory": str(result.directory) if keep else None,
                "tasks_total": result.tasks_total,
                "tasks_merged": result.tasks_merged,
                "workers": result.workers,
                "wall_s": round(result.wall_s, 2),
                "sequential_s": round(result.sequential_s, 2),
                "speedup": round(result.speedup, 2),
                "conflicts_detected": result.conflicts_detected,
                "conflicts_resolved": result.conflicts_resolved,
                "questions_answered": result.questions_answered,
                "tokens_in": result.tokens_in,
                "tokens_out": result.tokens_out,
                "cost_usd": round(result.cost_usd, 6),
                "problems": result.problems,
            }
        )
    else:
        for line in summary_lines(result):
            echo(line)
        if keep:
            echo(f"  kept:                {result.directory} (repository: {result.repo})")
    if not result.ok:
        fail("the demo did not complete: " + "; ".join(result.problems or ["not every task was merged"]) + ".")


COMMANDS: list[click.Command] = [demo]
