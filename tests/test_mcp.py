"""chkd-mcp against a real daemon, driven by the MCP SDK's own client over stdio: the master's
tools from task to merged work with a demo agent, a worker's own tools, sessions, and the
error paths (daemon sentences and bad arguments come back as tool errors)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from chkd.protocol.events import WorkerHelpRequested
from chkd.protocol.messages import (
    Events,
    RepoAdd,
    SessionList,
    WorkerShow,
)

from conftest import BIN, DEFAULT_TEST_CONFIG, Daemon, git, make_repo, wait_for

MASTER_TOOLS = {
    "chkd_status",
    "chkd_tasks",
    "chkd_add_task",
    "chkd_import_spec",
    "chkd_spawn_worker",
    "chkd_workers",
    "chkd_worker",
    "chkd_merge_worker",
    "chkd_approve_merge",
    "chkd_reject_merge",
    "chkd_pause_worker",
    "chkd_resume_worker",
    "chkd_abort_worker",
    "chkd_conflicts",
    "chkd_send_message",
    "chkd_peek_worker",
    "chkd_send_keys",
}
WORKER_TOOLS = {
    "chkd_heartbeat",
    "chkd_worker_status",
    "chkd_complete_work",
    "chkd_request_help",
    "chkd_inbox",
    "chkd_claim_task",
}


@pytest.fixture
def daemon_config() -> str:
    return (
        DEFAULT_TEST_CONFIG + '\n[agents.slowdemo]\ncmd = ["chkd-demo-agent", "--steps", "4", "--step-s", "0.5"]\n'
        '\n[agents.ask]\ncmd = ["chkd-demo-agent", "--ask", "Proceed? (yes/no)", "--steps", "1", "--step-s", '
        '"0.05"]\ninteractive = true\n'
    )


def params(daemon: Daemon, cwd: Path, worker: str | None = None) -> StdioServerParameters:
    env = {**os.environ, "CHKD_HOME": str(daemon.home), "CHKD_NO_AUTOSTART": "1"}
    env.pop("CHKD_WORKER_ID", None)
    if worker:
        env["CHKD_WORKER_ID"] = worker
    return StdioServerParameters(command=str(BIN / "chkd-mcp"), env=env, cwd=str(cwd))


@asynccontextmanager
async def connect(p: StdioServerParameters):  # type: ignore[no-untyped-def]
    async with stdio_client(p) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def ok(session: ClientSession, tool: str, **args: Any) -> tuple[dict[str, Any], str]:
    res = await session.call_tool(tool, args)
    text = "".join(getattr(c, "text", "") for c in res.content)
    assert not res.is_error, f"{tool} failed: {text}"
    assert res.structured_content is not None, tool
    return res.structured_content, text


async def refused(session: ClientSession, tool: str, **args: Any) -> str:
    res = await session.call_tool(tool, args)
    text = "".join(getattr(c, "text", "") for c in res.content)
    assert res.is_error, f"{tool} should have failed: {text}"
    return text


def open_sessions(daemon: Daemon) -> list[Any]:
    return daemon.call(SessionList()).sessions


def test_master_and_worker_tools_from_task_to_merged_work(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    daemon.call(RepoAdd(path=str(repo)))

    async def scenario() -> None:
        # Both servers start side by side (the SDK import dominates); the first worker of a fresh
        # daemon is w1, so the worker's server exists before its worker: its session opens later.
        async with connect(params(daemon, repo)) as master:
            async with connect(params(daemon, repo, "w1")) as worker:
                await worker_part(master, worker)
            # the worker's client disconnected: its session ends, the master's stays
            wait_for(
                lambda: [(s.is_master, s.worker_id) for s in open_sessions(daemon)] == [(True, None)],
                what="the worker's session to end on disconnect",
            )
            wait_for(
                lambda: any(e.kind == "worker.exited" for e in daemon.call(Events(worker="w1")).events),
                timeout=20,
                what="the demo agent to exit",
            )
            await merge_part(master)
            daemon.stop()
            assert "not running" in await refused(master, "chkd_status")

    async def worker_part(master: ClientSession, worker: ClientSession) -> None:
        tools = await master.list_tools()
        assert {t.name for t in tools.tools} == MASTER_TOOLS
        assert all(t.description and t.output_schema and t.input_schema for t in tools.tools)
        assert {t.name for t in (await worker.list_tools()).tools} == WORKER_TOOLS
        assert "No worker has the id 'w1'" in await refused(worker, "chkd_heartbeat", message="too early")
        assert "message" in await refused(worker, "chkd_heartbeat")  # a required argument missing

        task, text = await ok(master, "chkd_add_task", title="Say hello", id="T-1", priority=1)
        assert task["id"] == "T-1" and "T-1" in text
        listed, text = await ok(master, "chkd_tasks", status="ready")
        assert [t["id"] for t in listed["tasks"]] == ["T-1"] and "Say hello" in text

        w, _ = await ok(master, "chkd_spawn_worker", taskId="T-1", agent="slowdemo")
        assert w["id"] == "w1" and w["branch"] == "chkd/T-1"
        wait_for(
            lambda: daemon.call(WorkerShow(worker="w1")).worker.status == "working",
            what="the demo agent's first heartbeat",
        )
        ws, text = await ok(master, "chkd_workers")
        assert [x["id"] for x in ws["workers"]] == ["w1"] and text.startswith("ID")

        paused, _ = await ok(master, "chkd_pause_worker", workerId="w1")
        assert paused["workers"][0]["status"] == "paused"
        resumed, _ = await ok(master, "chkd_resume_worker", workerId="w1")
        assert resumed["workers"][0]["status"] == "working"
        sent, _ = await ok(master, "chkd_send_message", to="w1", text="Add a line to the README too.")
        assert [m["to_worker"] for m in sent["messages"]] == ["w1"]

        status, text = await ok(worker, "chkd_worker_status")
        assert status["status"] == "working"
        assert [m["text"] for m in status["messages"]] == ["Add a line to the README too."]
        assert "Add a line to the README too." in text
        again, _ = await ok(worker, "chkd_worker_status")
        assert again.get("messages", []) == []  # delivered once
        await ok(worker, "chkd_heartbeat", message="writing the greeting")
        assert daemon.call(WorkerShow(worker="w1")).worker.message == "writing the greeting"

        sessions = open_sessions(daemon)
        assert sorted((s.is_master, s.worker_id) for s in sessions) == [(False, "w1"), (True, None)]

        peek, text = await ok(master, "chkd_peek_worker", workerId="w1", lines=50)
        assert peek["source"] == "log" and "step" in peek["text"] and "tail of its log" in text
        assert "runs detached, not in a terminal" in await refused(master, "chkd_send_keys", workerId="w1", text="yes")

        await ok(worker, "chkd_request_help", question="Which greeting do you want?")
        asking = daemon.call(WorkerShow(worker="w1")).worker
        assert asking.status == "waiting" and asking.message == "Which greeting do you want?"
        helps = [e.data for e in daemon.call(Events(worker="w1")).events if isinstance(e.data, WorkerHelpRequested)]
        assert [h.question for h in helps] == ["Which greeting do you want?"]
        await ok(worker, "chkd_heartbeat", message="going with hello")  # its next activity: nobody is needed now
        assert daemon.call(WorkerShow(worker="w1")).worker.status == "working"

        done, text = await ok(worker, "chkd_complete_work", summary="greeting written")
        assert done["status"] == "done" and "in review" in text

    async def merge_part(master: ClientSession) -> None:
        detail, text = await ok(master, "chkd_worker", workerId="w1")
        assert detail["worker"]["status"] == "done" and any("step" in line for line in detail["log_tail"])
        m, text = await ok(master, "chkd_merge_worker", workerId="w1", strategy="review")
        assert m["status"] == "awaiting_review" and "review" in text
        overview, text = await ok(master, "chkd_status")
        assert [x["worker_id"] for x in overview["awaiting_review"]] == ["w1"]
        assert "Merges awaiting review (1)" in text and overview["cost"]["today_usd"] > 0
        landed, text = await ok(master, "chkd_approve_merge", workerId="w1")
        assert landed["status"] == "merged" and "merged into main" in text

        # error paths: the daemon's sentence, or the argument that is wrong
        assert (await refused(master, "chkd_worker", workerId="w999")).startswith("No worker has the id 'w999'.")
        assert "merged" in await refused(master, "chkd_pause_worker", workerId="w1")
        assert await refused(master, "chkd_add_task", title="x", priority=9) == (
            "Bad arguments for chkd_add_task: priority: input should be less than or equal to 4."
        )
        assert "strategy" in await refused(master, "chkd_merge_worker", workerId="w1", strategy="sideways")
        assert await refused(master, "chkd_add_task") == "Bad arguments for chkd_add_task: title: field required."

    anyio.run(scenario)
    assert "chkd-demo-T-1.txt" in git(repo, "ls-files")
    daemon.start()  # the master disconnected while the daemon was down: start-up ends its session
    sessions = daemon.call(SessionList(all=True)).sessions
    assert [(s.worker_id, s.end_reason) for s in sessions] == [
        (None, "its chkd-mcp process is gone"),
        ("w1", "disconnected"),
    ]


def test_a_killed_chkd_mcp_has_its_session_ended_by_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    proc = anyio.run(_start_and_leave_running, daemon, repo)
    try:
        (session,) = wait_for(lambda: open_sessions(daemon), what="the session to open")
        assert session.is_master and session.pid == proc.pid
        daemon.stop()
        os.kill(proc.pid, signal.SIGKILL)  # kill -9: no goodbye
        proc.wait(5)
        daemon.start()
        ended = daemon.call(SessionList(all=True)).sessions
        assert ended[0].ended_at and "gone" in (ended[0].end_reason or "")
    finally:
        if proc.poll() is None:
            proc.kill()


async def _start_and_leave_running(daemon: Daemon, repo: Path) -> Any:
    p = params(daemon, repo)
    return subprocess.Popen(
        [p.command], env=p.env, cwd=p.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )


def test_a_session_belongs_to_a_live_process(daemon: Daemon) -> None:
    """A request naming a dead or reused pid opens nothing (no row for the sweep to end later)."""
    from chkd.protocol.errors import ChkdError
    from chkd.protocol.messages import SessionOpen

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for pid, started in ((dead.pid, time.time()), (os.getpid(), 1.0), (0, time.time())):
        with pytest.raises(ChkdError, match="not a running MCP server"):
            daemon.call(SessionOpen(pid=pid, started=started))
    assert daemon.call(SessionList(all=True)).sessions == []


@pytest.mark.needs("tmux")
def test_the_master_peeks_at_a_waiting_interactive_worker_and_answers_it_with_send_keys(
    daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMUX_TMPDIR", str(tmp_path))  # chkd's own tmux socket only; never a default server
    monkeypatch.delenv("TMUX", raising=False)
    repo = make_repo(tmp_path / "proj")
    daemon.call(RepoAdd(path=str(repo)))

    async def scenario() -> None:
        async with connect(params(daemon, repo)) as master:
            await ok(master, "chkd_add_task", title="Ask first", id="T-2")
            w, _ = await ok(master, "chkd_spawn_worker", taskId="T-2", agent="ask")
            wid = w["id"]
            wait_for(
                lambda: daemon.call(WorkerShow(worker=wid)).worker.status == "waiting",
                20,
                what="the interactive demo agent to ask",
            )
            peek, text = await ok(master, "chkd_peek_worker", workerId=wid)
            assert peek["source"] == "screen" and "QUESTION: Proceed? (yes/no)" in peek["text"]
            assert "its screen now" in text and "Proceed? (yes/no)" in text
            typed, text = await ok(master, "chkd_send_keys", workerId=wid, text="yes")
            assert typed["status"] == "working" and "Typed into" in text
            wait_for(
                lambda: daemon.call(WorkerShow(worker=wid)).worker.status == "done",
                20,
                what="the answered worker to finish",
            )
            after, _ = await ok(master, "chkd_peek_worker", workerId=wid)
            assert after["source"] == "log"  # its terminal closed with the agent: the log's tail instead

    anyio.run(scenario)
    assert not (tmp_path / f"tmux-{os.getuid()}" / "default").exists(), "a default tmux server was started"
