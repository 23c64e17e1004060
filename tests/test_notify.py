"""Notifications end to end: notify_cmd gets done and dead once each, as JSON on stdin."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from chkd.protocol.messages import RepoAdd, Spawn, TaskAdd, WorkerShow

from conftest import Daemon, busy_for, holds, make_repo, shim_of, wait_for

SLEEPER = busy_for(120)


def config(out: Path, enabled: bool) -> str:
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read().strip() + chr(10))"
    return (
        f"heartbeat_s = 0.5\nheartbeat_timeout_s = 3\nstall_timeout_s = 30\nnotify = {str(enabled).lower()}\n"
        f"notify_cmd = ['{sys.executable}', '-c', \"{script}\"]\n"
    )


def received(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def run_done_and_dead(daemon: Daemon, tmp_path: Path) -> tuple[str, str]:

    daemon.call(RepoAdd(path=str(make_repo(tmp_path / "proj"))))
    daemon.call(TaskAdd(title="quick", repo="proj", id="N-1"))
    daemon.call(TaskAdd(title="doomed", repo="proj", id="N-2"))
    ok = daemon.call(
        Spawn(repo="proj", task_id="N-1", cmd=["chkd-demo-agent", "--steps", "1", "--step-s", "0.1"])
    ).worker
    doomed = daemon.call(Spawn(repo="proj", task_id="N-2", cmd=SLEEPER)).worker
    show = lambda wid: daemon.call(WorkerShow(worker=wid)).worker  # noqa: E731
    wait_for(lambda: show(ok.id).status == "done", 20, what="the quick worker to be done")
    wait_for(lambda: show(doomed.id).pid, 15, what="the doomed agent to start")
    shim_of(show(doomed.id)).kill()
    wait_for(lambda: show(doomed.id).status == "dead", 10, what="the doomed worker to be dead")
    return ok.id, doomed.id


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "notified.jsonl"


class TestEnabled:
    @pytest.fixture
    def daemon_config(self, out: Path) -> str:
        return config(out, True)

    @pytest.mark.timeout(60)
    def test_notify_cmd_receives_done_and_dead_once_each(self, daemon: Daemon, tmp_path: Path, out: Path) -> None:
        ok, doomed = run_done_and_dead(daemon, tmp_path)
        wait_for(lambda: len(received(out)) >= 2, 10, what="two notifications")
        # later ticks (requeue, exit reports) must not add repeats
        holds(lambda: len(received(out)) == 2, 1.5, what="exactly two notifications")
        got = received(out)
        assert sorted((e["worker_id"], e["data"]["to"]) for e in got) == sorted([(ok, "done"), (doomed, "dead")])
        dead = next(e for e in got if e["data"]["to"] == "dead")
        assert dead["kind"] == "worker.status" and dead["task_id"] == "N-2" and "shim" in dead["data"]["reason"]
        # a restart neither repeats what was sent nor loses the cursor
        daemon.restart()
        holds(lambda: len(received(out)) == 2, 1.5, what="no repeat after the restart")


class TestDisabled:
    @pytest.fixture
    def daemon_config(self, out: Path) -> str:
        return config(out, False)

    @pytest.mark.timeout(60)
    def test_notify_false_sends_nothing(self, daemon: Daemon, tmp_path: Path, out: Path) -> None:
        run_done_and_dead(daemon, tmp_path)
        holds(lambda: received(out) == [], 1.5, what="no notification")


class TestEscalation:
    @pytest.fixture
    def daemon_config(self, out: Path) -> str:
        return config(out, True)

    @pytest.mark.timeout(60)
    def test_escalation_is_notified(self, daemon: Daemon, tmp_path: Path, out: Path) -> None:
        daemon.call(RepoAdd(path=str(make_repo(tmp_path / "proj"))))
        daemon.call(TaskAdd(title="one shot", repo="proj", id="E-1", max_attempts=1))
        daemon.call(Spawn(repo="proj", task_id="E-1", cmd=["sh", "-c", "sleep 0.5; kill -9 $PPID; sleep 60"]))
        wait_for(
            lambda: {e["kind"] for e in received(out)} >= {"worker.status", "task.escalated"},
            15,
            what="dead and escalation notifications",
        )
        got = received(out)
        esc = [e for e in got if e["kind"] == "task.escalated"]
        assert len(esc) == 1 and esc[0]["task_id"] == "E-1" and esc[0]["data"]["attempts"] == 1
