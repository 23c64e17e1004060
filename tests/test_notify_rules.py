"""The notifier's pure parts: what is worth a notification, repeats, commands, text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from chkd.daemon import notify
from chkd.protocol.messages import Event


def ev(seq: int, kind: str, worker: str | None = "w1", task: str | None = "T-1", **data: object) -> Event:
    return Event(seq=seq, at=1, kind=kind, repo="proj", worker_id=worker, task_id=task, data=dict(data))


def test_classify_the_notable_events() -> None:
    assert notify.classify("worker.status", {"status": "done"}) == "done"
    assert notify.classify("worker.status", {"status": "dead"}) == "dead"
    assert notify.classify("worker.status", {"status": "stalled"}) == "stalled"
    assert notify.classify("worker.status", {"status": "error"}) == "error"
    assert notify.classify("merge.conflict", {}) == "conflict"
    assert notify.classify("task.escalated", {}) == "escalated"
    assert notify.classify("worker.budget", {}) == "budget"
    assert notify.classify("worker.status", {"status": "working"}) is None
    assert notify.classify("task.added", {}) is None
    assert notify.classify("repo.added", {}) is None


def test_repeats_of_the_same_event_are_picked_once() -> None:
    n = notify.Notifier()
    first = n.pick([ev(1, "worker.status", status="dead"), ev(2, "task.added"),
                    ev(3, "worker.status", status="dead"), ev(4, "merge.conflict")])
    assert [(c, e.seq) for c, e in first] == [("dead", 1), ("conflict", 4)]
    assert n.cursor == 4
    # the same kind for another worker, or another kind for the same worker, is new
    again = n.pick([ev(5, "worker.status", status="dead"), ev(6, "worker.status", worker="w2", status="dead"),
                    ev(7, "worker.status", status="done"), ev(8, "worker.status", status="conflict")])
    assert [e.seq for _, e in again] == [6, 7]


def test_remembered_events_are_not_sent_again() -> None:
    n = notify.Notifier(cursor=10)
    n.remember([ev(9, "worker.status", status="done")])
    assert n.pick([ev(11, "worker.status", status="done")]) == []


def test_commands_by_platform() -> None:
    have = lambda name: f"/usr/bin/{name}"  # noqa: E731
    none = lambda name: None  # noqa: E731
    assert notify.commands([], "linux", have) == [["notify-send"]]
    assert notify.commands([], "darwin", have) == [["osascript"]]
    assert notify.commands([], "linux", none) == []
    assert notify.commands(["my-notifier", "-x"], "linux", none) == [["my-notifier", "-x"]]
    assert notify.commands(["n"], "linux", have) == [["notify-send"], ["n"]]


def test_text_names_worker_task_and_reason() -> None:
    title, body = notify.text("dead", ev(1, "worker.status", status="dead", reason="no heartbeat for 3 s"))
    assert title == "chkd: worker died"
    assert body == "worker w1 task T-1: no heartbeat for 3 s"
    _, body = notify.text("conflict", ev(2, "merge.conflict", files=["a.py", "b.py"]))
    assert body.endswith("files: a.py, b.py")


def test_send_pipes_the_event_json_to_notify_cmd_and_reports_failures(tmp_path: Path) -> None:
    out = tmp_path / "got.jsonl"
    cmd = [sys.executable, "-c", f"import sys; open({str(out)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"]
    payload = notify.event_json(ev(7, "worker.status", status="done"))
    assert notify.send([cmd], "t", "b", payload) == []
    got = json.loads(out.read_text())
    assert got["seq"] == 7 and got["data"]["status"] == "done"
    bad = [sys.executable, "-c", "import sys; sys.exit(3)"]
    assert "exited with 3" in notify.send([bad], "t", "b", payload)[0]
    assert "could not run" in notify.send([["/nonexistent/notifier"]], "t", "b", payload)[0]


def test_send_all_runs_the_jobs_in_order(tmp_path: Path) -> None:
    out = tmp_path / "seq.txt"
    cmd = [sys.executable, "-c", f"import sys, json; open({str(out)!r}, 'a').write(str(json.load(sys.stdin)['seq']))"]
    jobs = [("t", "b", notify.event_json(ev(i, "worker.status", status="dead"))) for i in (3, 4, 5)]
    assert notify.send_all([cmd], jobs) == []
    assert out.read_text() == "345"
