"""The dashboard's link to chkdd: one thread that follows the event stream, and locked requests.

Why its own follower and not `Client.events`: the dashboard must notice a daemon restart
without asking the daemon anything while it is idle. A ZeroMQ socket monitor on the SUB
socket says when the connection comes back; then (and on any gap in `seq`) the missed events
are replayed from the daemon's table and the lists fetched again, so nothing is lost and
nothing is polled. Everything the thread learns goes into `inbox` (a deque: appends and
pops are thread-safe), which the app drains on its render tick.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, TypeVar, cast

import zmq
from zmq.utils.monitor import recv_monitor_message

from chkd.protocol import codec
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import Command, Conflicts, Diff, Events, MergeList, Ping, Result, TaskList, WorkerList
from chkd.protocol.paths import Paths

from ..client import Client

R = TypeVar("R", bound=Result)

#: Replay pages of this many events.
PAGE = 1000
#: The feed starts with this much history.
HISTORY = 50


class Backend:
    def __init__(self, paths: Paths, repo: str | None = None, timeout: float = 10.0) -> None:
        self.paths = paths
        self.repo = repo
        self.inbox: deque[tuple[str, Any]] = deque()
        self._lock = threading.Lock()
        self._client = Client(paths, timeout=timeout, autostart=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- requests (any thread) ------------------------------------------------------------------
    def call(self, body: Command[R], timeout: float | None = None) -> R:
        """One request from any thread (the socket is shared, so one at a time)."""
        with self._lock:
            return self._client.call(body, timeout)

    def fetch(self, which: set[str]) -> dict[str, Any]:
        """The lists named in `which`, fetched now (workers, tasks, merges, radar)."""
        out: dict[str, Any] = {}
        if "workers" in which:
            out["workers"] = self.call(WorkerList(repo=self.repo, all=True)).workers
        if "tasks" in which:
            out["tasks"] = self.call(TaskList(repo=self.repo, all_repos=self.repo is None)).tasks
        if "merges" in which:
            out["merges"] = self.call(MergeList(repo=self.repo, all=True)).merges
        if "radar" in which:
            out["radar"] = self.call(Conflicts(repo=self.repo)).overlaps
        return out

    def diffstat(self, worker: str) -> str:
        return self.call(Diff(worker=worker, stat=True)).text

    # -- the follower thread ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="chkd-top-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        with self._lock:
            self._client.close()

    def _follow(self) -> None:
        zctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sub = zctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        monitor = sub.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        events_client = Client(self.paths, timeout=10, autostart=False)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        cursor = -1  # nothing known yet; set by the first catch-up
        try:
            sub.connect(self.paths.events_endpoint)
            while not self._stop.is_set():
                ready = dict(poller.poll(200))
                if monitor in ready:
                    msg = recv_monitor_message(monitor)
                    if msg["event"] == zmq.EVENT_DISCONNECTED:
                        self.inbox.append(("disconnected", None))
                        events_client.close()
                    elif msg["event"] == zmq.EVENT_CONNECTED:
                        cursor = self._catch_up(events_client, cursor, full=True)
                if sub in ready:
                    while cast(int, sub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                        _topic, payload = sub.recv_multipart(zmq.NOBLOCK)
                        try:
                            ev = codec.decode_event(payload)
                        except Exception:  # noqa: BLE001 - a frame we cannot read: the table is the truth
                            cursor = self._catch_up(events_client, cursor)
                            continue
                        if cursor < 0 or ev.seq <= cursor:
                            continue  # before our snapshot, or already replayed
                        if ev.seq != cursor + 1:
                            cursor = self._catch_up(events_client, cursor)  # a gap: replay it
                            continue
                        cursor = ev.seq
                        self.inbox.append(("event", ev))
        finally:
            events_client.close()
            sub.disable_monitor()
            monitor.close(0)
            sub.close(0)

    def _catch_up(self, client: Client, cursor: int, full: bool = False) -> int:
        """Replay every event after `cursor` (the first time: the lists and a little history).
        A daemon that does not answer is reported; the next reconnect tries again."""
        try:
            if cursor < 0 or full:
                last = client.call(Ping()).last_seq
                recent = client.call(Events(tail=HISTORY, repo=self.repo)).events
                lists = self.fetch({"workers", "tasks", "merges", "radar"})
                self.inbox.append(("lists", lists))
                if cursor < 0:
                    self.inbox.append(("history", recent))
                    cursor = last
            while True:
                page = client.call(Events(since=cursor, limit=PAGE))
                for ev in page.events:
                    cursor = ev.seq
                    self.inbox.append(("event", ev))
                if len(page.events) < PAGE:
                    cursor = max(cursor, page.last_seq)
                    break
            self.inbox.append(("connected", cursor))
        except ChkdError as exc:
            client.close()
            self.inbox.append(("error", exc.message))
        return cursor
