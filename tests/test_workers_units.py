"""The workers area's pure rules and its off-loop git/process helpers, called directly (real git, real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from chkd.client import shim
from chkd.client.commands.workers import STATUS_EXIT, tail_lines, worker_rows
from chkd.daemon import procs, worktrees
from chkd.daemon.workerrecords import render_argv, transition_error
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import WorkerInfo

from conftest import git, make_repo


# -- pure rules -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "action", "expected"),
    [
        ("working", "pause", None),
        ("stalled", "pause", None),
        ("paused", "pause", "Worker w1 is already paused."),
        ("done", "pause", "Worker w1 is done; only a running worker can be paused."),
        ("paused", "resume", None),
        ("working", "resume", "Worker w1 is not paused (it is working)."),
        ("aborted", "resume", "Worker w1 is aborted; only a paused worker can be resumed."),
        ("paused", "abort", None),
        ("starting", "abort", None),
        ("error", "abort", "Worker w1 is error; only a live worker can be aborted."),
        ("working", "rm", "Worker w1 is working; abort it first (`chkdctl abort w1`) or let it finish."),
        ("merging", "rm", "Worker w1 is merging; wait for the merge to finish."),
        ("dead", "rm", None),
        ("done", "done", "Worker w1 is done; only a running worker can finish."),
    ],
)
def test_transition_rules(status: str, action: str, expected: str | None) -> None:
    assert transition_error("w1", status, action) == expected


def test_render_argv_fills_known_placeholders_only() -> None:
    values = {
        "worker_id": "w3",
        "task_id": "T-1",
        "title": "Fix {branch}",
        "prompt": "do it",
        "worktree": "/x",
        "branch": "chkd/T-1",
    }
    assert render_argv(
        ["agent", "--id={worker_id}", "{prompt}", "{unknown}", "{{json}}", "{worktree}/a", "{title}"], values
    ) == ["agent", "--id=w3", "do it", "{unknown}", "{json}", "/x/a", "Fix {branch}"]


def test_worktree_pattern_is_substituted_never_evaluated_and_stays_beside_the_repository() -> None:
    base = worktrees.worktree_base("/src/proj", "proj", "T-1", "../{task.__class__.__name__}-{{x}}-{task}")
    assert base == Path("/src/{task.__class__.__name__}-{x}-T-1")  # left as text, not evaluated
    for pattern, task in (("../../{task}", "T-1"), ("{task}", "T-1"), ("../{repo}/{task}", "T-1"), ("../{task}", "..")):
        with pytest.raises(ChkdError) as info:
            worktrees.worktree_base("/src/proj", "proj", task, pattern)
        assert info.value.code == "refused" and "not inside /src" in info.value.message


def test_worktree_names() -> None:
    assert worktrees.worktree_base("/src/proj", "proj", "SD.13", "../{repo}-{task}") == Path("/src/proj-SD.13")
    assert worktrees.worktree_base("/src/proj", "proj", "a/b", "../wt/{task}") == Path("/src/wt/a-b")
    assert list(worktrees.suffixed("x"))[:3] == ["x", "x-2", "x-3"]
    assert worktrees.resolve_attic_ref("w3") == "refs/chkd/attic/w3"
    assert worktrees.resolve_attic_ref("attic/w3") == "refs/chkd/attic/w3"
    assert worktrees.resolve_attic_ref("refs/chkd/attic/w3-2") == "refs/chkd/attic/w3-2"


@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/main",
        "refs/chkd/attic/",
        "refs/chkd/attic/a/b",
        "refs/chkd/other/w3",
        "attic/../heads/main",
        "heads/main",
        "",
        "  ",
        "-x",
        "attic/-x",
        ".hidden",
    ],
)
def test_only_chkds_own_attic_entries_resolve(ref: str) -> None:
    with pytest.raises(ChkdError, match="is not a chkd attic entry") as err:
        worktrees.resolve_attic_ref(ref)
    assert err.value.code == "bad_request"


def test_tail_lines_and_status_exit_codes() -> None:
    assert tail_lines(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert tail_lines(b"a\nb", 5) == b"a\nb"
    assert tail_lines(b"a\n", 0) == b""
    assert (STATUS_EXIT["working"], STATUS_EXIT["paused"], STATUS_EXIT["aborted"]) == (0, 10, 11)


def test_worker_rows_show_icons() -> None:
    w = WorkerInfo(id="w1", repo="r", status="stalled", task_id="T", task_title="t", branch="chkd/T")
    assert worker_rows([w])[0][:3] == ["w1", "🟠 stalled", "T"]


# -- process identity --------------------------------------------------------------------------------
def test_shim_create_time_matches_psutil() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
    try:
        assert shim.create_time(proc.pid) == psutil.Process(proc.pid).create_time()
        assert procs.same_process(proc.pid, shim.create_time(proc.pid))
        assert not procs.same_process(proc.pid, shim.create_time(proc.pid) - 5)
    finally:
        proc.kill()
        proc.wait()


def test_signal_group_checks_identity_first() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"], start_new_session=True)
    try:
        started = psutil.Process(proc.pid).create_time()
        assert not procs.signal_group(proc.pid, proc.pid, started - 10, signal.SIGKILL)  # wrong identity
        assert proc.poll() is None
        assert not procs.signal_group(os.getpgrp(), os.getpid(), psutil.Process().create_time(), 0)  # never ours
        assert procs.group_alive(proc.pid, proc.pid, started)
        assert procs.signal_group(proc.pid, proc.pid, started, signal.SIGKILL)
        proc.wait(5)
        assert not procs.group_alive(proc.pid, proc.pid, started)
        assert not procs.signal_group(proc.pid, proc.pid, started, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- worktrees against real git ------------------------------------------------------------------------
def test_create_worktree_never_reuses_a_directory(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    (tmp_path / "proj-T").mkdir()  # empty, but someone's
    first = worktrees.create_worktree(str(repo), "proj", "T", "main", "../{repo}-{task}", "chkd/")
    second = worktrees.create_worktree(str(repo), "proj", "T", "main", "../{repo}-{task}", "chkd/")
    assert (first.path, first.branch) == (str(tmp_path / "proj-T-2"), "chkd/T")
    assert (second.path, second.branch) == (str(tmp_path / "proj-T-3"), "chkd/T-2")
    assert list((tmp_path / "proj-T").iterdir()) == []
    with pytest.raises(ChkdError, match="no branch 'trunk'"):
        worktrees.create_worktree(str(repo), "proj", "U", "trunk", "../{repo}-{task}", "chkd/")
    assert not (tmp_path / "proj-U").exists()


def test_failed_worktree_add_leaves_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    with pytest.raises(ChkdError):
        worktrees.create_worktree(str(repo), "proj", "bad..name", "main", "../{repo}-{task}", "chkd/")
    assert not (tmp_path / "proj-bad..name").exists()
    assert git(repo, "worktree", "list").count("\n") == 0


def test_remove_checkout_refuses_then_forces_into_the_attic(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    co = worktrees.create_worktree(str(repo), "proj", "T", "main", "../{repo}-{task}", "chkd/")
    wt = Path(co.path)
    (wt / "a.txt").write_text("a\n")
    with pytest.raises(ChkdError, match=r"uncommitted changes in .* \(a\.txt\)") as err:
        worktrees.remove_checkout(str(repo), co.path, co.branch, force=False, target="main")
    assert err.value.code == "refused"
    assert worktrees.commit_all(co.path, "work") is not None
    assert worktrees.commit_all(co.path, "nothing") is None  # clean: no empty commit
    with pytest.raises(ChkdError, match=r"commits on chkd/T whose content is not in main \([0-9a-f]+ work\)"):
        worktrees.remove_checkout(str(repo), co.path, co.branch, force=False, target="main")
    (wt / "b.txt").write_text("b\n")
    out = worktrees.remove_checkout(
        str(repo), co.path, co.branch, force=True, target="main", attic="refs/chkd/attic/w1"
    )
    assert out.worktree_removed and out.branch_deleted and out.snapshot_sha
    assert out.attic_ref == "refs/chkd/attic/w1"
    assert git(repo, "show", "refs/chkd/attic/w1:b.txt") == "b"
    assert [i.ref for i in worktrees.attic_list(str(repo))] == ["refs/chkd/attic/w1"]
    branch, sha = worktrees.attic_restore(str(repo), "w1", "chkd/T")
    assert (branch, sha) == ("chkd/T", out.attic_sha)
    assert worktrees.attic_list(str(repo)) == []


def test_attic_restore_moves_no_ref_but_its_own(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    sha = git(repo, "rev-parse", "main")
    git(repo, "update-ref", "refs/chkd/attic/w1", sha)
    git(repo, "update-ref", "refs/chkd/attic/w1~1", sha, check=False)  # not a valid ref name: never made
    before = git(repo, "for-each-ref")
    for ref, code in [("refs/heads/main", "bad_request"), ("w1~1", "bad_request"), ("w2", "not_found")]:
        with pytest.raises(ChkdError) as err:
            worktrees.attic_restore(str(repo), ref, "oops")
        assert err.value.code == code, err.value
    for branch, code in [("main", "conflict"), ("-f", "bad_request"), ("a..b", "bad_request"), ("", "bad_request")]:
        with pytest.raises(ChkdError) as err:
            worktrees.attic_restore(str(repo), "w1", branch)
        assert err.value.code == code, err.value
    assert git(repo, "for-each-ref") == before
    assert worktrees.attic_restore(str(repo), "w1", "main", explicit=False) == ("main-2", sha)
    assert git(repo, "for-each-ref", "--format=%(refname)") == "refs/heads/main\nrefs/heads/main-2"


def test_remove_checkout_of_merged_work_deletes_without_force(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    co = worktrees.create_worktree(str(repo), "proj", "T", "main", "../{repo}-{task}", "chkd/")
    (Path(co.path) / "a.txt").write_text("a\n")
    worktrees.commit_all(co.path, "work")
    git(repo, "merge", "-q", "--ff-only", co.branch)
    out = worktrees.remove_checkout(str(repo), co.path, co.branch, force=False)
    assert out.worktree_removed and out.branch_deleted and out.attic_ref is None
    # a worktree directory that is already gone is fine too
    co2 = worktrees.create_worktree(str(repo), "proj", "V", "main", "../{repo}-{task}", "chkd/")
    import shutil

    shutil.rmtree(co2.path)
    out = worktrees.remove_checkout(str(repo), co2.path, co2.branch, force=False, target="main")
    assert out.branch_deleted and "proj-V" not in git(repo, "worktree", "list")


def test_remove_checkout_never_deletes_a_directory_git_no_longer_knows(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    co = worktrees.create_worktree(str(repo), "proj", "T", "main", "../{repo}-{task}", "chkd/")
    wt = Path(co.path)
    (wt / ".git").unlink()  # someone broke the link: git can no longer see what is work here
    (wt / "precious.txt").write_text("unsaved\n")
    out = worktrees.remove_checkout(str(repo), co.path, co.branch, force=True, target="main")
    assert (wt / "precious.txt").read_text() == "unsaved\n"
    assert not out.worktree_removed
    assert any("no longer a git worktree" in n for n in out.notes)
