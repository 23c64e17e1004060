"""Terminal escapes in titles, messages and file names are shown as text (`\\x1b`), never sent to the
terminal raw: by every text output of chkdctl and by the demo screen. JSON stays JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from chkd.client import output
from chkd.client.commands.liveness import format_event
from chkd.client.demo import Screen
from chkd.client.output import fail, table
from chkd.protocol.events import TaskAdded, Unreadable
from chkd.protocol.messages import Event, RepoAdd, TaskAdd, event_of

from conftest import BIN, Daemon, wait_for

#: A colour, an OSC window title ending in BEL, a carriage return, a cursor move and a bidi override.
HOSTILE = "pwn \x1b[31mred\x1b[0m \x1b]0;owned\x07 \r\x1b[2Aup \u202etxt.exe"
RAW = ("\x1b", "\x07", "\r", "\u202e")


def assert_inert(text: str) -> None:
    assert not any(ch in text for ch in RAW), repr(text)
    assert "\\x1b[31mred" in text and "\\x07" in text and "\\x0d" in text and "\\u202e" in text, repr(text)


def test_visible_renders_controls_as_text_and_keeps_unicode() -> None:
    visible = output.visible
    assert visible("a\x1b[1mb\x07\r\n\t\x7f\x9b") == "a\\x1b[1mb\\x07\\x0d\\x0a\\x09\\x7f\\x9b"
    assert visible("naïve 日本 🟢 👩‍💻 ✏️ back\\slash") == "naïve 日本 🟢 👩‍💻 ✏️ back\\slash"
    assert visible("\u202eevil\u2066") == "\\u202eevil\\u2066"


def test_table_cells_are_visible() -> None:
    out = table([["T-1", HOSTILE]], ["ID", "TITLE"])
    assert_inert(out)
    assert len(out.splitlines()) == 2


def test_event_lines_are_visible() -> None:
    ev = Event(
        seq=1,
        at=int(time.time() * 1000),
        kind="task.added",
        repo="proj",
        task_id="T-1",
        data=Unreadable(fields={"title": HOSTILE, "x\x1b": "y"}),
    )
    assert_inert(format_event(ev))
    ev = event_of(
        TaskAdded(title=HOSTILE, tags=[HOSTILE]), seq=1, at=int(time.time() * 1000), repo="proj", task_id="T-1"
    )
    line = format_event(ev)
    assert_inert(line)
    assert "\n" not in line


def test_the_demo_narration_shows_log_lines_visibly_and_keeps_them_while_top_is_shown() -> None:
    lines: list[str] = []
    screen = Screen(quiet=True, out=lines.append)  # top owns the terminal: nothing printed
    screen.log(f"task T-1 {HOSTILE}")
    assert lines == []
    screen.speak()  # top was quit early: the kept lines, then every new one
    screen.log(f"w1 {HOSTILE}")
    assert len(lines) == 2
    for line in lines:
        assert "\x1b" not in line and "\x07" not in line and "\\x1b[31mred" in line


def test_fail_prints_the_sentence_visibly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        fail(f"no such thing: {HOSTILE}")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\\x1b[31m" in err


@pytest.mark.timeout(60)
def test_every_text_output_shows_a_hostile_title_visibly_and_json_keeps_it(daemon: Daemon, repo: Path) -> None:
    daemon.call(RepoAdd(path=str(repo)))
    daemon.call(TaskAdd(title=HOSTILE, id="E-1", repo="proj", description=f"line one\n{HOSTILE}"))
    res = daemon.ctl("spawn", "E-1", "--cmd", f"{BIN / 'chkd-demo-agent'} --steps 1 --step-s 0", cwd=repo)
    assert res.code == 0, res
    assert not any(ch in res.out for ch in RAW) and "\\x1b[31mred" in res.out, res.out  # (titles lose \r: whitespace)
    wait_for(lambda: daemon.ctl("--json", "worker", "show", "w1").json()["status"] == "done", 20, what="done")
    outputs = {
        "task list": daemon.ctl("task", "list", cwd=repo),
        "task show": daemon.ctl("task", "show", "E-1", cwd=repo),
        "workers": daemon.ctl("workers"),
        "worker show": daemon.ctl("worker", "show", "w1"),
        "events": daemon.ctl("events", "-n", "500"),
        "watch": daemon.ctl("watch", "--since", "0", "--idle-exit", "0.5"),
    }
    for name, out in outputs.items():
        assert out.code == 0, (name, out)
        assert not any(ch in out.out for ch in RAW), (name, out.out)
        assert "\\x1b[31mred" in out.out, (name, out.out)
    shown = json.loads(daemon.ctl("--json", "task", "show", "E-1", cwd=repo).out)
    assert shown["task"]["title"] == " ".join(HOSTILE.split())  # raw in JSON (titles lose \r: it is whitespace)
    # error sentences too (the daemon's, quoting what was typed)
    bad = daemon.ctl("task", "show", "\x1b]0;x\x07", cwd=repo)
    assert bad.code == 1 and "\x1b" not in bad.err and "\x07" not in bad.err and "\\x1b]0;x\\x07" in bad.err


def test_logs_says_it_prints_the_agent_output_raw(daemon: Daemon) -> None:
    res = daemon.ctl("logs", "--help")
    assert res.code == 0 and "raw" in " ".join(res.out.split())
