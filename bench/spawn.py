"""Spawn latency: `spawn` → the worker's first heartbeat, next to raw `git worktree add -b` in the same run.

A repository of 5,000+ files is generated in a temporary directory; a real chkdd runs in a
temporary CHKD_HOME. The agent is `sleep` (its own start-up is negligible), so the figure is
chkd's cost: request, task claim, worktree + branch, starting chkd-shim, the shim's hello.
Raw and chkd runs alternate so both see the same cache state.

Goal (issue 5): spawn median ≤ 1.3 × raw median + 30 ms.
With `--pool` (issue 14): `pool_size = 1`, so each spawn takes a warm worktree (the bench waits for
the refill between spawns); goal: spawn → first heartbeat ≤ 150 ms and ≥ 10× faster than raw
`git worktree add` on a 20,000-file repository.

    /tmp/v/bin/python bench/spawn.py [--files 5000] [--runs 7] [--pool --files 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import zmq

from chkd.client.client import Client
from chkd.protocol import codec
from chkd.protocol.events import WorkerStatusChanged
from chkd.protocol.launch import module_argv
from chkd.protocol.messages import Abort, Remove, RepoAdd, Spawn
from chkd.protocol.paths import resolve


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path, files: int) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "bench")
    git(path, "config", "user.email", "bench@chkd.invalid")
    for i in range(files):
        d = path / f"pkg{i // 100:03d}"
        d.mkdir(exist_ok=True)
        (d / f"mod{i:05d}.py").write_text(f"# module {i}\nVALUE = {i}\n\ndef f():\n    return VALUE * 2\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "generated")


def raw_add(repo: Path, n: int) -> float:
    target = repo.parent / f"raw-{n}"
    t0 = time.perf_counter()
    subprocess.run(["git", "worktree", "add", "--quiet", "-b", f"raw/{n}", str(target), "main"], cwd=repo, check=True)
    dt = time.perf_counter() - t0
    git(repo, "worktree", "remove", "--force", str(target))
    git(repo, "branch", "-D", f"raw/{n}")
    return dt


def chkd_spawn(client: Client, sub: zmq.Socket, repo: Path, n: int) -> tuple[float, float]:
    """(spawn → reply, spawn → first heartbeat) in seconds."""
    t0 = time.perf_counter()
    res = client.call(Spawn(repo=str(repo), task_id=f"B{n}", title=f"bench {n}", cmd=["sleep", "60"]))
    t_reply = time.perf_counter() - t0
    wid = res.worker.id
    t_beat = None
    if res.worker.heartbeat_at:  # the hello arrived before the reply went out
        t_beat = t_reply
    deadline = time.monotonic() + 20
    while t_beat is None and time.monotonic() < deadline:
        if sub.poll(100):
            _topic, payload = sub.recv_multipart()
            ev = codec.decode_event(payload)
            if ev.worker_id == wid and isinstance(ev.data, WorkerStatusChanged) and ev.data.to == "working":
                t_beat = time.perf_counter() - t0
    if t_beat is None:
        raise SystemExit(f"worker {wid} never said hello")
    client.call(Abort(worker=wid))
    time.sleep(0.05)
    client.call(Remove(worker=wid, force=True), timeout=600)
    return t_reply, t_beat


def wait_pool(client: Client) -> None:
    """Until the pool holds a ready worktree again (the refill after the last spawn)."""
    from chkd.protocol.messages import RepoList

    deadline = time.monotonic() + 120
    while client.call(RepoList()).repos[0].pool_ready < 1:
        if time.monotonic() > deadline:
            raise SystemExit("the pool did not refill")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pool", action="store_true", help="Spawn from a warm pool (pool_size = 1).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chkd-bench-spawn-") as tmp:
        base = Path(tmp)
        repo = base / "proj"
        make_repo(repo, args.files)
        home = base / "home"
        home.mkdir()
        (home / "config.toml").write_text("notify = false\nmax_workers = 50\nabort_grace_s = 1\n")
        env = {**os.environ, "CHKD_HOME": str(home)}
        daemon = subprocess.Popen(
            module_argv("chkd.daemon.main", "--home", str(home)),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            paths = resolve(home)
            os.environ["CHKD_HOME"] = str(home)
            deadline = time.monotonic() + 15
            while not paths.ctl_sock.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            client = Client(paths, timeout=30, autostart=False)
            client.call(RepoAdd(path=str(repo)))
            if args.pool:
                from chkd.protocol.messages import RepoEdit, RepoSettings

                client.call(RepoEdit(repo=str(repo), set=RepoSettings(pool_size=1)))
            sub = zmq.Context.instance().socket(zmq.SUB)
            sub.connect(paths.events_endpoint)
            sub.setsockopt(zmq.SUBSCRIBE, b"worker.")
            time.sleep(0.2)
            raw_add(repo, 0)  # warm-up: page cache, git's own start-up
            if args.pool:
                wait_pool(client)
            chkd_spawn(client, sub, repo, 0)
            raws, replies, beats = [], [], []
            for n in range(1, args.runs + 1):
                if args.pool:
                    wait_pool(client)  # the refill is done: it does not compete with either measurement
                raws.append(raw_add(repo, n))
                reply, beat = chkd_spawn(client, sub, repo, n)
                replies.append(reply)
                beats.append(beat)
            raw_ms = statistics.median(raws) * 1000
            beat_ms = statistics.median(beats) * 1000
            goal_ms = 1.3 * raw_ms + 30
            if args.pool:
                goal_ms = min(150.0, raw_ms / 10)
            print(
                json.dumps(
                    {
                        "files": args.files,
                        "runs": args.runs,
                        "pool": args.pool,
                        "raw_worktree_add_ms": {"median": round(raw_ms, 1), "min": round(min(raws) * 1000, 1)},
                        "spawn_reply_ms": {"median": round(statistics.median(replies) * 1000, 1)},
                        "spawn_to_first_heartbeat_ms": {
                            "median": round(beat_ms, 1),
                            "min": round(min(beats) * 1000, 1),
                        },
                        "ratio_to_raw": round(beat_ms / raw_ms, 3),
                        "goal_ms": round(goal_ms, 1),
                        "within_goal": beat_ms <= goal_ms,
                    },
                    indent=2,
                )
            )
        finally:
            daemon.terminate()
            daemon.wait(10)


if __name__ == "__main__":
    main()
