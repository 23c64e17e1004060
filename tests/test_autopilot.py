"""The autopilot (`chkdctl run`) against a real daemon, real git and fast demo agents: scheduling
by priority and dependencies, the N cap (from the event log), speed-up against N=1, retries and
escalation, budgets that pause, usage limits that wait for their reset across a restart, and a
run that resumes after kill -9 of the daemon."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, git, holds, make_repo, wait_for

from chkd.protocol.messages import EventList, Events

FAST = '["chkd-demo-agent", "--steps", "1", "--step-s", "1.8"]'
CONFIG = f"""\
heartbeat_s = 0.5
heartbeat_timeout_s = 3
stall_timeout_s = 30
abort_grace_s = 2
notify = false
max_workers = 5
usage_limit_margin_s = 0.2
default_agent = "fast"

[agents.fast]
cmd = {FAST}

# The scheduling tests' agents are plain shell: they sleep, write a file and exit 0 (chkd commits it),
# so what the speed-up measures is the schedule, not Python start-ups competing for two cores.
[agents.sleeper]
cmd = ["sh", "-c", "sleep 1.5; echo {{task_id}} > task-{{task_id}}.txt"]

[agents.quick]
cmd = ["sh", "-c", "echo {{task_id}} > task-{{task_id}}.txt"]
tags = ["quick"]

[agents.failing]
cmd = ["chkd-demo-agent", "--steps", "1", "--step-s", "0.1", "--fail-after", "1"]
tags = ["flaky"]
"""


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


def events(d: Daemon, since: int = 0) -> list[Any]:
    out: list[Any] = []
    while True:
        page = d.call(Events(since=since, limit=5000), EventList)
        out += page.events
        if not page.events or page.events[-1].seq >= page.last_seq:
            return out
        since = page.events[-1].seq


def add(d: Daemon, repo: str, task_id: str, *after: str, priority: str = "P2", tags: tuple[str, ...] = ()) -> None:
    args = ["task", "add", f"task {task_id}", "--id", task_id, "--priority", priority, "--repo", repo]
    for a in after:
        args += ["--after", a]
    for t in tags:
        args += ["--tag", t]
    r = d.ctl(*args)
    assert r.code == 0, r


def run_status(d: Daemon, repo: str) -> Any:
    r = d.ctl("run", "--status", "--repo", repo, "--json")
    assert r.code == 0, r
    return r.json()[0]


def finished(d: Daemon, repo: str) -> bool:
    return run_status(d, repo)["state"] == "finished"


def max_concurrent(evs: list[Any], repo: str) -> int:
    """The most workers of `repo` live at once, replayed from worker.status events."""
    live: set[str] = set()
    peak = 0
    for e in evs:
        if e.repo != repo:
            continue
        if e.kind == "worker.spawned":
            live.add(e.worker_id)
        elif e.kind == "worker.status" and e.data["to"] not in ("starting", "working", "stalled", "paused"):
            live.discard(e.worker_id)
        peak = max(peak, len(live))
    return peak


def chain_and_fan_out(d: Daemon, repo: str) -> None:
    """T1 → T9 → T10 is a chain (T9 most urgent, so the chain never waits for a wave); T2..T8 fan out from
    T1. T1 is tagged `quick` (smart assignment gives it the quick profile): with ten equal tasks no
    schedule at N=3 could beat 10/ceil(10/3) = 2.5x, so the root that everything waits for is short."""
    add(d, repo, "T1", priority="P0", tags=("quick",))
    add(d, repo, "T9", "T1", priority="P0")
    for n in range(2, 9):
        add(d, repo, f"T{n}", "T1")
    add(d, repo, "T10", "T9", priority="P1")


def wall_ms(evs: list[Any], repo: str) -> int:
    start = next(e.at for e in evs if e.repo == repo and e.kind == "autopilot.started")
    end = max(e.at for e in evs if e.repo == repo and e.kind == "merge.merged")
    return end - start


@pytest.mark.timeout(120)
def test_chain_and_fan_out_at_n3_merges_all_in_order_within_the_cap_and_beats_n1(daemon: Daemon, tmp_path: Path) -> None:
    one = make_repo(tmp_path / "one")
    three = make_repo(tmp_path / "three")
    for path, name in ((one, "one"), (three, "three")):
        assert daemon.ctl("repo", "add", str(path), "--name", name).code == 0
        chain_and_fan_out(daemon, name)

    r = daemon.ctl("run", "--workers", "1", "--until-empty", "--agent", "sleeper", "--repo", "one")
    assert r.code == 0 and "up to 1 workers" in r.out, r
    wait_for(lambda: finished(daemon, "one"), 60, interval=0.2, what="the N=1 run to finish")
    r = daemon.ctl("run", "--workers", "3", "--until-empty", "--agent", "sleeper", "--repo", "three")
    assert r.code == 0, r
    wait_for(lambda: finished(daemon, "three"), 60, interval=0.2, what="the N=3 run to finish")

    evs = events(daemon)
    for name, path in (("one", one), ("three", three)):
        tasks = daemon.ctl("task", "list", "--repo", name, "--json").json()
        assert {t["id"]: t["status"] for t in tasks} == {f"T{n}": "done" for n in range(1, 11)}
        log = git(path, "log", "--format=%s", "main")
        assert all(f"T{n}:" in log or f"T{n} " in log for n in range(1, 11)), log
        # no task started before every task it depends on was merged
        merged_at = {e.task_id: e.at for e in evs if e.repo == name and e.kind == "merge.merged"}
        spawned_at = {e.task_id: e.at for e in evs if e.repo == name and e.kind == "worker.spawned"}
        deps = {"T9": ["T1"], "T10": ["T9"], **{f"T{n}": ["T1"] for n in range(2, 9)}}
        for task, before in deps.items():
            for dep in before:
                assert spawned_at[task] >= merged_at[dep], (task, dep)
    assert max_concurrent(evs, "one") == 1
    assert max_concurrent(evs, "three") == 3
    speedup = wall_ms(evs, "one") / wall_ms(evs, "three")
    quick = {e.task_id for e in evs if e.kind == "autopilot.spawn" and e.data["profile"] == "quick"}
    assert quick == {"T1"}  # the tagged task went to the profile carrying its tag, the rest to the default
    # stats sees the run
    s = daemon.ctl("stats", "--repo", "three", "--json").json()
    assert s["tasks_merged"] == 10 and s.get("merge_conflicts", 0) == 0 and s["speedup"] > 1.5, s
