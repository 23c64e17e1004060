"""Task ids become branch names: an id git cannot use is refused where it enters (add, import,
spawn --title), with a sentence naming the rule, and the rules agree with `git check-ref-format`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chkd.daemon.taskqueue import ID_RE, check_id
from chkd.protocol.errors import ChkdError

from conftest import Daemon

#: Characters that matter to git's rules, plus ordinary ones and a little unicode.
ALPHABET = "aZ09._-/@{}.lock ~^:?*[\\\t\x7fé"


def git_accepts(name: str, cwd: Path) -> bool:
    """`git check-ref-format --branch` run outside any repository (so `@{-1}` cannot expand)."""
    proc = subprocess.run(["git", "check-ref-format", "--branch", name], cwd=cwd, capture_output=True)
    return proc.returncode == 0


def accepted(task_id: str) -> bool:
    try:
        check_id(task_id)
    except ChkdError:
        return False
    return True


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("not-a-repo")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=ALPHABET, min_size=1, max_size=12))
@example("a..b")
@example("x.lock")
@example("a/.b")
@example("a//b")
@example("a/")
@example("a.")
@example("HEAD")
@example("@")
@example("a@{b")
@example("-x")
@example("a/-b")
@example("x/y.lock/z")
def test_branch_rules_agree_with_git(outside: Path, name: str) -> None:
    from chkd.protocol.names import branch_problem

    assert (branch_problem(name) is None) == git_accepts(name, outside), name


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="aZ09._-/", min_size=1, max_size=12))
@example("a..b")
@example("x.lock")
@example("a.")
@example("HEAD")
def test_ids_the_regex_admits_are_accepted_exactly_when_git_accepts_them(outside: Path, task_id: str) -> None:
    if ID_RE.fullmatch(task_id):
        assert accepted(task_id) == git_accepts(task_id, outside), task_id
    else:
        assert not accepted(task_id)


@pytest.mark.parametrize(
    ("task_id", "rule"),
    [
        ("a..b", "cannot contain '..'"),
        ("x.lock", "cannot end with '.lock'"),
        ("a/b.lock/c", "cannot end with '.lock'"),
        ("-x", "start with a letter or digit"),
        ("a.", "cannot end with '.'"),
        ("a b", "only letters, digits"),
        ("a~b", "only letters, digits"),
        ("a//b", "empty part"),
        ("a/.b", "cannot start with '.'"),
        ("a@{b", "only letters, digits"),
        ("a/", "cannot end with '/'"),
        ("HEAD", "'HEAD'"),
    ],
)
def test_task_add_refuses_an_id_git_cannot_use_naming_the_rule(
    daemon: Daemon, repo: Path, task_id: str, rule: str
) -> None:
    res = daemon.ctl("task", "add", "x", f"--id={task_id}", cwd=repo)
    assert res.code == 1, res
    first = res.err.splitlines()[0]
    assert first.startswith("chkdctl: ") and "is not a valid task id" in first and rule in first, first
    assert "Traceback" not in res.err
    assert daemon.ctl("--json", "repo", "list").json() == []  # refused before anything was registered


def test_spawn_with_title_refuses_a_bad_id_and_starts_nothing(daemon: Daemon, repo: Path) -> None:
    res = daemon.ctl("spawn", "bad..id", "--title", "x", "--cmd", "chkd-demo-agent --steps 1 --step-s 0", cwd=repo)
    assert res.code == 1 and "cannot contain '..'" in res.err, res
    assert daemon.ctl("--json", "workers", "--all").json() == []
    assert daemon.ctl("task", "list", "--json", "--all-repos").json() == []


def test_import_an_item_with_an_invalid_id_is_a_problem_line_and_the_rest_imports(daemon: Daemon, repo: Path) -> None:
    long_code = "A" * 70
    text = f"# Spec\n\n- [ ] **SD.1 fine**\n- [ ] **{long_code}.1 too long an id**\n- [ ] **SD.2 also fine**\n"
    (repo / "SPEC.md").write_text(text)
    res = daemon.ctl("task", "import", "SPEC.md", "--json", cwd=repo)
    assert res.code == 0, res
    report = res.json()
    assert report["new"] == ["SD.1", "SD.2"]
    assert [(p["line"], "is not a valid task id" in p["reason"]) for p in report["problems"]] == [(4, True)]
