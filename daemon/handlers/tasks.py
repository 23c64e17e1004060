"""task.add/list/show/edit/cancel/retry/hold/release, dep.add/rm, claim, task.import.

Thin handlers: validation and state changes live in `daemon/tasks.py`, graph rules in
`daemon/taskgraph.py`, the spec format in `daemon/spec.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgspec


from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    MAX_IMPORT_ITEMS, Claim, ClaimResult, DepAdd, DepRm, ImportProblem, ImportReport, TaskAdd, TaskCancel, TaskEdit,
    TaskHold, TaskImport, TaskList, TaskListResult, TaskRelease, TaskResult, TaskRetry, TaskShow,
)
from chkd.protocol.paths import find_repo_root

from .. import lookup, spec, taskgraph, tasks
from .. import workers as W
from ..context import EVENT_COLUMNS, Ctx, Deferred, row_event
from .repos import RepoFacts, ensure_repo, inspect_repo, register

#: `task show` returns at most this many history events (the newest).
HISTORY_LIMIT = 500


# -- repositories -----------------------------------------------------------------------------
def find_repo(ctx: Ctx, ref: str | None) -> dict[str, Any] | None:
    """The repository `ref` names; a directory outside every git repository means the only one."""
    row = lookup.find_repo(ctx.store, ref)
    if row is None and ref and (os.sep in ref or ref.startswith(".")):
        path = lookup.existing_path(ref)
        if path is not None and path.is_dir() and find_repo_root(path) is None:
            row = lookup.find_repo(ctx.store, None)
    return row


def resolve_repo(ctx: Ctx, ref: str | None) -> dict[str, Any]:
    return find_repo(ctx, ref) or lookup.repo(ctx.store, ref)


def _with_repo(ctx: Ctx, ref: str | None, then: Any) -> Any:
    """Run `then(repo)`; an unknown git repository at `ref` is registered first."""
    row = find_repo(ctx, ref)
    if row is not None:
        return then(row)
    return ensure_repo(ctx, ref, then)


def _result(ctx: Ctx, task: dict[str, Any], repo: dict[str, Any]) -> TaskResult:
    return TaskResult(task=tasks.task_info(ctx, task, repo["name"]))


# -- add, list, show, edit ---------------------------------------------------------------------
def add(ctx: Ctx, req: TaskAdd) -> Any:
    tasks.check_title(req.title)  # fail fast, before any repository is registered
    tasks.check_priority(req.priority)
    if req.id is not None:
        tasks.check_id(req.id)

    def _add(repo: dict[str, Any]) -> TaskResult:
        task = tasks.create_task(ctx, repo, title=req.title, id=req.id, priority=req.priority,
                                 description=req.description, tags=req.tags, after=req.after,
                                 max_attempts=req.max_attempts)
        return _result(ctx, task, repo)

    return _with_repo(ctx, req.repo, _add)


def list_(ctx: Ctx, req: TaskList) -> TaskListResult:
    where: list[str] = []
    params: list[Any] = []
    if not req.all_repos:
        where.append("repo_id=?")
        params.append(resolve_repo(ctx, req.repo)["id"])
    if req.status:
        where.append("status=?")
        params.append(req.status)
    if req.tag:
        where.append("EXISTS (SELECT 1 FROM json_each(task_queue.tags) WHERE json_each.value = ?)")
        params.append(req.tag.lstrip("#"))
    sql = f"SELECT {tasks.TASK_COLUMNS} FROM task_queue"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = ctx.store.dicts(sql, tuple(params))
    pairs = [(info, row["pk"]) for info, row in zip(tasks.task_infos(ctx, rows), rows)
             if info.ready or not req.ready]
    pairs.sort(key=lambda p: taskgraph.list_order_key(p[0].ready, p[0].priority, p[0].created_at, p[1]))
    return TaskListResult(tasks=[info for info, _ in pairs])


def show(ctx: Ctx, req: TaskShow) -> TaskResult:
    repo = resolve_repo(ctx, req.repo)
    task = tasks.get_task(ctx, repo, req.id)
    rows = ctx.store.all(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE task_id=? AND repo=? ORDER BY seq DESC LIMIT ?",
        (task["id"], repo["name"], HISTORY_LIMIT))
    history = [row_event(r) for r in reversed(rows)]
    info = tasks.task_info(ctx, task, repo["name"])
    tokens_in, tokens_out, cost = ctx.store.one(
        "SELECT coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), coalesce(sum(cost_usd), 0.0) "
        "FROM workers WHERE task_pk=?", (task["pk"],)) or (0, 0, 0.0)
    info = msgspec.structs.replace(info, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost)
    return TaskResult(task=info, history=history)


def edit(ctx: Ctx, req: TaskEdit) -> TaskResult:
    repo = resolve_repo(ctx, req.repo)
    task = tasks.get_task(ctx, repo, req.id)
    changes: dict[str, Any] = {}
    if req.title is not None:
        changes["title"] = tasks.check_title(req.title)
    if req.description is not None:
        changes["description"] = req.description
    if req.priority is not None:
        changes["priority"] = tasks.check_priority(req.priority)
    if req.tags is not None:
        changes["tags"] = json.dumps(tasks.check_tags(req.tags))
    if req.max_attempts is not None:
        changes["max_attempts"] = tasks.check_max_attempts(req.max_attempts, 1)
    if not changes:
        raise ChkdError("bad_request", "Nothing to change: give --title, --description, --priority, --tag or "
                                       "--max-attempts.")
    update_fields(ctx, repo, task, changes)
    return _result(ctx, tasks.reload(ctx, task), repo)


def update_fields(ctx: Ctx, repo: dict[str, Any], task: dict[str, Any], changes: dict[str, Any]) -> list[str]:
    """Write the fields that differ; emits `task.edited` naming them. Returns the changed field names."""
    differ = {k: v for k, v in changes.items() if task.get(k) != v}
    if not differ:
        return []
    sets = ", ".join(f"{k}=?" for k in differ)
    ctx.store.x(f"UPDATE task_queue SET {sets} WHERE pk=?", (*differ.values(), task["pk"]))
    edited = ev.TaskEdited(fields=sorted(differ), title=differ.get("title"), priority=differ.get("priority"),
                           tags=json.loads(differ["tags"]) if "tags" in differ else None,
                           max_attempts=differ.get("max_attempts"))
    ctx.emit(edited, repo=repo["name"], task_id=task["id"])
    return sorted(differ)


# -- lifecycle by hand ----------------------------------------------------------------------------
def cancel(ctx: Ctx, req: TaskCancel) -> TaskResult:
    repo = resolve_repo(ctx, req.repo)
    task = tasks.get_task(ctx, repo, req.id)
    if task["status"] == "cancelled":
        raise ChkdError("conflict", f"Task {task['id']} is already cancelled.")
    if task["status"] not in taskgraph.LIVE_STATUSES:
        raise ChkdError("conflict", f"Task {task['id']} is {task['status']}; only a task that is still wanted "
                                    "can be cancelled.")
    note = None
    worker = tasks.live_worker_for(ctx, task)
    if worker:
        note = f"worker {worker} still runs; abort it with `chkdctl abort {worker}`"
    task = tasks.set_task_status(ctx, task, "cancelled", note=note or "cancelled by hand")
    return _result(ctx, task, repo)


def retry(ctx: Ctx, req: TaskRetry) -> TaskResult:
    repo = resolve_repo(ctx, req.repo)
    task = tasks.get_task(ctx, repo, req.id)
    if task["status"] not in ("failed", "cancelled"):
        raise ChkdError("conflict", f"Task {task['id']} is {task['status'].replace('_', ' ')}; only a failed or "
                                    "cancelled task can be retried.")
    task = tasks.set_task_status(ctx, task, "pending", note="retried by hand")
    ctx.store.x("UPDATE task_queue SET attempts=0 WHERE pk=?", (task["pk"],))
    return _result(ctx, tasks.reload(ctx, task), repo)


def hold(ctx: Ctx, req: TaskHold) -> TaskResult:
    repo = resolve_repo(ctx, req.repo)
    task = tasks.get_task(ctx, repo, req.id)
    if task["held"]:
        raise ChkdError("conflict", f"Task {task['id']} is already on hold.")
    if task["status"] in taskgraph.FINAL_STATUSES:
        raise ChkdError("conflict", f"Task {task['id']} is {task['status']}; there is nothing to hold.")
    ctx.store.x("UPDATE task_queue SET held=1 WHERE pk=?", (task["pk"],))
    ctx.emit(ev.TaskHeld(status=task["status"]), repo=repo["name"], task_id=task["id"])
    return _result(ctx, tasks.reload(ctx, task), repo)


def release(ctx: Ctx, req: TaskRelease) -> TaskResult:
    repo = resolve_repo(ctx, req.repo)
    task = tasks.get_task(ctx, repo, req.id)
    if task["held"]:
        ctx.store.x("UPDATE task_queue SET held=0 WHERE pk=?", (task["pk"],))
        ctx.emit(ev.TaskReleased(was="held"), repo=repo["name"], task_id=task["id"])
        return _result(ctx, tasks.reload(ctx, task), repo)
    if task["status"] in taskgraph.RUNNING_STATUSES:
        worker = tasks.live_worker_for(ctx, task)
        if worker:
            raise ChkdError("refused", f"Task {task['id']} is being worked on by the live worker {worker}.",
                            f"Abort the worker first (`chkdctl abort {worker}`); its task is then put back.")
        task = tasks.set_task_status(ctx, task, "pending", note=f"released from {task['claimed_by'] or 'its claim'}")
        return _result(ctx, task, repo)
    raise ChkdError("conflict", f"Task {task['id']} is {task['status'].replace('_', ' ')} and not on hold; "
                                "there is nothing to release.")


# -- dependencies --------------------------------------------------------------------------------------
def _graph(ctx: Ctx, repo_id: int) -> dict[str, list[str]]:
    edges: dict[str, list[str]] = {}
    for a, b in ctx.store.all(
            "SELECT t.id, u.id FROM task_deps d JOIN task_queue t ON t.pk = d.task_pk "
            "JOIN task_queue u ON u.pk = d.depends_on_pk WHERE t.repo_id=?", (repo_id,)):
        edges.setdefault(a, []).append(b)
    return edges


def dep_add(ctx: Ctx, req: DepAdd) -> TaskResult:
    repo = resolve_repo(ctx, req.repo)
    task = tasks.get_task(ctx, repo, req.task)
    dep = tasks.get_task(ctx, repo, req.depends_on)
    cycle = taskgraph.cycle_if_added(_graph(ctx, repo["id"]), task["id"], dep["id"])
    if cycle is not None:
        raise ChkdError("conflict", f"{task['id']} cannot depend on {dep['id']}: that would make a cycle "
                                    f"({taskgraph.format_cycle(cycle)}).")
    if ctx.store.x("INSERT OR IGNORE INTO task_deps(task_pk, depends_on_pk) VALUES(?,?)", (task["pk"], dep["pk"])):
        ctx.emit(ev.DepAdded(depends_on=dep["id"]), repo=repo["name"], task_id=task["id"])
    return _result(ctx, task, repo)


def dep_rm(ctx: Ctx, req: DepRm) -> TaskResult:
    repo = resolve_repo(ctx, req.repo)
    task = tasks.get_task(ctx, repo, req.task)
    dep = tasks.get_task(ctx, repo, req.depends_on)
    if not ctx.store.x("DELETE FROM task_deps WHERE task_pk=? AND depends_on_pk=?", (task["pk"], dep["pk"])):
        raise ChkdError("not_found", f"{task['id']} does not depend on {dep['id']}.")
    ctx.emit(ev.DepRemoved(depends_on=dep["id"]), repo=repo["name"], task_id=task["id"])
    return _result(ctx, task, repo)


# -- claim -----------------------------------------------------------------------------------------------
def claim(ctx: Ctx, req: Claim) -> ClaimResult:
    repo = resolve_repo(ctx, req.repo)
    if req.worker is not None:
        check_claimer(ctx, repo, req.worker)
    task = tasks.claim_next(ctx, repo, req.worker, req.tag.lstrip("#") if req.tag else None)
    if task is None:
        return ClaimResult(task=None)
    return ClaimResult(task=tasks.task_info(ctx, task, repo["name"]))


def check_claimer(ctx: Ctx, repo: dict[str, Any], who: str) -> None:
    """A claim names who takes the task: a worker id (`w12`) must be a worker of this repository;
    any other name (a peer agent's own, like `reviewer-1`) is taken as it is."""
    if not W.WORKER_ID_RE.fullmatch(who):
        return
    row = ctx.store.one("SELECT repo_id FROM workers WHERE id=?", (who,))
    if row is None:
        raise ChkdError("not_found", f"No worker has the id '{who}'.",
                        "Worker ids like w3 are chkd's own; a peer agent claims under its own name.")
    if row[0] != repo["id"]:
        raise ChkdError("conflict", f"Worker {who} belongs to the repository '{tasks.repo_name_of(ctx, row[0])}', "
                                    f"not '{repo['name']}'; it cannot claim a task here.")


# -- spec import ---------------------------------------------------------------------------------------------
def import_(ctx: Ctx, req: TaskImport) -> Deferred:
    """Parse off-loop (a 4 MiB spec takes a second), then apply on the loop. An unknown git
    repository is inspected in the same job and registered, except on a dry run."""
    if "\0" in req.text:
        raise ChkdError("bad_request", f"{req.source} is a binary file, not a markdown checklist.")
    row = find_repo(ctx, req.repo)
    if row is None and (req.repo is None or lookup.existing_path(req.repo) is None):
        lookup.repo(ctx.store, req.repo)  # raises the right not_found sentence
    unknown = req.repo if row is None else None
    deferred = ctx.defer()

    def _parse() -> tuple[spec.Spec, RepoFacts | None]:
        doc = spec.parse(req.text)
        too_many = len(doc.items) > MAX_IMPORT_ITEMS
        return doc, inspect_repo(unknown) if unknown is not None and not too_many else None

    def _parsed(result: tuple[spec.Spec, RepoFacts | None] | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert result is not None
        doc, facts = result
        if len(doc.items) > MAX_IMPORT_ITEMS:
            raise ChkdError("bad_request", f"{req.source} has {len(doc.items)} items; one import can hold at most "
                                           f"{MAX_IMPORT_ITEMS}.", "Split it into several files.")
        ctx.finish(deferred, apply_spec(ctx, _import_target(ctx, row, facts, req.dry_run), doc, req.source,
                                        req.dry_run))

    ctx.submit(_parse, then=_parsed, reply_to=deferred)
    return deferred


def _import_target(ctx: Ctx, row: dict[str, Any] | None, facts: RepoFacts | None, dry_run: bool) -> dict[str, Any]:
    """The repository to import into, read again on the loop (it may have been removed meanwhile);
    an unknown one is registered, or on a dry run only described."""
    if row is not None:
        fresh = ctx.store.dict(f"SELECT {lookup.REPO_COLUMNS} FROM repos WHERE id=?", (row["id"],))
        if fresh is None:
            raise ChkdError("not_found", f"The repository '{row['name']}' was removed during the import.")
        return fresh
    assert facts is not None
    if dry_run:
        known = ctx.store.dict(f"SELECT {lookup.REPO_COLUMNS} FROM repos WHERE path=?", (facts.path,))
        return known or {"id": -1, "name": Path(facts.path).name, "path": facts.path}
    return register(ctx, facts, None, None)[0]


def apply_spec(ctx: Ctx, repo: dict[str, Any], doc: spec.Spec, source: str, dry_run: bool) -> ImportReport:
    """Create new items, update changed ones; never set back a done or running task, never delete."""
    report = ImportReport(repo=repo["name"], dry_run=dry_run, warnings=list(doc.warnings),
                          problems=[ImportProblem(line=p.line, text=p.text[:200], reason=p.reason)
                                    for p in doc.problems])
    seen: set[str] = set()
    for item in doc.items:
        seen.add(item.id)
        try:  # an item the task rules refuse (a 600-character title, an odd tag, a bad id) is a problem line
            tasks.check_id(item.id)
            item.title = tasks.check_title(item.title)
            item.tags = tasks.check_tags(item.tags)
            tasks.check_description(item.description)
        except ChkdError as exc:
            report.problems.append(ImportProblem(line=item.line, text=item.title[:200], reason=exc.message))
            continue
        existing = tasks.find_task(ctx, repo["id"], item.id)
        if existing is None:
            report.new.append(item.id)
            if not dry_run:
                tasks.create_task(ctx, repo, title=item.title, id=item.id, priority=_priority(item, 2),
                                  description=item.description, tags=item.tags, status=item.status,
                                  held=item.held, spec_item_id=item.id)
            continue
        changes = _changes(existing, item)
        if changes:
            report.changes[item.id] = sorted(changes)
        if not changes:
            report.unchanged.append(item.id)
        elif existing["status"] == "done" or existing["status"] in taskgraph.RUNNING_STATUSES:
            report.skipped.append(item.id)
            report.warnings.append(f"{item.id} is {existing['status'].replace('_', ' ')}; its changes in "
                                   f"{source} (line {item.line}) were not applied")
        else:
            report.updated.append(item.id)
            if not dry_run:
                _apply_changes(ctx, repo, existing, changes)
        if not dry_run and existing["spec_item_id"] is None:
            ctx.store.x("UPDATE task_queue SET spec_item_id=? WHERE pk=?", (item.id, existing["pk"]))
    report.problems.sort(key=lambda p: p.line)
    # Vanished: imported earlier with an area code this file uses, and no longer in it
    # (so importing TODO.md does not list the tasks of docs/SPEC.md).
    codes = {i.id.rsplit(".", 1)[0] for i in doc.items}
    report.vanished = [tid for (tid,) in ctx.store.all(
        "SELECT id FROM task_queue WHERE repo_id=? AND spec_item_id IS NOT NULL ORDER BY pk", (repo["id"],))
        if tid not in seen and tid.rsplit(".", 1)[0] in codes]
    if not dry_run and (report.new or report.updated):  # a re-import that changes nothing writes nothing
        ctx.emit(ev.SpecImported(source=source, new=len(report.new), updated=len(report.updated),
                                 unchanged=len(report.unchanged), skipped=len(report.skipped),
                                 problems=len(report.problems)),
                 repo=repo["name"])
    return report


def _priority(item: spec.SpecItem, default: int) -> int:
    return default if item.priority is None else item.priority


def _changes(task: dict[str, Any], item: spec.SpecItem) -> dict[str, Any]:
    """What the file would change on an existing task; status only moves forward from pending."""
    want = {"title": item.title, "description": item.description,
            "priority": _priority(item, task["priority"]), "tags": json.dumps(item.tags)}
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
        update_fields(ctx, repo, task, changes)
    if status is not None:
        tasks.set_task_status(ctx, tasks.reload(ctx, task), status, note="from the spec")


HANDLERS = {
    TaskAdd: add, TaskList: list_, TaskShow: show, TaskEdit: edit, TaskCancel: cancel, TaskRetry: retry,
    TaskHold: hold, TaskRelease: release, DepAdd: dep_add, DepRm: dep_rm, Claim: claim, TaskImport: import_,
}
