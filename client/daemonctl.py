"""Starting, finding and stopping chkdd from a client, without importing the daemon.

"Running" means: some process holds the flock on `run/chkdd.lock`. That is exact
(the kernel drops the lock when the daemon dies, even on kill -9), unlike a pid file.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time

from chkd.protocol.errors import ChkdError
from chkd.protocol.launch import NEUTRAL_CWD, module_argv
from chkd.protocol.paths import Paths, open_private

START_TIMEOUT = 20.0


def is_running(paths: Paths) -> bool:
    """Whether a daemon holds the lock; refuses (ChkdError) a run directory another user could reach."""
    paths.check_run()
    try:
        fd = os.open(paths.lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def pid(paths: Paths) -> int | None:
    try:
        text = paths.lock_file.read_text(encoding="utf-8").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def daemon_argv(paths: Paths) -> list[str]:
    """`chkdd` by this interpreter, never importing from the cwd (see protocol/launch.py)."""
    return module_argv("chkd.daemon.main", *(["--home", str(paths.home)] if paths.home is not None else []))


def _answers(paths: Paths, timeout: float) -> bool:
    import zmq

    from chkd.protocol import codec
    from chkd.protocol.messages import Ping, Pong

    paths.check_run()
    if not paths.ctl_sock.exists():
        return False
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(paths.ctl_endpoint)
        sock.send(codec.encode_request(0, Ping()))
        if not sock.poll(int(timeout * 1000)):
            return False
        return isinstance(codec.decode_reply(sock.recv()).body, Pong)
    finally:
        sock.close(0)


def start(paths: Paths, timeout: float = START_TIMEOUT) -> int:
    """Start chkdd detached (own session, no terminal) and return once it answers a ping.

    Returns the daemon's pid. If another client started it at the same moment, that
    daemon is the one waited for.
    """
    import subprocess

    paths.ensure()
    if _start_via_service(paths):
        return _wait_started(paths, timeout)
    out_path = paths.state / "chkdd.out"
    with open_private(out_path) as out:
        start_offset = out.tell()
        proc = subprocess.Popen(
            daemon_argv(paths),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
            cwd=NEUTRAL_CWD,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None and code != 0 and not is_running(paths):
            raise ChkdError("internal", f"chkdd could not start: {_last_words(out_path, start_offset)}")
        if is_running(paths) and _answers(paths, 0.5):
            return pid(paths) or proc.pid
        time.sleep(0.02)
    raise ChkdError(
        "busy", f"chkdd did not answer within {timeout:g} s of starting.", f"See {paths.log_file} and {out_path}."
    )


def _start_via_service(paths: Paths) -> bool:
    """An installed chkd service for this home starts chkdd itself, so the service manager
    stays its parent (restarts, watchdog, logs); without one, or when the manager refuses,
    the caller starts chkdd detached."""
    from . import service

    return service.start_via_service(paths)


def _wait_started(paths: Paths, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_running(paths) and _answers(paths, 0.5):
            return pid(paths) or 0
        time.sleep(0.05)
    raise ChkdError(
        "busy",
        f"The chkd service did not answer within {timeout:g} s of starting.",
        "See `chkdctl service status` and the service manager's log (`journalctl --user -u chkd`).",
    )


def stop(paths: Paths, timeout: float = 15.0) -> bool:
    """Ask chkdd to stop (SIGTERM to the lock holder) and wait for the lock to be released.
    Returns False if it was not running."""
    if not is_running(paths):
        return False
    daemon_pid = pid(paths)
    if daemon_pid is None:
        raise ChkdError("internal", f"chkdd is running but {paths.lock_file} names no pid.")
    try:
        os.kill(daemon_pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(paths):
            return True
        time.sleep(0.02)
    raise ChkdError(
        "busy",
        f"chkdd (pid {daemon_pid}) did not stop within {timeout:g} s.",
        f"Look at {paths.log_file}; `kill -9 {daemon_pid}` is safe (the next start repairs state).",
    )


def _last_words(path: os.PathLike[str], offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    line = text.splitlines()[-1] if text else "it exited without saying why"
    return line.removeprefix("chkdd: ")
