"""`chkdctl gc`: lists leftovers, removes only what holds no work that is not in the target."""

from __future__ import annotations

import time
from pathlib import Path

import apsw
import pytest

from chkd.daemon import gc as gcmod
from chkd.daemon import worktrees
from chkd.protocol.messages import Gc, GcReport

from conftest import Daemon, git, make_repo

NOT_OURS = "not created by chkd (no record or marker); kept"


def commit_file(repo: Path, name: str, text: str, msg: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


def branches(repo: Path) -> set[str]:
    return set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())


def by_what(report: GcReport) -> dict[str, object]:
    return {it.what: it for it in report.items}


def mark(daemon: Daemon, path: Path, worker: str, home: str | None = None) -> None:
    """Mark a hand-made worktree the way chkd marks the ones it creates."""
    branch = git(path, "symbolic-ref", "--short", "HEAD")
    worktrees.mark_worktree(
        path, {"home": home or str(daemon.paths.state), "worker": worker, "purpose": "worker", "branch": branch}
    )


def make_leftovers(daemon: Daemon, repo: Path, tmp_path: Path) -> dict[str, Path]:
    """chkd's leftovers, each recorded (a finished worker row, or a marker), plus look-alikes that are not."""
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
    # worktrees chkd made (marked) that no worker row records: clean, dirty, unmerged
    clean = tmp_path / "proj-T-clean"
    git(repo, "worktree", "add", "-q", "-b", "chkd/T-clean", str(clean))
    dirty = tmp_path / "proj-T-dirty"
    git(repo, "worktree", "add", "-q", "-b", "chkd/T-dirty", str(dirty))
    (dirty / "notes.txt").write_text("not committed\n")
    ahead = tmp_path / "proj-T-ahead"
    git(repo, "worktree", "add", "-q", "-b", "chkd/T-ahead", str(ahead))
    commit_file(ahead, "ahead.txt", "ahead\n", "work in a worktree")
    for n, path in enumerate((clean, dirty, ahead)):
        mark(daemon, path, f"w9{n}")
    # look-alikes nothing of chkd's records: a merged chkd/ branch and a clean worktree under the pattern
    git(repo, "branch", "chkd/stranger")
    stranger = tmp_path / "proj-T-stranger"
    git(repo, "worktree", "add", "-q", "-b", "stranger", str(stranger))
    # the three branches are recorded by finished workers that have no worktree
    daemon.stop()
    for n, branch in enumerate(("chkd/merged", "chkd/unmerged", "chkd/squashed")):
        _insert_worker(daemon.db, f"w8{n}", "aborted", None, branch, int(time.time() * 1000))
    daemon.start()
    return {"clean": clean, "dirty": dirty, "ahead": ahead, "stranger": stranger}


def test_dry_run_lists_and_changes_nothing(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    wts = make_leftovers(daemon, proj, tmp_path)
    before = branches(proj)
    report = daemon.call(Gc())
    assert not report.applied
    items = by_what(report)
    assert set(items) == {
        "chkd/merged",
        "chkd/unmerged",
        "chkd/squashed",
        str(wts["clean"]),
        str(wts["dirty"]),
        str(wts["ahead"]),
        "chkd/stranger",
        str(wts["stranger"]),
    }
    assert items["chkd/stranger"].reason == NOT_OURS and not items["chkd/stranger"].removable
    assert items[str(wts["stranger"])].reason == NOT_OURS and not items[str(wts["stranger"])].removable
    assert items["chkd/merged"].removable and items["chkd/squashed"].removable
    assert not items["chkd/unmerged"].removable
    assert "1 commit(s) not in main" in items["chkd/unmerged"].reason
    assert items[str(wts["clean"])].removable and items[str(wts["clean"])].kind == "worktree"
    assert not items[str(wts["dirty"])].removable and "uncommitted" in items[str(wts["dirty"])].reason
    assert not items[str(wts["ahead"])].removable and "not in main" in items[str(wts["ahead"])].reason
    assert branches(proj) == before and all(p.exists() for p in wts.values())
    assert not any(it.removed for it in report.items)


def test_apply_removes_only_what_holds_no_unmerged_work(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    wts = make_leftovers(daemon, proj, tmp_path)
    unmerged_sha = git(proj, "rev-parse", "chkd/unmerged")
    res = daemon.ctl("gc", "--apply", cwd=proj)
    assert res.code == 0, res
    assert "removed" in res.out and "kept" in res.out
    left = branches(proj)
    assert "chkd/merged" not in left and "chkd/squashed" not in left and "chkd/T-clean" not in left
    assert {
        "chkd/unmerged",
        "chkd/T-dirty",
        "chkd/T-ahead",
        "feature/mine",
        "main",
        "chkd/stranger",
        "stranger",
    } <= left
    assert wts["stranger"].is_dir()
    assert git(proj, "rev-parse", "chkd/unmerged") == unmerged_sha
    assert not wts["clean"].exists()
    assert (wts["dirty"] / "notes.txt").read_text() == "not committed\n" and (wts["ahead"] / "ahead.txt").exists()
    # what was removed is an event; a second run finds only what is kept
    events = daemon.ctl("--json", "events", "-n", "50").json()["events"]
    assert {e["data"]["what"] for e in events if e["kind"] == "gc.removed"} == {
        "chkd/merged",
        "chkd/squashed",
        str(wts["clean"]),
    }
    again = daemon.call(Gc(apply=True))
    assert not any(it.removed for it in again.items)
    assert {it.what for it in again.items} == {
        "chkd/unmerged",
        str(wts["dirty"]),
        str(wts["ahead"]),
        "chkd/stranger",
        str(wts["stranger"]),
    }


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
        "VALUES(?,?,1,?,?,?,?,?)",
        (wid, seq, status, worktree, branch, at_ms, at_ms),
    )
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
    report = daemon.call(Gc())
    items = by_what(report)
    assert set(items) == {"w1", "w2", "w3"}
    assert items["w1"].kind == "worker" and "is gone" in items["w1"].reason and items["w1"].removable
    assert items["w2"].kind == "dead_worker" and "dead for 8 days" in items["w2"].reason and items["w2"].removable
    assert items["w3"].kind == "dead_worker" and not items["w3"].removable and "not in main" in items["w3"].reason
    applied = by_what(daemon.call(Gc(apply=True)))
    assert applied["w1"].removed and applied["w2"].removed and not applied["w3"].removed
    assert not wt2.exists() and (wt3 / "w3.txt").exists()
    assert "chkd/w3-task" in branches(proj) and "chkd/w2-task" not in branches(proj)
    assert {it.what for it in daemon.call(Gc()).items} == {"w3"}


def test_a_deleted_worktree_directory_is_pruned_but_its_unmerged_branch_kept(
    daemon: Daemon, proj: Path, tmp_path: Path
) -> None:
    import shutil

    wt = tmp_path / "proj-T-lost"
    git(proj, "worktree", "add", "-q", "-b", "chkd/T-lost", str(wt))
    sha = commit_file(wt, "lost.txt", "still on the branch\n", "work whose directory vanished")
    mark(daemon, wt, "w9")
    shutil.rmtree(wt)
    items = by_what(daemon.call(Gc()))
    assert items[str(wt)].removable and "directory is gone" in items[str(wt)].reason
    assert "chkd/T-lost holds 1 commit(s) not in main; kept" in items[str(wt)].reason
    applied = by_what(daemon.call(Gc(apply=True)))
    assert applied[str(wt)].removed
    assert str(wt) not in git(proj, "worktree", "list")
    assert git(proj, "rev-parse", "chkd/T-lost") == sha
    after = by_what(daemon.call(Gc()))
    assert set(after) == {"chkd/T-lost"} and not after["chkd/T-lost"].removable  # its record went with it


@pytest.mark.timeout(60)
def test_a_merged_worker_is_history_not_an_orphan(daemon: Daemon, proj: Path) -> None:
    from chkd.protocol.messages import Merge, Spawn, TaskAdd, WorkerShow

    from conftest import wait_for

    task = daemon.call(TaskAdd(title="small", repo=str(proj))).task
    w = daemon.call(
        Spawn(repo=str(proj), task_id=task.id, cmd=["chkd-demo-agent", "--steps", "1", "--step-s", "0.05"])
    ).worker
    wait_for(lambda: daemon.call(WorkerShow(worker=w.id)).worker.status == "done", 20, what="done")
    daemon.call(Merge(worker=w.id, strategy="auto", no_test=True))
    wait_for(lambda: daemon.call(WorkerShow(worker=w.id)).worker.status == "merged", 20, what="merged")
    report = daemon.call(Gc(repo=str(proj)))
    assert report.items == []
    res = daemon.ctl("gc", cwd=proj)
    assert res.code == 0 and w.id not in res.out


# -- record-based cases --------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_merged_worker_whose_cleanup_failed_is_cleaned_by_gc(daemon: Daemon, proj: Path) -> None:
    from chkd.protocol.messages import Merge, Spawn, TaskAdd, WorkerShow

    from conftest import wait_for

    task = daemon.call(TaskAdd(title="small", repo=str(proj))).task
    w = daemon.call(
        Spawn(repo=str(proj), task_id=task.id, cmd=["chkd-demo-agent", "--steps", "1", "--step-s", "0"])
    ).worker
    marker = worktrees.read_marker(w.worktree)
    assert marker is not None and marker["home"] == str(daemon.paths.state) and marker["worker"] == w.id
    assert marker["purpose"] == "worker" and marker["branch"] == w.branch and marker["created_at"] > 0
    wait_for(lambda: daemon.call(WorkerShow(worker=w.id)).worker.status == "done", 20, what="done")
    git(proj, "worktree", "lock", w.worktree)  # the merge's cleanup cannot remove a locked worktree
    daemon.call(Merge(worker=w.id, strategy="auto", no_test=True))
    wait_for(lambda: daemon.call(WorkerShow(worker=w.id)).worker.status == "merged", 20, what="merged")
    assert Path(w.worktree).is_dir() and w.branch in branches(proj)
    git(proj, "worktree", "unlock", w.worktree)
    item = by_what(daemon.call(Gc()))[w.id]
    assert item.removable and "merged, but its worktree" in item.reason and w.branch in item.reason
    applied = by_what(daemon.call(Gc(apply=True)))[w.id]
    assert applied.removed and not Path(w.worktree).exists() and w.branch not in branches(proj)
    assert daemon.call(WorkerShow(worker=w.id)).worker.status == "merged"  # history stays
    assert daemon.call(Gc()).items == []


def test_an_empty_reserved_directory_is_removed_with_rmdir_only(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    empty = tmp_path / "proj-T-empty"  # a spawn killed between reserving the directory and `git worktree add`
    empty.mkdir()
    stray = tmp_path / "proj-T-stray"  # recorded, not a worktree, and holding files: never deleted
    stray.mkdir()
    (stray / "unsaved.txt").write_text("someone's\n")
    daemon.stop()
    now = int(time.time() * 1000)
    _insert_worker(daemon.db, "w1", "error", str(empty), None, now)
    _insert_worker(daemon.db, "w2", "dead", str(stray), None, now)
    daemon.start()
    items = by_what(daemon.call(Gc()))
    assert items["w1"].removable and "empty and unknown to git" in items["w1"].reason
    assert not items["w2"].removable and "no longer a git worktree" in items["w2"].reason
    applied = by_what(daemon.call(Gc(apply=True)))
    assert applied["w1"].removed and not empty.exists()
    assert not applied["w2"].removed and (stray / "unsaved.txt").read_text() == "someone's\n"
    assert set(by_what(daemon.call(Gc()))) == {"w2"}


def test_a_marker_of_another_chkd_home_is_not_ours(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "proj-T-theirs"
    git(proj, "worktree", "add", "-q", "-b", "chkd/T-theirs", str(theirs))
    mark(daemon, theirs, "w1", home=str(tmp_path / "another-home" / "state"))
    item = by_what(daemon.call(Gc(apply=True)))[str(theirs)]
    assert not item.removable and not item.removed and "made by another chkd" in item.reason
    assert theirs.is_dir() and "chkd/T-theirs" in branches(proj)


def test_an_empty_branch_prefix_makes_every_branch_a_not_ours_item(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    for name in ("develop", "release-1"):  # merged: the old gc deleted them with branch_prefix = ""
        git(repo, "branch", name)
    hotfix = tmp_path / "proj-hotfix"
    git(repo, "worktree", "add", "-q", "-b", "hotfix", str(hotfix))
    snap = gcmod.RepoSnapshot("proj", str(repo), "main", [], branch_prefix="", home=str(tmp_path / "home"))
    found = gcmod.scan(snap)
    assert {f.item.what: (f.item.kind, f.item.removable, f.item.reason) for f in found} == {
        "develop": ("branch", False, NOT_OURS),
        "release-1": ("branch", False, NOT_OURS),
        str(hotfix): ("worktree", False, NOT_OURS),
    }
    gcmod.apply(snap, found)
    assert branches(repo) == {"main", "develop", "release-1", "hotfix"} and hotfix.is_dir()


def test_the_marker_lives_in_the_worktrees_admin_dir_and_follows_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    co = worktrees.create_worktree(
        str(repo),
        "proj",
        "T",
        "main",
        "../{repo}-{task}",
        "chkd/",
        owner={"home": "/h", "worker": "w1", "purpose": "worker"},
    )
    marker = worktrees.read_marker(co.path)
    assert marker is not None and (marker["home"], marker["worker"], marker["branch"]) == ("/h", "w1", "chkd/T")
    assert git(repo, "status", "--porcelain") == "" and git(co.path, "status", "--porcelain") == ""
    moved = tmp_path / "moved"
    git(repo, "worktree", "move", co.path, str(moved))
    assert worktrees.read_marker(moved) == marker and worktrees.worktree_markers(str(repo)) == {str(moved): marker}
    assert worktrees.read_marker(repo) is None  # the main checkout is never chkd's
    with pytest.raises(Exception, match="not a linked git worktree"):
        worktrees.mark_worktree(repo, {"home": "/h"})
    plain = tmp_path / "proj" / "sub"  # a plain directory inside the repository is not a worktree either
    plain.mkdir()
    assert worktrees.read_marker(plain) is None
    import shutil

    copy = tmp_path / "copy"  # a copy of the worktree (its `.git` file points at the same admin dir) is not it
    shutil.copytree(moved, copy)
    assert worktrees.read_marker(copy) is None and worktrees.read_marker(moved) == marker
    (plain / ".git").write_text("gitdir: ../.git/modules/sub\n")  # a submodule's checkout is no chkd worktree
    assert worktrees.read_marker(plain) is None

    shutil.rmtree(moved)  # deleted by hand: the marker is still found through git's registration
    assert worktrees.worktree_markers(str(repo)) == {str(moved): marker}
    git(repo, "worktree", "remove", str(moved))
    assert worktrees.worktree_markers(str(repo)) == {}
