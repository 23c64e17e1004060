"""The loop keeps answering while a merge's 5-second test gate runs off-loop."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
from test_merge import CONFIG, add_repo, done_worker

from chkd.protocol.messages import Merge, MergeShow, Ping

from conftest import Daemon, busy_for, make_repo, wait_for


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


@pytest.mark.timeout(60)
def test_ping_p99_under_50ms_during_a_5s_test_gate(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    add_repo(daemon, repo, test_cmd=busy_for(5))
    w = done_worker(daemon, repo, "feature", {"feature.txt": "x\n"})
    client = daemon.client()
    m = client.call(Merge(worker=w.id, strategy="auto")).merge
    wait_for(lambda: client.call(MergeShow(id=m.id)).merge.status == "testing", 10, what="the gate")
    samples: list[float] = []
    t_end = time.monotonic() + 4.0
    while time.monotonic() < t_end:  # back to back: each ping waits for its answer
        t0 = time.perf_counter()
        client.call(Ping())
        samples.append((time.perf_counter() - t0) * 1000)
    status = client.call(MergeShow(id=m.id)).merge.status
    gate_over = status != "testing"
    assert not gate_over, "the gate ended before the measurement did"
    samples.sort()
    p99 = samples[int(len(samples) * 0.99) - 1]
    assert len(samples) > 200, len(samples)
    assert p99 < 50, f"p99 {p99:.1f} ms (median {statistics.median(samples):.2f} ms)"
    done = wait_for(
        lambda: (mm := client.call(MergeShow(id=m.id)).merge).status == "merged" and mm, 15, what="the merge to land"
    )
    assert done.result_sha
