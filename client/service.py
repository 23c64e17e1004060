"""chkd as a user service: where the definition goes, what it holds, how the manager is told.

`plan(paths, manager)` says everything an install would do (file, text, commands) without
doing it, so `--print` and the real install share one path. The service manager is asked
through its own CLI (`systemctl --user`, `launchctl`); where none runs for this user
(a container, an SSH session without lingering) that is said plainly and the commands are
printed instead. chkdctl's autostart uses `start_via_service` first, so an installed
service stays the one parent of chkdd.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chkd.protocol.paths import Paths

from . import service_files as sf

MANAGERS = ("systemd", "launchd")
#: A service manager's CLI answers within this, or counts as not running.
MANAGER_TIMEOUT = 15.0


class Plan:
    """What installing the service means here: the file, its content, and the commands."""

    __slots__ = ("content", "disable", "enable", "home", "manager", "path", "query", "start")

    def __init__(
        self,
        manager: str,
        path: Path,
        content: bytes,
        enable: list[list[str]],
        disable: list[list[str]],
        start: list[str],
        query: list[str],
        home: str,
    ) -> None:
        self.manager = manager
        self.path = path
        self.content = content
        self.enable = enable
        self.disable = disable
        self.start = start
        self.query = query
        self.home = home


def default_manager() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def chkdd_argv(paths: Paths) -> list[str]:
    """The daemon as this installation runs it, by absolute path: the `chkdd` script beside
    this interpreter (a venv's bin/), else this interpreter with `-P -m chkd.daemon.main`."""
    script = Path(sys.executable).parent / "chkdd"
    argv = [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-P", "-m", "chkd.daemon.main"]
    if paths.home is not None:
        argv += ["--home", str(paths.home)]
    return [*argv, "--log-format", "json"]


def service_environment() -> dict[str, str]:
    """A service starts with the manager's bare environment; agents (claude, git) are found on
    the PATH of the shell that installed it."""
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}


def home_label(paths: Paths) -> str:
    return str(paths.home) if paths.home is not None else sf.DEFAULT_HOME


def unit_path(manager: str) -> Path:
    if manager == "launchd":
        return Path.home() / "Library" / "LaunchAgents" / f"{sf.LAUNCHD_LABEL}.plist"
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user" / sf.UNIT_NAME


def plan(paths: Paths, manager: str | None = None) -> Plan:
    manager = manager or default_manager()
    argv = chkdd_argv(paths)
    env = service_environment()
    path = unit_path(manager)
    home = home_label(paths)
    if manager == "launchd":
        domain = f"gui/{os.getuid()}"
        content = sf.launchd_plist(argv, str(paths.state / "chkdd.out"), env)
        return Plan(
            manager,
            path,
            content,
            enable=[["launchctl", "bootstrap", domain, str(path)]],
            disable=[["launchctl", "bootout", f"{domain}/{sf.LAUNCHD_LABEL}"]],
            start=["launchctl", "kickstart", f"{domain}/{sf.LAUNCHD_LABEL}"],
            query=["launchctl", "print", f"{domain}/{sf.LAUNCHD_LABEL}"],
            home=home,
        )
    content = sf.systemd_unit(sf.exec_line(argv), env, home).encode()
    return Plan(
        manager,
        path,
        content,
        enable=[["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", sf.UNIT_NAME]],
        disable=[["systemctl", "--user", "disable", "--now", sf.UNIT_NAME], ["systemctl", "--user", "daemon-reload"]],
        start=["systemctl", "--user", "start", sf.UNIT_NAME],
        query=["systemctl", "--user", "is-active", sf.UNIT_NAME],
        home=home,
    )


def run(argv: list[str]) -> tuple[int, str]:
    """Run a service-manager command: (exit code, its last line of output). A missing program
    or a hang is a non-zero code with a sentence, never an exception."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=MANAGER_TIMEOUT, stdin=subprocess.DEVNULL, cwd="/"
        )
    except FileNotFoundError:
        return 127, f"{argv[0]} is not installed"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} did not answer within {MANAGER_TIMEOUT:g} s"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode, lines[-1].strip() if lines else ""


def manager_problem(manager: str) -> str | None:
    """Why the user's service manager cannot be told anything here, or None when it can."""
    if manager == "launchd":
        if sys.platform != "darwin":
            return "launchd runs only on macOS"
        return None
    code, said = run(["systemctl", "--user", "show-environment"])
    if code == 0:
        return None
    return f"no systemd user manager is running for this user ({said or f'systemctl exited {code}'})"


def installed_home(manager: str | None = None) -> str | None:
    """The home the installed service serves, or None when none of chkd's is installed."""
    path = unit_path(manager or default_manager())
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if (manager or default_manager()) == "launchd":
        return sf.home_of_plist(data)
    return sf.home_of_unit(data.decode("utf-8", "replace"))


def start_via_service(paths: Paths) -> bool:
    """Ask the installed service to start chkdd for this home; False when there is no such
    service or its manager refused (the caller then starts chkdd itself)."""
    manager = default_manager()
    if installed_home(manager) != home_label(paths):
        return False
    code, _said = run(plan(paths, manager).start)
    return code == 0
