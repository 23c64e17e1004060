"""What every handler and timer receives: the store, config, paths, events, off-loop jobs.

There is no module-level state in the daemon: everything lives on one `Ctx` per daemon.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from chkd.protocol.codec import encode, encode_reply, topic_for
from chkd.protocol.config import Config
from chkd.protocol.errors import ChkdError
from chkd.protocol.events import BY_KIND, EventData, Unreadable, decode_data, kind_of
from chkd.protocol.messages import AnyResult, Err, Event, Result, event_of
from chkd.protocol.paths import Paths
from chkd.protocol.text import one_line

from .store import Store, now_ms
from .timers import Timers


@dataclass
class Deferred:
    """A request whose reply comes later (when its off-loop job finishes)."""

    envelope: list[bytes]  # routing frames to send the reply to
    request_id: int
    done: bool = False
    #: The command's declared result type (messages.result_type); `finish` holds the handler to it.
    expects: type[Result] | None = None
    #: For the daemon's own requests (no envelope): called with the result or the error instead.
    callback: Callable[[Any], None] | None = None


Then = Callable[[Any, BaseException | None], None]
Completion = tuple[Then, Any, "BaseException | None", "Deferred | None"]


@dataclass(frozen=True)
class Job:
    """An off-loop job waiting for its transaction to commit (see `Ctx.submit`)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    then: Then
    reply_to: Deferred | None


@dataclass(frozen=True)
class Mark:
    """How far each after-commit list had grown when a savepoint began (see `Ctx.savepoint`)."""

    pubbox: int
    jobbox: int
    outbox: int
    finished: int
    effects: int


@dataclass
class Ctx:
    paths: Paths
    config: Config
    store: Store
    log: Any
    timers: Timers = field(default_factory=Timers)
    started_mono: float = field(default_factory=time.monotonic)
    running: bool = True
    #: Per-area services (merge queue, radar cache, notifier), set up by each area's `setup`.
    ext: dict[str, Any] = field(default_factory=dict)
    # -- loop plumbing (owned by server.py) ----------------------------------------------
    outbox: list[list[bytes]] = field(default_factory=list)  # replies, sent after commit
    pubbox: list[Event] = field(default_factory=list)  # events, published after commit
    completions: queue.SimpleQueue[Completion] = field(default_factory=queue.SimpleQueue)
    jobbox: list[Job] = field(default_factory=list)  # off-loop jobs, started after commit
    effects: list[Callable[[], object]] = field(default_factory=list)  # signals etc., run after commit
    finished: list[Deferred] = field(default_factory=list)  # deferreds answered in this transaction
    wake_fd: int = -1
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8, "chkd-job"))
    current: Deferred | None = None  # the request being handled, for `defer()`
    #: Called with every event as it is emitted (inside its transaction): the autopilot wakes on them.
    listeners: list[Callable[[Event], None]] = field(default_factory=list)

    # -- events ---------------------------------------------------------------------------
    def emit(
        self,
        data: EventData,
        *,
        repo: str | None = None,
        worker_id: str | None = None,
        task_id: str | None = None,
    ) -> Event:
        """Write the event row now (inside the current transaction); publish after commit.

        `data` is one of the Structs declared in protocol/events.py; its tag is the kind."""
        kind = kind_of(data)
        if BY_KIND.get(kind) is not type(data) or isinstance(data, Unreadable):
            raise TypeError(f"{type(data).__name__} is not an event declared in protocol/events.py")
        at = now_ms()
        seq = self.store.insert(
            "INSERT INTO events(at, kind, repo, worker_id, task_id, data) VALUES(?,?,?,?,?,?)",
            (at, kind, repo, worker_id, task_id, encode(data)),
        )
        event = event_of(data, seq=seq, at=at, repo=repo, worker_id=worker_id, task_id=task_id)
        self.pubbox.append(event)
        for listener in self.listeners:
            listener(event)
        return event

    # -- deferred replies -------------------------------------------------------------------
    def defer(self) -> Deferred:
        """Keep the current request open; call `finish` later. Return the Deferred from the handler."""
        if self.current is None:
            raise RuntimeError("defer() outside a request")
        return self.current

    def finish(self, deferred: Deferred, result: AnyResult | ChkdError) -> None:
        if deferred.done:
            return
        deferred.done = True
        self.finished.append(deferred)
        if isinstance(result, ChkdError):
            result = Err(code=result.code, message=one_line(result.message), hint=one_line(result.hint))
        result = self.checked_result(result, deferred.expects)
        if not deferred.envelope:  # the daemon's own request (the autopilot's spawns): nobody to answer
            if deferred.callback is not None:
                deferred.callback(result)
            return
        self.outbox.append([*deferred.envelope, encode_reply(deferred.request_id, result)])

    def checked_result(self, result: AnyResult, expects: type[Result] | None) -> AnyResult:
        """`result`, or an `internal` error when a handler answers with another type than its
        command declares (a bug; clients would refuse the reply anyway)."""
        if expects is None or isinstance(result, (expects, Err)):
            return result
        self.log.error("wrong_result_type", expected=expects.__name__, got=type(result).__name__)
        return Err(
            code="internal",
            message=f"The daemon answered {type(result).__name__} where "
            f"{expects.__name__} was due; the details are in {self.paths.log_file}.",
        )

    # -- work that happens once the transaction commits ---------------------------------------
    def submit(
        self, fn: Callable[..., Any], *args: Any, then: Then, reply_to: Deferred | None = None, **kwargs: Any
    ) -> None:
        """Run `fn` in a worker thread (git, test gates, process waits) and call
        `then(result, error)` back on the loop, inside a transaction. `fn` must not touch the store.

        The job starts only after the current transaction commits, and not at all when it rolls
        back: whatever a job does on disk is always preceded by a committed record of the intent
        (a worktree's path before `git worktree add`, a merge's old and new sha before the CAS),
        so a kill -9 at any moment leaves the next start something to resume or undo from.

        With `reply_to`, a `then` that raises answers that request with the error
        (a ChkdError as itself, anything else as `internal`), so no client waits forever."""
        self.jobbox.append(Job(fn, args, kwargs, then, reply_to))

    def after_commit(self, effect: Callable[[], object]) -> None:
        """Run `effect` on the loop once the current transaction has committed (signals to a
        worker's group: a pause that rolls back must not have stopped anything)."""
        self.effects.append(effect)

    def start_jobs(self) -> None:
        """After commit (server.py): hand the committed transaction's jobs to the thread pool."""
        jobs, self.jobbox = self.jobbox, []
        for job in jobs:
            self._start(job)

    def run_effects(self) -> None:
        effects, self.effects = self.effects, []
        for effect in effects:
            try:
                effect()
            except Exception:  # an effect is a best-effort syscall; its failure is logged, never fatal
                self.log.error("after_commit_failed", exc_info=True)

    def _start(self, job: Job) -> None:
        future = self.executor.submit(job.fn, *job.args, **job.kwargs)

        def _done(f: Future) -> None:
            exc = f.exception()
            self.completions.put((job.then, None if exc else f.result(), exc, job.reply_to))
            try:
                os.write(self.wake_fd, b"j")
            except OSError:
                pass

        future.add_done_callback(_done)

    # -- savepoints ------------------------------------------------------------------------------
    def mark(self) -> Mark:
        return Mark(len(self.pubbox), len(self.jobbox), len(self.outbox), len(self.finished), len(self.effects))

    def rollback_to(self, mark: Mark) -> None:
        """Forget what was queued after `mark`: events, jobs, effects and replies of rolled-back work
        (a deferred answered there can be answered again)."""
        del self.pubbox[mark.pubbox :]
        del self.jobbox[mark.jobbox :]
        del self.outbox[mark.outbox :]
        del self.effects[mark.effects :]
        for deferred in self.finished[mark.finished :]:
            deferred.done = False
        del self.finished[mark.finished :]

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """`with ctx.savepoint():` — a store savepoint that also drops the events, jobs, effects and
        replies queued inside it when it rolls back. Use this, not `store.savepoint()`."""
        mark = self.mark()
        try:
            with self.store.savepoint():
                yield
        except BaseException:
            self.rollback_to(mark)
            raise

    def committed(self) -> None:
        """The transaction committed: its answered deferreds are final."""
        self.finished.clear()

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_mono


def publish_frames(event: Event) -> list[bytes]:
    return [topic_for(event), encode(event)]


#: The `events` columns in `row_event`'s order: `emit` writes them, history queries read them back.
EVENT_COLUMNS = "seq, at, kind, repo, worker_id, task_id, data"


def row_event(row: tuple[Any, ...]) -> Event:
    """An `events` row (selected as EVENT_COLUMNS) as the Event that was published for it
    (rows written before events were typed decode by their kind; see events.decode_data)."""
    seq, at, kind, repo, worker_id, task_id, data = row
    return Event(
        seq=seq, at=at, kind=kind, repo=repo, worker_id=worker_id, task_id=task_id, data=decode_data(kind, data)
    )
