"""The overview (chkd_status's data): tasks split into ready / waiting / running, workers, cost today."""

from __future__ import annotations

from pathlib import Path

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    Heartbeat,
    Overview,
    RepoAdd,
    Spawn,
    TaskAdd,
)

from conftest import Daemon, busy_for, make_repo


def test_overview_splits_tasks_and_sums_cost(daemon: Daemon, tmp_path: Path) -> None:
    daemon.call(RepoAdd(path=str(make_repo(tmp_path / "proj"))))
    for task, after in (("A", []), ("B", ["A"]), ("C", [])):
        daemon.call(TaskAdd(title=f"task {task}", id=task, repo="proj", after=after))
    w = daemon.call(Spawn(repo="proj", task_id="A", cmd=busy_for(60))).worker
    daemon.call(Heartbeat(worker=w.id, tokens_in=1000, tokens_out=200, cost_usd=0.25))
    o = daemon.call(Overview())
    assert [t.id for t in o.ready] == ["C"]
    assert [t.id for t in o.waiting] == ["B"]
    assert [t.id for t in o.running] == ["A"]
    assert [x.id for x in o.workers] == [w.id] and o.workers_by_status == {"working": 1}
    assert (o.cost.today_usd, o.cost.today_tokens_in, o.cost.today_tokens_out) == (0.25, 1000, 200)
    assert o.repos == ["proj"] and o.awaiting_review == [] and o.conflicts == []
    try:
        daemon.call(Overview(repo="nope"))
    except ChkdError as exc:
        assert exc.code == "not_found" and "'nope'" in exc.message
    else:
        raise AssertionError("an unknown repository should be refused")
