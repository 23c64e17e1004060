"""`chkdctl top`: the Textual dashboard piloted (App.run_test) against a real daemon and demo
workers, and `top --web` loaded in headless Chromium."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chkd.client.tui.app import TopApp

from conftest import BIN, DEFAULT_TEST_CONFIG, Daemon, git, wait_for

SIZE = (170, 50)


@pytest.fixture
def daemon_config() -> str:
    """`n` (spawn next) uses the default agent: a one-step demo agent here."""
    return (
        'default_agent = "quick"\n'
        + DEFAULT_TEST_CONFIG
        + '[agents.quick]\ncmd = ["chkd-demo-agent", "--steps", "1", "--step-s", "0.05"]\n'
    )


async def until(pilot: Any, cond: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await pilot.pause(0.05)


def card(app: TopApp, wid: str) -> str:
    """What the worker's card shows (its text), or '' when there is no card."""
    c = app.cards.get(wid)
    return c.shown[0] if c is not None and c.shown else ""  # type: ignore[index]


def status_of(daemon: Daemon, wid: str) -> str:
    return daemon.ctl("--json", "worker", "show", wid).json()["status"]


def spawn(daemon: Daemon, repo: Path, task: str, cmd: str) -> str:
    res = daemon.ctl("--json", "spawn", task, "--cmd", cmd, cwd=repo)
    assert res.code == 0, res
    return res.json()["id"]


def test_cards_follow_workers_and_keys_act(daemon: Daemon, repo: Path) -> None:
    """Cards appear and change icon as workers pause, finish, merge and conflict; the keys
    (and a click) pause, resume, merge and abort; a refusal is a notification."""
    for title, tid in (("Long one", "T-L"), ("Notes A", "T-A"), ("Notes B", "T-B")):
        assert daemon.ctl("task", "add", title, "--id", tid, cwd=repo).code == 0
    long_w = spawn(daemon, repo, "T-L", "chkd-demo-agent --steps 600 --step-s 0.1")

    async def scenario() -> None:
        app = TopApp(daemon.paths)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: card(app, long_w).startswith("🟢"), what="a working card")
            assert "T-L Long one" in card(app, long_w)
            assert "1 active" in app.board.header()
            assert app.selected == long_w

            await pilot.press("m")  # merge a working worker: refused by the daemon
            await until(
                pilot,
                lambda: any(s == "error" and "only a done worker can be merged" in m for s, m in app.notices),
                what="the refusal as a notification",
            )

            await pilot.press("p")
            await until(pilot, lambda: card(app, long_w).startswith("🟡"), what="the paused icon")
            assert status_of(daemon, long_w) == "paused"
            await pilot.press("r")
            await until(pilot, lambda: card(app, long_w).startswith("🟢"), what="working again")

            # two workers edit the same file: the first merges, the second conflicts
            a = spawn(daemon, repo, "T-A", "chkd-demo-agent --steps 1 --step-s 0.05 --conflict-file NOTES.md")
            b = spawn(daemon, repo, "T-B", "chkd-demo-agent --steps 1 --step-s 0.05 --conflict-file NOTES.md")
            await until(
                pilot, lambda: card(app, a).startswith("✅") and card(app, b).startswith("✅"), what="both done"
            )
            await pilot.click(f"#card-{a}")
            assert app.selected == a
            await pilot.press("m")
            await until(pilot, lambda: a not in app.cards, what="the merged card to go")
            assert "NOTES.md" in git(repo, "ls-tree", "--name-only", "main")
            await pilot.click(f"#card-{b}")
            await pilot.press("m")
            await until(pilot, lambda: card(app, b).startswith("⚠"), what="the conflict icon")
            await until(
                pilot,
                lambda: any(m.status == "conflict" and m.worker_id == b for m in app.board.merges.values()),
                what="the conflict in the merge pane",
            )

            # abort asks first; "n" keeps the worker, "y" aborts it
            await pilot.click(f"#card-{long_w}")
            await pilot.press("x")
            await pilot.press("n")
            await pilot.pause(0.3)
            assert status_of(daemon, long_w) == "working"
            await pilot.press("x")
            await pilot.press("y")
            await until(pilot, lambda: card(app, long_w).startswith("⛔"), what="the aborted icon")

            rows = app.board.tasks
            assert {t.id for t in rows.values()} == {"T-L", "T-A", "T-B"}
            feed_kinds = {ev.kind for ev in app.board.feed}
            assert {"worker.status", "merge.merged", "merge.conflict"} <= feed_kinds

    asyncio.run(scenario())


def test_spawn_next_reject_with_reason_and_diff(daemon: Daemon, repo: Path) -> None:
    assert daemon.ctl("task", "add", "Ship it", "--id", "T-S", cwd=repo).code == 0

    async def scenario() -> None:
        app = TopApp(daemon.paths)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.board.tasks, what="the task list")
            await pilot.press("n")  # spawn the next ready task with the default agent
            await until(pilot, lambda: any(card(app, w).startswith("✅") for w in app.cards), what="a done worker")
            wid = next(iter(app.cards))
            await pilot.press("v")  # merge for review
            await until(
                pilot,
                lambda: any(m.status == "awaiting_review" for m in app.board.merges.values()),
                what="the merge awaiting review",
            )
            await until(pilot, lambda: wid in app.board.diffstats, what="the diffstat of the review")
            assert "chkd-demo-T-S.txt" in app.board.diffstats[wid]
            await pilot.press("d")
            await until(pilot, lambda: app.worker_pane == ("diff", wid), what="the diff pane")
            await pilot.press("j")  # reject: asks why
            for ch in "no tests":
                await pilot.press("space" if ch == " " else ch)
            await pilot.press("enter")
            await until(
                pilot, lambda: any(m.status == "rejected" for m in app.board.merges.values()), what="the rejected merge"
            )
            events = daemon.ctl("--json", "events", "-n", "200").out
            assert "no tests" in events

    asyncio.run(scenario())


def test_reconnects_after_a_daemon_restart_and_misses_nothing(daemon: Daemon, repo: Path) -> None:
    assert daemon.ctl("task", "add", "Before", "--id", "T-1", cwd=repo).code == 0

    async def scenario() -> None:
        app = TopApp(daemon.paths)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: any(t.id == "T-1" for t in app.board.tasks.values()), what="the first task")
            await until(pilot, lambda: app.board.connected, what="connected")
            daemon.stop()
            await until(pilot, lambda: not app.board.connected, what="the lost connection noticed")
            assert "reconnecting" in app.board.header()
            daemon.start()
            # straight away, before the dashboard's subscription is back: the event is not lost
            assert daemon.ctl("task", "add", "After", "--id", "T-2", cwd=repo).code == 0
            await until(
                pilot, lambda: any(t.id == "T-2" for t in app.board.tasks.values()), what="the task added meanwhile"
            )
            await until(pilot, lambda: app.board.connected, what="connected again")
            last = daemon.ctl("--json", "events", "-n", "1").json()["last_seq"]
            await until(pilot, lambda: app.board.cursor >= last, what="every event applied")
            added = [ev for ev in app.board.feed if ev.kind == "task.added"]
            assert [ev.task_id for ev in added][-1] == "T-2"
            assert len({ev.seq for ev in app.board.feed}) == len(app.board.feed)  # no event twice

    asyncio.run(scenario())


# -- top --web in a browser ------------------------------------------------------------------

#: Headless Chromium that reaches nothing but this machine (the page asks for a web font).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-extensions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
#: Keeps every terminal byte the page receives, so the test can read what xterm.js draws on its canvas.
RECORD_FRAMES = """
(() => {
  const Real = window.WebSocket;
  window.__chkdText = "";
  window.WebSocket = function (...args) {
    const ws = new Real(...args);
    const dec = new TextDecoder();
    ws.addEventListener("message", (e) => {
      if (e.data instanceof ArrayBuffer) window.__chkdText += dec.decode(e.data, {stream: true});
    });
    return ws;
  };
  window.WebSocket.prototype = Real.prototype;
  Object.assign(window.WebSocket, Real);
})();
"""
ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[A-Za-z~]|\x1b[()][A-Za-z0-9]|\x1b[=>]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _cdp_page_text(debug_port: int, url: str, want: Callable[[str], bool], shot: Path, timeout: float) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        targets = await (await http.get(f"http://127.0.0.1:{debug_port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))

            async def cdp(method: str, **params: Any) -> Any:
                mid = next(ids)
                await ws.send_json({"id": mid, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json()
                    if msg.get("id") == mid:
                        return msg.get("result", {})

            await cdp("Page.enable")
            await cdp("Page.addScriptToEvaluateOnNewDocument", source=RECORD_FRAMES)
            await cdp("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            text = ""
            while time.monotonic() < deadline:
                res = await cdp("Runtime.evaluate", expression="window.__chkdText || ''")
                text = ANSI.sub("", res.get("result", {}).get("value", ""))
                if want(text):
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # let xterm.js paint what arrived
            import base64

            png = await cdp("Page.captureScreenshot", format="png")
            shot.write_bytes(base64.b64decode(png["data"]))
            return text


@pytest.mark.needs("chromium")
def test_top_web_shows_the_workers_in_chromium(daemon: Daemon, repo: Path, tmp_path: Path) -> None:
    assert daemon.ctl("task", "add", "Browser visible", "--id", "T-W", cwd=repo).code == 0
    wid = spawn(daemon, repo, "T-W", "chkd-demo-agent --steps 400 --step-s 0.1")
    port = _free_port()
    env = {**os.environ, "CHKD_HOME": str(daemon.home), "CHKD_NO_AUTOSTART": "1"}
    server = subprocess.Popen(
        [str(BIN / "chkdctl"), "top", "--web", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    profile = tmp_path / "chromium-profile"
    browser = None
    try:
        wait_for(lambda: _answers_http(port), 20, what="top --web to listen")
        debug_port = _free_port()
        browser = subprocess.Popen(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--remote-debugging-port={debug_port}",
                f"--user-data-dir={profile}",
                "--window-size=1400,900",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: _answers_http(debug_port, "/json/version"), 30, what="chromium's debugging port")
        shot = tmp_path / "top-web.png"
        text = asyncio.run(
            _cdp_page_text(
                debug_port,
                f"http://localhost:{port}/",
                lambda t: "T-W Browser visible" in t and f"🟢 {wid}" in t,
                shot,
                40,
            )
        )
        assert f"🟢 {wid}" in text and "T-W Browser visible" in text, text[-2000:]
        assert "WORKERS (1 active" in text
        assert shot.stat().st_size > 10_000  # a real picture, kept under the test's temp dir
    finally:
        for proc in (browser, server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait(5)


def _answers_http(port: int, path: str = "/") -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False
