"""The real `claude` CLI as a chkd worker, offline, against the fake Anthropic API (tests/fakeapi).

The CLI comes from CHKD_CLAUDE_BIN (.ci/run installs a pinned @anthropic-ai/claude-code into a cache
and sets it) or `claude` on PATH. Without it these tests fail, saying so (conftest's `needs`
marker): a skipped test checks nothing.

What they prove: the built-in claude profile's argv, MCP config and hooks work with the real CLI —
it edits a file, commits with git, calls chkd_heartbeat and chkd_complete_work through chkd-mcp; the
PostToolUse hook delivers a message into the model's next request; tokens, cost and the session id
land on the worker; the work merges. A subscription out of usage ends `error` with the reset time;
`reject --reason` continues the same session (the fake sees the earlier history and the reason).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeapi.server import FakeAnthropic, Text, ToolUse, Turn, usage_limit_turn

from chkd.protocol.messages import Events, WorkerShow

from conftest import DEFAULT_TEST_CONFIG, Daemon, claude_bin, git, wait_for

CLAUDE = claude_bin()
pytestmark = pytest.mark.needs("claude")

STREAM = ["--output-format", "stream-json", "--verbose"]


@pytest.fixture
def api() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def daemon_config(api: FakeAnthropic, tmp_path: Path) -> str:
    home = tmp_path / "claude-home"  # the CLI's ~/.claude.json and ~/.claude/ stay in the test's directory
    home.mkdir()
    profiles = ""
    for name, oauth in (("claude", False), ("claude-sub", True)):
        env = {**api.env(oauth=oauth), "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude")}
        profiles += f"""
[agents.{json.dumps(name)}]
cmd = {json.dumps([CLAUDE, "-p", "{prompt}", *STREAM])}
resume = {json.dumps([CLAUDE, "--resume", "{session_id}", "-p", "{prompt}", *STREAM])}
output = "claude-stream-json"
claude_hooks = true
env = {{ {", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in env.items())} }}
"""
    return DEFAULT_TEST_CONFIG.replace("stall_timeout_s = 30", "stall_timeout_s = 120") + profiles


def show(daemon: Daemon, wid: str = "w1"):  # type: ignore[no-untyped-def]
    return daemon.call(WorkerShow(worker=wid)).worker


def events(daemon: Daemon, kind: str, wid: str = "w1") -> list:
    return [e for e in daemon.call(Events(worker=wid)).events if e.kind == kind]


def work_turns(worktree: Path, before_add: object = None) -> list[Turn]:
    """Edit, stage, commit, heartbeat, complete, finish: what a worker does."""
    return [
        Turn(
            [
                Text("Writing the file."),
                ToolUse("Write", {"file_path": str(worktree / "hello.txt"), "content": "hello from claude\n"}),
            ]
        ),
        Turn([ToolUse("Bash", {"command": "git add hello.txt", "description": "Stage"})], before=before_add),  # type: ignore[arg-type]
        Turn([ToolUse("Bash", {"command": "git commit -q -m 'Add hello.txt'", "description": "Commit"})]),
        Turn([ToolUse("mcp__chkd__chkd_heartbeat", {"message": "committed hello.txt"})]),
        Turn([ToolUse("mcp__chkd__chkd_complete_work", {"summary": "hello.txt added"})]),
        Turn([Text("Finished.")], input_tokens=1200, output_tokens=80, cache_read_input_tokens=3000),
    ]


def spawn(daemon: Daemon, repo: Path, task: str, agent: str = "claude") -> None:
    res = daemon.ctl("spawn", task, "--title", f"Add hello ({task})", "--agent", agent, cwd=repo)
    assert res.code == 0, res


@pytest.mark.timeout(120)
def test_claude_edits_commits_reports_through_mcp_gets_a_message_and_its_work_merges(
    daemon: Daemon, repo: Path, api: FakeAnthropic
) -> None:
    worktree = repo.parent / "proj-C-1"
    api.turns = work_turns(worktree, before_add=lambda _body: daemon.ctl("send", "w1", "NOTE-7: also say hi"))
    spawn(daemon, repo, "C-1")
    w = wait_for(
        lambda: (x := show(daemon)).status in ("done", "error", "dead") and x.exit_code is not None and x,
        60,
        what="the claude worker to finish",
    )
    assert w.status == "done", (w, Path(w.log_path).read_text()[-3000:])
    main = api.main_requests()
    # the message sent while `git add` was being asked for reached the model with that tool's result
    # (PostToolUse → additionalContext), in the very next request, and only once (the last request's
    # history holds it once: it was not delivered again after later tool calls)
    seen = [i for i, r in enumerate(main) if "NOTE-7: also say hi" in r.text()]
    assert seen and seen[0] == 2, [r.text()[-400:] for r in main]
    assert main[-1].text().count("NOTE-7: also say hi") == 1
    assert "chkd_complete_work" in main[0].text()  # the default prompt says how to finish
    assert git(worktree, "log", "-1", "--format=%s") == "Add hello.txt"
    assert git(worktree, "status", "--porcelain") == ""
    assert (w.session_id, w.model) == (events(daemon, "agent.session")[0].data.session_id, "claude-fake-1")
    assert w.tokens_in >= 1200 + 3000 and w.tokens_out >= 80
    (usage,) = events(daemon, "agent.usage")
    assert w.cost_usd > 0 and usage.data.tokens_in == w.tokens_in and usage.data.cost_usd == w.cost_usd
    assert [e.data.message for e in events(daemon, "worker.heartbeat") if e.data.message] == ["committed hello.txt"]
    assert events(daemon, "worker.hook"), "no hook reported activity"
    assert show(daemon).message  # chkd_complete_work's summary
    res = daemon.ctl("merge", "w1", "--strategy", "auto", cwd=repo)
    assert res.code == 0 and "Merged" in res.out, res
    assert (repo / "hello.txt").read_text() == "hello from claude\n"


@pytest.mark.timeout(60)
def test_a_subscription_out_of_usage_ends_error_with_the_reset_time(
    daemon: Daemon, repo: Path, api: FakeAnthropic
) -> None:
    resets = int(time.time()) + 2 * 3600
    api.turns = [usage_limit_turn(resets)]
    spawn(daemon, repo, "L-1", agent="claude-sub")
    w = wait_for(
        lambda: (x := show(daemon)).status in ("done", "error", "dead") and x.exit_code is not None and x,
        45,
        what="the run to end",
    )
    assert w.status == "error", w
    # the reset time in UTC, with its date when it falls on another day (after 22:00 UTC, it does)
    same_day = time.gmtime(resets)[:3] == time.gmtime()[:3]
    when = time.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M", time.gmtime(resets))
    assert w.last_error.startswith("Claude stopped: ") and f"resets {when} UTC" in w.last_error, w.last_error
    (limit,) = events(daemon, "agent.usage_limit")
    assert limit.data.resets_at == resets * 1000 and limit.data.profile == "claude-sub"
    assert api.main_requests()[0].headers.get("authorization", "").startswith("Bearer ")  # OAuth mode
    task = daemon.ctl("--json", "task", "show", "L-1", cwd=repo).json()["task"]
    assert task["status"] == "pending" and task["attempts"] == 0


@pytest.mark.timeout(120)
def test_reject_with_a_reason_resumes_the_same_session(daemon: Daemon, repo: Path, api: FakeAnthropic) -> None:
    worktree = repo.parent / "proj-R-1"
    api.turns = [
        *work_turns(worktree)[:3],
        Turn([ToolUse("mcp__chkd__chkd_complete_work", {"summary": "v1"})]),
        Turn([Text("Done, v1.")]),
        # the resumed run
        Turn([ToolUse("Write", {"file_path": str(worktree / "hello.txt"), "content": "hello, v2\n"})]),
        Turn([ToolUse("Bash", {"command": "git commit -q -am 'v2 per review'", "description": "Commit"})]),
        Turn([ToolUse("mcp__chkd__chkd_complete_work", {"summary": "v2"})]),
        Turn([Text("Done, v2.")]),
    ]
    spawn(daemon, repo, "R-1")
    w = wait_for(
        lambda: (x := show(daemon)).status == "done" and x.exit_code is not None and x, 60, what="the first run"
    )
    first_tokens, sid = w.tokens_in, w.session_id
    assert sid and first_tokens
    res = daemon.ctl("merge", "w1", "--strategy", "review", cwd=repo)
    assert res.code == 0 and "waits for review" in res.out, res
    seen = len(api.main_requests())
    res = daemon.ctl("reject", "w1", "--reason", "REVIEW-9: say v2", cwd=repo)
    assert res.code == 0, res
    w = wait_for(
        lambda: (x := show(daemon)).status == "done" and x.runs == 2 and x.exit_code is not None and x,
        60,
        what="the resumed run",
    )
    resumed = api.main_requests()[seen]
    assert "REVIEW-9: say v2" in resumed.text()
    assert "hello from claude" in resumed.text()  # the earlier history: the same conversation
    assert w.session_id == sid and events(daemon, "agent.resumed")[0].data.session_id == sid
    assert w.tokens_in > first_tokens  # usage accumulates over the runs
    assert (worktree / "hello.txt").read_text() == "hello, v2\n" and git(worktree, "status", "--porcelain") == ""
