"""chkd as a user service: the unit and plist it writes, sd_notify from the real daemon, and
`chkdctl service` against a HOME, XDG_CONFIG_HOME and XDG_RUNTIME_DIR under tmp_path (never the
real user's ~/.config or systemd manager)."""

from __future__ import annotations

import json
import os
import plistlib
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chkd.client import service_files as sf
from chkd.client.daemonctl import is_running
from chkd.daemon.sdnotify import SdNotifier

from conftest import BIN, CtlResult, Daemon, wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A user of our own: HOME, config and runtime dirs in tmp_path, no session bus, so no
    systemctl --user can reach the real manager."""
    home = tmp_path / "user"
    (home / ".config").mkdir(parents=True)
    runtime = tmp_path / "xdg-run"
    runtime.mkdir(mode=0o700)
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_RUNTIME_DIR": str(runtime),
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus",
    }


def ctl(chkd_home: Path, env: dict[str, str], *args: str) -> CtlResult:
    full = {**os.environ, **env, "CHKD_HOME": str(chkd_home)}
    return CtlResult(
        subprocess.run(
            [str(BIN / "chkdctl"), *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    )


def unit_file(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "chkd.service"


# -- the files ---------------------------------------------------------------------------------


@pytest.mark.needs("systemd-analyze")
def test_generated_unit_passes_systemd_analyze_verify(tmp_path: Path, user_env: dict[str, str]) -> None:
    odd_home = tmp_path / "a home with spaces, 100% $odd"
    res = ctl(odd_home, user_env, "service", "install", "--print", "--json")
    assert res.code == 0, res
    out = res.json()
    unit = tmp_path / "verify" / "chkd.service"
    unit.parent.mkdir()
    unit.write_text(out["content"])
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "chkd.service" not in proc.stderr, proc.stderr  # no warning about our unit at all
    text = out["content"]
    for line in ("Type=notify", "Restart=on-failure", "KillMode=process", f"WatchdogSec={sf.WATCHDOG_SEC}"):
        assert line in text.splitlines()
    assert sf.home_of_unit(text) == str(odd_home)
    # a deliberately broken unit fails the same check, so the check can fail
    unit.write_text(text.replace(str(BIN / "chkdd"), "/nonexistent/chkdd", 1))
    assert subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, timeout=60).returncode != 0


def test_checked_in_unit_is_the_generated_default() -> None:
    assert (ROOT / "systemd" / "chkd.service").read_text() == sf.systemd_unit("%h/.local/bin/chkdd --log-format json")


def test_plist_round_trips_with_the_right_keys(chkd_home: Path, user_env: dict[str, str]) -> None:
    res = ctl(chkd_home, user_env, "service", "install", "--print", "--json", "--manager", "launchd")
    assert res.code == 0, res
    out = res.json()
    assert out["path"] == f"{user_env['HOME']}/Library/LaunchAgents/dev.chkd.chkdd.plist"
    job = plistlib.loads(out["content"].encode())
    assert plistlib.loads(plistlib.dumps(job)) == job
    assert job["Label"] == "dev.chkd.chkdd"
    assert job["ProgramArguments"] == [str(BIN / "chkdd"), "--home", str(chkd_home), "--log-format", "json"]
    assert job["RunAtLoad"] is True
    assert job["KeepAlive"] == {"SuccessfulExit": False}  # restarted after a failure only
    assert job["AbandonProcessGroup"] is True  # workers outlive chkdd
    assert job["StandardOutPath"] == job["StandardErrorPath"] == str(chkd_home / "state" / "chkdd.out")
    assert out["commands"] == [f"launchctl bootstrap gui/{os.getuid()} {out['path']}"]
    checked_in = plistlib.loads((ROOT / "launchd" / "dev.chkd.chkdd.plist").read_bytes())
    assert checked_in.keys() == job.keys() - {"EnvironmentVariables"} | {"EnvironmentVariables"}
    assert {k: checked_in[k] for k in ("Label", "RunAtLoad", "KeepAlive", "AbandonProcessGroup")} == {
        k: job[k] for k in ("Label", "RunAtLoad", "KeepAlive", "AbandonProcessGroup")
    }


def test_install_print_shows_the_venv_absolute_paths_and_writes_nothing(
    chkd_home: Path, user_env: dict[str, str]
) -> None:
    res = ctl(chkd_home, user_env, "service", "install", "--print")
    assert res.code == 0, res
    assert f"would write {unit_file(user_env)}" in res.out
    assert f"ExecStart={BIN / 'chkdd'} --home {chkd_home} --log-format json" in res.out.splitlines()
    assert "systemctl --user enable --now chkd.service" in res.out
    assert not unit_file(user_env).exists()
    assert not list(Path(user_env["XDG_CONFIG_HOME"]).iterdir())


# -- the daemon talks sd_notify ------------------------------------------------------------------


def _datagrams(sock: socket.socket, until: str, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(until in g for g in got):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"no {until!r} within {timeout:g} s; got {got!r}") from None
    return got


def test_daemon_sends_ready_then_watchdog_pings_then_stopping(chkd_home: Path, tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    d = Daemon(chkd_home)
    try:
        d.start(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"})
        first = _datagrams(sock, "READY=1", 10)
        assert "READY=1" in first[0].splitlines()  # nothing before READY
        assert f"MAINPID={d.proc.pid}" in first[0].splitlines()
        pings = list(_datagrams(sock, "WATCHDOG=1", 5))
        pings += _datagrams(sock, "WATCHDOG=1", 5)
        assert sum(g == "WATCHDOG=1" for g in pings) >= 2  # every 0.1 s (half of WATCHDOG_USEC)
        d.stop()
        rest = _datagrams(sock, "STOPPING=1", 5)
        assert "STOPPING=1" in rest[-1].splitlines()
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(4096)  # nothing after STOPPING
    finally:
        d.stop()
        sock.close()


def test_no_notify_socket_no_datagrams_and_children_never_inherit_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {"NOTIFY_SOCKET": "@chkd-test", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid()), "X": "1"}
    n = SdNotifier.from_environ(env)
    assert env == {"X": "1"}  # shims and agents started later do not see the service manager
    assert n.address == "@chkd-test" and n.watchdog_interval_s == 15.0
    assert (
        SdNotifier.from_environ(
            {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
        ).watchdog_interval_s
        is None
    )
    assert SdNotifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    silent = SdNotifier.from_environ({})
    assert not silent.enabled and silent.ready() is False and silent.watchdog_interval_s is None
    # an abstract socket name (systemd's usual NOTIFY_SOCKET) works too
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(f"\0chkd-test-{os.getpid()}")
    try:
        assert SdNotifier(f"@chkd-test-{os.getpid()}").watchdog()
        sock.settimeout(2)
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()
    assert SdNotifier(str(tmp_path / "nobody-listens")).ready() is False  # a failure is False, not a crash


# -- chkdctl service install / status / uninstall -----------------------------------------------


def test_install_without_a_user_systemd_says_so_and_prints_the_commands(
    chkd_home: Path, user_env: dict[str, str]
) -> None:
    res = ctl(chkd_home, user_env, "service", "install")
    assert res.code == 1, res
    assert "not enabled" in res.out and (
        "no systemd user manager is running" in res.out or "systemctl is not installed" in res.out
    ), res
    assert "  systemctl --user daemon-reload" in res.out.splitlines()
    assert "  systemctl --user enable --now chkd.service" in res.out.splitlines()
    assert unit_file(user_env).read_text().startswith(f"{sf.HOME_MARK}{chkd_home}\n")
    status = ctl(chkd_home, user_env, "service", "status", "--json").json()
    assert status["installed"] and status["current"] and status["home"] == str(chkd_home)
    assert status["manager_problem"] and not status["daemon_running"]
    res = ctl(chkd_home, user_env, "service", "uninstall")
    assert res.code == 0, res
    assert not unit_file(user_env).exists()
    assert "No chkd service is installed" in ctl(chkd_home, user_env, "service", "uninstall").out


FAKE_SYSTEMCTL = """\
#!{python}
# Stands in for systemctl --user: records every call; `start` runs the installed unit's ExecStart
# detached, as systemd would, so the test sees whether that line really starts chkdd.
import os, shlex, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_SYSTEMCTL_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[1:2] == ["is-active"]:
    print("inactive"); sys.exit(3)
if args[1:2] == ["start"]:
    unit = os.path.join(os.environ["XDG_CONFIG_HOME"], "systemd", "user", args[2])
    line = next(l for l in open(unit) if l.startswith("ExecStart="))[len("ExecStart="):]
    argv = [a.replace("%%", "%").replace("$$", "$") for a in shlex.split(line)]
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, cwd="/")
sys.exit(0)
"""


def test_install_takes_over_from_chkdctl_and_autostart_then_goes_through_the_service(
    chkd_home: Path, user_env: dict[str, str], tmp_path: Path
) -> None:
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    fake = fake_bin / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
    fake.chmod(0o755)
    log = tmp_path / "systemctl.log"
    env = {**user_env, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "FAKE_SYSTEMCTL_LOG": str(log)}
    d = Daemon(chkd_home).start()  # a chkdd chkdctl started, before any service existed
    try:
        res = ctl(chkd_home, env, "service", "install")
        assert res.code == 0, res
        assert "Installed and started the chkd service" in res.out
        assert f"(pid {d.proc.pid}) was stopped for it" in res.out
        assert d.proc.wait(10) == 0 and not is_running(d.paths)
        calls = log.read_text().splitlines()
        assert calls[-2:] == ["--user daemon-reload", "--user enable --now chkd.service"]

        # autostart: chkdctl asks the service manager, whose ExecStart brings chkdd up
        ping = ctl(chkd_home, env, "--json", "ping")
        assert ping.code == 0, ping
        assert "--user start chkd.service" in log.read_text().splitlines()
        service_pid = json.loads(ping.out)["pid"]
        assert service_pid != d.proc.pid

        res = ctl(chkd_home, env, "service", "uninstall")
        assert res.code == 0 and "Removed the chkd service" in res.out, res
        assert log.read_text().splitlines()[-2:] == ["--user disable --now chkd.service", "--user daemon-reload"]
        assert not unit_file(user_env).exists()
    finally:
        ctl(chkd_home, {**user_env, "CHKD_NO_AUTOSTART": "1"}, "daemon", "stop")
        d.stop()
    wait_for(lambda: not is_running(d.paths), 10, what="the service's chkdd to stop")


def test_autostart_ignores_a_service_for_another_home(
    chkd_home: Path, user_env: dict[str, str], tmp_path: Path
) -> None:
    unit = unit_file(user_env)
    unit.parent.mkdir(parents=True)
    unit.write_text(sf.systemd_unit("/nonexistent/chkdd", home=str(tmp_path / "other-home")))
    log = tmp_path / "systemctl.log"
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    (fake_bin / "systemctl").write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        echo "$*" >> {log}
        exit 1
        """)
    )
    (fake_bin / "systemctl").chmod(0o755)
    env = {**user_env, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    try:
        res = ctl(chkd_home, env, "ping")
        assert res.code == 0, res  # started directly, as before
        assert not log.exists()  # the other home's service was never asked
    finally:
        ctl(chkd_home, {**user_env, "CHKD_NO_AUTOSTART": "1"}, "daemon", "stop")
