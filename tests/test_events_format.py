"""How `watch` and `events` print one event: pure formatting, tested directly."""

from __future__ import annotations

import time

from chkd.client.commands.liveness import format_event, icon
from chkd.protocol import events
from chkd.protocol.messages import Event, event_of

AT = int(time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1)) * 1000)


def test_worker_status_line_shows_the_change_and_reason() -> None:
    ev = event_of(
        events.WorkerStatusChanged(from_="working", to="dead", reason="no heartbeat from the shim for 3.0 s"),
        seq=42,
        at=AT,
        repo="proj",
        worker_id="w3",
        task_id="T-7",
    )
    line = format_event(ev)
    assert line.startswith("03:04:05 #42")
    assert "🔴 worker.status" in line and "proj w3 task T-7" in line
    assert "working → dead reason=no heartbeat from the shim for 3.0 s" in line


def test_empty_values_are_left_out_and_long_ones_cut() -> None:
    ev = event_of(
        events.TaskAdded(title="x" * 200, tags=[], after=[], priority=2), seq=1, at=AT, repo="proj", task_id="T-1"
    )
    line = format_event(ev)
    assert "tags=" not in line and "after=" not in line and "priority=2" in line
    assert "x" * 79 + "…" in line and "x" * 81 not in line


def test_icons_by_type_status_and_fallback() -> None:
    assert icon(events.WorkerStatusChanged(from_="working", to="stalled")) == "🟠"
    assert icon(events.TaskEscalated(reason="r", attempts=3)) == "🚨"
    assert icon(events.DaemonPaused(seconds=3.0, cause="freeze")) == "•"


def test_a_task_status_change_shows_the_task_icon_not_a_worker_status_icon() -> None:
    """`.endswith(".status")` gave a task ticked done the worker-done icon."""
    assert icon(events.TaskStatusChanged(from_="pending", to="done")) == "📋"
    line = format_event(
        event_of(
            events.TaskStatusChanged(from_="pending", to="done", note="spec import"),
            seq=3,
            at=AT,
            repo="proj",
            task_id="T-1",
        )
    )
    assert "📋 task.status" in line and "pending → done" in line and "note=spec import" in line


def test_an_unreadable_old_row_still_prints_its_fields() -> None:
    ev = Event(seq=5, at=AT, kind="worker.status", data=events.Unreadable(fields={"status": "done"}))
    assert "status=done" in format_event(ev)
