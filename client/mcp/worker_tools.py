"""Tools for an agent inside a worker (chkd-mcp started with CHKD_WORKER_ID in its environment)."""

from __future__ import annotations

from typing import Annotated

from mcp.server.mcpserver.tools import Tool
from mcp.types import CallToolResult
from pydantic import Field

from chkd.protocol import messages as M

from ..messages_text import messages_block
from . import render
from .shapes import ClaimReport, MessageReport, WorkerStatusReport
from .tooling import Chkd, answer, guarded, make_tool

#: What each status asks of the agent, in words it can act on.
INSTRUCTIONS = {
    "starting": "Work on your task.",
    "working": "Work on your task.",
    "stalled": "Work on your task, and report progress with chkd_heartbeat.",
    "paused": "Paused: stop and wait; you will be resumed.",
    "aborted": "Aborted: stop now; do not change anything more.",
    "done": "Your work is done and waits for review; stop.",
    "merging": "Your work is being merged; stop.",
    "merged": "Your work was merged; stop.",
    "conflict": "Your branch conflicts with the target; resolve the conflict markers, commit, then chkd_complete_work.",
    "error": "chkd gave up on this worker; stop.",
    "dead": "chkd gave up on this worker; stop.",
}


def worker_tools(chkd: Chkd) -> list[Tool]:
    wid = chkd.worker_id
    assert wid is not None

    def status_report(status: str, messages: list[M.MessageInfo]) -> CallToolResult:
        report = WorkerStatusReport(
            status=status,  # type: ignore[arg-type]
            instruction=INSTRUCTIONS.get(status, "Stop."),
            messages=messages,
        )
        text = f"{status}: {report.instruction}"
        block = messages_block(messages, wid)
        return answer(report, f"{text}\n{block}" if block else text)

    @guarded
    def chkd_heartbeat(
        message: Annotated[str, Field(description="What you are doing now, in one short line.", max_length=500)],
    ) -> CallToolResult:
        ack = chkd.call(M.Heartbeat(worker=wid, message=message))
        return status_report(ack.status, [])

    @guarded
    def chkd_worker_status() -> CallToolResult:
        ack = chkd.call(M.WorkerState(worker=wid))
        unread = chkd.call(M.Inbox(worker=wid, unread=True, mark_read=True)).messages
        return status_report(ack.status, unread)

    @guarded
    def chkd_complete_work(
        summary: Annotated[
            str,
            Field(
                description="One line on what you did; it becomes the commit message for anything not committed yet.",
                max_length=2000,
            ),
        ] = "",
    ) -> CallToolResult:
        w = chkd.call(M.Done(worker=wid, summary=summary), timeout=120).worker
        return answer(w, f"Done: worker {w.id}, task {w.task_id} is in review (branch {w.branch}). Stop now.")

    @guarded
    def chkd_request_help(
        question: Annotated[
            str,
            Field(
                description="What you need from a person or the master, as a question.", min_length=1, max_length=4000
            ),
        ],
    ) -> CallToolResult:
        ack = chkd.call(M.HelpRequest(worker=wid, question=question))
        return answer(
            WorkerStatusReport(status=ack.status, instruction="Asked; the answer comes as a message."),
            "Your question went to the master and the user; the answer arrives as a message "
            "(after a tool call, or with chkd_inbox). Go on with what you can meanwhile.",
        )

    @guarded
    def chkd_inbox() -> CallToolResult:
        msgs = chkd.call(M.Inbox(worker=wid, mark_read=True)).messages
        rows = [
            [m.id, render.ago(m.created_at), m.sender if not m.from_worker else f"worker {m.from_worker}", m.text]
            for m in msgs
        ]
        return answer(MessageReport(messages=msgs), render.table(["ID", "SENT", "FROM", "TEXT"], rows, "No messages."))

    @guarded
    def chkd_claim_task() -> CallToolResult:
        task = chkd.call(M.Claim(repo=chkd.repo, worker=wid)).task
        if task is None:
            return answer(ClaimReport(), "No task is ready to be claimed.")
        text = f"Claimed {task.id}: {task.title}" + (f"\n\n{task.description}" if task.description else "")
        return answer(ClaimReport(task=task), text)

    return [
        make_tool(
            chkd_heartbeat,
            WorkerStatusReport,
            "Report progress to chkd (counts as activity, so you are not taken for stalled). "
            "Returns what chkd wants from you now.",
        ),
        make_tool(
            chkd_worker_status,
            WorkerStatusReport,
            "Ask chkd what it wants from you (working, paused, aborted, ...) and get your unread messages.",
        ),
        make_tool(
            chkd_complete_work,
            M.WorkerInfo,
            "Call when your task is finished: chkd commits anything uncommitted in your worktree "
            "and puts the task in review. Stop working afterwards.",
        ),
        make_tool(
            chkd_request_help,
            WorkerStatusReport,
            "Ask the master and the user a question you cannot answer yourself (they are notified).",
        ),
        make_tool(chkd_inbox, MessageReport, "Every message sent to you (the unread ones are now marked read)."),
        make_tool(
            chkd_claim_task,
            ClaimReport,
            "Peer mode: claim the most urgent ready task of this repository; returns its title and description.",
        ),
    ]
