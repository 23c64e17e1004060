"""Standby shims: `chkd-shim --standby` processes started ahead of any spawn, each waiting on its
stdin pipe for a `go` that names the worker and its log.

A shim's Python start-up (~120 ms of imports: zmq, msgspec, the protocol) was the longest step
of a spawn's critical path, longer than `git worktree add` in a small repository or taking a warm
worktree in a large one. A spawn now takes a standby shim (the one whose environment matches)
and the refill runs off-loop; with none left it starts one as before.

Nothing here is recorded: a standby shim holds only the read end of a pipe whose write end is
the daemon's, so when the daemon exits (or is killed) it reads EOF and exits without doing
anything. A standby shim that died meanwhile is noticed when its `go` cannot be written, and the
spawn starts a shim of its own (`release`).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chkd.protocol.launch import module_argv

from . import procs
from .context import Ctx

if TYPE_CHECKING:  # agent_launch imports this module
    from .agent_launch import LaunchSpec

EXT = "shims"
#: How long a standby shim may take to detach (its first process exits) before it is given up.
START_TIMEOUT_S = 15.0
#: The most shims `want` keeps waiting, whatever the autopilot's N.
MAX_WANTED = 16


@dataclass
class Standby:
    """Shims waiting for a `go`, all started with `env`; filled up to `target` off-loop."""

    env: dict[str, str]
    log_path: Path
    target: int
    submit: Callable[[Callable[[], None]], object]
    ready: list[subprocess.Popen[bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    starting: int = 0
    failures: int = 0

    def take(self, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """A waiting shim started with `env` (None: none, or another environment); a refill follows."""
        with self.lock:
            proc = self.ready.pop(0) if self.ready and env == self.env else None
        if proc is not None:
            self.refill()
        return proc

    def refill(self) -> None:
        """Start (off-loop) as many shims as are missing; each job starts one."""
        with self.lock:
            missing = self.target - len(self.ready) - self.starting
            if self.failures >= 3:  # it cannot start here (a broken install): spawns start their own
                missing = 0
            self.starting += max(0, missing)
        for _ in range(max(0, missing)):
            try:
                self.submit(self._start_one)
            except RuntimeError:  # the executor is shutting down with the daemon
                with self.lock:
                    self.starting -= 1

    def _start_one(self) -> None:
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = procs.start_shim(module_argv("chkd.client.shim", "--standby"), self.log_path, self.env)
            proc.wait(START_TIMEOUT_S)  # its first process exits once the shim forked away
            ok = proc.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        with self.lock:
            self.starting -= 1
            if ok and proc is not None:
                self.ready.append(proc)
                self.failures = 0
            else:
                self.failures += 1
        if not ok and proc is not None:
            procs.release_shim(proc, "stop", timeout=1.0)


def start_shim(standby: Standby | None, spec: LaunchSpec) -> subprocess.Popen[bytes]:
    """Off-loop: a standby shim when one fits, else the worker's own `chkd-shim --worker W`."""
    proc = standby.take(spec.shim_env) if standby is not None else None
    return proc if proc is not None else _own_shim(spec)


def release(proc: subprocess.Popen[bytes], go: str, spec: LaunchSpec) -> None:
    """Tell the shim its `go` line; a standby shim that died while it waited cannot be told, and
    the `go` then goes to the worker's own shim, started now."""
    if not procs.release_shim(proc, go):
        procs.release_shim(_own_shim(spec), go)


def _own_shim(spec: LaunchSpec) -> subprocess.Popen[bytes]:
    return procs.start_shim(spec.shim_argv, Path(spec.log_path), spec.shim_env)


def want(ctx: Ctx, n: int) -> None:
    """Keep at least `n` shims on standby (an autopilot starts up to its N workers at once), never
    fewer than `shim_standby`, and none when that is 0."""
    standby = standby_of(ctx)
    if standby is None:
        return
    target = max(ctx.config.shim_standby, min(n, MAX_WANTED))
    if target != standby.target:
        standby.target = target
        standby.refill()


def ready_count(ctx: Ctx) -> int:
    """How many shims wait for a spawn now (for `ping`)."""
    standby = standby_of(ctx)
    if standby is None:
        return 0
    with standby.lock:
        return len(standby.ready)


def standby_of(ctx: Ctx) -> Standby | None:
    standby = ctx.ext.get(EXT)
    return standby if isinstance(standby, Standby) else None


def setup(ctx: Ctx) -> None:
    """Start-up: the first standby shims start off-loop (`shim_standby` of them; 0: none)."""
    if ctx.config.shim_standby <= 0:
        return
    standby = Standby(
        env=shim_env(ctx),
        log_path=ctx.paths.log_file.parent / "shim-standby.log",
        target=ctx.config.shim_standby,
        submit=ctx.executor.submit,
    )
    ctx.ext[EXT] = standby
    standby.refill()


def shim_env(ctx: Ctx) -> dict[str, str]:
    """Every shim's environment: the daemon's, with its home (a standby shim fits any spawn)."""
    return {**os.environ, **ctx.paths.home_env()}
