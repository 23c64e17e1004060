"""Workspaces (issue 14): setup_cmd and copy in every new worktree, `repo edit`, never committing a copy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_merge import CONFIG, add_repo, done_worker, worker

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import Merge, MergeShow, Spawn, TaskAdd, TaskShow

from conftest import Daemon, git, make_repo, wait_for


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


def _py(code: str) -> str:
    """A shell-quoted `python -c CODE` for `repo edit --setup-cmd`."""
    import shlex

    return shlex.join([sys.executable, "-c", code])


def test_setup_cmd_runs_in_each_new_worktree_before_the_agent(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", {"README.md": "x\n", ".gitignore": "setup-ran.txt\n"})
    add_repo(daemon, repo)
    setup = (
        "import os, pathlib; print('SETUP-SAYS-HELLO'); "
        "pathlib.Path('setup-ran.txt').write_text(os.environ['CHKD_WORKTREE'] + '|' + "
        "os.environ['CHKD_MAIN_CHECKOUT'] + '|' + os.getcwd())"
    )
    res = daemon.ctl("repo", "edit", "proj", "--setup-cmd", _py(setup))
    assert res.code == 0, res
    assert "setup_cmd = " in res.out and "(database)" in res.out
    # setup ran in the worktree itself, with both paths in its environment, its output in the worker log
    w = done_worker(daemon, repo, "needs setup", {"f.txt": "1\n"})
    wt = Path(w.worktree)
    assert (wt / "setup-ran.txt").read_text() == f"{wt}|{repo}|{wt}"
    assert "SETUP-SAYS-HELLO" in Path(w.log_path).read_text()


def test_a_failing_setup_is_an_error_with_the_log_tail_and_a_failed_attempt(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    add_repo(daemon, repo)
    assert (
        daemon.ctl(
            "repo", "edit", "proj", "--setup-cmd", _py("print('npm ERR! missing lockfile'); raise SystemExit(4)")
        ).code
        == 0
    )
    task = daemon.call(TaskAdd(title="t", repo=str(repo))).task
    with pytest.raises(ChkdError) as err:
        daemon.call(Spawn(repo=str(repo), task_id=task.id, cmd=[sys.executable, "-c", "pass"]))
    assert "setup_cmd" in err.value.message and "exit 4" in err.value.message
    w = worker(daemon, "w1")
    assert w.status == "error"
    assert "npm ERR! missing lockfile" in (w.last_error or "")
    shown = daemon.call(TaskShow(id=task.id, repo=str(repo))).task
    assert shown.attempts == 1 and shown.status == "pending"


AGENT_ADD_ALL = r"""
import pathlib, subprocess
assert pathlib.Path('.env').read_text() == 'SECRET=1\n'
pathlib.Path('feature.txt').write_text('done\n')
subprocess.run(['git', 'add', 'feature.txt'], check=True)
subprocess.run(['git', 'commit', '-q', '-m', 'feature'], check=True)
pathlib.Path('leftover.txt').write_text('uncommitted\n')  # chkd commits this one at exit, never .env
"""


def test_copy_brings_an_untracked_env_in_and_it_is_never_committed(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    (repo / ".env").write_text("SECRET=1\n")  # untracked in the main checkout, not ignored
    add_repo(daemon, repo)
    assert daemon.ctl("repo", "edit", "proj", "--copy", ".env", "--copy", "config/*.local.toml").code == 0
    task = daemon.call(TaskAdd(title="uses env", repo=str(repo))).task
    w = daemon.call(Spawn(repo=str(repo), task_id=task.id, cmd=[sys.executable, "-c", AGENT_ADD_ALL])).worker
    w = wait_for(lambda: (x := worker(daemon, w.id)).status in ("done", "error") and x, 20, what="the worker")
    assert w.status == "done", w
    branch_files = git(repo, "ls-tree", "-r", "--name-only", w.branch).split()
    assert "leftover.txt" in branch_files and ".env" not in branch_files
    m = daemon.call(Merge(worker=w.id, strategy="auto")).merge
    m = wait_for(
        lambda: (x := daemon.call(MergeShow(id=m.id)).merge).status in ("merged", "failed") and x, 20, what="the merge"
    )
    assert m.status == "merged", m.log
    assert ".env" not in git(repo, "ls-tree", "-r", "--name-only", "main").split()
    assert not Path(w.worktree).exists()  # the copy did not make the worktree look dirty


def test_a_branch_that_commits_a_copied_file_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    (repo / ".env").write_text("SECRET=1\n")
    add_repo(daemon, repo)
    assert daemon.ctl("repo", "edit", "proj", "--copy", ".env").code == 0
    w = done_worker(daemon, repo, "careless agent", {"x.txt": "1\n"})  # its agent runs `git add -A`
    assert ".env" in git(repo, "ls-tree", "-r", "--name-only", w.branch).split()
    before = git(repo, "rev-parse", "main")
    m = daemon.call(Merge(worker=w.id, strategy="auto")).merge
    m = wait_for(
        lambda: (x := daemon.call(MergeShow(id=m.id)).merge).status in ("merged", "failed") and x, 20, what="the merge"
    )
    assert m.status == "failed" and ".env" in m.log and "copied" in m.log
    assert git(repo, "rev-parse", "main") == before


def test_repo_edit_validates_and_names_where_a_setting_lives(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    add_repo(daemon, repo)
    daemon.write_config(CONFIG + '\n[repos.proj]\ntest_cmd = ["true"]\n')
    daemon.restart()
    shadowed = daemon.ctl("repo", "edit", "proj", "--test-cmd", "pytest -q")
    assert shadowed.code != 0 and "config.toml" in shadowed.err and "nothing was changed" in shadowed.err
    bad = daemon.ctl("repo", "edit", "proj", "--copy", "../outside")
    assert bad.code != 0 and "'copy'" in bad.err and "Traceback" not in bad.err
    unknown = daemon.ctl("repo", "edit", "proj", "--unset", "colour")
    assert unknown.code != 0 and "no repository setting 'colour'" in unknown.err
    ok = daemon.ctl("repo", "edit", "proj", "--pool-size", "0", "--merge-batch", "2", "--gate-strict", "--json")
    assert ok.code == 0, ok
    info = ok.json()["repo"]
    assert info["settings"]["merge_batch"] == 2 and info["settings"]["gate_strict"] is True
    assert info["settings"]["test_cmd"] == ["true"] and info["from_config"] == ["test_cmd"]
    shown = daemon.ctl("repo", "show", "proj")
    assert "test_cmd = true  (config.toml)" in shown.out and "merge_batch = 2  (database)" in shown.out
    daemon.restart()  # stored in the database: it survives a restart
    again = json.loads(daemon.ctl("repo", "show", "proj", "--json").out)
    assert again["settings"]["merge_batch"] == 2
    assert daemon.ctl("repo", "edit", "proj", "--unset", "merge_batch").code == 0
    assert "merge_batch" not in json.loads(daemon.ctl("repo", "show", "proj", "--json").out)["settings"]
