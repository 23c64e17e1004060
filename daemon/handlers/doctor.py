"""doctor: the daemon's side of `chkdctl doctor` — the git (and tmux) it runs, and live workers with
nothing live behind them. The rules are pure (daemon/doctor.py); this gathers the facts."""

from __future__ import annotations

import shutil

from chkd.protocol import tmux
from chkd.protocol.launch import NEUTRAL_CWD
from chkd.protocol.messages import LIVE_WORKER_STATUSES, Doctor, DoctorReport

from .. import doctor, git
from ..context import Ctx, Deferred
from ..liveness import proc_alive
from ..store import now_ms

_LIVE_IN = ",".join(f"'{s}'" for s in sorted(LIVE_WORKER_STATUSES))


def _git_version() -> str:
    """Off-loop: `git --version` as the daemon runs it."""
    return git.out(["--version"], NEUTRAL_CWD, timeout=20)


def diagnose(ctx: Ctx, _req: Doctor) -> Deferred:
    deferred = ctx.defer()

    def _with_git(version: str | None, exc: BaseException | None) -> None:
        error = None if exc is None else getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        rows = ctx.store.dicts(
            "SELECT id, status, pid, proc_started, shim_pid, shim_started, heartbeat_at, started_at, exit_code, "
            f"exit_signal FROM workers WHERE status IN ({_LIVE_IN}) ORDER BY seq"
        )
        facts = {
            r["id"]: (proc_alive(r["pid"], r["proc_started"]), proc_alive(r["shim_pid"], r["shim_started"]))
            for r in rows
        }  # psutil: fast syscalls, fine on the loop (as in the reaper)
        findings = [
            doctor.git_finding(version, error),
            doctor.tmux_finding(shutil.which(tmux.TMUX)),
            *doctor.worker_findings(rows, facts, now_ms(), int(ctx.config.heartbeat_timeout_s * 1000)),
        ]
        ctx.finish(deferred, DoctorReport(findings=findings))

    ctx.submit(_git_version, then=_with_git, reply_to=deferred)
    return deferred


HANDLERS = {Doctor: diagnose}
