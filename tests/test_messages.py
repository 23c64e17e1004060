"""Messages and the Claude Code hooks: `chkdctl send`/`inbox`, and `chkdctl hook ...` (stdin JSON,
CHKD_WORKER_ID) as activity that hands each unread message to the model exactly once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from chkd.protocol.messages import (
    Events,
    Inbox,
    Spawn,
    TaskAdd,
    WorkerInfo,
    WorkerShow,
)

from conftest import Daemon, busy_for

SLEEPER = busy_for(120)
POST_TOOL_USE = json.dumps(
    {
        "session_id": "3f1c",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/tmp",
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "git status"},
        "tool_response": {"stdout": ""},
    }
)


def spawn(daemon: Daemon, task: str) -> WorkerInfo:
    daemon.call(TaskAdd(title=f"task {task}", repo="proj", id=task))
    return daemon.call(Spawn(repo="proj", task_id=task, cmd=SLEEPER)).worker


def show(daemon: Daemon, wid: str) -> WorkerInfo:
    return daemon.call(WorkerShow(worker=wid)).worker


def hook(daemon: Daemon, event: str, wid: str | None, stdin: str = POST_TOOL_USE):  # type: ignore[no-untyped-def]
    return daemon.ctl("hook", event, input=stdin, env={"CHKD_WORKER_ID": wid} if wid else None)


def test_a_message_reaches_the_model_once_through_post_tool_use(daemon: Daemon, proj: Path) -> None:
    w = spawn(daemon, "T-1")
    assert show(daemon, w.id).activity_at is None
    sent = daemon.ctl("send", w.id, "please", "also update the README")
    assert sent.code == 0, sent
    assert f"sent to {w.id}" in sent.out

    first = hook(daemon, "post-tool-use", w.id)
    assert first.code == 0, first
    out = json.loads(first.out)
    assert out["hookSpecificOutput"]["hookEventName"] == "PostToolUse"
    context = out["hookSpecificOutput"]["additionalContext"]
    assert "please also update the README" in context and "from the user" in context

    again = hook(daemon, "post-tool-use", w.id)
    assert again.code == 0 and again.out == "", again  # delivered once: nothing the second time

    after = show(daemon, w.id)
    assert after.activity_at is not None and after.status == "working"  # the hook counts as activity
    msgs = daemon.call(Inbox(worker=w.id)).messages
    assert [m.text for m in msgs] == ["please also update the README"] and msgs[0].read_at
    inbox = daemon.ctl("inbox", w.id)
    assert "read" in inbox.out and "please also update the README" in inbox.out
    kinds = [e.kind for e in daemon.call(Events(worker=w.id)).events]
    assert "message.sent" in kinds and "message.delivered" in kinds and kinds.count("worker.hook") == 2


def test_a_notification_hook_makes_the_worker_wait_for_you_until_its_next_tool_use(daemon: Daemon, proj: Path) -> None:
    w = spawn(daemon, "T-1")
    daemon.ctl("send", w.id, "not for these hooks")
    note = hook(
        daemon,
        "notification",
        w.id,
        json.dumps({"hook_event_name": "Notification", "message": "Claude needs your permission to use Bash"}),
    )
    assert note.code == 0 and note.out == "", note
    waiting = show(daemon, w.id)
    assert waiting.status == "waiting" and waiting.message == "Claude needs your permission to use Bash"
    listed = daemon.ctl("workers", "--waiting")
    assert w.id in listed.out and "Claude needs your permission to use Bash" in listed.out, listed
    (change,) = [
        e.data for e in daemon.call(Events(worker=w.id)).events if e.kind == "worker.status" and e.data.to == "waiting"
    ]
    assert change.question == "Claude needs your permission to use Bash"
    before = waiting.activity_at
    stop = hook(daemon, "stop", w.id, json.dumps({"hook_event_name": "Stop", "stop_hook_active": False}))
    assert stop.code == 0 and stop.out == "", stop
    after_stop = show(daemon, w.id)
    assert after_stop.status == "waiting" and after_stop.activity_at >= before  # the end of a turn is no answer
    # neither hook delivered the message: it waits for the next tool use, which also ends the wait
    assert [m.read_at for m in daemon.call(Inbox(worker=w.id)).messages] == [None]
    used = hook(daemon, "post-tool-use", w.id)
    assert "not for these hooks" in used.out, used
    assert show(daemon, w.id).status == "working"


def test_a_hook_never_breaks_the_agent(daemon: Daemon, proj: Path) -> None:
    w = spawn(daemon, "T-1")
    garbage = hook(daemon, "post-tool-use", w.id, "{not json")
    assert garbage.code == 0 and garbage.out == "", garbage
    assert show(daemon, w.id).activity_at is not None  # unreadable stdin still counts as activity
    outside = hook(daemon, "post-tool-use", None)
    assert outside.code == 0 and outside.out == "" and "CHKD_WORKER_ID" in outside.err, outside
    unknown = hook(daemon, "stop", "w999")
    assert unknown.code == 0 and "w999" in unknown.err and "Traceback" not in unknown.err, unknown
    daemon.stop()
    down = hook(daemon, "post-tool-use", w.id)
    assert down.code == 0 and down.out == "" and "not running" in down.err, down
    assert "Traceback" not in down.err


def test_send_all_reaches_each_live_worker_once_and_refusals_are_sentences(daemon: Daemon, proj: Path) -> None:
    a, b = spawn(daemon, "T-1"), spawn(daemon, "T-2")
    res = daemon.ctl("send", "--all", "stop", "soon", "--json")
    assert res.code == 0, res
    assert sorted(m["to_worker"] for m in res.json()) == sorted([a.id, b.id])
    for w in (a, b):
        context = json.loads(hook(daemon, "post-tool-use", w.id).out)["hookSpecificOutput"]["additionalContext"]
        assert "stop soon" in context and "to all workers" in context
        assert hook(daemon, "post-tool-use", w.id).out == ""
    unknown = daemon.ctl("send", "w999", "hello")
    assert unknown.code == 1 and "No worker has the id 'w999'" in unknown.err, unknown
    empty = daemon.ctl("send", a.id, "   ")
    assert empty.code == 1 and "empty" in empty.err, empty
    usage = daemon.ctl("send", a.id)
    assert usage.code == 2, usage


def test_chkdctl_hook_and_mcp_install_never_import_the_mcp_sdk(tmp_path: Path) -> None:
    """The hook runs after every tool call: it stays as lean as chkdctl (no mcp, pydantic, anyio)."""
    import os
    import subprocess

    probe = (
        "import sys\nfrom chkd.client.cli import main\n"
        "for argv in (['hook', 'post-tool-use'], ['mcp', 'install', '--print']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types', 'pydantic', 'anyio'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = {**os.environ, "CHKD_HOME": str(tmp_path / "home"), "CHKD_WORKER_ID": "w1", "CHKD_NO_AUTOSTART": "1"}
    proc = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        input="{}",
        timeout=30,
    )
    assert "HEAVY []" in proc.stderr, proc.stderr
