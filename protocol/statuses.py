"""The statuses of tasks, workers and merges, and the groups both sides reason with.

Declared once here so the daemon and every client agree on what "live" or "final" means
(they used to disagree on whether a `conflict` worker is final).
"""

from __future__ import annotations

from typing import Literal, get_args

TaskStatus = Literal["pending", "claimed", "in_progress", "review", "done", "failed", "cancelled"]
WorkerStatus = Literal[
    "starting",
    "working",
    "waiting",
    "stalled",
    "paused",
    "done",
    "merging",
    "merged",
    "conflict",
    "error",
    "dead",
    "aborted",
]
MergeStatus = Literal["queued", "checking", "testing", "awaiting_review", "merged", "conflict", "failed", "rejected"]

TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
WORKER_STATUSES: tuple[str, ...] = get_args(WorkerStatus)
MERGE_STATUSES: tuple[str, ...] = get_args(MergeStatus)

# -- tasks ----------------------------------------------------------------------------------------
#: Still wanted (not finished either way).
LIVE_TASK_STATUSES: frozenset[str] = frozenset({"pending", "claimed", "in_progress", "review"})
#: Someone is working on the task right now.
RUNNING_TASK_STATUSES: frozenset[str] = frozenset({"claimed", "in_progress", "review"})
#: Finished either way (`completed_at` is set).
FINAL_TASK_STATUSES: frozenset[str] = frozenset({"done", "failed", "cancelled"})

# -- workers --------------------------------------------------------------------------------------
#: An agent process may still be running. `waiting` = the agent needs a person (a question, a
#: permission prompt): live, watched for shim silence, never stalled.
LIVE_WORKER_STATUSES: frozenset[str] = frozenset({"starting", "working", "waiting", "stalled", "paused"})
#: The agent has ended (`completed_at` is set); what follows needs a merge or a person.
#: `chkdctl logs --follow` stops here and `rm` accepts only these.
FINAL_WORKER_STATUSES: frozenset[str] = frozenset({"done", "merged", "conflict", "error", "dead", "aborted"})

# -- merges ---------------------------------------------------------------------------------------
#: In the queue or being worked on.
ACTIVE_MERGE_STATUSES: frozenset[str] = frozenset({"queued", "checking", "testing", "awaiting_review"})
#: The merge queue's off-loop steps are running.
RUNNING_MERGE_STATUSES: frozenset[str] = frozenset({"checking", "testing"})
#: Over: nothing more happens to this merge.
FINAL_MERGE_STATUSES: frozenset[str] = frozenset({"merged", "conflict", "failed", "rejected"})
#: Nothing more happens without a person (final, or waiting for approve/reject).
SETTLED_MERGE_STATUSES: frozenset[str] = FINAL_MERGE_STATUSES | {"awaiting_review"}
