"""`chkdctl demo`: a real session on the autopilot in a temporary repository, shown live.

It is a real session, not an animation: a private chkdd (its own CHKD_HOME inside the
temporary directory, so the user's daemon and config are untouched) imports a spec of eight
tasks with priorities and dependencies and runs them with `chkdctl run --until-empty` —
demo agents in parallel, each in its own worktree and branch, merged as they finish. Two
tasks are steered into the same file: the second merge conflicts, the autopilot brings it up
to date with `update`, and hands the conflict markers to a person — the demo plays that
person, resolves them and says `done`, and the autopilot merges it. One task runs in an
interactive demo agent (tmux, like `demo-interactive`) that asks a question first: the worker
turns `waiting`, the demo answers with `chkdctl send`'s typing, and the task goes on to merge.
On a terminal the session is shown in `chkdctl top`; otherwise (or with --plain) as event lines.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    Cost,
    DepAdd,
    Done,
    Events,
    RepoAdd,
    RunStart,
    RunStatus,
    SendKeys,
    Stats,
    TaskImport,
    WorkerList,
    WorkerShow,
)
from chkd.protocol.paths import Paths, resolve

from . import daemonctl
from .client import Client
from .output import visible

#: The spec the demo imports (chkd's SPEC.md format): priorities and tags; dependencies below.
DEMO_SPEC = """\
# demo-app

## Demo
- [ ] [P1] **DEMO.1 Document the greeting in NOTES.md** - a paragraph on what the greeting says #notes
- [ ] [P1] **DEMO.2 Add release notes to NOTES.md** - what changed in this release #notes
- [ ] [P1] **DEMO.3 Add a greeting module** - app/greeting.py with greet(name)
- [ ] [P2] **DEMO.4 Load settings from a file** - app/settings.py reads settings.toml
- [ ] [P2] **DEMO.5 Command-line entry point** - python -m app greets
- [ ] [P2] **DEMO.6 Write the user guide** - docs/guide.md #ask
- [ ] [P3] **DEMO.7 Tests for the settings loader** - tests/test_settings.py
- [ ] [P3] **DEMO.8 Package the app** - pyproject.toml with an entry point
"""
#: (task, depends on)
DEMO_DEPS: list[tuple[str, str]] = [
    ("DEMO.5", "DEMO.3"),
    ("DEMO.7", "DEMO.4"),
    ("DEMO.8", "DEMO.5"),
    ("DEMO.8", "DEMO.7"),
]
DEMO_TASKS = 8
QUESTION = "Should the user guide use British spelling?"
ANSWER = "yes, British spelling"

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
    questions_answered: int = 0
    wall_s: float = 0.0
    sequential_s: float = 0.0
    speedup: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    workers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.tasks_merged == self.tasks_total


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "chkd demo"),
        "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "demo@chkd.invalid"),
        "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "chkd demo"),
        "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "demo@chkd.invalid"),
    }
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
heartbeat_timeout_s = 15
stall_timeout_s = 60
max_workers = {workers}
merge_strategy = "auto"
notify = false
default_agent = "demo-steps"
budget_usd_per_day = 5

[agents.demo-steps]
cmd = {steps}

[agents.demo-notes]
cmd = {notes}
tags = ["notes"]
{ask}"""

ASK_PROFILE = """
[agents.demo-ask]
cmd = {cmd}
interactive = true
tags = ["ask"]
"""


def interactive_available() -> bool:
    """Interactive workers need tmux; without it the asking task runs like the others."""
    return shutil.which("tmux") is not None


def demo_config(workers: int, step_s: float, steps: int) -> str:
    agent = _agent_program()
    base = [agent, "--steps", str(steps), "--step-s", f"{step_s:.3f}"]
    toml = lambda argv: "[" + ", ".join(msgspec.json.encode(a).decode() for a in argv) + "]"  # noqa: E731
    ask = ASK_PROFILE.format(cmd=toml([*base, "--ask", QUESTION])) if interactive_available() else ""
    return DEMO_CONFIG.format(
        workers=workers, steps=toml(base), notes=toml([*base, "--conflict-file", "NOTES.md"]), ask=ask
    )


class Screen:
    """The demo's narration: plain event lines, or quiet while `chkdctl top` owns the terminal
    (the lines are kept; if top is quit early the narration goes on in plain lines)."""

    def __init__(self, quiet: bool, out: Callable[[str], None]) -> None:
        self.quiet = quiet
        self.out = out
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def log(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')}  {visible(text)}"
        with self._lock:
            self.lines.append(line)
            if not self.quiet:
                self.out(line)

    def speak(self, tail: int = 5) -> None:
        """Top was left while the demo runs: print its last lines, then every new one."""
        with self._lock:
            self.quiet = False
            for line in self.lines[-tail:]:
                self.out(line)


def run_demo(
    workers: int = 3,
    speed: float = 1.0,
    keep: bool = False,
    live: bool | None = None,
    out: Callable[[str], None] = print,
    steps: int = 4,
) -> DemoResult:
    """`live`: show the session in `chkdctl top` (default: when stdout is a terminal), else plain lines."""
    gc.enable()
    live = sys.stdout.isatty() and sys.stdin.isatty() if live is None else live
    base = Path(tempfile.mkdtemp(prefix="chkd-demo-"))
    repo = make_demo_repo(base / "demo-app")
    home = base / "home"
    home.mkdir()
    step_s = max(0.05, 0.6 / speed)
    (home / "config.toml").write_text(demo_config(workers, step_s, steps))
    paths = resolve(home)
    result = DemoResult(directory=base, repo=repo, tasks_total=DEMO_TASKS)
    screen = Screen(live, out)
    saved_home = os.environ.get("CHKD_HOME")
    os.environ["CHKD_HOME"] = str(home)
    started = time.monotonic()
    try:
        daemonctl.start(paths)
        if live:
            _with_top(paths, repo, workers, screen, result)
        else:
            _drive(paths, repo, workers, screen, result)
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


def _drive(
    paths: Paths, repo: Path, workers: int, screen: Screen, result: DemoResult, on_end: Callable[[], None] | None = None
) -> None:
    """The demo's own session (its client, the person's actions); `on_end` runs however it ends."""
    try:
        with Client(paths, autostart=False, timeout=60) as client:
            _session(client, repo, workers, screen, result)
    except ChkdError as exc:
        result.problems.append(exc.message)
    finally:
        if on_end is not None:
            on_end()


def _with_top(paths: Paths, repo: Path, workers: int, screen: Screen, result: DemoResult) -> None:
    """The dashboard in this terminal while the session runs in a thread; top closes when the run
    ends. Quitting top early leaves the demo running, narrated in plain lines, to its end."""
    from .tui.app import TopApp  # Textual only here: chkdctl starts without it

    app = TopApp(paths, repo="demo-app")
    finished = threading.Event()

    def _end() -> None:
        finished.set()
        try:
            app.call_from_thread(app.exit)
        except RuntimeError:
            pass  # top is no longer running

    driver = threading.Thread(
        target=_drive, args=(paths, repo, workers, screen, result, _end), name="chkd-demo", daemon=True
    )
    driver.start()
    try:
        app.run()
    finally:
        if not finished.is_set():
            screen.speak()
        driver.join()


#: What the demo prints for the events it follows (the rest only moves the live table).
def _describe(e: Any) -> str | None:
    d, who = ev.fields_of(e.data), f"{e.worker_id or ''} {e.task_id or ''}".strip()
    if e.kind == "autopilot.started":
        return f"autopilot started: up to {d.get('workers')} workers, merge {d.get('merge')}"
    if e.kind == "worker.spawned":
        return f"{e.worker_id} spawned for {e.task_id} ({d.get('agent')}): {d.get('title', '')}"
    if e.kind == "worker.started":
        return f"{e.worker_id} runs {e.task_id} on {d.get('branch')} in {d.get('worktree')}"
    if e.kind == "worker.status" and d.get("to") in ("done", "waiting", "error", "dead", "paused"):
        return f"{who}: {d.get('to')} ({d.get('reason', '')})"
    if e.kind == "merge.merged":
        return f"{who}: merged into {d.get('target')} ({str(d.get('result_sha') or '')[:8]})"
    if e.kind == "merge.conflict":
        return f"⚠ conflict: {who} collides with main in {', '.join(d.get('files') or [])} — nothing was changed"
    if e.kind == "autopilot.update":
        return f"{who}: brought up to date with `update`" + (
            "" if d.get("merged") else f", conflict markers in {', '.join(d.get('files') or [])}"
        )
    if e.kind == "autopilot.needs_person":
        return f"{who} needs a person: {d.get('message')}"
    if e.kind in ("task.requeued", "task.escalated", "autopilot.finished", "budget.warning", "budget.exceeded"):
        return " ".join(p for p in (e.kind, who) if p) + f": {d.get('reason') or d.get('message') or ''}"
    return None


def _session(client: Client, repo: Path, max_workers: int, screen: Screen, result: DemoResult) -> None:
    name = client.call(RepoAdd(path=str(repo), name="demo-app")).repo.name
    screen.log(f"repository {repo} registered as '{name}'")
    report = client.call(TaskImport(text=DEMO_SPEC, source="SPEC.md", repo=name))
    for task, dep in DEMO_DEPS:
        client.call(DepAdd(task=task, depends_on=dep, repo=name))
    screen.log(f"spec imported: {len(report.new)} tasks; " + ", ".join(f"{t} after {d}" for t, d in DEMO_DEPS))
    client.call(RunStart(repo=name, workers=max_workers, merge="auto", until_empty=True))
    cursor = 0
    handled: set[str] = set()
    escalated: list[str] = []
    deadline = time.monotonic() + 300
    while True:
        page = client.call(Events(since=cursor, limit=1000))
        for e in page.events:
            cursor = max(cursor, e.seq)
            text = _describe(e)
            if text:
                screen.log(text)
            match e.data:
                case ev.WorkerSpawned() if e.worker_id:
                    result.workers.append(e.worker_id)
                case ev.MergeConflicted():
                    result.conflicts_detected += 1
                case ev.TaskEscalated(reason=reason):
                    escalated.append(f"{e.task_id}: {reason}")
                case ev.NeedsPerson() if e.worker_id and e.worker_id not in handled:
                    handled.add(e.worker_id)
                    _resolve_as_a_person(client, e.worker_id, screen, result)
                case ev.WorkerStatusChanged(to="waiting") if e.worker_id:
                    _answer(client, e.worker_id, screen, result)
        run = client.call(RunStatus(repo=name)).runs[0]
        if run.state != "running":
            break
        if time.monotonic() > deadline:
            result.problems.append("the demo did not finish within 5 minutes")
            break
        time.sleep(0.2)
    run = client.call(RunStatus(repo=name)).runs[0]
    result.tasks_merged = run.merged
    if run.failed:
        result.problems.append(f"{run.failed} tasks failed ({'; '.join(escalated) or 'no reason recorded'})")
    stats = client.call(Stats(repo=name))
    result.sequential_s = stats.work_s
    result.speedup = stats.speedup or 0.0
    cost = client.call(Cost(by="task", repo=name)).total
    result.tokens_in, result.tokens_out, result.cost_usd = cost.tokens_in, cost.tokens_out, cost.cost_usd
    result.conflicts_resolved = sum(
        1 for w in client.call(WorkerList(repo=name, all=True)).workers if w.id in handled and w.status == "merged"
    )


def _resolve_as_a_person(client: Client, wid: str, screen: Screen, result: DemoResult) -> None:
    """What a person does with conflict markers: keep both sides, commit, say done."""
    w = client.call(WorkerShow(worker=wid)).worker
    worktree = Path(w.worktree or "")
    files = git(worktree, "diff", "--name-only", "--diff-filter=U").split()
    for f in files:
        _resolve_union(worktree / f)
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", f"{w.task_id}: resolve conflict with main")
    client.call(Done(worker=wid, summary="conflict resolved"))
    screen.log(f"{wid}: the demo (as the person) resolved {', '.join(files)}, committed, and said done")


def _answer(client: Client, wid: str, screen: Screen, result: DemoResult) -> None:
    """What `chkdctl send W TEXT` does for an interactive worker: type the answer into its terminal."""
    try:
        client.call(SendKeys(worker=wid, text=ANSWER))
    except ChkdError as exc:
        result.problems.append(f"answering {wid} failed: {exc.message}")
        return
    result.questions_answered += 1
    screen.log(f"{wid} asked \"{QUESTION}\" — the demo answered \"{ANSWER}\" with `chkdctl send`")


def _agent_program() -> str:
    # the agent installed next to this Python, so an unactivated venv works too
    beside = Path(sys.executable).parent / "chkd-demo-agent"
    return str(beside) if beside.exists() else "chkd-demo-agent"


def _resolve_union(path: Path) -> None:
    """Resolve a text conflict by keeping both sides (what an agent would do for notes)."""
    out: list[str] = []
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith(("<<<<<<< ", "=======", ">>>>>>> ", "||||||| ")):
            continue
        out.append(line)
    path.write_text("".join(out))


def summary_lines(r: DemoResult) -> list[str]:
    lines = [
        "",
        "chkd demo summary",
        f"  tasks merged:        {r.tasks_merged}/{r.tasks_total}",
        f"  workers:             {len(r.workers)}",
        f"  wall time:           {r.wall_s:.1f} s",
        f"  one at a time:       {r.sequential_s:.1f} s (the same agents' run times, added up)",
        f"  speed-up:            {r.speedup:.1f}x",
        f"  conflicts:           {r.conflicts_detected} detected, {r.conflicts_resolved} resolved and merged",
        f"  questions answered:  {r.questions_answered}",
        f"  tokens:              {r.tokens_in:,} in, {r.tokens_out:,} out",
        f"  cost:                ${r.cost_usd:.4f} (reported by the demo agents)",
    ]
    for p in r.problems:
        lines.append(f"  problem: {p}")
    return lines
