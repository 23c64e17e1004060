"""Hostile names: task ids, titles, branch prefixes, worktree patterns and agent placeholders holding
`../`, absolute paths, a leading `-`, quotes, `$(...)`, `;`, newlines, escapes and unicode.

Each is either refused with one sentence (one line, no traceback), or accepted and then used
verbatim and safely: worktrees land only inside the configured pattern's directory, branches are
exactly prefix + id, agents receive each value as one argument, and nothing runs through a shell
(a `$(touch /tmp/chkd-PWNED-<uuid>)` anywhere never creates that file).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chkd.daemon import worktrees
from chkd.daemon.taskqueue import id_problem
from chkd.daemon.workerrecords import render_argv
from chkd.protocol.config import ConfigError, parse_config
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import RepoAdd, Spawn, TaskAdd, WorkerShow
from chkd.protocol.names import branch_problem, repo_name_problem
from chkd.protocol.templates import AGENT_PLACEHOLDERS, worktree_pattern_problem

from conftest import BIN, Daemon, git, wait_for

#: One marker per test run, the same in every xdist worker (they must collect the same test ids).
PWNED = f"/tmp/chkd-PWNED-{os.environ.get('PYTEST_XDIST_TESTRUNUID') or uuid.uuid4().hex}"
SHELL = f"$(touch {PWNED})"
PREFIX = f"we$(touch${{IFS}}{PWNED})/"  # a valid branch prefix (git allows $ ( ) {{ }}), a command to a shell
PATTERN_DIR = f"wt {SHELL} ;dir"
#: The agent profile `record`: writes the argv it got (as JSON) beside its worktree, and a file inside it.
RECORD = (
    "import json, pathlib, sys; wt = pathlib.Path(sys.argv[1]); "
    "pathlib.Path(str(wt) + '.argv.json').write_text(json.dumps(sys.argv[1:])); "
    "(wt / 'recorded.txt').write_text('x')"
)
AGENT_ARGS = [
    "{worktree}",
    "{title}",
    "{description}",
    "{task_id}",
    "{branch}",
    "{worker_id}",
    "-rf",
    "--help",
    SHELL,
    "; rm -rf ~",
    "{{literal}}",
]


def toml_str(text: str) -> str:
    return json.dumps(text)


@pytest.fixture
def daemon_config() -> str:
    cmd = ", ".join(toml_str(a) for a in [sys.executable, "-c", RECORD, *AGENT_ARGS])
    return (
        f"heartbeat_s = 0.5\nheartbeat_timeout_s = 3\nstall_timeout_s = 30\nabort_grace_s = 1\nnotify = false\n"
        f"max_workers = 8\nbranch_prefix = {toml_str(PREFIX)}\n"
        f"worktree_pattern = {toml_str('../' + PATTERN_DIR + '/{repo}-{task}')}\n"
        f"[agents.record]\ncmd = [{cmd}]\n"
    )


def assert_one_sentence(err: str) -> None:
    lines = err.splitlines()
    assert lines and lines[0].startswith("chkdctl: ") and lines[0].endswith("."), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: ")), err
    assert "Traceback" not in err and "\x1b" not in err, err


HOSTILE_IDS = [
    "../x",
    "/abs",
    "-x",
    "--help",
    "a b",
    "'q'",
    '"q"',
    SHELL,
    "a;b",
    "a\nb",
    "\x1b[31m",
    "é",
    "..",
    "a/../b",
    ".hidden",
    "a/",
    "a//b",
    "x.lock",
    "HEAD",
    # accepted ones
    "a/b",
    "x.y-z_1",
    "1",
    "UPPER.9",
]
HOSTILE_TITLES = [
    SHELL,
    f"`touch {PWNED}`",
    f"; touch {PWNED}",
    "-rf --force",
    "--help",
    "'single' \"double\"",
    "line one\nline two",
    "\x1b]0;title\x07 \x1b[31mred",
    "naïve 日本 🟢",
    "{branch} {{x}}",
    "\\ back",
]


@pytest.mark.timeout(120)
def test_hostile_ids_and_titles_are_refused_or_used_verbatim_never_through_a_shell(daemon: Daemon, repo: Path) -> None:
    daemon.call(RepoAdd(path=str(repo)))
    accepted: list[str] = []
    for task_id in HOSTILE_IDS:
        res = daemon.ctl("task", "add", "hostile id", f"--id={task_id}", cwd=repo)
        if res.code == 0:
            accepted.append(task_id)
            continue
        assert res.code == 1, (task_id, res)
        assert_one_sentence(res.err)
    assert accepted == ["a/b", "x.y-z_1", "1", "UPPER.9"]

    demo = f"{BIN / 'chkd-demo-agent'} --steps 1 --step-s 0"
    for task_id in accepted:  # the demo agent: worktree, branch and commits with the hostile-looking names
        res = daemon.ctl("--json", "spawn", task_id, "--cmd", demo, cwd=repo)
        assert res.code == 0, res
        w = res.json()
        assert_landed(repo, w["worktree"], task_id)
        assert w["branch"] == PREFIX + task_id
        assert git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{PREFIX}{task_id}")
        wait_done(daemon, w["id"])

    for i, title in enumerate(HOSTILE_TITLES):  # the recording agent: every placeholder is one argument
        description = f"first line\n{SHELL}\n-rf"
        try:
            task = daemon.call(TaskAdd(title=title, id=f"H-{i}", repo="proj", description=description)).task
        except ChkdError as exc:
            assert len(exc.message.splitlines()) == 1
            continue
        w = daemon.call(Spawn(repo="proj", task_id=task.id, agent="record")).worker
        wait_done(daemon, w.id)
        assert_landed(repo, w.worktree, task.id)
        argv = json.loads(Path(w.worktree + ".argv.json").read_text())
        assert argv == [
            w.worktree,
            task.title,
            description,
            task.id,
            w.branch,
            w.id,
            "-rf",
            "--help",
            SHELL,
            "; rm -rf ~",
            "{literal}",
        ]
        assert task.title == " ".join(title.split())
        subject = git(repo, "log", "-1", "--format=%s", f"refs/heads/{w.branch}")
        assert subject == f"chkd: {task.id}: {task.title}"
    assert not Path(PWNED).exists(), "something ran a value through a shell"


def wait_done(daemon: Daemon, wid: str) -> Any:
    return wait_for(
        lambda: (w := daemon.call(WorkerShow(worker=wid)).worker).status == "done" and w, 30, what=f"{wid} to finish"
    )


def assert_landed(repo: Path, worktree: str, task_id: str) -> None:
    """Inside the pattern's directory beside the repository, named `<repo>-<id with / as ->`."""
    path = Path(worktree)
    assert path.parent == repo.parent / PATTERN_DIR, path
    assert path.name.startswith(f"proj-{task_id.replace('/', '-')}"), path
    assert path.is_dir()


# -- config values, checked without a daemon -------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        f"branch_prefix = {toml_str(p)}"
        for p in [
            "",
            "-x/",
            "--force/",
            "a b/",
            "../",
            "/abs/",
            "a..b/",
            "x.",
            "a\nb/",
            "\u001b[31m/",
            "~/",
            "a:b/",
            "@{-1}/",
            PREFIX,
            "agents/",
            "ü-",
        ]
    ]
    + [
        f"worktree_pattern = {toml_str(p)}"
        for p in [
            "/tmp/{task}",
            "../../{task}",
            "../{repo}/{task}",
            "{task}",
            ".git/{task}",
            "../{task}/..",
            "../{unknown}-{task}",
            "../{task.__class__.__name__}",
            "../{task!r}",
            "../{task:>99}",
            "../x",
            "~/{task}",
            "../-{task}",
            f"../{SHELL}/{{task}}",
            "../;{task}",
            "../\n{task}",
            "../{repo}-{task}",
        ]
    ]
    + [
        f"[agents.a]\ncmd = [{', '.join(toml_str(a) for a in args)}]"
        for args in [
            [],
            [""],
            ["-x"],
            ["agent", "{prompt.__class__}"],
            ["agent", "{0}"],
            ["agent", "{}"],
            ["agent", "{"],
            ["agent", SHELL, "{title}"],
            ["agent", "{{literal}}", "'q'", "\"q\"", "a;b", "line\nbreak"],
        ]
    ],
)
def test_hostile_config_values_are_refused_with_one_sentence_or_accepted_and_safe(text: str) -> None:
    try:
        cfg = parse_config(text, Path("config.toml"))
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("config.toml: ") and message.endswith("."), message
        assert "\n" not in message, message
        assert "Traceback" not in message
        return
    repo = Path("/src/proj")
    base = worktrees.worktree_base(str(repo), "proj", "T-1", cfg.worktree_pattern)
    assert repo.parent in base.parents and base != repo and repo not in base.parents, base
    assert "T-1" in str(base)
    assert branch_problem(cfg.branch_prefix + "T-1") is None
    values = {name: f"<{name}>" for name in AGENT_PLACEHOLDERS}
    for profile in cfg.agents.values():
        argv = render_argv(profile.cmd, values)
        assert argv and argv[0].strip()
        assert not any("{" + name + "}" in arg for arg in argv for name in AGENT_PLACEHOLDERS), argv


def _accepted(pattern: str) -> bool:
    return worktree_pattern_problem(pattern) is None


_PARTS = st.lists(
    st.sampled_from(["../", "./", "/", "{repo}", "{task}", "x", "-", ".", " ", "$(", ".git", "wt/"]), max_size=4
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.tuples(st.sampled_from(["../", "", "./../", "x/../../", "/"]), _PARTS, _PARTS).map(
        lambda t: t[0] + t[1] + "{task}" + t[2]
    ),
    task_id=st.text(alphabet="ab.-_/1", min_size=1, max_size=10),
    repo_name=st.text(alphabet="pr.-_ ", min_size=1, max_size=8),
)
def test_an_accepted_worktree_pattern_never_lands_outside_the_parent_or_inside_the_repository(
    pattern: str, task_id: str, repo_name: str
) -> None:
    """What config.toml accepts (symbolically, {repo} and {task} unknown) holds for every id and
    repository name chkd accepts: worktree_base never refuses it, and the path is where the rule says."""
    if not _accepted(pattern) or id_problem(task_id) or repo_name_problem(repo_name):
        return
    repo = Path("/src/proj")
    base = worktrees.worktree_base(str(repo), repo_name, task_id, pattern)
    assert repo.parent in base.parents and base != repo and repo not in base.parents
    assert os.path.normpath(base) == str(base)
