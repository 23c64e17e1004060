"""The daemon starts, refuses a twin, survives kill -9, and clients explain when it is absent."""

from __future__ import annotations

import os
import stat
import subprocess

from chkd.protocol.launch import module_argv
from chkd.protocol.messages import Ping, Shutdown, Status

from conftest import Daemon, wait_for


def test_ping_reports_identity_and_counts(daemon: Daemon) -> None:
    pong = daemon.call(Ping())
    assert pong.pid == daemon.proc.pid
    assert pong.db == str(daemon.db)
    assert (pong.repos, pong.tasks, pong.workers) == (0, 0, 0)
    status = daemon.call(Status())
    assert status.pong.pid == pong.pid


def test_run_dir_is_private(daemon: Daemon) -> None:
    mode = stat.S_IMODE(os.stat(daemon.paths.run).st_mode)
    assert mode == 0o700
    assert daemon.paths.ctl_sock.exists() and daemon.paths.events_sock.exists()


def test_second_daemon_refuses_to_start(daemon: Daemon) -> None:
    proc = subprocess.run(
        module_argv("chkd.daemon.main", "--home", str(daemon.home)), capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"chkdd already running (pid {daemon.proc.pid})"
    assert daemon.call(Ping()).pid == daemon.proc.pid  # the first one still serves


def test_kill_9_then_a_new_daemon_serves(daemon: Daemon) -> None:
    old = daemon.proc.pid
    daemon.kill()
    assert daemon.paths.ctl_sock.exists()  # the stale socket is left behind...
    daemon.start()  # ...and replaced
    pong = daemon.call(Ping())
    assert pong.pid != old


def test_sigterm_removes_sockets(daemon: Daemon) -> None:
    daemon.stop()
    assert daemon.proc.returncode == 0
    assert not daemon.paths.ctl_sock.exists()
    assert not daemon.paths.events_sock.exists()


def test_shutdown_command_stops_daemon(daemon: Daemon) -> None:
    daemon.call(Shutdown())
    wait_for(lambda: daemon.proc.poll() is not None, what="chkdd to exit")
    assert daemon.proc.returncode == 0


def test_ping_without_daemon_is_one_sentence(chkd_home) -> None:  # type: ignore[no-untyped-def]
    d = Daemon(chkd_home)
    res = d.ctl("ping")
    assert res.code == 1
    assert "Traceback" not in res.err
    assert res.err.splitlines()[0] == f"chkdctl: chkdd is not running (no daemon holds {d.paths.lock_file})."


def test_chkdctl_autostarts_the_daemon(chkd_home) -> None:  # type: ignore[no-untyped-def]
    d = Daemon(chkd_home)
    try:
        res = d.ctl("--json", "ping", env={"CHKD_NO_AUTOSTART": "0"})
        assert res.code == 0, res
        assert res.json()["result"] == "pong"
        assert d.ctl("daemon", "status").code == 0
        stop = d.ctl("daemon", "stop")
        assert stop.code == 0 and "stopped" in stop.out
        assert d.ctl("daemon", "status").code == 1
    finally:
        d.ctl("daemon", "stop")
