"""The merge queue's pure rules, and a daemon killed mid test gate finishing the merge after restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_merge import CONFIG, add_repo, done_worker, events, worker

from chkd.daemon import mergeengine, mergequeue
from chkd.protocol.messages import Merge, MergeShow

from conftest import Daemon, busy_for, git, make_repo, wait_for


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


def test_pick_next_goes_by_priority_then_arrival() -> None:
    queued = [{"id": 3, "priority": 2}, {"id": 1, "priority": 2}, {"id": 7, "priority": 0}, {"id": 2, "priority": 4}]
    assert mergequeue.pick_next(queued)["id"] == 7
    assert mergequeue.pick_next([m for m in queued if m["id"] != 7])["id"] == 1
    assert mergequeue.pick_next([]) is None


def test_steps_after_the_check() -> None:
    clean = mergeengine.Plan("t1", "h", tree="tree", commit="c")
    step = mergequeue.step_after_check
    assert (
        step(mergeengine.Plan("t1", "h", already_in=True), gate=True, review=True, approved=False, tested_base=None)
        == "merged"
    )
    assert (
        step(
            mergeengine.Plan("t1", "h", conflict_files=["a"]), gate=True, review=False, approved=False, tested_base=None
        )
        == "conflict"
    )
    assert step(clean, gate=True, review=True, approved=False, tested_base=None) == "testing"
    assert step(clean, gate=False, review=True, approved=False, tested_base=None) == "awaiting_review"
    assert step(clean, gate=False, review=False, approved=False, tested_base=None) == "landing"
    # approved, target unchanged since the gate passed: land; target moved: test again
    assert step(clean, gate=True, review=True, approved=True, tested_base="t1") == "landing"
    assert step(clean, gate=True, review=True, approved=True, tested_base="t0") == "testing"
    assert mergequeue.step_after_gate(review=True, approved=False) == "awaiting_review"
    assert mergequeue.step_after_gate(review=True, approved=True) == "landing"


def test_transitions() -> None:
    assert mergequeue.can_transition("queued", "checking")
    assert mergequeue.can_transition("awaiting_review", "rejected")
    assert not mergequeue.can_transition("merged", "queued")
    assert not mergequeue.can_transition("conflict", "checking")
    assert not mergequeue.can_transition("queued", "merged")


@pytest.mark.timeout(60)
def test_kill_9_during_the_test_gate_then_the_merge_finishes(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    add_repo(daemon, repo, test_cmd=busy_for(1.5))
    w = done_worker(daemon, repo, "feature", {"feature.txt": "x\n"})
    m = daemon.call(Merge(worker=w.id, strategy="auto")).merge
    wait_for(lambda: daemon.call(MergeShow(id=m.id)).merge.status == "testing", 10, what="the gate")
    daemon.kill()
    daemon.start()
    done = wait_for(
        lambda: (x := daemon.call(MergeShow(id=m.id)).merge).status == "merged" and x,
        30,
        what="the merge to finish after the restart",
    )
    assert git(repo, "rev-parse", "main") == done.result_sha and (repo / "feature.txt").exists()
    assert worker(daemon, w.id).status == "merged"
    assert any(e.data.note == "requeued after a daemon restart" for e in events(daemon, "merge.queued"))
    wait_for(lambda: "chkd-gate-" not in git(repo, "worktree", "list"), 10, what="the old gate worktree to go")


@pytest.mark.timeout(60)
def test_merges_of_different_repositories_run_side_by_side(daemon: Daemon, tmp_path: Path) -> None:
    gate = busy_for(1.5)
    repos = [make_repo(tmp_path / name) for name in ("one", "two")]
    ws = []
    for repo in repos:
        add_repo(daemon, repo, test_cmd=gate)
        ws.append(done_worker(daemon, repo, f"work in {repo.name}", {"f.txt": repo.name}))
    ids = [daemon.call(Merge(worker=w.id, strategy="auto")).merge.id for w in ws]
    for mid in ids:
        wait_for(lambda mid=mid: daemon.call(MergeShow(id=mid)).merge.status == "merged", 20, what=f"merge {mid}")
    kinds = [(e.kind, e.data.merge_id) for e in events(daemon, "merge.")]
    first_merged = min(i for i, (k, _) in enumerate(kinds) if k == "merge.merged")
    testing = {mid for k, mid in kinds[:first_merged] if k == "merge.testing"}
    assert testing == set(ids), kinds  # both gates ran before either landed
