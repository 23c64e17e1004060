"""Every event kind the daemon emits, each declared once as its own Struct.

An event is `Event(seq, at, kind, repo, worker_id, task_id, data)` (protocol/messages.py);
`data` is one of the Structs below, and its tag *is* the kind (`Event.kind == data.kind`),
so a consumer dispatches on the type (`isinstance(ev.data, WorkerStatusChanged)` or
`match ev.data: case MergeConflicted(files=files): ...`), never on the kind's spelling.
The daemon emits with `ctx.emit(WorkerStatusChanged(from_="working", to="done"), repo=...,
worker_id=..., task_id=...)`: a kind that is not declared here cannot be emitted.

Rows older than this module stored `data` as a plain map without the tag; `decode_data`
reads them with the row's `kind` column. A row that fits no declared shape any more (an
old chkd wrote it) becomes `Unreadable` with its fields kept as they were — never an error.

Adding a kind: declare a Struct here (tag = the kind string, past-tense name), add it to
`EventData`, emit it. Fields added later are optional with a default, like every message.
"""

from __future__ import annotations

import functools
from typing import Any, cast, get_args

import msgspec
from msgspec import Struct, field


class EventBody(Struct, tag_field="kind", omit_defaults=True):
    """Base of every event's data; the tag field `kind` carries the kind string."""


# -- repositories --------------------------------------------------------------------------
class RepoAdded(EventBody, tag="repo.added"):
    path: str
    main_branch: str


class RepoRemoved(EventBody, tag="repo.removed"):
    path: str


class RepoEdited(EventBody, tag="repo.edited"):
    """`repo edit` changed (or cleared) these settings in the database."""

    keys: list[str]


# -- the warm pool -----------------------------------------------------------------------------
class PoolReady(EventBody, tag="pool.ready"):
    """A warm worktree is ready for spawn (created, set up, detached at `base`)."""

    path: str
    base: str


class PoolTaken(EventBody, tag="pool.taken"):
    """A spawn (the event's worker) took the warm worktree at `path`."""

    path: str


class PoolFailed(EventBody, tag="pool.failed"):
    """A refill failed (retried later)."""

    path: str
    reason: str


# -- tasks -----------------------------------------------------------------------------------
class TaskAdded(EventBody, tag="task.added"):
    title: str
    priority: int = 2
    after: list[str] = []
    tags: list[str] = []
    status: str = "pending"


class TaskEdited(EventBody, tag="task.edited"):
    """`fields` names every changed column; the new values follow (the description is not repeated)."""

    fields: list[str]
    title: str | None = None
    priority: int | None = None
    tags: list[str] | None = None
    max_attempts: int | None = None


class TaskHeld(EventBody, tag="task.held"):
    status: str


class TaskReleased(EventBody, tag="task.released"):
    was: str


class TaskClaimed(EventBody, tag="task.claimed"):
    by: str | None = None


class TaskStatusChanged(EventBody, tag="task.status"):
    from_: str = field(name="from")
    to: str
    note: str | None = None


class TaskRequeued(EventBody, tag="task.requeued"):
    reason: str
    attempts: int
    max_attempts: int


class TaskFailed(EventBody, tag="task.failed"):
    reason: str
    attempts: int


class TaskEscalated(EventBody, tag="task.escalated"):
    """A task failed its last attempt: a person should look (the notifier sends it)."""

    reason: str
    attempts: int


class DepAdded(EventBody, tag="dep.added"):
    depends_on: str


class DepRemoved(EventBody, tag="dep.removed"):
    depends_on: str


class SpecImported(EventBody, tag="spec.imported"):
    """Counts of one `task import` (ids are in its ImportReport)."""

    source: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    problems: int = 0


# -- workers ---------------------------------------------------------------------------------
class WorkerSpawned(EventBody, tag="worker.spawned"):
    agent: str
    title: str


class WorkerStarted(EventBody, tag="worker.started"):
    worktree: str
    branch: str
    base: str


class WorkerStatusChanged(EventBody, tag="worker.status"):
    """`signalled` is set by pause/resume: whether the process group got the signal.
    `question`: what a worker turning `waiting` asks a person (the notification says it)."""

    from_: str = field(name="from")
    to: str
    reason: str | None = None
    signalled: bool | None = None
    question: str | None = None
    #: A pause: who paused it (`user`, or `budget`: the budget resumes it by itself).
    by: str | None = None


class WorkerInput(EventBody, tag="worker.input"):
    """A person typed into an interactive worker's terminal (`send`: `chars` typed, then Enter if
    `enter`) or attached a terminal that can type (`attach`)."""

    how: str
    chars: int = 0
    enter: bool = False


class WorkerHeartbeat(EventBody, tag="worker.heartbeat"):
    """The agent's activity; usage fields are the worker's running totals, present when they grew."""

    message: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None


class WorkerExited(EventBody, tag="worker.exited"):
    exit_code: int | None = None
    signal: int | None = None


class WorkerKilled(EventBody, tag="worker.killed"):
    """An aborted worker's group got SIGKILL `after_s` seconds after SIGTERM."""

    after_s: float


class WorkerCommitted(EventBody, tag="worker.committed"):
    """Uncommitted work in the worktree was committed to the worker's branch."""

    sha: str
    message: str


class WorkerCommitFailed(EventBody, tag="worker.commit_failed"):
    error: str


class WorkerUpdated(EventBody, tag="worker.update"):
    """`chkdctl update`: the target was merged into the worker's branch (or conflicted)."""

    merged: bool
    files: list[str] = []
    up_to_date: bool = False


class WorkerRemoved(EventBody, tag="worker.removed"):
    worktree: str | None = None
    branch: str | None = None
    attic_ref: str | None = None
    attic_sha: str | None = None
    snapshot: str | None = None
    force: bool = False


class AtticRestored(EventBody, tag="attic.restored"):
    ref: str
    branch: str
    sha: str


# -- agents (what a worker's shim read in a Claude Code stream; protocol/agents.py) -------------------
class AgentSessionStarted(EventBody, tag="agent.session"):
    """The agent's session started: the id `resume` continues, and the model."""

    session_id: str
    model: str = ""
    profile: str = ""


class AgentUsageReported(EventBody, tag="agent.usage"):
    """A run ended: its usage (cache tokens counted as input), and the worker's totals across every run."""

    tokens_in: int
    tokens_out: int
    cost_usd: float
    total_tokens_in: int
    total_tokens_out: int
    total_cost_usd: float
    is_error: bool = False
    terminal_reason: str = ""
    profile: str = ""


class AgentUsageLimited(EventBody, tag="agent.usage_limit"):
    """The agent hit its plan's usage limit (Claude's rate_limit_event read by the shim, or
    `chkdctl usage-limit` from any agent): the autopilot parks this profile until `resets_at`
    (ms since the epoch; None when the agent did not say) plus usage_limit_margin_s."""

    profile: str
    resets_at: int | None = None
    limit_type: str = ""
    message: str = ""


class AgentApiFailed(EventBody, tag="agent.api_error"):
    """The agent's API calls failed; `error` is the kind: rate_limit (429 after retries), server_error,
    billing_error, authentication_failed, invalid_request, max_output_tokens, unknown. A `rate_limit`
    (also `chkdctl usage-limit --rate-limit`) makes the autopilot back off that profile."""

    profile: str
    error: str
    status: int | None = None
    message: str = ""


class AgentResumed(EventBody, tag="agent.resumed"):
    """The worker's agent was started again in its worktree, continuing its session."""

    profile: str
    session_id: str
    why: str
    prompt: str = ""


# -- merges (topic `merge.<merge_id>`) --------------------------------------------------------
class MergeEvent(EventBody):
    """Base of the merge events: every one names its merge."""

    merge_id: int


class MergeQueued(MergeEvent, tag="merge.queued"):
    """Queued by `merge`, again after `approve` (`approved`) or a daemon restart (`note`)."""

    strategy: str | None = None
    target: str | None = None
    priority: int | None = None
    run_tests: bool | None = None
    approved: bool = False
    note: str | None = None


class MergeApproved(MergeEvent, tag="merge.approved"):
    pass


class MergeRejected(MergeEvent, tag="merge.rejected"):
    reason: str


class MergeChecking(MergeEvent, tag="merge.checking"):
    """The conflict check started; `retry` with `why` when the target moved under a merge;
    `train` names the merge train it is checked in (its first merge's id)."""

    retry: bool = False
    why: str | None = None
    train: int | None = None


class MergeTesting(MergeEvent, tag="merge.testing"):
    """The gate runs; in a merge train (`train`) once for all its `cars` (merge ids, in order)."""

    cmd: list[str]
    train: int | None = None
    cars: list[int] = []


class MergeGateSuspect(MergeEvent, tag="merge.gate_suspect"):
    """The gate's output names `path` under the main checkout (not its copy in the gate worktree):
    it may have tested main, not the merge result. `strict`: gate_strict made that a failure."""

    path: str
    message: str
    strict: bool = False
    train: int | None = None


class MergeTrainRan(MergeEvent, tag="merge.train"):
    """One merge train (`merge_id` = `train`, its first merge): gate runs, what lands, what failed,
    and after which gate run each failing merge was isolated."""

    train: int
    merge_ids: list[int]
    gate_runs: int
    landing: list[int] = []
    failed: list[int] = []
    conflicts: list[int] = []
    isolated_after: dict[str, int] = {}


class MergeAwaitingReview(MergeEvent, tag="merge.awaiting_review"):
    result_sha: str | None


class MergeMerged(MergeEvent, tag="merge.merged"):
    result_sha: str | None
    target: str
    already_in: bool = False
    checkouts: list[str] = []


class MergeConflicted(MergeEvent, tag="merge.conflict"):
    files: list[str]


class MergeFailed(MergeEvent, tag="merge.failed"):
    reason: str


# -- the radar, the daemon, gc ------------------------------------------------------------------
class OverlapFound(EventBody, tag="overlap"):
    """Worker `a` and worker `b` (or the target, `b` = None) touch the same files."""

    a: str
    b: str | None
    files: list[str]
    conflict: bool = False
    conflict_files: list[str] = []


class DaemonPaused(EventBody, tag="daemon.paused"):
    """The loop was not running for `seconds` (`cause`: freeze or suspend); workers got a fresh grace."""

    seconds: float
    cause: str


class GcRemoved(EventBody, tag="gc.removed"):
    what: str
    item: str
    reason: str


# -- messages, hooks, MCP sessions (issue 12) ----------------------------------------------------
class MessageSent(EventBody, tag="message.sent"):
    """A note left for worker `to` (a broadcast is one event per worker it reached)."""

    id: int
    to: str
    sender: str
    from_worker: str | None = None
    broadcast: bool = False
    chars: int = 0


class MessageDelivered(EventBody, tag="message.delivered"):
    """Messages handed to the agent (and marked read): `via` hook (PostToolUse) or inbox (a tool)."""

    ids: list[int]
    via: str


class WorkerHooked(EventBody, tag="worker.hook"):
    """A Claude Code hook fired in the worker (activity); `delivered` are the messages it carried."""

    hook: str
    tool: str | None = None
    message: str | None = None
    session_id: str | None = None
    delivered: list[int] | None = None


class WorkerHelpRequested(EventBody, tag="worker.help"):
    """The agent asks the master and the user (chkd_request_help); a notification goes out."""

    question: str


class SessionOpened(EventBody, tag="session.opened"):
    id: int
    master: bool
    client: str = ""
    pid: int | None = None


class SessionEnded(EventBody, tag="session.ended"):
    id: int
    reason: str


# -- the autopilot, budgets, usage limits (daemon/autopilot.py, daemon/budget.py) -------------
class AutopilotStarted(EventBody, tag="autopilot.started"):
    workers: int
    merge: str
    agent: str | None = None
    until_empty: bool = False


class AutopilotStopped(EventBody, tag="autopilot.stopped"):
    reason: str


class AutopilotFinished(EventBody, tag="autopilot.finished"):
    reason: str


class AutopilotSpawned(EventBody, tag="autopilot.spawn"):
    """The autopilot started a worker (worker_id) on a task with this profile (smart assignment)."""

    profile: str


class AutopilotSpawnFailed(EventBody, tag="autopilot.spawn_failed"):
    error: str


class AutopilotUpdated(EventBody, tag="autopilot.update"):
    """A conflicting worker was brought up to date with `update`: merged cleanly, or markers in `files`."""

    merged: bool
    files: list[str] = []


class NeedsPerson(EventBody, tag="autopilot.needs_person"):
    """A conflict or a failed merge the autopilot cannot settle; `message` says what to do."""

    message: str


class LimitWaitStarted(EventBody, tag="autopilot.limit_wait"):
    """A profile waits for a usage limit or a 429 back-off; `until` ms; `tasks` that wait with it."""

    profile: str
    until: int
    tasks: int
    reason: str
    message: str


class LimitWaitOver(EventBody, tag="autopilot.limit_over"):
    profile: str
    reason: str


class BudgetWarned(EventBody, tag="budget.warning"):
    """80 % of a daily budget is used. `scope`: "global" or the repository's name."""

    scope: str
    day: str
    spent_usd: float
    budget_usd: float
    percent: float
    message: str


class BudgetExceeded(EventBody, tag="budget.exceeded"):
    """A daily budget is used up: `paused` workers were stopped (SIGSTOP), nothing new starts."""

    scope: str
    day: str
    spent_usd: float
    budget_usd: float
    percent: float
    message: str
    paused: list[str] = []


class BudgetResumed(EventBody, tag="budget.resumed"):
    day: str
    workers: list[str] = []


class BudgetOverridden(EventBody, tag="budget.overridden"):
    """`resume --all --over-budget`: no budget stops anything for the rest of `day`."""

    day: str
    workers: list[str] = []


class Unreadable(EventBody, tag="unreadable"):
    """Only when reading history: a row an older chkd wrote in a shape no longer declared.

    Never emitted; `Event.kind` keeps the row's kind and `fields` its data as stored."""

    fields: dict[str, Any] = {}


EventData = (
    RepoAdded | RepoRemoved | RepoEdited | PoolReady | PoolTaken | PoolFailed
    | TaskAdded | TaskEdited | TaskHeld | TaskReleased | TaskClaimed | TaskStatusChanged
    | TaskRequeued | TaskFailed | TaskEscalated | DepAdded | DepRemoved | SpecImported
    | WorkerSpawned | WorkerStarted | WorkerStatusChanged | WorkerInput | WorkerHeartbeat | WorkerExited | WorkerKilled
    | WorkerCommitted | WorkerCommitFailed | WorkerUpdated | WorkerRemoved | AtticRestored
    | AgentSessionStarted | AgentUsageReported | AgentUsageLimited | AgentApiFailed | AgentResumed
    | MergeQueued | MergeApproved | MergeRejected | MergeChecking | MergeTesting | MergeAwaitingReview
    | MergeMerged | MergeConflicted | MergeFailed | MergeGateSuspect | MergeTrainRan
    | OverlapFound | DaemonPaused | GcRemoved
    | MessageSent | MessageDelivered | WorkerHooked | WorkerHelpRequested | SessionOpened | SessionEnded
    | AutopilotStarted | AutopilotStopped | AutopilotFinished | AutopilotSpawned | AutopilotSpawnFailed
    | AutopilotUpdated | NeedsPerson | LimitWaitStarted | LimitWaitOver
    | BudgetWarned | BudgetExceeded | BudgetResumed | BudgetOverridden
    | Unreadable
)  # fmt: skip

#: The merge events (each names its merge; published on topic `merge.<merge_id>`).
MergeData = (
    MergeQueued | MergeApproved | MergeRejected | MergeChecking | MergeTesting | MergeAwaitingReview
    | MergeMerged | MergeConflicted | MergeFailed | MergeGateSuspect | MergeTrainRan
)  # fmt: skip

EVENT_TYPES: tuple[type[EventBody], ...] = get_args(EventData)
#: kind string → its Struct.
BY_KIND: dict[str, type[EventBody]] = {str(t.__struct_config__.tag): t for t in EVENT_TYPES}


def kind_of(data: EventBody) -> str:
    """The kind string of an event's data (its tag)."""
    tag = type(data).__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{type(data).__name__} is not an event kind (it has no tag)")
    return tag


def fields_of(data: EventBody) -> dict[str, Any]:
    """The data as a plain map with wire names (`from`, not `from_`), without the kind: for display."""
    if isinstance(data, Unreadable):
        return dict(data.fields)
    return {wire: msgspec.to_builtins(getattr(data, name)) for wire, name in _names(type(data))}


@functools.cache
def _names(kind_type: type[EventBody]) -> tuple[tuple[str, str], ...]:
    """(wire name, attribute) per field, once per kind: `msgspec.structs.fields` evaluates the
    annotations on every call (about 0.7 ms), and the dashboard formats 200 events a second."""
    return tuple((f.encode_name, f.name) for f in msgspec.structs.fields(kind_type))


def decode_data(kind: str, blob: bytes | None) -> EventData:
    """An `events` row's data (msgpack, with or without the tag) as its kind's Struct."""
    kind_type = BY_KIND.get(kind)
    if kind_type is not None and kind_type is not Unreadable:
        try:
            return cast("EventData", msgspec.msgpack.decode(blob or b"\x80", type=kind_type))
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
    try:
        raw = msgspec.msgpack.decode(blob) if blob else {}
    except msgspec.DecodeError:
        raw = {}
    return Unreadable(fields=raw if isinstance(raw, dict) else {"value": raw})
