"""chkdctl merge, approve, reject, merges, diff, update, conflicts."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, cast

import click

from ..output import Exit, ago, echo, json_option, print_json, table

if TYPE_CHECKING:
    from chkd.protocol.messages import Strategy

#: Merge states after which `chkdctl merge` stops waiting.
SETTLED = ("merged", "conflict", "failed", "rejected", "awaiting_review")
POLL_S = 0.1


def _wait(app: Any, merge_id: int) -> Any:
    """Poll until the merge settles (the loop answers MergeShow at once, even mid test gate)."""
    from chkd.protocol.messages import MergeShow

    last = None
    while True:
        m = app.call(MergeShow(id=merge_id)).merge
        if m.status != last and not app.json and m.status not in SETTLED:
            echo(f"merge {m.id}: {m.status.replace('_', ' ')}…", err=True)
            last = m.status
        if m.status in SETTLED:
            return m
        time.sleep(POLL_S)


def _report(app: Any, m: Any) -> None:
    """Print the outcome; exit 1 on conflict, failure or rejection."""
    if app.json:
        print_json(m)
    elif m.status == "merged":
        sha = (m.result_sha or "")[:10]
        echo(f"Merged {m.worker_id} into {m.target} ({sha}); worktree and branch removed, task done.")
    elif m.status == "awaiting_review":
        echo(
            f"Merge {m.id} of {m.worker_id} waits for review: `chkdctl diff {m.worker_id}`, then "
            f"`chkdctl approve {m.worker_id}` or `chkdctl reject {m.worker_id} --reason TEXT`."
        )
    elif m.status == "conflict":
        echo(
            f"chkdctl: {m.worker_id} conflicts with {m.target} in: {', '.join(m.conflict_files)}; nothing was changed.",
            err=True,
        )
        echo(f"  hint: `chkdctl update {m.worker_id}` brings {m.target} into its worktree to resolve.", err=True)
    elif m.status in ("queued", "checking", "testing"):  # --no-wait: it goes on in the daemon
        echo(
            f"Merge {m.id} of {m.worker_id} into {m.target} ({m.strategy}) is {m.status}; "
            f"follow it with `chkdctl merges` or `chkdctl watch --worker {m.worker_id}`."
        )
    else:
        echo(f"chkdctl: merge {m.id} of {m.worker_id} {m.status}.", err=True)
        if m.log.strip():
            for line in m.log.strip()[-2000:].splitlines():
                echo("  " + line, err=True)
    if m.status in ("conflict", "failed", "rejected"):
        raise Exit(1)


@click.command("merge")
@click.argument("worker")
@click.option(
    "--strategy",
    type=click.Choice(["auto", "review"]),
    help="auto: land when checks pass; review: wait for approve/reject. Default from config (review).",
)
@click.option("--no-test", is_flag=True, help="Skip the repository's test gate.")
@click.option("--no-wait", is_flag=True, help="Return once the merge is queued.")
@json_option
@click.pass_obj
def merge(app: Any, worker: str, strategy: str | None, no_test: bool, no_wait: bool) -> None:
    """Merge a done worker's branch into the target: conflict check, test gate, (review), CAS.

    Waits for the outcome; exits 1 on conflict or failure."""
    from chkd.protocol.messages import Merge

    m = app.call(Merge(worker=worker, strategy=cast("Strategy | None", strategy), no_test=no_test)).merge
    _report(app, m if no_wait else _wait(app, m.id))


@click.command("approve")
@click.argument("worker")
@click.option("--no-wait", is_flag=True, help="Return once approved, without waiting for it to land.")
@json_option
@click.pass_obj
def approve(app: Any, worker: str, no_wait: bool) -> None:
    """Approve a merge waiting for review; it lands (re-checked if the target moved)."""
    from chkd.protocol.messages import Approve

    m = app.call(Approve(worker=worker)).merge
    _report(app, m if no_wait else _wait(app, m.id))


@click.command("reject")
@click.argument("worker")
@click.option("--reason", default="", help="Why; the worker gets it as its message.")
@json_option
@click.pass_obj
def reject(app: Any, worker: str, reason: str) -> None:
    """Reject a merge waiting for review; the worker goes back to working."""
    from chkd.protocol.messages import Reject

    m = app.call(Reject(worker=worker, reason=reason)).merge
    if app.json:
        print_json(m)
        return
    echo(f"Rejected merge {m.id}; {m.worker_id} is back to working" + (f": {reason}" if reason else "."))


@click.command("merges")
@click.option("--repo", metavar="NAME|PATH", help="Only this repository (default: all).")
@click.option("--all", "all_", is_flag=True, help="Every finished merge too, not only the latest.")
@json_option
@click.pass_obj
def merges(app: Any, repo: str | None, all_: bool) -> None:
    """The merge queue: active merges and the latest finished ones."""
    from chkd.protocol.messages import MergeList

    res = app.call(MergeList(repo=repo, all=all_))
    if app.json:
        print_json(res.merges)
        return
    if not res.merges:
        echo("No merges yet.")
        return
    rows = [
        [
            str(m.id),
            m.worker_id,
            m.task_id or "-",
            m.repo,
            m.status.replace("_", " "),
            m.strategy,
            ago(m.finished_at or m.created_at),
            ", ".join(m.conflict_files) if m.conflict_files else (m.result_sha or "")[:10],
        ]
        for m in res.merges
    ]
    click.echo(table(rows, ["ID", "WORKER", "TASK", "REPO", "STATUS", "STRATEGY", "AGE", "RESULT / FILES"]))


@click.command("diff")
@click.argument("worker")
@click.option("--stat", is_flag=True, help="Only the diffstat.")
@click.pass_obj
def diff(app: Any, worker: str, stat: bool) -> None:
    """The worker's change against the target (from their merge base; uncommitted edits included).

    Printed as git prints it (so it can be piped to `git apply`): file contents are not made visible."""
    from chkd.protocol.messages import Diff

    res = app.call(Diff(worker=worker, stat=stat))
    if app.json:
        print_json(res)
        return
    click.echo(res.text if res.text else "No changes against the target.", nl=not res.text.endswith("\n"))


@click.command("update")
@click.argument("worker")
@json_option
@click.pass_obj
def update(app: Any, worker: str) -> None:
    """Merge the target into the worker's branch in its worktree (conflicts: markers left for the agent)."""
    from chkd.protocol.messages import Update

    w = app.call(Update(worker=worker)).worker
    if app.json:
        print_json(w)
        return
    conflicted = w.status == "working" and (w.message or "").startswith("conflicts with")
    if conflicted:
        echo(f"chkdctl: {w.id}: {w.message}", err=True)
        echo(f"  the conflict markers are in {w.worktree}", err=True)
        raise Exit(1)
    echo(f"{w.id}: {w.message or 'up to date'} ({w.status}).")


@click.command("conflicts")
@click.option("--repo", metavar="NAME|PATH", help="The repository (default: the current one, else all).")
@json_option
@click.pass_obj
def conflicts(app: Any, repo: str | None) -> None:
    """The conflict radar: workers changing the same files, and whether they would conflict."""
    from chkd.protocol.messages import Conflicts

    res = app.call(Conflicts(repo=repo or os.getcwd()))
    if app.json:
        print_json(res)
        return
    if not res.overlaps:
        echo("No overlaps: no two active workers (or a worker and the target) change the same files.")
        return
    rows = [
        [
            o.repo,
            o.a,
            o.b or "(target)",
            "CONFLICT" if o.conflict else "overlap",
            ", ".join(o.conflict_files if o.conflict else o.files),
        ]
        for o in res.overlaps
    ]
    click.echo(table(rows, ["REPO", "WORKER", "WITH", "KIND", "FILES"]))


COMMANDS: list[click.Command] = [merge, approve, reject, merges, diff, update, conflicts]
