"""What the dashboard knows, kept up to date from the event stream: pure data, no Textual, no I/O.

Why a model apart from the widgets: 200 events a second must not mean 200 re-renders. Events
are applied here as they arrive (cheap dict updates) and only *mark* what changed — a worker's
card, the task table, the merge queue; the app renders the marked parts at most a few times a
second. Events that do not carry the whole new state (a spawn, a task edit, a merge step) mark
a *refresh* instead: the app fetches that list once, however many such events came in.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from chkd.protocol import events
from chkd.protocol.messages import Event, MergeInfo, Overlap, TaskInfo, WorkerInfo

from ..icons import STATUS_ICONS

#: Statuses beyond the ones main's icons know (🔔 waiting is issue 13's), so cards never show "?".
ICONS: dict[str, str] = {**STATUS_ICONS, "waiting": "🔔"}
#: The worker is doing something (counts as active in the header).
ACTIVE = frozenset({"starting", "working", "stalled", "paused", "merging"})
#: Statuses whose reason the card shows instead of the agent's last message.
TROUBLE = frozenset({"error", "dead", "stalled", "conflict", "aborted"})
#: Merge statuses still in the queue.
OPEN_MERGES = frozenset({"queued", "checking", "testing", "awaiting_review"})
#: Lists the app can (re)fetch.
LISTS = ("workers", "tasks", "merges", "radar")
#: How many lines the live feed keeps.
FEED_LINES = 500


def icon(status: str) -> str:
    return ICONS.get(status, "•")


@dataclass
class Dirty:
    """What changed since the last render."""

    workers: set[str] = field(default_factory=set)
    layout: bool = False  # cards appeared or went
    header: bool = False
    tasks: bool = False
    merges: bool = False
    radar: bool = False

    def any(self) -> bool:
        return bool(self.workers or self.layout or self.header or self.tasks or self.merges or self.radar)


@dataclass
class Board:
    workers: dict[str, WorkerInfo] = field(default_factory=dict)
    tasks: dict[str, TaskInfo] = field(default_factory=dict)  # key: "repo/id"
    merges: dict[int, MergeInfo] = field(default_factory=dict)
    overlaps: list[Overlap] = field(default_factory=list)
    diffstats: dict[str, str] = field(default_factory=dict)  # worker id → `diff --stat` summary
    #: Facts other areas publish (budget, usage-limit waits, autopilot); shown in the header.
    facts: dict[str, Any] = field(default_factory=dict)
    cursor: int = 0  # every event up to this seq is applied
    dirty: Dirty = field(default_factory=Dirty)
    refresh: set[str] = field(default_factory=set)  # lists to fetch again
    want_diffstat: set[str] = field(default_factory=set)
    feed: deque[Event] = field(default_factory=lambda: deque(maxlen=FEED_LINES))
    connected: bool = False
    usage_limits: dict[str, int] = field(default_factory=dict)  # agent profile → resets at (ms)

    # -- snapshots ---------------------------------------------------------------------------
    def set_workers(self, workers: Iterable[WorkerInfo]) -> None:
        new = {w.id: w for w in workers}
        if new.keys() != self.workers.keys():
            self.dirty.layout = True
        for wid, w in new.items():
            if self.workers.get(wid) != w:
                self.dirty.workers.add(wid)
        self.workers = new
        self.dirty.header = True

    def set_tasks(self, tasks: Iterable[TaskInfo]) -> None:
        self.tasks = {f"{t.repo}/{t.id}": t for t in tasks}
        self.dirty.tasks = self.dirty.header = True

    def set_merges(self, merges: Iterable[MergeInfo]) -> None:
        self.merges = {m.id: m for m in merges}
        for m in self.merges.values():
            if m.status == "awaiting_review" and m.worker_id not in self.diffstats:
                self.want_diffstat.add(m.worker_id)
        self.dirty.merges = True

    def set_overlaps(self, overlaps: Iterable[Overlap]) -> None:
        self.overlaps = list(overlaps)
        self.dirty.radar = True

    # -- events --------------------------------------------------------------------------------
    def apply(self, ev: Event) -> None:
        """Fold one event in. Out-of-order or repeated events (seq ≤ cursor) are ignored."""
        if ev.seq <= self.cursor:
            return
        self.cursor = ev.seq
        self.feed.append(ev)
        kind, wid = ev.kind, ev.worker_id
        area = kind.split(".", 1)[0]
        w = self.workers.get(wid) if wid else None
        body = ev.data
        if isinstance(body, events.WorkerStatusChanged) and w is not None:
            trouble = body.to in TROUBLE and body.reason
            self._patch(w, status=body.to, last_error=body.reason if trouble else w.last_error)
            self.refresh.add("tasks")  # a worker going away moves its task
            if body.to == "merged":
                self.refresh.add("workers")
        elif isinstance(body, events.WorkerHeartbeat) and w is not None:
            fields: dict[str, Any] = {"heartbeat_at": ev.at, "activity_at": ev.at}
            for key in ("message", "tokens_in", "tokens_out", "cost_usd"):
                value = getattr(body, key)
                if value is not None:  # only what this heartbeat reported
                    fields[key] = value
            self._patch(w, **fields)
        elif area == "worker":
            self.refresh.update(("workers", "tasks"))
        elif area in ("task", "dep", "spec", "repo"):
            self.refresh.add("tasks")
            if area == "repo":
                self.refresh.add("workers")
        elif area == "merge":
            self.refresh.update(("merges", "workers"))
            if kind == "merge.awaiting_review" and wid:
                self.want_diffstat.add(wid)
            if kind in ("merge.merged", "merge.conflict"):
                self.refresh.update(("tasks", "radar"))
        elif kind == "overlap":
            self.refresh.add("radar")
        elif wid is not None and w is None:
            self.refresh.add("workers")
        if area in ("autopilot", "scheduler", "run", "agent", "budget", "usage") or "budget" in kind:
            self._fact(kind, wid, _fields(body))

    def _fact(self, kind: str, wid: str | None, data: dict[str, Any]) -> None:
        """Kinds other areas add (issue 15: autopilot, budget, usage limits), read by name so a
        newer daemon's events show up here even before this client knows their Structs."""
        area = kind.split(".", 1)[0]
        if area in ("autopilot", "scheduler", "run") and kind.endswith(("started", "stopped")):
            self.facts["autopilot"] = kind.endswith("started")
            self.dirty.header = True
        elif kind == "agent.usage_limit":  # issue 15: a profile waits until its limit resets
            self.usage_limits[str(data.get("profile") or wid or "?")] = int(data.get("resets_at") or 0)
            self.dirty.header = True
        elif area in ("budget", "usage", "scheduler") or "usage_limit" in kind or "budget" in kind:
            self.facts.pop(kind, None)
            self.facts[kind] = data  # newest last
            self.dirty.header = True

    def _patch(self, w: WorkerInfo, **fields: Any) -> None:
        self.workers[w.id] = msgspec.structs.replace(w, **fields)
        self.dirty.workers.add(w.id)
        self.dirty.header = True

    def take_dirty(self) -> Dirty:
        d, self.dirty = self.dirty, Dirty()
        return d

    def take_refresh(self) -> set[str]:
        r, self.refresh = self.refresh, set()
        return r

    # -- what the header says ----------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.workers.values():
            out[w.status] = out.get(w.status, 0) + 1
        return out

    def header(self, now_ms: int | None = None) -> str:
        c = self.counts()
        active = sum(n for s, n in c.items() if s in ACTIVE)
        parts = [f"{active} active"]
        for status, word in (
            ("waiting", "waiting"),
            ("stalled", "stalled"),
            ("conflict", "conflict"),
            ("done", "done"),
            ("error", "error"),
            ("dead", "dead"),
        ):
            if c.get(status):
                parts.append(f"{c[status]} {word}")
        ready = sum(1 for t in self.tasks.values() if t.ready)
        blocked = sum(1 for t in self.tasks.values() if t.status == "pending" and not t.ready and not t.held)
        review = sum(1 for m in self.merges.values() if m.status == "awaiting_review")
        cost = self.cost_today(now_ms)
        budget = self._fact_number("budget", "budget_usd_per_day", "budget_usd", "limit_usd", "daily_usd")
        money = f"today ${cost:.2f}" + (f" of ${budget:.2f}" if budget else "")
        waits = self.usage_limit_waits(now_ms)
        line = (
            f"WORKERS ({', '.join(parts)})  ·  queue {ready} ready, {blocked} waiting on deps  ·  "
            f"{review} awaiting review  ·  {money}"
        )
        if waits:
            line += f"  ·  ⏳ {waits} usage-limit wait{'s' if waits != 1 else ''}"
        if self.facts.get("autopilot") is True:
            line += "  ·  🤖 autopilot on"
        if not self.connected:
            line += "  ·  ⚡ reconnecting to chkdd…"
        return line

    def _fact_number(self, prefix: str, *names: str) -> float | None:
        for kind, data in reversed(list(self.facts.items())):
            if prefix in kind and isinstance(data, dict):
                for n in names:
                    if isinstance(data.get(n), (int, float)):
                        return float(data[n])
        return None

    def usage_limit_waits(self, now_ms: int | None = None) -> int:
        """Profiles parked by a usage limit that has not reset yet, or else workers waiting on one."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        parked = sum(1 for resets in self.usage_limits.values() if resets > now)
        return parked or sum(
            1 for w in self.workers.values() if w.status == "waiting" and "usage" in (w.message or "").lower()
        )

    def cost_today(self, now_ms: int | None = None) -> float:
        now = time.time() if now_ms is None else now_ms / 1000
        lt = time.localtime(now)
        midnight_ms = int(time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1)) * 1000)
        return sum(w.cost_usd for w in self.workers.values() if (w.started_at or 0) >= midnight_ms)

    # -- ordering -------------------------------------------------------------------------------
    def card_order(self) -> list[str]:
        """Workers needing a person first (waiting, conflict, stalled, error), then the active, then the rest."""
        rank = {
            "waiting": 0,
            "conflict": 1,
            "stalled": 2,
            "error": 3,
            "dead": 3,
            "paused": 4,
            "working": 5,
            "starting": 5,
            "merging": 5,
            "done": 6,
        }
        return sorted(self.workers, key=lambda wid: (rank.get(self.workers[wid].status, 7), _num(wid)))

    def task_order(self) -> list[str]:
        rank = {"in_progress": 1, "claimed": 1, "review": 2, "pending": 3, "failed": 4, "done": 5, "cancelled": 6}

        def key(k: str) -> tuple[int, int, int]:
            t = self.tasks[k]
            r = 0 if t.ready else rank.get(t.status, 7)
            return (r, t.priority, t.created_at)

        return sorted(self.tasks, key=key)


def _fields(data: Any) -> dict[str, Any]:
    """An event's data as a plain map with wire names (events.fields_of), whatever its kind."""
    if isinstance(data, dict):
        return data
    try:
        return events.fields_of(data)
    except (TypeError, AttributeError):
        return {}


def task_state(t: TaskInfo) -> str:
    """The task's place in the queue as `task list` says it: ready / waiting / held / its status."""
    if t.ready:
        return "ready"
    if t.status == "pending":
        return "held" if t.held else "waiting"
    return t.status


def _num(wid: str) -> tuple[int, str]:
    digits = "".join(ch for ch in wid if ch.isdigit())
    return (int(digits) if digits else 0, wid)


def age(ms: int | None, now_ms: int) -> str:
    if not ms:
        return "-"
    s = max(0, (now_ms - ms) // 1000)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
