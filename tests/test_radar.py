"""The conflict radar: overlaps of live workers (uncommitted edits included), predicted conflicts, events."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from chkd.daemon import radar
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    Conflicts,
    Events,
    Overlap,
    RepoAdd,
    Spawn,
    TaskAdd,
    WorkerShow,
)

from conftest import Daemon, git, make_repo, wait_for

CONFIG = """\
heartbeat_s = 0.3
heartbeat_timeout_s = 10
stall_timeout_s = 60
notify = false
radar_interval_s = 0.3
"""

#: A live agent: writes its files (not committed) and keeps working.
EDITOR = r"""
import json, sys, time
for name, text in json.loads(sys.argv[1]).items():
    open(name, "w").write(text)
time.sleep(60)
"""


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


def _wt(repo: Path, name: str, files: dict[str, str], commit: bool) -> Path:
    wt = repo.parent / f"wt-{name}"
    git(repo, "worktree", "add", "-q", "-b", f"chkd/{name}", str(wt), "main")
    for f, text in files.items():
        (wt / f).write_text(text)
    if commit:
        git(wt, "add", "-A")
        git(wt, "commit", "-q", "-m", name)
    return wt


def test_scan_finds_shared_files_and_predicts_conflicts(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "p", {"a.txt": "1\n2\n3\n", "b.txt": "b\n", "c.txt": "c\n"})
    wa = _wt(repo, "A", {"a.txt": "1\nA\n3\n", "b.txt": "bA\n"}, commit=True)
    wb = _wt(repo, "B", {"a.txt": "1\nB\n3\n"}, commit=False)  # uncommitted edits count
    wc = _wt(repo, "C", {"c.txt": "cC\n"}, commit=False)
    index_before = (repo / ".git" / "worktrees" / "wt-B" / "index").read_bytes()
    refs = [
        radar.WorkerRef("w1", str(wa), "chkd/A"),
        radar.WorkerRef("w2", str(wb), "chkd/B"),
        radar.WorkerRef("w3", str(wc), "chkd/C"),
    ]
    found = radar.scan("p", str(repo), "main", refs)
    assert found == [Overlap(repo="p", a="w1", b="w2", files=["a.txt"], conflict=True, conflict_files=["a.txt"])]
    assert (repo / ".git" / "worktrees" / "wt-B" / "index").read_bytes() == index_before  # the agent's index
    assert git(wb, "status", "--porcelain") == "M a.txt"  # and its files are untouched
    # main changes c.txt: w3 overlaps the target (and would conflict with it)
    (repo / "c.txt").write_text("c main\n")
    git(repo, "commit", "-qam", "main edits c")
    found = radar.scan("p", str(repo), "main", refs)
    assert Overlap(repo="p", a="w3", b=None, files=["c.txt"], conflict=True, conflict_files=["c.txt"]) in found


def test_a_scan_that_cannot_read_a_live_worktree_fails_instead_of_dropping_its_overlaps(tmp_path: Path) -> None:
    """A partial scan used to replace the last complete one, so a live overlap could vanish from
    the report; now the scan fails (the daemon keeps the previous result and retries next tick)."""
    repo = make_repo(tmp_path / "p", {"a.txt": "1\n"})
    wa = _wt(repo, "A", {"a.txt": "A\n"}, commit=False)
    wb = _wt(repo, "B", {"a.txt": "B\n"}, commit=False)
    refs = [radar.WorkerRef("w1", str(wa), "chkd/A"), radar.WorkerRef("w2", str(wb), "chkd/B")]
    assert [o.b for o in radar.scan("p", str(repo), "main", refs)] == ["w2"]
    (repo / ".git" / "worktrees" / "wt-B" / "index").write_bytes(b"not an index")  # git status fails there
    with pytest.raises(ChkdError):
        radar.scan("p", str(repo), "main", refs)
    gone = [refs[0], radar.WorkerRef("w2", str(tmp_path / "removed"), None)]  # a vanished worktree is skipped
    assert radar.scan("p", str(repo), "main", gone) == []


def test_news_reports_new_pairs_files_and_conflicts_only() -> None:
    o = Overlap(repo="r", a="w1", b="w2", files=["x"])
    prev = {radar.overlap_key(o): o}
    assert radar.news({}, [o]) == [o]
    assert radar.news(prev, [o]) == []
    more = Overlap(repo="r", a="w1", b="w2", files=["x", "y"])
    assert radar.news(prev, [more]) == [more]
    worse = Overlap(repo="r", a="w1", b="w2", files=["x"], conflict=True, conflict_files=["x"])
    assert radar.news(prev, [worse]) == [worse]
    fewer = Overlap(repo="r", a="w1", b="w2", files=[])
    assert radar.news(prev, [fewer]) == []


def test_pairs_are_ordered_by_worker_number() -> None:
    sides = [
        radar.Side("w10", "c", frozenset({"f"})),
        radar.Side("w2", "c", frozenset({"f"})),
        radar.Side("w3", "c", frozenset({"g"})),
    ]
    assert [(a.worker_id, b.worker_id) for a, b in radar.pairs_sharing_files(sides)] == [("w2", "w10")]


@pytest.mark.timeout(60)
def test_radar_reports_two_workers_editing_the_same_file_before_either_is_done(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"shared.py": "x = 1\n", "own.txt": "o\n"})
    daemon.call(RepoAdd(path=str(repo)))
    assert daemon.ctl("conflicts", "--json", cwd=repo).json()["overlaps"] == []
    ids = []
    for n, text in ((1, "x = 2\n"), (2, "x = 3\n")):
        task = daemon.call(TaskAdd(title=f"edit shared {n}", repo=str(repo))).task
        cmd = [sys.executable, "-c", EDITOR, json.dumps({"shared.py": text, f"mine{n}.txt": "m\n"})]
        ids.append(daemon.call(Spawn(repo=str(repo), task_id=task.id, cmd=cmd)).worker.id)

    def overlap() -> list:
        events = daemon.call(Events(since=0, limit=1000)).events
        return [e for e in events if e.kind == "overlap"]

    evs = wait_for(overlap, 20, what="an overlap event")
    assert evs[0].data.a == ids[0] and evs[0].data.b == ids[1] and evs[0].data.files == ["shared.py"]
    assert evs[0].data.conflict is True
    for wid in ids:  # neither is done: they are still working
        assert daemon.call(WorkerShow(worker=wid)).worker.status in ("starting", "working")
    res = daemon.ctl("conflicts", cwd=repo)
    assert res.code == 0 and "CONFLICT" in res.out and "shared.py" in res.out and ids[0] in res.out
    report = daemon.call(Conflicts(repo="proj"))
    assert [(o.a, o.b, o.files) for o in report.overlaps] == [(ids[0], ids[1], ["shared.py"])]
    assert daemon.ctl("conflicts", "--repo", "nope", cwd=repo).code == 1
