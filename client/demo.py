"""`chkdctl demo`: a scripted multi-worker session in a temporary repository, shown live.

It is a real session, not an animation: a private chkdd (its own CHKD_HOME inside the
temporary directory, so the user's daemon and config are untouched) runs three demo
agents in parallel, each in its own worktree and branch; finished workers are merged
with the conflict check and compare-and-swap; one pair is steered into a conflict that
is detected, brought up to date with `update`, resolved and merged.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    LIVE_WORKER_STATUSES,
    Done,
    Merge,
    MergeInfo,
    MergeShow,
    RepoAdd,
    Spawn,
    TaskAdd,
    TaskList,
    Update,
    WorkerInfo,
    WorkerList,
)
from chkd.protocol.paths import resolve
from chkd.protocol.statuses import SETTLED_MERGE_STATUSES

from . import daemonctl
from .client import Client
from .icons import STATUS_ICONS
from .output import visible

#: (id, title, priority, depends on, file it collides on)
#: The first two run side by side and both edit NOTES.md: the second to finish collides.
DEMO_TASKS: list[tuple[str, str, int, list[str], str | None]] = [
    ("DEMO.1", "Document the greeting in NOTES.md", 1, [], "NOTES.md"),
    ("DEMO.2", "Add release notes to NOTES.md", 1, [], "NOTES.md"),
    ("DEMO.3", "Add a greeting module", 1, [], None),
    ("DEMO.4", "Load settings from a file", 2, [], None),
    ("DEMO.5", "Command-line entry point", 2, ["DEMO.3"], None),
    ("DEMO.6", "Tests for the settings loader", 3, [], None),
]

DEMO_FILES = {
    "README.md": "# demo-app\n\nA tiny project for the chkd demo.\n",
    "NOTES.md": "# Notes\n\nProject notes live here.\n",
    "app/__init__.py": "",
    "app/main.py": "def main() -> None:\n    print('hello')\n",
}

@dataclass
class DemoResult:
    directory: Path
    repo: Path
    tasks_total: int = 0
    tasks_merged: int = 0
    conflicts_detected: int = 0
    conflicts_resolved: int = 0
    wall_s: float = 0.0
    sequential_s: float = 0.0
    workers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.tasks_merged == self.tasks_total


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "chkd demo"),
           "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "demo@chkd.invalid"),
           "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "chkd demo"),
           "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "demo@chkd.invalid")}
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ChkdError("internal", f"git {args[0]} failed in {cwd}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def make_demo_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "chkd demo")
    git(path, "config", "user.email", "demo@chkd.invalid")
    git(path, "config", "commit.gpgsign", "false")
    for name, text in DEMO_FILES.items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "demo-app: initial commit")
    return path


DEMO_CONFIG = """\
heartbeat_s = 0.5
heartbeat_timeout_s = 5
stall_timeout_s = 60
max_workers = {workers}
merge_strategy = "auto"
notify = false
"""


class Screen:
    """Live output: a refreshing worker table on a terminal, plain event lines otherwise."""

    def __init__(self, live: bool, out: Callable[[str], None]) -> None:
        self.live = live
        self.out = out
        self.lines: list[str] = []

    def log(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        line = f"{stamp}  {visible(text)}"
        self.lines.append(line)
        if not self.live:
            self.out(line)

    def draw(self, workers: list[WorkerInfo], tasks_left: int, merged: int, total: int) -> None:
        if not self.live:
            return
        rows = [f"chkd demo — {merged}/{total} tasks merged, {tasks_left} waiting", ""]
        rows.append(f"  {'worker':<7} {'status':<12} {'task':<8} {'title':<36} message")
        for w in workers:
            icon = STATUS_ICONS.get(w.status, "·")
            title, message = visible(w.task_title or "")[:36], visible(w.message or "")[:40]
            rows.append(f"  {visible(w.id):<7} {icon} {w.status:<10} {visible(w.task_id or '-'):<8} "
                        f"{title:<36} {message}")
        rows.append("")
        rows.extend(self.lines[-8:])
        frame = "\x1b[H\x1b[2J" + "\n".join(rows)
        self.out(frame)


def run_demo(
    workers: int = 3,
    speed: float = 1.0,
    keep: bool = False,
    live: bool | None = None,
    out: Callable[[str], None] = print,
    steps: int = 4,
) -> DemoResult:
    gc.enable()
    live = sys.stdout.isatty() if live is None else live
    base = Path(tempfile.mkdtemp(prefix="chkd-demo-"))
    repo = make_demo_repo(base / "demo-app")
    home = base / "home"
    home.mkdir()
    (home / "config.toml").write_text(DEMO_CONFIG.format(workers=workers))
    paths = resolve(home)
    result = DemoResult(directory=base, repo=repo, tasks_total=len(DEMO_TASKS))
    screen = Screen(live, out)
    step_s = max(0.05, 0.6 / speed)
    saved_home = os.environ.get("CHKD_HOME")
    os.environ["CHKD_HOME"] = str(home)
    started = time.monotonic()
    try:
        daemonctl.start(paths)
        with Client(paths, autostart=False, timeout=60) as client:
            _session(client, repo, workers, step_s, steps, screen, result)
    finally:
        result.wall_s = time.monotonic() - started
        try:
            daemonctl.stop(paths)
        except ChkdError:
            pass
        if saved_home is None:
            os.environ.pop("CHKD_HOME", None)
        else:
            os.environ["CHKD_HOME"] = saved_home
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    return result


def _session(client: Client, repo: Path, max_workers: int, step_s: float, steps: int,
             screen: Screen, result: DemoResult) -> None:
    repo_name = client.call(RepoAdd(path=str(repo), name="demo-app")).repo.name
    screen.log(f"repository {repo} registered as '{repo_name}'")
    collide: dict[str, str] = {}
    for task_id, title, prio, after, conflict_file in DEMO_TASKS:
        client.call(TaskAdd(repo=repo_name, id=task_id, title=title, priority=prio, after=after))
        if conflict_file:
            collide[task_id] = conflict_file
        dep = f" after {', '.join(after)}" if after else ""
        screen.log(f"task {task_id} [P{prio}] {title}{dep}")

    merged_tasks: set[str] = set()
    handled: set[str] = set()
    durations: list[float] = []
    deadline = time.monotonic() + 300
    while len(merged_tasks) < len(DEMO_TASKS):
        if time.monotonic() > deadline:
            result.problems.append("the demo did not finish within 5 minutes")
            break
        ws = client.call(WorkerList(repo=repo_name, all=True)).workers
        live_count = sum(1 for w in ws if w.status in LIVE_WORKER_STATUSES)
        # fill free slots with the most urgent ready tasks (the queue's own order)
        ready = [t for t in client.call(TaskList(repo=repo_name, ready=True)).tasks
                 if t.status == "pending"]
        for task in ready[: max(0, max_workers - live_count)]:
            cmd = _agent_cmd(step_s, steps, collide.get(task.id))
            spawned = client.call(Spawn(repo=repo_name, task_id=task.id, cmd=cmd)).worker
            live_count += 1
            result.workers.append(spawned.id)
            screen.log(f"{spawned.id} spawned for {spawned.task_id} on {spawned.branch} in {spawned.worktree}")
        ws = client.call(WorkerList(repo=repo_name, all=True)).workers
        for w in ws:
            if w.id in handled:
                continue
            if w.status == "done":
                handled.add(w.id)
                if w.completed_at and w.started_at:
                    durations.append((w.completed_at - w.started_at) / 1000)
                if _merge_worker(client, w, repo, screen, result):
                    merged_tasks.add(w.task_id or "")
                    result.tasks_merged += 1
            elif w.status in ("error", "dead", "aborted"):
                handled.add(w.id)
                result.problems.append(f"{w.id} ({w.task_id}) ended {w.status}: {w.last_error or w.message or ''}")
                merged_tasks.add(w.task_id or "")
        tasks = client.call(TaskList(repo=repo_name)).tasks
        waiting = sum(1 for t in tasks if t.status == "pending")
        screen.draw(ws, waiting, len(merged_tasks), len(DEMO_TASKS))
        time.sleep(0.2)
    final = client.call(WorkerList(repo=repo_name, all=True)).workers
    screen.draw(final, 0, len(merged_tasks), len(DEMO_TASKS))
    result.sequential_s = sum(durations)


def _agent_cmd(step_s: float, steps: int, conflict_file: str | None) -> list[str]:
    # the agent installed next to this Python, so an unactivated venv works too
    beside = Path(sys.executable).parent / "chkd-demo-agent"
    agent = str(beside) if beside.exists() else "chkd-demo-agent"
    cmd = [agent, "--steps", str(steps), "--step-s", f"{step_s:.3f}"]
    if conflict_file:
        cmd += ["--conflict-file", conflict_file]
    return cmd


def _wait_merge(client: Client, merge_id: int, timeout: float = 120) -> MergeInfo:
    deadline = time.monotonic() + timeout
    while True:
        m = client.call(MergeShow(id=merge_id)).merge
        if m.status in SETTLED_MERGE_STATUSES:
            return m
        if time.monotonic() > deadline:
            raise ChkdError("busy", f"merge {merge_id} did not finish within {timeout:.0f} s")
        time.sleep(0.05)


def _merge_worker(client: Client, w: WorkerInfo, repo: Path, screen: Screen, result: DemoResult) -> bool:
    m = client.call(Merge(worker=w.id, strategy="auto", no_test=True)).merge
    m = _wait_merge(client, m.id)
    if m.status == "merged":
        screen.log(f"{w.id} merged into main ({(m.result_sha or '')[:8]}): {w.task_id} {w.task_title}")
        return True
    if m.status != "conflict":
        result.problems.append(f"merge of {w.id} ended {m.status}: {m.log[-200:]}")
        return False
    result.conflicts_detected += 1
    screen.log(f"⚠ conflict: {w.id} ({w.task_id}) collides with main in {', '.join(m.conflict_files)} — nothing was changed")
    # bring main into the worker's branch; the conflict markers land in its worktree
    client.call(Update(worker=w.id))
    worktree = Path(w.worktree or "")
    for name in m.conflict_files:
        _resolve_union(worktree / name)
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", f"{w.task_id}: resolve conflict with main")
    screen.log(f"{w.id} brought up to date with `update`, conflict in {', '.join(m.conflict_files)} resolved")
    client.call(Done(worker=w.id, summary="conflict resolved"))
    m = _wait_merge(client, client.call(Merge(worker=w.id, strategy="auto", no_test=True)).merge.id)
    if m.status == "merged":
        result.conflicts_resolved += 1
        screen.log(f"{w.id} merged after resolving ({(m.result_sha or '')[:8]})")
        return True
    result.problems.append(f"merge of {w.id} after resolving ended {m.status}")
    return False


def _resolve_union(path: Path) -> None:
    """Resolve a text conflict by keeping both sides (what an agent would do for notes)."""
    out: list[str] = []
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith(("<<<<<<< ", "=======", ">>>>>>> ", "||||||| ")):
            continue
        out.append(line)
    path.write_text("".join(out))


def summary_lines(r: DemoResult) -> list[str]:
    speedup = r.sequential_s / r.wall_s if r.wall_s else 0.0
    lines = [
        "",
        "chkd demo summary",
        f"  tasks merged:        {r.tasks_merged}/{r.tasks_total}",
        f"  workers:             {len(r.workers)}",
        f"  wall time:           {r.wall_s:.1f} s",
        f"  one at a time:       {r.sequential_s:.1f} s (the same agents' run times, added up)",
        f"  speed-up:            {speedup:.1f}x",
        f"  conflicts:           {r.conflicts_detected} detected, {r.conflicts_resolved} resolved and merged",
    ]
    for p in r.problems:
        lines.append(f"  problem: {p}")
    return lines
