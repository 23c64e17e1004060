"""A kill -9 of the daemon at every step that spans one, and a frozen daemon: nothing is stuck,
lost or run twice afterwards.

Each test arms a failpoint (daemon/failpoints.py), makes the daemon reach it, waits for it to
die, starts it again without the failpoint, and checks what a user would see: the worker ends
up where it should (never `working` forever), its task is done once or back in the queue, the
agent's work is on its branch or in main, and nothing unrecorded is left on disk.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    Events,
    Merge,
    MergeShow,
    Spawn,
    TaskAdd,
    TaskShow,
    WorkerInfo,
    WorkerShow,
)

from conftest import Daemon, git, holds, wait_for

CONFIG = """\
heartbeat_s = 0.5
heartbeat_timeout_s = 3
stall_timeout_s = 60
abort_grace_s = 1
notify = false
max_workers = 4
"""
DEMO = str(Path(sys.executable).parent / "chkd-demo-agent")


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


def add_task(daemon: Daemon, task: str) -> None:
    daemon.call(TaskAdd(title=f"task {task}", repo="proj", id=task))


def spawn_dying(daemon: Daemon, task: str, cmd: list[str]) -> None:
    """Spawn while a failpoint is armed: the daemon may die before it answers."""
    add_task(daemon, task)
    try:
        daemon.client(timeout=5).call(Spawn(repo="proj", task_id=task, cmd=cmd))
    except ChkdError:
        pass


def worker(daemon: Daemon, wid: str = "w1") -> WorkerInfo:
    return daemon.call(WorkerShow(worker=wid)).worker


def task(daemon: Daemon, tid: str) -> Any:
    return daemon.call(TaskShow(id=tid, repo="proj")).task


def settled(daemon: Daemon, wid: str, statuses: set[str], timeout: float = 30.0) -> WorkerInfo:
    return wait_for(
        lambda: (w := worker(daemon, wid)).status in statuses and w,
        timeout,
        what=f"{wid} to become one of {sorted(statuses)}",
    )


def merge_and_wait(daemon: Daemon, wid: str) -> Any:
    m = daemon.call(Merge(worker=wid, strategy="auto", no_test=True)).merge
    return wait_for(
        lambda: (x := daemon.call(MergeShow(id=m.id)).merge).status in ("merged", "conflict", "failed") and x,
        60,
        what="the merge to finish",
    )


# -- an agent's exit ------------------------------------------------------------------------------------
LEFTOVERS = [
    sys.executable,
    "-c",
    "import pathlib\nfor i in range(200): pathlib.Path(f'left-{i}.txt').write_text(str(i))",
]


def test_killed_just_after_an_agents_exit_was_recorded_the_worker_still_finishes(daemon: Daemon, proj: Path) -> None:
    """Start-up used to never revisit a worker whose exit was recorded: it stayed `working`
    forever, its leftovers uncommitted and its task in progress."""
    daemon.arm("exit.recorded")
    spawn_dying(daemon, "T-1", LEFTOVERS)
    daemon.wait_dead()
    daemon.start()
    w = settled(daemon, "w1", {"done"})
    assert task(daemon, "T-1").status == "review"
    files = git(proj, "ls-tree", "--name-only", w.branch or "")
    assert "left-0.txt" in files and "left-199.txt" in files
    assert git(Path(w.worktree or ""), "status", "--porcelain") == ""
    assert merge_and_wait(daemon, "w1").status == "merged"


def test_killed_while_many_leftovers_are_being_committed(daemon: Daemon, proj: Path) -> None:
    """The race as a user hits it, without a failpoint: an agent that wrote 20,000 files exits,
    and the daemon is killed while `git add` of them runs."""
    many = [
        sys.executable,
        "-c",
        "import pathlib\nd = pathlib.Path('gen'); d.mkdir()\n"
        "for i in range(20000): (d / f'f{i}.txt').write_text(str(i))",
    ]
    add_task(daemon, "T-1")
    daemon.call(Spawn(repo="proj", task_id="T-1", cmd=many))
    c = daemon.client()
    wait_for(
        lambda: any(e.kind == "worker.exited" for e in c.call(Events(since=0)).events), 60, what="the agent to exit"
    )
    daemon.kill()
    daemon.start()
    w = settled(daemon, "w1", {"done"}, timeout=90)
    assert "gen" in git(proj, "ls-tree", "--name-only", w.branch or "")
    assert task(daemon, "T-1").status == "review"


# -- spawn -----------------------------------------------------------------------------------------------
def test_killed_before_anything_was_created_the_spawn_is_undone_without_counting(daemon: Daemon, proj: Path) -> None:
    daemon.arm("spawn.planned")
    spawn_dying(daemon, "T-1", [DEMO, "--steps", "1", "--step-s", "0"])
    daemon.wait_dead()
    daemon.start()
    w = settled(daemon, "w1", {"error"}, timeout=20)
    assert "starting" in (w.last_error or "")
    t = task(daemon, "T-1")
    assert (t.status, t.attempts) == ("pending", 0)
    assert "proj-T-1" not in git(proj, "worktree", "list")
    assert git(proj, "branch", "--list", "chkd/*") == ""
    assert not (proj.parent / "proj-T-1").exists()
    # the queue moves on: the same task spawns again, with the names the undone spawn had picked
    again = daemon.call(Spawn(repo="proj", task_id="T-1", cmd=[DEMO, "--steps", "1", "--step-s", "0"])).worker
    assert again.worktree == str(proj.parent / "proj-T-1") and again.branch == "chkd/T-1"
    assert settled(daemon, again.id, {"done"}).status == "done"


def test_killed_after_the_worktree_was_made_the_spawn_is_undone_and_the_checkout_removed(
    daemon: Daemon, proj: Path
) -> None:
    """Used to leave a worktree and branch no record knew about (so `done`/`merge` said the branch
    was gone). Now the names are recorded first; the shim never got `go`, so after the wait for
    it the spawn is undone: the empty worktree and branch go, the task is back, not counted."""
    daemon.arm("spawn.worktree_created")
    spawn_dying(daemon, "T-1", [DEMO, "--steps", "1", "--step-s", "0"])
    daemon.wait_dead()
    assert (proj.parent / "proj-T-1" / ".git").exists()  # the kill left the checkout behind
    daemon.start()
    w = settled(daemon, "w1", {"error"}, timeout=30)
    assert "never reported" in (w.last_error or "")
    t = task(daemon, "T-1")
    assert (t.status, t.attempts) == ("pending", 0)
    wait_for(
        lambda: not (proj.parent / "proj-T-1").exists() and git(proj, "branch", "--list", "chkd/*") == "",
        10,
        what="the unused worktree and branch to be removed",
    )
    # the record forgets them once the off-loop removal has reported back: nothing of it is left to gc
    wait_for(lambda: worker(daemon).worktree is None, 5, what="the record to forget the removed worktree")


def test_killed_after_the_agent_started_the_worker_carries_on(daemon: Daemon, proj: Path) -> None:
    daemon.arm("spawn.released")
    spawn_dying(daemon, "T-1", [DEMO, "--steps", "3", "--step-s", "0.3"])
    daemon.wait_dead()
    daemon.start()
    w = settled(daemon, "w1", {"done"}, timeout=30)
    assert (w.worktree, w.branch) == (str(proj.parent / "proj-T-1"), "chkd/T-1")
    assert merge_and_wait(daemon, "w1").status == "merged"
    assert task(daemon, "T-1").status == "done"
    assert "chkd-demo-T-1.txt" in git(proj, "ls-files")


# -- merge -----------------------------------------------------------------------------------------------
def _done_worker(daemon: Daemon) -> None:
    add_task(daemon, "T-1")
    daemon.call(Spawn(repo="proj", task_id="T-1", cmd=[DEMO, "--steps", "1", "--step-s", "0"]))
    settled(daemon, "w1", {"done"})


def _merge_dying(daemon: Daemon) -> None:
    try:
        daemon.client(timeout=5).call(Merge(worker="w1", strategy="auto", no_test=True))
    except ChkdError:
        pass
    daemon.wait_dead()
    daemon.start()


def test_killed_between_the_cas_and_the_checkout_main_is_brought_along(daemon: Daemon, proj: Path) -> None:
    """Main moved but its checkout was not: `git status` in the main checkout showed the merge
    reversed as staged changes. After the restart the checkout follows and the merge completes."""
    _done_worker(daemon)
    daemon.arm("merge.cas_done")
    _merge_dying(daemon)
    m = wait_for(
        lambda: (x := daemon.call(MergeShow(worker="w1")).merge).status == "merged" and x,
        30,
        what="the merge to complete after the restart",
    )
    assert git(proj, "rev-parse", "main") == m.result_sha
    assert git(proj, "status", "--porcelain") == ""
    assert (proj / "chkd-demo-T-1.txt").exists()
    assert task(daemon, "T-1").status == "done" and worker(daemon).status == "merged"


def test_killed_after_landing_and_cleanup_the_merge_is_recorded(daemon: Daemon, proj: Path) -> None:
    """The branch was already deleted when the daemon died: the re-check must find the work in
    main (not fail with "the branch does not exist")."""
    _done_worker(daemon)
    daemon.arm("merge.landed")
    _merge_dying(daemon)
    m = wait_for(
        lambda: (x := daemon.call(MergeShow(worker="w1")).merge).status in ("merged", "failed") and x,
        30,
        what="the merge to end after the restart",
    )
    assert m.status == "merged", m.log
    assert task(daemon, "T-1").status == "done"
    assert git(proj, "status", "--porcelain") == ""


# -- a frozen daemon ---------------------------------------------------------------------------------------
def test_a_frozen_daemon_kills_no_healthy_worker(daemon: Daemon, proj: Path) -> None:
    """SIGSTOP the daemon for well over heartbeat_timeout_s (a laptop suspend does the same), then
    SIGCONT: every worker was declared dead and its agent killed. Now they carry on."""
    for tid in ("T-1", "T-2", "T-3"):
        add_task(daemon, tid)
        daemon.call(Spawn(repo="proj", task_id=tid, cmd=[DEMO, "--steps", "40", "--step-s", "0.25"]))
    ids = ["w1", "w2", "w3"]
    for wid in ids:
        settled(daemon, wid, {"working"})
    agents = {wid: worker(daemon, wid).pid for wid in ids}
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        frozen = psutil.Process(daemon.proc.pid)
        wait_for(lambda: frozen.status() == psutil.STATUS_STOPPED, 5, what="SIGSTOP")
        # > 2 x heartbeat_timeout_s with the daemon frozen
        holds(lambda: frozen.status() == psutil.STATUS_STOPPED, 8.0, what="the daemon frozen")
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    # healthy: still working, or already done (a busy machine may let a fast agent finish meanwhile)
    holds(
        lambda: all(worker(daemon, w).status in ("working", "done") for w in ids),
        6.0,
        what="every worker working or done",
    )
    assert all(psutil.pid_exists(pid) for pid in agents.values() if pid)
    kinds = [e.kind for e in daemon.call(Events(since=0)).events]
    assert "daemon.paused" in kinds
    for wid in ids:
        assert settled(daemon, wid, {"done"}, timeout=60).status == "done"
