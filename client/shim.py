"""chkd-shim: runs one worker's agent and keeps the daemon informed.

The daemon starts `chkd-shim --worker W` in its own session with a pipe on stdin and
the worker log as stdout/stderr — or, ahead of any spawn, `chkd-shim --standby` (output
to the standby log until its `go` names the worker and its log: a spawn then waits for
no Python start-up, daemon/shimstandby.py). The shim forks away at once (so the daemon
reaps its first process immediately and never collects zombies), then waits for one line
on stdin: `go {json}` (a ShimGo: the agent's argv, cwd and environment) once the
worktree exists, or `stop` (or EOF: the daemon went away). It then

- starts the agent in its own session / process group (so signals to the group reach
  the agent and everything it starts, and nothing else), stdout+stderr into a pipe
  that the shim copies to `state/workers/<id>.log`, noting when output last came —
  or, for an interactive profile (`go` carries `tmux`), in a tmux session on chkd's own
  server, its pane's output appended to the same log (`pane_agent.py`);
- says hello (pids and create times, the same values psutil reports), then sends a
  heartbeat every `heartbeat_s`: the shim and the agent live, plus the agent's last
  output time as activity;
- reports the exit code (or signal) when the agent ends, retrying with backoff until
  the daemon has it. An unreachable daemon never stops the agent.

Imports only protocol + zmq (through the Client): never the daemon, never psutil.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import msgspec

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    SHIM_BACKOFF_MAX_S,
    SHIM_SEND_TIMEOUT_S,
    ActivityAck,
    AgentReport,
    ShimBeat,
    ShimExit,
    ShimGo,
    ShimHello,
    decode_go,
)
from chkd.protocol.paths import Paths, open_private, resolve

from .claude_stream import Facts, StreamReader
from .client import Client
from .pane_agent import PaneAgent
from .procid import create_time

#: Per-attempt reply timeout, and the backoff bounds for retries.
SEND_TIMEOUT = SHIM_SEND_TIMEOUT_S
BACKOFF_MIN, BACKOFF_MAX = 0.2, SHIM_BACKOFF_MAX_S
#: Statuses in which the agent must stop (the shim relays it if the daemon's signal did not land).
#: Not `dead`: that verdict may come from a daemon that was away too long, and stopping would lose work.
STOP_STATUSES = frozenset({"aborted"})


def now_ms() -> int:
    return int(time.time() * 1000)


# -- talking to the daemon -----------------------------------------------------------------------
class Link:
    """One request at a time to the daemon; a fresh DEALER after any failure (a restarted daemon)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.client: Client | None = None
        self.failures = 0

    def send(self, body: ShimHello | ShimBeat | ShimExit) -> ActivityAck | None:
        """The daemon's ack, or None when it could not be reached (the caller retries later)."""
        try:
            if self.client is None:
                self.client = Client(self.paths, timeout=SEND_TIMEOUT, autostart=False)
            reply = self.client.call(body)
        except ChkdError as exc:
            if exc.code in ("not_found", "bad_request"):
                raise  # the daemon answered: retrying cannot help
            self._reset()
            return None
        except Exception:  # noqa: BLE001 - zmq errors, a daemon mid-restart: retry later
            self._reset()
            return None
        self.failures = 0
        return reply

    def _reset(self) -> None:
        self.failures += 1
        if self.client is not None:
            self.client.close()
            self.client = None

    def backoff(self) -> float:
        return min(BACKOFF_MAX, BACKOFF_MIN * (2 ** min(self.failures, 6)))


def resolve_program(argv: list[str], env: dict[str, str]) -> list[str]:
    """A bare program name not on PATH is also looked for beside this Python (the chkd venv's
    `chkd-demo-agent` when the daemon runs with a minimal PATH, as under systemd)."""
    if not argv or os.sep in argv[0] or shutil.which(argv[0], path=env.get("PATH")):
        return argv
    beside = os.path.join(os.path.dirname(sys.executable), argv[0])
    return [beside, *argv[1:]] if os.access(beside, os.X_OK) else argv


def log_line(log: Any, text: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        log.write(f"[chkd-shim {stamp}] {text}\n".encode())
    except OSError:
        pass


class DetachedAgent:
    """The agent as the shim's own child: its own session, stdout+stderr piped into the log (and,
    for a `claude-stream-json` profile, parsed into facts the shim reports as AgentReports)."""

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str], log: Any, output: str = "plain") -> None:
        self.argv, self.cwd, self.env, self.log = argv, cwd, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.started = 0.0
        self.output_at: int | None = None
        self.exited = threading.Event()
        self.wake = threading.Event()  # set on the agent's exit and on new facts
        #: `claude-stream-json`: the agent's stdout is parsed for session, usage and limits.
        self.stream = StreamReader() if output == "claude-stream-json" else None
        self.facts: list[Facts] = []  # parsed, not yet delivered (the copier appends, the shim's loop sends)
        self.facts_lock = threading.Lock()
        self.copier: threading.Thread | None = None

    def start(self) -> bool:
        try:
            self.proc = subprocess.Popen(
                resolve_program(self.argv, self.env),
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the argv or the environment
            log_line(self.log, f"cannot start the agent: {exc}")
            return False
        self.pid, self.started = self.proc.pid, create_time(self.proc.pid)
        self.copier = threading.Thread(target=self._copy_output, name="output", daemon=True)
        self.copier.start()
        threading.Thread(target=self._wait, name="waiter", daemon=True).start()
        return True

    @property
    def returncode(self) -> int | None:
        """None while it runs; the exit code, or minus the signal that killed it."""
        return None if self.proc is None else self.proc.returncode

    def _wait(self) -> None:
        """Block in waitpid (no polling); the main loop sleeps on `wake` between heartbeats."""
        assert self.proc is not None
        self.proc.wait()
        self.exited.set()
        self.wake.set()

    def _parsed(self, facts: list[Facts]) -> None:
        if facts:
            with self.facts_lock:
                self.facts.extend(facts)
            self.wake.set()

    def take_facts(self) -> list[Facts]:
        with self.facts_lock:
            facts, self.facts = self.facts, []
        return facts

    def put_back(self, facts: list[Facts]) -> None:
        """Facts the daemon did not get: they go first in the next report."""
        with self.facts_lock:
            self.facts[:0] = facts

    def drain(self) -> None:
        """After the exit: the rest of its output (its result line) is read before the exit is reported."""
        if self.copier is not None:
            self.copier.join(timeout=5.0)

    def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                if self.stream is not None:
                    self._parsed(self.stream.finish())
                return
            self.output_at = now_ms()
            try:
                self.log.write(chunk)
            except OSError:
                pass
            if self.stream is not None:
                self._parsed(self.stream.feed(chunk))

    def signal(self, sig: int) -> None:
        """Only while the agent is our unreaped child: its pid (= its group id) cannot be reused."""
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, sig)
            except OSError:
                pass

    def finish(self) -> None:
        """Nothing is left to tidy for a detached agent."""


class Shim:
    def __init__(self, spec: ShimGo, paths: Paths) -> None:
        self.worker = spec.worker
        self.argv = list(spec.argv)
        self.cwd = spec.cwd
        self.env = {**os.environ, **spec.env}
        self.period = spec.heartbeat_s
        self.grace = spec.abort_grace_s
        self.log = open_private(spec.log, "ab", buffering=0)
        self.link = Link(paths)
        self.agent: DetachedAgent | PaneAgent
        if spec.tmux is not None:  # an interactive profile: the agent runs in a tmux pane on chkd's own server
            self.agent = PaneAgent(
                resolve_program(self.argv, self.env),
                self.cwd,
                self.env,
                lambda text: log_line(self.log, text),
                socket=spec.tmux.socket,
                session=spec.tmux.session,
                log_path=spec.log,
            )
        else:
            self.agent = DetachedAgent(self.argv, self.cwd, self.env, self.log, spec.output)
        self.term_sent: float | None = None
        self.orphaned = False  # the daemon no longer knows this worker: stop reporting

    @property
    def exited(self) -> threading.Event:
        return self.agent.exited

    @property
    def wake(self) -> threading.Event:
        """What the loop sleeps on: the exit, and for a detached agent also new facts from its stream."""
        return self.agent.wake if isinstance(self.agent, DetachedAgent) else self.agent.exited

    # -- the agent ----------------------------------------------------------------------------
    def start_agent(self) -> bool:
        where = f" in tmux session {self.agent.session}" if isinstance(self.agent, PaneAgent) else ""
        log_line(self.log, f"worker {self.worker}: starting {shlex.join(self.argv)} in {self.cwd}{where}")
        return self.agent.start()

    def _signal_agent(self, sig: int) -> None:
        self.agent.signal(sig)

    def _apply(self, ack: ActivityAck | None) -> None:
        if ack is None:
            return
        self.period = max(0.05, float(ack.heartbeat_s))
        if (ack.stop or ack.status in STOP_STATUSES) and self.term_sent is None:
            log_line(self.log, f"the daemon says the worker is {ack.status}: stopping the agent")
            self._signal_agent(signal.SIGTERM)
            self._signal_agent(signal.SIGCONT)
            self.term_sent = time.monotonic()

    def _report(self) -> bool:
        """Send what the stream told so far as one AgentReport; False when the daemon was not reached
        (the facts stay for the next try)."""
        if not isinstance(self.agent, DetachedAgent):
            return True
        facts = self.agent.take_facts()
        if not facts:
            return True
        report = AgentReport(worker=self.worker, activity_at=self.agent.output_at)
        for f in facts:
            report.session_id = f.session_id or report.session_id
            report.model = f.model or report.model
            report.usage = f.usage or report.usage
            report.usage_limit = report.usage_limit or f.usage_limit
            report.api_error = report.api_error or f.api_error
        if self._send(report) is None and not self.orphaned:
            self.agent.put_back(facts)
            return False
        return True

    def _has_facts(self) -> bool:
        return isinstance(self.agent, DetachedAgent) and bool(self.agent.facts)

    def _send(self, body: Any) -> ActivityAck | None:
        if self.orphaned:
            return None
        try:
            return self.link.send(body)
        except ChkdError as exc:
            log_line(self.log, f"the daemon refused {type(body).__name__}: {exc.message} (reporting stops)")
            self.orphaned = True
            return None

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        if not self.start_agent():
            self.report_exit(127, None)
            return 1
        pid = self.agent.pid
        hello = ShimHello(
            worker=self.worker,
            shim_pid=os.getpid(),
            shim_started=create_time(os.getpid()),
            agent_pid=pid,
            agent_started=self.agent.started,
            pgid=pid,
        )
        greeted = False
        while True:
            if not greeted:
                ack = self._send(hello)
                greeted = ack is not None
            else:
                ack = self._send(ShimBeat(worker=self.worker, agent_alive=True, output_at=self.agent.output_at))
            self._apply(ack)
            wait = self.period if ack is not None else min(self.period, self.link.backoff())
            if self._sleep(wait):
                break
        rc = self.agent.returncode
        code, sig = (rc, None) if rc is None or rc >= 0 else (None, -rc)
        if rc is None:
            log_line(self.log, "the agent ended, but its exit status is unknown (its tmux pane went away)")
        elif sig is None:
            log_line(self.log, f"the agent exited with code {code}")
        else:
            log_line(self.log, f"the agent was killed by signal {sig}")
        self.agent.finish()
        if not greeted and not self.orphaned:
            self._deliver(hello)
        if isinstance(self.agent, DetachedAgent):
            self.agent.drain()
        while not self._report():
            time.sleep(self.link.backoff())
        self.report_exit(code, sig)
        return 0

    def _sleep(self, seconds: float) -> bool:
        """Wait for the agent's exit up to `seconds` (True if it exited); SIGKILL a stopping agent on time."""
        deadline = time.monotonic() + seconds
        while True:
            if self.term_sent is not None and time.monotonic() - self.term_sent > self.grace:
                self._signal_agent(signal.SIGKILL)
            left = deadline - time.monotonic()
            if left <= 0:
                return self.exited.is_set()
            step = left if self.term_sent is None else min(left, 0.2)
            wake = self.wake
            wake.wait(step)
            if wake is not self.exited:  # never clear the exit itself (an interactive agent has no facts)
                wake.clear()
            if self.exited.is_set():
                return True
            if self._has_facts() and not self._report():
                time.sleep(min(self.link.backoff(), max(0.0, deadline - time.monotonic())))

    def _deliver(self, body: Any) -> ActivityAck | None:
        """Send until the daemon has it (or says it does not know the worker)."""
        while not self.orphaned:
            ack = self._send(body)
            if ack is not None:
                return ack
            time.sleep(self.link.backoff())
        return None

    def report_exit(self, code: int | None, sig: int | None) -> None:
        self._deliver(ShimExit(worker=self.worker, exit_code=code, signal=sig, at=now_ms()))


def _detach() -> None:
    """Fork: the parent (the daemon's child) exits now; the shim goes on in the child, reparented."""
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="chkd-shim",
        description=("Runs one chkd worker's agent (started by chkdd; reads `go {json}` or `stop` on stdin)."),
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--worker", help="the worker id")
    who.add_argument("--standby", action="store_true", help="wait for any worker: the `go` line names it")
    parser.add_argument("--no-detach", action="store_true", help="stay in the foreground (debugging)")
    args = parser.parse_args(argv)
    if not args.no_detach:
        _detach()
    line = sys.stdin.readline()
    name = args.worker or "standby"
    try:
        spec = decode_go(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"chkd-shim {name}: not starting: the daemon's go line does not fit ({exc}).", file=sys.stderr)
        sys.exit(1)
    if spec is None:
        print(f"chkd-shim {name}: not starting ({line.strip() or 'no go from the daemon'}).", file=sys.stderr)
        sys.exit(0)
    if args.worker is not None and spec.worker != args.worker:
        print(f"chkd-shim {name}: not starting: the go line is for worker {spec.worker}.", file=sys.stderr)
        sys.exit(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if args.standby:
        _output_to(spec.log)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sys.exit(Shim(spec, resolve()).run())


def _output_to(log: str) -> None:
    """A standby shim's stdout and stderr (its own messages, a traceback) go to the worker log from now on."""
    sys.stdout.flush()
    sys.stderr.flush()
    with open_private(log, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)


if __name__ == "__main__":
    main()
