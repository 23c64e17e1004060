"""The autopilot's throughput: 20 independent demo tasks run by `chkdctl run --until-empty` at
N = 1, 3 and 5, each run in its own fresh repository against one real chkdd.

Figures per N, from the daemon's recorded event timestamps:
- wall time (the run's `autopilot.started` → its last `merge.merged`) and speed-up against N=1;
- conflict rate (merge attempts that conflicted; the demo tasks touch separate files: 0 expected);
- scheduler overhead per task: from the moment a task could start (it was ready and a slot was
  free: run start, or the moment a worker left its slot) to its agent started (the shim's hello,
  `worker.status` → working), which leaves out the agent's own start-up but includes the spawn
  (git worktree add, the shim's Python start-up); and the decision alone (→ `worker.spawned`).

Goals (issue 15): speed-up at N=5 ≥ 4.5x; overhead ≤ 100 ms per task.

With `--pool` each repository keeps N warm worktrees (issue 14's pool): the spawn then waits for
no `git worktree add`.

    python bench/autopilot.py [--tasks 20] [--steps 2] [--step-s 1.0] [--n 1 3 5] [--pool]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from floor import chkdd, pct

from chkd.client.client import Client
from chkd.protocol.messages import (
    Events,
    RepoAdd,
    RepoEdit,
    RepoList,
    RepoSettings,
    RunStart,
    RunStatus,
    Stats,
    TaskAdd,
)
from chkd.protocol.paths import resolve

LIVE = {"starting", "working", "stalled", "paused"}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


def make_repo(path: Path) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "bench")
    git(path, "config", "user.email", "bench@chkd.invalid")
    (path / "README.md").write_text("# bench\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")


def all_events(client: Client) -> list[Any]:
    out: list[Any] = []
    since = 0
    while True:
        page = client.call(Events(since=since, limit=5000))
        out += page.events
        if not page.events or page.events[-1].seq >= page.last_seq:
            return out
        since = page.events[-1].seq


def overheads(evs: list[Any], repo: str) -> tuple[list[float], list[float]]:
    """Per task, in ms, replayed from the event log: (agent started − max(ready, a slot free),
    the scheduler's decision alone: its spawn − max(ready, a slot free))."""
    run_start = next(e.at for e in evs if e.repo == repo and e.kind == "autopilot.started")
    free_at: list[int] = []  # times a slot became free, not yet taken
    live: set[str] = set()
    spawn_eligible: dict[str, int] = {}
    out: list[float] = []
    decided: list[float] = []
    slots_at_start = None
    for e in evs:
        if e.repo != repo or e.at < run_start:
            continue
        if e.kind == "autopilot.started":
            slots_at_start = e.data.workers
            free_at = [e.at] * slots_at_start
        elif e.kind == "worker.spawned":
            live.add(e.worker_id)
            spawn_eligible[e.worker_id] = free_at.pop(0) if free_at else e.at
            decided.append(e.at - spawn_eligible[e.worker_id])
        elif e.kind == "worker.status":
            to = e.data.to
            if to == "working" and e.data.reason == "the agent started" and e.worker_id in spawn_eligible:
                out.append(e.at - spawn_eligible.pop(e.worker_id))
            if to not in LIVE and e.worker_id in live:
                live.discard(e.worker_id)
                free_at.append(e.at)
    return out, decided


def run_once(client: Client, base: Path, n: int, tasks: int, pool: bool) -> dict[str, Any]:
    repo_path = base / f"bench-n{n}"
    make_repo(repo_path)
    name = client.call(RepoAdd(path=str(repo_path), name=f"bench-n{n}")).repo.name
    if pool:  # N warm worktrees, filled before the run starts (as they would be long before a real one)
        client.call(RepoEdit(repo=name, set=RepoSettings(pool_size=n)))
        deadline = time.monotonic() + 120
        while next(r for r in client.call(RepoList()).repos if r.name == name).pool_ready < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"N={n}: the pool did not fill")
            time.sleep(0.05)
    for i in range(1, tasks + 1):
        client.call(TaskAdd(repo=name, id=f"B{i}", title=f"bench task {i}"))
    client.call(RunStart(repo=name, workers=n, until_empty=True, agent="bench"))
    deadline = time.monotonic() + 900
    while client.call(RunStatus(repo=name)).runs[0].state == "running":
        if time.monotonic() > deadline:
            raise SystemExit(f"N={n}: the run did not finish within 15 minutes")
        time.sleep(0.2)
    evs = all_events(client)
    start = next(e.at for e in evs if e.repo == name and e.kind == "autopilot.started")
    merged = [e.at for e in evs if e.repo == name and e.kind == "merge.merged"]
    s = client.call(Stats(repo=name))
    over, decided = overheads(evs, name)
    return {
        "workers": n,
        "pool_size": n if pool else 0,
        "tasks_merged": len(merged),
        "wall_s": round((max(merged) - start) / 1000, 3),
        "conflict_rate": s.conflict_rate,
        "merge_attempts": s.merge_attempts,
        "overhead_ms_median": round(statistics.median(over), 1) if over else None,
        "overhead_ms_p90": round(pct(over, 0.9), 1) if over else None,
        "overhead_ms_mean": round(statistics.fmean(over), 1) if over else None,
        "decision_ms_median": round(statistics.median(decided), 1) if decided else None,
        "decision_ms_p90": round(pct(decided, 0.9), 1) if decided else None,
        "cost_usd": s.cost_usd,
        "stats_speedup": s.speedup,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--step-s", type=float, default=1.0)
    ap.add_argument("--n", type=int, nargs="*", default=[1, 3, 5])
    ap.add_argument("--pool", action="store_true", help="give each run's repository a warm pool of N worktrees")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="chkd-bench-autopilot-"))
    home = base / "home"
    home.mkdir()
    agent = Path(sys.executable).parent / "chkd-demo-agent"
    (home / "config.toml").write_text(
        "heartbeat_s = 1\nheartbeat_timeout_s = 10\nnotify = false\nmax_workers = 5\n"
        f'[agents.bench]\ncmd = ["{agent}", "--steps", "{args.steps}", "--step-s", "{args.step_s}"]\n'
    )
    os.environ["CHKD_HOME"] = str(home)
    results = []
    with chkdd(home), Client(resolve(home), autostart=False, timeout=30) as client:
        deadline = time.monotonic() + 15
        while True:
            try:
                client.call(RunStatus())
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for n in args.n:
            results.append(run_once(client, base, n, args.tasks, args.pool))
    base_wall = next((r["wall_s"] for r in results if r["workers"] == 1), None)
    for r in results:
        r["speedup"] = round(base_wall / r["wall_s"], 3) if base_wall else None
    at5 = next((r for r in results if r["workers"] == 5), None)
    worst = max((r["overhead_ms_median"] or 0) for r in results)
    print(
        json.dumps(
            {
                "bench": "autopilot",
                "tasks": args.tasks,
                "agent": f"chkd-demo-agent --steps {args.steps} --step-s {args.step_s}",
                "pool": args.pool,
                "runs": results,
                "goal_speedup_n5": 4.5,
                "speedup_n5": at5["speedup"] if at5 else None,
                "goal_overhead_ms": 100,
                "overhead_ms_median_worst": worst,
                "met": bool(at5 and at5["speedup"] and at5["speedup"] >= 4.5 and worst <= 100),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
