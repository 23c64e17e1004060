"""Shared fixtures: a real chkdd per test (CHKD_HOME=tmp_path), real git repositories, real sockets.

Use `daemon` for a running daemon; `daemon.ctl(...)` runs the real `chkdctl` in a
subprocess; `daemon.client()` gives an in-process `Client`; `make_repo()` builds a git
repository with one commit; `wait_for(cond)` polls with a deadline instead of sleeping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from chkd.client import daemonctl
from chkd.client.client import Client
from chkd.protocol.launch import NEUTRAL_CWD, module_argv
from chkd.protocol.messages import RepoAdd, WorkerInfo
from chkd.protocol.paths import Paths, open_private, resolve

if TYPE_CHECKING:
    import psutil

T = TypeVar("T")

BIN = Path(sys.executable).parent

# Commits made by tests, agents and the daemon need an identity, whatever the machine's git config.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "chkd test",
    "GIT_AUTHOR_EMAIL": "test@chkd.invalid",
    "GIT_COMMITTER_NAME": "chkd test",
    "GIT_COMMITTER_EMAIL": "test@chkd.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@pytest.fixture(autouse=True, scope="session")
def _test_environment() -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(GIT_IDENTITY)
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # chkdctl, chkd-shim, demo agent
    os.environ.pop("CHKD_HOME", None)
    os.environ.pop("CHKD_WORKER_ID", None)
    os.environ.pop("CHKD_NO_AUTOSTART", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


def busy_for(seconds: float) -> list[str]:
    """A command that runs `seconds` doing nothing: an agent (or a test gate) busy that long."""
    return [sys.executable, "-c", f"import time; time.sleep({seconds:g})"]


def wait_for(cond: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> T:
    """Poll `cond` until it returns something truthy; fail the test with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = cond()
        except AssertionError:
            last = None
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


def holds(cond: Callable[[], object], seconds: float, interval: float = 0.05, what: str = "condition") -> None:
    """Assert that `cond` stays true for `seconds` (checked throughout, failing at the first
    lapse): for "nothing more happens" checks, where waiting for a change cannot work."""
    deadline = time.monotonic() + seconds
    while True:
        value = cond()
        if not value:
            raise AssertionError(f"{what} stopped holding (value: {value!r})")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def git(cwd: Path | str, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """A git repository at `path` with one commit holding `files` (default: a README)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "user.name", "chkd test")
    git(path, "config", "user.email", "test@chkd.invalid")
    git(path, "config", "commit.gpgsign", "false")
    for name, text in (files or {"README.md": "# test repo\n"}).items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


class CtlResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self) -> Any:
        return json.loads(self.out)

    def __repr__(self) -> str:
        return f"CtlResult(code={self.code}, out={self.out[-800:]!r}, err={self.err[-800:]!r})"


class Daemon:
    """A real chkdd in its own CHKD_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.paths: Paths = resolve(home)
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: list[Client] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 15.0, env: dict[str, str] | None = None) -> Daemon:
        """Start chkdd; `env` adds variables (e.g. CHKD_FAILPOINTS to make it kill itself at a point)."""
        self.paths.ensure()
        out = open_private(self.paths.state / "chkdd.out")
        env = {**os.environ, "CHKD_HOME": str(self.home), **(env or {})}
        self.proc = subprocess.Popen(
            module_argv("chkd.daemon.main", "--home", str(self.home)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,
            cwd=NEUTRAL_CWD,
        )
        out.close()
        wait_for(
            lambda: self.proc.poll() is not None or daemonctl._answers(self.paths, 0.5), timeout, what="chkdd to answer"
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"chkdd exited with {self.proc.returncode}: {self.output()}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("chkdd did not stop within its grace period on SIGTERM") from None

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> Daemon:
        self.stop()
        return self.start()

    def arm(self, *failpoints: str) -> Daemon:
        """Restart with these failpoints armed: the daemon kills itself (-9) the first time it
        reaches one (daemon/failpoints.py)."""
        self.stop()
        return self.start(env={"CHKD_FAILPOINTS": ",".join(failpoints)})

    def wait_dead(self, timeout: float = 30.0) -> None:
        """Wait until the daemon process has died (a failpoint fired); then it can be started again."""
        assert self.proc is not None
        wait_for(lambda: self.proc.poll() is not None, timeout, what="chkdd to die at its failpoint")
        for c in self._clients:
            c.close()
        self._clients.clear()

    @property
    def db(self) -> Path:
        from chkd.daemon.store import db_path

        return db_path(self.paths)

    def output(self) -> str:
        try:
            return (self.paths.state / "chkdd.out").read_text(errors="replace")
        except OSError:
            return ""

    def log_lines(self) -> list[dict[str, Any]]:
        try:
            text = self.paths.log_file.read_text(errors="replace")
        except OSError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    # -- talking to it -------------------------------------------------------------------------
    def client(self, timeout: float = 10.0) -> Client:
        c = Client(self.paths, timeout=timeout, autostart=False)
        self._clients.append(c)
        return c

    def call(self, body: Any, timeout: float = 30.0) -> Any:
        if not self._clients:
            self.client()
        return self._clients[0].call(body, timeout)

    def ctl(
        self,
        *args: str,
        cwd: Path | str | None = None,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> CtlResult:
        """Run the real chkdctl (a subprocess) against this daemon."""
        full_env = {**os.environ, "CHKD_HOME": str(self.home), "CHKD_NO_AUTOSTART": "1", **(env or {})}
        proc = subprocess.run(
            [str(BIN / "chkdctl"), *args],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return CtlResult(proc)

    def write_config(self, text: str) -> None:
        self.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.paths.config_file.write_text(text)


#: Small timeouts so liveness tests run in seconds. Tests may override with `daemon_config`.
DEFAULT_TEST_CONFIG = """\
heartbeat_s = 0.5
heartbeat_timeout_s = 3
stall_timeout_s = 30
abort_grace_s = 2
notify = false
"""


@pytest.fixture
def daemon_config() -> str:
    """Override in a test module (or parametrize) to start the daemon with other settings."""
    return DEFAULT_TEST_CONFIG


@pytest.fixture
def chkd_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def daemon(chkd_home: Path, daemon_config: str) -> Iterator[Daemon]:
    d = Daemon(chkd_home)
    d.write_config(daemon_config)
    d.start()
    try:
        yield d
    finally:
        try:
            d.stop()
        finally:
            d.kill()
            _kill_strays(chkd_home)


def _kill_strays(home: Path) -> None:
    """Kill any worker process groups a test left behind (shims record themselves in state)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "environ"]):
        try:
            if proc.info["pid"] == me:
                continue
            environ = proc.info.get("environ") or {}
            if environ.get("CHKD_HOME") == str(home):
                proc.kill()
        except (psutil.Error, OSError):
            continue


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh git repository `tmp_path/proj` with one commit on `main`."""
    return make_repo(tmp_path / "proj")


def shim_of(w: WorkerInfo) -> psutil.Process:
    """The worker's chkd-shim, as the daemon recorded it: a standby shim's
    command line names no worker, so it is found by the pid, never by the command line."""
    import psutil

    assert w.shim_pid, w
    shim = psutil.Process(w.shim_pid)
    assert "chkd.client.shim" in shim.cmdline(), shim
    return shim


@pytest.fixture
def proj(daemon: Daemon, tmp_path: Path) -> Path:
    """`tmp_path/proj` (one commit on `main`) registered with the test's daemon as `proj`."""
    repo = make_repo(tmp_path / "proj")
    daemon.call(RepoAdd(path=str(repo)))
    return repo


@pytest.fixture
def make_git_repo(tmp_path: Path) -> Callable[..., Path]:
    def _make(name: str = "proj", files: dict[str, str] | None = None, branch: str = "main") -> Path:
        return make_repo(tmp_path / name, files, branch)

    return _make


def claude_bin() -> str | None:
    """The claude CLI the tests drive: CHKD_CLAUDE_BIN (.ci/run installs a pinned one), else PATH's."""
    found = os.environ.get("CHKD_CLAUDE_BIN") or shutil.which("claude")
    return found if found and os.access(found, os.X_OK) else None


#: What some tests need from the machine, and how to tell it is there. A test whose need is missing
#: fails, saying what to install: a skipped test checks nothing. `bash .ci/run` installs all of them
#: (Debian's tmux, chromium and systemd, the pinned claude CLI) and runs as root.
NEEDS: dict[str, Callable[[], object]] = {
    "tmux": lambda: shutil.which("tmux"),
    "chromium": lambda: shutil.which("chromium"),
    "systemd-analyze": lambda: shutil.which("systemd-analyze"),
    "claude": claude_bin,
    "root": lambda: os.geteuid() == 0,  # only root can act as a second user; CI runs as root
}


def pytest_configure(config: pytest.Config) -> None:
    if shutil.which("git") is None:  # pragma: no cover
        raise pytest.UsageError("the tests need git on PATH")
    config.addinivalue_line("markers", f"needs(*what): the test needs these from the machine ({', '.join(NEEDS)})")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        missing = [what for what in mark.args if not NEEDS[what]()]
        if not missing:
            continue
        hint = " (or set CHKD_CLAUDE_BIN to a claude CLI)" if "claude" in missing else ""
        said = f"this test needs {', '.join(missing)}, which this machine lacks: `bash .ci/run` installs it{hint}"
        pytest.fail(said, pytrace=False)
