"""Applying a parsed spec checklist (daemon/spec.py) to a repository's task queue, on the loop.

Re-importing is safe: new items are created, changed ones updated, done or running tasks are
never set back, nothing is deleted (tasks gone from the file are reported as vanished).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import ImportProblem, ImportReport

from . import repos, spec, taskgraph, taskqueue
from .context import Ctx


def import_target(ctx: Ctx, row: dict[str, Any] | None, facts: repos.RepoFacts | None, dry_run: bool) -> dict[str, Any]:
    """The repository to import into, read again on the loop (it may have been removed meanwhile);
    an unknown one is registered, or on a dry run only described."""
    if row is not None:
        fresh = ctx.store.dict(f"SELECT {repos.REPO_COLUMNS} FROM repos WHERE id=?", (row["id"],))
        if fresh is None:
            raise ChkdError("not_found", f"The repository '{row['name']}' was removed during the import.")
        return fresh
    assert facts is not None
    if dry_run:
        known = ctx.store.dict(f"SELECT {repos.REPO_COLUMNS} FROM repos WHERE path=?", (facts.path,))
        return known or {"id": -1, "name": Path(facts.path).name, "path": facts.path}
    return repos.register(ctx, facts, None, None)[0]


def apply_spec(ctx: Ctx, repo: dict[str, Any], doc: spec.Spec, source: str, dry_run: bool) -> ImportReport:
    """Create new items, update changed ones; never set back a done or running task, never delete."""
    report = ImportReport(
        repo=repo["name"],
        dry_run=dry_run,
        warnings=list(doc.warnings),
        problems=[ImportProblem(line=p.line, text=p.text[:200], reason=p.reason) for p in doc.problems],
    )
    for item in doc.items:
        problem = _refusal(item)
        if problem is not None:
            report.problems.append(ImportProblem(line=item.line, text=item.title[:200], reason=problem))
            continue
        existing = taskqueue.find_task(ctx, repo["id"], item.id)
        if existing is None:
            _add_item(ctx, repo, item, report, dry_run)
        else:
            _update_item(ctx, repo, existing, item, report, source, dry_run)
    report.problems.sort(key=lambda p: p.line)
    report.vanished = _vanished(ctx, repo, doc)
    if not dry_run and (report.new or report.updated):  # a re-import that changes nothing writes nothing
        ctx.emit(
            ev.SpecImported(
                source=source,
                new=len(report.new),
                updated=len(report.updated),
                unchanged=len(report.unchanged),
                skipped=len(report.skipped),
                problems=len(report.problems),
            ),
            repo=repo["name"],
        )
    return report


def _refusal(item: spec.SpecItem) -> str | None:
    """Why the task rules refuse an item (a 600-character title, an odd tag, a bad id), or None;
    a refused item is a problem line, not an error. Normalises title and tags in place."""
    try:
        taskqueue.check_id(item.id)
        item.title = taskqueue.check_title(item.title)
        item.tags = taskqueue.check_tags(item.tags)
        taskqueue.check_description(item.description)
    except ChkdError as exc:
        return exc.message
    return None


def _add_item(ctx: Ctx, repo: dict[str, Any], item: spec.SpecItem, report: ImportReport, dry_run: bool) -> None:
    report.new.append(item.id)
    if not dry_run:
        taskqueue.create_task(
            ctx,
            repo,
            title=item.title,
            id=item.id,
            priority=_priority(item, 2),
            description=item.description,
            tags=item.tags,
            status=item.status,
            held=item.held,
            spec_item_id=item.id,
        )


def _update_item(
    ctx: Ctx,
    repo: dict[str, Any],
    existing: dict[str, Any],
    item: spec.SpecItem,
    report: ImportReport,
    source: str,
    dry_run: bool,
) -> None:
    """An item already a task: unchanged, updated, or skipped (done or running tasks are never set back)."""
    changes = _changes(existing, item)
    if changes:
        report.changes[item.id] = sorted(changes)
    if not changes:
        report.unchanged.append(item.id)
    elif existing["status"] == "done" or existing["status"] in taskgraph.RUNNING_STATUSES:
        report.skipped.append(item.id)
        report.warnings.append(
            f"{item.id} is {existing['status'].replace('_', ' ')}; its changes in "
            f"{source} (line {item.line}) were not applied"
        )
    else:
        report.updated.append(item.id)
        if not dry_run:
            _apply_changes(ctx, repo, existing, changes)
    if not dry_run and existing["spec_item_id"] is None:
        ctx.store.x("UPDATE task_queue SET spec_item_id=? WHERE pk=?", (item.id, existing["pk"]))


def _vanished(ctx: Ctx, repo: dict[str, Any], doc: spec.Spec) -> list[str]:
    """Tasks imported earlier with an area code this file uses that are no longer in it
    (so importing TODO.md does not list the tasks of docs/SPEC.md)."""
    seen = {i.id for i in doc.items}
    codes = {i.id.rsplit(".", 1)[0] for i in doc.items}
    return [
        tid
        for (tid,) in ctx.store.all(
            "SELECT id FROM task_queue WHERE repo_id=? AND spec_item_id IS NOT NULL ORDER BY pk", (repo["id"],)
        )
        if tid not in seen and tid.rsplit(".", 1)[0] in codes
    ]


def _priority(item: spec.SpecItem, default: int) -> int:
    return default if item.priority is None else item.priority


def _changes(task: dict[str, Any], item: spec.SpecItem) -> dict[str, Any]:
    """What the file would change on an existing task; status only moves forward from pending."""
    want = {
        "title": item.title,
        "description": item.description,
        "priority": _priority(item, task["priority"]),
        "tags": json.dumps(item.tags),
    }
    changes = {k: v for k, v in want.items() if task[k] != v}
    if task["status"] == "pending":
        if item.status != "pending":
            changes["status"] = item.status
        if bool(task["held"]) != item.held:
            changes["held"] = int(item.held)
    return changes


def _apply_changes(ctx: Ctx, repo: dict[str, Any], task: dict[str, Any], changes: dict[str, Any]) -> None:
    status = changes.pop("status", None)
    if changes:
        taskqueue.update_fields(ctx, repo, task, changes)
    if status is not None:
        taskqueue.set_task_status(ctx, taskqueue.reload(ctx, task), status, note="from the spec")
