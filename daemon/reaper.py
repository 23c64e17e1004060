"""The reaper's decisions, as pure functions: worker rows + the time + process facts → actions.

Why pure: liveness rules are where subtle bugs hide (a paused worker is not stalled, a
worker whose shim was just started has no heartbeat yet, a dead agent under a live shim
gets a moment to report its exit code). Keeping the rules free of I/O lets the tests
walk every case directly; `handlers/liveness.py` gathers the facts (store rows, psutil)
and carries the actions out.

Two kinds of liveness (DESIGN.md): the shim's heartbeats prove the processes live, the
agent's activity proves it is getting somewhere. No heartbeat or a vanished process is
`dead`; alive but idle is `stalled`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chkd.protocol.messages import LIVE_WORKER_STATUSES

#: States in which the reaper watches a worker (a paused worker's shim still heartbeats).
WATCHED = LIVE_WORKER_STATUSES
#: A dead agent under a live shim: the least time the shim gets to report the exit code itself
#: (it normally does at once; after a daemon restart its retry backoff can take seconds, so
#: `from_config` allows a whole heartbeat timeout: a shim that stays silent that long is dead anyway).
EXIT_REPORT_GRACE_MS = 1500


@dataclass(frozen=True)
class Limits:
    """The config values the rules need, in milliseconds."""

    heartbeat_timeout_ms: int
    stall_timeout_ms: int
    on_stall: Literal["notify", "abort", "requeue"] = "notify"
    exit_grace_ms: int = EXIT_REPORT_GRACE_MS

    @classmethod
    def from_config(cls, config: Any) -> Limits:
        return cls(
            heartbeat_timeout_ms=int(config.heartbeat_timeout_s * 1000),
            stall_timeout_ms=int(config.stall_timeout_s * 1000),
            on_stall=config.on_stall,
            exit_grace_ms=max(EXIT_REPORT_GRACE_MS, int(config.heartbeat_timeout_s * 1000)),
        )


@dataclass(frozen=True)
class ProcFacts:
    """What psutil says about a worker's processes. None = unknown (no pid recorded yet)."""

    agent_alive: bool | None = None
    shim_alive: bool | None = None
    #: When the agent was first seen gone while its shim lived (ms), for the exit-report grace.
    agent_gone_since: int | None = None


@dataclass(frozen=True)
class Dead:
    """Mark the worker dead, requeue its task; `kill` = stop what is left of its processes."""

    worker_id: str
    reason: str
    cause: Literal["timeout", "gone", "shim_gone", "agent_gone"]
    kill: bool = False


@dataclass(frozen=True)
class Stalled:
    worker_id: str
    idle_s: int
    then: Literal["notify", "abort", "requeue"] = "notify"


@dataclass(frozen=True)
class Resumed:
    """A stalled worker shows activity again: back to `working`."""

    worker_id: str


Action = Dead | Stalled | Resumed


def _secs(ms: int) -> str:
    s = ms / 1000
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def judge(row: Mapping[str, Any], now: int, limits: Limits, facts: ProcFacts) -> Action | None:
    """The one action (if any) a worker row calls for at `now`."""
    status = row["status"]
    if status not in WATCHED:
        return None
    wid = row["id"]
    if exit_reported(row):
        return _judge_activity(row, now, limits)
    shim, agent = facts.shim_alive, facts.agent_alive
    if shim is False and agent is not True:
        return Dead(wid, "the shim and agent processes are gone (no exit was reported)", "gone")
    if shim is False:
        return Dead(wid, f"the shim (pid {row.get('shim_pid')}) is gone; its agent was stopped", "shim_gone",
                    kill=True)
    if agent is False and shim is None:
        return Dead(wid, f"the agent process (pid {row.get('pid')}) is gone (no exit was reported)", "agent_gone")
    if agent is False and facts.agent_gone_since is not None and now - facts.agent_gone_since >= limits.exit_grace_ms:
        return Dead(wid, f"the agent process (pid {row.get('pid')}) is gone and its shim did not report the exit",
                    "agent_gone", kill=True)
    last_beat = row.get("heartbeat_at") or row.get("started_at") or now
    silent = now - last_beat
    if silent > limits.heartbeat_timeout_ms:
        what = "no heartbeat from the shim" if row.get("heartbeat_at") else "the shim never reported"
        return Dead(wid, f"{what} for {_secs(silent)} (heartbeat_timeout_s {_secs(limits.heartbeat_timeout_ms)})",
                    "timeout", kill=True)
    return _judge_activity(row, now, limits)


def exit_reported(row: Mapping[str, Any]) -> bool:
    """The agent already exited and its shim said so. Such a worker set back to `working`
    (by `update` leaving conflict markers, or a rejected review) waits for a person or a new
    agent in its worktree: there is no process to watch, so it is never `dead` — but it still
    turns `stalled` when nothing happens there for the stall timeout."""
    return row.get("exit_code") is not None or row.get("exit_signal") is not None


def _judge_activity(row: Mapping[str, Any], now: int, limits: Limits) -> Action | None:
    status = row["status"]
    if status in ("working", "stalled"):
        last_act = max(row.get("activity_at") or 0, row.get("started_at") or 0) or now
        idle = now - last_act
        if status == "working" and idle > limits.stall_timeout_ms:
            return Stalled(row["id"], idle // 1000, limits.on_stall)
        if status == "stalled" and idle <= limits.stall_timeout_ms:
            return Resumed(row["id"])
    return None


def judge_at_start(row: Mapping[str, Any], facts: ProcFacts) -> Dead | None:
    """Start-up reconciliation: a watched worker whose processes are gone is dead; one whose shim
    still runs (same pid and create time) stays — its shim reconnects, heartbeats resume, and it
    reports an agent exit that happened while the daemon was down."""
    if row["status"] not in WATCHED or exit_reported(row):
        return None
    shim, agent = facts.shim_alive, facts.agent_alive
    reason = "its processes were gone when chkdd restarted"
    if shim is False:
        return Dead(row["id"], reason, "gone", kill=agent is True)
    if shim is None and agent is False:
        return Dead(row["id"], reason, "gone")
    if shim is None and agent is None and row["status"] != "starting":
        return Dead(row["id"], "no processes were ever recorded for it when chkdd restarted", "gone")
    return None


def decide(
    rows: Iterable[Mapping[str, Any]], now: int, limits: Limits, facts: Mapping[str, ProcFacts]
) -> list[Action]:
    """Every action the watched workers call for, in row order."""
    actions: list[Action] = []
    for row in rows:
        action = judge(row, now, limits, facts.get(row["id"], ProcFacts()))
        if action is not None:
            actions.append(action)
    return actions


def identity_matches(create_time: float | None, recorded: float | None, tolerance: float = 0.05) -> bool:
    """Same process = same pid and the same create time (pids are reused)."""
    if create_time is None or recorded is None:
        return False
    return abs(create_time - recorded) <= tolerance
