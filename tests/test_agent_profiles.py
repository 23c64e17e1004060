"""Agent profiles against a real daemon: stream-json usage on the worker, a usage limit or an API error
ends `error` with one sentence (never `done`), refusals at spawn create nothing, Claude's files live in
chkd's state dir (0600) and go with the worker. The agent replays the real CLI's recorded output."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from chkd.protocol.messages import Events, ResumeAgent, WorkerShow

from conftest import DEFAULT_TEST_CONFIG, Daemon, git, wait_for

REPLAY = str(Path(__file__).resolve().parent / "replay_agent.py")


@pytest.fixture
def daemon_config() -> str:
    return (
        DEFAULT_TEST_CONFIG
        + f"""
max_task_usd = 1.5

[agents.replay]
cmd = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "{{task_id}}.jsonl"]
output = "claude-stream-json"
tags = ["fake", "claude"]

[agents.limit]
cmd = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-usage-limit-oauth.jsonl", "--exit", "1"]
output = "claude-stream-json"

[agents.lying]
cmd = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-429-apikey.jsonl", "--exit", "0"]
output = "claude-stream-json"

[agents.resumable]
cmd = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-mcp-stop-exit2.jsonl", "--commit", "first.txt"]
resume = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-subagent.jsonl", "--commit", "second.txt",
          "--session={{session_id}}", "{{prompt}}"]
output = "claude-stream-json"

[agents.resolving]
cmd = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-mcp-stop-exit2.jsonl", "--commit", "first.txt"]
resume = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-subagent.jsonl", "--commit", "first.txt",
          "--session={{session_id}}", "{{prompt}}"]
output = "claude-stream-json"

[agents.taskresolving]
cmd = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-mcp-stop-exit2.jsonl", "--commit", "first.txt",
       "{{task_id}}"]
resume = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-subagent.jsonl", "--commit", "first.txt",
          "--session={{session_id}}", "{{prompt}}"]
output = "claude-stream-json"

[agents.plainreplay]
cmd = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-mcp-stop-exit2.jsonl"]

[agents.ghost]
cmd = ["no-such-agent-program-xyz", "{{prompt}}"]

[agents.fakeclaude]
cmd = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-mcp-stop-exit2.jsonl", "{{prompt}}"]
output = "claude-stream-json"
claude_hooks = true
prompt = "Do {{task_id}} ({{title}}) in {{worktree}} on {{branch}}."

[agents.cappedclaude]
cmd = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-mcp-stop-exit2.jsonl", "{{prompt}}"]
resume = [{json.dumps(sys.executable)}, {json.dumps(REPLAY)}, "stream-subagent.jsonl", "--session={{session_id}}",
          "{{prompt}}"]
output = "claude-stream-json"
claude_hooks = true
"""
    )


def show(daemon: Daemon, wid: str = "w1"):  # type: ignore[no-untyped-def]
    return daemon.call(WorkerShow(worker=wid)).worker


def events(daemon: Daemon, kind: str, wid: str = "w1") -> list:
    return [e for e in daemon.call(Events(worker=wid)).events if e.kind == kind]


def spawn(daemon: Daemon, repo: Path, task: str, agent: str) -> None:
    res = daemon.ctl("spawn", task, "--title", f"task {task}", "--agent", agent, cwd=repo)
    assert res.code == 0, res


def test_usage_session_and_model_land_on_the_worker_and_the_task(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "stream-mcp-stop-exit2", "replay")
    w = wait_for(lambda: (x := show(daemon)).status == "done" and x, 20, what="done")
    assert (w.tokens_in, w.tokens_out, w.cost_usd) == (58000, 168, 0.21056)
    assert w.session_id == "45f57291-cda2-4972-b93d-58f4a787040b" and w.model == "claude-opus-5-5"
    (usage,) = events(daemon, "agent.usage")
    assert usage.data.total_cost_usd == 0.21056 and usage.data.profile == "replay"
    assert [e.data.session_id for e in events(daemon, "agent.session")] == [w.session_id]
    shown = daemon.ctl("worker", "show", "w1", cwd=repo)
    assert "58,000" in shown.out and "$0.2106" in shown.out and w.session_id in shown.out, shown
    listed = daemon.ctl("workers", cwd=repo)
    assert "$0.21" in listed.out, listed
    task = daemon.ctl("--json", "task", "show", "stream-mcp-stop-exit2", cwd=repo).json()
    assert task["task"]["tokens_in"] == 58000 and task["task"]["cost_usd"] == 0.21056
    # the run's usage is a dated entry in the usage ledger: `cost` and the budgets count it
    cost = daemon.ctl("cost", "--json", cwd=repo).json()
    assert cost["total"]["tokens_in"] == 58000 and cost["total"]["cost_usd"] == 0.21056, cost


def test_a_usage_limit_ends_error_with_the_reset_time_and_gives_the_task_back_without_an_attempt(
    daemon: Daemon, repo: Path
) -> None:
    spawn(daemon, repo, "L-1", "limit")
    w = wait_for(lambda: (x := show(daemon)).status == "error" and x, 20, what="error")
    assert w.last_error.startswith("Claude stopped: 5-hour usage limit, resets ") and w.last_error.endswith(" UTC.")
    (limit,) = events(daemon, "agent.usage_limit")
    assert limit.data.resets_at == 1796238050 * 1000 and limit.data.profile == "limit"
    assert limit.data.limit_type == "five_hour"
    assert not events(daemon, "agent.api_error")
    task = daemon.ctl("--json", "task", "show", "L-1", cwd=repo).json()["task"]
    assert task["status"] == "pending" and task["attempts"] == 0
    # the stream's usage limit parks the profile: nothing with it starts before the reset (+ margin)
    waits = [e for e in daemon.call(Events()).events if e.kind == "autopilot.limit_wait"]
    assert [(e.data.profile, e.data.reason) for e in waits] == [("limit", "usage limit")]
    assert waits[0].data.until >= limit.data.resets_at or waits[0].data.until > limit.at


def test_an_api_error_is_error_even_when_the_agent_exits_0(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "E-1", "lying")
    w = wait_for(lambda: (x := show(daemon)).status in ("error", "done") and x, 20, what="the end")
    assert (
        w.status == "error"
        and w.last_error == "Claude stopped: the API kept answering 429 (rate limit) after its retries."
    )
    (err,) = events(daemon, "agent.api_error")
    assert err.data.error == "rate_limit" and err.data.status == 429
    task = daemon.ctl("--json", "task", "show", "E-1", cwd=repo).json()["task"]
    # a 429 is nobody's failure (issue 15): the task goes back uncounted and the profile backs off
    assert task["status"] == "pending" and task["attempts"] == 0
    waits = [e for e in daemon.call(Events()).events if e.kind == "autopilot.limit_wait"]
    assert [e.data.profile for e in waits] == ["lying"] and "429" in waits[0].data.reason


def test_a_plain_profile_output_is_not_parsed(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "P-1", "plainreplay")
    w = wait_for(lambda: (x := show(daemon)).status == "done" and x, 20, what="done")
    assert w.tokens_in == 0 and w.session_id is None


def test_refusals_at_spawn_are_sentences_and_create_nothing(daemon: Daemon, repo: Path) -> None:
    res = daemon.ctl("spawn", "G-1", "--title", "ghost", "--agent", "ghost", cwd=repo)
    assert res.code == 1 and "runs 'no-such-agent-program-xyz', which is not installed" in res.err, res
    res = daemon.ctl("spawn", "G-2", "--title", "nobody", "--agent", "nobody", cwd=repo)
    assert res.code == 1 and "There is no agent profile 'nobody'" in res.err, res
    assert daemon.ctl("--json", "workers", "--all", cwd=repo).json() == []
    assert git(repo, "branch", "--list", "chkd/*") == "" and not list(repo.parent.glob("proj-G-*"))


def test_a_claude_profile_gets_its_files_in_the_state_dir_not_the_worktree(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "C-1", "fakeclaude")
    w = wait_for(lambda: (x := show(daemon)).status == "done" and x, 20, what="done")
    log = Path(w.log_path).read_text()
    files = daemon.paths.state / "workers" / "w1.claude"
    mcp, settings = files / "mcp.json", files / "settings.json"
    for f in (mcp, settings):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.stat().st_mode) == 0o700
    server = json.loads(mcp.read_text())["mcpServers"]["chkd"]
    assert os.path.isabs(server["command"]) and server["env"]["CHKD_WORKER_ID"] == "w1"
    assert server["env"]["CHKD_HOME"] == str(daemon.home)
    hooks = json.loads(settings.read_text())["hooks"]
    assert hooks["PostToolUse"][0]["hooks"][0]["command"].endswith("chkdctl hook post-tool-use")
    assert hooks["Stop"][0]["hooks"][0]["command"].endswith("chkdctl hook stop")
    assert hooks["Notification"][0]["hooks"][0]["command"].endswith("chkdctl hook notification")
    # the prompt template filled in, and before the variadic flags chkd appends
    start = next(line for line in log.splitlines() if "starting" in line)
    assert f"Do C-1 (task C-1) in {w.worktree} on {w.branch}." in start
    assert start.index("Do C-1") < start.index("--allowedTools") and "--permission-mode acceptEdits" in start
    assert f"--mcp-config {mcp}" in start and f"--settings {settings}" in start
    assert not (Path(w.worktree) / ".mcp.json").exists() and not (Path(w.worktree) / ".claude").exists()
    assert git(w.worktree, "status", "--porcelain") == ""
    res = daemon.ctl("rm", "w1", "--force", cwd=repo)
    assert res.code == 0, res
    assert not files.exists()


def test_max_task_usd_caps_a_claude_run_and_its_resume(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "U-1", "cappedclaude")
    wait_for(lambda: show(daemon).status == "done", 20, what="done")
    assert daemon.ctl("resume-agent", "w1", "--prompt", "go on", cwd=repo).code == 0
    w = wait_for(lambda: (x := show(daemon)).status == "done" and x.runs == 2 and x, 20, what="the resumed run")
    log = Path(w.log_path).read_text()  # the default prompt spans lines: count in the whole log
    assert log.count("worker w1: starting") == 2 and log.count("--max-budget-usd 1.5") == 2, log
    # a plain profile is not Claude: it gets no Claude flag
    spawn(daemon, repo, "U-2", "plainreplay")
    w2 = wait_for(lambda: (x := show(daemon, "w2")).status == "done" and x, 20, what="w2 done")
    assert "--max-budget-usd" not in Path(w2.log_path).read_text()


@pytest.mark.needs("root")  # Claude Code refuses bypassPermissions only as root
def test_bypass_as_root_without_is_sandbox_is_refused(daemon: Daemon, repo: Path) -> None:
    daemon.write_config(
        DEFAULT_TEST_CONFIG
        + f"""
[agents.bypass]
cmd = [{json.dumps(sys.executable)}, "{{prompt}}"]
claude_hooks = true
permission_mode = "bypassPermissions"
"""
    )
    daemon.restart()
    res = daemon.ctl("spawn", "B-1", "--title", "b", "--agent", "bypass", cwd=repo)
    assert res.code == 1 and "unless IS_SANDBOX=1" in res.err, res
    assert daemon.ctl("--json", "workers", "--all", cwd=repo).json() == []


def test_reject_with_a_reason_resumes_the_session_with_the_reason_and_usage_adds_up(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "R-1", "resumable")
    w = wait_for(lambda: (x := show(daemon)).status == "done" and x, 20, what="done")
    sid = w.session_id
    res = daemon.ctl("merge", "w1", "--strategy", "review", cwd=repo)
    assert res.code == 0 and "waits for review" in res.out, res
    res = daemon.ctl("reject", "w1", "--reason", "please add a test", cwd=repo)
    assert res.code == 0, res
    (resumed,) = wait_for(lambda: events(daemon, "agent.resumed"), 10, what="agent.resumed")
    assert resumed.data.session_id == sid and "please add a test" in resumed.data.prompt
    w = wait_for(
        lambda: (x := show(daemon)).status == "done" and x.runs == 2 and x.exit_code == 0 and x,
        20,
        what="the resumed run done",
    )
    second = (Path(w.worktree) / "second.txt").read_text()
    assert f"--session={sid}" in second and "please add a test" in second  # the resume argv, filled in
    assert (w.tokens_in, round(w.cost_usd, 5)) == (58000 + 29000, round(0.21056 + 0.15792, 5))  # accumulated
    statuses = [e.data.to for e in events(daemon, "worker.status")]
    assert statuses[-2:] == ["working", "done"]
    task = daemon.ctl("--json", "task", "show", "R-1", cwd=repo).json()["task"]
    assert task["status"] == "review"
    assert "second.txt" in git(repo, "show", "--stat", "--format=", w.branch)


def test_resume_agent_by_hand_and_its_refusals(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "H-1", "resumable")
    wait_for(lambda: show(daemon).status == "done", 20, what="done")
    res = daemon.ctl("resume-agent", "w1", "--prompt", "one more thing", cwd=repo)
    assert res.code == 0 and "resumed" in res.out, res
    w = wait_for(
        lambda: (x := show(daemon)).status == "done" and x.runs == 2 and x.exit_code == 0 and x, 20, what="second run"
    )
    assert "one more thing" in (Path(w.worktree) / "second.txt").read_text()
    assert daemon.ctl("merge", "w1", "--strategy", "review", cwd=repo).code == 0
    res = daemon.ctl("resume-agent", "w1", cwd=repo)
    assert res.code == 1 and "has a merge under way" in res.err, res
    res = daemon.ctl("spawn", "H-2", "--title", "plain", "--agent", "plainreplay", cwd=repo)
    wait_for(lambda: show(daemon, "w2").status == "done", 20, what="w2 done")
    res = daemon.ctl("resume-agent", "w2", cwd=repo)
    assert res.code == 1 and "cannot continue a session: it has no `resume` argv" in res.err, res


def test_update_with_conflicts_resumes_the_agent_with_the_files_and_its_fix_merges(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "U-1", "resolving")
    w = wait_for(lambda: (x := show(daemon)).status == "done" and x, 20, what="done")
    (repo / "first.txt").write_text("main's own first.txt\n")
    git(repo, "add", "first.txt")
    git(repo, "commit", "-q", "-m", "first.txt on main")
    res = daemon.ctl("update", "w1", cwd=repo)
    assert "first.txt" in res.out + res.err, res
    (resumed,) = wait_for(lambda: events(daemon, "agent.resumed"), 10, what="agent.resumed")
    assert "conflict markers in: first.txt" in resumed.data.prompt and resumed.data.session_id == w.session_id
    w = wait_for(
        lambda: (x := show(daemon)).status == "done" and x.runs == 2 and x.exit_code == 0 and x,
        20,
        what="the resolving run",
    )
    assert (
        git(w.worktree, "status", "--porcelain") == "" and "<<<<<<<" not in (Path(w.worktree) / "first.txt").read_text()
    )
    assert len(git(w.worktree, "log", "-1", "--format=%P").split()) == 2  # the agent committed the merge
    res = daemon.ctl("merge", "w1", "--strategy", "auto", cwd=repo)
    assert res.code == 0 and "Merged" in res.out, res


@pytest.mark.timeout(90)
def test_the_autopilot_resumes_a_resumable_agent_on_conflict_markers_and_merges_its_fix(
    daemon: Daemon, repo: Path
) -> None:
    assert daemon.ctl("repo", "add", str(repo), "--name", "proj").code == 0
    for t in ("R-1", "R-2"):  # both write first.txt: the second to merge conflicts
        assert daemon.ctl("task", "add", f"task {t}", "--id", t, "--repo", "proj").code == 0
    r = daemon.ctl("run", "--workers", "2", "--agent", "taskresolving", "--until-empty", "--repo", "proj")
    assert r.code == 0, r

    def state() -> str:
        return daemon.ctl("run", "--status", "--repo", "proj", "--json").json()[0]["state"]

    wait_for(lambda: state() == "finished", 60, interval=0.2, what="the run to finish")
    evs = daemon.call(Events()).events
    assert [e.kind for e in evs if e.kind == "merge.conflict"], "the second merge should have conflicted"
    (resumed,) = [e for e in evs if e.kind == "agent.resumed"]  # the autopilot's update, then resume
    assert "conflict markers in: first.txt" in resumed.data.prompt
    assert not [e for e in evs if e.kind == "autopilot.needs_person"]  # the agent settled it, no person
    tasks = {t["id"]: t["status"] for t in daemon.ctl("task", "list", "--repo", "proj", "--json").json()}
    assert tasks == {"R-1": "done", "R-2": "done"}
    assert "<<<<<<<" not in git(repo, "show", "main:first.txt")


@pytest.mark.timeout(90)
def test_a_daemon_killed_after_recording_a_resume_starts_the_agent_at_start_up(daemon: Daemon, repo: Path) -> None:
    spawn(daemon, repo, "K-1", "resumable")
    wait_for(lambda: show(daemon).status == "done", 20, what="done")
    daemon.arm("resume.recorded")
    with pytest.raises(Exception):  # noqa: B017 - the daemon dies before it answers
        daemon.call(ResumeAgent(worker="w1", prompt="after the crash"), timeout=5)
    daemon.wait_dead()
    daemon.start()
    w = wait_for(
        lambda: (x := show(daemon)).status == "done" and x.runs == 2 and x.exit_code == 0 and x,
        40,
        what="the recorded resume carried out",
    )
    assert "after the crash" in (Path(w.worktree) / "second.txt").read_text()
    assert len(events(daemon, "agent.resumed")) == 1
