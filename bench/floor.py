"""Shared by the benchmarks: a real chkdd in a scratch home, and the floor every benchmark
measures chkdd against: a bare pyzmq ROUTER echo, same machine, same run.

It has chkdd's loop shape (poll, drain what waits, answer) and does no work, so the
ratio to it is what the daemon's own work costs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from chkd.protocol.launch import module_argv


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def echo_server(endpoint: str, ready: mp.Event) -> None:  # type: ignore[valid-type]
    """A bare ROUTER that drains what waits and echoes it back; b"stop" ends it."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.bind(endpoint)
    ready.set()
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    pending: list[list[bytes]] = []
    while True:
        if not poller.poll(1000):
            continue
        while len(pending) < 512:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frames[-1] == b"stop":
                return
            pending.append(frames)
        for frames in pending:
            sock.send_multipart(frames)
        pending.clear()


@contextmanager
def echo_floor(endpoint: str) -> Iterator[str]:
    """Run the echo server in its own process for the duration of the block."""
    ready = mp.Event()
    proc = mp.Process(target=echo_server, args=(endpoint, ready), daemon=True)
    proc.start()
    ready.wait(10)
    try:
        yield endpoint
    finally:
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.connect(endpoint)
        s.send(b"stop")
        proc.join(5)
        s.close(0)


@contextmanager
def chkdd(home: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """A real daemon for `home` (stopped afterwards); yields it and the environment its clients use."""
    env = {**os.environ, "CHKD_HOME": str(home), "CHKD_NO_AUTOSTART": "1"}
    daemon = subprocess.Popen(
        module_argv("chkd.daemon.main", "--home", str(home)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield daemon, env
    finally:
        daemon.terminate()
        daemon.wait(10)
