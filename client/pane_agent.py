"""An interactive agent as the shim sees it: running in a tmux pane on chkd's own server.

The shim stays what it is for every worker (detached, the daemon's link, heartbeats, exit
report); only where the agent runs differs. The pane's leader is `chkd-pane`
(`client/pane.py`) and the agent its child in its own process group, so pause and abort
signal exactly the agent's group, as for a detached agent. Identity and exit come through
the status file `chkd-pane` writes; output is appended to the worker log by tmux
(`pipe-pane`), and the log growing is the agent's output activity.

tmux sessions (and their agents) do not belong to the daemon: they outlive a daemon restart
the way detached agents do, and the daemon reconciles them by (pid, create time).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chkd.protocol import tmux
from chkd.protocol.launch import module_argv
from chkd.protocol.paths import open_private

from .procid import same_process

#: How long tmux and chkd-pane get to show the agent's pid before the start counts as failed.
START_TIMEOUT_S = 15.0
TMUX_TIMEOUT_S = 10.0


def now_ms() -> int:
    return int(time.time() * 1000)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class PaneAgent:
    def __init__(
        self,
        argv: list[str],
        cwd: str,
        env: dict[str, str],
        say: Callable[[str], None],
        *,
        socket: str,
        session: str,
        log_path: str,
    ) -> None:
        self.argv, self.cwd, self._say = argv, cwd, say
        self.env = {k: v for k, v in env.items() if k not in tmux.OUTER_TMUX_VARS}
        self.socket, self.session, self.log_path = socket, session, log_path
        base = Path(log_path)
        self.spec_path = base.with_name(f"{base.stem}.pane.json")
        self.status_path = base.with_name(f"{base.stem}.pane-status.json")
        self.pid = 0
        self.started = 0.0
        self.pane_pid = 0
        self.pane_started = 0.0
        self._code: int | None = None
        self._log_size = 0
        self._output_at: int | None = None
        self.exited = threading.Event()

    def _tmux(self, argv: list[str]) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=TMUX_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd="/",
            )
        except (OSError, subprocess.SubprocessError) as exc:
            self._say(f"cannot run tmux: {exc}")
            return None

    # -- start ------------------------------------------------------------------------------
    def start(self) -> bool:
        try:
            self.status_path.unlink(missing_ok=True)
            with open_private(self.spec_path, "w") as fh:
                json.dump({"argv": self.argv, "cwd": self.cwd, "env": self.env, "status": str(self.status_path)}, fh)
        except (OSError, ValueError) as exc:
            self._say(f"cannot write the pane's spec {self.spec_path}: {exc}")
            return False
        pane = module_argv("chkd.client.pane", "--spec", str(self.spec_path))
        proc = self._tmux(tmux.new_session(self.socket, self.session, self.cwd, pane, self.log_path))
        if proc is None or proc.returncode != 0:
            if proc is not None:
                self._say(f"tmux could not start session {self.session}: {proc.stderr.strip() or proc.returncode}")
            self.spec_path.unlink(missing_ok=True)
            return False
        deadline = time.monotonic() + START_TIMEOUT_S
        next_look = time.monotonic() + 0.5
        while True:
            info = _read_json(self.status_path)
            if info and info.get("agent_pid"):
                break
            if time.monotonic() > next_look:  # a pane that died at once: say so now, not at the deadline
                next_look = time.monotonic() + 0.5
                alive = self._tmux(tmux.has_session(self.socket, self.session))
                if alive is not None and alive.returncode != 0 and not self.status_path.exists():
                    self._say(f"the pane of tmux session {self.session} ended before it started the agent")
                    self.spec_path.unlink(missing_ok=True)
                    return False
            if time.monotonic() > deadline:
                self._say(f"the pane of tmux session {self.session} never started the agent; killing the session")
                self._tmux(tmux.kill_session(self.socket, self.session))
                self.spec_path.unlink(missing_ok=True)
                return False
            time.sleep(0.02)
        self.pid, self.started = int(info["agent_pid"]), float(info["agent_started"])
        self.pane_pid, self.pane_started = int(info["pane_pid"]), float(info["pane_started"])
        threading.Thread(target=self._wait, name="pane-waiter", daemon=True).start()
        return True

    # -- while it runs ----------------------------------------------------------------------
    @property
    def output_at(self) -> int | None:
        """When the pane last wrote to the log (it grew since the last look)."""
        try:
            size = os.stat(self.log_path).st_size
        except OSError:
            return self._output_at
        if size != self._log_size:
            self._log_size, self._output_at = size, now_ms()
        return self._output_at

    @property
    def returncode(self) -> int | None:
        """Like Popen's: the exit code or minus the signal; None while it runs (or when its exit is unknown)."""
        return self._code

    def _wait(self) -> None:
        """Until the pane's leader ends (a pidfd where the kernel has them, else a slow poll);
        then the exit it recorded. A leader gone without a record leaves the exit unknown."""
        fd = None
        try:
            fd = os.pidfd_open(self.pane_pid)
        except (AttributeError, OSError):
            fd = None
        try:
            while same_process(self.pane_pid, self.pane_started):
                if fd is not None:
                    select.select([fd], [], [], 5.0)
                else:
                    time.sleep(0.2)
                if self._record_exit():
                    return
            if self._record_exit():
                return
            while same_process(self.pid, self.started):  # the leader died first: wait for the agent
                time.sleep(0.2)
            self._record_exit()
        finally:
            if fd is not None:
                os.close(fd)
            self.exited.set()

    def _record_exit(self) -> bool:
        info = _read_json(self.status_path)
        if not info or ("exit_code" not in info and "signal" not in info):
            return False
        if info.get("signal"):
            self._code = -int(info["signal"])
        elif info.get("exit_code") is not None:
            self._code = int(info["exit_code"])
        return True

    def signal(self, sig: int) -> None:
        """To the agent's group, while the agent is still the process chkd-pane started."""
        if self.pid and self._code is None and same_process(self.pid, self.started):
            try:
                os.killpg(self.pid, sig)
            except OSError:
                pass

    def finish(self) -> None:
        """The agent ended: make sure its session is gone (it normally closed with its leader)."""
        self._tmux(tmux.kill_session(self.socket, self.session))
        self.status_path.unlink(missing_ok=True)
