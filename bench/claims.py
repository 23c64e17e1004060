"""Atomic claims through chkdd with 8 client processes, next to the store alone, in the same run.

Prints one JSON object:
- socket.claims_per_s: 10,000 tasks claimed by 8 concurrent client processes (each a
  DEALER sending `claim` until the queue is empty), timed from the go signal to the last reply.
- socket.duplicates / socket.lost: tasks claimed twice / never claimed (both must be 0).
- store.claims_per_s: the daemon's own `claim_next` (the same SQL, events included) on a
  fresh database without the socket, one transaction per claim; group_commit_8_claims_per_s
  the same with 8 claims per transaction (what the daemon's loop does with 8 busy clients).
- ratio: socket / store. Goal: socket >= 5,000 claims/s, 0 duplicates.

Usage: python bench/claims.py [--tasks 10000] [--procs 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chkd.client.client import Client
from chkd.protocol.launch import module_argv
from chkd.protocol.messages import Claim, RepoAdd, TaskImport
from chkd.protocol.paths import resolve


def spec_text(n: int) -> str:
    """A checklist of `n` tasks over five priorities (so the claim order is exercised)."""
    lines = ["# Bench", "", "## Bench Tasks"]
    lines += [f"- [ ] [P{i % 5}] **BT.{i + 1} Task number {i + 1}** - bench" for i in range(n)]
    return "\n".join(lines) + "\n"


def worker(home: str, repo: str, go_file: str, ready_file: str, out_file: str) -> None:
    """One client process: connect, say ready, wait for go, claim until nothing is ready."""
    with Client(resolve(home), autostart=False, timeout=60) as c:
        c.call(Claim(repo=repo, worker="warmup-none", tag="no-such-tag"))  # connect + warm up
        Path(ready_file).touch()
        while not os.path.exists(go_file):
            time.sleep(0.001)
        ids: list[str] = []
        t0 = time.time()
        me = f"bench-{os.getpid()}"
        while True:
            res = c.call(Claim(repo=repo, worker=me))
            if res.task is None:
                break
            ids.append(res.task.id)
        t1 = time.time()
    Path(out_file).write_text(json.dumps({"ids": ids, "start": t0, "end": t1}))


def through_socket(tmp: Path, n: int, procs: int) -> dict[str, object]:
    home = tmp / "home"
    repo = tmp / "proj"
    repo.mkdir()
    env = {**os.environ, "CHKD_HOME": str(home), "CHKD_NO_AUTOSTART": "1"}
    for args in (
        ["init", "-q", "-b", "main"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "--allow-empty", "-m", "init"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    daemon = subprocess.Popen(
        module_argv("chkd.daemon.main", "--home", str(home)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        paths = resolve(home)
        deadline = time.monotonic() + 20
        while not paths.ctl_sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with Client(paths, autostart=False, timeout=120) as c:
            name = c.call(RepoAdd(path=str(repo), name="bench")).repo.name
            report = c.call(TaskImport(text=spec_text(n), repo=name))
            assert len(report.new) == n, report
        go = tmp / "go"
        children = []
        for i in range(procs):
            ready, out = tmp / f"ready{i}", tmp / f"out{i}.json"
            children.append(
                (
                    subprocess.Popen(
                        [sys.executable, __file__, "--worker", str(home), name, str(go), str(ready), str(out)], env=env
                    ),
                    ready,
                    out,
                )
            )
        deadline = time.monotonic() + 60
        while not all(r.exists() for _, r, _ in children) and time.monotonic() < deadline:
            time.sleep(0.005)
        go.touch()
        for proc, _, _ in children:
            proc.wait(300)
        results = [json.loads(out.read_text()) for _, _, out in children]
    finally:
        daemon.terminate()
        daemon.wait(10)
    claimed = [i for r in results for i in r["ids"]]
    elapsed = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "tasks": n,
        "procs": procs,
        "claims": len(claimed),
        "seconds": round(elapsed, 3),
        "claims_per_s": round(len(claimed) / elapsed),
        "duplicates": len(claimed) - len(set(claimed)),
        "lost": n - len(set(claimed)),
        "per_process": [len(r["ids"]) for r in results],
    }


def store_alone(tmp: Path, n: int) -> dict[str, object]:
    """The same `claim_next` on the loop's store, without sockets: one transaction per claim."""
    from chkd.daemon import spec, taskqueue
    from chkd.daemon.context import Ctx
    from chkd.daemon.specimport import apply_spec
    from chkd.daemon.store import Store
    from chkd.protocol.config import Config

    home = tmp / "store-home"
    home.mkdir()
    store = Store(home / "chkd.db")
    ctx = Ctx(paths=resolve(home), config=Config(), store=store, log=None)
    with store.tx():
        store.x("INSERT INTO repos(path, name, main_branch, added_at) VALUES('/bench', 'bench', 'main', 0)")
        repo = store.dict("SELECT * FROM repos")
        apply_spec(ctx, repo, spec.parse(spec_text(n)), "bench", False)
    ctx.pubbox.clear()

    def run(per_tx: int) -> tuple[int, float]:
        seen: set[str] = set()
        t0 = time.perf_counter()
        done = False
        while not done:
            with store.tx():
                for _ in range(per_tx):
                    task = taskqueue.claim_next(ctx, repo, "bench")
                    if task is None:
                        done = True
                        break
                    seen.add(taskqueue.task_info(ctx, task, "bench").id)
            ctx.pubbox.clear()
        return len(seen), time.perf_counter() - t0

    claimed, elapsed = run(1)
    with store.tx():  # put every task back for the group-commit run
        store.x("UPDATE task_queue SET status='pending', claimed_by=NULL, claimed_at=NULL")
    grouped, grouped_s = run(8)
    store.close()
    return {
        "claims": claimed,
        "seconds": round(elapsed, 3),
        "claims_per_s": round(claimed / elapsed),
        "group_commit_8_claims_per_s": round(grouped / grouped_s),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    tmp = Path(tempfile.mkdtemp(prefix="chkd-bench-claims-"))
    sock = through_socket(tmp, args.tasks, args.procs)
    alone = store_alone(tmp, args.tasks)
    print(
        json.dumps(
            {
                "socket": sock,
                "store": alone,
                "ratio": round(sock["claims_per_s"] / alone["claims_per_s"], 3),  # type: ignore[operator]
                "goals": {"socket_claims_per_s": ">= 5000", "duplicates": 0},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
