"""`chkdctl repo add|list|rm` against a real daemon and real git repositories."""

from __future__ import annotations

from pathlib import Path

from chkd.protocol.messages import Abort, Spawn, WorkerShow

from conftest import Daemon, busy_for, git, make_repo, wait_for


def test_add_detects_the_main_branch_and_lists(daemon: Daemon, make_git_repo) -> None:  # type: ignore[no-untyped-def]
    trunk = make_git_repo("svc", branch="trunk")
    (trunk / "pkg").mkdir()
    res = daemon.ctl("repo", "add", str(trunk / "pkg"))  # any path inside it
    assert res.code == 0, res
    assert res.out.strip() == f"Added repository svc: {trunk.resolve()} (main branch trunk)."
    other = make_git_repo("web")
    git(other, "branch", "release")
    res = daemon.ctl(
        "repo",
        "add",
        ".",
        "--name",
        "frontend",
        "--main-branch",
        "release",
        "--test-cmd",
        "pytest -q 'tests/a b'",
        cwd=other,
    )
    assert res.code == 0, res
    listed = daemon.ctl("repo", "list", "--json").json()
    assert [(r["name"], r["main_branch"], r.get("test_cmd")) for r in listed] == [
        ("frontend", "release", ["pytest", "-q", "tests/a b"]),
        ("svc", "trunk", None),
    ]
    text = daemon.ctl("repo", "list").out.splitlines()
    assert text[0].split() == ["NAME", "MAIN", "TASKS", "LIVE", "ADDED", "TEST", "PATH"]
    again = daemon.ctl("repo", "add", str(trunk))
    assert (
        again.code == 0 and again.out.strip() == f"{trunk.resolve()} is already registered as svc (main branch trunk)."
    )
    assert len(daemon.ctl("repo", "list", "--json").json()) == 2


def test_bad_repositories_are_refused_with_a_sentence(daemon: Daemon, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    detached = make_repo(tmp_path / "detached")
    git(detached, "checkout", "-q", "--detach")
    named = make_repo(tmp_path / "named")
    cases = [
        ([str(plain)], f"{plain} is not inside a git repository."),
        ([str(bare)], f"{bare} is a bare repository; chkd needs one with a working tree."),
        ([str(empty)], f"The repository {empty} has no commits yet."),
        ([str(tmp_path / "missing")], f"The path {tmp_path / 'missing'} does not exist."),
        ([str(detached)], f"HEAD in {detached} is detached, so the main branch is unclear."),
        ([str(named), "--main-branch", "nope"], f"The repository {named} has no branch 'nope'."),
        ([str(named), "--test-cmd", "  "], "--test-cmd is empty."),
    ]
    for args, message in cases:
        res = daemon.ctl("repo", "add", *args)
        assert res.code == 1, (args, res)
        assert res.err.splitlines()[0] == f"chkdctl: {message}", (args, res)
    assert daemon.ctl("repo", "list", "--json").json() == []
    assert daemon.ctl("repo", "add", str(named), "--name", "x").code == 0
    clash = daemon.ctl("repo", "add", str(make_repo(tmp_path / "other")), "--name", "x")
    assert clash.code == 1 and "A repository named 'x' is already registered." in clash.err


def test_same_directory_name_gets_a_suffix(daemon: Daemon, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a" / "proj")
    b = make_repo(tmp_path / "b" / "proj")
    assert daemon.ctl("repo", "add", str(a)).code == 0
    assert "Added repository proj-2:" in daemon.ctl("repo", "add", str(b)).out


def test_rm_forgets_the_repository_and_its_tasks(daemon: Daemon, repo: Path) -> None:
    daemon.ctl("task", "add", "a task", cwd=repo)
    res = daemon.ctl("repo", "rm", "proj")
    assert res.code == 0 and res.out.strip() == (
        "Removed repository 'proj' from chkd; its files and branches are untouched."
    )
    assert daemon.ctl("repo", "list", "--json").json() == []
    assert (repo / "README.md").exists()
    gone = daemon.ctl("repo", "rm", "proj")
    assert gone.code == 1 and "No registered repository is named or contains 'proj'." in gone.err
    # added again, it starts with an empty queue
    assert daemon.ctl("task", "list", "--json", cwd=repo).code == 1
    assert daemon.ctl("task", "add", "again", cwd=repo).out.startswith("Added T-1 ")


def test_rm_is_refused_while_a_worker_lives(daemon: Daemon, repo: Path) -> None:
    assert daemon.ctl("repo", "add", str(repo)).code == 0
    # a real live worker (an agent that only sleeps), made through the daemon like any other
    w = daemon.call(Spawn(repo="proj", task_id="T-1", title="sleeps", cmd=busy_for(60))).worker
    res = daemon.ctl("repo", "rm", "proj")
    assert res.code == 1
    assert res.err.splitlines() == [
        "chkdctl: The repository 'proj' has 1 live worker(s).",
        "  hint: Abort them first (`chkdctl abort --all --repo NAME`).",
    ]
    assert [r["name"] for r in daemon.ctl("repo", "list", "--json").json()] == ["proj"]
    daemon.call(Abort(worker=w.id))
    wait_for(lambda: daemon.call(WorkerShow(worker=w.id)).worker.status == "aborted", 20, what="the abort")
    assert daemon.ctl("repo", "rm", "proj").code == 0
