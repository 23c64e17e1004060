"""Eight client processes claim from 2,000 tasks until the queue is empty: every task exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from chkd.protocol.messages import (
    RepoAdd,
    TaskImport,
    TaskList,
)

from conftest import Daemon

CLAIMER = """
import json, os, sys
from chkd.client.client import Client
from chkd.protocol.messages import Claim
from chkd.protocol.paths import resolve
ids = []
with Client(resolve(sys.argv[1]), autostart=False, timeout=60) as c:
    while True:
        task = c.call(Claim(repo=sys.argv[2], worker=f"p{os.getpid()}")).task
        if task is None:
            break
        assert task.status == "claimed" and task.claimed_by == f"p{os.getpid()}"
        ids.append(task.id)
print(json.dumps(ids))
"""


@pytest.mark.timeout(120)
def test_eight_processes_claim_2000_tasks_exactly_once(daemon: Daemon, repo: Path) -> None:
    c = daemon.client(timeout=60)
    c.call(RepoAdd(path=str(repo)))
    lines = ["## Load"] + [f"- [ ] [P{i % 5}] **L.{i} task {i}**" for i in range(1, 2001)]
    report = c.call(TaskImport(text="\n".join(lines), repo="proj"))
    assert len(report.new) == 2000
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(daemon.home), str(repo)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=100)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    claimed = [tid for ids in results for tid in ids]
    dupes = [tid for tid, n in Counter(claimed).items() if n > 1]
    assert dupes == []  # none twice
    assert sorted(claimed) == sorted(f"L.{i}" for i in range(1, 2001))  # none lost
    assert sum(1 for ids in results if ids) >= 2  # they really ran side by side
    # each process saw priorities in order (P0 before P1 ... within what it got)
    for ids in results:
        prios = [int(tid[2:]) % 5 for tid in ids]
        assert prios == sorted(prios)
    tasks = c.call(TaskList(repo="proj")).tasks
    assert Counter(t.status for t in tasks) == {"claimed": 2000}
