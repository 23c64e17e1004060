"""A test whose need is missing skips on a developer's machine but fails under CHKD_CI=1 (.ci/run):
a test skipped in CI checks nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
TARGET = "test_claude_cli.py::test_reject_with_a_reason_resumes_the_same_session"


def _run(ci: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CHKD_CI", "CHKD_CLAUDE_BIN")}
    env["CHKD_CLAUDE_BIN"] = str(HERE / "no-such-claude")  # the claude CLI is "missing"
    env["PATH"] = os.pathsep.join(  # and none on PATH either
        d for d in env.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "claude").exists()
    )
    if ci:
        env["CHKD_CI"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:randomly", "-rs", TARGET],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_need_skips_here_and_fails_in_ci() -> None:
    here = _run(ci=False)
    assert here.returncode == 0 and "1 skipped" in here.stdout, here.stdout + here.stderr
    assert "needs claude" in here.stdout, here.stdout
    ci = _run(ci=True)
    assert ci.returncode == 1, ci.stdout + ci.stderr
    assert "CHKD_CI=1: needs claude, which this machine lacks" in ci.stdout, ci.stdout
