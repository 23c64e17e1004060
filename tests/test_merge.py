"""Merges through the real daemon, real chkdctl, real git: queue, CAS, gate, review, update, squash."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from chkd.protocol.messages import (
    Approve,
    Events,
    Merge,
    MergeShow,
    RepoAdd,
    Spawn,
    TaskAdd,
    TaskShow,
    WorkerInfo,
    WorkerShow,
)

from conftest import Daemon, busy_for, git, make_repo, wait_for

#: The agent: writes the files given as JSON, commits them, exits 0 (the daemon marks it done).
AGENT = r"""
import json, subprocess, sys
for name, text in json.loads(sys.argv[1]).items():
    open(name, "w").write(text)
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", sys.argv[2]], check=True)
if len(sys.argv) > 3:  # linger: say done, then stay alive (an agent that can still resolve conflicts)
    import time
    subprocess.run(["chkdctl", "done"], check=True)
    time.sleep(60)
"""

CONFIG = """\
heartbeat_s = 0.5
heartbeat_timeout_s = 5
stall_timeout_s = 60
notify = false
max_workers = 6
radar_interval_s = 0.5
"""


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", {"README.md": "hello\n", "a.txt": "one\ntwo\nthree\n"})


def add_repo(daemon: Daemon, repo: Path, test_cmd: list[str] | None = None) -> None:
    daemon.call(RepoAdd(path=str(repo), test_cmd=test_cmd))


def done_worker(
    daemon: Daemon, repo: Path, title: str, files: dict[str, str], priority: int = 2, linger: bool = False
) -> WorkerInfo:
    """Spawn a worker whose agent commits `files` and exits (or, `linger`, says done and stays); wait for done."""
    task = daemon.call(TaskAdd(title=title, repo=str(repo), priority=priority)).task
    cmd = [sys.executable, "-c", AGENT, json.dumps(files), f"{task.id}: {title}"] + (["linger"] if linger else [])
    w = daemon.call(Spawn(repo=str(repo), task_id=task.id, cmd=cmd)).worker
    return wait_for(lambda: _done(daemon, w.id), 20, what=f"worker {w.id} to be done")


def _done(daemon: Daemon, wid: str) -> WorkerInfo | None:
    w = daemon.call(WorkerShow(worker=wid)).worker
    assert w.status not in ("error", "dead"), w
    return w if w.status == "done" else None


def worker(daemon: Daemon, wid: str) -> WorkerInfo:
    return daemon.call(WorkerShow(worker=wid)).worker


def task_status(daemon: Daemon, repo: Path, task_id: str) -> str:
    return daemon.call(TaskShow(id=task_id, repo=str(repo))).task.status


def events(daemon: Daemon, prefix: str = "") -> list[Any]:
    return [e for e in daemon.call(Events(since=0, limit=10000)).events if e.kind.startswith(prefix)]


def commit_on_main(repo: Path, files: dict[str, str], msg: str = "main moves") -> str:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


def test_clean_merge_moves_main_by_cas_and_cleans_up(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    w = done_worker(daemon, proj, "add feature", {"feature.txt": "feature\n"})
    old = git(proj, "rev-parse", "main")
    res = daemon.ctl("merge", w.id, "--strategy", "auto", cwd=proj)
    assert res.code == 0, res
    assert f"Merged {w.id} into main" in res.out
    new = git(proj, "rev-parse", "main")
    assert git(proj, "rev-list", "--parents", "-n", "1", new).split()[1] == old  # first parent: old main
    assert "chkd: merge" in git(proj, "reflog", "-n", "1", "--format=%gs", "refs/heads/main")
    assert (proj / "feature.txt").read_text() == "feature\n"  # the clean checkout followed
    assert git(proj, "status", "--porcelain") == ""
    assert not Path(w.worktree).exists()
    assert git(proj, "branch", "--list", w.branch) == ""
    assert worker(daemon, w.id).status == "merged"
    assert task_status(daemon, proj, w.task_id) == "done"
    kinds = [e.kind for e in events(daemon, "merge.")]
    assert kinds == ["merge.queued", "merge.checking", "merge.merged"]
    assert daemon.ctl("merge", w.id, cwd=proj).code == 1  # already merged: a sentence, exit 1


def test_conflict_changes_nothing_and_lists_files(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    w = done_worker(daemon, proj, "edit a", {"a.txt": "ONE\ntwo\nthree\n"})
    main_sha = commit_on_main(proj, {"a.txt": "uno\ntwo\nthree\n"})
    refs = git(proj, "for-each-ref")
    res = daemon.ctl("merge", w.id, "--strategy", "auto", cwd=proj)
    assert res.code == 1
    assert "conflicts with main in: a.txt" in res.err and f"chkdctl update {w.id}" in res.err
    assert git(proj, "rev-parse", "main") == main_sha and git(proj, "for-each-ref") == refs
    assert (proj / "a.txt").read_text() == "uno\ntwo\nthree\n" and Path(w.worktree).is_dir()
    assert worker(daemon, w.id).status == "conflict"
    conflict = events(daemon, "merge.conflict")
    assert conflict and conflict[0].data.files == ["a.txt"]
    merges = daemon.ctl("merges", "--json", cwd=proj).json()
    assert merges[0]["status"] == "conflict" and merges[0]["conflict_files"] == ["a.txt"]


@pytest.mark.timeout(90)
def test_five_merges_at_once_are_serialized_in_priority_order(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj, test_cmd=busy_for(0.3))
    assert daemon.ctl("repo", "edit", "proj", "--merge-batch", "1").code == 0  # no merge train: one at a time
    prios = [4, 3, 0, 2, 1]
    ws = [done_worker(daemon, proj, f"part {i}", {f"part{i}.txt": f"{i}\n"}, priority=p) for i, p in enumerate(prios)]
    client = daemon.client()
    ids = [client.call(Merge(worker=w.id, strategy="auto")).merge.id for w in ws]
    final = [wait_for(lambda i=i: _settled(daemon, i), 30, what=f"merge {i}") for i in ids]
    assert [m.status for m in final] == ["merged"] * 5
    log = git(proj, "log", "--format=%s", "main")
    for w in ws:
        assert w.task_id in log
        assert (proj / f"part{ws.index(w)}.txt").exists()
    # serialized: a merge starts checking only after the one before it settled
    running: set[int] = set()
    started: list[int] = []
    for e in events(daemon, "merge."):
        mid = e.data.merge_id
        if e.kind == "merge.checking":
            assert not running - {mid}, f"merge {mid} started while {running} ran"
            running.add(mid)
            if mid not in started:
                started.append(mid)
        elif e.kind in ("merge.merged", "merge.failed", "merge.conflict"):
            running.discard(mid)
    # the first started at once; the rest went by task priority (P0 first)
    assert started[0] == ids[0]
    assert started[1:] == [ids[prios.index(p)] for p in sorted(prios[1:])]


def _settled(daemon: Daemon, merge_id: int) -> Any:
    m = daemon.call(MergeShow(id=merge_id)).merge
    return m if m.status in ("merged", "conflict", "failed", "rejected") else None


def test_dirty_checked_out_main_is_refused_with_no_file_touched(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    w = done_worker(daemon, proj, "add feature", {"feature.txt": "x\n", "README.md": "from worker\n"})
    (proj / "a.txt").write_text("my local edit\n")
    main_sha = git(proj, "rev-parse", "main")
    res = daemon.ctl("merge", w.id, "--strategy", "auto", cwd=proj)
    assert res.code == 1
    assert "uncommitted changes to a.txt" in res.err and "nothing was merged" in res.err
    assert git(proj, "rev-parse", "main") == main_sha
    assert (proj / "a.txt").read_text() == "my local edit\n"
    assert (proj / "README.md").read_text() == "hello\n" and not (proj / "feature.txt").exists()
    assert worker(daemon, w.id).status == "done" and Path(w.worktree).is_dir()  # can be merged later
    (proj / "a.txt").write_text("one\ntwo\nthree\n")
    assert daemon.ctl("merge", w.id, "--strategy", "auto", cwd=proj).code == 0
    assert (proj / "README.md").read_text() == "from worker\n"


def test_dirty_worker_worktree_is_refused_before_queueing(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    w = done_worker(daemon, proj, "feature", {"feature.txt": "x\n"}, linger=True)  # no leftover commit at exit
    (Path(w.worktree) / "stray.txt").write_text("late edit\n")
    res = daemon.ctl("merge", w.id, cwd=proj)
    assert res.code == 1 and "stray.txt" in res.err and "nothing was queued" in res.err
    assert daemon.ctl("merges", "--json", cwd=proj).json() == []


def test_failing_test_gate_leaves_main_untouched(daemon: Daemon, proj: Path) -> None:
    gate = [sys.executable, "-c", "import os, sys; print('tests see', sorted(os.listdir('.'))); sys.exit(1)"]
    add_repo(daemon, proj, test_cmd=gate)
    w = done_worker(daemon, proj, "feature", {"feature.txt": "x\n"})
    main_sha = git(proj, "rev-parse", "main")
    res = daemon.ctl("merge", w.id, "--strategy", "auto", cwd=proj)
    assert res.code == 1 and "failed" in res.err
    assert git(proj, "rev-parse", "main") == main_sha and not (proj / "feature.txt").exists()
    m = daemon.call(MergeShow(worker=w.id)).merge
    assert m.status == "failed" and "tests see" in m.log and "feature.txt" in m.log  # ran on the merge result
    assert worker(daemon, w.id).status == "done"
    assert [e.kind for e in events(daemon, "merge.")][-2:] == ["merge.testing", "merge.failed"]
    others = [ln for ln in git(proj, "worktree", "list").splitlines()[1:] if "[chkd/" not in ln]
    assert len(others) == 1 and "(detached HEAD)" in others[0]  # only the persistent gate, under chkd's state
    assert others[0].startswith(str(daemon.paths.state / "gates"))
    ok = daemon.ctl("merge", w.id, "--strategy", "auto", "--no-test", cwd=proj)
    assert ok.code == 0, ok


def test_review_then_approve_merges(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    w = done_worker(daemon, proj, "feature", {"feature.txt": "x\n"})
    main_sha = git(proj, "rev-parse", "main")
    res = daemon.ctl("merge", w.id, cwd=proj)  # review is the default strategy
    assert res.code == 0 and "waits for review" in res.out
    assert git(proj, "rev-parse", "main") == main_sha
    diff = daemon.ctl("diff", w.id, "--stat", cwd=proj)
    assert diff.code == 0 and "feature.txt" in diff.out
    commit_on_main(proj, {"other.txt": "meanwhile\n"})  # the target moves during review: re-checked, not forced
    res = daemon.ctl("approve", w.id, cwd=proj)
    assert res.code == 0 and "Merged" in res.out, res
    assert (proj / "feature.txt").exists() and (proj / "other.txt").exists()
    assert worker(daemon, w.id).status == "merged"
    kinds = [e.kind for e in events(daemon, "merge.")]
    assert kinds.index("merge.awaiting_review") < kinds.index("merge.approved") < kinds.index("merge.merged")


def test_review_then_reject_sends_worker_back(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    w = done_worker(daemon, proj, "feature", {"feature.txt": "x\n"}, linger=True)
    assert daemon.ctl("merge", w.id, "--strategy", "review", cwd=proj).code == 0
    res = daemon.ctl("reject", w.id, "--reason", "needs tests", cwd=proj)
    assert res.code == 0 and "back to working" in res.out
    back = worker(daemon, w.id)
    assert back.status == "working" and back.message == "needs tests"
    assert daemon.call(MergeShow(worker=w.id)).merge.status == "rejected"
    assert not (proj / "feature.txt").exists()
    assert daemon.ctl("approve", w.id, cwd=proj).code == 1  # nothing waits for review any more


def test_update_resolves_a_stale_branch(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    w = done_worker(daemon, proj, "edit a", {"a.txt": "ONE\ntwo\nthree\n"}, linger=True)
    commit_on_main(proj, {"b.txt": "b\n"})
    res = daemon.ctl("update", w.id, cwd=proj)  # clean: main's commit comes into the branch
    assert res.code == 0, res
    assert (Path(w.worktree) / "b.txt").exists() and worker(daemon, w.id).status == "done"
    commit_on_main(proj, {"a.txt": "uno\ntwo\nthree\n"})
    assert daemon.ctl("merge", w.id, "--strategy", "auto", cwd=proj).code == 1  # conflict
    res = daemon.ctl("update", w.id, cwd=proj)
    assert res.code == 1 and "a.txt" in res.err
    back = worker(daemon, w.id)
    assert back.status == "working" and "a.txt" in back.message
    assert "<<<<<<<" in (Path(w.worktree) / "a.txt").read_text()
    # the agent resolves, commits and says done; then the merge goes through
    (Path(w.worktree) / "a.txt").write_text("uno ONE\ntwo\nthree\n")
    git(w.worktree, "commit", "-qam", "resolve")
    assert daemon.ctl("done", cwd=w.worktree, env={"CHKD_WORKER_ID": w.id}).code == 0
    res = daemon.ctl("merge", w.id, "--strategy", "auto", cwd=proj)
    assert res.code == 0, res
    assert (proj / "a.txt").read_text() == "uno ONE\ntwo\nthree\n"


def test_squash_merged_branch_counts_as_merged(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    w = done_worker(daemon, proj, "feature", {"feature.txt": "x\n", "a.txt": "one\n2\nthree\n"})
    git(proj, "merge", "-q", "--squash", w.branch)
    squashed = commit_on_main(proj, {}, "squash by hand")
    res = daemon.ctl("merge", w.id, "--strategy", "auto", cwd=proj)
    assert res.code == 0, res
    assert git(proj, "rev-parse", "main") == squashed  # nothing new to merge
    assert not Path(w.worktree).exists() and git(proj, "branch", "--list", w.branch) == ""
    merged = events(daemon, "merge.merged")[-1]
    assert merged.data.already_in is True
    assert worker(daemon, w.id).status == "merged" and task_status(daemon, proj, w.task_id) == "done"


def test_no_wait_returns_once_queued_and_approve_requires_review(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    w = done_worker(daemon, proj, "feature", {"feature.txt": "x\n"})
    res = daemon.ctl("merge", w.id, "--strategy", "auto", "--no-wait", "--json", cwd=proj)
    assert res.code == 0 and res.json()["status"] in ("queued", "checking")
    wait_for(lambda: worker(daemon, w.id).status == "merged", 10, what="the merge to land")
    w2 = done_worker(daemon, proj, "feature2", {"feature2.txt": "y\n"})
    text = daemon.ctl("merge", w2.id, "--strategy", "auto", "--no-wait", cwd=proj)
    assert text.code == 0 and text.err == "" and "follow it with `chkdctl merges`" in text.out
    bad = daemon.ctl("merge", "w999", cwd=proj)
    assert bad.code == 1 and "No worker" in bad.err


def test_merge_of_a_running_worker_is_refused(daemon: Daemon, proj: Path) -> None:
    add_repo(daemon, proj)
    task = daemon.call(TaskAdd(title="slow", repo=str(proj))).task
    w = daemon.call(Spawn(repo=str(proj), task_id=task.id, cmd=busy_for(30))).worker
    res = daemon.ctl("merge", w.id, cwd=proj)
    assert res.code == 1 and "only a done worker can be merged" in res.err
    with pytest.raises(Exception, match="no merge waiting for review"):
        daemon.call(Approve(worker=w.id))
