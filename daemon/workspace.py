"""Making a worktree ready to work in: `copy` files from the main checkout, run `setup_cmd`.

Blocking (files, subprocesses): run off-loop only. Nothing here touches the store.

Why copied files are recorded in the worktree's marker: they are untracked on purpose (a `.env`
holds secrets), so chkd's own leftover commit and its dirty checks leave them out
(`worktrees.dirty`), and a worktree holding nothing but them is still clean.
Why setup inputs are hashed: a venv or `npm ci` takes minutes; a persistent gate or a pooled
worktree re-runs setup only when the files it depends on (and the command itself) change.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from chkd.protocol.errors import ChkdError

from . import git, procs, worktrees
from .reposettings import Workspace

#: Lines of the setup output a failure quotes.
TAIL_LINES = 15


@dataclass(frozen=True)
class Prepared:
    copied: list[str] = field(default_factory=list)
    setup_hash: str | None = None  # None: no setup_cmd
    setup_ran: bool = False
    seconds: float = 0.0


def _matches(root: str, patterns: list[str]) -> list[str]:
    """Files under `root` matching the globs (relative, sorted, inside `root` even through symlinks)."""
    real_root = os.path.realpath(root)
    found: set[str] = set()
    for pattern in patterns:
        for rel in glob.glob(pattern, root_dir=root, recursive=True, include_hidden=True):
            full = os.path.join(root, rel)
            real = os.path.realpath(full)
            if os.path.isfile(full) and (real == real_root or real.startswith(real_root + os.sep)):
                parts = Path(rel).parts
                if parts and parts[0] != ".git":
                    found.add(os.path.normpath(rel))
    return sorted(found)


def copy_files(main: str, worktree: str, patterns: list[str]) -> list[str]:
    """Copy the untracked files matching `patterns` from the main checkout into `worktree`.

    A tracked file is the worktree's own (it came with the checkout); a path that already exists
    in the worktree is never overwritten. Returns the relative paths copied."""
    if not patterns:
        return []
    tracked = {p for p in git.run(["ls-files", "-z", "--cached"], main).stdout.split("\0") if p}
    copied = []
    for rel in _matches(main, patterns):
        dest = os.path.join(worktree, rel)
        if rel in tracked or os.path.lexists(dest):
            continue
        os.makedirs(os.path.dirname(dest) or worktree, exist_ok=True)
        shutil.copy2(os.path.join(main, rel), dest)
        copied.append(rel)
    return copied


def inputs_hash(root: str, ws: Workspace) -> str | None:
    """The hash deciding whether setup must run again: the command and the setup_inputs' contents."""
    if not ws.setup_cmd:
        return None
    h = hashlib.sha256()
    h.update("\0".join(ws.setup_cmd).encode())
    for rel in _matches(root, ws.setup_inputs):
        h.update(b"\1" + rel.encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class SetupRun:
    ok: bool
    seconds: float
    returncode: int | None = None
    timed_out: bool = False
    tail: str = ""


def run_setup(ws: Workspace, worktree: str, log_path: str | Path, timeout: float | None = None) -> SetupRun:
    """Run `setup_cmd` in `worktree` (its own session; output appended to `log_path`)."""
    assert ws.setup_cmd
    timeout = timeout or ws.setup_timeout_s
    started = time.monotonic()
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"[chkd] setup in {worktree}: {' '.join(ws.setup_cmd)}\n".encode())
        out.flush()
        start = out.tell()
        try:
            ran = procs.run_bounded(
                ws.setup_cmd,
                worktree,
                timeout,
                stdout=out,
                extra_env={"CHKD_WORKTREE": worktree, "CHKD_MAIN_CHECKOUT": ws.main_checkout},
            )
        except OSError as exc:
            msg = f"the setup command {ws.setup_cmd[0]!r} could not start: {exc.strerror or exc}"
            out.write(f"[chkd] {msg}\n".encode())
            return SetupRun(False, time.monotonic() - started, tail=msg)
        seconds = time.monotonic() - started
        ok = not ran.timed_out and ran.returncode == 0
        out.write(
            f"[chkd] setup {'finished' if ok else 'failed'} in {seconds:.1f} s "
            f"(exit {ran.returncode}{', timed out' if ran.timed_out else ''})\n".encode()
        )
    return SetupRun(ok, seconds, ran.returncode, ran.timed_out, _tail(log, start))


def _tail(log: Path, start: int) -> str:
    with open(log, "rb") as f:
        f.seek(max(start, os.path.getsize(log) - 16 * 1024))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-TAIL_LINES:])


def setup_failure(run: SetupRun, ws: Workspace, where: str) -> ChkdError:
    """One sentence and the log's tail for a failed setup."""
    assert ws.setup_cmd
    why = (
        f"ran longer than {ws.setup_timeout_s:g} s and was stopped"
        if run.timed_out
        else f"failed (exit {run.returncode})"
        if run.returncode is not None
        else "could not start"
    )
    return ChkdError(
        "refused", f"setup_cmd {' '.join(ws.setup_cmd)!r} {why} in {where}; last lines of its log:\n{run.tail}"
    )


def prepare(ws: Workspace, worktree: str, log_path: str | Path, done_hash: str | None = None) -> Prepared:
    """Copy files in and run setup unless `done_hash` says it already ran on the same inputs.
    Records what was copied and the setup hash in the worktree's marker. Raises a ChkdError
    (a sentence and the log's tail) when setup fails."""
    started = time.monotonic()
    copied = copy_files(ws.main_checkout, worktree, ws.copy)
    marker = worktrees.read_marker(worktree) or {}
    own = sorted(set(marker.get("copied") or []) | set(copied))
    if own != marker.get("copied") and marker:
        worktrees.update_marker(worktree, copied=own)
    wanted = inputs_hash(worktree, ws)
    ran = False
    if wanted is not None and wanted != done_hash:
        run = run_setup(ws, worktree, log_path)
        if not run.ok:
            raise setup_failure(run, ws, worktree)
        ran = True
        if marker:
            worktrees.update_marker(worktree, setup_hash=wanted)
    return Prepared(copied=own, setup_hash=wanted, setup_ran=ran, seconds=time.monotonic() - started)
