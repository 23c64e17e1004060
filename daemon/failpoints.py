"""Failpoints: named places where a test makes the daemon kill -9 itself, to prove that every
multi-step operation can be resumed or undone from what is on disk and in the database.

`CHKD_FAILPOINTS=spawn.worktree_created,merge.cas_done chkdd …` arms them; `hit(name)` then
SIGKILLs the daemon the first time the named point is reached (on the loop or in an off-loop
job alike: the whole process dies, as with a real kill -9). Unset — always, outside tests — a
hit is one frozenset lookup. The set is read once from the environment and never changes.

The points (see the modules that hit them):
    spawn.planned           worktree path and branch recorded, nothing created yet
    spawn.worktree_created  `git worktree add` done, the shim not yet told to start the agent
    spawn.released          the agent started, the spawn's completion not yet recorded
    exit.recorded           an agent's exit 0 recorded, its leftovers not yet committed
    merge.cas_done          the target moved by CAS, its checkouts not yet brought along
    merge.landed            landed and cleaned up, the merge not yet recorded as merged
    resume.recorded         an agent's resume recorded (worker working again), its new shim not started
    train.gated             a merge train's gate ran (the train not yet landed)
    pool.created            a pool worktree added and marked, its setup not yet run nor recorded
"""

from __future__ import annotations

import os
import signal

ENV = "CHKD_FAILPOINTS"
ARMED: frozenset[str] = frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def hit(name: str) -> None:
    """Die here (SIGKILL, no clean-up) when `name` is armed."""
    if name in ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
