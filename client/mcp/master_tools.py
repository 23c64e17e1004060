"""Tools for the master (chkd-mcp outside any worker): see everything, add and import tasks,
spawn workers, steer them, merge, review, and send messages."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Literal, cast

from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult
from pydantic import Field

from chkd.protocol import messages as M

from . import render
from .shapes import MessageReport, WorkerDetail
from .tooling import Chkd, answer, guarded, make_tool

TaskFilter = Literal["ready", "waiting", "pending", "claimed", "in_progress", "review", "done", "failed", "cancelled"]
#: Merge states after which the merge tools stop waiting.
SETTLED = frozenset({"merged", "conflict", "failed", "rejected", "awaiting_review"})
MERGE_WAIT_S = 600.0
LOG_TAIL_LINES = 30
MAX_SPEC_BYTES = M.MAX_SPEC

WorkerId = Annotated[
    str,
    Field(
        description="The worker's id (w3) or a unique prefix; a task id finds its worker.",
        min_length=1,
        max_length=M.MAX_ID,
    ),
]
RepoArg = Annotated[
    str | None, Field(description="Repository name or path; default: the one chkd-mcp runs in.", max_length=M.MAX_PATH)
]


def _tail(path: str | None, n: int) -> list[str]:
    if not path:
        return []
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return [line.decode("utf-8", "replace") for line in data.splitlines()[-n:]]


def _read_spec(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ToolError(f"{path} is not a file; give the path of a markdown spec (like docs/SPEC.md).")
    data = p.read_bytes()
    if len(data) > MAX_SPEC_BYTES:
        raise ToolError(f"{path} is {len(data) / 2**20:.1f} MiB; a spec can be at most {MAX_SPEC_BYTES // 2**20} MiB.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(f"{path} is not UTF-8 text.") from None


def master_tools(chkd: Chkd) -> list[Tool]:
    def here(value: str | None) -> str | None:
        return value or chkd.repo

    def wait_merge(m: M.MergeInfo) -> M.MergeInfo:
        deadline = time.monotonic() + MERGE_WAIT_S
        while m.status not in SETTLED and time.monotonic() < deadline:
            time.sleep(0.05)
            m = chkd.call(M.MergeShow(id=m.id)).merge
        return m

    def control(body: M.Command, verb: str) -> CallToolResult:
        workers = chkd.call(body).workers
        text = render.workers_list(workers) if workers else f"No worker to {verb}."
        return answer(M.WorkerListResult(workers=workers), text)

    @guarded
    def chkd_status(repo: RepoArg = None) -> CallToolResult:
        o = chkd.call(M.Overview(repo=repo))
        return answer(o, render.overview_text(o))

    @guarded
    def chkd_tasks(
        status: Annotated[TaskFilter | None, Field(description="Only tasks in this state; default: all.")] = None,
        repo: RepoArg = None,
    ) -> CallToolResult:
        wire = None if status in (None, "ready", "waiting") else cast("M.TaskStatus", status)
        tasks = chkd.call(M.TaskList(repo=here(repo), status=wire, ready=status == "ready")).tasks
        if status == "waiting":
            tasks = [t for t in tasks if t.status == "pending" and not t.ready and not t.held]
        return answer(M.TaskListResult(tasks=tasks), render.tasks_table(tasks))

    @guarded
    def chkd_add_task(
        title: Annotated[str, Field(description="What to do, in one line.", min_length=1, max_length=M.MAX_TITLE)],
        id: Annotated[
            str | None, Field(description="Your id for it (SD.13); default: the next T-N.", max_length=M.MAX_ID)
        ] = None,
        priority: Annotated[int, Field(description="0 (P0, most urgent) to 4; default 2.", ge=0, le=4)] = 2,
        after: Annotated[
            list[str], Field(description="Ids of tasks that must be done first.", max_length=M.MAX_DEPS)
        ] = [],  # noqa: B006 - pydantic copies defaults
        description: Annotated[
            str, Field(description="Details the worker will get in its prompt.", max_length=M.MAX_TEXT)
        ] = "",
        tags: Annotated[list[str], Field(description="Tags (for `spawn --next --tag`).", max_length=M.MAX_TAGS)] = [],  # noqa: B006
        repo: RepoArg = None,
    ) -> CallToolResult:
        res = chkd.call(
            M.TaskAdd(
                title=title,
                id=id,
                priority=priority,
                after=list(after),
                description=description,
                tags=list(tags),
                repo=here(repo),
            ),
            timeout=60,
        )
        return answer(res.task, f"Added {render.task_line(res.task)}")

    @guarded
    def chkd_import_spec(
        path: Annotated[
            str,
            Field(
                description="A markdown spec or checklist (docs/SPEC.md); relative to the directory chkd-mcp runs in.",
                min_length=1,
                max_length=M.MAX_PATH,
            ),
        ],
        dryRun: Annotated[bool, Field(description="Only report what would change.")] = False,
        repo: RepoArg = None,
    ) -> CallToolResult:
        report = chkd.call(
            M.TaskImport(text=_read_spec(path), source=path, repo=here(repo), dry_run=dryRun), timeout=120
        )
        return answer(report, render.import_text(report))

    @guarded
    def chkd_spawn_worker(
        taskId: Annotated[
            str, Field(description="The task to work on (see chkd_tasks).", min_length=1, max_length=M.MAX_ID)
        ],
        taskTitle: Annotated[
            str | None,
            Field(description="Creates the task with this title if it does not exist.", max_length=M.MAX_TITLE),
        ] = None,
        agent: Annotated[
            str | None, Field(description="Agent profile (default from config.toml).", max_length=M.MAX_NAME)
        ] = None,
        repo: RepoArg = None,
    ) -> CallToolResult:
        w = chkd.call(M.Spawn(repo=here(repo), task_id=taskId, title=taskTitle, agent=agent), timeout=120).worker
        return answer(w, f"Spawned {render.worker_line(w)}")

    @guarded
    def chkd_workers() -> CallToolResult:
        workers = chkd.call(M.WorkerList()).workers
        return answer(M.WorkerListResult(workers=workers), render.workers_table(workers))

    @guarded
    def chkd_worker(workerId: WorkerId) -> CallToolResult:
        w = chkd.call(M.WorkerShow(worker=workerId)).worker
        tail = _tail(w.log_path, LOG_TAIL_LINES)
        usage = f"tokens {w.tokens_in} in / {w.tokens_out} out, ${w.cost_usd:.4f}"
        text = "\n".join(
            [render.worker_line(w), usage, "", f"last {len(tail)} log lines:", *(render.visible(line) for line in tail)]
        )
        return answer(WorkerDetail(worker=w, log_tail=tail), text)

    @guarded
    def chkd_merge_worker(
        workerId: WorkerId,
        strategy: Annotated[
            Literal["auto", "review"],
            Field(
                description="auto: land when the checks pass; review: stop at awaiting_review for chkd_approve_merge."
            ),
        ],
    ) -> CallToolResult:
        m = wait_merge(chkd.call(M.Merge(worker=workerId, strategy=strategy)).merge)
        return answer(m, render.merge_line(m))

    @guarded
    def chkd_approve_merge(workerId: WorkerId) -> CallToolResult:
        m = wait_merge(chkd.call(M.Approve(worker=workerId)).merge)
        return answer(m, render.merge_line(m))

    @guarded
    def chkd_reject_merge(
        workerId: WorkerId,
        reason: Annotated[
            str, Field(description="What to change; the worker gets it.", min_length=1, max_length=M.MAX_TEXT)
        ],
    ) -> CallToolResult:
        m = chkd.call(M.Reject(worker=workerId, reason=reason)).merge
        return answer(m, f"Rejected merge {m.id}; {m.worker_id} is back to working with the reason.")

    @guarded
    def chkd_pause_worker(workerId: WorkerId) -> CallToolResult:
        return control(M.Pause(worker=workerId), "pause")

    @guarded
    def chkd_resume_worker(workerId: WorkerId) -> CallToolResult:
        return control(M.Resume(worker=workerId), "resume")

    @guarded
    def chkd_abort_worker(
        workerId: WorkerId,
        cancelTask: Annotated[
            bool, Field(description="Cancel the task too (default: it goes back to pending).")
        ] = False,
    ) -> CallToolResult:
        return control(M.Abort(worker=workerId, cancel_task=cancelTask), "abort")

    @guarded
    def chkd_conflicts(repo: RepoArg = None) -> CallToolResult:
        report = chkd.call(M.Conflicts(repo=repo), timeout=120)
        return answer(report, render.overlaps_table(report.overlaps))

    @guarded
    def chkd_send_message(
        to: Annotated[
            str, Field(description="A worker id, or 'all' for every live worker.", min_length=1, max_length=M.MAX_ID)
        ],
        text: Annotated[
            str,
            Field(
                description="The message; the worker reads it at its next tool call.",
                min_length=1,
                max_length=M.MAX_TEXT,
            ),
        ],
    ) -> CallToolResult:
        everyone = to.strip().lower() == "all"
        sent = chkd.call(M.Send(to=None if everyone else to, all=everyone, text=text, sender="master")).messages
        return answer(
            MessageReport(messages=sent),
            f"Sent to {', '.join(m.to_worker for m in sent)}; delivered at their next tool call.",
        )

    @guarded
    def chkd_peek_worker(
        workerId: WorkerId,
        lines: Annotated[int, Field(description="How many lines of the screen (or log) to show.", ge=1, le=10000)] = 40,
    ) -> CallToolResult:
        peek = chkd.call(M.Peek(worker=workerId, lines=lines))
        where = "its screen now" if peek.source == "screen" else "the tail of its log (it has no terminal)"
        screen = "\n".join(render.visible(line) for line in peek.text.splitlines())
        return answer(peek, f"Worker {peek.worker}, {where}:\n{screen}")

    @guarded
    def chkd_send_keys(
        workerId: WorkerId,
        text: Annotated[
            str,
            Field(
                description="What to type into the worker's terminal (Enter follows).",
                min_length=1,
                max_length=M.MAX_TEXT,
            ),
        ],
        enter: Annotated[bool, Field(description="Press Enter after the text.")] = True,
    ) -> CallToolResult:
        w = chkd.call(M.SendKeys(worker=workerId, text=text, enter=enter)).worker
        return answer(w, f"Typed into {w.id}'s terminal; it is {w.status} now.")

    return [
        make_tool(
            chkd_status,
            M.OverviewResult,
            "The whole picture: workers by status, ready / running / waiting tasks, merges awaiting "
            "review, conflicts, and cost today.",
        ),
        make_tool(chkd_tasks, M.TaskListResult, "List tasks (ready first, then by priority)."),
        make_tool(chkd_add_task, M.TaskInfo, "Add a task to the queue."),
        make_tool(
            chkd_import_spec, M.ImportReport, "Import tasks from a markdown spec or checklist; re-importing is safe."
        ),
        make_tool(chkd_spawn_worker, M.WorkerInfo, "Start a worker on a task, in its own git worktree and branch."),
        make_tool(chkd_workers, M.WorkerListResult, "List the workers that are not merged yet."),
        make_tool(chkd_worker, WorkerDetail, "One worker in detail, with the last lines of its log."),
        make_tool(
            chkd_merge_worker,
            M.MergeInfo,
            "Merge a done worker's branch: conflict check, test gate, then land (auto) or wait for "
            "review. Waits for the outcome.",
        ),
        make_tool(chkd_approve_merge, M.MergeInfo, "Approve a merge that awaits review; it lands. Waits for it."),
        make_tool(
            chkd_reject_merge,
            M.MergeInfo,
            "Reject a merge that awaits review; the worker goes back to working with your reason.",
        ),
        make_tool(chkd_pause_worker, M.WorkerListResult, "Freeze a worker (SIGSTOP to its process group)."),
        make_tool(chkd_resume_worker, M.WorkerListResult, "Let a paused worker go on."),
        make_tool(
            chkd_abort_worker,
            M.WorkerListResult,
            "Stop a worker; its worktree stays and its task goes back to pending unless cancelTask.",
        ),
        make_tool(
            chkd_conflicts,
            M.ConflictReport,
            "Workers changing the same files, and whether their merges would conflict.",
        ),
        make_tool(
            chkd_send_message,
            MessageReport,
            "Send a note to a worker (or 'all'); a Claude worker reads it at its next tool call.",
        ),
        make_tool(
            chkd_peek_worker,
            M.PeekResult,
            "What a worker shows now: an interactive worker's terminal screen, else its log's tail.",
        ),
        make_tool(
            chkd_send_keys,
            M.WorkerInfo,
            "Type into an interactive worker's terminal (answers a worker that is waiting for you).",
        ),
    ]
