"""The dashboard's model (pure: events folded in, what to redraw and refetch) and chkdctl's
start-up staying free of Textual."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from chkd.client.tui.model import Board, task_state
from chkd.protocol import events
from chkd.protocol.messages import Event, TaskInfo, WorkerInfo


def ev(seq: int, kind: str, wid: str | None = "w1", **data: Any) -> Event:
    """An event as the daemon sends it: the kind's Struct, or (a kind this client does not
    know, from a newer daemon) `Unreadable` with its fields."""
    kind_type = events.BY_KIND.get(kind)
    if "from" in data:
        data["from_"] = data.pop("from")
    body = kind_type(**data) if kind_type is not None else events.Unreadable(fields=data)
    return Event(seq=seq, at=1_000 + seq, kind=kind, repo="proj", worker_id=wid, data=body)


def test_events_patch_cards_and_mark_only_what_changed() -> None:
    b = Board()
    b.set_workers(
        [
            WorkerInfo(id="w1", repo="proj", status="working", cost_usd=0.5),
            WorkerInfo(id="w2", repo="proj", status="working"),
        ]
    )
    b.take_dirty()
    b.apply(ev(1, "worker.heartbeat", message="step 3", tokens_in=10, tokens_out=2, cost_usd=0.75))
    b.apply(ev(2, "worker.status", **{"from": "working", "to": "paused"}))
    d = b.take_dirty()
    assert d.workers == {"w1"} and not d.layout
    w = b.workers["w1"]
    assert (w.status, w.message, w.tokens_in, w.cost_usd, w.heartbeat_at) == ("paused", "step 3", 10, 0.75, 1001)
    assert b.take_refresh() == {"tasks"}  # a status change moves the task: fetch the queue once


def test_replayed_or_old_events_are_ignored_and_unknown_workers_fetched() -> None:
    b = Board()
    b.set_workers([WorkerInfo(id="w1", repo="proj", status="working")])
    b.apply(ev(5, "worker.status", **{"from": "working", "to": "done"}))
    b.apply(ev(4, "worker.status", **{"from": "starting", "to": "working"}))  # older: a replay overlap
    b.apply(ev(5, "worker.status", **{"from": "working", "to": "done"}))
    assert b.workers["w1"].status == "done" and len(b.feed) == 1
    b.take_refresh()
    b.apply(ev(6, "worker.heartbeat", wid="w9", message="hi"))  # a worker we have not seen yet
    assert "workers" in b.take_refresh()
    b.apply(ev(7, "merge.awaiting_review", wid="w1", merge_id=1, result_sha="abc"))
    assert {"merges", "workers"} <= b.take_refresh() and b.want_diffstat == {"w1"}


def test_header_counts_queue_and_cost() -> None:
    b = Board()
    b.set_workers(
        [
            WorkerInfo(id="w1", repo="p", status="working", started_at=2**40, cost_usd=1.25),
            WorkerInfo(id="w2", repo="p", status="waiting", started_at=2**40, message="usage limit until 14:00"),
            WorkerInfo(id="w3", repo="p", status="conflict", started_at=2**40),
        ]
    )
    b.set_tasks(
        [
            TaskInfo(repo="p", id="A", title="a", status="pending", ready=True),
            TaskInfo(repo="p", id="B", title="b", status="pending", depends_on=["A"]),
            TaskInfo(repo="p", id="C", title="c", status="pending", held=True),
        ]
    )
    b.connected = True
    line = b.header(now_ms=2**40 + 1000)
    assert line.startswith("WORKERS (1 active, 1 waiting, 1 conflict)")
    assert "queue 1 ready, 1 waiting on deps" in line and "today $1.25" in line
    assert "1 usage-limit wait" in line and "reconnecting" not in line
    assert b.card_order() == ["w2", "w3", "w1"]  # who needs a person first
    assert [task_state(t) for t in b.tasks.values()] == ["ready", "waiting", "held"]
    b.connected = False
    assert "reconnecting" in b.header()


def test_chkdctl_does_not_import_textual_unless_top_runs() -> None:
    code = (
        "import sys; import chkd.client.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'textual_serve', 'aiohttp', 'rich')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_header_shows_budget_usage_limits_and_the_autopilot_from_their_events() -> None:
    b = Board()
    b.connected = True
    assert "autopilot" not in b.header() and "usage-limit" not in b.header()
    b.apply(ev(1, "agent.usage_limit", profile="claude", resets_at=2**50))
    b.apply(ev(2, "autopilot.started", workers=3, merge="auto"))
    b.apply(
        ev(
            3,
            "budget.warning",
            scope="global",
            day="2026-12-03",
            spent_usd=8.0,
            budget_usd=10.0,
            percent=80.0,
            message="80 % of the daily budget ($10.00) is used ($8.00 today).",
        )
    )
    line = b.header(now_ms=2**49)
    assert "of $10.00" in line and "1 usage-limit wait" in line and "autopilot on" in line
    assert "usage-limit" not in b.header(now_ms=2**50 + 1)  # the limit has reset
    b.apply(ev(4, "autopilot.stopped", reason="chkdctl run --stop"))
    assert "autopilot" not in b.header()


def test_top_without_a_terminal_is_one_sentence(tmp_path: Path) -> None:
    env = {**os.environ, "CHKD_HOME": str(tmp_path / "home"), "CHKD_NO_AUTOSTART": "1"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "chkdctl"), "top"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("chkdctl: chkdctl top needs a terminal.\n") and "Traceback" not in proc.stderr
