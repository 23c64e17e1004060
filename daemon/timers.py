"""A heap of timers for the loop: the reaper, schedulers, the merge queue and the radar tick here."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class _Timer:
    due: float
    order: int
    name: str = field(compare=False)
    fn: Callable[[], object] = field(compare=False)
    interval: float | None = field(compare=False, default=None)
    cancelled: bool = field(compare=False, default=False)


class Timers:
    def __init__(self) -> None:
        self._heap: list[_Timer] = []
        self._order = itertools.count()

    def every(self, seconds: float, fn: Callable[[], object], name: str, first_in: float | None = None) -> _Timer:
        """Call `fn` every `seconds` (the next run is scheduled from when this one was due)."""
        t = _Timer(time.monotonic() + (seconds if first_in is None else first_in), next(self._order), name, fn, seconds)
        heapq.heappush(self._heap, t)
        return t

    def after(self, seconds: float, fn: Callable[[], object], name: str) -> _Timer:
        t = _Timer(time.monotonic() + seconds, next(self._order), name, fn)
        heapq.heappush(self._heap, t)
        return t

    @staticmethod
    def cancel(timer: _Timer) -> None:
        timer.cancelled = True

    def timeout_ms(self, cap_ms: int) -> int:
        """How long the loop may block before the next timer is due."""
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return cap_ms
        return max(0, min(cap_ms, int((self._heap[0].due - time.monotonic()) * 1000) + 1))

    def pop_due(self) -> list[_Timer]:
        """Remove and return every timer now due; periodic ones are re-armed."""
        now = time.monotonic()
        due: list[_Timer] = []
        while self._heap and self._heap[0].due <= now:
            t = heapq.heappop(self._heap)
            if t.cancelled:
                continue
            due.append(t)
            if t.interval is not None:
                t.due = max(t.due + t.interval, now)  # never a burst of catch-up runs
                t.order = next(self._order)
                heapq.heappush(self._heap, t)
        return due
