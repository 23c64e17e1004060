"""The dispatch table: request type → handler. Never dispatch on a name from the wire.

Each area module exports `HANDLERS` and may export `setup(ctx)`, called once at start-up
inside a transaction (timers, reconciliation, caches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import autopilot, core, db, doctor, liveness, merge, repos, shim, tasks, workers

_AREAS = (core, repos, tasks, workers, shim, liveness, merge, db, doctor, autopilot)

HANDLERS: dict[type, Callable[[Any, Any], Any]] = {}
for _area in _AREAS:
    for _type, _fn in _area.HANDLERS.items():
        if _type in HANDLERS:
            raise RuntimeError(f"{_type.__name__} has two handlers")
        HANDLERS[_type] = _fn

SETUPS: list[Callable[[Any], None]] = [a.setup for a in _AREAS if hasattr(a, "setup")]
