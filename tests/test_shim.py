"""chkd-shim against a real daemon: hello/beat/exit, output as activity, unreachable daemon, bad commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import ShimBeat, ShimExit, ShimHello, WorkerShow

from conftest import BIN, Daemon, wait_for

DEMO = str(BIN / "chkd-demo-agent")


def spawn(daemon: Daemon, repo: Path, task: str, cmd: str) -> dict:
    res = daemon.ctl("--json", "spawn", task, "--title", f"task {task}", "--cmd", cmd, cwd=repo)
    assert res.code == 0, res
    return res.json()


def show(daemon: Daemon, wid: str):  # type: ignore[no-untyped-def]
    return daemon.call(WorkerShow(worker=wid)).worker


def alive(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return data[data.rindex(b")") + 2 :].split()[0] != b"Z"


@pytest.mark.timeout(60)
def test_hello_records_identity_and_output_counts_as_activity(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "O", "sh -c 'for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.3; done'")
    w = wait_for(lambda: (x := show(daemon, "w1")).status == "working" and x.pid and x, 10, what="hello")
    assert w.pgid == w.pid and alive(w.pid)
    first = wait_for(lambda: show(daemon, "w1").activity_at, 5, what="activity from output")
    wait_for(lambda: (show(daemon, "w1").activity_at or 0) > first, 5, what="activity advancing with output")
    assert show(daemon, "w1").message is None  # output is activity, not a message
    done = wait_for(lambda: (x := show(daemon, "w1")).status == "done" and x, 15, what="done")
    assert done.exit_code == 0
    log = Path(done.log_path).read_text()
    assert "tick 1" in log and "tick 8" in log and "exited with code 0" in log


@pytest.mark.timeout(60)
def test_missing_command_is_an_error_with_a_sentence(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "M", "no-such-agent-binary --flag")
    w = wait_for(lambda: (x := show(daemon, "w1")).status in ("error", "dead") and x, 15, what="error")
    assert w.status == "error" and w.exit_code == 127
    assert "could not be started" in w.last_error
    assert "cannot start the agent" in Path(w.log_path).read_text()
    res = daemon.ctl("task", "show", "M", cwd=repo)
    assert res.code == 0 and "pending" in res.out  # requeued (one attempt counted)


@pytest.mark.timeout(60)
def test_abort_right_after_spawn_stops_the_agent(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "A", f"{DEMO} --hang")
    assert daemon.ctl("abort", "w1", cwd=repo).code == 0
    w = wait_for(lambda: (x := show(daemon, "w1")).pid and x, 10, what="the agent's pid (hello after abort)")
    wait_for(lambda: not alive(w.pid), 10, what="the agent stopped")
    assert show(daemon, "w1").status == "aborted"


@pytest.mark.timeout(30)
def test_shim_messages_are_idempotent_and_unknown_workers_refused(daemon: Daemon, repo: Path) -> None:
    with pytest.raises(ChkdError, match="No worker has the id 'w42'"):
        daemon.call(ShimBeat(worker="w42"))
    spawn(daemon, repo, "I", f"{DEMO} --steps 1 --step-s 0")
    wait_for(lambda: show(daemon, "w1").status == "done", 15, what="done")
    before = show(daemon, "w1")
    ack = daemon.call(ShimExit(worker="w1", exit_code=3))  # a retried (different) report
    assert ack.status == "done"
    hello = daemon.call(ShimHello(worker="w1", shim_pid=1, shim_started=0.0, agent_pid=1, agent_started=0.0, pgid=1))
    assert hello.status == "done"
    after = show(daemon, "w1")
    assert (after.status, after.exit_code, after.pid) == ("done", 0, before.pid)


@pytest.mark.timeout(60)
def test_agent_keeps_running_while_daemon_is_down(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "K", f"{DEMO} --steps 30 --step-s 0.1")
    w = wait_for(lambda: (x := show(daemon, "w1")).pid and x, 10, what="hello")
    daemon.kill()
    wait_for(lambda: "heartbeat not delivered" in Path(w.log_path).read_text(), 10, what="a failed heartbeat")
    assert alive(w.pid)
    daemon.start()
    wait_for(lambda: show(daemon, "w1").status == "done", 30, what="done after the restart")
    log = Path(w.log_path).read_text()
    assert "heartbeat not delivered" in log and "step 30/30" in log
    assert os.path.exists(w.worktree)


def test_program_beside_python_is_found_without_path(tmp_path: Path) -> None:
    from chkd.client.shim import resolve_program

    assert resolve_program(["chkd-demo-agent", "--hang"], {"PATH": str(tmp_path)}) == [DEMO, "--hang"]
    assert resolve_program(["sh", "-c", "x"], {"PATH": "/bin:/usr/bin"}) == ["sh", "-c", "x"]
    assert resolve_program(["no-such-thing"], {"PATH": str(tmp_path)}) == ["no-such-thing"]
