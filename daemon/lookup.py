"""Finding a worker from what a user typed: its id, a unique prefix, or the task it runs.

Pure store reads (repositories are resolved in daemon/repos.py).
"""

from __future__ import annotations

from typing import Any

from chkd.protocol.errors import ChkdError

from .store import Store


def load_worker(store: Store, worker_id: str) -> dict[str, Any] | None:
    """The one worker loader: the row with exactly this id (no prefix matching), or None."""
    return store.dict("SELECT * FROM workers WHERE id=?", (worker_id,))


def worker(store: Store, ref: str) -> dict[str, Any]:
    """The worker with id `ref`, or the only one whose id starts with `ref`."""
    row = load_worker(store, ref)
    if row is not None:
        return row
    ref_clean = ref.strip()
    if not ref_clean:
        raise ChkdError("bad_request", "No worker id was given.")
    escaped = ref_clean.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = store.dicts("SELECT * FROM workers WHERE id LIKE ? ESCAPE '\\' ORDER BY seq LIMIT 6", (escaped + "%",))
    if len(rows) == 1:
        return rows[0]
    if not rows:
        # also accept the task id a worker runs (most recent worker for it)
        rows = store.dicts("SELECT * FROM workers WHERE task_id=? ORDER BY seq DESC LIMIT 1", (ref_clean,))
        if rows:
            return rows[0]
        raise ChkdError("not_found", f"No worker has the id '{ref}'.", "See `chkdctl workers --all`.")
    names = ", ".join(r["id"] for r in rows[:5])
    raise ChkdError("conflict", f"'{ref}' matches several workers ({names}); type more of the id.")
