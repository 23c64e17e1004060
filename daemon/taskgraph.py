"""The task dependency graph, pure: readiness, cycle detection (with the cycle's path), transitions.

No I/O here, so every rule is tested directly; `daemon/taskqueue.py` feeds it rows from the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from chkd.protocol.statuses import FINAL_TASK_STATUSES as FINAL_STATUSES
from chkd.protocol.statuses import LIVE_TASK_STATUSES as LIVE_STATUSES
from chkd.protocol.statuses import RUNNING_TASK_STATUSES as RUNNING_STATUSES

__all__ = ["FINAL_STATUSES", "LIVE_STATUSES", "RUNNING_STATUSES", "can_transition"]

#: Allowed status changes (from → to). `done` is final: a done task is never set back.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"claimed", "in_progress", "done", "cancelled", "failed"}),  # done: by spec import
    "claimed": frozenset({"in_progress", "review", "done", "pending", "cancelled", "failed"}),  # done: merged
    "in_progress": frozenset({"review", "done", "pending", "cancelled", "failed"}),
    "review": frozenset({"done", "in_progress", "pending", "cancelled", "failed"}),
    "failed": frozenset({"pending", "cancelled"}),
    "cancelled": frozenset({"pending"}),
    "done": frozenset(),
}


def can_transition(old: str, new: str) -> bool:
    """Whether a task may go from `old` to `new` (staying put is always allowed)."""
    return old == new or new in TRANSITIONS.get(old, frozenset())


def is_ready(status: str, held: bool, dependency_statuses: Iterable[str]) -> bool:
    """Ready = pending, not held, and every task it depends on is done."""
    return status == "pending" and not held and all(s == "done" for s in dependency_statuses)


def path_between(deps: Mapping[str, Iterable[str]], start: str, goal: str) -> list[str] | None:
    """A dependency path start → … → goal following `deps` edges (depth-first), or None."""
    if start == goal:
        return [start]
    parents: dict[str, str] = {}
    stack = [start]
    seen = {start}
    while stack:
        node = stack.pop()
        for nxt in deps.get(node, ()):
            if nxt in seen:
                continue
            parents[nxt] = node
            if nxt == goal:
                path = [goal]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return path[::-1]
            seen.add(nxt)
            stack.append(nxt)
    return None


def cycle_if_added(deps: Mapping[str, Iterable[str]], task: str, depends_on: str) -> list[str] | None:
    """The cycle that `task depends on depends_on` would close, as [task, depends_on, …, task], or None."""
    path = path_between(deps, depends_on, task)
    if path is None:
        return None
    return [task, *path]


def format_cycle(path: list[str]) -> str:
    """`A → B → C → A`."""
    return " → ".join(path)


def list_order_key(ready: bool, priority: int, created_at: int, pk: int) -> tuple[int, int, int, int]:
    """`task list` order: ready first, then priority (P0 first), then age (oldest first)."""
    return (0 if ready else 1, priority, created_at, pk)
