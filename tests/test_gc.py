"""`chkdctl gc`: lists leftovers, removes only what holds no work that is not in the target."""

from __future__ import annotations

import time
from pathlib import Path

import apsw
import pytest

from chkd.protocol.messages import Gc, GcReport, RepoAdd, RepoResult

from conftest import Daemon, git, make_repo


def commit_file(repo: Path, name: str, text: str, msg: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def proj(daemon: Daemon, tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "proj")
    daemon.call(RepoAdd(path=str(repo)), RepoResult)
    return repo


def branches(repo: Path) -> set[str]:
    return set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())


def by_what(report: GcReport) -> dict[str, object]:
    return {it.what: it for it in report.items}


def make_leftovers(repo: Path, tmp_path: Path) -> dict[str, Path]:
    # merged: an ancestor of main
    git(repo, "branch", "chkd/merged")
    # unmerged: a commit with real content main lacks
    git(repo, "checkout", "-q", "-b", "chkd/unmerged")
    commit_file(repo, "feature.txt", "work\n", "unmerged work")
    git(repo, "checkout", "-q", "main")
    # squashed: its content reached main through another commit (squash merge)
    git(repo, "checkout", "-q", "-b", "chkd/squashed")
    commit_file(repo, "sq.txt", "squash me\n", "to be squashed")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--squash", "chkd/squashed")
    git(repo, "commit", "-q", "-m", "squash merge")
    # a branch outside the managed prefix is none of gc's business
    git(repo, "branch", "feature/mine")
    # worktrees under the managed pattern with no worker: clean, dirty, unmerged
    clean = tmp_path / "proj-T-clean"
    git(repo, "worktree", "add", "-q", "-b", "chkd/T-clean", str(clean))
    dirty = tmp_path / "proj-T-dirty"
    git(repo, "worktree", "add", "-q", "-b", "chkd/T-dirty", str(dirty))
    (dirty / "notes.txt").write_text("not committed\n")
    ahead = tmp_path / "proj-T-ahead"
    git(repo, "worktree", "add", "-q", "-b", "chkd/T-ahead", str(ahead))
    commit_file(ahead, "ahead.txt", "ahead\n", "work in a worktree")
    return {"clean": clean, "dirty": dirty, "ahead": ahead}


def test_dry_run_lists_and_changes_nothing(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    wts = make_leftovers(proj, tmp_path)
    before = branches(proj)
    report = daemon.call(Gc(), GcReport)
    assert not report.applied
    items = by_what(report)
    assert set(items) == {"chkd/merged", "chkd/unmerged", "chkd/squashed", str(wts["clean"]),
                          str(wts["dirty"]), str(wts["ahead"])}
    assert items["chkd/merged"].removable and items["chkd/squashed"].removable
    assert not items["chkd/unmerged"].removable
    assert "1 commit(s) not in main" in items["chkd/unmerged"].reason
    assert items[str(wts["clean"])].removable and items[str(wts["clean"])].kind == "worktree"
    assert not items[str(wts["dirty"])].removable and "uncommitted" in items[str(wts["dirty"])].reason
    assert not items[str(wts["ahead"])].removable and "not in main" in items[str(wts["ahead"])].reason
    assert branches(proj) == before and all(p.exists() for p in wts.values())
    assert not any(it.removed for it in report.items)


def test_apply_removes_only_what_holds_no_unmerged_work(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    wts = make_leftovers(proj, tmp_path)
    unmerged_sha = git(proj, "rev-parse", "chkd/unmerged")
    res = daemon.ctl("gc", "--apply", cwd=proj)
    assert res.code == 0, res
    assert "removed" in res.out and "kept" in res.out
    left = branches(proj)
    assert "chkd/merged" not in left and "chkd/squashed" not in left and "chkd/T-clean" not in left
    assert {"chkd/unmerged", "chkd/T-dirty", "chkd/T-ahead", "feature/mine", "main"} <= left
    assert git(proj, "rev-parse", "chkd/unmerged") == unmerged_sha
    assert not wts["clean"].exists()
    assert (wts["dirty"] / "notes.txt").read_text() == "not committed\n" and (wts["ahead"] / "ahead.txt").exists()
    # what was removed is an event; a second run finds only what is kept
    events = daemon.ctl("--json", "events", "-n", "50").json()["events"]
    assert {e["data"]["what"] for e in events if e["kind"] == "gc.removed"} == {
        "chkd/merged", "chkd/squashed", str(wts["clean"])}
    again = daemon.call(Gc(apply=True), GcReport)
    assert not any(it.removed for it in again.items)
    assert {it.what for it in again.items} == {"chkd/unmerged", str(wts["dirty"]), str(wts["ahead"])}


def test_nothing_to_clean_and_unknown_repo(daemon: Daemon, proj: Path) -> None:
    res = daemon.ctl("gc", "--repo", "proj")
    assert res.code == 0 and res.out.strip() == "Nothing to clean up."
    bad = daemon.ctl("gc", "--repo", "nope")
    assert bad.code == 1 and "No registered repository is named or contains 'nope'" in bad.err


def _insert_worker(db: Path, wid: str, status: str, worktree: str | None, branch: str | None, at_ms: int) -> None:
    conn = apsw.Connection(str(db))
    conn.set_busy_timeout(5000)
    seq = int(wid.lstrip("w"))
    conn.execute(
        "INSERT INTO workers(id, seq, repo_id, status, worktree_path, branch_name, started_at, completed_at) "
        "VALUES(?,?,1,?,?,?,?,?)", (wid, seq, status, worktree, branch, at_ms, at_ms))
    conn.close()


def test_workers_with_gone_worktrees_and_old_dead_workers(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    week_ago = now - 8 * 24 * 3600 * 1000
    # w1: done, worktree deleted by hand, branch merged → removable
    git(proj, "branch", "chkd/w1-task")
    # w2: dead for 8 days, worktree clean and merged → removable
    wt2 = tmp_path / "proj-W2"
    git(proj, "worktree", "add", "-q", "-b", "chkd/w2-task", str(wt2))
    # w3: dead for 8 days with unmerged work → kept
    wt3 = tmp_path / "proj-W3"
    git(proj, "worktree", "add", "-q", "-b", "chkd/w3-task", str(wt3))
    commit_file(wt3, "w3.txt", "precious\n", "w3 work")
    # w4: dead yesterday → not old enough, not listed
    daemon.stop()
    db = daemon.db
    _insert_worker(db, "w1", "done", str(tmp_path / "proj-gone"), "chkd/w1-task", now)
    _insert_worker(db, "w2", "dead", str(wt2), "chkd/w2-task", week_ago)
    _insert_worker(db, "w3", "dead", str(wt3), "chkd/w3-task", week_ago)
    _insert_worker(db, "w4", "dead", None, None, now - 24 * 3600 * 1000)
    daemon.start()
    report = daemon.call(Gc(), GcReport)
    items = by_what(report)
    assert set(items) == {"w1", "w2", "w3"}
    assert items["w1"].kind == "worker" and "is gone" in items["w1"].reason and items["w1"].removable
    assert items["w2"].kind == "dead_worker" and "dead for 8 days" in items["w2"].reason and items["w2"].removable
    assert items["w3"].kind == "dead_worker" and not items["w3"].removable and "not in main" in items["w3"].reason
    applied = by_what(daemon.call(Gc(apply=True), GcReport))
    assert applied["w1"].removed and applied["w2"].removed and not applied["w3"].removed
    assert not wt2.exists() and (wt3 / "w3.txt").exists()
    assert "chkd/w3-task" in branches(proj) and "chkd/w2-task" not in branches(proj)
    assert {it.what for it in daemon.call(Gc(), GcReport).items} == {"w3"}


def test_a_deleted_worktree_directory_is_pruned_but_its_unmerged_branch_kept(
        daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    import shutil

    wt = tmp_path / "proj-T-lost"
    git(proj, "worktree", "add", "-q", "-b", "chkd/T-lost", str(wt))
    sha = commit_file(wt, "lost.txt", "still on the branch\n", "work whose directory vanished")
    shutil.rmtree(wt)
    items = by_what(daemon.call(Gc(), GcReport))
    assert items[str(wt)].removable and "directory is gone" in items[str(wt)].reason
    assert "chkd/T-lost holds 1 commit(s) not in main; kept" in items[str(wt)].reason
    applied = by_what(daemon.call(Gc(apply=True), GcReport))
    assert applied[str(wt)].removed
    assert str(wt) not in git(proj, "worktree", "list")
    assert git(proj, "rev-parse", "chkd/T-lost") == sha
    after = by_what(daemon.call(Gc(), GcReport))
    assert set(after) == {"chkd/T-lost"} and not after["chkd/T-lost"].removable


@pytest.mark.timeout(60)
def test_a_merged_worker_is_history_not_an_orphan(daemon: Daemon, proj: Path) -> None:
    from chkd.protocol.messages import Merge, MergeResult, Spawn, TaskAdd, TaskResult, WorkerResult, WorkerShow

    from conftest import wait_for

    task = daemon.call(TaskAdd(title="small", repo=str(proj)), TaskResult).task
    w = daemon.call(Spawn(repo=str(proj), task_id=task.id, cmd=["chkd-demo-agent", "--steps", "1", "--step-s", "0.05"]),
                    WorkerResult).worker
    wait_for(lambda: daemon.call(WorkerShow(worker=w.id), WorkerResult).worker.status == "done", 20, what="done")
    daemon.call(Merge(worker=w.id, strategy="auto", no_test=True), MergeResult)
    wait_for(lambda: daemon.call(WorkerShow(worker=w.id), WorkerResult).worker.status == "merged", 20, what="merged")
    report = daemon.call(Gc(repo=str(proj)), GcReport)
    assert report.items == []
    res = daemon.ctl("gc", cwd=proj)
    assert res.code == 0 and w.id not in res.out
