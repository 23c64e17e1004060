"""`chkdctl top`: the live dashboard — worker cards, task queue, event feed, merges, radar, logs.

A thin client: state comes from the daemon's event stream (backend.py), is folded into a
model (model.py) as it arrives, and is rendered on a tick at most `FPS` times a second, only
the parts that changed, with widgets updated in place. Every action is a request run off
the UI thread; a refusal is a notification, never a crash.
"""

from __future__ import annotations

import gc
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, VerticalScroll
from textual.widgets import DataTable, Footer, RichLog, Static, TabbedContent, TabPane

from chkd.protocol.errors import ChkdError
from chkd.protocol.launch import installed_argv
from chkd.protocol.messages import (
    Abort,
    Approve,
    Merge,
    Pause,
    Reject,
    Resume,
    Spawn,
    Update,
    WorkerResult,
)
from chkd.protocol.paths import Paths
from chkd.protocol.text import visible

from ..commands.liveness import format_event
from . import model as M
from .backend import Backend
from .rowlist import RowList
from .widgets import Confirm, Prompt, TextLine, WorkerCard

#: Render ticks per second (events are folded in as they come; the screen follows at this rate).
FPS = 10
#: Lists are fetched again at most this often, however many events ask for it (a burst of
#: status changes is one task-list request, not one per event).
MIN_FETCH_S = 0.3
#: The task queue's columns and their widths.
TASK_COLUMNS = (("task", 14), ("state", 11), ("P", 2), ("title", 56), ("deps", 24), ("worker", 8))
#: Worker-log bytes shown in the worker pane.
LOG_TAIL = 16 * 1024


def _now_ms() -> int:
    return int(time.time() * 1000)


class TopApp(App[None]):
    TITLE = "chkd top"
    CSS = """
    #header { height: 1; background: $primary-background; color: $text; padding: 0 1; }
    #strip { height: 45%; min-height: 6; border-bottom: solid $primary; }
    #cards { grid-size: 3; grid-gutter: 0 1; grid-rows: 4; height: auto; padding: 0 1; }
    .card { height: 4; padding: 0 1; background: $boost; }
    .card.selected { background: $accent 30%; text-style: bold; }
    #empty { color: $text-muted; padding: 1 2; }
    .modal { align: center middle; }
    .dialog { width: 70; height: auto; padding: 1 2; background: $panel; border: thick $accent; }
    .buttons { height: auto; align: right middle; }
    .buttons Button { margin-left: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("w", "select(1)", "next worker"),
        Binding("W", "select(-1)", "prev worker", show=False),
        Binding("n", "spawn_next", "spawn next"),
        Binding("s", "spawn_chosen", "spawn task"),
        Binding("p", "pause", "pause"),
        Binding("P", "pause_all", "pause all", show=False),
        Binding("r", "resume", "resume"),
        Binding("R", "resume_all", "resume all", show=False),
        Binding("m", "merge('auto')", "merge"),
        Binding("v", "merge('review')", "merge (review)", show=False),
        Binding("a", "approve", "approve"),
        Binding("j", "reject", "reject"),
        Binding("x", "abort", "abort"),
        Binding("u", "update_worker", "update", show=False),
        Binding("d", "diff", "diff"),
        Binding("l", "log", "log"),
        Binding("t", "send", "send msg", show=False),
        Binding("enter", "attach", "attach", show=False),
        Binding("o", "autopilot", "autopilot", show=False),
    ]

    def __init__(
        self, paths: Paths, *, repo: str | None = None, backend: Backend | None = None, fps: float = FPS
    ) -> None:
        super().__init__()
        self.fps = fps  # 0: no render timer (bench/top.py drives `tick` itself)
        self.paths = paths
        self.repo = repo
        self.backend = backend or Backend(paths, repo)
        self.board = M.Board()
        self.cards: dict[str, WorkerCard] = {}
        self.selected: str | None = None
        self.worker_pane: tuple[str, str] | None = None  # ("log" | "diff", worker id)
        self._log_offset = 0
        self._fetching = False
        self._fetched_at = 0.0
        self.frames: list[float] = []  # seconds per render tick that had something to do (bench/top.py)
        self.notices: list[tuple[str, str]] = []  # (severity, message) of every notification shown

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Daemon sentences may hold brackets: never markup. Kept in `notices` as well."""
        self.notices.append((str(severity), message))
        del self.notices[:-200]
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield TextLine(id="header")
        with VerticalScroll(id="strip"):
            yield Static("No workers yet: press n to spawn the next ready task.", id="empty")
            yield Grid(id="cards")
        with TabbedContent(id="panes", initial="tab-tasks"):
            with TabPane("Tasks", id="tab-tasks"):
                yield RowList(TASK_COLUMNS, id="tasks")
            with TabPane("Events", id="tab-events"):
                yield RichLog(id="feed", max_lines=M.FEED_LINES, wrap=False, markup=False)
            with TabPane("Merges", id="tab-merges"):
                yield DataTable(id="merges", cursor_type="row")
            with TabPane("Radar", id="tab-radar"):
                yield DataTable(id="radar", cursor_type="row")
            with TabPane("Worker", id="tab-worker"):
                yield RichLog(id="worker-log", max_lines=2000, wrap=False, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#merges", DataTable).add_columns(
            "id", "worker", "task", "status", "strategy", "diffstat / files"
        )
        self.query_one("#radar", DataTable).add_columns("repo", "workers", "would conflict", "files")
        if self.fps:
            self.set_interval(1 / self.fps, self.tick)
        self._age_slot = 0
        self._gc_frozen = False
        self._gc_threshold: tuple[int, int, int] | None = None
        self.backend.start()

    def on_unmount(self) -> None:
        self.backend.stop()
        if self._gc_threshold is not None:  # the process goes on (tests, the demo): as it was
            gc.set_threshold(*self._gc_threshold)
            gc.unfreeze()

    def on_resize(self) -> None:
        self.query_one("#cards", Grid).styles.grid_size_columns = max(1, (self.size.width - 2) // 40)

    # -- the render tick --------------------------------------------------------------------------
    def tick(self) -> None:
        started = time.perf_counter()
        board = self.board
        inbox = self.backend.inbox
        feed_lines: list[str] = []
        while inbox:
            kind, payload = inbox.popleft()
            if kind == "event":
                if self.repo is None or payload.repo in (None, self.repo):
                    board.apply(payload)
                    feed_lines.append(format_event(payload))
            elif kind == "lists":
                self._set_lists(payload)
            elif kind == "history":
                feed_lines.extend(format_event(ev) for ev in payload)
            elif kind == "connected":
                board.connected = True
                board.dirty.header = True
            elif kind == "disconnected":
                board.connected = False
                board.dirty.header = True
                self.notify("Lost the connection to chkdd; reconnecting when it is back.", severity="warning")
            elif kind == "error":
                self.notify(visible(payload), severity="error")
            elif kind == "diffstat":
                wid, text = payload
                board.diffstats[wid] = text
                board.dirty.merges = True
        wanted = board.take_refresh()
        due = time.monotonic() - self._fetched_at >= MIN_FETCH_S
        if (wanted or board.want_diffstat) and not self._fetching and due:
            self._fetching = True
            self._fetched_at = time.monotonic()
            self._fetch(wanted, set(board.want_diffstat))
            board.want_diffstat.clear()
        elif wanted:
            board.refresh |= wanted  # later: a fetch under way may predate these events
        if feed_lines:
            self.query_one("#feed", RichLog).write(Text("\n".join(feed_lines)), scroll_end=True)
        did = self.render_board() or bool(feed_lines)
        self._age_tick()
        if self.worker_pane and self.worker_pane[0] == "log":
            self._follow_log()
        if did:
            self.frames.append(time.perf_counter() - started)
            del self.frames[:-10_000]

    def _set_lists(self, lists: dict[str, Any]) -> None:
        if not self._gc_frozen:
            self.call_after_refresh(self._freeze_gc)
            self._gc_frozen = True
        board = self.board
        if "workers" in lists:
            board.set_workers(w for w in lists["workers"] if w.status != "merged")
        if "tasks" in lists:
            board.set_tasks(lists["tasks"])
        if "merges" in lists:
            board.set_merges(lists["merges"])
        if "radar" in lists:
            board.set_overlaps(lists["radar"])

    def _freeze_gc(self) -> None:
        """Once the first snapshot is drawn, the widgets and lists live as long as the app: move
        them out of the collector's way, and run full collections a tenth as often. A full
        collection over Textual's object graph takes 40-400 ms on a busy 2-core machine, and it
        was what made the slowest frames (bench/top.py); the young generations still run as usual."""
        gc.collect()
        gc.freeze()
        self._gc_threshold = gc.get_threshold()
        gc.set_threshold(self._gc_threshold[0], self._gc_threshold[1], self._gc_threshold[2] * 10)

    @work(thread=True, exclusive=False)
    def _fetch(self, which: set[str], diffstats: set[str]) -> None:
        try:
            if which:
                self.backend.inbox.append(("lists", self.backend.fetch(which)))
            for wid in diffstats:
                try:
                    self.backend.inbox.append(("diffstat", (wid, self.backend.diffstat(wid))))
                except ChkdError:
                    pass
        except ChkdError as exc:
            self.backend.inbox.append(("error", exc.message))
        finally:
            self._fetching = False

    def render_board(self) -> bool:
        d = self.board.take_dirty()
        if not d.any():
            return False
        now = _now_ms()
        if d.layout:
            self._sync_cards()
        for wid in d.workers:
            card = self.cards.get(wid)
            w = self.board.workers.get(wid)
            if card is not None and w is not None:
                card.show(w, now)
        if d.header:
            self.query_one("#header", TextLine).set_text(
                Text(visible(self.board.header(now)), no_wrap=True, overflow="ellipsis")
            )
        if d.tasks:
            self._render_tasks()
        if d.merges:
            self._render_merges()
        if d.radar:
            self._render_radar()
        return True

    def _age_tick(self) -> None:
        """Ages and elapsed times move on without events: each live card is touched about once a
        second, a tenth of them per tick, so 100 cards never repaint in the same frame."""
        slots = max(1, round(self.fps or FPS))
        self._age_slot = (self._age_slot + 1) % slots
        now = _now_ms()
        for i, (wid, card) in enumerate(self.cards.items()):
            if i % slots != self._age_slot:
                continue
            w = self.board.workers.get(wid)
            if w is not None and w.status in M.ACTIVE | {"waiting"}:
                card.show(w, now)

    def _sync_cards(self) -> None:
        grid = self.query_one("#cards", Grid)
        order = self.board.card_order()
        gone = [wid for wid in self.cards if wid not in self.board.workers]
        for wid in gone:
            self.cards.pop(wid).remove()
        new = [WorkerCard(wid) for wid in order if wid not in self.cards]
        for card in new:
            self.cards[card.worker_id] = card
        if new:
            grid.mount(*new)
        now = _now_ms()
        for card in new:
            card.show(self.board.workers[card.worker_id], now)
        self.query_one("#empty", Static).display = not self.board.workers
        if self.selected not in self.board.workers:
            self._select(order[0] if order else None)

    def _render_tasks(self) -> None:
        board = self.board
        running = {w.task_id: w.id for w in board.workers.values() if w.task_id and w.status in M.ACTIVE | {"waiting"}}
        rows: dict[str, tuple[str, ...]] = {}
        for key, t in board.tasks.items():
            rows[key] = (
                visible(t.id),
                M.task_state(t),
                f"P{t.priority}",
                visible(t.title),
                visible(", ".join(t.depends_on)) or "-",
                running.get(t.id, t.claimed_by or "") or "",
            )
        self.query_one("#tasks", RowList).set_rows(board.task_order(), rows)

    def _render_merges(self) -> None:
        table = self.query_one("#merges", DataTable)
        table.clear()
        merges = sorted(self.board.merges.values(), key=lambda m: (m.status not in M.OPEN_MERGES, -m.id))
        for m in merges[:200]:
            detail = (
                self.board.diffstats.get(m.worker_id, "").strip().splitlines()[-1:]
                if m.status == "awaiting_review"
                else []
            )
            detail_text = detail[0] if detail else ", ".join(m.conflict_files[:5])
            table.add_row(
                str(m.id),
                m.worker_id,
                visible(m.task_id or "-"),
                m.status.replace("_", " "),
                m.strategy,
                visible(detail_text),
            )

    def _render_radar(self) -> None:
        table = self.query_one("#radar", DataTable)
        table.clear()
        for o in self.board.overlaps:
            table.add_row(
                visible(o.repo),
                f"{o.a} ↔ {o.b or 'target'}",
                "⚠ yes" if o.conflict else "no",
                visible(", ".join((o.conflict_files or o.files)[:6])),
            )

    # -- selection --------------------------------------------------------------------------------
    def _select(self, wid: str | None) -> None:
        if self.selected in self.cards:
            self.cards[self.selected].remove_class("selected")
        self.selected = wid
        if wid in self.cards:
            self.cards[wid].add_class("selected")
            self.cards[wid].scroll_visible()

    def on_worker_card_selected(self, message: WorkerCard.Selected) -> None:
        self._select(message.worker_id)

    def action_select(self, step: int) -> None:
        order = self.board.card_order()
        if not order:
            return
        i = order.index(self.selected) if self.selected in order else -step
        self._select(order[(i + step) % len(order)])

    def _need_worker(self) -> str | None:
        if self.selected is None:
            self.notify("Select a worker first (w, or click its card).", severity="warning")
        return self.selected

    # -- actions ----------------------------------------------------------------------------------
    @work(thread=True, group="actions")
    def request(self, body: Any, done: str | Callable[[Any], str]) -> Any:
        """Send one request off the UI thread; its refusal becomes a notification."""
        try:
            result = self.backend.call(body, timeout=60)
        except ChkdError as exc:
            severity = "warning" if exc.code == "nothing_ready" else "error"
            self.call_from_thread(self.notify, visible(exc.message), title="chkd refused", severity=severity)
            return None
        except Exception as exc:  # noqa: BLE001 - a bug in a request is still only a notification
            self.call_from_thread(self.notify, f"The request failed ({type(exc).__name__}: {exc}).", severity="error")
            return None
        if done:
            self.call_from_thread(self.notify, visible(done(result) if callable(done) else done))
        return result

    def action_spawn_next(self) -> None:
        self.request(Spawn(next=True, repo=self.repo), _spawned)

    def action_spawn_chosen(self) -> None:
        key = None
        if self.query_one("#panes", TabbedContent).active == "tab-tasks":
            key = self.query_one("#tasks", RowList).cursor_key
        task = self.board.tasks.get(key or "")
        if task is not None and M.task_state(task) == "ready":
            self.request(Spawn(task_id=task.id, repo=task.repo), _spawned)
            return

        def chosen(task_id: str | None) -> None:
            if task_id:
                self.request(Spawn(task_id=task_id, repo=self.repo), _spawned)

        self.push_screen(Prompt("Spawn which task? (its id)", "T-1"), chosen)

    def action_pause(self) -> None:
        if wid := self._need_worker():
            self.request(Pause(worker=wid), f"Paused {wid}.")

    def action_resume(self) -> None:
        if wid := self._need_worker():
            self.request(Resume(worker=wid), f"Resumed {wid}.")

    def action_pause_all(self) -> None:
        self.request(Pause(all=True, repo=self.repo), lambda r: f"Paused {len(r.workers)} workers.")

    def action_resume_all(self) -> None:
        self.request(Resume(all=True, repo=self.repo), lambda r: f"Resumed {len(r.workers)} workers.")

    def action_merge(self, strategy: str) -> None:
        if wid := self._need_worker():
            self.request(
                Merge(worker=wid, strategy="review" if strategy == "review" else "auto"),
                f"Merge of {wid} queued ({strategy}).",
            )

    def action_approve(self) -> None:
        if wid := self._need_worker():
            self.request(Approve(worker=wid), f"Approved {wid}'s merge.")

    def action_reject(self) -> None:
        wid = self._need_worker()
        if wid is None:
            return

        def answered(reason: str | None) -> None:
            if reason is not None:
                self.request(Reject(worker=wid, reason=reason), f"Rejected {wid}'s merge; it is working again.")

        self.push_screen(Prompt(f"Reject {wid}'s merge: why? (the agent is told; Escape cancels)", "reason"), answered)

    def action_abort(self) -> None:
        wid = self._need_worker()
        if wid is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.request(Abort(worker=wid), f"Aborting {wid}; its worktree stays.")

        self.push_screen(
            Confirm(
                f"Abort {wid}? Its agent is stopped (SIGTERM, then SIGKILL); uncommitted work stays in the worktree."
            ),
            answered,
        )

    def action_update_worker(self) -> None:
        if wid := self._need_worker():
            self.request(Update(worker=wid), f"Brought the target into {wid}.")

    def action_diff(self) -> None:
        if wid := self._need_worker():
            self._show_diff(wid)

    @work(thread=True, group="panes")
    def _show_diff(self, wid: str) -> None:
        from chkd.protocol.messages import Diff

        try:
            text = self.backend.call(Diff(worker=wid), timeout=60).text
        except ChkdError as exc:
            self.call_from_thread(self.notify, visible(exc.message), severity="error")
            return
        self.call_from_thread(self._show_text, ("diff", wid), text or "(no changes against the target)")

    def _show_text(self, pane: tuple[str, str], text: str) -> None:
        self.worker_pane = pane
        log = self.query_one("#worker-log", RichLog)
        log.clear()
        log.write(Text(f"── {pane[0]} of {pane[1]} ──\n" + visible_lines(text)))
        self.query_one("#panes", TabbedContent).active = "tab-worker"

    def action_log(self) -> None:
        wid = self._need_worker()
        if wid is None:
            return
        self.worker_pane = ("log", wid)
        self._log_offset = 0
        log = self.query_one("#worker-log", RichLog)
        log.clear()
        log.write(Text(f"── log of {wid} ──"))
        path = self._log_path(wid)
        try:
            self._log_offset = max(0, os.path.getsize(path) - LOG_TAIL)
        except OSError:
            pass
        self._follow_log()
        self.query_one("#panes", TabbedContent).active = "tab-worker"

    def _log_path(self, wid: str) -> str:
        w = self.board.workers.get(wid)
        return (w.log_path if w and w.log_path else None) or str(self.paths.worker_log(wid))

    def _follow_log(self) -> None:
        assert self.worker_pane is not None
        try:
            with open(self._log_path(self.worker_pane[1]), "rb") as fh:
                fh.seek(self._log_offset)
                chunk = fh.read(LOG_TAIL)
        except OSError:
            return
        if chunk:
            self._log_offset += len(chunk)
            self.query_one("#worker-log", RichLog).write(Text(visible_lines(chunk.decode("utf-8", "replace"))))

    # -- actions that run a chkdctl command (the terminal's, or one that reports in words) -------
    def action_send(self) -> None:
        wid = self._need_worker()
        if wid is None:
            return

        def answered(text: str | None) -> None:
            if text:
                self._run_ctl(["send", wid, text], f"Sent to {wid}.")

        self.push_screen(Prompt(f"Message to {wid}:"), answered)

    def action_attach(self) -> None:
        wid = self._need_worker()
        if wid is None:
            return
        with self.suspend():
            subprocess.run(self._ctl_argv(["attach", wid]), check=False)

    def action_autopilot(self) -> None:
        on = self.board.facts.get("autopilot") is True
        self._run_ctl(
            ["run", "--stop"] if on else ["run", *(["--repo", self.repo] if self.repo else [])],
            "Autopilot stopped." if on else "Autopilot started.",
        )

    def _ctl_argv(self, args: list[str]) -> list[str]:
        home = ["--home", str(self.paths.home)] if self.paths.home is not None else []
        return [*installed_argv("chkdctl", "chkd.client.cli"), *home, *args]

    @work(thread=True, group="actions")
    def _run_ctl(self, args: list[str], done: str) -> None:
        proc = subprocess.run(
            self._ctl_argv(args),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "CHKD_NO_AUTOSTART": "1"},
        )
        if proc.returncode == 0:
            self.call_from_thread(self.notify, done)
        else:
            said = (proc.stderr or proc.stdout).strip().splitlines()
            self.call_from_thread(
                self.notify, visible(said[0] if said else f"chkdctl exited {proc.returncode}"), severity="error"
            )


def _spawned(r: WorkerResult) -> str:
    return f"Spawned {r.worker.id} for {r.worker.task_id}."


def visible_lines(text: str) -> str:
    """Each line made visible (escapes shown as text), the line breaks kept."""
    return "\n".join(visible(line) for line in text.splitlines())


def run_top(target: Any, *, repo: str | None = None) -> None:
    """Run the dashboard in this terminal until the user quits. `target` is a `Paths` or a
    `Client` (its paths are used; the dashboard opens its own connections)."""
    paths = target if isinstance(target, Paths) else target.paths
    TopApp(paths, repo=repo).run()
