"""Liveness with real processes: hung agents stall, silent or vanished shims and agents die,
tasks are requeued up to max_attempts, and a daemon crash loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from chkd.protocol.events import WorkerStatusChanged
from chkd.protocol.messages import Events, Ping, Spawn, TaskAdd, TaskShow, WorkerInfo, WorkerShow

from conftest import Daemon, busy_for, holds, wait_for
from conftest import shim_of as recorded_shim

BASE = """\
heartbeat_s = 0.5
heartbeat_timeout_s = 3
abort_grace_s = 1
notify = false
max_workers = 4
"""
#: An agent that only sleeps, silently: alive, no activity.
SLEEPER = busy_for(120)


@pytest.fixture
def daemon_config() -> str:
    return BASE + "stall_timeout_s = 30\n"


def spawn(daemon: Daemon, task: str, cmd: list[str], max_attempts: int | None = None) -> WorkerInfo:
    if not _task_exists(daemon, task):
        daemon.call(TaskAdd(title=f"task {task}", repo="proj", id=task, max_attempts=max_attempts))
    return daemon.call(Spawn(repo="proj", task_id=task, cmd=cmd)).worker


def _task_exists(daemon: Daemon, task: str) -> bool:
    try:
        daemon.call(TaskShow(id=task, repo="proj"))
        return True
    except Exception:  # noqa: BLE001
        return False


def worker(daemon: Daemon, wid: str) -> WorkerInfo:
    return daemon.call(WorkerShow(worker=wid)).worker


def task(daemon: Daemon, tid: str) -> Any:
    return daemon.call(TaskShow(id=tid, repo="proj")).task


def wait_status(daemon: Daemon, wid: str, statuses: set[str], timeout: float) -> WorkerInfo:
    return wait_for(
        lambda: (w := worker(daemon, wid)).status in statuses and w,
        timeout,
        what=f"worker {wid} to be {'/'.join(sorted(statuses))}",
    )


def running(daemon: Daemon, wid: str) -> WorkerInfo:
    """Wait until the shim said hello (pids known) and the worker is working."""
    return wait_for(
        lambda: (w := worker(daemon, wid)).status == "working" and w.pid and w, 15, what=f"worker {wid} to run"
    )


def shim_of(w: WorkerInfo) -> psutil.Process:
    """The worker's recorded chkd-shim, the parent of its (detached) agent."""
    shim = recorded_shim(w)
    assert w.pid in [c.pid for c in shim.children()], shim
    return shim


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kinds(daemon: Daemon, **filters: Any) -> list[str]:
    return [e.kind for e in daemon.call(Events(**filters)).events]


# -- stalls -----------------------------------------------------------------------------------------
class TestStall:
    @pytest.fixture
    def daemon_config(self) -> str:
        return BASE + 'stall_timeout_s = 2\non_stall = "requeue"\n'

    @pytest.mark.timeout(60)
    def test_hung_agent_is_stalled_then_aborted_and_requeued(self, daemon: Daemon, proj: Path) -> None:
        w = spawn(daemon, "H-1", ["chkd-demo-agent", "--hang"])
        running(daemon, w.id)
        t0 = time.monotonic()
        wait_for(lambda: "stalled" in _statuses(daemon, w.id), 2 + 2 + 1, what="stalled")
        assert time.monotonic() - t0 <= 2 + 2 + 0.5
        w = wait_status(daemon, w.id, {"aborted"}, 5)
        assert "stalled" in (w.last_error or "") and "on_stall = requeue" in w.last_error
        t = task(daemon, "H-1")
        assert t.status == "pending" and t.attempts == 1
        wait_for(lambda: gone(w.pid), 5, what="the hung agent to be stopped")
        # the worktree and branch stay for inspection
        assert Path(w.worktree).is_dir()


class TestStallAbort:
    @pytest.fixture
    def daemon_config(self) -> str:
        return BASE + 'stall_timeout_s = 1.5\non_stall = "abort"\n'

    @pytest.mark.timeout(60)
    def test_on_stall_abort_stops_the_worker_and_gives_the_task_back_without_an_attempt(
        self, daemon: Daemon, proj: Path
    ) -> None:
        w = running(daemon, spawn(daemon, "A-1", SLEEPER).id)
        w = wait_status(daemon, w.id, {"aborted"}, 1.5 + 2 + 2)
        assert _statuses(daemon, w.id)[-2:] == ["stalled", "aborted"]
        assert "on_stall = abort" in w.last_error
        t = task(daemon, "A-1")
        assert t.status == "pending" and t.attempts == 0
        wait_for(lambda: gone(w.pid), 5, what="the aborted agent to stop")


def _statuses(daemon: Daemon, wid: str) -> list[str]:
    return [e.data.to for e in daemon.call(Events(worker=wid)).events if isinstance(e.data, WorkerStatusChanged)]


class TestStallNotify:
    @pytest.fixture
    def daemon_config(self) -> str:
        return BASE + "stall_timeout_s = 1.5\n"

    @pytest.mark.timeout(60)
    def test_stalled_worker_returns_to_working_when_activity_resumes(self, daemon: Daemon, proj: Path) -> None:
        quiet_then_busy = [
            sys.executable,
            "-c",
            "import time\ntime.sleep(3.5)\nwhile True:\n    print('busy', flush=True)\n    time.sleep(0.2)",
        ]
        w = spawn(daemon, "S-1", quiet_then_busy)
        running(daemon, w.id)
        wait_status(daemon, w.id, {"stalled"}, 1.5 + 2 + 1)
        wait_status(daemon, w.id, {"working"}, 5)
        assert _statuses(daemon, w.id)[-2:] == ["stalled", "working"]
        assert task(daemon, "S-1").status == "in_progress"  # on_stall = notify: nothing else happens
        ev = next(
            e
            for e in daemon.call(Events(worker=w.id)).events
            if isinstance(e.data, WorkerStatusChanged) and e.data.to == "stalled"
        )
        assert "no agent activity" in (ev.data.reason or "")

    def test_paused_worker_is_not_stalled_and_its_shim_keeps_it_alive(self, daemon: Daemon, proj: Path) -> None:
        from chkd.protocol.messages import Pause, Resume

        w = spawn(daemon, "P-1", SLEEPER)
        running(daemon, w.id)
        daemon.call(Pause(worker=w.id))
        # past both the stall timeout and heartbeat_timeout_s
        holds(lambda: worker(daemon, w.id).status == "paused", 4, what="paused")
        daemon.call(Resume(worker=w.id))
        assert worker(daemon, w.id).status == "working"


# -- death --------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_sigstopped_shim_makes_the_worker_dead_and_requeues(daemon: Daemon, proj: Path) -> None:
    w = running(daemon, spawn(daemon, "D-1", SLEEPER).id)
    shim = shim_of(w)
    shim.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    w = wait_status(daemon, w.id, {"dead"}, 3 + 2 + 1)
    assert time.monotonic() - t0 <= 3 + 2
    assert "no heartbeat from the shim" in w.last_error
    t = task(daemon, "D-1")
    assert t.status == "pending" and t.attempts == 1 and t.claimed_by is None
    assert "task.requeued" in kinds(daemon, task="D-1")
    wait_for(lambda: gone(w.pid) and gone(shim.pid), 5, what="agent and stopped shim to be killed")
    assert Path(w.worktree).is_dir() and w.branch  # kept for inspection


@pytest.mark.timeout(60)
def test_kill_9_of_the_agent_is_noticed_with_its_signal(daemon: Daemon, proj: Path) -> None:
    w = running(daemon, spawn(daemon, "K-1", SLEEPER).id)
    os.kill(w.pid, signal.SIGKILL)
    t0 = time.monotonic()
    w = wait_status(daemon, w.id, {"dead", "error"}, 2)
    assert time.monotonic() - t0 <= 2
    assert w.status == "dead"  # gone by a signal: dead, not the agent's own error exit
    assert "SIGKILL" in (w.last_error or "")
    assert task(daemon, "K-1").status == "pending" and task(daemon, "K-1").attempts == 1


@pytest.mark.timeout(60)
def test_kill_9_of_the_shim_is_noticed_and_its_agent_stopped(daemon: Daemon, proj: Path) -> None:
    w = running(daemon, spawn(daemon, "K-2", SLEEPER).id)
    shim = shim_of(w)
    shim.kill()
    w = wait_status(daemon, w.id, {"dead"}, 3)
    assert "shim" in w.last_error and "gone" in w.last_error
    wait_for(lambda: gone(w.pid), 5, what="the orphaned agent to be killed")
    assert task(daemon, "K-2").status == "pending"
    # the story as `watch` tells it: only this worker, in order, readable
    res = daemon.ctl("watch", "--since", "0", "--worker", w.id, "--idle-exit", "0.5")
    assert res.code == 0, res
    lines = res.out.strip().splitlines()
    assert all(f" {w.id} " in line for line in lines)
    assert any("starting → working" in line for line in lines)
    dead = next(line for line in lines if "→ dead" in line)
    assert "🔴 worker.status" in dead and "reason=the shim" in dead


@pytest.mark.timeout(90)
def test_a_task_that_keeps_dying_is_failed_and_escalated_at_max_attempts(daemon: Daemon, proj: Path) -> None:
    kills_its_shim = ["sh", "-c", "sleep 0.5; kill -9 $PPID; sleep 60"]  # after the shim's hello
    for attempt in (1, 2, 3):
        w = spawn(daemon, "F-1", kills_its_shim, max_attempts=3)
        w = wait_status(daemon, w.id, {"dead"}, 10)
        assert "shim" in w.last_error
        t = task(daemon, "F-1")
        assert t.attempts == attempt
        assert t.status == ("pending" if attempt < 3 else "failed")
    seen = kinds(daemon, task="F-1")
    assert seen.count("task.requeued") == 2 and seen.count("task.escalated") == 1
    assert seen.index("task.escalated") > seen.index("task.failed")


# -- daemon crash ------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_daemon_kill_9_then_restart_keeps_live_workers_and_buries_the_dead(daemon: Daemon, proj: Path) -> None:
    watcher = _watch(daemon)  # sees the whole run, across the crash
    ids = [running(daemon, spawn(daemon, f"R-{i}", SLEEPER).id).id for i in range(4)]
    victim = worker(daemon, ids[3])
    victim_shim = shim_of(victim)
    survivors = [shim_of(worker(daemon, wid)) for wid in ids[:3]]
    daemon.kill()
    victim_shim.kill()
    os.killpg(victim.pgid, signal.SIGKILL)
    wait_for(lambda: gone(victim.pid) and gone(victim_shim.pid), 5, what="the victim to die")
    holds(lambda: all(s.is_running() for s in survivors), 1.0, what="the other shims living without the daemon")
    daemon.start()
    restarted_at = int(time.time() * 1000)
    for wid in ids[:3]:
        w = worker(daemon, wid)
        assert w.status == "working", w
    # heartbeats flow again from the reconnected shims
    for wid in ids[:3]:
        wait_for(
            lambda wid=wid: (worker(daemon, wid).heartbeat_at or 0) > restarted_at + 200,
            5,
            what=f"heartbeats from {wid} after the restart",
        )
    dead = wait_status(daemon, victim.id, {"dead"}, 3)
    assert "gone" in dead.last_error
    # past heartbeat_timeout_s: the live ones stay live
    holds(lambda: [worker(daemon, w).status for w in ids[:3]] == ["working"] * 3, 3.5, what="three live workers")
    # nothing duplicated or lost: each task once, owned by its original worker or back in the queue
    for i, wid in enumerate(ids[:3]):
        t = task(daemon, f"R-{i}")
        assert t.status == "in_progress" and t.claimed_by == wid and t.attempts == 0
    t = task(daemon, "R-3")
    assert t.status == "pending" and t.attempts == 1
    from chkd.protocol.messages import TaskList, WorkerList

    assert len(daemon.call(TaskList(repo="proj")).tasks) == 4
    assert len(daemon.call(WorkerList(all=True)).workers) == 4
    last = daemon.call(Ping()).last_seq
    seen = _watched(watcher, last)
    assert [e["seq"] for e in seen] == list(range(1, last + 1))  # every event, in order, no gap
    assert any(e.get("worker_id") == victim.id and e.get("data", {}).get("to") == "dead" for e in seen)


def _watch(daemon: Daemon) -> subprocess.Popen[str]:
    env = {**os.environ, "CHKD_HOME": str(daemon.home), "CHKD_NO_AUTOSTART": "1"}
    return subprocess.Popen(
        ["chkdctl", "watch", "--since", "0", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _watched(proc: subprocess.Popen[str], last_seq: int, timeout: float = 15) -> list[dict[str, Any]]:
    """The watcher's events up to `last_seq` (then it is stopped)."""
    import json
    import threading

    seen: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(json.loads(line))
            if seen[-1]["seq"] >= last_seq:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    os.killpg(proc.pid, signal.SIGINT)
    reader.join(1)
    proc.communicate(timeout=10)  # drained: a watcher blocked writing to a full pipe could not exit
    assert proc.returncode == 0  # Ctrl-C ends a watch quietly
    return seen
