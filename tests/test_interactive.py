"""Interactive workers in tmux (issue 13), with real tmux, real shims and the demo agent asking a
question: peek shows it, the worker is `waiting` and notified once, `send` answers it and the
work merges; `attach --read-only` from a pty shows the screen and detaches cleanly; pause and
abort reach the agent and its children (not the pane's leader, which tmux would wake), and a
decoy session on another tmux server survives; a kill -9 of the daemon while a worker waits
leaves it waiting and answerable. Every tmux call uses the test's own CHKD_HOME socket, and
TMUX_TMPDIR points into the test's directory: the user's default server is never touched."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from chkd.protocol.messages import Spawn, TaskAdd, TaskShow, WorkerInfo, WorkerShow

from conftest import Daemon, git, holds, shim_of, wait_for

pytestmark = pytest.mark.needs("tmux")

QUESTION = "Proceed with {task_id}? (yes/no)"
#: The demo agent asking first, then two quick steps.
ASK = ["chkd-demo-agent", "--ask", QUESTION, "--steps", "1", "--step-s", "0.05"]


def config(out: Path) -> str:
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read().strip() + chr(10))"
    return (
        f"heartbeat_s = 0.5\nheartbeat_timeout_s = 3\nstall_timeout_s = 1\nabort_grace_s = 2\n"
        f"notify = true\nnotify_cmd = ['{sys.executable}', '-c', \"{script}\"]\n\n"
        f"[agents.ask]\ncmd = {json.dumps(ASK)}\ninteractive = true\n"
    )


@pytest.fixture(autouse=True)
def _private_tmux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Nothing here may reach a default tmux server: not the user's, not one from TMUX_TMPDIR."""
    monkeypatch.setenv("TMUX_TMPDIR", str(tmp_path))
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("TMUX_PANE", raising=False)
    yield
    default_dir = tmp_path / f"tmux-{os.getuid()}"
    assert not (default_dir / "default").exists(), "a test started a default tmux server"


@pytest.fixture
def notified(tmp_path: Path) -> Path:
    return tmp_path / "notified.jsonl"


@pytest.fixture
def daemon_config(notified: Path) -> str:
    return config(notified)


def spawn(daemon: Daemon, task: str, agent: str = "ask", cmd: list[str] | None = None) -> WorkerInfo:
    daemon.call(TaskAdd(title=f"task {task}", repo="proj", id=task))
    return daemon.call(
        Spawn(repo="proj", task_id=task, agent=None if cmd else agent, cmd=cmd, interactive=cmd is not None), timeout=60
    ).worker


def show(daemon: Daemon, wid: str) -> WorkerInfo:
    return daemon.call(WorkerShow(worker=wid)).worker


def tmux_sock(daemon: Daemon) -> str:
    return str(daemon.paths.tmux_socket)


def session_exists(daemon: Daemon, session: str) -> bool:
    return (
        subprocess.run(
            ["tmux", "-S", tmux_sock(daemon), "has-session", "-t", f"={session}"], capture_output=True
        ).returncode
        == 0
    )


def wait_waiting(daemon: Daemon, wid: str, timeout: float = 20) -> WorkerInfo:
    return wait_for(lambda: (w := show(daemon, wid)).status == "waiting" and w, timeout, what=f"{wid} to be waiting")


def states(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid).status())
        except psutil.NoSuchProcess:
            out.append("gone")
    return out


@pytest.mark.timeout(90)
def test_a_waiting_worker_is_peeked_answered_with_send_and_merged(daemon: Daemon, proj: Path, notified: Path) -> None:
    w = spawn(daemon, "T-1")
    assert w.interactive and w.tmux_session == w.id
    w = wait_waiting(daemon, w.id)
    question = QUESTION.format(task_id="T-1")
    assert w.message == question

    # the agent reports waiting, then prints its prompt: the screen shows both a moment later
    peek = wait_for(
        lambda: (r := daemon.ctl("peek", w.id)).code == 0 and "answer>" in r.out and r,
        10,
        what="the prompt on the worker's screen",
    )
    assert f"QUESTION: {question}" in peek.out

    listed = daemon.ctl("workers")
    assert listed.code == 0 and "🔔 waiting" in listed.out and question in listed.out
    assert "1 waiting for you" in listed.out
    # never stalled while waiting: test_waiting.py holds a waiting worker well past stall_timeout_s
    assert show(daemon, w.id).status == "waiting"

    sent = daemon.ctl("send", w.id, "yes")
    assert sent.code == 0, sent
    done = wait_for(lambda: (x := show(daemon, w.id)).status == "done" and x, 20, what="the worker to finish")
    assert done.exit_code == 0
    merged = daemon.ctl("merge", w.id, "--strategy", "auto")
    assert merged.code == 0, merged
    assert "(told: yes)" in git(proj, "show", "main:chkd-demo-T-1.txt")

    log = Path(done.log_path or "").read_text(errors="replace")
    assert f"QUESTION: {question}" in log and "got the answer: yes" in log  # pipe-pane into the worker log
    wait_for(lambda: not session_exists(daemon, w.id), 10, what="the tmux session to close")

    def waits() -> list[dict]:
        lines = notified.read_text().splitlines() if notified.exists() else []
        return [e for e in map(json.loads, lines) if e["kind"] == "worker.status" and e["data"]["to"] == "waiting"]

    wait_for(lambda: waits(), 10, what="the waiting notification")
    assert [e["data"]["question"] for e in waits()] == [question]
    assert not session_exists(daemon, w.id)
    # a finished interactive worker: peek falls back to the log, send is refused with a sentence
    assert "all 1 steps done" in daemon.ctl("peek", w.id, "-n", "5").out
    late = daemon.ctl("send", w.id, "more")
    assert late.code == 1 and "terminal closed" in late.err and "Traceback" not in late.err


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
    return seen


@pytest.mark.timeout(90)
def test_attach_read_only_from_a_pty_shows_the_screen_and_detaches(daemon: Daemon, proj: Path) -> None:
    w = wait_waiting(daemon, spawn(daemon, "T-2").id)

    not_a_tty = daemon.ctl("attach", w.id)
    assert not_a_tty.code == 1 and "needs a terminal" in not_a_tty.err and "Traceback" not in not_a_tty.err

    master, slave = pty.openpty()
    env = {**os.environ, "CHKD_HOME": str(daemon.home), "CHKD_NO_AUTOSTART": "1", "TERM": "xterm"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "chkdctl"), "attach", w.id, "--read-only"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    try:
        screen = _read_until(master, b"Proceed with T-2?", 15)
        assert b"Proceed with T-2?" in screen, screen[-2000:]
        os.write(master, b"no\r")  # read-only: tmux ignores what is typed
        holds(lambda: show(daemon, w.id).status == "waiting", 1.0, what="still waiting (read-only typed nothing)")
        os.write(master, b"\x02d")  # Ctrl-b d: chkd's tmux server runs without ~/.tmux.conf, so tmux's default keys
        rest = _read_until(master, b"keeps running", 10)
        assert proc.wait(10) == 0
        assert b"Detached from worker" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert show(daemon, w.id).status == "waiting"  # the agent kept running, still asking
    assert session_exists(daemon, w.id)


def cmdline_of(p: psutil.Process) -> list[str]:
    """A process's command line; [] for one that has just exited (a zombie not yet reaped, or gone)."""
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.mark.timeout(90)
def test_pause_and_abort_reach_the_agent_and_its_children_only(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    decoy_sock = str(tmp_path / "decoy.sock")
    subprocess.run(
        ["tmux", "-S", decoy_sock, "-f", "/dev/null", "new-session", "-d", "-s", "w1", "--", "sleep", "600"], check=True
    )
    try:
        w = spawn(daemon, "T-3", cmd=["chkd-demo-agent", "--spawn-child", "--ask", "pause me?"])
        w = wait_waiting(daemon, w.id)
        assert w.pid is not None
        agent = psutil.Process(w.pid)
        grandchild = wait_for(
            lambda: [c.pid for c in agent.children(recursive=True) if "chkd-demo-grandchild" in cmdline_of(c)],
            10,
            what="the agent's child",
        )
        family = [w.pid, *grandchild]
        leader = agent.parent()
        assert leader is not None and "chkd.client.pane" in " ".join(leader.cmdline())

        assert daemon.ctl("pause", w.id).code == 0
        wait_for(lambda: set(states(family)) == {psutil.STATUS_STOPPED}, 5, what="the agent's group to stop")
        # tmux wakes a stopped pane leader at once; the agent's own group stays stopped
        holds(lambda: set(states(family)) == {psutil.STATUS_STOPPED}, 1.5, what="the agent's group staying T")
        assert leader.status() != psutil.STATUS_STOPPED
        assert daemon.ctl("resume", w.id).code == 0
        wait_for(lambda: psutil.STATUS_STOPPED not in states(family), 5, what="the group to run again")

        assert daemon.ctl("abort", w.id).code == 0
        wait_for(lambda: set(states(family)) <= {"gone", psutil.STATUS_ZOMBIE}, 10, what="the agent and child to die")
        wait_for(lambda: not session_exists(daemon, w.id), 10, what="the worker's tmux session to close")
        assert show(daemon, w.id).status == "aborted"
        assert subprocess.run(["tmux", "-S", decoy_sock, "has-session", "-t", "=w1"]).returncode == 0
    finally:
        subprocess.run(["tmux", "-S", decoy_sock, "kill-server"], capture_output=True)


@pytest.mark.timeout(90)
def test_a_waiting_worker_survives_a_daemon_kill_9_and_is_still_answerable(daemon: Daemon, proj: Path) -> None:
    w = wait_waiting(daemon, spawn(daemon, "T-4").id)
    daemon.kill()
    daemon.start()
    before = show(daemon, w.id)
    assert before.status == "waiting"
    # the shim reconnects: its heartbeats arrive again, and the worker stays waiting
    wait_for(
        lambda: (show(daemon, w.id).heartbeat_at or 0) > (before.heartbeat_at or 0),
        15,
        what="the shim's heartbeat after the restart",
    )
    assert show(daemon, w.id).status == "waiting"
    assert "Proceed with T-4?" in daemon.ctl("peek", w.id).out
    assert daemon.ctl("send", w.id, "yes").code == 0
    wait_for(lambda: show(daemon, w.id).status == "done", 20, what="the answered worker to finish")


@pytest.mark.timeout(60)
def test_an_interactive_agents_exit_code_is_reported_as_for_a_detached_one(daemon: Daemon, proj: Path) -> None:
    w = spawn(daemon, "T-5", cmd=[sys.executable, "-c", "import sys, time; print('bye'); time.sleep(0.3); sys.exit(3)"])
    end = wait_for(lambda: (x := show(daemon, w.id)).status == "error" and x, 20, what="the agent's exit")
    assert end.exit_code == 3 and "exited with code 3" in (end.last_error or "")
    assert "bye" in Path(end.log_path or "").read_text(errors="replace")
    missing = spawn(daemon, "T-6", cmd=["no-such-agent-anywhere", "--x"])
    gone = wait_for(lambda: (x := show(daemon, missing.id)).status == "error" and x, 20, what="a missing program")
    assert gone.exit_code == 127


@pytest.mark.timeout(60)
def test_a_killed_shim_makes_the_interactive_worker_dead_and_closes_its_terminal(daemon: Daemon, proj: Path) -> None:
    w = wait_waiting(daemon, spawn(daemon, "T-7").id)
    shim_of(show(daemon, w.id)).kill()  # the shim the daemon recorded for this worker
    dead = wait_for(lambda: (x := show(daemon, w.id)).status == "dead" and x, 15, what="the worker to be dead")
    assert "shim" in (dead.last_error or "")
    wait_for(
        lambda: not psutil.pid_exists(w.pid or 0) or psutil.Process(w.pid).status() == psutil.STATUS_ZOMBIE,
        10,
        what="the orphaned agent to be killed",
    )
    wait_for(lambda: not session_exists(daemon, w.id), 10, what="its tmux session to close")
    task = daemon.call(TaskShow(id="T-7", repo="proj")).task
    assert task.status == "pending" and task.attempts == 1
