"""`chkdctl demo` runs end to end, non-interactively, and leaves a repository that shows it."""

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
    proc = subprocess.run([str(BIN / "chkdctl"), "demo", "--keep", "--speed", "4"], env=env,
                          capture_output=True, text=True, timeout=220, stdin=subprocess.DEVNULL)
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    # not a terminal: plain event lines, no screen-control codes
    assert "\x1b[" not in out
    assert re.search(r"spawned for DEMO\.1 on chkd/DEMO\.1", out)
    assert "tasks merged:        6/6" in out
    m = re.search(r"conflicts:\s+(\d+) detected, (\d+) resolved", out)
    assert m and int(m.group(1)) >= 1 and m.group(1) == m.group(2)
    wall = float(re.search(r"wall time:\s+([\d.]+) s", out).group(1))
    one_at_a_time = float(re.search(r"one at a time:\s+([\d.]+) s", out).group(1))
    assert one_at_a_time > wall  # parallel agents beat running them in turn

    kept = Path(re.search(r"kept:\s+(\S+)", out).group(1))
    try:
        repo = kept / "demo-app"
        log = git(repo, "log", "--format=%s", "main")
        for n in range(1, 7):
            assert f"DEMO.{n}" in log, log
        assert git(repo, "branch", "--list", "chkd/*") == ""  # merged branches are cleaned up
        assert git(repo, "worktree", "list").count("\n") == 0  # only the main checkout is left
        notes = (repo / "NOTES.md").read_text()
        assert "<<<<<<<" not in notes and ">>>>>>>" not in notes
        assert "DEMO.1" in notes and "DEMO.2" in notes  # the conflict kept both sides
        assert git(repo, "status", "--porcelain") == ""
    finally:
        shutil.rmtree(kept, ignore_errors=True)
