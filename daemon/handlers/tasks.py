"""task.add/list/show/edit/cancel/retry/hold/release, dep.add/rm, claim, task.import.

Thin handlers: validation and state changes live in `daemon/taskqueue.py`, graph rules in
`daemon/taskgraph.py`, the spec format in `daemon/spec.py`.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    MAX_IMPORT_ITEMS,
    Claim,
    ClaimResult,
    DepAdd,
    DepRm,
    TaskAdd,
    TaskCancel,
    TaskEdit,
    TaskHold,
    TaskImport,
    TaskList,
    TaskListResult,
    TaskRelease,
    TaskResult,
    TaskRetry,
    TaskShow,
)

from .. import repos, spec, specimport, taskgraph, taskqueue, workerrecords
from ..context import EVENT_COLUMNS, Ctx, Deferred, row_event

#: `task show` returns at most this many history events (the newest).
HISTORY_LIMIT = 500


# -- repositories -----------------------------------------------------------------------------
def _result(ctx: Ctx, task: dict[str, Any], repo: dict[str, Any]) -> TaskResult:
    return TaskResult(task=taskqueue.task_info(ctx, task, repo["name"]))


# -- add, list, show, edit ---------------------------------------------------------------------
def add(ctx: Ctx, req: TaskAdd) -> Any:
    taskqueue.check_title(req.title)  # fail fast, before any repository is registered
    taskqueue.check_priority(req.priority)
    if req.id is not None:
        taskqueue.check_id(req.id)

    def _add(repo: dict[str, Any]) -> TaskResult:
        task = taskqueue.create_task(
            ctx,
            repo,
            title=req.title,
            id=req.id,
            priority=req.priority,
            description=req.description,
            tags=req.tags,
            after=req.after,
            max_attempts=req.max_attempts,
        )
        return _result(ctx, task, repo)

    return repos.with_repo(ctx, req.repo, _add)


def list_(ctx: Ctx, req: TaskList) -> TaskListResult:
    where: list[str] = []
    params: list[Any] = []
    if not req.all_repos:
        where.append("repo_id=?")
        params.append(repos.resolve(ctx.store, req.repo)["id"])
    if req.status:
        where.append("status=?")
        params.append(req.status)
    if req.tag:
        where.append("EXISTS (SELECT 1 FROM json_each(task_queue.tags) WHERE json_each.value = ?)")
        params.append(req.tag.lstrip("#"))
    sql = f"SELECT {taskqueue.TASK_COLUMNS} FROM task_queue"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = ctx.store.dicts(sql, tuple(params))
    pairs = [
        (info, row["pk"])
        for info, row in zip(taskqueue.task_infos(ctx, rows), rows, strict=False)
        if info.ready or not req.ready
    ]
    pairs.sort(key=lambda p: taskgraph.list_order_key(p[0].ready, p[0].priority, p[0].created_at, p[1]))
    return TaskListResult(tasks=[info for info, _ in pairs])


def show(ctx: Ctx, req: TaskShow) -> TaskResult:
    repo = repos.resolve(ctx.store, req.repo)
    task = taskqueue.get_task(ctx, repo, req.id)
    rows = ctx.store.all(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE task_id=? AND repo=? ORDER BY seq DESC LIMIT ?",
        (task["id"], repo["name"], HISTORY_LIMIT),
    )
    history = [row_event(r) for r in reversed(rows)]
    info = taskqueue.task_info(ctx, task, repo["name"])
    tokens_in, tokens_out, cost = ctx.store.one(
        "SELECT coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), coalesce(sum(cost_usd), 0.0) "
        "FROM workers WHERE task_pk=?",
        (task["pk"],),
    ) or (0, 0, 0.0)
    info = msgspec.structs.replace(info, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost)
    return TaskResult(task=info, history=history)


def edit(ctx: Ctx, req: TaskEdit) -> TaskResult:
    repo = repos.resolve(ctx.store, req.repo)
    task = taskqueue.get_task(ctx, repo, req.id)
    changes: dict[str, Any] = {}
    if req.title is not None:
        changes["title"] = taskqueue.check_title(req.title)
    if req.description is not None:
        changes["description"] = req.description
    if req.priority is not None:
        changes["priority"] = taskqueue.check_priority(req.priority)
    if req.tags is not None:
        changes["tags"] = json.dumps(taskqueue.check_tags(req.tags))
    if req.max_attempts is not None:
        changes["max_attempts"] = taskqueue.check_max_attempts(req.max_attempts, 1)
    if not changes:
        raise ChkdError(
            "bad_request", "Nothing to change: give --title, --description, --priority, --tag or --max-attempts."
        )
    taskqueue.update_fields(ctx, repo, task, changes)
    return _result(ctx, taskqueue.reload(ctx, task), repo)


# -- lifecycle by hand ----------------------------------------------------------------------------
def cancel(ctx: Ctx, req: TaskCancel) -> TaskResult:
    repo = repos.resolve(ctx.store, req.repo)
    task = taskqueue.get_task(ctx, repo, req.id)
    if task["status"] == "cancelled":
        raise ChkdError("conflict", f"Task {task['id']} is already cancelled.")
    if task["status"] not in taskgraph.LIVE_STATUSES:
        raise ChkdError(
            "conflict", f"Task {task['id']} is {task['status']}; only a task that is still wanted can be cancelled."
        )
    note = None
    worker = taskqueue.live_worker_for(ctx, task)
    if worker:
        note = f"worker {worker} still runs; abort it with `chkdctl abort {worker}`"
    task = taskqueue.set_task_status(ctx, task, "cancelled", note=note or "cancelled by hand")
    return _result(ctx, task, repo)


def retry(ctx: Ctx, req: TaskRetry) -> TaskResult:
    repo = repos.resolve(ctx.store, req.repo)
    task = taskqueue.get_task(ctx, repo, req.id)
    if task["status"] not in ("failed", "cancelled"):
        raise ChkdError(
            "conflict",
            f"Task {task['id']} is {task['status'].replace('_', ' ')}; only a failed or cancelled task can be retried.",
        )
    task = taskqueue.set_task_status(ctx, task, "pending", note="retried by hand")
    ctx.store.x("UPDATE task_queue SET attempts=0 WHERE pk=?", (task["pk"],))
    return _result(ctx, taskqueue.reload(ctx, task), repo)


def hold(ctx: Ctx, req: TaskHold) -> TaskResult:
    repo = repos.resolve(ctx.store, req.repo)
    task = taskqueue.get_task(ctx, repo, req.id)
    if task["held"]:
        raise ChkdError("conflict", f"Task {task['id']} is already on hold.")
    if task["status"] in taskgraph.FINAL_STATUSES:
        raise ChkdError("conflict", f"Task {task['id']} is {task['status']}; there is nothing to hold.")
    ctx.store.x("UPDATE task_queue SET held=1 WHERE pk=?", (task["pk"],))
    ctx.emit(ev.TaskHeld(status=task["status"]), repo=repo["name"], task_id=task["id"])
    return _result(ctx, taskqueue.reload(ctx, task), repo)


def release(ctx: Ctx, req: TaskRelease) -> TaskResult:
    repo = repos.resolve(ctx.store, req.repo)
    task = taskqueue.get_task(ctx, repo, req.id)
    if task["held"]:
        ctx.store.x("UPDATE task_queue SET held=0 WHERE pk=?", (task["pk"],))
        ctx.emit(ev.TaskReleased(was="held"), repo=repo["name"], task_id=task["id"])
        return _result(ctx, taskqueue.reload(ctx, task), repo)
    if task["status"] in taskgraph.RUNNING_STATUSES:
        worker = taskqueue.live_worker_for(ctx, task)
        if worker:
            raise ChkdError(
                "refused",
                f"Task {task['id']} is being worked on by the live worker {worker}.",
                f"Abort the worker first (`chkdctl abort {worker}`); its task is then put back.",
            )
        task = taskqueue.set_task_status(
            ctx, task, "pending", note=f"released from {task['claimed_by'] or 'its claim'}"
        )
        return _result(ctx, task, repo)
    raise ChkdError(
        "conflict",
        f"Task {task['id']} is {task['status'].replace('_', ' ')} and not on hold; there is nothing to release.",
    )


# -- dependencies --------------------------------------------------------------------------------------
def _graph(ctx: Ctx, repo_id: int) -> dict[str, list[str]]:
    edges: dict[str, list[str]] = {}
    for a, b in ctx.store.all(
        "SELECT t.id, u.id FROM task_deps d JOIN task_queue t ON t.pk = d.task_pk "
        "JOIN task_queue u ON u.pk = d.depends_on_pk WHERE t.repo_id=?",
        (repo_id,),
    ):
        edges.setdefault(a, []).append(b)
    return edges


def dep_add(ctx: Ctx, req: DepAdd) -> TaskResult:
    repo = repos.resolve(ctx.store, req.repo)
    task = taskqueue.get_task(ctx, repo, req.task)
    dep = taskqueue.get_task(ctx, repo, req.depends_on)
    cycle = taskgraph.cycle_if_added(_graph(ctx, repo["id"]), task["id"], dep["id"])
    if cycle is not None:
        raise ChkdError(
            "conflict",
            f"{task['id']} cannot depend on {dep['id']}: that would make a cycle ({taskgraph.format_cycle(cycle)}).",
        )
    if ctx.store.x("INSERT OR IGNORE INTO task_deps(task_pk, depends_on_pk) VALUES(?,?)", (task["pk"], dep["pk"])):
        ctx.emit(ev.DepAdded(depends_on=dep["id"]), repo=repo["name"], task_id=task["id"])
    return _result(ctx, task, repo)


def dep_rm(ctx: Ctx, req: DepRm) -> TaskResult:
    repo = repos.resolve(ctx.store, req.repo)
    task = taskqueue.get_task(ctx, repo, req.task)
    dep = taskqueue.get_task(ctx, repo, req.depends_on)
    if not ctx.store.x("DELETE FROM task_deps WHERE task_pk=? AND depends_on_pk=?", (task["pk"], dep["pk"])):
        raise ChkdError("not_found", f"{task['id']} does not depend on {dep['id']}.")
    ctx.emit(ev.DepRemoved(depends_on=dep["id"]), repo=repo["name"], task_id=task["id"])
    return _result(ctx, task, repo)


# -- claim -----------------------------------------------------------------------------------------------
def claim(ctx: Ctx, req: Claim) -> ClaimResult:
    repo = repos.resolve(ctx.store, req.repo)
    if req.worker is not None:
        check_claimer(ctx, repo, req.worker)
    task = taskqueue.claim_next(ctx, repo, req.worker, req.tag.lstrip("#") if req.tag else None)
    if task is None:
        return ClaimResult(task=None)
    return ClaimResult(task=taskqueue.task_info(ctx, task, repo["name"]))


def check_claimer(ctx: Ctx, repo: dict[str, Any], who: str) -> None:
    """A claim names who takes the task: a worker id (`w12`) must be a worker of this repository;
    any other name (a peer agent's own, like `reviewer-1`) is taken as it is."""
    if not workerrecords.WORKER_ID_RE.fullmatch(who):
        return
    row = ctx.store.one("SELECT repo_id FROM workers WHERE id=?", (who,))
    if row is None:
        raise ChkdError(
            "not_found",
            f"No worker has the id '{who}'.",
            "Worker ids like w3 are chkd's own; a peer agent claims under its own name.",
        )
    if row[0] != repo["id"]:
        raise ChkdError(
            "conflict",
            f"Worker {who} belongs to the repository '{repos.repo_name(ctx.store, row[0])}', "
            f"not '{repo['name']}'; it cannot claim a task here.",
        )


# -- spec import ---------------------------------------------------------------------------------------------
def import_(ctx: Ctx, req: TaskImport) -> Deferred:
    """Parse off-loop (a 4 MiB spec takes a second), then apply on the loop. An unknown git
    repository is inspected in the same job and registered, except on a dry run."""
    if "\0" in req.text:
        raise ChkdError("bad_request", f"{req.source} is a binary file, not a markdown checklist.")
    row = repos.find(ctx.store, req.repo)
    if row is None and (req.repo is None or repos.existing_path(req.repo) is None):
        repos.resolve(ctx.store, req.repo)  # raises the right not_found sentence
    unknown = req.repo if row is None else None
    deferred = ctx.defer()

    def _parse() -> tuple[spec.Spec, repos.RepoFacts | None]:
        doc = spec.parse(req.text)
        too_many = len(doc.items) > MAX_IMPORT_ITEMS
        return doc, repos.inspect_repo(unknown) if unknown is not None and not too_many else None

    def _parsed(result: tuple[spec.Spec, repos.RepoFacts | None] | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert result is not None
        doc, facts = result
        if len(doc.items) > MAX_IMPORT_ITEMS:
            raise ChkdError(
                "bad_request",
                f"{req.source} has {len(doc.items)} items; one import can hold at most {MAX_IMPORT_ITEMS}.",
                "Split it into several files.",
            )
        ctx.finish(
            deferred,
            specimport.apply_spec(
                ctx, specimport.import_target(ctx, row, facts, req.dry_run), doc, req.source, req.dry_run
            ),
        )

    ctx.submit(_parse, then=_parsed, reply_to=deferred)
    return deferred


HANDLERS = {
    TaskAdd: add,
    TaskList: list_,
    TaskShow: show,
    TaskEdit: edit,
    TaskCancel: cancel,
    TaskRetry: retry,
    TaskHold: hold,
    TaskRelease: release,
    DepAdd: dep_add,
    DepRm: dep_rm,
    Claim: claim,
    TaskImport: import_,
}
