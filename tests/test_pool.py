"""The warm pool (issue 14): spawn takes a ready worktree, brought to the current tip; refill survives kill -9."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from test_merge import CONFIG, add_repo, commit_on_main, events, worker

from chkd.daemon import worktrees
from chkd.protocol.messages import RepoList, Spawn, TaskAdd

from conftest import Daemon, git, make_repo, wait_for

#: Counts its runs in a file outside the repository, so a test can tell setup ran and where.
SETUP = "import os, sys; open(sys.argv[1], 'a').write(os.getcwd() + '\\n'); open('.ready', 'w').write('1')"
#: The agent: proves its worktree is set up, then exits 0.
AGENT = "import os, sys; sys.exit(0 if os.path.exists('.ready') else 3)"


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


def pool_ready(daemon: Daemon) -> int:
    return daemon.call(RepoList()).repos[0].pool_ready


def pooled_repo(daemon: Daemon, tmp_path: Path, size: int = 1) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "proj", {"README.md": "x\n", ".gitignore": ".ready\n", "deps.txt": "a==1\n"})
    runs = tmp_path / "setup-runs.txt"
    add_repo(daemon, repo)
    res = daemon.ctl(
        "repo",
        "edit",
        "proj",
        "--setup-cmd",
        shlex.join([sys.executable, "-c", SETUP, str(runs)]),
        "--setup-input",
        "deps.txt",
        "--pool-size",
        str(size),
    )
    assert res.code == 0, res
    return repo, runs


def spawn(daemon: Daemon, repo: Path, title: str) -> object:
    task = daemon.call(TaskAdd(title=title, repo=str(repo))).task
    return daemon.call(Spawn(repo=str(repo), task_id=task.id, cmd=[sys.executable, "-c", AGENT])).worker


def test_spawn_takes_a_warm_worktree_and_the_pool_refills(daemon: Daemon, tmp_path: Path) -> None:
    repo, runs = pooled_repo(daemon, tmp_path)
    wait_for(lambda: pool_ready(daemon) == 1, 20, what="a warm worktree")
    [warm] = [e.data.path for e in events(daemon, "pool.ready")]
    assert runs.read_text().splitlines() == [warm]  # set up once, where it was made
    w = spawn(daemon, repo, "first")
    assert [e.data.path for e in events(daemon, "pool.taken")] == [warm]
    assert not Path(warm).exists() and Path(w.worktree).is_dir()
    assert git(w.worktree, "branch", "--show-current") == w.branch
    assert worktrees.read_marker(w.worktree)["purpose"] == "worker"  # the worker's now, not the pool's
    done = wait_for(lambda: (x := worker(daemon, w.id)).status in ("done", "error") and x, 20, what="the agent")
    assert done.status == "done", done  # .ready from the pool's setup was there
    wait_for(lambda: len(events(daemon, "pool.ready")) == 2, 20, what="the refill")
    assert len(runs.read_text().splitlines()) == 2  # the take did not set up again: only the refill did
    assert daemon.ctl("repo", "rm", "proj").code == 0  # the pool is chkd's: it goes with the repository
    wait_for(lambda: ".chkd-pool" not in git(repo, "worktree", "list"), 10, what="the pool's worktrees to go")


def test_a_pooled_worktree_is_brought_to_the_new_tip(daemon: Daemon, tmp_path: Path) -> None:
    repo, runs = pooled_repo(daemon, tmp_path)
    wait_for(lambda: pool_ready(daemon) == 1, 20, what="a warm worktree")
    tip = commit_on_main(repo, {"new-on-main.txt": "fresh\n"})
    w = spawn(daemon, repo, "after main moved")
    assert [e.data.path for e in events(daemon, "pool.taken")], "the spawn did not use the pool"
    assert git(w.worktree, "rev-parse", "HEAD") == tip
    assert (Path(w.worktree) / "new-on-main.txt").read_text() == "fresh\n"
    started = [e for e in events(daemon, "worker.started") if e.worker_id == w.id]
    assert started[0].data.base == tip
    assert w.worktree not in runs.read_text().splitlines()  # setup's inputs did not change: no re-run
    # main changes a setup input: the next pooled worktree is set up again in the worker's place
    wait_for(lambda: pool_ready(daemon) == 1, 20, what="the refill")
    commit_on_main(repo, {"deps.txt": "a==2\n"})
    w2 = spawn(daemon, repo, "after the inputs changed")
    assert len(list(events(daemon, "pool.taken"))) == 2
    assert w2.worktree in runs.read_text().splitlines()  # set up again where the worker works


def test_a_kill_9_mid_refill_leaves_nothing_unaccounted(daemon: Daemon, tmp_path: Path) -> None:
    repo, _ = pooled_repo(daemon, tmp_path, size=0)
    daemon.arm("pool.created")  # dies after `git worktree add` + marker, before setup
    # armed first: a refill started before the restart could finish, and then none would be cut off
    assert daemon.ctl("repo", "edit", "proj", "--pool-size", "1").code == 0
    daemon.wait_dead()
    daemon.start()
    wait_for(lambda: pool_ready(daemon) == 1, 20, what="the refill after the restart")
    listed = [ln.split()[0] for ln in git(repo, "worktree", "list").splitlines()[1:]]
    [ready] = [e.data.path for e in events(daemon, "pool.ready")]
    assert listed == [ready]  # the cut-off entry is gone, only the ready one is left
    assert sorted(p.name for p in Path(ready).parent.iterdir()) == [Path(ready).name]
    gc = daemon.ctl("gc")
    assert gc.code == 0 and ".chkd-pool" not in gc.out + gc.err, gc  # gc knows the pool's: nothing to flag


def test_a_warm_worktree_deleted_by_hand_falls_back_to_a_fresh_checkout(daemon: Daemon, tmp_path: Path) -> None:
    import shutil

    repo, _runs = pooled_repo(daemon, tmp_path)
    wait_for(lambda: pool_ready(daemon) == 1, 20, what="a warm worktree")
    [warm] = [e.data.path for e in events(daemon, "pool.ready")]
    shutil.rmtree(warm)
    w = spawn(daemon, repo, "pool entry gone")
    assert Path(w.worktree, ".ready").exists()  # set up in its own place, as without a pool
    assert "could not be used" in Path(w.log_path).read_text()
    done = wait_for(lambda: (x := worker(daemon, w.id)).status in ("done", "error") and x, 20, what="the agent")
    assert done.status == "done", done
    wait_for(lambda: warm not in git(repo, "worktree", "list"), 10, what="the broken entry's registration to go")
