"""chkd-pane: the leader of an interactive worker's tmux pane; the agent runs as its child.

Why a separate leader: the tmux server sends SIGCONT straight back to a pane leader it sees
stopped (checked with tmux 3.3), so `chkdctl pause` could not freeze an agent that led its
pane. Here the agent gets its own process group — the terminal's foreground group, so it
reads the keyboard and gets Ctrl-C — and chkd signals that group only; this leader stays
running, and tmux never sees a stopped pane.

The shim starts `python -P -m chkd.client.pane --spec FILE` as the pane's command. The spec
(JSON, 0600, removed once read: it holds the agent's environment) gives argv, cwd, env and
the status file. The status file gets `{"agent_pid", "agent_started", "pane_pid"}` once
the agent runs, then `"exit_code"`/`"signal"` when it ends: the shim (which is not the
agent's parent) learns identity and exit from it. A hangup (the session killed) ends the
agent, not this leader, so the exit is still recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from .procid import create_time

#: The signals a pane leader must survive so it can always record the agent's exit.
IGNORED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTOU, signal.SIGTTIN)


def write_status(path: str, record: dict[str, Any]) -> None:
    """Atomically (write, then rename), so the shim never reads half a record."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, path)


def _child(argv: list[str], cwd: str, env: dict[str, str]) -> None:
    """In the forked child: own process group, the terminal's foreground, then the agent."""
    try:
        os.setpgid(0, 0)
        if os.isatty(0):
            os.tcsetpgrp(0, os.getpgrp())  # SIGTTOU is still ignored here (inherited), as it must be
        for sig in IGNORED:
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(cwd)
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        print(f"chkd-pane: cannot start {argv[0]}: {exc}", file=sys.stderr, flush=True)
    os._exit(127)


def run(spec: dict[str, Any]) -> int:
    argv, cwd, status = list(spec["argv"]), spec["cwd"], spec["status"]
    env = dict(spec["env"])
    for name in ("TERM", "TMUX", "TMUX_PANE", "COLORTERM"):  # what the terminal says about itself
        if name in os.environ:
            env[name] = os.environ[name]
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        _child(argv, cwd, env)
    try:
        os.setpgid(pid, pid)  # both sides set it, so neither can run before the group exists
    except OSError:
        pass  # the child already did it (or already exec'd)
    info = {
        "agent_pid": pid,
        "agent_started": create_time(pid),
        "pane_pid": os.getpid(),
        "pane_started": create_time(os.getpid()),
    }
    write_status(status, info)
    while True:
        try:
            _, wait_status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            wait_status = None
            break
    code = os.waitstatus_to_exitcode(wait_status) if wait_status is not None else None
    exit_code: int | None = code if code is None or code >= 0 else None
    signum: int | None = -code if code is not None and code < 0 else None
    write_status(status, {**info, "exit_code": exit_code, "signal": signum, "at": int(time.time() * 1000)})
    return 0 if exit_code == 0 else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="chkd-pane", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, help="the JSON spec the shim wrote (removed once read)")
    args = parser.parse_args(argv)
    with open(args.spec, encoding="utf-8") as fh:
        spec = json.load(fh)
    os.unlink(args.spec)
    sys.exit(run(spec))


if __name__ == "__main__":
    main()
