"""Desktop notifications for the events a person must act on: a worker done, conflicting,
failed, dead, stalled or waiting for a person (once per question); a merge conflict; a task escalated;
a budget at 80 % or used up; a usage-limit wait; a worker the autopilot hands to a person.

The notifier follows the events table with a cursor (kept in `meta`: after a restart it
resumes where it was, repeating nothing), so no area has to remember to call it: every
state change already is an event. Sending runs off-loop (`ctx.submit`): `notify-send`
where present, `osascript` on macOS, and `notify_cmd` from config.toml with the event as
JSON on stdin. The same (kind, worker, task) is sent once. `notify = false` turns it off.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import msgspec

from chkd.protocol.events import (
    BudgetExceeded,
    BudgetWarned,
    EventBody,
    LimitWaitStarted,
    MergeConflicted,
    NeedsPerson,
    TaskEscalated,
    WorkerStatusChanged,
)
from chkd.protocol.messages import Event

from .context import EVENT_COLUMNS, Ctx, row_event

#: Worker states worth a notification, and what the notification calls them.
WORKER_STATES = {
    "done": "done",
    "conflict": "conflict",
    "error": "error",
    "dead": "dead",
    "stalled": "stalled",
    "waiting": "waiting",
}
#: Event types (other than worker status changes) worth a notification. A help request (chkd_request_help)
#: makes the worker `waiting`, and that status change is what notifies ("w2 is waiting for you: ..."), once.
#: A usage limit (agent.usage_limit) notifies through the wait it starts (autopilot.limit_wait: the profile,
#: how many tasks wait, until when), once per reset time however many workers hit it.
TYPES: dict[type[EventBody], str] = {
    MergeConflicted: "conflict",
    TaskEscalated: "escalated",
    BudgetWarned: "budget_warning",
    BudgetExceeded: "budget",
    LimitWaitStarted: "usage_limit",
    NeedsPerson: "needs_person",
}
TITLES = {
    "done": "chkd: worker done",
    "conflict": "chkd: merge conflict",
    "error": "chkd: worker failed",
    "dead": "chkd: worker died",
    "stalled": "chkd: worker stalled",
    "escalated": "chkd: task escalated",
    "waiting": "chkd: a worker needs you",
    "budget": "chkd: budget reached",
    "budget_warning": "chkd: 80 % of the budget used",
    "usage_limit": "chkd: usage limit",
    "needs_person": "chkd: a worker needs you",
}
CURSOR_KEY = "notify_seq"
SEND_TIMEOUT_S = 10.0
#: At start-up, remember what was already sent among this many recent events.
REMEMBER = 5000


def classify(data: EventBody) -> str | None:
    """The notification class of an event's data, or None when it is not worth one.

    By type: only a *worker's* status change says "worker done" (a task ticked done by a
    spec import is a TaskStatusChanged and sends nothing)."""
    if isinstance(data, WorkerStatusChanged):
        return WORKER_STATES.get(data.to)
    return TYPES.get(type(data))


def dedupe_key(cls: str, event: Event) -> tuple[str, str | None, str | None, str]:
    """Once per (class, worker, task) — per question for a waiting worker (it may ask several in one
    task), per day for budgets, per reset time for usage limits."""
    if cls == "waiting" and isinstance(event.data, WorkerStatusChanged):
        return (f"waiting:{event.data.question or ''}", event.worker_id, event.task_id, "")
    once_per = getattr(event.data, "day", None) or getattr(event.data, "until", None) or ""
    return (cls, event.worker_id, event.task_id, str(once_per))


def text(cls: str, event: Event) -> tuple[str, str]:
    """(title, body) for a person."""
    if cls == "waiting" and isinstance(event.data, WorkerStatusChanged):
        question = event.data.question or "needs your input"
        return TITLES[cls], f"{event.worker_id} is waiting for you: {question}"
    who = " ".join(
        p for p in (event.worker_id and f"worker {event.worker_id}", event.task_id and f"task {event.task_id}") if p
    )
    detail, files = _detail(event.data)
    if files:
        detail = (detail + "; " if detail else "") + "files: " + ", ".join(files[:5])
    body = ": ".join(p for p in (who or (event.repo or ""), str(detail)) if p) or event.kind
    return TITLES.get(cls, "chkd"), body


def _detail(data: EventBody) -> tuple[str, list[str]]:
    """The sentence and the files a notification about `data` shows."""
    match data:
        case WorkerStatusChanged(reason=reason):
            return reason or "", []
        case MergeConflicted(files=files):
            return "", files
        case TaskEscalated(reason=reason):
            return reason, []
        case BudgetWarned(message=message) | BudgetExceeded(message=message) | LimitWaitStarted(message=message):
            return message, []
        case NeedsPerson(message=message):
            return message, []
    return "", []


def commands(notify_cmd: list[str], platform: str | None = None, which: Any = shutil.which) -> list[list[str]]:
    """The argv lists to run for one notification (title/body appended for the desktop ones)."""
    platform = platform or sys.platform
    argvs: list[list[str]] = []
    if platform == "darwin" and which("osascript"):
        argvs.append(["osascript"])
    elif which("notify-send"):
        argvs.append(["notify-send"])
    if notify_cmd:
        argvs.append(list(notify_cmd))
    return argvs


def _applescript_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def send(argvs: list[list[str]], title: str, body: str, payload: bytes) -> list[str]:
    """Off-loop: run every notifier; returns one sentence per failure (never raises).

    A desktop notifier that exits non-zero (no display session) is not worth a log line;
    a configured `notify_cmd` that fails is."""
    failures: list[str] = []
    for argv in argvs:
        desktop = argv in (["notify-send"], ["osascript"])
        if argv == ["notify-send"]:
            full, stdin = ["notify-send", "--app-name=chkd", title, body], b""
        elif argv == ["osascript"]:
            script = f"display notification {_applescript_quote(body)} with title {_applescript_quote(title)}"
            full, stdin = ["osascript", "-e", script], b""
        else:
            full, stdin = argv, payload
        try:
            proc = subprocess.run(full, input=stdin, capture_output=True, timeout=SEND_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            failures.append(f"{full[0]} could not run: {exc}")
            continue
        if proc.returncode != 0 and not desktop:
            failures.append(
                f"{full[0]} exited with {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[:200]}"
            )
    return failures


def send_all(argvs: list[list[str]], jobs: list[tuple[str, str, bytes]]) -> list[str]:
    """Off-loop: send (title, body, event JSON) notifications one after another."""
    return [problem for title, body, payload in jobs for problem in send(argvs, title, body, payload)]


@dataclass
class Notifier:
    """Follows the events table from `cursor`; remembers what it sent; queues what to send."""

    cursor: int = 0
    sent: set[tuple[str, str | None, str | None, str]] = field(default_factory=set)
    outbox: list[tuple[str, Event]] = field(default_factory=list)
    sending: bool = False

    def pick(self, events: list[Event]) -> list[tuple[str, Event]]:
        """The events to notify about (advancing the cursor, skipping repeats)."""
        picked: list[tuple[str, Event]] = []
        for ev in events:
            self.cursor = max(self.cursor, ev.seq)
            cls = classify(ev.data)
            if cls is None:
                continue
            key = dedupe_key(cls, ev)
            if key in self.sent:
                continue
            self.sent.add(key)
            picked.append((cls, ev))
        return picked

    def remember(self, events: list[Event]) -> None:
        """Mark events as already sent (those before the saved cursor at start-up)."""
        for ev in events:
            cls = classify(ev.data)
            if cls is not None:
                self.sent.add(dedupe_key(cls, ev))


def event_json(event: Event) -> bytes:
    return msgspec.json.encode(event)


# -- on the loop -------------------------------------------------------------------------------------
def start(ctx: Ctx) -> None:
    """At start-up (before reconciliation, so the dead it finds are notified): load the cursor
    and what was already sent, then follow the table every 0.25 s."""
    _load(ctx)
    ctx.timers.every(0.25, lambda: tick(ctx), "notifier")


def _load(ctx: Ctx) -> None:
    last = ctx.store.scalar("SELECT max(seq) FROM events", (), 0) or 0
    saved = ctx.store.scalar("SELECT value FROM meta WHERE key=?", (CURSOR_KEY,))
    cursor = int(saved) if saved is not None else last
    n = Notifier(cursor=min(cursor, last))
    recent = ctx.store.all(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE seq <= ? AND seq > ? ORDER BY seq", (n.cursor, n.cursor - REMEMBER)
    )
    n.remember([row_event(r) for r in recent])
    ctx.ext["notifier"] = n


def tick(ctx: Ctx) -> None:
    """Queue a notification for each new notable event, advance the saved cursor, and hand the
    queue to one off-loop job at a time (a slow notify_cmd never ties up the git job pool)."""
    n: Notifier = ctx.ext["notifier"]
    rows = ctx.store.all(f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT 500", (n.cursor,))
    if rows:
        before = n.cursor
        n.outbox.extend(n.pick([row_event(r) for r in rows]))
        if n.cursor != before:
            ctx.store.x(
                "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (CURSOR_KEY, str(n.cursor)),
            )
    if n.sending or not n.outbox:
        return
    argvs = commands(ctx.config.notify_cmd)
    batch, n.outbox = n.outbox, []
    if not argvs:
        return
    jobs = [(*text(cls, ev), event_json(ev)) for cls, ev in batch]
    n.sending = True
    ctx.submit(send_all, argvs, jobs, then=lambda failures, exc: _notified(ctx, failures, exc))


def _notified(ctx: Ctx, failures: list[str] | None, exc: BaseException | None) -> None:
    ctx.ext["notifier"].sending = False
    for problem in failures or ([f"{type(exc).__name__}: {exc}"] if exc else []):
        ctx.log.warning("notify_failed", problem=problem)
