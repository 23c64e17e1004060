"""The tmux command lines chkd runs, as argument lists: one place for every caller.

Interactive workers run in tmux sessions on chkd's **own** tmux server, whose socket is
`<run dir>/tmux.sock` (`Paths.tmux_socket`): never the user's default server, and private
like the rest of the run directory. The server starts with `-f /dev/null`, so a person's
`~/.tmux.conf` (plugins, hooks, another prefix key) never runs against agents and the keys
are tmux's defaults: `C-b d` detaches. One session per worker, named after the worker id.
Targets use `=NAME:` (exact session name) so `w1` never matches `w12`.

Pure functions: the shim (client side) and the daemon (off-loop) both run these argv
lists, never through a shell. The one string tmux itself hands to `/bin/sh` is the
`pipe-pane` command that appends the pane's output to the worker log; its only variable
part, the log path, is quoted.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

TMUX = "tmux"
#: The pane's size while nobody is attached (an attached terminal resizes it to its own).
WIDTH, HEIGHT = 160, 48
#: Environment variables that would make tmux (or an agent inside the pane) talk to another server.
OUTER_TMUX_VARS = ("TMUX", "TMUX_PANE")


def base(socket: str) -> list[str]:
    return [TMUX, "-S", socket, "-f", "/dev/null"]


def target(session: str) -> str:
    """The session's (only) pane, matched by its exact name."""
    return f"={session}:"


def new_session(
    socket: str, session: str, cwd: str, command: Sequence[str], log_path: str, width: int = WIDTH, height: int = HEIGHT
) -> list[str]:
    """A detached session running `command` (two or more arguments, so tmux executes it directly,
    not through a shell), its output appended to `log_path` from the first byte."""
    if len(command) < 2:
        raise ValueError("the pane command needs at least two arguments (one would go through sh -c)")
    return [
        *base(socket),
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        str(width),
        "-y",
        str(height),
        "-c",
        cwd,
        "--",
        *command,
        ";",
        "pipe-pane",
        "-O",
        "-t",
        target(session),
        f"exec cat >> {shlex.quote(log_path)}",
    ]


def capture(socket: str, session: str, lines: int) -> list[str]:
    """The pane's text now (plus history up to `lines` back), wrapped lines joined."""
    return [*base(socket), "capture-pane", "-p", "-J", "-t", target(session), "-S", f"-{max(0, lines)}"]


def send_keys(socket: str, session: str, text: str, enter: bool = True) -> list[str]:
    """Type `text` literally (no key names: `Enter` typed is the word Enter), then Enter."""
    argv = [*base(socket)]
    if text:
        argv += ["send-keys", "-t", target(session), "-l", "--", text]
    if enter:
        argv += ([";"] if text else []) + ["send-keys", "-t", target(session), "Enter"]
    return argv


def attach(socket: str, session: str, read_only: bool = False) -> list[str]:
    """Attach the calling terminal; read-only clients neither type nor resize the agent's window."""
    flags = ["-f", "read-only,ignore-size"] if read_only else []
    return [*base(socket), "attach-session", *flags, "-t", f"={session}"]


def has_session(socket: str, session: str) -> list[str]:
    return [*base(socket), "has-session", "-t", f"={session}"]


def kill_session(socket: str, session: str) -> list[str]:
    return [*base(socket), "kill-session", "-t", f"={session}"]


def visible_tail(text: str, lines: int) -> str:
    """The last `lines` lines of a captured screen, without the empty rows below the cursor."""
    rows = text.rstrip("\n").split("\n")
    while rows and not rows[-1].strip():
        rows.pop()
    return "\n".join(rows[-lines:]) + ("\n" if rows else "")
