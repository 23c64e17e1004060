"""Merge benchmark: the conflict check next to the naive way, and merge-queue throughput.

Prints one JSON object:
- files: how many files the generated repository holds (>= 20,000).
- merge_tree_ms: p50 of the conflict check chkd does (`git merge-tree --write-tree`, no checkout).
- naive_ms: p50 of the naive check, same repository, same run (`git worktree add` of the target,
  `git merge --no-commit --no-ff`, `git worktree remove`).
- speedup: naive_ms / merge_tree_ms (goal >= 20).
- queue: 20 done, non-conflicting workers merged at once through a real chkdd
  (strategy auto, no test gate, the main checkout kept up to date): seconds and merges_per_min.

- train (--train): 8 done workers with a 5-second test gate, wall time to all merged with
  merge_batch = 8 next to merge_batch = 1 (same run), gate runs counted; and with one bad worker
  among 8 (its change fails the gate): gate runs until it was isolated, and the other 7 merged.
  Goal (issue 14): <= 2 gate runs and <= 0.3x the serial time; the bad one isolated in <= 4 runs
  (gate_runs counts one more when the bad one is not last: the other 7, stacked again without it,
  are gated once more before they land).

Usage: python bench/merge.py [--files 20000] [--workers 20] [--reps 5] [--train [--gate-s 5]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chkd.client import daemonctl
from chkd.client.client import Client
from chkd.protocol.launch import module_argv
from chkd.protocol.messages import (
    Merge,
    MergeShow,
    RepoAdd,
    Spawn,
    TaskAdd,
    WorkerShow,
)
from chkd.protocol.paths import resolve

IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@chkd.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@chkd.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
AGENT = r"""
import subprocess, sys
open(sys.argv[1], "w").write("work of " + sys.argv[1] + "\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "add " + sys.argv[1]], check=True)
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_big_repo(path: Path, files: int) -> None:
    """`files` small files in 100-file directories, one commit (written with fast-import: seconds)."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    lines = ["commit refs/heads/main", "committer bench <bench@chkd.invalid> 1700000000 +0000", "data 7", "initial"]
    for i in range(files):
        body = f"file {i}\n" + "line\n" * 20
        lines += [f"M 100644 inline src/d{i // 100:04d}/f{i:05d}.txt", f"data {len(body.encode())}", body.rstrip("\n")]
    stream = "\n".join(lines) + "\n"
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=stream.encode(), check=True)
    git(path, "checkout", "-q", "-f", "main")


def commit_change(cwd: Path, rel: str, text: str, msg: str) -> None:
    (cwd / rel).write_text(text)
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "-m", msg)


def time_checks(repo: Path, reps: int) -> tuple[float, float]:
    """p50 ms of merge-tree and of the naive temporary-worktree merge, same branches."""
    git(repo, "branch", "feature", "main")
    wt = repo.parent / "feature-wt"
    git(repo, "worktree", "add", "-q", str(wt), "feature")
    commit_change(wt, "src/d0001/f00100.txt", "feature change\n", "feature")
    git(repo, "worktree", "remove", "--force", str(wt))
    commit_change(repo, "src/d0002/f00200.txt", "main change\n", "main moves")
    fast, slow = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(
            ["git", "merge-tree", "--write-tree", "--name-only", "main", "feature"],
            cwd=repo,
            check=True,
            capture_output=True,
        )
        fast.append((time.perf_counter() - t0) * 1000)
    for i in range(reps):
        tmp = repo.parent / f"naive-{i}"
        t0 = time.perf_counter()
        git(repo, "worktree", "add", "-q", "--detach", str(tmp), "main")
        subprocess.run(["git", "merge", "--no-commit", "--no-ff", "feature"], cwd=tmp, check=True, capture_output=True)
        git(repo, "worktree", "remove", "--force", str(tmp))
        slow.append((time.perf_counter() - t0) * 1000)
    return statistics.median(fast), statistics.median(slow)


@contextmanager
def merge_daemon(home: Path, workers: int) -> Iterator[Client]:
    """A chkdd for `home` with `workers` slots, once it answers, and a client of it (both closed after)."""
    paths = resolve(home)
    paths.ensure()
    paths.config_file.write_text(
        f"max_workers = {workers}\nnotify = false\nheartbeat_s = 1\nheartbeat_timeout_s = 30\n"
    )
    env = {**os.environ, **IDENTITY, "CHKD_HOME": str(home), "CHKD_NO_AUTOSTART": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    daemon = subprocess.Popen(
        module_argv("chkd.daemon.main", "--home", str(home)),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not daemonctl._answers(paths, 0.5):
            if time.monotonic() > deadline:
                raise SystemExit("chkdd did not start")
        client = Client(paths, timeout=120, autostart=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        daemon.terminate()
        daemon.wait(20)


def wait_all_done(client: Client, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(client.call(WorkerShow(worker=w)).worker.status != "done" for w in ids):
        if time.monotonic() > deadline:
            raise SystemExit("workers did not finish")
        time.sleep(0.1)


def queue_throughput(repo: Path, home: Path, workers: int) -> dict[str, float]:
    os.environ.update(IDENTITY)
    with merge_daemon(home, workers) as client:
        client.call(RepoAdd(path=str(repo)))
        ids = []
        for i in range(workers):
            task = client.call(TaskAdd(title=f"bench {i}", repo=str(repo))).task
            cmd = [sys.executable, "-c", AGENT, f"bench-{i}.txt"]
            ids.append(client.call(Spawn(repo=str(repo), task_id=task.id, cmd=cmd)).worker.id)
        wait_all_done(client, ids, 600)
        t0 = time.perf_counter()
        merge_ids = [client.call(Merge(worker=w, strategy="auto", no_test=True)).merge.id for w in ids]
        pending = set(merge_ids)
        while pending:
            for mid in list(pending):
                status = client.call(MergeShow(id=mid)).merge.status
                if status == "merged":
                    pending.discard(mid)
                elif status in ("conflict", "failed", "rejected"):
                    raise SystemExit(f"merge {mid} ended {status}")
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        landed = git(repo, "rev-list", "--count", "--merges", "main")
        return {
            "workers": workers,
            "seconds": round(seconds, 2),
            "merges_per_min": round(workers / seconds * 60, 1),
            "merge_commits_on_main": int(landed),
        }


TRAIN_GATE = (
    "import glob, sys, time; open(sys.argv[1], 'a').write('run\\n'); time.sleep(float(sys.argv[2])); "
    "sys.exit(1 if glob.glob('bad*.txt') else 0)"
)


def train_run(tmp: Path, name: str, batch: int, workers: int, gate_s: float, bad: int | None) -> dict[str, object]:
    """One daemon, `workers` done workers, merged at once through the gate with `merge_batch = batch`."""
    from chkd.protocol.messages import RepoEdit, RepoSettings

    repo = tmp / name
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit_change(repo, "README.md", "train bench\n", "initial")
    runs = tmp / f"{name}-gate-runs"
    with merge_daemon(tmp / f"{name}-home", workers) as client:
        client.call(RepoAdd(path=str(repo), test_cmd=[sys.executable, "-c", TRAIN_GATE, str(runs), str(gate_s)]))
        client.call(RepoEdit(repo=str(repo), set=RepoSettings(merge_batch=batch)))
        ids = []
        for i in range(workers):
            task = client.call(TaskAdd(title=f"train {i}", repo=str(repo))).task
            fname = "bad.txt" if i == bad else f"good-{i}.txt"
            ids.append(
                client.call(Spawn(repo=str(repo), task_id=task.id, cmd=[sys.executable, "-c", AGENT, fname])).worker.id
            )
        wait_all_done(client, ids, 300)
        t0 = time.perf_counter()
        merge_ids = [client.call(Merge(worker=w, strategy="auto")).merge.id for w in ids]
        final: dict[int, str] = {}
        runs_at_isolation = None
        while len(final) < len(merge_ids):
            for mid in merge_ids:
                if mid not in final:
                    status = client.call(MergeShow(id=mid)).merge.status
                    if status in ("merged", "conflict", "failed", "rejected"):
                        final[mid] = status
                        if status == "failed" and runs_at_isolation is None:
                            log = client.call(MergeShow(id=mid)).merge.log
                            found = re.search(r"isolated after gate run (\d+)", log)
                            runs_at_isolation = int(found.group(1)) if found else None
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        out: dict[str, object] = {
            "merge_batch": batch,
            "seconds": round(seconds, 2),
            "gate_runs": len(runs.read_text().splitlines()),
            "merged": sum(1 for s in final.values() if s == "merged"),
            "failed": sum(1 for s in final.values() if s == "failed"),
        }
        if bad is not None:
            out["gate_runs_when_bad_isolated"] = runs_at_isolation
        return out


def train_bench(tmp: Path, gate_s: float, workers: int = 8) -> dict[str, object]:
    batched = train_run(tmp, "batched", workers, workers, gate_s, None)
    serial = train_run(tmp, "serial", 1, workers, gate_s, None)
    one_bad = train_run(tmp, "onebad", workers, workers, gate_s, workers // 2)
    ratio = batched["seconds"] / serial["seconds"]  # type: ignore[operator]
    return {
        "workers": workers,
        "gate_s": gate_s,
        "batched": batched,
        "serial": serial,
        "ratio_batched_to_serial": round(ratio, 3),
        "goal_met": batched["gate_runs"] <= 2 and ratio <= 0.3,  # type: ignore[operator]
        "one_bad": one_bad,
        "one_bad_goal_met": (one_bad.get("gate_runs_when_bad_isolated") or 99) <= 4  # type: ignore[operator]
        and one_bad["merged"] == workers - 1,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", action="store_true", help="Only the merge-train figures.")
    ap.add_argument("--gate-s", type=float, default=5.0)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    os.environ.update(IDENTITY)
    tmp = Path(tempfile.mkdtemp(prefix="chkd-bench-merge-"))
    if args.train:
        try:
            print(json.dumps({"train": train_bench(tmp, args.gate_s)}, indent=2))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        repo = tmp / "big"
        t0 = time.perf_counter()
        make_big_repo(repo, args.files)
        gen_s = time.perf_counter() - t0
        files = int(subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout.count("\n"))
        fast, slow = time_checks(repo, args.reps)
        home = tmp / "home"
        home.mkdir()
        queue = queue_throughput(repo, home, args.workers)
        print(
            json.dumps(
                {
                    "files": files,
                    "generate_s": round(gen_s, 1),
                    "reps": args.reps,
                    "merge_tree_ms": round(fast, 1),
                    "naive_ms": round(slow, 1),
                    "speedup": round(slow / fast, 1),
                    "queue": queue,
                }
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
