"""The loop-side task functions other areas call (daemon/taskqueue.py), on a real store without a daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chkd.daemon import taskqueue
from chkd.daemon.context import Ctx
from chkd.daemon.store import Store
from chkd.protocol.config import Config
from chkd.protocol.errors import ChkdError
from chkd.protocol.events import TaskEscalated, TaskStatusChanged
from chkd.protocol.paths import resolve


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Ctx]:
    store = Store(tmp_path / "chkd.db")
    c = Ctx(paths=resolve(tmp_path), config=Config(max_attempts=2), store=store, log=None)
    with store.tx():
        store.x("INSERT INTO repos(path, name, main_branch, added_at) VALUES('/r', 'r', 'main', 0)")
    yield c
    store.close()


@pytest.fixture
def repo(ctx: Ctx) -> dict[str, Any]:
    return ctx.store.dict("SELECT * FROM repos WHERE name='r'")  # type: ignore[return-value]


def kinds(ctx: Ctx) -> list[str]:
    return [k for (k,) in ctx.store.all("SELECT kind FROM events ORDER BY seq")]


def test_create_generates_ids_and_validates(ctx: Ctx, repo: dict[str, Any]) -> None:
    with ctx.store.tx():
        a = taskqueue.create_task(ctx, repo, title="  first   task ")
        taskqueue.create_task(ctx, repo, title="user id", id="T-2")
        b = taskqueue.create_task(ctx, repo, title="second", after=["T-1"], tags=["#ui", "ui", "api"], priority=0)
    assert (a["id"], a["title"], a["priority"], a["max_attempts"]) == ("T-1", "first task", 2, 2)
    assert b["id"] == "T-3"  # T-2 was taken by the user
    info = taskqueue.task_info(ctx, b)
    assert (info.depends_on, info.tags, info.ready, info.repo) == (["T-1"], ["ui", "api"], False, "r")
    assert taskqueue.task_info(ctx, a).dependants == ["T-3"]
    for kwargs, words in [
        ({"title": " "}, "title is empty"),
        ({"title": "x", "priority": 9}, "P9"),
        ({"title": "x", "id": "T-1"}, "already has a task 'T-1'"),
        ({"title": "x", "after": ["nope"]}, "'nope'"),
        ({"title": "x", "id": "has space"}, "not a valid task id"),
        ({"title": "x", "max_attempts": 0}, "at least 1"),
    ]:
        with pytest.raises(ChkdError) as err, ctx.store.tx():
            taskqueue.create_task(ctx, repo, **kwargs)
        assert words in err.value.message
    assert ctx.store.scalar("SELECT count(*) FROM task_queue") == 3
    assert kinds(ctx) == ["task.added"] * 3


def test_claim_next_order_deps_hold_and_tags(ctx: Ctx, repo: dict[str, Any]) -> None:
    with ctx.store.tx():
        taskqueue.create_task(ctx, repo, title="low", id="low", priority=4)
        taskqueue.create_task(ctx, repo, title="urgent but blocked", id="blocked", priority=0, after=["low"])
        taskqueue.create_task(ctx, repo, title="held", id="held", priority=0, held=True)
        taskqueue.create_task(ctx, repo, title="p1 old", id="p1a", priority=1)
        taskqueue.create_task(ctx, repo, title="p1 new", id="p1b", priority=1, tags=["web"])
    with ctx.store.tx():
        assert taskqueue.claim_next(ctx, repo, "w1", tag="web")["id"] == "p1b"  # type: ignore[index]
        got = [taskqueue.claim_next(ctx, repo, f"w{i}") for i in range(3)]
    assert [t["id"] if t else None for t in got] == ["p1a", "low", None]
    assert got[0]["claimed_by"] == "w0" and got[0]["status"] == "claimed"  # type: ignore[index]
    with ctx.store.tx():
        low = taskqueue.find_task(ctx, repo["id"], "low")
        taskqueue.set_task_status(ctx, low, "in_progress", worker_id="w1")  # type: ignore[arg-type]
        taskqueue.set_task_status(ctx, taskqueue.find_task(ctx, repo["id"], "low"), "review")  # type: ignore[arg-type]
        done = taskqueue.set_task_status(ctx, taskqueue.find_task(ctx, repo["id"], "low"), "done")  # type: ignore[arg-type]
        assert done["completed_at"] is not None
        assert taskqueue.claim_next(ctx, repo, "w9")["id"] == "blocked"  # type: ignore[index]


def test_claim_task_explains_why_not(ctx: Ctx, repo: dict[str, Any]) -> None:
    with ctx.store.tx():
        taskqueue.create_task(ctx, repo, title="dep", id="dep")
        taskqueue.create_task(ctx, repo, title="after dep", id="after", after=["dep"])
        taskqueue.create_task(ctx, repo, title="held", id="held", held=True)
        dep = taskqueue.claim_task(ctx, taskqueue.find_task(ctx, repo["id"], "dep"), "w1")  # type: ignore[arg-type]
    assert dep["status"] == "claimed" and dep["claimed_by"] == "w1"
    cases = {"dep": "already claimed by w1", "after": "waits for dep", "held": "on hold"}
    for tid, words in cases.items():
        with pytest.raises(ChkdError) as err, ctx.store.tx():
            taskqueue.claim_task(ctx, taskqueue.find_task(ctx, repo["id"], tid), "w2")  # type: ignore[arg-type]
        assert err.value.code == "conflict" and words in err.value.message


def test_transitions_are_checked_and_evented(ctx: Ctx, repo: dict[str, Any]) -> None:
    with ctx.store.tx():
        t = taskqueue.create_task(ctx, repo, title="x")
        t = taskqueue.set_task_status(ctx, t, "cancelled", note="not needed")
    assert t["status"] == "cancelled" and t["completed_at"]
    with pytest.raises(ChkdError) as err, ctx.store.tx():
        taskqueue.set_task_status(ctx, t, "review")
    assert err.value.code == "conflict" and "cannot become review" in err.value.message
    data = msgspec.msgpack.decode(
        ctx.store.scalar("SELECT data FROM events WHERE kind='task.status'"), type=TaskStatusChanged
    )
    assert data == TaskStatusChanged(from_="pending", to="cancelled", note="not needed")


def test_requeue_until_max_attempts_then_failed_and_escalated(ctx: Ctx, repo: dict[str, Any]) -> None:
    with ctx.store.tx():
        taskqueue.create_task(ctx, repo, title="flaky", id="F")
        t = taskqueue.claim_next(ctx, repo, "w1")
        assert taskqueue.requeue_task(ctx, t, "worker w1 died") == "pending"  # type: ignore[arg-type]
    row = taskqueue.find_task(ctx, repo["id"], "F")
    assert (row["status"], row["attempts"], row["claimed_by"]) == ("pending", 1, None)  # type: ignore[index]
    with ctx.store.tx():
        t = taskqueue.claim_next(ctx, repo, "w2")
        assert taskqueue.requeue_task(ctx, t, "worker w2 died") == "failed"  # type: ignore[arg-type]
        assert taskqueue.requeue_task(ctx, t, "again") == "failed"  # type: ignore[arg-type]  # idempotent
    row = taskqueue.find_task(ctx, repo["id"], "F")
    assert (row["status"], row["attempts"]) == ("failed", 2)  # type: ignore[index]
    assert kinds(ctx)[-3:] == ["task.claimed", "task.failed", "task.escalated"]
    data = msgspec.msgpack.decode(
        ctx.store.scalar("SELECT data FROM events WHERE kind='task.escalated'"), type=TaskEscalated
    )
    assert data == TaskEscalated(reason="worker w2 died", attempts=2)


def test_task_infos_match_task_info(ctx: Ctx, repo: dict[str, Any]) -> None:
    with ctx.store.tx():
        taskqueue.create_task(ctx, repo, title="a", id="A")
        taskqueue.create_task(ctx, repo, title="b", id="B", after=["A"])
        taskqueue.create_task(ctx, repo, title="c", id="C", after=["A", "B"])
        taskqueue.claim_next(ctx, repo, "w")
    rows = ctx.store.dicts(f"SELECT {taskqueue.TASK_COLUMNS} FROM task_queue ORDER BY pk")
    assert taskqueue.task_infos(ctx, rows) == [taskqueue.task_info(ctx, r) for r in rows]
