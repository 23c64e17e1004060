"""The merge train (issue 14): K waiting merges stacked, gated once, landed with one CAS; bisected on failure."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
from test_merge import CONFIG, add_repo, done_worker, events

from chkd.protocol.messages import Merge, MergeShow

from conftest import Daemon, git, make_repo, wait_for

#: The gate: counts its runs (outside the repository) and fails when a file named bad*.txt is in the tree.
GATE = (
    "import glob, sys; open(sys.argv[1], 'a').write('run\\n'); bad = glob.glob('bad*.txt'); "
    "print('gate sees', sorted(glob.glob('*.txt'))); print('BROKEN by', bad) if bad else None; "
    "sys.exit(1 if bad else 0)"
)


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


def train_repo(daemon: Daemon, tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "proj", {"README.md": "x\n", "shared.txt": "base\n"})
    runs = tmp_path / "gate-runs"
    add_repo(daemon, repo, test_cmd=[sys.executable, "-c", GATE, str(runs)])
    return repo, runs


def merge_all(daemon: Daemon, worker_ids: list[str]) -> list[Any]:
    ids = [daemon.call(Merge(worker=w, strategy="auto")).merge.id for w in worker_ids]
    final = ("merged", "failed", "conflict")
    return [
        wait_for(
            lambda mid=mid: (x := daemon.call(MergeShow(id=mid)).merge).status in final and x, 30, what=f"merge {mid}"
        )
        for mid in ids
    ]


def gate_runs(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


def landed_subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--first-parent", "--format=%s", "main").splitlines()[:-1][::-1]


def test_four_good_merges_one_gate_run_one_cas_in_priority_order(daemon: Daemon, tmp_path: Path) -> None:
    repo, runs = train_repo(daemon, tmp_path)
    ws = [done_worker(daemon, repo, f"good {p}", {f"good{p}.txt": f"{p}\n"}, priority=p) for p in (3, 0, 2, 1)]
    before = git(repo, "rev-parse", "main")
    ms = merge_all(daemon, [w.id for w in ws])
    assert [m.status for m in ms] == ["merged"] * 4, [m.log for m in ms]
    assert gate_runs(runs) == 1
    # each keeps its own merge commit, stacked in queue (priority) order, landed by one CAS
    assert [s.split(": ")[1].split(")")[0] for s in landed_subjects(repo)] == ["good 0", "good 1", "good 2", "good 3"]
    by_priority = sorted(ms, key=lambda m: int(next(w for w in ws if w.id == m.worker_id).task_title.split()[1]))
    assert git(repo, "rev-parse", f"{by_priority[0].result_sha}^1") == before
    for lower, upper in itertools.pairwise(by_priority):
        assert git(repo, "rev-parse", f"{upper.result_sha}^1") == lower.result_sha
    assert git(repo, "rev-parse", "main") == by_priority[-1].result_sha
    reflog = git(repo, "reflog", "show", "--format=%gs", "refs/heads/main").splitlines()
    assert reflog.count("chkd: merge") == 1
    [train] = events(daemon, "merge.train")
    assert train.data.gate_runs == 1 and sorted(train.data.landing) == sorted(m.id for m in ms)


def test_one_bad_among_four_is_isolated_and_the_other_three_land(daemon: Daemon, tmp_path: Path) -> None:
    repo, runs = train_repo(daemon, tmp_path)
    files = [{"a.txt": "a\n"}, {"b.txt": "b\n"}, {"bad.txt": "oops\n"}, {"d.txt": "d\n"}]
    ws = [done_worker(daemon, repo, f"change {i}", f) for i, f in enumerate(files)]
    ms = merge_all(daemon, [w.id for w in ws])
    assert [m.status for m in ms] == ["merged", "merged", "failed", "merged"], [m.log for m in ms]
    assert "BROKEN by ['bad.txt']" in ms[2].log  # its own gate output
    tree = git(repo, "ls-tree", "--name-only", "main").split()
    assert {"a.txt", "b.txt", "d.txt"} <= set(tree) and "bad.txt" not in tree
    assert gate_runs(runs) == 4  # the stack, two halvings, the rest without the bad one
    assert [s.split(": ")[1].split(")")[0] for s in landed_subjects(repo)] == ["change 0", "change 1", "change 3"]


def test_a_conflict_inside_the_batch_drops_only_that_merge(daemon: Daemon, tmp_path: Path) -> None:
    repo, runs = train_repo(daemon, tmp_path)
    ws = [
        done_worker(daemon, repo, "one", {"shared.txt": "from one\n"}),
        done_worker(daemon, repo, "two", {"shared.txt": "from two\n"}),
        done_worker(daemon, repo, "three", {"c.txt": "c\n"}),
    ]
    ms = merge_all(daemon, [w.id for w in ws])
    assert [m.status for m in ms] == ["merged", "conflict", "merged"], [m.log for m in ms]
    assert ms[1].conflict_files == ["shared.txt"]
    assert git(repo, "show", "main:shared.txt") == "from one" and gate_runs(runs) == 1


@pytest.mark.timeout(90)
def test_kill_9_after_the_trains_cas_loses_nothing(daemon: Daemon, tmp_path: Path) -> None:
    repo, _runs = train_repo(daemon, tmp_path)
    ws = [done_worker(daemon, repo, f"w{i}", {f"w{i}.txt": "x\n"}) for i in range(3)]
    daemon.arm("merge.cas_done")
    ids = [daemon.call(Merge(worker=w.id, strategy="auto")).merge.id for w in ws]
    daemon.wait_dead()
    daemon.start()
    ms = [
        wait_for(
            lambda mid=mid: (x := daemon.call(MergeShow(id=mid)).merge).status == "merged" and x,
            30,
            what=f"merge {mid} after the restart",
        )
        for mid in ids
    ]
    assert len(ms) == 3
    tree = git(repo, "ls-tree", "--name-only", "main").split()
    assert {"w0.txt", "w1.txt", "w2.txt"} <= set(tree)
    assert len(landed_subjects(repo)) == 3  # each landed once
