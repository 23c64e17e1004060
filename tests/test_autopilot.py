"""The autopilot (`chkdctl run`) against a real daemon, real git and fast demo agents: scheduling
by priority and dependencies, the N cap (from the event log), speed-up against N=1, retries and
escalation, budgets that pause, usage limits that wait for their reset across a restart, and a
run that resumes after kill -9 of the daemon."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from chkd.protocol.messages import Events

from conftest import Daemon, git, holds, make_repo, wait_for

FAST = '["chkd-demo-agent", "--steps", "1", "--step-s", "1.8"]'
CONFIG = f"""\
heartbeat_s = 0.5
heartbeat_timeout_s = 3
stall_timeout_s = 30
abort_grace_s = 2
notify = false
max_workers = 5
usage_limit_margin_s = 0.2
rate_limit_backoff_s = 0.4
default_agent = "fast"

[agents.fast]
cmd = {FAST}

# The scheduling tests' agents are plain shell: they sleep, write a file and exit 0 (chkd commits it),
# so what the speed-up measures is the schedule, not Python start-ups competing for two cores.
[agents.sleeper]
cmd = ["sh", "-c", "sleep 2.0; echo {{task_id}} > task-{{task_id}}.txt"]

[agents.waves]
cmd = ["sh", "-c", "sleep 3.0; echo {{task_id}} > task-{{task_id}}.txt"]

[agents.quick]
cmd = ["sh", "-c", "echo {{task_id}} > task-{{task_id}}.txt"]
tags = ["quick"]

[agents.limited]
cmd = [
    "chkd-demo-agent", "--steps", "1", "--step-s", "0", "--usage-limit", "6", "--limit-once",
    "{{worktree}}/../limit.once",
]
tags = ["limited"]

[agents.spender]
cmd = ["chkd-demo-agent", "--steps", "4", "--step-s", "0.2"]

[agents.burst]
cmd = ["sh", "-c", "for n in 1 2 3; do chkdctl heartbeat --cost 0.03 -m spent$n; done; sleep 60"]

[agents.throttled]
cmd = ["sh", "-c", "chkdctl usage-limit --rate-limit --message 'HTTP 429'; exit 1"]
tags = ["throttled"]

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
        page = d.call(Events(since=since, limit=5000))
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
        elif e.kind == "worker.status" and e.data.to not in ("starting", "working", "stalled", "paused"):
            live.discard(e.worker_id)
        peak = max(peak, len(live))
    return peak


def chain_and_fan_out(d: Daemon, repo: str) -> None:
    """T1 → T9 → T10 is a chain (T9 most urgent, so the chain never waits for a wave); T2..T8 fan out from
    T1. T1 is tagged `quick` (smart assignment gives it the quick profile): with ten equal tasks no
    schedule at N=3 could beat 10/ceil(10/3) = 2.5x, so the root that everything waits for is short
    (the ceiling is then 3x), and the others sleep 3 s (the `waves` profile), so a spawn's and a merge's
    cost are small beside them."""
    add(d, repo, "T1", priority="P0", tags=("quick",))
    add(d, repo, "T9", "T1", priority="P0")
    for n in range(2, 9):
        add(d, repo, f"T{n}", "T1")
    add(d, repo, "T10", "T9", priority="P1")


def wall_ms(evs: list[Any], repo: str) -> int:
    start = next(e.at for e in evs if e.repo == repo and e.kind == "autopilot.started")
    end = max(e.at for e in evs if e.repo == repo and e.kind == "merge.merged")
    return end - start


@pytest.mark.timeout(240)
def test_chain_and_fan_out_at_n3_merges_all_in_order_within_the_cap_and_beats_n1(
    daemon: Daemon, tmp_path: Path
) -> None:
    one = make_repo(tmp_path / "one")
    three = make_repo(tmp_path / "three")
    for path, name in ((one, "one"), (three, "three")):
        assert daemon.ctl("repo", "add", str(path), "--name", name).code == 0
        chain_and_fan_out(daemon, name)

    r = daemon.ctl("run", "--workers", "1", "--until-empty", "--agent", "waves", "--repo", "one")
    assert r.code == 0 and "up to 1 workers" in r.out, r
    wait_for(lambda: finished(daemon, "one"), 120, interval=0.2, what="the N=1 run to finish")
    r = daemon.ctl("run", "--workers", "3", "--until-empty", "--agent", "waves", "--repo", "three")
    assert r.code == 0, r
    wait_for(lambda: finished(daemon, "three"), 120, interval=0.2, what="the N=3 run to finish")

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
    # T1 is quick, so nine 3-second tasks on three slots cap this graph at 3x; the issue asks 2.5x. (With
    # 2-second tasks a spawn and a merge weighed more: 2.6x alone, 2.42x once under CI's other worker.)
    print(f"N=3 speed-up {speedup:.2f}x")
    assert speedup >= 2.5, f"N=3 was only {speedup:.2f}x faster than N=1"
    quick = {e.task_id for e in evs if e.kind == "autopilot.spawn" and e.data.profile == "quick"}
    assert quick == {"T1"}  # the tagged task went to the profile carrying its tag, the rest to the default
    # stats sees the run
    s = daemon.ctl("stats", "--repo", "three", "--json").json()
    assert s["tasks_merged"] == 10 and s.get("merge_conflicts", 0) == 0 and s["speedup"] > 1.5, s


def spawned(evs: list[Any], repo: str) -> list[str]:
    return [e.task_id for e in evs if e.repo == repo and e.kind == "worker.spawned"]


@pytest.mark.timeout(150)
def test_a_failing_task_is_retried_then_failed_and_escalated_while_the_rest_finish(daemon: Daemon, repo: Path) -> None:
    assert daemon.ctl("repo", "add", str(repo), "--name", "proj").code == 0
    r = daemon.ctl(
        "task",
        "add",
        "flaky one",
        "--id",
        "F",
        "--tag",
        "flaky",
        "--max-attempts",
        "2",
        "--priority",
        "P0",
        "--repo",
        "proj",
    )
    assert r.code == 0, r
    for t in ("A", "B", "C"):
        add(daemon, "proj", t, tags=("quick",))
    assert daemon.ctl("run", "--workers", "2", "--until-empty", "--repo", "proj").code == 0
    wait_for(lambda: finished(daemon, "proj"), 90, interval=0.2, what="the run to finish")
    tasks = {t["id"]: t for t in daemon.ctl("task", "list", "--repo", "proj", "--json").json()}
    assert tasks["F"]["status"] == "failed" and tasks["F"]["attempts"] == 2
    assert all(tasks[t]["status"] == "done" for t in "ABC")
    evs = events(daemon)
    assert spawned(evs, "proj").count("F") == 2  # retried once, then given up
    escalated = [e for e in evs if e.kind == "task.escalated"]
    assert [e.task_id for e in escalated] == ["F"]
    status = run_status(daemon, "proj")
    assert status["state"] == "finished" and status.get("failed") == 1


def first_event(daemon: Daemon, kind: str, timeout: float, what: str) -> Any:
    """The first event of `kind`, waited for."""
    return wait_for(lambda: next((e for e in events(daemon) if e.kind == kind), None), timeout, interval=0.1, what=what)


BUDGET = CONFIG.replace("max_workers = 5", "max_workers = 5\nbudget_usd_per_day = 0.02")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("daemon_config", [BUDGET])
def test_the_budget_pauses_every_worker_at_100_percent_and_nothing_starts_until_it_is_raised(
    daemon: Daemon, repo: Path
) -> None:
    assert daemon.ctl("repo", "add", str(repo), "--name", "proj").code == 0
    for t in ("A", "B", "C", "D"):
        add(daemon, "proj", t)
    assert daemon.ctl("run", "--workers", "2", "--agent", "spender", "--repo", "proj").code == 0

    def paused_by_budget() -> list[Any]:
        ws = daemon.ctl("workers", "--json").json()
        return [w for w in ws if w["status"] == "paused"]

    paused = wait_for(
        lambda: len(paused_by_budget()) == 2 and paused_by_budget(),
        30,
        interval=0.1,
        what="both workers paused by the budget",
    )
    evs = events(daemon)
    kinds = [e.kind for e in evs]
    assert "budget.warning" in kinds and "budget.exceeded" in kinds
    exceeded = next(e for e in evs if e.kind == "budget.exceeded")
    assert "chkdctl resume --all --over-budget" in exceeded.data.message
    # paused, not killed: the agents' processes are stopped (state T), their work is kept
    import psutil

    for w in paused:
        assert psutil.Process(w["pid"]).status() == psutil.STATUS_STOPPED
    status = run_status(daemon, "proj")
    assert "budget" in status["blocked"] and status["spend"]["over"]
    # nothing new starts while the budget is used up, by the autopilot or by hand
    holds(lambda: spawned(events(daemon), "proj") == ["A", "B"], 1.5, interval=0.2, what="no new spawns")
    r = daemon.ctl("spawn", "C", "--repo", "proj")
    assert r.code == 1 and "budget" in r.err and "Traceback" not in r.err, r
    r = daemon.ctl("resume", paused[0]["id"])
    assert r.code == 1 and "paused by the budget" in r.err, r

    # raised in config.toml, the daemon restarted: the budget resumes its workers, the run goes on
    daemon.stop()
    daemon.write_config(BUDGET.replace("budget_usd_per_day = 0.02", "budget_usd_per_day = 100"))
    daemon.start()
    wait_for(
        lambda: all(t["status"] == "done" for t in daemon.ctl("task", "list", "--repo", "proj", "--json").json()),
        60,
        interval=0.2,
        what="every task merged after the budget was raised",
    )
    evs = events(daemon)
    assert any(e.kind == "budget.resumed" for e in evs)
    cost = daemon.ctl("cost", "--by", "task", "--json").json()
    assert {r["key"] for r in cost["rows"]} == {"A", "B", "C", "D"}
    assert cost["total"]["cost_usd"] > 0.02 and cost["total"]["tokens_in"] > 0
    by_day = daemon.ctl("cost", "--by", "day", "--json").json()
    assert len(by_day["rows"]) == 1 and abs(by_day["rows"][0]["cost_usd"] - cost["total"]["cost_usd"]) < 1e-6


@pytest.mark.timeout(150)
def test_a_usage_limit_parks_its_profile_until_the_reset_across_a_daemon_restart(daemon: Daemon, repo: Path) -> None:
    assert daemon.ctl("repo", "add", str(repo), "--name", "proj").code == 0
    add(daemon, "proj", "L1", priority="P0", tags=("limited",))
    add(daemon, "proj", "L2", priority="P1", tags=("limited",))
    add(daemon, "proj", "Q", priority="P3", tags=("quick",))
    assert daemon.ctl("run", "--workers", "1", "--until-empty", "--repo", "proj").code == 0
    limit = wait_for(
        lambda: next((e for e in events(daemon) if e.kind == "agent.usage_limit"), None),
        20,
        what="the usage-limit event",
    )
    assert limit.task_id == "L1" and limit.data.profile == "limited" and limit.data.resets_at > limit.at
    wait_note = wait_for(lambda: next((e for e in events(daemon) if e.kind == "autopilot.limit_wait"), None), 5)
    assert "Limited usage limit: 2 tasks wait until" in wait_note.data.message
    # the other profile's task still runs; the limited ones wait
    wait_for(lambda: "Q" in spawned(events(daemon), "proj"), 20, what="the quick task to start")
    daemon.stop()
    daemon.start()  # the wait is a row in the database: it survives the restart
    reset_at = limit.data.resets_at
    if time.time() * 1000 < reset_at - 500:  # (a slow machine may restart past the reset)
        assert run_status(daemon, "proj")["waits"][0]["profile"] == "limited"
    holds(
        lambda: spawned(events(daemon), "proj").count("L1") == 1 or time.time() * 1000 >= reset_at,
        max(0.0, (reset_at - time.time() * 1000) / 1000 - 0.3),
        interval=0.1,
        what="no limited spawn before the reset",
    )
    wait_for(lambda: finished(daemon, "proj"), 90, interval=0.2, what="the run to finish after the reset")
    evs = events(daemon)
    l1_spawns = [e.at for e in evs if e.kind == "worker.spawned" and e.task_id in ("L1", "L2")]
    assert len(l1_spawns) == 3 and sorted(l1_spawns)[1] >= reset_at  # L1 again and L2, after the reset
    tasks = {t["id"]: t for t in daemon.ctl("task", "list", "--repo", "proj", "--json").json()}
    assert {t["status"] for t in tasks.values()} == {"done"}
    assert tasks["L1"].get("attempts", 0) == 0  # the limit was nobody's failure: no attempt counted


@pytest.mark.timeout(180)
def test_the_run_resumes_after_kill_9_of_the_daemon(daemon: Daemon, repo: Path) -> None:
    assert daemon.ctl("repo", "add", str(repo), "--name", "proj").code == 0
    for t in ("A", "B", "C", "D"):
        add(daemon, "proj", t)
    assert daemon.ctl("run", "--workers", "2", "--until-empty", "--agent", "sleeper", "--repo", "proj").code == 0
    wait_for(
        lambda: sum(1 for e in events(daemon) if e.kind == "worker.status" and e.data.to == "working") == 2,
        60,
        what="two agents running",
    )
    daemon.kill()
    daemon.start()
    wait_for(lambda: finished(daemon, "proj"), 90, interval=0.2, what="the run to finish after kill -9")
    tasks = daemon.ctl("task", "list", "--repo", "proj", "--json").json()
    assert {t["status"] for t in tasks} == {"done"}
    # the agents outlived the daemon and were merged once; nothing ran twice
    assert sorted(spawned(events(daemon), "proj")) == ["A", "B", "C", "D"]
    assert sorted(e.task_id for e in events(daemon) if e.kind == "merge.merged") == ["A", "B", "C", "D"]
    log = git(repo, "log", "--format=%s", "main")
    assert all(f"{t}:" in log for t in "ABCD"), log


@pytest.mark.timeout(60)
def test_repeated_429s_back_off_the_profile_with_growing_delays_and_count_no_attempt(
    daemon: Daemon, repo: Path
) -> None:
    assert daemon.ctl("repo", "add", str(repo), "--name", "proj").code == 0
    add(daemon, "proj", "R", tags=("throttled",))
    assert daemon.ctl("run", "--workers", "1", "--repo", "proj").code == 0
    waits = wait_for(
        lambda: (w := [e for e in events(daemon) if e.kind == "autopilot.limit_wait"]) and len(w) >= 3 and w,
        30,
        interval=0.1,
        what="three 429 back-offs",
    )
    assert daemon.ctl("run", "--stop", "--repo", "proj").code == 0
    delays = [e.data.until - e.at for e in waits[:3]]
    assert delays[0] >= 350 and delays[1] >= 1.8 * delays[0] * 0.9 and delays[2] >= 1.8 * delays[1] * 0.9, delays
    assert "rate limited (HTTP 429, 3 in a row)" in waits[2].data.message
    evs = events(daemon)
    starts = [e.at for e in evs if e.kind == "worker.spawned"]
    # each new try waited for the back-off after the 429 before it
    for wait, start in zip(waits, starts[1:], strict=False):
        assert start >= wait.data.until - 5, (wait.data, start)
    task = daemon.ctl("task", "show", "R", "--repo", "proj", "--json").json()["task"]
    assert task.get("attempts", 0) == 0 and task["status"] in ("pending", "claimed", "in_progress")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("daemon_config", [BUDGET])
def test_a_spend_that_crosses_the_budget_pauses_the_worker_before_its_next_report(daemon: Daemon, repo: Path) -> None:
    # three reports of $0.03 each, about 0.1 s apart, against a $0.02 budget: the first one crosses it.
    # Judged only on the one-second tick, the daemon let all three land (and saw $0.09, 4.5x the budget).
    assert daemon.ctl("repo", "add", str(repo), "--name", "proj").code == 0
    add(daemon, "proj", "A")
    assert daemon.ctl("run", "--workers", "1", "--agent", "burst", "--repo", "proj").code == 0
    exceeded = first_event(daemon, "budget.exceeded", 20, what="the budget used up")
    assert exceeded.data.spent_usd == pytest.approx(0.03), exceeded.data
    assert exceeded.data.paused == ["w1"], exceeded.data
    w = daemon.ctl("worker", "show", "w1", "--json").json()
    assert w["status"] == "paused" and w["cost_usd"] == pytest.approx(0.03), w


def tz_just_before_midnight(lead_s: int) -> str:
    """A POSIX TZ whose local time is `lead_s` seconds before midnight now (the daemon's day is
    its local date: a daemon started with it sees the next day arrive during the test)."""
    now = time.time()
    utc_s = int(now) % 86400
    offset = (utc_s - (86400 - lead_s)) % 86400  # local = UTC - offset
    if offset > 43200:
        offset -= 86400
    sign, a = ("+", offset) if offset >= 0 else ("-", -offset)
    return f"CHK{sign}{a // 3600}:{a % 3600 // 60:02d}:{a % 60:02d}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("daemon_config", [BUDGET])
def test_the_next_days_budget_resumes_the_paused_workers_by_itself(daemon: Daemon, repo: Path) -> None:
    daemon.stop()
    daemon.start(env={"TZ": tz_just_before_midnight(25)})
    assert daemon.ctl("repo", "add", str(repo), "--name", "proj").code == 0
    for t in ("A", "B", "C"):
        add(daemon, "proj", t)
    assert daemon.ctl("run", "--workers", "2", "--agent", "spender", "--repo", "proj").code == 0
    exceeded = first_event(daemon, "budget.exceeded", 20, what="the budget used up before midnight")
    assert exceeded.data.paused  # its workers were paused, not killed
    # nobody touches anything: at the daemon's midnight the new day's budget resumes them
    resumed = wait_for(
        lambda: next((e for e in events(daemon) if e.kind == "budget.resumed"), None),
        45,
        interval=0.2,
        what="the next day's budget to resume the workers",
    )
    # (a worker whose agent exited just as the budget stopped it is done, not waiting for a resume)
    assert resumed.data.day > exceeded.data.day and resumed.data.workers
    assert set(resumed.data.workers) <= set(exceeded.data.paused)
    assert resumed.at >= exceeded.at
    # the run went on: the budget itself let a paused worker run again (paused -> working) on the new day
    assert any(
        e.kind == "worker.status"
        and (e.data.from_, e.data.to) == ("paused", "working")
        and e.data.reason == "the budget allows work again"
        and e.seq > exceeded.seq
        for e in events(daemon)
    )


PER_REPO = CONFIG + '\n[repos."proj"]\nbudget_usd_per_day = 0.02\n'


@pytest.mark.timeout(120)
@pytest.mark.parametrize("daemon_config", [PER_REPO])
def test_a_repositorys_budget_pauses_only_that_repository(daemon: Daemon, repo: Path, tmp_path: Path) -> None:
    free = make_repo(tmp_path / "free")
    assert daemon.ctl("repo", "add", str(repo), "--name", "proj").code == 0
    assert daemon.ctl("repo", "add", str(free), "--name", "free").code == 0
    for name in ("proj", "free"):
        for t in ("A", "B", "C"):
            add(daemon, name, t)
    assert daemon.ctl("run", "--workers", "2", "--agent", "spender", "--repo", "proj").code == 0
    assert daemon.ctl("run", "--workers", "2", "--until-empty", "--agent", "spender", "--repo", "free").code == 0
    exceeded = first_event(daemon, "budget.exceeded", 30, what="proj's budget used up")
    assert exceeded.repo == "proj" and exceeded.data.scope == "proj"
    assert '[repos."proj"] budget_usd_per_day' in exceeded.data.message
    wait_for(lambda: finished(daemon, "free"), 60, interval=0.2, what="the other repository's run to finish")
    free_tasks = daemon.ctl("task", "list", "--repo", "free", "--json").json()
    assert {t["status"] for t in free_tasks} == {"done"}  # spent more than proj's cap, never paused
    assert daemon.ctl("cost", "--by", "repo", "--json").json()["rows"]
    assert "budget" in run_status(daemon, "proj")["blocked"]
    assert not any(e.kind == "budget.exceeded" and e.repo == "free" for e in events(daemon))


@pytest.mark.timeout(90)
def test_merge_review_waits_for_a_person_and_merge_off_merges_nothing(daemon: Daemon, tmp_path: Path) -> None:
    rev = make_repo(tmp_path / "rev")
    off = make_repo(tmp_path / "off")
    for path, name in ((rev, "rev"), (off, "off")):
        assert daemon.ctl("repo", "add", str(path), "--name", name).code == 0
        add(daemon, name, "A")
        add(daemon, name, "B", "A")  # waits for A to be merged
    assert daemon.ctl("run", "--workers", "2", "--merge", "review", "--agent", "quick", "--repo", "rev").code == 0
    assert (
        daemon.ctl("run", "--workers", "2", "--merge", "off", "--until-empty", "--agent", "quick", "--repo", "off").code
        == 0
    )
    # review: A's merge waits for a person; B does not start before A is approved and merged
    wait_for(
        lambda: any(e.kind == "merge.awaiting_review" and e.repo == "rev" for e in events(daemon)),
        30,
        interval=0.2,
        what="A's merge waiting for review",
    )
    holds(lambda: spawned(events(daemon), "rev") == ["A"], 1.5, interval=0.2, what="B waiting for A's review")
    [w] = [w for w in daemon.ctl("workers", "--json").json() if w["repo"] == "rev"]
    assert daemon.ctl("approve", w["id"]).code == 0
    wait_for(
        lambda: (
            {t["id"]: t["status"] for t in daemon.ctl("task", "list", "--repo", "rev", "--json").json()}["A"] == "done"
        ),
        30,
        interval=0.2,
        what="A merged after the approval",
    )
    wait_for(lambda: "B" in spawned(events(daemon), "rev"), 30, interval=0.2, what="B started after A merged")
    # off: A is done and never merged, so B (which needs A merged) never starts and the run ends
    wait_for(lambda: finished(daemon, "off"), 30, interval=0.2, what="the --merge off run to finish")
    assert spawned(events(daemon), "off") == ["A"]
    assert not any(e.kind.startswith("merge.") and e.repo == "off" for e in events(daemon))
    assert "A" not in git(off, "log", "--format=%s", "main")
