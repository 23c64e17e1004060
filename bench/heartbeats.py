"""Shim heartbeats through chkdd, next to a bare ROUTER echo (the floor) in the same run.

A daemon with 1,000 worker rows and 10,000 tasks serves `shim.beat` requests from 8
client processes. Each process stands in for 125 shims: every shim has at most one
heartbeat in flight (as a real shim does), so up to 1,000 requests wait at once and
the loop's group commit (drain what waits, one transaction, COMMIT, then reply) is what
is measured. Every reply is sent only after the heartbeat's UPDATE is committed.

Prints one JSON object:
- sustained: heartbeats/s over `--seconds` next to the bare echo with the same 8 processes
  and window (ratio goal >= 0.75), twice: every shim with a beat in flight (1,000 waiting:
  what group commit is for; heartbeats_per_s, goal >= 10,000) and one in flight per process
  (8 synchronous clients, the shape of bench/rtt.py).
- latency_ms_at_1000_per_s: p50/p99 of send→reply at a steady 1,000 heartbeats/s
  (8 processes x 125/s, one in flight each); goal p99 <= 5 ms.
- rss_mb: the daemon's resident memory after the runs (goal <= 80 MB).
- committed: heartbeat_at rows the DB shows updated (proof the beats were written).

Usage: python bench/heartbeats.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import msgspec
import psutil
import zmq
from floor import chkdd, echo_floor, pct

from chkd.daemon.store import db_path
from chkd.protocol import codec
from chkd.protocol.messages import ActivityAck, Ping, ShimBeat
from chkd.protocol.paths import resolve

PROCS = 8
WORKERS = 1000
TASKS = 10_000
CONFIG = "heartbeat_s = 10\nheartbeat_timeout_s = 3600\nstall_timeout_s = 3600\nnotify = false\n"


def seed(db: Path) -> None:
    """A database with one repository, 10,000 tasks and 1,000 working workers (fresh heartbeats)."""
    from chkd.daemon.store import Store, now_ms

    store = Store(db)
    now = now_ms()
    with store.tx():
        repo_id = store.insert(
            "INSERT INTO repos(path, name, main_branch, added_at) VALUES(?,?,?,?)",
            ("/nonexistent/bench", "bench", "main", now),
        )
        store.conn.executemany(
            "INSERT INTO task_queue(repo_id, id, title, description, status, created_at) VALUES(?,?,?,?,?,?)",
            [
                (
                    repo_id,
                    f"T-{i}",
                    f"task number {i}",
                    "a benchmark task " * 4,
                    "in_progress" if i <= WORKERS else "pending",
                    now,
                )
                for i in range(1, TASKS + 1)
            ],
        )
        store.conn.executemany(
            "INSERT INTO workers(id, seq, repo_id, status, worktree_path, branch_name, task_pk, task_id, task_title, "
            "agent, started_at, heartbeat_at, activity_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    f"w{i}",
                    i,
                    repo_id,
                    "working",
                    f"/nonexistent/bench-T-{i}",
                    f"chkd/T-{i}",
                    i,
                    f"T-{i}",
                    f"task number {i}",
                    "demo",
                    now,
                    now,
                    now,
                )
                for i in range(1, WORKERS + 1)
            ],
        )
    store.close()


def beat_payloads(proc_index: int) -> list[bytes]:
    """The pre-encoded heartbeats of this process's 125 shims (request id = the worker number)."""
    per = WORKERS // PROCS
    first = proc_index * per + 1
    return [codec.encode_request(n, ShimBeat(worker=f"w{n}", agent_alive=True)) for n in range(first, first + per)]


# -- clients -----------------------------------------------------------------------------------
def flood(
    endpoint: str, proc_index: int, seconds: float, check: bool, window: int, start_at: float, out: mp.Queue
) -> None:  # type: ignore[type-arg]
    """Keep `window` of this process's shims with one heartbeat in flight each; count replies."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 0)
    s.setsockopt(zmq.RCVHWM, 0)
    s.connect(endpoint)
    payloads = beat_payloads(proc_index)[:window]
    by_id = {codec.decode_envelope(p).id: p for p in payloads}
    while time.time() < start_at:
        time.sleep(0.001)
    for p in payloads:
        s.send(p, copy=False)
    done = bad = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not s.poll(100):
            continue
        reply = s.recv()
        done += 1
        if check and done % 97 == 0 and not isinstance(codec.decode_reply(reply).body, ActivityAck):
            bad += 1  # a sample is checked in full: a real ack, not an error
        s.send(by_id[_reply_id(reply)], copy=False)
    out.put((done, bad))
    s.close(0)
    ctx.term()


def _reply_id(reply: bytes) -> int:
    """The request id of a reply without building its body (unknown fields are skipped)."""
    return _HEAD.decode(reply).id


class _Head(msgspec.Struct):
    v: int
    id: int


_HEAD = msgspec.msgpack.Decoder(_Head)


def paced(endpoint: str, proc_index: int, rate: float, seconds: float, start_at: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Send at a steady `rate` per second, one in flight; record each round trip in ms."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    payloads = beat_payloads(proc_index)
    while time.time() < start_at:
        time.sleep(0.001)
    rtts: list[float] = []
    t0 = time.perf_counter() + (proc_index / PROCS) / rate  # stagger the processes
    n = int(rate * seconds)
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.perf_counter()
        s.send(payloads[i % len(payloads)])
        s.recv()
        rtts.append((time.perf_counter() - t) * 1000)
    out.put(rtts)
    s.close(0)
    ctx.term()


def run_clients(target, endpoint: str, extra: tuple, procs: int = PROCS) -> list:  # type: ignore[no-untyped-def, type-arg]
    out: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 0.5
    ps = [mp.Process(target=target, args=(endpoint, i, *extra, start_at, out)) for i in range(procs)]
    for p in ps:
        p.start()
    results = [out.get(timeout=120) for _ in ps]
    for p in ps:
        p.join()
    return results


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="chkd-bench-hb-"))
    home = tmp / "home"
    paths = resolve(home)
    paths.ensure()
    paths.config_file.write_text(CONFIG)
    seed(db_path(paths))
    echo_endpoint = f"ipc://{tmp}/echo.sock"
    with chkdd(home) as (daemon, _env), echo_floor(echo_endpoint):
        from chkd.client.client import Client

        deadline = time.monotonic() + 20
        while not paths.ctl_sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with Client(paths, autostart=False) as c:
            c.call(Ping())
        started = int(time.time() * 1000)

        sustained = {}
        bad = 0
        for label, window in (("all_shims_in_flight", WORKERS // PROCS), ("one_in_flight_per_process", 1)):
            echo_counts = run_clients(flood, echo_endpoint, (args.seconds, False, window))
            hb_counts = run_clients(flood, paths.ctl_endpoint, (args.seconds, True, window))
            hb_rate = sum(d for d, _ in hb_counts) / args.seconds
            echo_rate = sum(d for d, _ in echo_counts) / args.seconds
            bad += sum(b for _, b in hb_counts)
            sustained[label] = {
                "in_flight": window * PROCS,
                "heartbeats_per_s": round(hb_rate),
                "echo_per_s": round(echo_rate),
                "ratio": round(hb_rate / echo_rate, 3),
            }

        rtts = [x for r in run_clients(paced, paths.ctl_endpoint, (1000 / PROCS, args.seconds)) for x in r]
        rss = psutil.Process(daemon.pid).memory_info().rss / 2**20

        import apsw

        conn = apsw.Connection(str(db_path(paths)), flags=apsw.SQLITE_OPEN_READONLY)
        committed = conn.execute("SELECT count(*) FROM workers WHERE heartbeat_at > ?", (started,)).fetchone()[0]
        conn.close()
        result = {
            "workers": WORKERS,
            "tasks": TASKS,
            "client_processes": PROCS,
            "seconds": args.seconds,
            "heartbeats_per_s": sustained["all_shims_in_flight"]["heartbeats_per_s"],
            "sustained": sustained,
            "bad_replies": bad,
            "latency_ms_at_1000_per_s": {
                "p50": round(pct(rtts, 0.5), 3),
                "p99": round(pct(rtts, 0.99), 3),
                "max": round(max(rtts), 3),
                "n": len(rtts),
            },
            "rss_mb": round(rss, 1),
            "committed_workers": committed,
            "goals": {"heartbeats_per_s": ">= 10000", "ratio": ">= 0.75", "p99_ms": "<= 5", "rss_mb": "<= 80"},
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
