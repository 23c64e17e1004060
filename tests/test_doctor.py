"""`chkdctl doctor`: each finding with a status, a sentence and its fix; exit 1 on any failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from chkd.client import daemonctl
from chkd.daemon import doctor
from chkd.protocol.messages import WorkerShow

from conftest import Daemon, wait_for

CHECKS = [
    "run directory",
    "state directory",
    "config",
    "daemon",
    "git",
    "tmux",
    "workers",
    "stale worktrees",
    "database",
]


def by_check(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in findings}


def test_a_healthy_home_is_all_ok(daemon: Daemon) -> None:
    res = daemon.ctl("doctor", "--json")
    assert res.code == 0, res
    data = res.json()
    assert data["ok"] is True
    assert [f["check"] for f in data["findings"]] == CHECKS
    assert {f["check"]: f["status"] for f in data["findings"]} == dict.fromkeys(CHECKS, "ok")
    text = daemon.ctl("doctor")
    assert text.code == 0
    assert [line.split()[0] for line in text.out.splitlines()] == ["ok"] * len(CHECKS)


def test_doctor_never_starts_the_daemon(chkd_home: Path) -> None:
    d = Daemon(chkd_home)
    res = d.ctl("doctor", "--json", env={"CHKD_NO_AUTOSTART": "0"})
    assert res.code == 0, res  # not running is a warning: the next command starts it
    found = by_check(res.json()["findings"])
    assert found["daemon"]["status"] == "warn"
    assert found["daemon"]["message"].startswith("chkdd is not running")
    assert found["daemon"]["fix"] == "chkdctl daemon start"
    assert not daemonctl.is_running(d.paths)


def test_unsafe_directories_and_a_broken_config_fail_with_their_fixes(chkd_home: Path) -> None:
    d = Daemon(chkd_home)
    d.write_config("heartbeat_s = 'often'\n")
    run, state = d.paths.run, d.paths.state
    run.mkdir(mode=0o700)
    os.chmod(run, 0o755)
    state.mkdir()
    os.chmod(state, 0o755)
    res = d.ctl("doctor", "--json", env={"CHKD_NO_AUTOSTART": "0"})
    assert res.code == 1, res
    found = by_check(res.json()["findings"])
    assert found["run directory"] == {
        "check": "run directory",
        "status": "fail",
        "message": f"The run directory {run} has mode 0755; run `chmod 700 {run}`.",
        "fix": f"chmod 700 {run}",
    }
    assert found["state directory"]["status"] == "warn"  # ours: the daemon tightens it when it starts
    assert found["state directory"]["fix"] == f"chmod 700 {state}"
    assert found["config"]["status"] == "fail" and "'heartbeat_s'" in found["config"]["message"]
    assert found["daemon"]["status"] == "warn" and "not asked" in found["daemon"]["message"]
    assert not (run / "ctl.sock").exists()  # nothing was started in the unsafe directory
    text = d.ctl("doctor")
    assert text.code == 1
    assert f"fix: chmod 700 {run}" in text.out


def test_doctor_lists_what_gc_can_remove(daemon: Daemon, repo: Path) -> None:
    res = daemon.ctl("--json", "spawn", "T1", "--title", "nothing to commit", "--cmd", "true", cwd=repo)
    assert res.code == 0, res
    worker = res.json()
    client = daemon.client()
    wait_for(
        lambda: client.call(WorkerShow(worker=worker["id"])).worker.status == "done", 20, what="the worker to finish"
    )
    shutil.rmtree(worker["worktree"])  # deleted by hand; its branch holds nothing new
    res = daemon.ctl("doctor", "--json")
    assert res.code == 0, res  # a leftover is a warning, not a failure
    stale = by_check(res.json()["findings"])["stale worktrees"]
    assert stale["status"] == "warn"
    assert stale["message"].startswith("1 leftover(s) gc can remove without losing work: worker w1 ")
    assert stale["fix"] == "chkdctl gc --apply"


# -- the daemon's rules, directly -------------------------------------------------------------------------
def test_git_versions() -> None:
    assert doctor.parse_git_version("git version 2.39.5") == (2, 39, 5)
    assert doctor.parse_git_version("git version 2.40.0.windows.1") == (2, 40, 0)
    assert doctor.git_finding("git version 2.38.0\n").status == "ok"
    old = doctor.git_finding("git version 2.34.1\n")
    assert (old.status, old.message) == (
        "fail",
        "git 2.34.1 is too old: chkd needs 2.38 or newer for `git merge-tree --write-tree`.",
    )
    assert old.fix.startswith("install git 2.38 or newer")
    missing = doctor.git_finding(None, "git is not installed or not on PATH.")
    assert (missing.status, missing.message) == ("fail", "chkdd cannot run git: git is not installed or not on PATH.")


NOW = 1_000_000_000
TIMEOUT_MS = 30_000


def row(wid: str, status: str = "working", **kw: Any) -> dict[str, Any]:
    return {
        "id": wid,
        "status": status,
        "pid": 10,
        "shim_pid": 11,
        "heartbeat_at": NOW - 1000,
        "started_at": NOW - 5000,
        "exit_code": None,
        "exit_signal": None,
        **kw,
    }


def test_live_workers_with_nothing_live_behind_them_fail() -> None:
    rows = [
        row("w1"),
        row("w2"),
        row("w3", heartbeat_at=NOW - 45_000),
        row("w4", exit_code=0),
        row("w5", status="done"),
        row("w6"),
    ]
    facts = {
        "w1": (True, True),
        "w2": (False, False),
        "w3": (True, True),
        "w4": (False, False),
        "w5": (False, False),
        "w6": (False, True),
    }
    found = doctor.worker_findings(rows, facts, NOW, TIMEOUT_MS)
    assert [(f.status, f.message, f.fix) for f in found] == [
        (
            "fail",
            "Worker w2 is working but its shim and agent processes are gone; the reaper should have marked it dead.",
            "chkdctl abort w2",
        ),
        (
            "fail",
            "Worker w3 is working but its shim has not heartbeated for 45 s (heartbeat_timeout_s 30); the "
            "reaper should have marked it dead.",
            "chkdctl abort w3",
        ),
    ]  # w4's exit is recorded (nothing to watch), w5 is not live, w6's shim will report its agent's exit


def test_healthy_workers_are_one_ok() -> None:
    found = doctor.worker_findings(
        [row("w1"), row("w2", status="paused")], {"w1": (True, True), "w2": (True, True)}, NOW, TIMEOUT_MS
    )
    assert [(f.status, f.message) for f in found] == [
        ("ok", "2 live worker(s), each with its processes and heartbeats.")
    ]
