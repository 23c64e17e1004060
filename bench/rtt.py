"""Request round trip through chkdd, next to a bare pyzmq echo (the floor) in the same run.

Prints one JSON object:
- ping_us: p50/p99 of 10,000 in-process `ping` round trips (one DEALER).
- echo_us: p50/p99 of the same-size message through a bare Python DEALER/ROUTER echo server.
- ratio_p50: ping p50 / echo p50 (goal <= 1.3).
- rps_8_clients: pings/s with 8 client processes; echo_rps_8_clients the same against the echo.
- chkdctl_ping_ms / bare_import_ms: whole-process `chkdctl ping` p50 next to
  `python -c "import zmq, msgspec, click"` (ratio goal <= 1.2).

Usage: python bench/rtt.py [--n 10000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq
from floor import chkdd, echo_floor, pct

from chkd.client.client import Client
from chkd.protocol import codec
from chkd.protocol.messages import Ping, Pong
from chkd.protocol.paths import resolve

BIN = Path(sys.executable).parent


def rtt_loop(endpoint: str, payload: bytes, n: int) -> list[float]:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    for _ in range(200):  # warm-up
        s.send(payload)
        s.recv()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        s.send(payload)
        s.recv()
        out.append((time.perf_counter() - t) * 1e6)
    s.close()
    return out


def ping_client_loop(home: str, n: int) -> None:
    with Client(resolve(home), autostart=False) as c:
        for _ in range(n):
            c.call(Ping())


def raw_client_loop(endpoint: str, payload: bytes, n: int) -> None:
    rtt_loop(endpoint, payload, n)


def throughput(target, args_fn, procs: int, n: int) -> float:  # type: ignore[no-untyped-def]
    workers = [mp.Process(target=target, args=args_fn()) for _ in range(procs)]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return procs * n / (time.perf_counter() - t)


def whole_process(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--cli-runs", type=int, default=21)
    args = ap.parse_args()

    # Byte-compile chkd as a wheel install would: with PYTHONDONTWRITEBYTECODE set (as on
    # some machines) an editable checkout would otherwise be compiled on every start,
    # while the baseline's packages come precompiled.
    import compileall

    import chkd

    root = Path(chkd.__file__).resolve().parent.parent
    for folder in ("chkd", "protocol", "client"):
        compileall.compile_dir(str(root / folder), quiet=1)

    tmp = Path(tempfile.mkdtemp(prefix="chkd-bench-rtt-"))
    home = tmp / "home"
    echo_endpoint = f"ipc://{tmp}/echo.sock"
    with chkdd(home) as (_daemon, env), echo_floor(echo_endpoint):
        measure(args, home, env, echo_endpoint)


def measure(args: argparse.Namespace, home: Path, env: dict[str, str], echo_endpoint: str) -> None:
    paths = resolve(home)
    deadline = time.monotonic() + 20
    while not paths.ctl_sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    payload = codec.encode_request(1, Ping())
    # interleave the two measurements in rounds so drift hits both alike
    ping_us: list[float] = []
    echo_us: list[float] = []
    for _ in range(5):
        ping_us += rtt_loop(paths.ctl_endpoint, payload, args.n // 5)
        echo_us += rtt_loop(echo_endpoint, payload, args.n // 5)
    with Client(paths, autostart=False) as c:
        assert isinstance(c.call(Ping()), Pong)
    per = 2000
    rps = throughput(ping_client_loop, lambda: (str(home), per), args.procs, per)
    echo_rps = throughput(raw_client_loop, lambda: (echo_endpoint, payload, per), args.procs, per)
    cli_ms: list[float] = []
    import_ms: list[float] = []
    for _ in range(3):
        cli_ms.append(whole_process([str(BIN / "chkdctl"), "ping"], env, args.cli_runs // 3))
        import_ms.append(whole_process([sys.executable, "-c", "import zmq, msgspec, click"], env, args.cli_runs // 3))
    cli, imp = statistics.median(cli_ms), statistics.median(import_ms)
    result = {
        "n": args.n,
        "ping_us": {"p50": round(pct(ping_us, 0.5), 1), "p99": round(pct(ping_us, 0.99), 1)},
        "echo_us": {"p50": round(pct(echo_us, 0.5), 1), "p99": round(pct(echo_us, 0.99), 1)},
        "ratio_p50": round(pct(ping_us, 0.5) / pct(echo_us, 0.5), 3),
        "rps_8_clients": round(rps),
        "echo_rps_8_clients": round(echo_rps),
        "rps_ratio": round(rps / echo_rps, 3),
        "chkdctl_ping_ms": round(cli, 1),
        "bare_import_ms": round(imp, 1),
        "chkdctl_ratio": round(cli / imp, 3),
        "goals": {"ratio_p50": "<= 1.3", "chkdctl_ratio": "<= 1.2"},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
