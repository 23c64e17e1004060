"""The notifier's pure parts: what is worth a notification, repeats, commands, text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from chkd.daemon import notify
from chkd.protocol import events
from chkd.protocol.messages import Event, event_of


def ev(seq: int, data: events.EventBody, worker: str | None = "w1", task: str | None = "T-1") -> Event:
    return event_of(data, seq=seq, at=1, repo="proj", worker_id=worker, task_id=task)  # type: ignore[arg-type]


def to(status: str, reason: str | None = None) -> events.WorkerStatusChanged:
    return events.WorkerStatusChanged(from_="working", to=status, reason=reason)


def test_classify_the_notable_events() -> None:
    assert notify.classify(to("done")) == "done"
    assert notify.classify(to("dead")) == "dead"
    assert notify.classify(to("stalled")) == "stalled"
    assert notify.classify(to("error")) == "error"
    assert notify.classify(events.MergeConflicted(merge_id=1, files=["a"])) == "conflict"
    assert notify.classify(events.TaskEscalated(reason="r", attempts=3)) == "escalated"
    assert notify.classify(events.AgentUsageLimited(profile="claude", resets_at=1)) is None  # its wait notifies
    wait = events.LimitWaitStarted(profile="claude", until=1, tasks=3, reason="usage limit", message="m")
    assert notify.classify(wait) == "usage_limit"
    assert notify.classify(events.WorkerHelpRequested(question="q")) is None  # its `waiting` notifies
    assert notify.classify(to("working")) is None
    assert notify.classify(events.TaskAdded(title="t")) is None
    assert notify.classify(events.RepoAdded(path="/p", main_branch="main")) is None


def test_a_task_ticked_done_is_not_a_worker_done() -> None:
    """The old rule matched every kind ending in `.status`: a spec import that ticked a task
    done sent "chkd: worker done"."""
    assert notify.classify(events.TaskStatusChanged(from_="pending", to="done")) is None
    n = notify.Notifier()
    assert n.pick([ev(1, events.TaskStatusChanged(from_="pending", to="done"), worker=None)]) == []


def test_repeats_of_the_same_event_are_picked_once() -> None:
    n = notify.Notifier()
    first = n.pick(
        [
            ev(1, to("dead")),
            ev(2, events.TaskAdded(title="t")),
            ev(3, to("dead")),
            ev(4, events.MergeConflicted(merge_id=1, files=[])),
        ]
    )
    assert [(c, e.seq) for c, e in first] == [("dead", 1), ("conflict", 4)]
    assert n.cursor == 4
    # the same kind for another worker, or another kind for the same worker, is new
    again = n.pick([ev(5, to("dead")), ev(6, to("dead"), worker="w2"), ev(7, to("done")), ev(8, to("conflict"))])
    assert [e.seq for _, e in again] == [6, 7]


def test_remembered_events_are_not_sent_again() -> None:
    n = notify.Notifier(cursor=10)
    n.remember([ev(9, to("done"))])
    assert n.pick([ev(11, to("done"))]) == []


def test_commands_by_platform() -> None:
    have = lambda name: f"/usr/bin/{name}"  # noqa: E731
    none = lambda name: None  # noqa: E731
    assert notify.commands([], "linux", have) == [["notify-send"]]
    assert notify.commands([], "darwin", have) == [["osascript"]]
    assert notify.commands([], "linux", none) == []
    assert notify.commands(["my-notifier", "-x"], "linux", none) == [["my-notifier", "-x"]]
    assert notify.commands(["n"], "linux", have) == [["notify-send"], ["n"]]


def test_text_names_worker_task_and_reason() -> None:
    title, body = notify.text("dead", ev(1, to("dead", "no heartbeat for 3 s")))
    assert title == "chkd: worker died"
    assert body == "worker w1 task T-1: no heartbeat for 3 s"
    _, body = notify.text("conflict", ev(2, events.MergeConflicted(merge_id=1, files=["a.py", "b.py"])))
    assert body.endswith("files: a.py, b.py")


def test_a_usage_limit_says_which_profile_waits_how_many_tasks_until_when() -> None:
    msg = "Claude usage limit: 3 tasks wait until 20:05."
    wait = events.LimitWaitStarted(profile="claude", until=1, tasks=3, reason="usage limit", message=msg)
    title, body = notify.text("usage_limit", ev(3, wait, worker=None))
    assert title == "chkd: usage limit"
    assert body.endswith(msg)


def test_send_pipes_the_event_json_to_notify_cmd_and_reports_failures(tmp_path: Path) -> None:
    out = tmp_path / "got.jsonl"
    cmd = [sys.executable, "-c", f"import sys; open({str(out)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"]
    payload = notify.event_json(ev(7, to("done")))
    assert notify.send([cmd], "t", "b", payload) == []
    got = json.loads(out.read_text())
    assert got["seq"] == 7 and got["kind"] == "worker.status" and got["data"]["to"] == "done"
    bad = [sys.executable, "-c", "import sys; sys.exit(3)"]
    assert "exited with 3" in notify.send([bad], "t", "b", payload)[0]
    assert "could not run" in notify.send([["/nonexistent/notifier"]], "t", "b", payload)[0]


def test_send_all_runs_the_jobs_in_order(tmp_path: Path) -> None:
    out = tmp_path / "seq.txt"
    cmd = [sys.executable, "-c", f"import sys, json; open({str(out)!r}, 'a').write(str(json.load(sys.stdin)['seq']))"]
    jobs = [("t", "b", notify.event_json(ev(i, to("dead")))) for i in (3, 4, 5)]
    assert notify.send_all([cmd], jobs) == []
    assert out.read_text() == "345"
