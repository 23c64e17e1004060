"""How `watch` and `events` print one event: pure formatting, tested directly."""

from __future__ import annotations

import time

from chkd.client.commands.liveness import format_event, icon
from chkd.protocol.messages import Event

AT = int(time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1)) * 1000)


def test_worker_status_line_shows_the_change_and_reason() -> None:
    ev = Event(seq=42, at=AT, kind="worker.status", repo="proj", worker_id="w3", task_id="T-7",
               data={"from": "working", "to": "dead", "reason": "no heartbeat from the shim for 3.0 s"})
    line = format_event(ev)
    assert line.startswith("03:04:05 #42")
    assert "🔴 worker.status" in line and "proj w3 task T-7" in line
    assert "working → dead reason=no heartbeat from the shim for 3.0 s" in line


def test_empty_values_are_left_out_and_long_ones_cut() -> None:
    ev = Event(seq=1, at=AT, kind="task.added", repo="proj", task_id="T-1",
               data={"title": "x" * 200, "tags": [], "after": [], "priority": 2})
    line = format_event(ev)
    assert "tags=" not in line and "after=" not in line and "priority=2" in line
    assert "x" * 79 + "…" in line and "x" * 81 not in line


def test_icons_by_kind_status_and_fallback() -> None:
    assert icon("worker.status", {"to": "stalled"}) == "🟠"
    assert icon("task.escalated", {}) == "🚨"
    assert icon("worker.budget", {}) == "💸"
    assert icon("something.new", {}) == "•"
