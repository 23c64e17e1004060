"""Events: the history query, `chkdctl events`, and `chkdctl watch` (live, filtered, gap-free,
across a daemon restart)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import Events, Ping, RepoAdd, TaskAdd

from conftest import BIN, Daemon, make_repo


def add_repos(daemon: Daemon, tmp_path: Path, names: list[str]) -> None:
    for name in names:
        daemon.call(RepoAdd(path=str(make_repo(tmp_path / name))))


def test_history_query_filters_and_reports_last_seq(daemon: Daemon, tmp_path: Path) -> None:
    add_repos(daemon, tmp_path, ["a", "b"])
    daemon.call(TaskAdd(title="first", repo="a", id="T-1"))
    daemon.call(TaskAdd(title="second", repo="b", id="T-2"))
    everything = daemon.call(Events())
    seqs = [e.seq for e in everything.events]
    assert seqs == list(range(1, len(seqs) + 1)) and everything.last_seq == seqs[-1]
    assert [e.kind for e in everything.events[:2]] == ["repo.added", "repo.added"]
    only_b = daemon.call(Events(repo="b"))
    assert only_b.events and {e.repo for e in only_b.events} == {"b"}
    assert only_b.last_seq == everything.last_seq  # the whole table's newest, not the page's
    task = daemon.call(Events(task="T-1"))
    assert [e.kind for e in task.events] == ["task.added"] and task.events[0].data.title == "first"
    page = daemon.call(Events(since=1, limit=2))
    assert [e.seq for e in page.events] == [2, 3]
    tail = daemon.call(Events(tail=2))
    assert [e.seq for e in tail.events] == seqs[-2:]
    assert daemon.call(Events(since=everything.last_seq)).events == []


def test_bad_query_is_a_sentence(daemon: Daemon) -> None:
    with pytest.raises(ChkdError) as err:
        daemon.call(Events(since=-1))
    assert err.value.code == "bad_request"


def test_chkdctl_events_lists_history(daemon: Daemon, tmp_path: Path) -> None:
    empty = daemon.ctl("events")
    assert empty.code == 0 and empty.out.strip() == "No events yet."
    add_repos(daemon, tmp_path, ["a", "b", "c"])
    res = daemon.ctl("events", "-n", "2")
    assert res.code == 0, res
    lines = res.out.strip().splitlines()
    assert len(lines) == 2
    assert "#2" in lines[0] and "repo.added" in lines[0] and "b" in lines[0]
    assert "#3" in lines[1] and "📁" in lines[1]
    js = daemon.ctl("--json", "events", "-n", "10").json()
    assert [e["seq"] for e in js["events"]] == [1, 2, 3] and js["last_seq"] == 3
    assert daemon.ctl("events", "-n", "0").code == 2  # usage error


def _watch(daemon: Daemon, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CHKD_HOME": str(daemon.home), "CHKD_NO_AUTOSTART": "1"}
    return subprocess.Popen(
        [str(BIN / "chkdctl"), "watch", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def test_watch_prints_readable_lines_and_filters(daemon: Daemon, tmp_path: Path) -> None:
    add_repos(daemon, tmp_path, ["a"])
    daemon.call(TaskAdd(title="one", repo="a", id="T-1"))
    daemon.call(TaskAdd(title="two", repo="a", id="T-2"))
    res = daemon.ctl("watch", "--since", "0", "--task", "T-2", "--idle-exit", "1")
    assert res.code == 0, res
    lines = res.out.strip().splitlines()
    assert len(lines) == 1 and "task.added" in lines[0] and "task T-2" in lines[0] and "title=two" in lines[0]


def test_watch_streams_new_events_live_as_json(daemon: Daemon, tmp_path: Path) -> None:
    add_repos(daemon, tmp_path, ["a"])
    now = daemon.call(Ping()).last_seq
    proc = _watch(daemon, "--json", "--since", str(now))  # from now on, with no race against its start-up
    try:
        daemon.call(TaskAdd(title="live one", repo="a", id="L-1"))
        daemon.call(TaskAdd(title="live two", repo="a", id="L-2"))
        out = _read_lines(proc, 2)
    finally:
        _, err = _stop(proc)
    assert proc.returncode == 0 and err == ""  # Ctrl-C ends a watch quietly
    got = [json.loads(line) for line in out]
    assert [g["task_id"] for g in got] == ["L-1", "L-2"]
    assert got[0]["seq"] == now + 1 and got[1]["seq"] == now + 2 and got[0]["kind"] == "task.added"


def test_watch_starts_from_now_by_default(daemon: Daemon, tmp_path: Path) -> None:
    add_repos(daemon, tmp_path, ["a"])
    res = daemon.ctl("watch", "--idle-exit", "0.5")
    assert res.code == 0 and res.out == ""  # history is `events` or `--since`, not replayed by default


def _read_lines(proc: subprocess.Popen[str], n: int, timeout: float = 10.0) -> list[str]:
    """Up to `n` lines of the watcher's stdout (a reader thread: no buffered-select traps)."""
    import queue
    import threading

    assert proc.stdout is not None
    q: queue.Queue[str] = getattr(proc, "_lines", None) or queue.Queue()
    if not hasattr(proc, "_lines"):
        proc._lines = q  # type: ignore[attr-defined]
        threading.Thread(target=lambda: [q.put(line.rstrip("\n")) for line in proc.stdout], daemon=True).start()
    lines: list[str] = []
    try:
        while len(lines) < n:
            lines.append(q.get(timeout=timeout))
    except queue.Empty:
        pass
    return lines


@pytest.mark.timeout(60)
def test_watcher_sees_consecutive_seqs_across_a_daemon_restart(daemon: Daemon, tmp_path: Path) -> None:
    add_repos(daemon, tmp_path, ["a"])
    proc = _watch(daemon, "--json", "--since", "0")
    try:
        first = _read_lines(proc, 1)
        assert first, "the watcher printed nothing"
        for i in range(5):
            daemon.call(TaskAdd(title=f"before {i}", repo="a", id=f"B-{i}"))
        daemon.kill()  # a crash, not a clean stop
        daemon.start()
        for i in range(5):
            daemon.call(TaskAdd(title=f"after {i}", repo="a", id=f"A-{i}"))
        last = daemon.call(Ping()).last_seq
        rest = _read_lines(proc, last - 1, timeout=20)
    finally:
        _, err = _stop(proc)
    assert "Traceback" not in err, err
    seqs = [json.loads(line)["seq"] for line in first + rest]
    assert seqs == list(range(1, last + 1))
    tasks = [json.loads(line).get("task_id") for line in first + rest]
    assert "B-4" in tasks and "A-0" in tasks and "A-4" in tasks


def test_watch_without_a_daemon_is_one_sentence(chkd_home: Path) -> None:
    d = Daemon(chkd_home)
    res = d.ctl("watch")
    assert res.code == 1 and "Traceback" not in res.err
    assert res.err.startswith("chkdctl: chkdd is not running")
