"""Processes: identity by (pid, create time), signals only to a worker's own group, the detached shim.

A pid alone names a process only until it exits; the kernel reuses it. So every
signal first checks that the pid still has the create time recorded when the
process was started (psutil's value, which the shim computes the same way from
/proc). Signals go to the agent's process group, never anywhere else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from chkd.protocol.launch import NEUTRAL_CWD
from chkd.protocol.paths import open_private

from . import git

#: Create times are in clock ticks (10 ms on Linux); allow a little float noise.
TOLERANCE_S = 0.05


def create_time(pid: int | None) -> float | None:
    """psutil's create time of `pid`, or None when there is no such process."""
    if not pid or pid <= 0:
        return None
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def same_process(pid: int | None, started: float | None) -> bool:
    """Whether `pid` is still the process that was started at `started` (and has not been reaped)."""
    ct = create_time(pid)
    if ct is None or started is None:
        return False
    if abs(ct - started) > TOLERANCE_S:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return False


def group_members(pgid: int) -> list[int]:
    """Pids currently in process group `pgid`."""
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.info["pid"])
        except (psutil.Error, OSError):
            continue
    return members


def group_is_ours(pgid: int | None, leader_pid: int | None, leader_started: float | None) -> bool:
    """Whether process group `pgid` is still the worker's group.

    The leader itself matching (pid, create time) proves it. With the leader gone, a
    group with that id can only be the old one: the kernel does not reuse a pid while
    a process group still carries it as its id. A pid reused by a *new* process means
    our group is gone (the pid was free, so nothing of ours held the id).
    """
    if not pgid or pgid <= 1 or pgid == os.getpgrp():
        return False
    if leader_pid == pgid:
        ct = create_time(leader_pid)
        if ct is not None:
            return leader_started is not None and abs(ct - leader_started) <= TOLERANCE_S
        return True  # leader exited; the id stays ours while any member lives
    return leader_started is not None and same_process(leader_pid, leader_started)


def signal_group(pgid: int | None, leader_pid: int | None, leader_started: float | None, sig: int) -> bool:
    """Send `sig` to the worker's process group after checking identity. True if delivered."""
    if not group_is_ours(pgid, leader_pid, leader_started):
        return False
    assert pgid is not None
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def group_alive(pgid: int | None, leader_pid: int | None, leader_started: float | None) -> bool:
    """Whether anything of the worker's process group still runs (signal 0 after the identity check)."""
    if not group_is_ours(pgid, leader_pid, leader_started):
        return False
    assert pgid is not None
    if same_process(leader_pid, leader_started):
        return True
    return bool(group_members(pgid))


def stop_group(pgid: int | None, leader_pid: int | None, leader_started: float | None) -> bool:
    """SIGTERM (and SIGCONT, so a paused group can act on it) to the worker's group."""
    sent = signal_group(pgid, leader_pid, leader_started, signal.SIGTERM)
    if sent:
        signal_group(pgid, leader_pid, leader_started, signal.SIGCONT)
    return sent


def start_shim(argv: Sequence[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `chkd-shim` in its own session, output to the worker log, a pipe on stdin.

    The daemon writes `go` (or `stop`) on stdin once the worktree exists, so the shim's
    own start-up overlaps with `git worktree add`. The shim forks itself away at once,
    so the daemon reaps this child quickly and never collects zombies.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open_private(log_path) as log:  # 0600: agents' output is nobody else's business
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
            close_fds=True,
            cwd=NEUTRAL_CWD,
        )


def release_shim(proc: subprocess.Popen[bytes], word: str, timeout: float = 10.0) -> bool:
    """Tell the waiting shim `go`/`stop`, then reap its first process (which exits after forking).
    False when the line could not be written: no shim reads the pipe any more."""
    try:
        assert proc.stdin is not None
        proc.stdin.write(word.encode() + b"\n")
        proc.stdin.close()
        written = True
    except (BrokenPipeError, OSError):
        written = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    return written


@dataclass
class Ran:
    returncode: int
    timed_out: bool
    output: bytes  # empty when the output went to a file


def run_bounded(
    cmd: Sequence[str],
    cwd: str | Path,
    timeout: float,
    *,
    stdout: int | IO[bytes] = subprocess.PIPE,
    extra_env: dict[str, str] | None = None,
) -> Ran:
    """Off-loop: a user's command (a test gate, a setup) in its own session, with git's environment
    but no worker's identity; at `timeout` its whole process group is stopped (SIGTERM, then
    SIGKILL), so nothing it started outlives it. OSError when it cannot start."""
    env = git.git_env(extra_env)
    for key in ("CHKD_WORKER_ID", "CHKD_TASK_ID"):
        env.pop(key, None)
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        _end_session(proc.pid)
        out, _ = proc.communicate()
        timed_out = True
    return Ran(proc.returncode, timed_out, out or b"")


def _end_session(pgid: int) -> None:
    """The process group of a command we started in a new session (so its pgid is its pid)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(0.2)
