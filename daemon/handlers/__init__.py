"""The dispatch table: request type → handler. Never dispatch on a name from the wire.

Each area module exports `HANDLERS` and may export `setup(ctx)`, called once at start-up
inside a transaction (timers, reconciliation, caches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import liveness
from . import (
    autopilot,
    core,
    db,
    doctor,
    events,
    gc,
    merge,
    messages,
    overview,
    repos,
    sessions,
    shim,
    tasks,
    terminal,
    workers,
)

_AREAS = (
    core,
    repos,
    tasks,
    workers,
    shim,
    events,
    gc,
    merge,
    db,
    doctor,
    terminal,
    messages,
    sessions,
    overview,
    autopilot,
)

HANDLERS: dict[type, Callable[[Any, Any], Any]] = {}
for _area in _AREAS:
    for _type, _fn in _area.HANDLERS.items():
        if _type in HANDLERS:
            raise RuntimeError(f"{_type.__name__} has two handlers")
        HANDLERS[_type] = _fn

#: Start-up steps in this order; liveness (reaper, notifier, reconciliation) has no handlers
#: but starts between the shims' area and the merge queue, as it always did. The autopilot starts
#: last: reconciliation has settled the workers before its first tick.
_STARTING = (core, repos, tasks, workers, shim, liveness, sessions, merge, db, doctor, autopilot)
SETUPS: list[Callable[[Any], None]] = [a.setup for a in _STARTING if hasattr(a, "setup")]
