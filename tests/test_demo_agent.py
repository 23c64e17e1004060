"""chkd-demo-agent on its own (no daemon needed) and two of them colliding on --conflict-file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, Daemon, git, make_repo, wait_for

DEMO = str(BIN / "chkd-demo-agent")


def run_demo(cwd: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CHKD_WORKER_ID": "w9",
        "CHKD_TASK_ID": "T-9",
        "CHKD_HOME": str(home),
        "CHKD_NO_AUTOSTART": "1",
    }
    return subprocess.run([DEMO, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_demo_agent_steps_commit_and_survive_a_missing_daemon(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    res = run_demo(repo, "--steps", "3", "--step-s", "0", home=tmp_path / "nohome")
    assert res.returncode == 0, res.stderr
    assert "step 3/3: edited chkd-demo-T-9.txt and committed" in res.stdout
    assert "heartbeat not delivered" in res.stdout and "all 3 steps done" in res.stdout
    assert git(repo, "log", "--format=%s", "-3").splitlines() == [f"demo: T-9: step {i}/3" for i in (3, 2, 1)]
    assert (repo / "chkd-demo-T-9.txt").read_text() == "T-9 by w9: step 3 of 3\n"


def test_demo_agent_fail_after_and_conflict_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    res = run_demo(
        repo,
        "--steps",
        "5",
        "--step-s",
        "0",
        "--fail-after",
        "2",
        "--conflict-file",
        "shared/x.txt",
        home=tmp_path / "nohome",
    )
    assert res.returncode == 1 and "failing on purpose after step 2" in res.stdout
    assert git(repo, "log", "--format=%s", "-1") == "demo: T-9: step 2/5"
    assert (repo / "shared" / "x.txt").exists()


def test_demo_agent_rejects_bad_flags(tmp_path: Path) -> None:
    res = run_demo(tmp_path, "--steps", "-1", home=tmp_path)
    assert res.returncode == 2 and "cannot be negative" in res.stderr


@pytest.mark.timeout(60)
def test_two_workers_collide_on_the_conflict_file(daemon: Daemon, repo: Path) -> None:
    for t in ("C1", "C2"):
        res = daemon.ctl(
            "spawn", t, "--title", t, "--cmd", f"{DEMO} --steps 1 --step-s 0 --conflict-file shared.txt", cwd=repo
        )
        assert res.code == 0, res
    for wid in ("w1", "w2"):
        wait_for(
            lambda wid=wid: '"status": "done"' in daemon.ctl("--json", "worker", "show", wid).out,
            15,
            what=f"{wid} done",
        )
    merge = subprocess.run(
        ["git", "merge-tree", "--write-tree", "--name-only", "chkd/C1", "chkd/C2"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert merge.returncode == 1 and "shared.txt" in merge.stdout
