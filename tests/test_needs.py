"""A test whose need (the claude CLI, tmux, chromium, systemd-analyze, root) is missing fails, with a
sentence saying how to get it, on every machine: a skipped test checks nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
TARGET = "test_claude_cli.py::test_reject_with_a_reason_resumes_the_same_session"


def test_a_missing_need_fails_the_test_and_says_how_to_get_it() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHKD_CLAUDE_BIN"}
    env["CHKD_CLAUDE_BIN"] = str(HERE / "no-such-claude")  # the claude CLI is "missing"
    env["PATH"] = os.pathsep.join(  # and none on PATH either
        d for d in env.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "claude").exists()
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:randomly", "-rfs", TARGET],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 error" in run.stdout or "1 failed" in run.stdout, run.stdout
    assert "skipped" not in run.stdout, run.stdout
    assert "this test needs claude, which this machine lacks: `bash .ci/run` installs it" in run.stdout, run.stdout
    assert "CHKD_CLAUDE_BIN" in run.stdout, run.stdout
