"""The whole contract between chkdd and its clients.

Reading this file tells you everything the daemon can do. A request is
`Request(v, id, body)` with `body` one of the command Structs below (tagged by its
`op` field, the command name); the reply is `Reply(v, id, body)` with `body` the
command's result Struct (tagged by `result`) or `Err`. Each command names its result
type as its parameter, `class Ping(Command[Pong], tag="ping")`: `result_type(Ping)`
is `Pong`, the daemon checks its handlers return it and `Client.call` checks replies.
Events published on the PUB socket are `Event`, whose `data` is one of the Structs in
protocol/events.py; the statuses and their groups are in protocol/statuses.py.

Rules: every field added later is optional with a default, so old peers keep
working; `repo` fields take a repository name or any path inside it (a worker's
worktree maps back to its repository); `worker` fields take an id or a unique prefix.
"""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar, get_args

import msgspec
from msgspec import Meta, Struct, field

from .agents import ApiError, RunUsage, UsageLimit
from .errors import ErrorCode
from .events import EventData, kind_of
from .statuses import (
    LIVE_WORKER_STATUSES,
    TASK_STATUSES,
    MergeStatus,
    TaskStatus,
    WorkerStatus,
)

__all__ = ["LIVE_WORKER_STATUSES", "TASK_STATUSES", "MergeStatus", "TaskStatus", "WorkerStatus"]

PROTOCOL_VERSION = 1

Strategy = Literal["auto", "review"]

# ---------------------------------------------------------------------------
# Bounds: every string, list and number a request carries has a limit, declared here
# once. msgspec enforces them while decoding (before any handler runs), and the daemon
# turns a violation into one sentence naming the field and the limit. NaN and infinity
# fail every `ge`/`le` check, so a bounded float is always finite.
# ---------------------------------------------------------------------------

MAX_ID = 64
MAX_TITLE = 500
MAX_TEXT = 64 * 1024
MAX_TAG = 64
MAX_TAGS = 64
MAX_DEPS = 256
MAX_PATH = 4096
MAX_NAME = 100
MAX_REF = 255
MAX_ARGS = 256
MAX_ARG = 32 * 1024
MAX_SPEC = 4 * 1024 * 1024
MAX_COUNT = 2**40
MAX_USD = 1_000_000
MAX_MS = 2**53  # a timestamp or duration in milliseconds (about 285,000 years)
MAX_SEQ = 2**62  # row ids: events, merges
MAX_PID = 2**31 - 1
MAX_ATTEMPTS = 1000
#: Items one spec import may hold (each becomes a task; the import runs in one loop turn).
MAX_IMPORT_ITEMS = 5000
#: The only pattern: no NUL byte (C strings end there, so git, paths and exec would see another value).
NO_NUL = r"\A[^\x00]*\Z"

Id = Annotated[str, Meta(max_length=MAX_ID, pattern=NO_NUL)]
Title = Annotated[str, Meta(max_length=MAX_TITLE, pattern=NO_NUL)]
Text = Annotated[str, Meta(max_length=MAX_TEXT, pattern=NO_NUL)]
Tag = Annotated[str, Meta(max_length=MAX_TAG, pattern=NO_NUL)]
Tags = Annotated[list[Tag], Meta(max_length=MAX_TAGS)]
Ids = Annotated[list[Id], Meta(max_length=MAX_DEPS)]
PathStr = Annotated[str, Meta(max_length=MAX_PATH, pattern=NO_NUL)]
#: A repository name, an agent profile name.
Name = Annotated[str, Meta(max_length=MAX_NAME, pattern=NO_NUL)]
#: A branch or ref name.
Ref = Annotated[str, Meta(max_length=MAX_REF, pattern=NO_NUL)]
Arg = Annotated[str, Meta(max_length=MAX_ARG, pattern=NO_NUL)]
Argv = Annotated[list[Arg], Meta(max_length=MAX_ARGS)]
SpecText = Annotated[str, Meta(max_length=MAX_SPEC)]
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
Usd = Annotated[float, Meta(ge=0, le=MAX_USD)]
Ms = Annotated[int, Meta(ge=0, le=MAX_MS)]
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]
Pid = Annotated[int, Meta(ge=0, le=MAX_PID)]
#: A process create time in epoch seconds.
Started = Annotated[float, Meta(ge=0, le=1e11)]
Attempts = Annotated[int, Meta(ge=1, le=MAX_ATTEMPTS)]
ExitCode = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
SignalNumber = Annotated[int, Meta(ge=1, le=1024)]
#: Priorities are checked by the daemon (its sentence names P0..P4); this only keeps them in int64.
Priority = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]

#: How a shim retries when the daemon does not answer: each request waits SHIM_SEND_TIMEOUT_S,
#: then the shim backs off (doubling, at most SHIM_BACKOFF_MAX_S) on a fresh connection. After the
#: daemon was away (restart, freeze, suspend) it therefore allows SHIM_RECONNECT_S on top of
#: heartbeat_timeout_s before it judges a silent shim.
SHIM_SEND_TIMEOUT_S = 3.0
SHIM_BACKOFF_MAX_S = 5.0
SHIM_RECONNECT_S = SHIM_SEND_TIMEOUT_S + SHIM_BACKOFF_MAX_S


# ---------------------------------------------------------------------------
# Records: the shapes of things the daemon reports about.
# ---------------------------------------------------------------------------


#: A glob relative to the main checkout (`copy`, `setup_inputs`).
Glob = Annotated[str, Meta(max_length=MAX_PATH, pattern=NO_NUL)]
Globs = Annotated[list[Glob], Meta(max_length=MAX_ARGS)]
SetupSeconds = Annotated[float, Meta(ge=0.1, le=86400)]
PoolSize = Annotated[int, Meta(ge=0, le=32)]
MergeBatch = Annotated[int, Meta(ge=1, le=64)]


class RepoSettings(Struct, omit_defaults=True):
    """A repository's workspace settings (None: not set here). `chkdctl repo edit` stores them in the
    database; `[repos.NAME]` in config.toml may set the same keys, and then config.toml is their one source."""

    test_cmd: Argv | None = None
    test_timeout_s: SetupSeconds | None = None
    setup_cmd: Argv | None = None  # run in every new worktree (and the gate's) before use
    setup_timeout_s: SetupSeconds | None = None
    copy: Globs | None = None  # untracked files copied from the main checkout, never committed
    setup_inputs: Globs | None = None  # setup re-runs only when these files' hash changes
    gate_strict: bool | None = None  # a gate that read the main checkout fails the merge
    pool_size: PoolSize | None = None  # worktrees kept ready for spawn
    merge_batch: MergeBatch | None = None  # merges gated together (merge train); 1 = one at a time


#: The keys of RepoSettings, in order (for `repo edit --unset` and listings).
REPO_SETTING_KEYS: tuple[str, ...] = RepoSettings.__struct_fields__


class RepoInfo(Struct, omit_defaults=True):
    id: int
    name: str
    path: str
    main_branch: str
    test_cmd: list[str] | None = None
    added_at: int = 0
    tasks: int = 0
    live_workers: int = 0
    settings: RepoSettings | None = None  # the effective settings (config.toml over the database)
    from_config: list[str] = []  # the keys config.toml sets ([repos.NAME]); `repo edit` cannot change them
    pool_ready: int = 0  # warm worktrees ready for spawn


class TaskInfo(Struct, omit_defaults=True):
    repo: str
    id: str
    title: str
    status: TaskStatus
    priority: int = 2
    description: str = ""
    tags: list[str] = []
    held: bool = False
    ready: bool = False
    attempts: int = 0
    max_attempts: int = 3
    claimed_by: str | None = None
    created_at: int = 0
    claimed_at: int | None = None
    completed_at: int | None = None
    depends_on: list[str] = []
    dependants: list[str] = []
    #: Summed over every worker that ran the task.
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


class WorkerInfo(Struct, omit_defaults=True):
    id: str
    repo: str
    status: WorkerStatus
    task_id: str | None = None
    task_title: str | None = None
    agent: str | None = None
    worktree: str | None = None
    branch: str | None = None
    pid: int | None = None
    pgid: int | None = None
    #: The worker's chkd-shim (a standby one shows as `chkd-shim --standby` in ps).
    shim_pid: int | None = None
    started_at: int = 0
    completed_at: int | None = None
    heartbeat_at: int | None = None
    activity_at: int | None = None
    message: str | None = None
    exit_code: int | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    last_error: str | None = None
    log_path: str | None = None
    #: Runs in a tmux session (an `interactive = true` profile): `attach`, `peek` and `send` type into it.
    interactive: bool = False
    #: The tmux session on chkd's own tmux server (`tmux -S <run dir>/tmux.sock`), for interactive workers.
    tmux_session: str | None = None
    #: Claude Code workers: the session `resume` continues, the model, and how many runs so far.
    session_id: str | None = None
    model: str | None = None
    runs: int = 1


class MergeInfo(Struct, omit_defaults=True):
    id: int
    worker_id: str
    repo: str
    strategy: Strategy
    status: MergeStatus
    task_id: str | None = None
    target: str | None = None
    base_sha: str | None = None
    head_sha: str | None = None
    result_sha: str | None = None
    conflict_files: list[str] = []
    log: str = ""
    created_at: int = 0
    finished_at: int | None = None


class Event(Struct, omit_defaults=True):
    """One state change. Written to the `events` table first (seq is its rowid), then published.

    `data` is the kind's Struct (protocol/events.py) and `kind` its tag, kept beside it so
    the table's SQL and a reader that does not decode `data` can filter on it."""

    seq: int
    at: int
    kind: str
    data: EventData
    repo: str | None = None
    worker_id: str | None = None
    task_id: str | None = None


def event_of(
    data: EventData,
    *,
    seq: int,
    at: int,
    repo: str | None = None,
    worker_id: str | None = None,
    task_id: str | None = None,
) -> Event:
    """The Event carrying `data`, its `kind` taken from the data's tag."""
    return Event(seq=seq, at=at, kind=kind_of(data), data=data, repo=repo, worker_id=worker_id, task_id=task_id)


class ImportProblem(Struct):
    line: int
    text: str
    reason: str


class Overlap(Struct, omit_defaults=True):
    """Two workers (or a worker and the target, `b` = None) touching the same files."""

    repo: str
    a: str
    b: str | None
    files: list[str]
    conflict: bool = False
    conflict_files: list[str] = []


GcKind = Literal["worktree", "worker", "branch", "dead_worker"]


class GcItem(Struct, omit_defaults=True):
    kind: GcKind
    repo: str
    what: str
    reason: str
    removable: bool = True
    removed: bool = False


class AtticEntry(Struct):
    ref: str
    sha: str
    worker_id: str
    at: int


Sender = Literal["master", "user", "worker"]
HookEvent = Literal["post-tool-use", "notification", "stop"]


class MessageInfo(Struct, omit_defaults=True):
    """A note for one worker (a broadcast is one row per worker it reached); `read_at` is when it
    was delivered to the agent (a hook's additionalContext, chkd_inbox, chkd_worker_status)."""

    id: int
    to_worker: str
    sender: Sender
    text: str
    created_at: int
    from_worker: str | None = None
    broadcast: bool = False
    read_at: int | None = None


class SessionInfo(Struct, omit_defaults=True):
    """One MCP connection (a chkd-mcp process): a master's, or a worker's own (`worker_id`)."""

    id: int
    is_master: bool
    started_at: int
    worker_id: str | None = None
    repo: str | None = None
    client: str = ""
    pid: int | None = None
    ended_at: int | None = None
    end_reason: str | None = None


class CostSummary(Struct, omit_defaults=True):
    """Tokens and cost from the usage ledger: `today_*` counts what was reported since `since`
    (midnight UTC). One function computes it (daemon/handlers/overview.py)."""

    since: int = 0
    today_usd: float = 0.0
    today_tokens_in: int = 0
    today_tokens_out: int = 0
    total_usd: float = 0.0


class SpendInfo(Struct, omit_defaults=True):
    """Today's spending against the budgets (`spawn` and `run` print it). USD; day = the daemon's local date."""

    day: str
    today_usd: float = 0.0
    budget_usd: float | None = None
    repo: str | None = None
    repo_today_usd: float = 0.0
    repo_budget_usd: float | None = None
    #: A budget is used up: running workers are paused and nothing new starts.
    over: bool = False
    #: `resume --all --over-budget` was given today: the budget does not stop anything until tomorrow.
    overridden: bool = False


class ProfileWait(Struct, omit_defaults=True):
    """An agent profile the autopilot does not start until `until` (a usage limit or 429 back-off)."""

    profile: str
    until: int
    reason: str
    strikes: int = 0
    tasks_waiting: int = 0


RunMode = Literal["auto", "review", "off"]
RunState = Literal["running", "stopped", "finished"]


class RunInfo(Struct, omit_defaults=True):
    """One repository's autopilot: its settings (kept in the database) and what it sees now."""

    repo: str
    state: RunState
    workers: int
    merge: RunMode = "auto"
    agent: str | None = None
    until_empty: bool = False
    started_at: int = 0
    stopped_at: int | None = None
    stop_reason: str | None = None
    live: int = 0
    ready: int = 0
    waiting_on_deps: int = 0
    in_review: int = 0
    merged: int = 0
    failed: int = 0
    #: Why nothing starts although tasks are ready (budget, usage limit), or "".
    blocked: str = ""
    spend: SpendInfo | None = None
    waits: list[ProfileWait] = []


class CostRow(Struct, omit_defaults=True):
    key: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    workers: int = 0
    tasks: int = 0


class TagEta(Struct):
    tag: str
    remaining: int
    mean_s: float
    eta_s: float


FindingStatus = Literal["ok", "warn", "fail"]


class Finding(Struct, omit_defaults=True):
    """One `chkdctl doctor` check: how it went, one sentence, and the command that fixes it."""

    check: str
    status: FindingStatus
    message: str
    fix: str = ""


# ---------------------------------------------------------------------------
# Results (reply bodies). Tag = `result`.
# ---------------------------------------------------------------------------


class Result(Struct, tag_field="result", omit_defaults=True):
    """Base of every reply body: a command's result, or `Err`."""


class Err(Result, tag="error"):
    """The command was refused or failed: a code (protocol/errors.py) and one sentence."""

    code: ErrorCode
    message: str
    hint: str = ""


class Ok(Result, tag="ok"):
    message: str = ""


class Pong(Result, tag="pong"):
    version: str
    pid: int
    uptime_s: float
    home: str
    db: str
    repos: int
    tasks: int
    workers: int
    last_seq: int = 0
    #: chkd-shim processes started ahead and waiting for a spawn (`shim_standby`).
    standby_shims: int = 0


class StatusResult(Result, tag="status"):
    pong: Pong
    repos: list[RepoInfo] = []
    tasks_by_status: dict[str, int] = {}
    workers_by_status: dict[str, int] = {}


class RepoResult(Result, tag="repo"):
    repo: RepoInfo
    created: bool = False


class RepoListResult(Result, tag="repos"):
    repos: list[RepoInfo]


class TaskResult(Result, tag="task"):
    task: TaskInfo
    history: list[Event] = []


class TaskListResult(Result, tag="tasks"):
    tasks: list[TaskInfo]


class ClaimResult(Result, tag="claimed"):
    task: TaskInfo | None = None


class ImportReport(Result, tag="import"):
    repo: str
    dry_run: bool
    new: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    skipped: list[str] = []
    vanished: list[str] = []
    warnings: list[str] = []
    problems: list[ImportProblem] = []
    #: For each updated (or skipped) id, the fields the file changes: title, priority, status, ...
    changes: dict[str, list[str]] = {}


class WorkerResult(Result, tag="worker"):
    worker: WorkerInfo
    spend: SpendInfo | None = None


class WorkerListResult(Result, tag="workers"):
    workers: list[WorkerInfo]


class ActivityAck(Result, tag="ack"):
    """Reply to heartbeats and shim messages: what the daemon wants from the worker now.

    `stop`: the worker was given up (dead or error) and its task handed back while its agent
    still runs; the shim stops the agent so the task never runs twice (the worktree stays)."""

    status: WorkerStatus
    heartbeat_s: float = 10.0
    stop: bool = False


class AtticListResult(Result, tag="attic"):
    entries: list[AtticEntry]


class EventList(Result, tag="events"):
    events: list[Event]
    last_seq: int = 0


class GcReport(Result, tag="gc"):
    applied: bool
    items: list[GcItem] = []


class MergeResult(Result, tag="merge"):
    merge: MergeInfo


class MergeListResult(Result, tag="merges"):
    merges: list[MergeInfo]


class DiffResult(Result, tag="diff"):
    text: str
    base: str = ""
    head: str = ""


class PeekResult(Result, tag="peek"):
    """`source`: "screen" (the tmux pane as it looks now) or "log" (a detached worker's log tail)."""

    worker: str
    source: Literal["screen", "log"]
    text: str


class ConflictReport(Result, tag="conflicts"):
    overlaps: list[Overlap]
    computed_at: int = 0


class DbBackupResult(Result, tag="db.backup"):
    """The copy opened and passed integrity_check before it got its name."""

    path: str
    pages: int
    bytes: int
    seconds: float


class DbCheckResult(Result, tag="db.check"):
    ok: bool
    db: str
    #: integrity_check's lines when it is not "ok", and one line per foreign_key_check row.
    problems: list[str]
    foreign_key_problems: list[str]
    seconds: float = 0.0


class DoctorReport(Result, tag="doctor"):
    findings: list[Finding]


class MessagesResult(Result, tag="messages"):
    messages: list[MessageInfo]


class HookAck(Result, tag="hook"):
    """What a hook learns: the worker's status and the messages it should hand the model now."""

    status: WorkerStatus
    messages: list[MessageInfo] = []


class SessionResult(Result, tag="session"):
    session: SessionInfo


class SessionListResult(Result, tag="sessions"):
    sessions: list[SessionInfo]


class OverviewResult(Result, tag="overview"):
    repos: list[str] = []
    workers_by_status: dict[str, int] = {}
    tasks_by_status: dict[str, int] = {}
    #: Every worker not yet merged (live, done, conflict, error, ...), oldest first.
    workers: list[WorkerInfo] = []
    ready: list[TaskInfo] = []
    #: Pending tasks whose dependencies are not done yet.
    waiting: list[TaskInfo] = []
    #: Claimed or in progress.
    running: list[TaskInfo] = []
    awaiting_review: list[MergeInfo] = []
    conflicts: list[Overlap] = []
    cost: CostSummary = field(default_factory=CostSummary)


class RunResult(Result, tag="run"):
    runs: list[RunInfo]
    message: str = ""


class CostReport(Result, tag="cost"):
    by: str
    rows: list[CostRow]
    total: CostRow
    spend: SpendInfo | None = None


class StatsReport(Result, tag="stats"):
    """The seed's success metrics, computed from the database (`chkdctl stats`)."""

    since: int
    until: int
    tasks_merged: int = 0
    merged_per_hour: float = 0.0
    ready_to_merged_mean_s: float | None = None
    ready_to_merged_p90_s: float | None = None
    merge_attempts: int = 0
    merge_conflicts: int = 0
    conflict_rate: float = 0.0
    #: Sum of the workers' run times divided by the wall time from the first start to the last finish.
    speedup: float | None = None
    wall_s: float = 0.0
    work_s: float = 0.0
    queue_ready: int = 0
    queue_waiting: int = 0
    queue_running: int = 0
    #: Busy worker time over (parallelism x wall time).
    utilisation: float | None = None
    parallelism: int = 1
    cost_usd: float = 0.0
    cost_per_merged_task: float | None = None
    mean_task_s: float | None = None
    eta_s: float | None = None
    eta_by_tag: list[TagEta] = []


AnyResult = (
    Err | Ok | Pong | StatusResult
    | RepoResult | RepoListResult
    | TaskResult | TaskListResult | ClaimResult | ImportReport
    | WorkerResult | WorkerListResult | ActivityAck | AtticListResult
    | EventList | GcReport
    | DbBackupResult | DbCheckResult | DoctorReport
    | MergeResult | MergeListResult | DiffResult | ConflictReport
    | PeekResult
    | MessagesResult | HookAck | SessionResult | SessionListResult | OverviewResult
    | RunResult | CostReport | StatsReport
)  # fmt: skip


# ---------------------------------------------------------------------------
# Commands (request bodies). Tag = the command name on the wire.
# ---------------------------------------------------------------------------


R_co = TypeVar("R_co", bound=Result, covariant=True)


class Command(Struct, Generic[R_co], tag_field="op", omit_defaults=True):
    """Base of every request body; its parameter is the command's result type."""


# -- daemon --------------------------------------------------------------------
class Ping(Command[Pong], tag="ping"):
    pass


class Status(Command[StatusResult], tag="status"):
    pass


class Shutdown(Command[Ok], tag="shutdown"):
    pass


# -- repositories ----------------------------------------------------------------
class RepoAdd(Command[RepoResult], tag="repo.add"):
    path: PathStr
    name: Name | None = None
    main_branch: Ref | None = None
    test_cmd: Argv | None = None


class RepoEdit(Command[RepoResult], tag="repo.edit"):
    """Change a registered repository's settings (stored in the database); `unset` clears keys."""

    repo: PathStr
    set: RepoSettings = field(default_factory=RepoSettings)
    unset: Annotated[list[Name], Meta(max_length=32)] = []


class RepoList(Command[RepoListResult], tag="repo.list"):
    pass


class RepoRm(Command[Ok], tag="repo.rm"):
    repo: PathStr


# -- tasks ------------------------------------------------------------------------
class TaskAdd(Command[TaskResult], tag="task.add"):
    title: Title
    repo: PathStr | None = None
    id: Id | None = None
    priority: Priority = 2
    after: Ids = []
    tags: Tags = []
    description: Text = ""
    max_attempts: Attempts | None = None


class TaskList(Command[TaskListResult], tag="task.list"):
    repo: PathStr | None = None
    status: TaskStatus | None = None
    ready: bool = False
    all_repos: bool = False
    tag: Tag | None = None


class TaskShow(Command[TaskResult], tag="task.show"):
    id: Id
    repo: PathStr | None = None


class TaskEdit(Command[TaskResult], tag="task.edit"):
    id: Id
    repo: PathStr | None = None
    title: Title | None = None
    description: Text | None = None
    priority: Priority | None = None
    tags: Tags | None = None
    max_attempts: Attempts | None = None


class TaskCancel(Command[TaskResult], tag="task.cancel"):
    id: Id
    repo: PathStr | None = None


class TaskRetry(Command[TaskResult], tag="task.retry"):
    id: Id
    repo: PathStr | None = None


class TaskHold(Command[TaskResult], tag="task.hold"):
    id: Id
    repo: PathStr | None = None


class TaskRelease(Command[TaskResult], tag="task.release"):
    """Un-hold a held task, or put a claimed task whose worker went away back to pending."""

    id: Id
    repo: PathStr | None = None


class DepAdd(Command[TaskResult], tag="dep.add"):
    """`task` depends on `depends_on`: it runs after `depends_on` is done."""

    task: Id
    depends_on: Id
    repo: PathStr | None = None


class DepRm(Command[TaskResult], tag="dep.rm"):
    task: Id
    depends_on: Id
    repo: PathStr | None = None


class Claim(Command[ClaimResult], tag="claim"):
    """Atomically take the most urgent ready task (peer agents use this directly)."""

    repo: PathStr | None = None
    worker: Id | None = None
    tag: Tag | None = None


class TaskImport(Command[ImportReport], tag="task.import"):
    text: SpecText
    source: PathStr = "SPEC.md"
    repo: PathStr | None = None
    dry_run: bool = False


# -- workers ----------------------------------------------------------------------
class Spawn(Command[WorkerResult], tag="spawn"):
    repo: PathStr | None = None
    task_id: Id | None = None
    title: Title | None = None
    description: Text = ""
    next: bool = False
    tag: Tag | None = None
    agent: Name | None = None
    cmd: Argv | None = None
    #: Run it in tmux (`attach`, `peek`, `send`), as an `interactive = true` profile does.
    interactive: bool = False


class WorkerList(Command[WorkerListResult], tag="worker.list"):
    repo: PathStr | None = None
    all: bool = False
    #: Only workers in this status (`chkdctl workers --waiting`: those that need a person).
    status: WorkerStatus | None = None


class WorkerShow(Command[WorkerResult], tag="worker.show"):
    worker: Id


class Pause(Command[WorkerListResult], tag="pause"):
    worker: Id | None = None
    all: bool = False
    repo: PathStr | None = None


class Resume(Command[WorkerListResult], tag="resume"):
    worker: Id | None = None
    all: bool = False
    repo: PathStr | None = None
    #: Resume workers the budget paused, and let the autopilot start new ones, for the rest of today.
    over_budget: bool = False


class Abort(Command[WorkerListResult], tag="abort"):
    worker: Id | None = None
    all: bool = False
    repo: PathStr | None = None
    #: By default the task goes back to pending (not a failed attempt); True cancels it instead.
    cancel_task: bool = False


class Remove(Command[Ok], tag="rm"):
    worker: Id
    force: bool = False


class AtticList(Command[AtticListResult], tag="attic.list"):
    repo: PathStr | None = None


class AtticRestore(Command[Ok], tag="attic.restore"):
    ref: Ref
    repo: PathStr | None = None
    branch: Ref | None = None


class Heartbeat(Command[ActivityAck], tag="heartbeat"):
    """The agent's own sign of progress (activity), from inside a worker.

    `waiting`: the agent needs a person (its question, or what the permission prompt asks):
    the worker becomes `waiting` until its next activity or input (`send`, `attach`)."""

    worker: Id
    message: Text | None = None
    tokens_in: Count = 0
    tokens_out: Count = 0
    cost_usd: Usd = 0.0
    waiting: Text | None = None


class ResumeAgent(Command[WorkerResult], tag="resume_agent"):
    """Start a worker's exited agent again in its worktree, continuing its session (profile `resume`)."""

    worker: Id
    prompt: Text | None = None


class WorkerState(Command[ActivityAck], tag="worker.state"):
    worker: Id


class Done(Command[WorkerResult], tag="done"):
    worker: Id
    summary: Text = ""


# -- shim (one per worker) ----------------------------------------------------------
class ShimHello(Command[ActivityAck], tag="shim.hello"):
    worker: Id
    shim_pid: Pid
    shim_started: Started
    agent_pid: Pid
    agent_started: Started
    pgid: Pid


class ShimBeat(Command[ActivityAck], tag="shim.beat"):
    """Proves the shim and agent process live; carries the agent's latest activity."""

    worker: Id
    agent_alive: bool = True
    activity_at: Ms | None = None
    output_at: Ms | None = None


class AgentReport(Command[ActivityAck], tag="agent.report"):
    """What the shim read in the agent's output (a `claude-stream-json` profile): its session,
    a run's usage, a usage limit, an API error. Each part is optional; every report is activity."""

    worker: Id
    session_id: Annotated[str, Meta(max_length=200, pattern=NO_NUL)] | None = None
    model: Annotated[str, Meta(max_length=200, pattern=NO_NUL)] | None = None
    usage: RunUsage | None = None
    usage_limit: UsageLimit | None = None
    api_error: ApiError | None = None
    activity_at: Ms | None = None


class ShimExit(Command[ActivityAck], tag="shim.exit"):
    worker: Id
    exit_code: ExitCode | None = None
    signal: SignalNumber | None = None
    at: Ms = 0


class TmuxTarget(Struct, forbid_unknown_fields=True):
    """Where an interactive agent runs: a session on chkd's own tmux server (its socket)."""

    socket: str
    session: str


class ShimGo(Struct, forbid_unknown_fields=True):
    """Not a request: the daemon's one line to a shim waiting on stdin, `go ` + this as JSON,
    sent once the worktree exists (or the line `stop`). Everything the shim needs to run the agent.
    With `tmux` (an interactive profile) the agent runs in that tmux session instead of detached."""

    worker: str
    argv: list[str]
    cwd: str
    log: str
    env: dict[str, str] = {}
    heartbeat_s: float = 10.0
    abort_grace_s: float = 5.0
    tmux: TmuxTarget | None = None
    #: How the shim reads the agent's stdout: `claude-stream-json` is parsed into AgentReports.
    output: Literal["plain", "claude-stream-json"] = "plain"


def encode_go(go: ShimGo) -> str:
    """The `go` line (without its newline); JSON escapes every newline inside values."""
    return "go " + msgspec.json.encode(go).decode()


def decode_go(line: str) -> ShimGo | None:
    """The ShimGo a `go` line carries, or None for `stop` and anything that is not a `go` line.
    Raises msgspec.ValidationError / DecodeError for a `go` line whose JSON does not fit."""
    if not line.startswith("go "):
        return None
    return msgspec.json.decode(line[3:].strip(), type=ShimGo)


# -- events, maintenance ---------------------------------------------------------------
class Events(Command[EventList], tag="events"):
    since: Seq = 0
    limit: Seq = 1000
    worker: Id | None = None
    task: Id | None = None
    repo: PathStr | None = None
    #: > 0: only the newest `tail` matching events after `since` (still oldest first), for `events -n N`.
    tail: Seq = 0


class Gc(Command[GcReport], tag="gc"):
    repo: PathStr | None = None
    apply: bool = False


# -- the database and diagnosis -------------------------------------------------------
class DbBackup(Command[DbBackupResult], tag="db.backup"):
    """An online copy of the database (SQLite backup, off-loop) to the absolute `path`,
    written beside it under a temporary name, verified with integrity_check, then renamed."""

    path: str
    force: bool = False


class DbCheck(Command[DbCheckResult], tag="db.check"):
    """PRAGMA integrity_check and foreign_key_check, off-loop on a separate read connection."""


class Doctor(Command[DoctorReport], tag="doctor"):
    """The daemon's findings for `chkdctl doctor`: its git, and live workers whose processes
    are gone or whose shim stopped heartbeating."""


# -- merges --------------------------------------------------------------------------
class Merge(Command[MergeResult], tag="merge"):
    worker: Id
    strategy: Strategy | None = None
    no_test: bool = False


class Approve(Command[MergeResult], tag="approve"):
    worker: Id


class Reject(Command[MergeResult], tag="reject"):
    worker: Id
    reason: Text = ""


class MergeList(Command[MergeListResult], tag="merge.list"):
    repo: PathStr | None = None
    all: bool = False


class MergeShow(Command[MergeResult], tag="merge.show"):
    id: Seq | None = None
    worker: Id | None = None


class Diff(Command[DiffResult], tag="diff"):
    worker: Id
    stat: bool = False


class Update(Command[WorkerResult], tag="update"):
    worker: Id


class Conflicts(Command[ConflictReport], tag="conflicts"):
    repo: PathStr | None = None


# -- interactive workers: their terminal ---------------------------------------------------
class Peek(Command[PeekResult], tag="peek"):
    """The worker's current screen (tmux capture-pane) for an interactive worker, else its log's tail."""

    worker: Id
    lines: Annotated[int, Meta(ge=1, le=10000)] = 40


class SendKeys(Command[WorkerResult], tag="send.keys"):
    """Type `text` into an interactive worker's terminal (then Enter unless `enter` is False).
    Counts as a person's input: a `waiting` worker goes back to `working`."""

    worker: Id
    text: Text
    enter: bool = True


class Attached(Command[WorkerResult], tag="attached"):
    """`chkdctl attach` is about to attach a terminal (not read-only): a person is there now,
    so a `waiting` worker goes back to `working`. Replies with the worker (its tmux session)."""

    worker: Id


# -- messages, hooks, MCP sessions, the overview ----------------------------------------------
class Send(Command[MessagesResult], tag="send"):
    """A note to worker `to`, or with `all` to every live worker (of `repo`, else every repository)."""

    text: Text
    to: Id | None = None
    all: bool = False
    repo: PathStr | None = None
    sender: Sender = "user"
    from_worker: Id | None = None


class Inbox(Command[MessagesResult], tag="inbox"):
    """A worker's messages, oldest first. `mark_read`: the unread ones returned count as
    delivered to the agent (it reads them now), so a hook never repeats them."""

    worker: Id
    unread: bool = False
    mark_read: bool = False
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


class Hook(Command[HookAck], tag="hook"):
    """A Claude Code hook fired inside a worker: activity (a heartbeat; `notification` carries its
    message). For `post-tool-use` the reply holds the unread messages, now marked read."""

    worker: Id
    event: HookEvent
    tool: Title | None = None
    message: Text | None = None
    session_id: Id | None = None


class HelpRequest(Command[HookAck], tag="help"):
    """The agent asks the master and the user a question (an event and a notification)."""

    worker: Id
    question: Text


class SessionOpen(Command[SessionResult], tag="session.open"):
    """An MCP connection began: the chkd-mcp process (pid, create time), inside `worker` or a master's."""

    pid: Pid
    started: Started
    worker: Id | None = None
    repo: PathStr | None = None
    client: Name = "chkd-mcp"


class SessionClose(Command[Ok], tag="session.close"):
    id: Seq
    reason: Title = "disconnected"


class SessionList(Command[SessionListResult], tag="session.list"):
    all: bool = False


class Overview(Command[OverviewResult], tag="overview"):
    """Everything a master needs at a glance (chkd_status): workers, tasks, reviews, conflicts, cost."""

    repo: PathStr | None = None


# -- the autopilot, cost and metrics -----------------------------------------------------------
Workers = Annotated[int, Meta(ge=1, le=1000)]


class RunStart(Command[RunResult], tag="run.start"):
    """Start (or re-configure) the repository's scheduler; the settings are kept in the database."""

    repo: PathStr | None = None
    workers: Workers | None = None
    agent: Name | None = None
    merge: RunMode | None = None
    until_empty: bool = False


class RunStop(Command[RunResult], tag="run.stop"):
    repo: PathStr | None = None


class RunStatus(Command[RunResult], tag="run.status"):
    repo: PathStr | None = None


class Cost(Command[CostReport], tag="cost"):
    by: Literal["task", "worker", "day", "repo"] = "task"
    repo: PathStr | None = None


class Stats(Command[StatsReport], tag="stats"):
    repo: PathStr | None = None
    #: Only what happened after this time (ms since the epoch); 0 = everything.
    since: Ms = 0


class AgentLimit(Command[ActivityAck], tag="agent.limit"):
    """From inside a worker (or its shim): the agent hit a usage limit (`resets_at`, ms) or an API
    rate limit (HTTP 429). The autopilot parks the worker's profile; the task goes back uncounted."""

    worker: Id
    kind: Literal["usage_limit", "rate_limit"] = "usage_limit"
    resets_at: Ms | None = None
    message: Text = ""


AnyCommand = (
    Ping | Status | Shutdown
    | RepoAdd | RepoEdit | RepoList | RepoRm
    | TaskAdd | TaskList | TaskShow | TaskEdit | TaskCancel | TaskRetry | TaskHold | TaskRelease
    | DepAdd | DepRm | Claim | TaskImport
    | Spawn | WorkerList | WorkerShow | Pause | Resume | Abort | Remove | AtticList | AtticRestore
    | Heartbeat | WorkerState | Done | ResumeAgent
    | ShimHello | ShimBeat | ShimExit | AgentReport
    | Events | Gc
    | DbBackup | DbCheck | Doctor
    | Merge | Approve | Reject | MergeList | MergeShow | Diff | Update | Conflicts
    | Peek | SendKeys | Attached
    | Send | Inbox | Hook | HelpRequest | SessionOpen | SessionClose | SessionList | Overview
    | RunStart | RunStop | RunStatus | Cost | Stats | AgentLimit
)  # fmt: skip

COMMANDS: tuple[type[Command[Result]], ...] = get_args(AnyCommand)


def _declared_result(command: type[Command[Result]]) -> type[Result]:
    for base in getattr(command, "__orig_bases__", ()):
        args = get_args(base)
        if args and isinstance(args[0], type) and issubclass(args[0], Result):
            return args[0]
    raise TypeError(f"{command.__name__} does not name its result type: declare it as Command[SomeResult]")


#: Each command's result type (what its successful reply carries).
RESULT_TYPES: dict[type[Command[Result]], type[Result]] = {c: _declared_result(c) for c in COMMANDS}


def result_type(command: Command[Result] | type[Command[Result]]) -> type[Result]:
    """The result type a command's successful reply carries."""
    return RESULT_TYPES[command if isinstance(command, type) else type(command)]


# ---------------------------------------------------------------------------
# Envelopes.
# ---------------------------------------------------------------------------


class Request(Struct):
    v: int
    id: int
    body: AnyCommand


class Reply(Struct):
    v: int
    id: int
    body: AnyResult


class RawRequest(Struct):
    """What the daemon decodes first: the version is checked before the body is read."""

    v: int
    id: int
    body: msgspec.Raw = field(default_factory=lambda: msgspec.Raw(b"\xc0"))
