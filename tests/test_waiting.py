"""The `waiting` status without tmux (a detached agent reporting `heartbeat --waiting`), the
terminal commands' sentences for a detached worker, and the pure parts: tmux argv, the
notification's words and its once-per-question rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chkd.daemon import notify
from chkd.protocol import events as ev
from chkd.protocol import tmux
from chkd.protocol.messages import Event, RepoAdd, Spawn, TaskAdd, WorkerShow

from conftest import Daemon, holds, make_repo, wait_for

#: Says something, then sleeps silently (alive, no activity of its own).
TALKER = [sys.executable, "-c", "import time; print('detached agent here', flush=True); time.sleep(120)"]


@pytest.fixture
def daemon_config() -> str:
    return "heartbeat_s = 0.5\nheartbeat_timeout_s = 3\nstall_timeout_s = 1\nabort_grace_s = 1\nnotify = false\n"


@pytest.mark.timeout(60)
def test_heartbeat_waiting_sets_waiting_never_stalls_and_activity_ends_it(daemon: Daemon, tmp_path: Path) -> None:
    daemon.call(RepoAdd(path=str(make_repo(tmp_path / "proj"))))
    daemon.call(TaskAdd(title="asks", repo="proj", id="Q-1"))
    w = daemon.call(Spawn(repo="proj", task_id="Q-1", cmd=TALKER)).worker
    show = lambda: daemon.call(WorkerShow(worker=w.id)).worker  # noqa: E731
    wait_for(lambda: show().status == "working", 15, what="the agent to start")

    asked = daemon.ctl("heartbeat", "--worker", w.id, "--waiting", "Which database?")
    assert asked.code == 0, asked
    assert show().status == "waiting" and show().message == "Which database?"
    listed = daemon.ctl("--json", "workers", "--waiting").json()
    assert [x["id"] for x in listed] == [w.id]
    assert daemon.ctl("worker-status", "--worker", w.id).code == 0  # the agent carries on

    # stall_timeout_s is 1 s and the agent is silent: a waiting worker is still never stalled
    holds(lambda: show().status == "waiting", 2.0, what="waiting, not stalled")

    # a detached worker has no terminal: peek is its log, send leaves it a message (issue 12)
    peek = daemon.ctl("peek", w.id)
    assert peek.code == 0 and "detached agent here" in peek.out
    sent = daemon.ctl("send", w.id, "postgres")
    assert sent.code == 0 and f"Message sent to {w.id}" in sent.out, sent
    assert "postgres" in daemon.ctl("inbox", w.id).out

    # pause/resume from waiting work; then the agent's next activity ends the wait
    assert daemon.ctl("pause", w.id).code == 0 and show().status == "paused"
    assert daemon.ctl("resume", w.id).code == 0
    assert daemon.ctl("heartbeat", "--worker", w.id, "--waiting", "Which database, really?").code == 0
    assert show().status == "waiting"
    assert daemon.ctl("heartbeat", "--worker", w.id, "--message", "using sqlite").code == 0
    assert show().status == "working"
    assert daemon.ctl("workers", "--waiting").out.strip() == "No worker is waiting for you."


def _event(seq: int, to: str, question: str | None = None) -> Event:
    data = ev.WorkerStatusChanged(from_="working", to=to, question=question)
    return Event(seq=seq, at=0, kind="worker.status", worker_id="w2", task_id="T-1", data=data)


def test_waiting_is_notified_once_per_question_in_words() -> None:
    n = notify.Notifier()
    picked = n.pick(
        [
            _event(1, "waiting", "Deploy now?"),
            _event(2, "working"),
            _event(3, "waiting", "Deploy now?"),
            _event(4, "waiting", "Which region?"),
        ]
    )
    assert [ev.seq for _, ev in picked] == [1, 4]
    assert notify.text(*picked[0]) == ("chkd: a worker needs you", "w2 is waiting for you: Deploy now?")


def test_tmux_argv_targets_exactly_and_types_literally() -> None:
    sock = "/run/chkd/tmux.sock"
    assert tmux.capture(sock, "w1", 5)[:5] == ["tmux", "-S", sock, "-f", "/dev/null"]
    assert "=w1:" in tmux.capture(sock, "w1", 5)  # w1 never matches w12
    keys = tmux.send_keys(sock, "w1", "-rf; Enter")
    assert keys[keys.index("-l") + 1 : keys.index("-l") + 3] == ["--", "-rf; Enter"]  # no key names, no option
    assert keys[-1] == "Enter" and ";" in keys
    assert tmux.send_keys(sock, "w1", "y", enter=False)[-1] == "y"
    assert tmux.send_keys(sock, "w1", "")[5:] == ["send-keys", "-t", "=w1:", "Enter"]  # `send W ''`: just Enter
    assert tmux.attach(sock, "w1", read_only=True)[-4:] == ["-f", "read-only,ignore-size", "-t", "=w1"]
    with pytest.raises(ValueError):
        tmux.new_session(sock, "w1", "/tmp", ["one-arg-would-go-through-sh"], "/tmp/w1.log")
    pipe = tmux.new_session(sock, "w1", "/tmp", ["python", "-m", "x"], "/tmp/it's.log")[-1]
    assert pipe == "exec cat >> '/tmp/it'\"'\"'s.log'"
    assert tmux.visible_tail("a\nb\nc\n\n\n", 2) == "b\nc\n"
