"""The autopilot's decisions, as pure functions (no store, no clock): which ready task goes to
which agent profile, how many may start, how long a rate-limited profile waits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Ready:
    """A ready task, in claim order (priority, then age)."""

    id: str
    tags: tuple[str, ...] = ()


def profile_for(tags: Iterable[str], tagged: Mapping[str, Sequence[str]], default: str) -> str:
    """Smart assignment: the first profile (by name) carrying one of the task's tags, else `default`."""
    wanted = set(tags)
    for name in sorted(tagged):
        if wanted.intersection(tagged[name]):
            return name
    return default


def capacity(workers: int, max_workers: int, running: int) -> int:
    """How many more may start: never past the run's N nor the repository's max_workers."""
    return max(0, min(workers, max_workers) - running)


def plan_starts(
    ready: Sequence[Ready], free: int, tagged: Mapping[str, Sequence[str]], default: str, parked: Iterable[str]
) -> list[tuple[str, str]]:
    """(task id, profile) to start now, most urgent first; tasks whose profile waits for a usage
    limit are skipped (they keep their place), so other profiles' tasks still run."""
    waiting = set(parked)
    out: list[tuple[str, str]] = []
    for task in ready:
        if len(out) >= free:
            break
        profile = profile_for(task.tags, tagged, default)
        if profile in waiting:
            continue
        out.append((task.id, profile))
    return out


def backoff_s(strikes: int, base_s: float, cap_s: float = 900.0) -> float:
    """Repeated 429s: base, 2 x base, 4 x base, ... at most `cap_s`."""
    return min(cap_s, base_s * 2 ** max(0, strikes - 1))


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]
