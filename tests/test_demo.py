"""`chkdctl demo` runs end to end on the autopilot, non-interactively, and leaves a repository that shows it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, git


@pytest.mark.timeout(240)
def test_demo_runs_and_leaves_a_merged_repository(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("CHKD_HOME", None)
    proc = subprocess.run(
        [str(BIN / "chkdctl"), "demo", "--keep", "--speed", "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    # not a terminal: plain event lines, no screen-control codes
    assert "\x1b[" not in out
    assert re.search(r"w\d+ runs DEMO\.1 on chkd/DEMO\.1", out)
    assert "autopilot started: up to 3 workers, merge auto" in out
    assert "autopilot.finished: the queue is empty" in out
    assert "tasks merged:        8/8" in out
    # dependencies: a dependant starts only after what it depends on was merged
    lines = out.splitlines()
    first = lambda pattern: next(i for i, line in enumerate(lines) if re.search(pattern, line))  # noqa: E731
    assert first(r"spawned for DEMO\.5 ") > first(r"DEMO\.3: merged into main")
    assert first(r"spawned for DEMO\.8 ") > max(
        first(r"DEMO\.5: merged into main"), first(r"DEMO\.7: merged into main")
    )
    # the conflict: detected, updated by the autopilot, handed to the person (the demo), merged
    assert re.search(r"brought up to date with `update`, conflict markers in NOTES\.md", out)
    assert "needs a person" in out
    m = re.search(r"conflicts:\s+(\d+) detected, (\d+) resolved", out)
    assert m and int(m.group(1)) >= 1 and m.group(1) == m.group(2)
    # the question: one task runs in an interactive demo agent (tmux) that asks; the worker turns
    # `waiting`, the demo types the answer with send, the agent goes on and its task is merged
    asker = re.search(r"(w\d+) DEMO\.6: waiting", out)
    assert asker, out[-3000:]
    assert f'{asker.group(1)} asked "Should the user guide use British spelling?"' in out
    assert first(r"DEMO\.6: merged into main") > first(r"DEMO\.6: waiting")
    assert re.search(r"questions answered:\s+1$", out, re.M)
    wall = float(re.search(r"wall time:\s+([\d.]+) s", out).group(1))
    one_at_a_time = float(re.search(r"one at a time:\s+([\d.]+) s", out).group(1))
    assert one_at_a_time > wall  # parallel agents beat running them in turn
    assert float(re.search(r"speed-up:\s+([\d.]+)x", out).group(1)) > 1.2
    tokens_in = int(re.search(r"tokens:\s+([\d,]+) in", out).group(1).replace(",", ""))
    cost = float(re.search(r"cost:\s+\$([\d.]+)", out).group(1))
    assert tokens_in > 0 and cost > 0  # the demo agents report usage; the summary adds it up

    kept = Path(re.search(r"kept:\s+(\S+)", out).group(1))
    try:
        repo = kept / "demo-app"
        log = git(repo, "log", "--format=%s", "main")
        for n in range(1, 9):
            assert f"DEMO.{n}" in log, log
        assert git(repo, "branch", "--list", "chkd/*") == ""  # merged branches are cleaned up
        assert git(repo, "worktree", "list").count("\n") == 0  # only the main checkout is left
        notes = (repo / "NOTES.md").read_text()
        assert "<<<<<<<" not in notes and ">>>>>>>" not in notes
        assert "DEMO.1" in notes and "DEMO.2" in notes  # the conflict kept both sides
        assert git(repo, "status", "--porcelain") == ""
        guide = git(repo, "show", "main:chkd-demo-DEMO.6.txt")
        assert "(told: yes, British spelling)" in guide  # the typed answer reached the agent
    finally:
        shutil.rmtree(kept, ignore_errors=True)
