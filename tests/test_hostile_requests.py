"""Smaller hostile inputs: each gets a sentence with the right code, never `internal` or a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    Claim,
    RepoAdd,
    Spawn,
    TaskAdd,
    TaskList,
)

from conftest import BIN, Daemon, make_repo, wait_for

DEMO = [str(BIN / "chkd-demo-agent"), "--steps", "1", "--step-s", "0"]


def refused(daemon: Daemon, body: object) -> ChkdError:
    with pytest.raises(ChkdError) as info:
        daemon.call(body)
    return info.value


def test_a_nul_byte_in_an_agent_argv_is_a_bad_request_and_nothing_starts(daemon: Daemon, repo: Path) -> None:
    daemon.call(RepoAdd(path=str(repo)))
    err = refused(daemon, Spawn(repo="proj", task_id="N-1", title="nul", cmd=["chkd-demo-agent", "a\0b"]))
    assert (err.code, err.message) == ("bad_request", "The field 'cmd[1]' cannot contain a NUL byte.")
    assert daemon.ctl("--json", "workers", "--all").json() == []


def test_a_path_component_longer_than_the_os_allows_is_not_found_not_internal(daemon: Daemon, repo: Path) -> None:
    daemon.call(RepoAdd(path=str(repo)))
    for body in (TaskList(repo="/" + "p" * 300), TaskAdd(title="x", repo="/tmp/" + "p" * 300 + "/x")):
        err = refused(daemon, body)
        assert err.code == "not_found", err.message
        assert "File name too long" not in err.message


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", "-x", ".hidden", "tab\tname", "esc\x1b[31m", "back\\slash"])
def test_repo_add_refuses_a_name_that_could_become_a_path_or_an_option(daemon: Daemon, repo: Path, name: str) -> None:
    res = daemon.ctl("repo", "add", str(repo), f"--name={name}")
    assert res.code == 1, res
    first = res.err.splitlines()[0]
    assert first.startswith("chkdctl: ") and "is not a valid repository name" in first, first
    assert "\x1b" not in res.err
    assert daemon.ctl("--json", "repo", "list").json() == []


def test_claim_refuses_a_worker_of_another_repository_and_an_unknown_worker_id(daemon: Daemon, tmp_path: Path) -> None:
    one, two = make_repo(tmp_path / "one"), make_repo(tmp_path / "two")
    daemon.call(RepoAdd(path=str(one)))
    daemon.call(RepoAdd(path=str(two)))
    w = daemon.call(Spawn(repo="one", task_id="A-1", title="a", cmd=DEMO)).worker
    daemon.call(TaskAdd(title="b", id="B-1", repo="two"))
    err = refused(daemon, Claim(repo="two", worker=w.id))
    assert err.code == "conflict" and f"{w.id} belongs to the repository 'one'" in err.message, err.message
    err = refused(daemon, Claim(repo="two", worker="w999"))
    assert err.code == "not_found" and "w999" in err.message, err.message
    # nothing was claimed; a peer agent's own name still claims
    assert daemon.call(Claim(repo="two", worker="peer-agent")).task.id == "B-1"


def test_the_shim_reports_an_argv_it_cannot_exec_instead_of_a_traceback(daemon: Daemon, tmp_path: Path) -> None:
    log = tmp_path / "w-nul.log"
    go = {
        "worker": "w-nul",
        "argv": ["echo", "a\0b"],
        "cwd": str(tmp_path),
        "env": {},
        "log": str(log),
        "heartbeat_s": 0.5,
        "abort_grace_s": 1,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "chkd.client.shim", "--worker", "w-nul", "--no-detach"],
        input="go " + json.dumps(go) + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "CHKD_HOME": str(daemon.home)},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    text = wait_for(lambda: log.exists() and log.read_text(), 5, what="the shim's log")
    assert "cannot start the agent" in text


def test_spawn_cmd_fills_only_the_placeholders_and_passes_every_other_brace_as_typed(
    daemon: Daemon, repo: Path, tmp_path: Path
) -> None:
    daemon.call(RepoAdd(path=str(repo)))
    out = tmp_path / "argv.json"
    script = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    args = ["{task_id}", "{task.__class__}", '{"a": {"b": 1}}', "{{x}}", "}{", "{title}"]
    w = daemon.call(
        Spawn(repo="proj", task_id="P-1", title="a {branch} title", cmd=[sys.executable, "-c", script, str(out), *args])
    ).worker
    wait_for(lambda: out.exists() and out.read_text(), 20, what=f"{w.id} to record its argv")
    assert json.loads(out.read_text()) == [
        "P-1",
        "{task.__class__}",
        '{"a": {"b": 1}}',
        "{{x}}",
        "}{",
        "a {branch} title",
    ]
