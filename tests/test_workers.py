"""Workers against a real daemon, real git and real processes: spawn, pause/resume/abort, rm, attic, restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from chkd.protocol.messages import WorkerList, WorkerShow

from conftest import BIN, Daemon, git, wait_for

DEMO = str(BIN / "chkd-demo-agent")


# -- helpers ------------------------------------------------------------------------------------
def spawn(daemon: Daemon, repo: Path, task: str, cmd: str | None = None, *extra: str, title: str | None = None) -> Any:
    args = ["--json", "spawn", task, "--title", title or f"task {task}"]
    if cmd is not None:
        args += ["--cmd", cmd]
    res = daemon.ctl(*args, *extra, cwd=repo)
    assert res.code == 0, res
    return res.json()


def show(daemon: Daemon, wid: str) -> Any:
    return daemon.call(WorkerShow(worker=wid)).worker


def wait_status(daemon: Daemon, wid: str, *statuses: str, timeout: float = 20.0) -> Any:
    return wait_for(
        lambda: (w := show(daemon, wid)).status in statuses and w,
        timeout,
        what=f"{wid} to become {'/'.join(statuses)} (log: {_log(daemon, wid)[-600:]!r})",
    )


def _log(daemon: Daemon, wid: str) -> str:
    try:
        return daemon.paths.worker_log(wid).read_text(errors="replace")
    except OSError:
        return ""


def proc_state(pid: int) -> str | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()[0].decode()


def alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state != "Z"


def group_pids(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and alive(p.pid):
                out.append(p.pid)
        except OSError:
            continue
    return out


def task_status(daemon: Daemon, repo: Path, task: str) -> str:
    res = daemon.ctl("--json", "task", "show", task, cwd=repo)
    assert res.code == 0, res
    data = res.json()
    return (data.get("task") or data)["status"]


# -- spawn ------------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_three_demo_workers_in_parallel_each_get_worktree_branch_and_commit(daemon: Daemon, repo: Path) -> None:
    started = [spawn(daemon, repo, f"T{i}", f"{DEMO} --steps 2 --step-s 0.1") for i in (1, 2, 3)]
    assert [w["id"] for w in started] == ["w1", "w2", "w3"]
    for i, w in enumerate(started, 1):
        assert w["branch"] == f"chkd/T{i}"
        assert w["worktree"] == str(repo.parent / f"proj-T{i}")
        assert Path(w["worktree"], ".git").is_file()
    for w in started:
        done = wait_status(daemon, w["id"], "done", "error")
        assert done.status == "done", _log(daemon, w["id"])
        assert done.exit_code == 0 and done.tokens_in > 0 and done.message.startswith("step 2/2")
    for i in (1, 2, 3):
        subjects = git(repo, "log", "--format=%s", f"main..chkd/T{i}").splitlines()
        assert subjects == [f"demo: T{i}: step 2/2", f"demo: T{i}: step 1/2"]
        assert git(repo, "show", f"chkd/T{i}:chkd-demo-T{i}.txt") == f"T{i} by w{i}: step 2 of 2"
        assert task_status(daemon, repo, f"T{i}") == "review"
    listing = daemon.ctl("workers", cwd=repo)
    assert listing.code == 0 and "✅ done" in listing.out and "chkd/T3" in listing.out
    ps = daemon.ctl("--json", "ps", cwd=repo)
    assert [w["id"] for w in ps.json()] == ["w1", "w2", "w3"]


@pytest.mark.timeout(60)
def test_spawn_prints_id_worktree_branch_and_worker_show_prefix(daemon: Daemon, repo: Path) -> None:
    res = daemon.ctl("spawn", "fix-1", "--title", "Fix it", "--cmd", f"{DEMO} --steps 1 --step-s 0", cwd=repo)
    assert res.code == 0, res
    assert res.out.startswith("w1 ") and "fix-1: Fix it" in res.out
    assert f"worktree {repo.parent / 'proj-fix-1'}" in res.out and "branch   chkd/fix-1" in res.out
    wait_status(daemon, "w1", "done")
    shown = daemon.ctl("worker", "show", "w", cwd=repo)  # a unique prefix
    assert shown.code == 0 and "✅ done" in shown.out and "exit code  0" in shown.out


@pytest.mark.timeout(60)
def test_taken_path_and_branch_get_numbered_suffixes(daemon: Daemon, repo: Path) -> None:
    (repo.parent / "proj-T1").mkdir()
    (repo.parent / "proj-T1" / "someone-elses.txt").write_text("keep me\n")
    git(repo, "branch", "chkd/T1")
    w = spawn(daemon, repo, "T1", f"{DEMO} --steps 1 --step-s 0")
    assert w["worktree"] == str(repo.parent / "proj-T1-2")
    assert w["branch"] == "chkd/T1-2"
    assert (repo.parent / "proj-T1" / "someone-elses.txt").read_text() == "keep me\n"
    wait_status(daemon, "w1", "done")
    assert git(repo, "rev-parse", "chkd/T1") == git(repo, "rev-parse", "main")  # untouched


def _nothing_changed(daemon: Daemon, repo: Path, before_dirs: set[str]) -> None:
    assert daemon.call(WorkerList(all=True)).workers == []
    assert git(repo, "branch", "--list", "chkd/*") == ""
    assert {p.name for p in repo.parent.iterdir()} == before_dirs


@pytest.mark.timeout(60)
def test_spawn_errors_are_sentences_and_change_nothing(daemon: Daemon, repo: Path, tmp_path: Path) -> None:
    before = {p.name for p in repo.parent.iterdir()}
    unknown = daemon.ctl("spawn", "NOPE", cwd=repo)
    assert unknown.code == 1 and "has no task 'NOPE'" in unknown.err and "--title" in unknown.err
    before = {p.name for p in repo.parent.iterdir()}
    missing = daemon.ctl("spawn", "T1", "--title", "x", "--repo", str(tmp_path / "no-such-dir"), cwd=repo)
    assert missing.code == 1 and "No registered repository" in missing.err
    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    before = {p.name for p in repo.parent.iterdir()}
    not_repo = daemon.ctl("spawn", "T1", "--title", "x", "--repo", str(plain), cwd=repo)
    assert not_repo.code == 1 and "not inside a git repository" in not_repo.err
    bad_agent = daemon.ctl("spawn", "T1", "--title", "x", "--agent", "nobody", cwd=repo)
    assert bad_agent.code == 1 and "no agent profile 'nobody'" in bad_agent.err
    nothing = daemon.ctl("spawn", "--next", cwd=repo)
    assert nothing.code == 3 and "ready to be claimed" in nothing.err
    _nothing_changed(daemon, repo, before)
    assert "T1" not in daemon.ctl("task", "list", cwd=repo).out


@pytest.fixture
def daemon_config() -> str:
    return (
        "heartbeat_s = 0.5\nheartbeat_timeout_s = 5\nstall_timeout_s = 60\nabort_grace_s = 1\n"
        "notify = false\nmax_workers = 3\n"
    )


@pytest.mark.timeout(60)
def test_max_workers_refuses_with_count_and_how_to_raise(daemon: Daemon, repo: Path) -> None:
    for t in ("A", "B", "B2"):
        spawn(daemon, repo, t, f"{DEMO} --hang")
    before = {p.name for p in repo.parent.iterdir()}
    res = daemon.ctl("spawn", "C", "--title", "third", "--cmd", f"{DEMO} --hang", cwd=repo)
    assert res.code == 1
    assert "3 workers already run in 'proj'" in res.err and "(3)" in res.err
    assert "[repos.\"proj\"] max_workers" in res.err
    assert {p.name for p in repo.parent.iterdir()} == before
    assert [w.id for w in daemon.call(WorkerList(all=True)).workers] == ["w1", "w2", "w3"]
    assert "C" not in daemon.ctl("task", "list", cwd=repo).out
    assert git(repo, "branch", "--list", "chkd/C") == ""
    # a finished worker frees its slot
    daemon.ctl("abort", "w1", cwd=repo)
    assert spawn(daemon, repo, "C", f"{DEMO} --steps 1 --step-s 0")["id"] == "w4"
    daemon.ctl("abort", "--all", cwd=repo)


# -- pause / resume / abort ------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_pause_freezes_the_whole_group_and_resume_continues(daemon: Daemon, repo: Path) -> None:
    w = spawn(daemon, repo, "P", f"{DEMO} --steps 40 --step-s 0.15 --spawn-child")
    running = wait_for(lambda: (x := show(daemon, w["id"])).pid and x.message and x, 20, what="first heartbeat")
    pgid = running.pgid
    members = wait_for(lambda: len(g := group_pids(pgid)) >= 2 and g, 10, what="the grandchild")
    res = daemon.ctl("pause", "w1", cwd=repo)
    assert res.code == 0 and "🟡 paused" in res.out
    frozen_group = wait_for(
        lambda: (g := group_pids(pgid)) and all(proc_state(p) == "T" for p in g) and g,
        5,
        what="process state T for the whole group",
    )
    assert running.pid in frozen_group and set(members) <= set(frozen_group) | {p for p in members if not alive(p)}
    paused_at = int(time.time() * 1000)
    # a shim beat processed after the pause: any agent heartbeat sent before the SIGSTOP is in too
    frozen = wait_for(lambda: (x := show(daemon, "w1")).heartbeat_at > paused_at and x, 10, what="a shim beat")
    later = wait_for(
        lambda: (x := show(daemon, "w1")).heartbeat_at >= frozen.heartbeat_at + 1000 and x,
        10,
        what="the shim heartbeating on for a second",
    )  # the shim still proves the processes live
    assert later.status == "paused"
    assert (later.message, later.activity_at, later.tokens_in) == (frozen.message, frozen.activity_at, frozen.tokens_in)
    again = daemon.ctl("pause", "w1", cwd=repo)
    assert again.code == 1 and "already paused" in again.err
    res = daemon.ctl("resume", "w1", cwd=repo)
    assert res.code == 0 and "🟢 working" in res.out
    wait_for(lambda: proc_state(running.pid) in ("S", "R", "D"), 5, what="the agent running again")
    wait_for(lambda: show(daemon, "w1").message != frozen.message, 10, what="heartbeats after resume")
    daemon.ctl("abort", "w1", cwd=repo)


@pytest.mark.timeout(60)
def test_abort_kills_agent_and_grandchild_but_not_a_decoy(daemon: Daemon, repo: Path) -> None:
    decoy = subprocess.Popen(
        [DEMO, "--hang", "--spawn-child"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "CHKD_HOME"},
    )
    try:
        decoy.stdout.readline()
        decoy_child = int(decoy.stdout.readline().split()[-1])
        spawn(daemon, repo, "H", f"{DEMO} --hang --spawn-child")
        w = wait_for(lambda: (x := show(daemon, "w1")).pid and x, 10, what="agent pid")
        members = wait_for(lambda: len(g := group_pids(w.pgid)) >= 2 and g, 10, what="the grandchild")
        res = daemon.ctl("abort", "w1", cwd=repo)
        assert res.code == 0 and "⛔ aborted" in res.out
        wait_for(lambda: not any(alive(p) for p in members), 10, what="agent and grandchild gone")
        assert decoy.poll() is None and alive(decoy_child)
        aborted = show(daemon, "w1")
        assert aborted.status == "aborted" and aborted.last_error == "aborted by the user"
        assert task_status(daemon, repo, "H") == "pending"  # released, not a failed attempt
        data = daemon.ctl("--json", "task", "show", "H", cwd=repo).json()
        assert (data.get("task") or data).get("attempts", 0) == 0
        wrong = daemon.ctl("pause", "w1", cwd=repo)
        assert wrong.code == 1 and "Worker w1 is aborted; only a running worker can be paused." in wrong.err
        assert daemon.ctl("abort", "w1", cwd=repo).code == 1
    finally:
        os.killpg(decoy.pid, signal.SIGKILL)
        decoy.wait(5)


@pytest.mark.timeout(60)
def test_abort_escalates_to_sigkill_after_the_grace_period(daemon: Daemon, repo: Path) -> None:
    stubborn = (
        "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('stubborn', flush=True)\n"
        "while True: signal.pause()"
    )
    spawn(daemon, repo, "S", f"{sys.executable} -c \"{stubborn}\"")
    w = wait_for(lambda: (x := show(daemon, "w1")).pid and x, 10, what="agent pid")
    t0 = time.monotonic()
    assert daemon.ctl("abort", "w1", "--cancel-task", cwd=repo).code == 0
    assert alive(w.pid)  # SIGTERM ignored
    wait_for(lambda: not alive(w.pid), 10, what="SIGKILL after abort_grace_s")
    assert time.monotonic() - t0 >= 0.9
    assert task_status(daemon, repo, "S") == "cancelled"


def test_pause_resume_abort_usage_errors(daemon: Daemon, repo: Path) -> None:
    assert daemon.ctl("pause", cwd=repo).code == 2
    res = daemon.ctl("resume", "w9", cwd=repo)
    assert res.code == 1 and "No worker has the id 'w9'" in res.err
    res = daemon.ctl("pause", "--all", cwd=repo)
    assert res.code == 0 and "No worker to pause." in res.out


# -- agent exit ------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_nonzero_exit_is_error_and_counts_an_attempt(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "F", f"{DEMO} --steps 3 --step-s 0 --fail-after 1")
    w = wait_status(daemon, "w1", "error", "done")
    assert w.status == "error" and w.exit_code == 1 and "exited with code 1" in w.last_error
    data = daemon.ctl("--json", "task", "show", "F", cwd=repo).json()
    task = data.get("task") or data
    assert task["status"] == "pending" and task["attempts"] == 1


@pytest.mark.timeout(60)
def test_exit_zero_commits_leftover_work(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "L", "sh -c 'echo left > leftover.txt'", title="Leave work uncommitted")
    wait_status(daemon, "w1", "done")
    # `done` comes only after the commit, so a merge started right now sees the work
    assert git(repo, "log", "-1", "--format=%s", "chkd/L") == "chkd: L: Leave work uncommitted"
    assert git(repo, "show", "chkd/L:leftover.txt") == "left"
    assert task_status(daemon, repo, "L") == "review"


@pytest.mark.timeout(60)
def test_done_from_inside_the_worker_commits_with_summary(daemon: Daemon, repo: Path) -> None:
    script = "echo hi > out.txt && chkdctl done --summary 'wrote out'"
    spawn(daemon, repo, "D", f"sh -c \"{script}\"")
    w = wait_status(daemon, "w1", "done")
    assert w.message == "wrote out"
    assert git(repo, "log", "-1", "--format=%s", "chkd/D") == "chkd: D: wrote out"
    assert task_status(daemon, repo, "D") == "review"
    again = daemon.ctl("done", "--worker", "w1", cwd=repo)
    assert again.code == 1 and "is done" in again.err


def test_agent_commands_need_a_worker_id(daemon: Daemon, repo: Path) -> None:
    res = daemon.ctl("heartbeat", "--message", "hi", cwd=repo)
    assert res.code == 1 and "CHKD_WORKER_ID" in res.err


@pytest.mark.timeout(60)
def test_worker_status_exit_codes_and_heartbeat(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "S", f"{DEMO} --hang")
    wait_status(daemon, "w1", "working")
    env = {"CHKD_WORKER_ID": "w1"}
    res = daemon.ctl("worker-status", cwd=repo, env=env)
    assert (res.code, res.out.strip()) == (0, "working")
    hb = daemon.ctl(
        "heartbeat",
        "--message",
        "thinking",
        "--tokens-in",
        "10",
        "--tokens-out",
        "5",
        "--cost",
        "0.01",
        cwd=repo,
        env=env,
    )
    assert hb.code == 0, hb
    hb = daemon.ctl("heartbeat", "--tokens-in", "1", cwd=repo, env=env)
    w = show(daemon, "w1")
    assert (w.message, w.tokens_in, w.tokens_out, round(w.cost_usd, 4)) == ("thinking", 11, 5, 0.01)
    daemon.ctl("pause", "w1", cwd=repo)
    res = daemon.ctl("worker-status", cwd=repo, env=env)
    assert (res.code, res.out.strip()) == (10, "paused")
    daemon.ctl("abort", "w1", cwd=repo)
    res = daemon.ctl("worker-status", "--worker", "w1", cwd=repo)
    assert (res.code, res.out.strip()) == (11, "aborted")


# -- logs ------------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_logs_tail_and_follow(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "G", f"{DEMO} --steps 3 --step-s 0.3")
    follow = subprocess.Popen(
        [str(BIN / "chkdctl"), "logs", "w1", "-f"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CHKD_HOME": str(daemon.home), "CHKD_NO_AUTOSTART": "1"},
    )
    out, err = follow.communicate(timeout=30)  # returns by itself once the worker is done
    assert follow.returncode == 0, err
    assert "step 1/3" in out and "all 3 steps done" in out and "exited with code 0" in out
    last = daemon.ctl("logs", "w1", "-n", "1", cwd=repo)
    assert last.code == 0 and last.out.count("\n") == 1 and "exited with code 0" in last.out


# -- rm and the attic ------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_rm_refuses_then_force_keeps_an_attic_ref_that_restores(daemon: Daemon, repo: Path) -> None:
    w = spawn(daemon, repo, "R", f"{DEMO} --steps 1 --step-s 0")
    wait_status(daemon, "w1", "done")
    wt = Path(w["worktree"])
    live = daemon.ctl("rm", "w1", cwd=repo)
    assert live.code == 1 and "commits on chkd/R whose content is not in main" in live.err
    assert "demo: R: step 1/1" in live.err and "--force" in live.err
    (wt / "notes.txt").write_text("uncommitted\n")
    dirty = daemon.ctl("rm", "w1", cwd=repo)
    assert dirty.code == 1 and "uncommitted changes" in dirty.err and "notes.txt" in dirty.err
    assert wt.exists() and git(repo, "branch", "--list", "chkd/R")
    forced = daemon.ctl("rm", "w1", "--force", cwd=repo)
    assert forced.code == 0 and "refs/chkd/attic/w1" in forced.out
    assert not wt.exists() and git(repo, "branch", "--list", "chkd/R") == ""
    listed = daemon.ctl("--json", "attic", "list", cwd=repo).json()
    assert [(e["worker_id"], e["ref"]) for e in listed] == [("w1", "refs/chkd/attic/w1")]
    restored = daemon.ctl("attic", "restore", "w1", cwd=repo)
    assert restored.code == 0 and "as branch chkd/R" in restored.out
    assert git(repo, "show", "chkd/R:notes.txt") == "uncommitted"
    assert git(repo, "show", "chkd/R:chkd-demo-R.txt") == "R by w1: step 1 of 1"
    assert daemon.ctl("--json", "attic", "list", cwd=repo).json() == []
    gone = daemon.ctl("worker", "show", "w1", cwd=repo)
    assert gone.code == 1 and "No worker" in gone.err


@pytest.mark.timeout(60)
def test_rm_of_merged_content_needs_no_force_and_live_worker_is_refused(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "M", f"{DEMO} --steps 1 --step-s 0")
    wait_status(daemon, "w1", "done")
    git(repo, "merge", "--squash", "chkd/M")
    git(repo, "commit", "-q", "-m", "squash M")
    res = daemon.ctl("rm", "w1", cwd=repo)
    assert res.code == 0 and "refs/chkd/attic" not in res.out, res
    spawn(daemon, repo, "N", f"{DEMO} --hang")
    refused = daemon.ctl("rm", "w2", cwd=repo)
    assert refused.code == 1 and "abort it first" in refused.err
    daemon.ctl("abort", "w2", cwd=repo)


# -- restart ---------------------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_daemon_restart_mid_run_workers_keep_working(daemon: Daemon, repo: Path) -> None:
    for t in ("X", "Y"):
        spawn(daemon, repo, t, f"{DEMO} --steps 20 --step-s 0.25")
    wait_for(lambda: all(show(daemon, w).message for w in ("w1", "w2")), 15, what="first heartbeats")
    daemon.kill()
    wait_for(
        lambda: all("heartbeat not delivered" in _log(daemon, w) for w in ("w1", "w2")),
        15,
        what="agents working on without a daemon",
    )
    daemon.start()
    listed = daemon.call(WorkerList()).workers
    assert [(w.id, w.status) for w in listed] == [("w1", "working"), ("w2", "working")], (
        listed,
        _log(daemon, "w1")[-500:],
        [ln for ln in daemon.log_lines() if ln.get("worker") or ln.get("level") != "info"],
    )
    before = {w.id: w.heartbeat_at for w in listed}
    wait_for(
        lambda: all(show(daemon, w).heartbeat_at > before[w] for w in before),
        10,
        what="shims heartbeating the restarted daemon",
    )
    for wid in ("w1", "w2"):
        assert wait_status(daemon, wid, "done", "error", "dead", timeout=30).status == "done"
    assert git(repo, "log", "-1", "--format=%s", "chkd/X") == "demo: X: step 20/20"


@pytest.mark.timeout(60)
def test_exit_report_is_delivered_after_the_daemon_comes_back(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "E", f"{DEMO} --steps 2 --step-s 0.6")
    wait_status(daemon, "w1", "working")
    daemon.stop()
    wait_for(lambda: "exited with code 0" in _log(daemon, "w1"), 15, what="the agent finishing while nobody listens")
    daemon.start()
    w = wait_status(daemon, "w1", "done", "error", "dead", timeout=20)
    assert w.status == "done" and w.exit_code == 0
