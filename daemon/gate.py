"""The persistent test gate: one worktree per repository, brought to each merge result.

Why persistent: a real project's gate needs its own environment (a venv with the package
installed editable *from the gate worktree*, `node_modules`); building it per merge would
cost minutes. The gate worktree is moved with a forced detached checkout and `git clean -fd`
(untracked files go, ignored ones such as `.venv` survive), and `setup_cmd` runs again only
when the `setup_inputs` hash changes (recorded in the gate's marker).

Why the suspect check: with a shared environment (an editable install pointing at the main
checkout), the gate imports main's code, not the merge result's. When the gate's output names
files under the main checkout and none under the gate worktree, that is said in the merge log
and a `merge.gate_suspect` event; `gate_strict = true` makes it a failed merge.

Blocking (git, subprocesses): off-loop only; nothing here touches the store.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from chkd.protocol.errors import ChkdError

from . import git, mergeengine, workspace, worktrees
from .reposettings import Workspace

#: The marker purpose of a persistent gate worktree (temporary gates of older versions are "gate").
PURPOSE = "gatetree"


def gate_path(state: Path, repo_id: int, repo_name: str) -> str:
    """In chkd's state directory: nobody works there, and it never collides with a worker's path."""
    return str(state / "gates" / f"{worktrees.path_safe(repo_name)}-{repo_id}")


def bring_to(repo: str, path: str, commit: str, owner: dict[str, Any]) -> None:
    """Make `path` the gate worktree, detached at `commit`, with no untracked file left (ignored ones stay)."""
    reservation = Path(path + ".owner.json")
    if worktrees.admin_dir(path) is None:
        if os.path.lexists(path):
            if not os.path.isdir(path) or any(os.scandir(path)):
                raise ChkdError(
                    "conflict",
                    f"{path} exists but is not chkd's gate worktree; it was left alone.",
                    "Move it away; chkd makes the gate worktree there.",
                )
            os.rmdir(path)
        worktrees.forget_worktree(repo, path)  # a registration whose directory went
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # recorded before the add: a daemon killed before the marker is written still left a record
        reservation.write_text(json.dumps({**owner, "purpose": PURPOSE}) + "\n")
        git.run(["worktree", "add", "--detach", "--quiet", "--", path, commit], repo, timeout=600)
        worktrees.mark_worktree(path, {**owner, "purpose": PURPOSE})
        return
    marker = worktrees.read_marker(path)
    if marker is None and _reserved_by(reservation, str(owner.get("home"))):
        worktrees.mark_worktree(path, {**owner, "purpose": PURPOSE})  # the kill came between add and mark
        marker = worktrees.read_marker(path)
    if not worktrees.marked_by(marker, str(owner.get("home")), PURPOSE):
        raise ChkdError("conflict", f"{path} is a git worktree chkd did not make as its gate; it was left alone.")
    git.run(["checkout", "--quiet", "--force", "--detach", commit], path, timeout=600)
    git.run(["clean", "-fdq"], path, timeout=600)


def remove(repo: str, path: str, home: str) -> bool:
    """`repo rm`: the gate worktree goes (only one this home marked as its gate; nobody works there)."""
    marker = worktrees.worktree_markers(repo).get(os.path.realpath(path)) if os.path.isdir(repo) else None
    if worktrees.marked_by(marker, home, PURPOSE):
        if os.path.isdir(path):
            git.run(["worktree", "remove", "--force", "--", path], repo, check=False)
        else:
            worktrees.forget_worktree(repo, path)
    if not os.path.lexists(path):
        Path(path + ".owner.json").unlink(missing_ok=True)
    return not os.path.lexists(path)


def _reserved_by(reservation: Path, home: str) -> bool:
    try:
        data = json.loads(reservation.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("home") == home and data.get("purpose") == PURPOSE


def suspect(output: str, main: str, gate: str) -> str | None:
    """The first file under the main checkout the output names whose counterpart in the gate worktree
    it never names (a traceback through the gate's own copy of that file means the gate read it)."""
    gates = sorted({os.path.normpath(gate), os.path.realpath(gate)}, key=len, reverse=True)
    for root in sorted({os.path.normpath(main), os.path.realpath(main)}, key=len, reverse=True):
        for m in re.finditer(re.escape(root + os.sep) + r"[^\s'\"(),:;]+", output):
            rel = m.group(0)[len(root) + 1 :]
            if not any(os.path.join(g, rel) in output for g in gates):
                return m.group(0)
    return None


def suspect_sentence(path: str) -> str:
    return (
        f"the gate read {path} from the main checkout, so it may be testing main rather than the merge "
        "result; set `setup_cmd`."
    )


def run(
    repo: str,
    path: str,
    commit: str,
    cmd: list[str],
    timeout: float,
    owner: dict[str, Any],
    ws: Workspace,
    log_path: str,
) -> mergeengine.GateResult:
    """Bring the gate to `commit`, copy files in, set up if its inputs changed, run `cmd` there."""
    started = time.monotonic()
    bring_to(repo, path, commit, owner)
    done = (worktrees.read_marker(path) or {}).get("setup_hash")
    try:
        prepared = workspace.prepare(ws, path, log_path, done_hash=done)
    except ChkdError as exc:
        return mergeengine.GateResult(
            False, f"[chkd] the gate's setup failed: {exc.message}\n", time.monotonic() - started
        )
    res = mergeengine.run_cmd(
        cmd, Path(path), timeout, started, extra_env={"CHKD_WORKTREE": path, "CHKD_MAIN_CHECKOUT": repo}
    )
    note = f"[chkd] setup ran in the gate ({prepared.seconds:.1f} s)\n" if prepared.setup_ran else ""
    found = suspect(res.output, repo, path)
    return mergeengine.GateResult(
        res.ok, note + res.output, time.monotonic() - started, res.timed_out, res.returncode, suspect=found
    )
