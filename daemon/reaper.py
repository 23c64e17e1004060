"""The reaper's decisions, as pure functions: worker rows + the time + process facts → actions.

Why pure: liveness rules are where subtle bugs hide (a paused worker is not stalled, a
worker whose shim was just started has no heartbeat yet, a dead agent under a live shim
gets a moment to report its exit code). Keeping the rules free of I/O lets the tests
walk every case directly; `daemon/liveness.py` gathers the facts (store rows, psutil)
and carries the actions out.

Two kinds of liveness (DESIGN.md): the shim's heartbeats prove the processes live, the
agent's activity proves it is getting somewhere. No heartbeat or a vanished process is
`dead`; alive but idle is `stalled`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chkd.protocol.messages import LIVE_WORKER_STATUSES, SHIM_RECONNECT_S

#: States in which the reaper watches a worker (a paused worker's shim still heartbeats).
WATCHED = LIVE_WORKER_STATUSES
#: A dead agent under a live shim: the least time the shim gets to report the exit code itself
#: (it normally does at once; after a daemon restart its retry backoff can take seconds, so
#: `from_config` allows a whole heartbeat timeout: a shim that stays silent that long is dead anyway).
EXIT_REPORT_GRACE_MS = 1500


@dataclass(frozen=True)
class Limits:
    """The config values the rules need, in milliseconds.

    `watching_since_ms`: when the daemon last began watching without a gap — its start, or the end
    of a freeze or suspend. Time before it is not evidence against a worker: silence and idleness
    are measured from it at the earliest, and a shim gets `reconnect_ms` more to get through."""

    heartbeat_timeout_ms: int
    stall_timeout_ms: int
    on_stall: Literal["notify", "abort", "requeue"] = "notify"
    exit_grace_ms: int = EXIT_REPORT_GRACE_MS
    watching_since_ms: int = 0
    reconnect_ms: int = int(SHIM_RECONNECT_S * 1000)

    @classmethod
    def from_config(cls, config: Any, watching_since_ms: int = 0) -> Limits:
        return cls(
            heartbeat_timeout_ms=int(config.heartbeat_timeout_s * 1000),
            stall_timeout_ms=int(config.stall_timeout_s * 1000),
            on_stall=config.on_stall,
            exit_grace_ms=max(EXIT_REPORT_GRACE_MS, int(config.heartbeat_timeout_s * 1000)),
            watching_since_ms=watching_since_ms,
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
class SpawnInterrupted:
    """A spawn the daemon was away for (killed or frozen mid-spawn) whose shim never reported:
    undo it (`error`, task back without counting an attempt, unused worktree removed)."""

    worker_id: str
    reason: str


@dataclass(frozen=True)
class Stalled:
    worker_id: str
    idle_s: int
    then: Literal["notify", "abort", "requeue"] = "notify"


@dataclass(frozen=True)
class Resumed:
    """A stalled worker shows activity again: back to `working`."""

    worker_id: str


Action = Dead | SpawnInterrupted | Stalled | Resumed


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
        return Dead(wid, f"the shim (pid {row.get('shim_pid')}) is gone; its agent was stopped", "shim_gone", kill=True)
    if agent is False and shim is None:
        return Dead(wid, f"the agent process (pid {row.get('pid')}) is gone (no exit was reported)", "agent_gone")
    if agent is False and facts.agent_gone_since is not None and now - facts.agent_gone_since >= limits.exit_grace_ms:
        return Dead(
            wid,
            f"the agent process (pid {row.get('pid')}) is gone and its shim did not report the exit",
            "agent_gone",
            kill=True,
        )
    last_beat = row.get("heartbeat_at") or row.get("started_at") or now
    if silent_too_long(last_beat, now, limits):
        silent = now - last_beat
        if (
            not row.get("heartbeat_at")
            and status == "starting"
            and (row.get("started_at") or 0) < limits.watching_since_ms
        ):
            return SpawnInterrupted(
                wid,
                f"chkdd stopped while the worker was starting and its shim never reported "
                f"(waited {_secs(now - limits.watching_since_ms)})",
            )
        what = "no heartbeat from the shim" if row.get("heartbeat_at") else "the shim never reported"
        return Dead(
            wid,
            f"{what} for {_secs(silent)} (heartbeat_timeout_s {_secs(limits.heartbeat_timeout_ms)})",
            "timeout",
            kill=True,
        )
    return _judge_activity(row, now, limits)


def silent_too_long(last_beat: int, now: int, limits: Limits) -> bool:
    """Silence counts only while the daemon was watching: from `watching_since_ms` at the earliest,
    with the shim's reconnect time on top when its last beat predates it."""
    if last_beat >= limits.watching_since_ms:
        return now - last_beat > limits.heartbeat_timeout_ms
    return now - limits.watching_since_ms > limits.heartbeat_timeout_ms + limits.reconnect_ms


def exit_reported(row: Mapping[str, Any]) -> bool:
    """The agent already exited and its shim said so. Such a worker set back to `working`
    (by `update` leaving conflict markers, or a rejected review) waits for a person or a new
    agent in its worktree: there is no process to watch, so it is never `dead` — but it still
    turns `stalled` when nothing happens there for the stall timeout."""
    return row.get("exit_code") is not None or row.get("exit_signal") is not None


def _judge_activity(row: Mapping[str, Any], now: int, limits: Limits) -> Action | None:
    """Stalled when idle too long while the daemon watched; back to working on real activity only."""
    status = row["status"]
    if status in ("working", "stalled"):
        last_act = max(row.get("activity_at") or 0, row.get("started_at") or 0) or now
        idle = now - last_act
        if status == "working" and now - max(last_act, limits.watching_since_ms) > limits.stall_timeout_ms:
            return Stalled(row["id"], idle // 1000, limits.on_stall)
        if status == "stalled" and idle <= limits.stall_timeout_ms:
            return Resumed(row["id"])
    return None


def judge_at_start(row: Mapping[str, Any], facts: ProcFacts) -> Dead | SpawnInterrupted | None:
    """Start-up reconciliation: a watched worker whose processes are gone is dead; one whose shim
    still runs (same pid and create time) stays — its shim reconnects, heartbeats resume, and it
    reports an agent exit that happened while the daemon was down. A spawn that had not yet
    recorded its worktree cannot have started anything: it is undone at once. (One that had may
    have started its shim: the reaper waits for it, then undoes the spawn if it stays silent.)"""
    if row["status"] not in WATCHED or exit_reported(row):
        return None
    if row["status"] == "starting" and not row.get("worktree_path") and not row.get("pid"):
        return SpawnInterrupted(row["id"], "chkdd stopped before the worker's worktree was made")
    shim, agent = facts.shim_alive, facts.agent_alive
    reason = "its processes were gone when chkdd restarted"
    if shim is False:
        return Dead(row["id"], reason, "gone", kill=agent is True)
    if shim is None and agent is False:
        return Dead(row["id"], reason, "gone")
    if shim is None and agent is None and row["status"] != "starting":
        return Dead(row["id"], "no processes were ever recorded for it when chkdd restarted", "gone")
    return None


def decide(rows: Iterable[Mapping[str, Any]], now: int, limits: Limits, facts: Mapping[str, ProcFacts]) -> list[Action]:
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
