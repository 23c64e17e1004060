"""`Client`: the one way every client (chkdctl, shim, MCP, TUI) talks to chkdd.

DEALER for requests (one socket, many requests in flight), SUB for events. Raises
`ChkdError` with the daemon's sentence on an `Err` reply, and `DaemonUnavailable`
(a ChkdError too) when nothing answers.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import TypeVar, cast

import zmq

from chkd.protocol import codec
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import AnyCommand, Command, Err, Event, Events, Result, result_type
from chkd.protocol.paths import Paths

from . import daemonctl

R = TypeVar("R", bound=Result)

DEFAULT_TIMEOUT = 30.0


class DaemonUnavailable(ChkdError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__("busy", message, hint)


class Client:
    def __init__(
        self,
        paths: Paths,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        autostart: bool | None = None,
        zctx: zmq.Context | None = None,
    ) -> None:
        self.paths = paths
        self.timeout = timeout
        self.autostart = (os.environ.get("CHKD_NO_AUTOSTART") != "1") if autostart is None else autostart
        self._zctx = zctx or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._ids = itertools.count(1)
        self._checked = False

    # -- connection ------------------------------------------------------------------------
    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self.paths.check_run()  # never connect into a run directory another user could have made
            if not self._checked:
                self.ensure_daemon()
            sock = self._zctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.paths.ctl_endpoint)
            self._sock = sock
        return self._sock

    def ensure_daemon(self) -> None:
        """Start the daemon if it is not running and autostart is on; otherwise say so clearly."""
        self._checked = True
        if daemonctl.is_running(self.paths):
            return
        if not self.autostart:
            raise DaemonUnavailable(
                f"chkdd is not running (no daemon holds {self.paths.lock_file}).",
                "Start it with `chkdctl daemon start` (autostart is off: CHKD_NO_AUTOSTART=1).",
            )
        daemonctl.start(self.paths)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------------
    def send_raw(self, payload: bytes) -> None:
        """Send bytes as they are (tests of the daemon's robustness use this)."""
        self._socket().send(payload)

    def recv_raw(self, timeout: float | None = None) -> bytes:
        sock = self._socket()
        if not sock.poll(int((self.timeout if timeout is None else timeout) * 1000)):
            raise self._no_answer(self.timeout if timeout is None else timeout)
        return sock.recv()

    def request(self, body: AnyCommand, timeout: float | None = None) -> Result:
        """Send one command and return its reply body (an `Err` is returned, not raised)."""
        sock = self._socket()
        req_id = next(self._ids)
        sock.send(codec.encode_request(req_id, body))
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sock.poll(max(1, int(remaining * 1000))):
                # the socket may hold a late reply for this id; a fresh one avoids confusion
                self.close()
                raise self._no_answer(limit)
            reply = codec.decode_reply(sock.recv())
            if reply.id == req_id:
                return reply.body
            # a late reply to an earlier request that timed out: skip it

    def call(self, body: Command[R], timeout: float | None = None) -> R:
        """Send one command and return its result, of the type the command declares
        (messages.result_type); raise ChkdError on an `Err` reply or any other type."""
        result = self.request(cast("AnyCommand", body), timeout)  # every Command subclass is in AnyCommand
        if isinstance(result, Err):
            raise ChkdError(result.code, result.message, result.hint)
        expected = result_type(body)
        if not isinstance(result, expected):
            raise ChkdError(
                "internal", f"The daemon answered {type(result).__name__} where {expected.__name__} was expected."
            )
        return cast(R, result)  # result_type(body) is R

    def _no_answer(self, timeout: float) -> DaemonUnavailable:
        if not daemonctl.is_running(self.paths):
            return DaemonUnavailable(f"chkdd stopped before it answered (see {self.paths.log_file}).")
        return DaemonUnavailable(
            f"chkdd (pid {daemonctl.pid(self.paths) or '?'}) did not answer within {timeout:g} s.",
            f"It may be busy or stuck; see {self.paths.log_file}.",
        )

    # -- events -------------------------------------------------------------------------------
    def events(
        self,
        since: int = 0,
        *,
        worker: str | None = None,
        task: str | None = None,
        repo: str | None = None,
        follow: bool = True,
        poll_s: float = 0.5,
        idle_timeout: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Event]:
        """Every event after `since`, in seq order with no gap: history from the table, then live
        (until `stop()` says so: it is asked at least every `poll_s`).

        Subscribes first, then replays from the table, then drops live events it already
        yielded, so nothing falls between replay and live. A daemon restart is survived:
        the SUB socket reconnects on its own and a gap in seq is filled from the table.
        """
        self._socket()
        sub = self._subscribe()
        cursor = _Cursor(since, worker, task, repo)
        try:
            yield from self._replay(cursor)
            if follow:
                yield from self._follow(sub, cursor, poll_s, idle_timeout, stop)
        finally:
            sub.close(0)

    def _subscribe(self) -> zmq.Socket:
        sub = self._zctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.paths.events_endpoint)
        return sub

    def _replay(self, cursor: _Cursor) -> Iterator[Event]:
        """The table's events after the cursor, page by page, up to the daemon's newest."""
        while True:
            page = self.call(
                Events(since=cursor.seq, limit=1000, worker=cursor.worker, task=cursor.task, repo=cursor.repo)
            )
            for ev in page.events:
                cursor.seq = ev.seq
                yield ev
            if len(page.events) < 1000:
                # the page covered everything up to the daemon's newest event at that moment
                cursor.seq = max(cursor.seq, page.last_seq)
                return

    def _follow(
        self,
        sub: zmq.Socket,
        cursor: _Cursor,
        poll_s: float,
        idle_timeout: float | None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Event]:
        """Live events; a gap in seq (slow joiner, restart) or a quiet poll replays from the table."""
        idle_since = time.monotonic()
        while stop is None or not stop():
            if sub.poll(int(poll_s * 1000)):
                _topic, payload = sub.recv_multipart()
                ev = codec.decode_event(payload)
                if ev.seq <= cursor.seq:
                    continue
                if ev.seq != cursor.seq + 1:
                    yield from self._replay(cursor)  # the table is the truth
                    continue
                cursor.seq = ev.seq
                if cursor.matches(ev):
                    idle_since = time.monotonic()
                    yield ev
                continue
            before = cursor.seq
            try:
                yield from self._replay(cursor)  # cheap catch-up; also notices a restarted daemon
            except DaemonUnavailable:
                pass
            if cursor.seq != before:
                idle_since = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                return


class _Cursor:
    """How far `events` got (every event up to `seq` was yielded or filtered out), and its filters."""

    __slots__ = ("repo", "seq", "task", "worker")

    def __init__(self, seq: int, worker: str | None, task: str | None, repo: str | None) -> None:
        self.seq, self.worker, self.task, self.repo = seq, worker, task, repo

    def matches(self, ev: Event) -> bool:
        return (
            (self.worker is None or ev.worker_id == self.worker)
            and (self.task is None or ev.task_id == self.task)
            and (self.repo is None or ev.repo == self.repo)
        )
