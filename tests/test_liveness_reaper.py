"""The reaper's pure rules: dead vs stalled vs fine, for every combination that matters."""

from __future__ import annotations

from typing import Any

import pytest

from chkd.daemon import reaper
from chkd.daemon.reaper import Dead, Limits, ProcFacts, Resumed, Stalled, decide, judge

NOW = 1_000_000_000
LIM = Limits(heartbeat_timeout_ms=3_000, stall_timeout_ms=10_000, on_stall="notify")
ALIVE = ProcFacts(agent_alive=True, shim_alive=True)


def row(status: str = "working", **kw: Any) -> dict[str, Any]:
    base = {
        "id": "w1",
        "status": status,
        "pid": 100,
        "shim_pid": 99,
        "started_at": NOW - 60_000,
        "heartbeat_at": NOW - 500,
        "activity_at": NOW - 1_000,
    }
    return {**base, **kw}


def test_healthy_worker_needs_nothing() -> None:
    assert judge(row(), NOW, LIM, ALIVE) is None


@pytest.mark.parametrize("status", ["done", "merging", "merged", "conflict", "error", "dead", "aborted"])
def test_final_and_merge_states_are_not_watched(status: str) -> None:
    assert judge(row(status, heartbeat_at=0, activity_at=0), NOW, LIM, ProcFacts(False, False)) is None


def test_no_heartbeat_for_the_timeout_is_dead_and_kills_leftovers() -> None:
    action = judge(row(heartbeat_at=NOW - 3_001), NOW, LIM, ALIVE)
    assert isinstance(action, Dead) and action.cause == "timeout" and action.kill
    assert "no heartbeat from the shim for 3.0 s" in action.reason
    assert judge(row(heartbeat_at=NOW - 2_999), NOW, LIM, ALIVE) is None


def test_a_shim_that_never_reported_times_out_from_its_start() -> None:
    action = judge(row("starting", heartbeat_at=None, pid=None, started_at=NOW - 4_000), NOW, LIM, ProcFacts())
    assert isinstance(action, Dead) and "never reported" in action.reason
    assert judge(row("starting", heartbeat_at=None, pid=None, started_at=NOW - 1_000), NOW, LIM, ProcFacts()) is None


def test_paused_worker_is_watched_for_heartbeats_but_never_stalls() -> None:
    assert judge(row("paused", activity_at=NOW - 999_999), NOW, LIM, ALIVE) is None
    assert isinstance(judge(row("paused", heartbeat_at=NOW - 5_000), NOW, LIM, ALIVE), Dead)


def test_both_processes_gone_is_dead_at_once() -> None:
    action = judge(row(), NOW, LIM, ProcFacts(agent_alive=False, shim_alive=False))
    assert isinstance(action, Dead) and action.cause == "gone" and not action.kill


def test_shim_gone_with_agent_alive_is_dead_and_the_agent_is_stopped() -> None:
    action = judge(row(), NOW, LIM, ProcFacts(agent_alive=True, shim_alive=False))
    assert isinstance(action, Dead) and action.cause == "shim_gone" and action.kill
    assert "shim (pid 99)" in action.reason


def test_agent_gone_under_a_live_shim_gets_a_moment_to_report_its_exit() -> None:
    early = ProcFacts(agent_alive=False, shim_alive=True, agent_gone_since=NOW - 500)
    assert judge(row(), NOW, LIM, early) is None
    late = ProcFacts(agent_alive=False, shim_alive=True, agent_gone_since=NOW - reaper.EXIT_REPORT_GRACE_MS)
    action = judge(row(), NOW, LIM, late)
    assert isinstance(action, Dead) and action.cause == "agent_gone" and "did not report" in action.reason


def test_agent_gone_without_a_known_shim_is_dead() -> None:
    action = judge(row(shim_pid=None), NOW, LIM, ProcFacts(agent_alive=False, shim_alive=None))
    assert isinstance(action, Dead) and "pid 100" in action.reason


def test_alive_but_idle_past_the_stall_timeout_is_stalled_with_the_configured_follow_up() -> None:
    idle = row(activity_at=NOW - 10_001)
    action = judge(idle, NOW, LIM, ALIVE)
    assert action == Stalled("w1", 10, "notify")
    requeue = Limits(3_000, 10_000, "requeue")
    assert judge(idle, NOW, requeue, ALIVE) == Stalled("w1", 10, "requeue")
    assert judge(row(activity_at=NOW - 9_000), NOW, LIM, ALIVE) is None


def test_no_activity_ever_counts_from_the_start() -> None:
    assert isinstance(judge(row(activity_at=None, started_at=NOW - 11_000), NOW, LIM, ALIVE), Stalled)
    assert judge(row(activity_at=None, started_at=NOW - 5_000), NOW, LIM, ALIVE) is None


def test_stalled_worker_with_fresh_activity_resumes_and_idle_one_stays() -> None:
    assert judge(row("stalled", activity_at=NOW - 100), NOW, LIM, ALIVE) == Resumed("w1")
    assert judge(row("stalled", activity_at=NOW - 20_000), NOW, LIM, ALIVE) is None


def test_dead_beats_stalled_when_both_apply() -> None:
    action = judge(row(heartbeat_at=NOW - 9_000, activity_at=NOW - 99_000), NOW, LIM, ALIVE)
    assert isinstance(action, Dead)


def test_decide_keeps_row_order_and_skips_healthy() -> None:
    rows = [row(id="a"), row(id="b", heartbeat_at=NOW - 9_000), row(id="c", activity_at=NOW - 20_000)]
    actions = decide(rows, NOW, LIM, {"a": ALIVE, "b": ALIVE, "c": ALIVE})
    assert [a.worker_id for a in actions] == ["b", "c"]
    assert isinstance(actions[0], Dead) and isinstance(actions[1], Stalled)


def test_limits_from_config() -> None:
    from chkd.protocol.config import Config

    lim = Limits.from_config(Config(heartbeat_s=1, heartbeat_timeout_s=2.5, stall_timeout_s=7, on_stall="abort"))
    assert (lim.heartbeat_timeout_ms, lim.stall_timeout_ms, lim.on_stall) == (2_500, 7_000, "abort")
    assert lim.exit_grace_ms == 2_500  # a shim retrying its exit report after a restart is not cut short


def test_identity_needs_the_same_create_time() -> None:
    assert reaper.identity_matches(1000.0, 1000.0)
    assert not reaper.identity_matches(1003.0, 1000.0)  # a reused pid
    assert not reaper.identity_matches(None, 1000.0)


def test_at_start_a_live_shim_keeps_its_worker() -> None:
    assert reaper.judge_at_start(row(heartbeat_at=0), ALIVE) is None  # an old heartbeat is no reason
    # its agent ended while the daemon was down: the shim will report the exit itself
    assert reaper.judge_at_start(row(), ProcFacts(agent_alive=False, shim_alive=True)) is None


def test_at_start_gone_processes_are_dead() -> None:
    both = reaper.judge_at_start(row(), ProcFacts(agent_alive=False, shim_alive=False))
    assert isinstance(both, Dead) and "when chkdd restarted" in both.reason and not both.kill
    orphan = reaper.judge_at_start(row(), ProcFacts(agent_alive=True, shim_alive=False))
    assert isinstance(orphan, Dead) and orphan.kill  # an agent without its shim is stopped
    assert isinstance(reaper.judge_at_start(row(shim_pid=None), ProcFacts(agent_alive=False)), Dead)


def test_at_start_a_starting_worker_without_pids_gets_its_heartbeat_timeout() -> None:
    recorded = row("starting", pid=None, shim_pid=None, worktree_path="/x/proj-T-1")
    assert reaper.judge_at_start(recorded, ProcFacts()) is None  # its shim may be about to say hello
    assert isinstance(reaper.judge_at_start(row("working", pid=None, shim_pid=None), ProcFacts()), Dead)
    assert reaper.judge_at_start(row("dead"), ProcFacts(False, False)) is None


def test_at_start_a_spawn_cut_off_before_its_worktree_was_recorded_is_undone_at_once() -> None:
    """Nothing can have started (the shim is only launched after the names are recorded)."""
    action = reaper.judge_at_start(row("starting", pid=None, shim_pid=None, worktree_path=None), ProcFacts())
    assert isinstance(action, reaper.SpawnInterrupted) and "before the worker's worktree was made" in action.reason


def test_a_spawn_the_daemon_was_away_for_is_undone_not_counted_when_its_shim_stays_silent() -> None:
    lim = Limits(3_000, 10_000, watching_since_ms=NOW - 3_000 - lim_reconnect() - 1)
    starting = row(
        "starting", pid=None, shim_pid=None, heartbeat_at=None, started_at=NOW - 60_000, worktree_path="/x/proj-T-1"
    )
    action = judge(starting, NOW, lim, ProcFacts())
    assert isinstance(action, reaper.SpawnInterrupted)
    # within the reconnect allowance it still waits for the shim's hello
    assert judge(starting, NOW, Limits(3_000, 10_000, watching_since_ms=NOW - 3_000), ProcFacts()) is None


def lim_reconnect() -> int:
    return Limits(1, 1).reconnect_ms


def test_time_the_daemon_did_not_watch_is_not_evidence_against_a_worker() -> None:
    """A freeze or suspend ended 1 s ago: a heartbeat 40 s old is no reason to judge (the shim is
    reconnecting), and 40 s without activity is no stall; real silence after the gap still counts."""
    since = NOW - 1_000
    lim = Limits(3_000, 10_000, watching_since_ms=since)
    old = row(heartbeat_at=NOW - 40_000, activity_at=NOW - 40_000, started_at=NOW - 90_000)
    assert judge(old, NOW, lim, ALIVE) is None
    later = NOW + 3_000 + lim.reconnect_ms + 1
    action = judge(old, later, lim, ALIVE)
    assert isinstance(action, Dead) and action.cause == "timeout"
    assert f"for {(later - old['heartbeat_at']) // 1000} s" in action.reason  # the true silence is reported
    # the stall clock restarts too, but `stalled` goes back to `working` only on real activity
    assert judge(row("stalled", activity_at=NOW - 40_000), NOW, lim, ALIVE) is None
    idle = row(activity_at=NOW - 40_000, started_at=NOW - 90_000)
    assert judge({**idle, "heartbeat_at": since + 9_500}, since + 9_999, lim, ALIVE) is None
    stalled = judge({**idle, "heartbeat_at": since + 9_500}, since + 10_001, lim, ALIVE)
    assert isinstance(stalled, Stalled) and stalled.idle_s == (since + 10_001 - idle["activity_at"]) // 1000


def test_a_worker_whose_agent_exit_was_reported_is_never_dead_but_still_stalls() -> None:
    """`update` with conflict markers, or a rejected review, sets a finished worker back to
    `working`: its agent exited long ago, so there is nothing to reap — only idleness to report."""
    gone = ProcFacts(agent_alive=False, shim_alive=False)
    finished = row(exit_code=0, heartbeat_at=NOW - 60_000, activity_at=NOW - 1_000)
    assert judge(finished, NOW, LIM, gone) is None
    assert reaper.judge_at_start(finished, gone) is None
    idle = row(exit_code=0, heartbeat_at=NOW - 60_000, activity_at=NOW - 11_000, started_at=NOW - 90_000)
    assert isinstance(judge(idle, NOW, LIM, gone), Stalled)
    # without a reported exit the same facts are a dead worker
    assert isinstance(judge(row(heartbeat_at=NOW - 60_000), NOW, LIM, gone), Dead)
