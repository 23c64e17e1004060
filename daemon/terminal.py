"""The daemon's side of interactive workers: tmux calls made off-loop (via `ctx.submit`).

Every function here blocks (a tmux client round trip, a file read) and never touches the
store; the handlers in `handlers/terminal.py` run them off the loop and record the outcome.
Failures become one sentence (`ChkdError`), never a traceback.

Events of this area (protocol/events.py): `WorkerInput` (how: send | attach); the `waiting`
status itself is a `WorkerStatusChanged` (to "waiting", with its `question`).
"""

from __future__ import annotations

import shutil
import subprocess

from chkd.protocol import tmux
from chkd.protocol.errors import ChkdError

TIMEOUT_S = 10.0


def require_tmux() -> None:
    """Refuse an interactive spawn up front when there is no tmux to run it in."""
    if shutil.which(tmux.TMUX) is None:
        raise ChkdError(
            "refused",
            "Interactive workers run in tmux, and tmux is not installed where chkdd runs.",
            "Install it (Debian/Ubuntu: apt-get install tmux; macOS: brew install tmux).",
        )


def _run(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL, cwd="/", errors="replace"
        )
    except FileNotFoundError:
        raise ChkdError("refused", "tmux is not installed where chkdd runs.") from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise ChkdError("internal", f"tmux could not {what}: {exc}.") from None
    if proc.returncode != 0:
        problem = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        if "can't find" in problem or "no server running" in problem or "session not found" in problem:
            raise ChkdError("not_found", f"The tmux session is gone ({problem}).")
        raise ChkdError("internal", f"tmux could not {what}: {problem}.")
    return proc.stdout


def capture(socket: str, session: str, lines: int) -> str:
    """The pane's screen as text (no escapes), its last `lines` non-empty-tail lines."""
    return tmux.visible_tail(_run(tmux.capture(socket, session, lines), "capture the screen"), lines)


def type_keys(socket: str, session: str, text: str, enter: bool) -> None:
    _run(tmux.send_keys(socket, session, text, enter), "type into the session")


def end_session(socket: str, session: str) -> bool:
    """Kill a given-up interactive worker's tmux session (its agent gets SIGHUP); True if there was one.
    Only chkd's own server, only the session named after a worker chkd recorded as interactive."""
    try:
        _run(tmux.kill_session(socket, session), "end the session")
    except ChkdError:
        return False
    return True


def log_tail(path: str, lines: int) -> str:
    """The last `lines` lines of a worker log (read from its end: logs can be large)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max(65536, lines * 512)))
            data = fh.read()
    except FileNotFoundError:
        return ""
    rows = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(rows[-lines:]) + ("\n" if rows else "")
