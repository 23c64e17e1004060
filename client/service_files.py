"""The service definitions chkd installs: a systemd user unit and a launchd agent plist.

Pure text, no I/O: `chkdctl service install` fills in this installation's absolute paths,
and the files in systemd/ and launchd/ are these same functions' output for a default
install (a test keeps them equal), so there is one source for what a service looks like.
"""

from __future__ import annotations

import plistlib
from collections.abc import Mapping, Sequence

UNIT_NAME = "chkd.service"
LAUNCHD_LABEL = "dev.chkd.chkdd"
#: How long the loop may go without a WATCHDOG=1 before systemd restarts chkdd. The loop pings
#: every half of it from its timer heap; a git or test job never blocks the loop, so only a
#: real hang (or a stopped process) lets this lapse.
WATCHDOG_SEC = 30
#: The first line of every unit chkd writes; `home_of_unit` reads the home back from it.
HOME_MARK = "# chkd home: "
DEFAULT_HOME = "default"


def _escape(value: str, *, in_exec: bool) -> str:
    """One systemd word: `%` specifiers and (in ExecStart) `$` expansion neutralised, quoted
    when it holds anything the unit parser would split or unescape."""
    value = value.replace("%", "%%")
    if in_exec:
        value = value.replace("$", "$$")
    if value and not any(c.isspace() or c in "\"'\\;" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(argv: Sequence[str]) -> str:
    """ExecStart's value for an argv taken literally (spaces, %, $ and quotes included)."""
    return " ".join(_escape(a, in_exec=True) for a in argv)


def systemd_unit(exec_start: str, environment: Mapping[str, str] | None = None, home: str = DEFAULT_HOME) -> str:
    """The user unit. `exec_start` is already in unit syntax (see `exec_line`), so the
    checked-in default can say `%h/.local/bin/chkdd` while an install writes absolute paths."""
    env_lines = "".join(f"Environment={_escape(f'{k}={v}', in_exec=False)}\n" for k, v in (environment or {}).items())
    return f"""{HOME_MARK}{home}
# chkd daemon as a systemd user service. `chkdctl service install` writes this file with the
# paths of the installation it runs from; by hand:
#   cp systemd/chkd.service ~/.config/systemd/user/   (point ExecStart at `command -v chkdd`)
#   systemctl --user daemon-reload && systemctl --user enable --now chkd
[Unit]
Description=chkd daemon (coordinates parallel coding agents)

[Service]
# chkdd says READY=1 once it serves, WATCHDOG=1 from its timer loop, STOPPING=1 on shutdown.
Type=notify
NotifyAccess=main
ExecStart={exec_start}
{env_lines}Restart=on-failure
RestartSec=2
WatchdogSec={WATCHDOG_SEC}
# Workers (chkd-shim and their agents) must outlive a daemon restart: stop only chkdd itself.
KillMode=process
TimeoutStopSec=15

[Install]
WantedBy=default.target
"""


def home_of_unit(text: str) -> str | None:
    """The home a unit chkd wrote serves (`default` or an absolute path); None if not chkd's."""
    first = text.split("\n", 1)[0]
    return first[len(HOME_MARK) :].strip() if first.startswith(HOME_MARK) else None


def launchd_plist(argv: Sequence[str], log_path: str, environment: Mapping[str, str] | None = None) -> bytes:
    """The launchd user agent: started at login, restarted when it exits with a failure,
    output to the state directory, workers left alone when chkdd stops."""
    job: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(argv),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        # workers (chkd-shim and their agents) outlive a daemon restart
        "AbandonProcessGroup": True,
        "WorkingDirectory": "/",
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
        "ProcessType": "Background",
    }
    if environment:
        job["EnvironmentVariables"] = dict(environment)
    return plistlib.dumps(job, sort_keys=False)


def home_of_plist(data: bytes) -> str | None:
    """The home a plist chkd wrote serves: the `--home` argument, or `default`."""
    try:
        job = plistlib.loads(data)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
        return None
    if not isinstance(job, dict) or job.get("Label") != LAUNCHD_LABEL:
        return None
    argv = [str(a) for a in job.get("ProgramArguments", [])]
    if "--home" in argv[:-1]:
        return argv[argv.index("--home") + 1]
    return DEFAULT_HOME
