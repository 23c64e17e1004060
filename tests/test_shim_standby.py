"""Standby shims: started ahead of any spawn, taken by the next one (its agent starts without a
shim's Python start-up), refilled, gone with the daemon, and replaced when one died meanwhile."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from chkd.protocol.messages import Ping, Spawn, TaskAdd, WorkerInfo, WorkerShow

from conftest import Daemon, busy_for, wait_for

CONFIG = """\
heartbeat_s = 0.5
heartbeat_timeout_s = 3
abort_grace_s = 1
notify = false
max_workers = 4
shim_standby = 2
"""
SLEEPER = busy_for(60)


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


def standby(home: Path) -> list[psutil.Process]:
    """This home's shims that wait for a `go` (started with --standby, no agent yet)."""
    out = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = p.info["cmdline"] or []
            if (
                "chkd.client.shim" in cmd
                and "--standby" in cmd
                and (p.info["environ"] or {}).get("CHKD_HOME") == str(home)
                and not p.children()
            ):
                out.append(p)
        except (psutil.Error, OSError):
            continue
    return out


def ready(daemon: Daemon, n: int = 2) -> list[psutil.Process]:
    """Until the daemon holds `n` standby shims ready (`ping` counts them) and `n` wait in ps."""
    wait_for(lambda: daemon.call(Ping()).standby_shims == n, 15, what=f"{n} standby shims in ping")
    return wait_for(lambda: len(s := standby(daemon.home)) == n and s, 15, what=f"{n} standby shims waiting")


def spawn(daemon: Daemon, task: str) -> WorkerInfo:
    daemon.call(TaskAdd(title=f"task {task}", repo="proj", id=task))
    wid = daemon.call(Spawn(repo="proj", task_id=task, cmd=SLEEPER)).worker.id
    return wait_for(
        lambda: (w := daemon.call(WorkerShow(worker=wid)).worker).status == "working" and w.shim_pid and w,
        15,
        what=f"worker {wid} to run",
    )


@pytest.mark.timeout(60)
def test_a_spawn_takes_a_standby_shim_and_the_standby_refills(daemon: Daemon, proj: Path) -> None:
    waiting = ready(daemon)
    w = spawn(daemon, "S-1")
    assert w.shim_pid in {p.pid for p in waiting}  # the worker's shim is one that was waiting
    shim = psutil.Process(w.shim_pid)
    assert [c.pid for c in shim.children()] == [w.pid]  # and it started the agent
    ready(daemon)  # refilled to two
    # the shim writes to the worker's own log, not to the standby log
    log = Path(daemon.call(WorkerShow(worker=w.id)).worker.log_path or "")
    assert log.is_file()


@pytest.mark.timeout(60)
def test_standby_shims_exit_when_the_daemon_is_killed_and_the_workers_live_on(daemon: Daemon, proj: Path) -> None:
    w = spawn(daemon, "S-2")
    waiting = ready(daemon)
    daemon.kill()
    wait_for(lambda: not any(p.is_running() for p in waiting), 10, what="the standby shims to exit")
    assert psutil.Process(w.shim_pid).is_running() and psutil.pid_exists(w.pid)
    daemon.start()
    assert daemon.call(WorkerShow(worker=w.id)).worker.status == "working"
    ready(daemon)  # a new daemon's own


@pytest.mark.timeout(60)
def test_a_standby_shim_that_died_is_replaced_and_the_spawn_still_starts(daemon: Daemon, proj: Path) -> None:
    for p in ready(daemon):
        p.kill()
    w = spawn(daemon, "S-3")  # the go could not be written to a dead standby shim: a shim of its own
    assert psutil.Process(w.shim_pid).cmdline()[-2:] == ["--worker", w.id]
    assert daemon.call(WorkerShow(worker=w.id)).worker.status == "working"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("daemon_config", [CONFIG.replace("shim_standby = 2", "shim_standby = 0")])
def test_with_shim_standby_0_every_spawn_starts_its_own_shim(daemon: Daemon, proj: Path) -> None:
    w = spawn(daemon, "S-4")
    assert ["--worker", w.id] == psutil.Process(w.shim_pid).cmdline()[-2:]
    assert standby(daemon.home) == [] and daemon.call(Ping()).standby_shims == 0
