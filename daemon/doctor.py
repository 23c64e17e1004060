"""The daemon's findings for `chkdctl doctor`, as pure functions: git's version text, worker rows
and process facts in, `Finding`s out (handlers/doctor.py gathers the facts).

Why here and not in the client: only the daemon runs git (its PATH may differ from the
user's shell, as under systemd) and only the daemon may look at processes (psutil).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from chkd.protocol.messages import LIVE_WORKER_STATUSES, Finding

#: `git merge-tree --write-tree` (the conflict check without a checkout) arrived in git 2.38.
MIN_GIT = (2, 38)
GIT_FIX = "install git 2.38 or newer where chkdd finds it (its PATH), then `chkdctl daemon restart`"


def parse_git_version(text: str) -> tuple[int, ...] | None:
    """(2, 39, 5) from "git version 2.39.5" (also "2.39.5.windows.1", "2.40.0-rc1"); None if unreadable."""
    m = re.search(r"git version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return tuple(int(part) for part in m.groups() if part is not None)


def git_finding(version_text: str | None, error: str | None = None) -> Finding:
    if error is not None or version_text is None:
        return Finding("git", "fail", f"chkdd cannot run git: {(error or 'no output').rstrip('.')}.", GIT_FIX)
    version = parse_git_version(version_text)
    shown = version_text.strip().removeprefix("git version ")
    if version is None:
        return Finding("git", "warn", f"chkdd cannot tell which git it runs ({version_text.strip()[:80]!r}).", GIT_FIX)
    if version[:2] < MIN_GIT:
        return Finding(
            "git",
            "fail",
            f"git {shown} is too old: chkd needs 2.38 or newer for `git merge-tree --write-tree`.",
            GIT_FIX,
        )
    return Finding("git", "ok", f"git {shown} (chkd needs 2.38 or newer).")


TMUX_FIX = "install tmux where chkdd finds it (Debian/Ubuntu: apt-get install tmux; macOS: brew install tmux)"


def tmux_finding(path: str | None) -> Finding:
    """Interactive workers (issue 13) run in tmux; without it only detached profiles work."""
    if path is None:
        return Finding(
            "tmux",
            "warn",
            "tmux is not installed where chkdd runs, so interactive profiles "
            "(claude-interactive, interactive = true) cannot start.",
            TMUX_FIX,
        )
    return Finding("tmux", "ok", f"tmux at {path} (for interactive workers).")


def why_stuck(
    row: Mapping[str, Any], agent_alive: bool | None, shim_alive: bool | None, now_ms: int, heartbeat_timeout_ms: int
) -> str | None:
    """Why a worker in a live status has nothing live behind it (None when it looks healthy).

    A worker whose agent's exit is already recorded has no process to watch (it waits for a
    person after `update` or a rejected review), so it is never stuck in this sense.
    """
    if row["status"] not in LIVE_WORKER_STATUSES:
        return None
    if row.get("exit_code") is not None or row.get("exit_signal") is not None:
        return None
    if shim_alive is False and agent_alive is not True:
        return "its shim and agent processes are gone"
    if shim_alive is False:
        return f"its shim (pid {row.get('shim_pid')}) is gone"
    if agent_alive is False and shim_alive is None:
        return f"its agent process (pid {row.get('pid')}) is gone"
    last_beat = row.get("heartbeat_at") or row.get("started_at") or now_ms
    silent = now_ms - last_beat
    if silent > heartbeat_timeout_ms:
        return (
            f"its shim has not heartbeated for {silent // 1000} s (heartbeat_timeout_s {heartbeat_timeout_ms / 1000:g})"
        )
    return None


def worker_findings(
    rows: Iterable[Mapping[str, Any]],
    facts: Mapping[str, tuple[bool | None, bool | None]],
    now_ms: int,
    heartbeat_timeout_ms: int,
) -> list[Finding]:
    """One `fail` per live worker with nothing live behind it, else one `ok`. `facts`: id → (agent, shim) alive."""
    found: list[Finding] = []
    live = 0
    for row in rows:
        if row["status"] not in LIVE_WORKER_STATUSES:
            continue
        live += 1
        agent, shim = facts.get(row["id"], (None, None))
        why = why_stuck(row, agent, shim, now_ms, heartbeat_timeout_ms)
        if why:
            found.append(
                Finding(
                    "workers",
                    "fail",
                    f"Worker {row['id']} is {row['status']} but {why}; the reaper should have marked it dead.",
                    f"chkdctl abort {row['id']}",
                )
            )
    if not found:
        found.append(
            Finding(
                "workers",
                "ok",
                f"{live} live worker(s), each with its processes and heartbeats." if live else "No live workers.",
            )
        )
    return found
