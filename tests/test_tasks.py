"""The task queue through a real daemon and the real chkdctl: add, list, show, edit, lifecycle, deps, claim."""

from __future__ import annotations

from pathlib import Path

from chkd.protocol.messages import (
    Claim,
    DepAdd,
    RepoAdd,
    TaskAdd,
    TaskList,
)

from conftest import Daemon, git


def ids(res) -> list[str]:  # type: ignore[no-untyped-def]
    return [t["id"] for t in res.json()]


def test_task_add_inside_an_unknown_repository_registers_it(daemon: Daemon, repo: Path) -> None:
    res = daemon.ctl("task", "add", "Write the README", cwd=repo)
    assert res.code == 0, res
    assert res.out.strip() == "Added T-1 (P2, ready) in proj: Write the README"
    listed = daemon.ctl("--json", "repo", "list")
    assert [(r["name"], r["path"], r["main_branch"], r["tasks"]) for r in listed.json()] == [
        ("proj", str(repo.resolve()), "main", 1)
    ]
    # from a subdirectory too, and with every flag
    (repo / "src").mkdir()
    res = daemon.ctl(
        "task",
        "add",
        "Parser",
        "--id",
        "SD.13",
        "--priority",
        "P1",
        "--after",
        "T-1",
        "--tag",
        "core",
        "--tag",
        "parser",
        "--description",
        "Parse it.",
        "--max-attempts",
        "5",
        "--json",
        cwd=repo / "src",
    )
    assert res.code == 0, res
    t = res.json()
    assert (t["id"], t["priority"], t["depends_on"], t["tags"], t["description"], t["max_attempts"], t["ready"]) == (
        "SD.13",
        1,
        ["T-1"],
        ["core", "parser"],
        "Parse it.",
        5,
        False,
    )
    assert daemon.ctl("task", "add", "bare number", "-p", "0", "--json", cwd=repo).json()["priority"] == 0


def test_list_order_filters_and_no_row_limit(daemon: Daemon, repo: Path) -> None:
    c = daemon.client()
    c.call(RepoAdd(path=str(repo)))
    for i in range(120):
        c.call(TaskAdd(title=f"bulk {i}", repo="proj", priority=3))
    c.call(TaskAdd(title="blocked urgent", id="B", repo="proj", priority=0, after=["T-1"]))
    c.call(TaskAdd(title="urgent", id="U", repo="proj", priority=0, tags=["hot"]))
    res = daemon.ctl("task", "list", "--json", cwd=repo)
    assert res.code == 0, res
    order = ids(res)
    assert len(order) == 122  # no default limit
    assert order[:3] == ["U", "T-1", "T-2"]  # ready first, then priority, then age
    assert order[-1] == "B"  # not ready: after every ready task despite P0
    assert ids(daemon.ctl("task", "list", "--ready", "--json", cwd=repo))[-1] == "T-120"
    assert ids(daemon.ctl("task", "list", "--tag", "hot", "--json", cwd=repo)) == ["U"]
    assert ids(daemon.ctl("task", "list", "--status", "claimed", "--json", cwd=repo)) == []
    text = daemon.ctl("task", "list", cwd=repo).out.splitlines()
    assert text[0].split() == ["ID", "PRI", "STATE", "AGE", "DEPENDS", "TITLE"]
    assert text[1].split()[:3] == ["U", "P0", "ready"] and text[-1].split()[:3] == ["B", "P0", "waiting"]


def test_list_all_repos(daemon: Daemon, make_git_repo) -> None:  # type: ignore[no-untyped-def]
    a, b = make_git_repo("alpha"), make_git_repo("beta")
    daemon.ctl("task", "add", "in alpha", cwd=a)
    daemon.ctl("task", "add", "in beta", "-p", "P0", cwd=b)
    res = daemon.ctl("task", "list", "--all-repos", "--json", cwd=a)
    assert [(t["repo"], t["title"]) for t in res.json()] == [("beta", "in beta"), ("alpha", "in alpha")]
    assert [t["title"] for t in daemon.ctl("task", "list", "--json", cwd=a).json()] == ["in alpha"]
    assert daemon.ctl("task", "list", "--repo", "beta", "--json").json()[0]["title"] == "in beta"
    out = daemon.ctl("task", "list", "--all-repos", cwd=a).out
    assert out.splitlines()[0].split()[0] == "REPO"


def test_show_edit_and_history(daemon: Daemon, repo: Path) -> None:
    daemon.ctl("task", "add", "dep", "--id", "A", cwd=repo)
    daemon.ctl("task", "add", "main thing", "--id", "B", "--after", "A", cwd=repo)
    res = daemon.ctl(
        "task",
        "edit",
        "B",
        "--title",
        "renamed",
        "--priority",
        "P0",
        "--tag",
        "x",
        "--description",
        "more words",
        cwd=repo,
    )
    assert res.code == 0 and res.out.strip() == "Edited B (P0, waiting) in proj: renamed", res
    shown = daemon.ctl("task", "show", "B", "--json", cwd=repo).json()
    t = shown["task"]
    assert (t["title"], t["priority"], t["tags"], t["description"], t["depends_on"]) == (
        "renamed",
        0,
        ["x"],
        "more words",
        ["A"],
    )
    assert [e["kind"] for e in shown["history"]] == ["task.added", "task.edited"]
    assert shown["history"][1]["data"]["fields"] == ["description", "priority", "tags", "title"]
    assert daemon.ctl("task", "show", "A", "--json", cwd=repo).json()["task"]["dependants"] == ["B"]
    text = daemon.ctl("task", "show", "B", cwd=repo).out
    assert "B: renamed" in text and "after      A" in text and "attempts 0/3" in text and "task.edited" in text
    nothing = daemon.ctl("task", "edit", "B", cwd=repo)
    assert nothing.code == 1 and "Nothing to change" in nothing.err


def test_cancel_retry_hold_release(daemon: Daemon, repo: Path) -> None:
    daemon.ctl("task", "add", "x", "--id", "X", cwd=repo)
    assert daemon.ctl("task", "hold", "X", cwd=repo).out.startswith("Holding X (P2, held)")
    assert daemon.ctl("task", "claim", cwd=repo).code == 3  # a held task is never claimed
    again = daemon.ctl("task", "hold", "X", cwd=repo)
    assert again.code == 1 and "already on hold" in again.err
    assert daemon.ctl("task", "release", "X", cwd=repo).out.startswith("Released X (P2, ready)")
    claimed = daemon.ctl("task", "claim", "--worker", "agent-7", cwd=repo)
    assert claimed.code == 0 and claimed.out == "X\tx\n"
    # the claimer went away: `task release` puts it back
    released = daemon.ctl("task", "release", "X", "--json", cwd=repo).json()
    assert (released["status"], released.get("claimed_by")) == ("pending", None)
    nothing = daemon.ctl("task", "release", "X", cwd=repo)
    assert nothing.code == 1 and "nothing to release" in nothing.err
    assert daemon.ctl("task", "cancel", "X", cwd=repo).out.startswith("Cancelled X (P2, cancelled)")
    twice = daemon.ctl("task", "cancel", "X", cwd=repo)
    assert twice.code == 1 and "already cancelled" in twice.err
    assert daemon.ctl("task", "retry", "X", "--json", cwd=repo).json()["status"] == "pending"
    bad = daemon.ctl("task", "retry", "X", cwd=repo)
    assert bad.code == 1 and "only a failed or cancelled task can be retried" in bad.err
    kinds = [e["kind"] for e in daemon.ctl("task", "show", "X", "--json", cwd=repo).json()["history"]]
    assert kinds == [
        "task.added",
        "task.held",
        "task.released",
        "task.claimed",
        "task.status",
        "task.status",
        "task.status",
    ]


def test_dependencies_and_cycles(daemon: Daemon, repo: Path) -> None:
    for tid in "ABC":
        daemon.ctl("task", "add", f"task {tid}", "--id", tid, cwd=repo)
    assert daemon.ctl("task", "dep", "add", "A", "B", cwd=repo).code == 0
    assert daemon.ctl("task", "dep", "add", "B", "C", cwd=repo).code == 0
    res = daemon.ctl("task", "dep", "add", "C", "A", cwd=repo)
    assert res.code == 1
    assert res.err.strip() == "chkdctl: C cannot depend on A: that would make a cycle (C → A → B → C)."
    selfdep = daemon.ctl("task", "dep", "add", "A", "A", cwd=repo)
    assert selfdep.code == 1 and "(A → A)" in selfdep.err
    unknown = daemon.ctl("task", "dep", "add", "A", "Z", cwd=repo)
    assert unknown.code == 1 and "has no task 'Z'" in unknown.err
    listed = {t["id"]: t for t in daemon.ctl("task", "list", "--json", cwd=repo).json()}
    assert [listed[t]["ready"] for t in "ABC"] == [False, False, True]
    assert listed["A"]["depends_on"] == ["B"]  # the refused edges left nothing behind
    assert daemon.ctl("task", "dep", "rm", "A", "B", cwd=repo).out.strip() == "A now runs after: nothing (ready)."
    missing = daemon.ctl("task", "dep", "rm", "A", "B", cwd=repo)
    assert missing.code == 1 and "does not depend on" in missing.err


def test_claim_respects_priority_and_dependencies(daemon: Daemon, repo: Path) -> None:
    c = daemon.client()
    c.call(RepoAdd(path=str(repo)))
    c.call(TaskAdd(title="p2 first", id="p2a", repo="proj"))
    c.call(TaskAdd(title="p3", id="p3", repo="proj", priority=3))
    c.call(TaskAdd(title="p0 after p3", id="p0", repo="proj", priority=0, after=["p3"]))
    c.call(TaskAdd(title="p2 second", id="p2b", repo="proj", tags=["web"]))
    c.call(TaskAdd(title="p1", id="p1", repo="proj", priority=1))
    got = [c.call(Claim(repo="proj", worker="w")).task.id for _ in range(4)]
    assert got == ["p1", "p2a", "p2b", "p3"]
    assert c.call(Claim(repo="proj")).task is None  # p0 waits for p3
    empty = daemon.ctl("task", "claim", cwd=repo)
    assert (empty.code, empty.out, empty.err.strip()) == (3, "", "Nothing is ready to claim.")
    as_json = daemon.ctl("task", "claim", "--json", cwd=repo)
    assert (as_json.code, as_json.out.strip()) == (3, "null")
    c.call(TaskAdd(title="tagged", id="tg", repo="proj", tags=["web"]))
    c.call(TaskAdd(title="untagged", id="ut", repo="proj", priority=0))
    res = daemon.ctl("--json", "task", "claim", "--tag", "web", "--worker", "peer-5", cwd=repo)
    assert res.code == 0 and (res.json()["id"], res.json()["claimed_by"], res.json()["status"]) == (
        "tg",
        "peer-5",
        "claimed",
    )


def test_bad_input_is_a_clear_error_and_changes_nothing(daemon: Daemon, repo: Path, tmp_path: Path) -> None:
    assert daemon.ctl("task", "add", "seed", "--id", "S", cwd=repo).code == 0
    before = daemon.ctl("task", "list", "--json", cwd=repo).out
    cases = [
        (["task", "add", "dup", "--id", "S"], 1, "The repository 'proj' already has a task 'S'."),
        (["task", "add", "x", "--priority", "P9"], 2, "P9 does not exist; use P0 (most urgent) to P4."),
        (["task", "add", "x", "--priority", "urgent"], 2, "'urgent' is not a priority"),
        (["task", "add", "   "], 1, "The task title is empty; give it a few words."),
        (["task", "add", "x", "--after", "nope"], 1, "no such task in 'proj'"),
        (["task", "add", "x", "--repo", "nope"], 1, "No registered repository is named or contains 'nope'."),
        (["task", "show", "nope"], 1, "The repository 'proj' has no task 'nope'."),
        (["task", "list", "--repo", "nope"], 1, "No registered repository is named or contains 'nope'."),
        (["task", "add", "x", "--id", "bad id"], 1, "'bad id' is not a valid task id: it may use only letters, digits"),
    ]
    for args, code, words in cases:
        res = daemon.ctl(*args, cwd=repo)
        assert res.code == code and words in res.err, (args, res)
        assert "Traceback" not in res.err
    assert daemon.ctl("task", "list", "--json", cwd=repo).out == before
    # a git repository with no commits is not registered by `task add`
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    res = daemon.ctl("task", "add", "x", cwd=empty)
    assert res.code == 1 and "has no commits yet" in res.err
    assert len(daemon.ctl("--json", "repo", "list").json()) == 1


def test_commands_find_the_repository_from_a_worktree_or_outside_any_repo(
    daemon: Daemon, repo: Path, tmp_path: Path
) -> None:
    daemon.ctl("task", "add", "x", cwd=repo)
    worktree = tmp_path / "proj-wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(worktree))
    assert ids(daemon.ctl("task", "list", "--json", cwd=worktree)) == ["T-1"]
    assert daemon.ctl("task", "add", "from the worktree", cwd=worktree).out.startswith("Added T-2 (P2, ready) in proj")
    outside = tmp_path / "plain-dir"
    outside.mkdir()
    assert ids(daemon.ctl("task", "list", "--json", cwd=outside)) == ["T-1", "T-2"]  # the only repository
    assert len(daemon.ctl("--json", "repo", "list").json()) == 1


def test_claim_over_the_protocol_marks_and_events(daemon: Daemon, repo: Path) -> None:
    c = daemon.client()
    c.call(RepoAdd(path=str(repo)))
    c.call(TaskAdd(title="one", id="one", repo=str(repo)))
    c.call(TaskAdd(title="two", id="two", repo=str(repo)))
    c.call(DepAdd(task="two", depends_on="one", repo="proj"))
    claimed = c.call(Claim(repo=str(repo / "README.md"), worker="peer-1")).task
    assert (claimed.id, claimed.status, claimed.claimed_by, claimed.dependants, claimed.ready) == (
        "one",
        "claimed",
        "peer-1",
        ["two"],
        False,
    )
    listed = c.call(TaskList(repo="proj", status="claimed")).tasks
    assert [t.id for t in listed] == ["one"]
    shown = daemon.ctl("task", "show", "one", "--json", cwd=repo).json()["history"]
    assert shown[-1]["kind"] == "task.claimed" and shown[-1]["worker_id"] == "peer-1"
    assert shown[-1]["repo"] == "proj" and shown[-1]["task_id"] == "one"


def test_protocol_bad_input_gets_err_replies(daemon: Daemon, repo: Path) -> None:
    import pytest

    from chkd.protocol.errors import ChkdError
    from chkd.protocol.messages import TaskEdit, TaskImport

    c = daemon.client()
    c.call(RepoAdd(path=str(repo)))
    cases = [
        (TaskAdd(title="x", repo="proj", priority=9), "bad_request", "Priority P9 does not exist"),
        (TaskAdd(title="x", repo="proj", priority=-1), "bad_request", "P-1 does not exist"),
        (TaskAdd(title="\n\t", repo="proj"), "bad_request", "title is empty"),
        (TaskAdd(title="x", repo="proj", tags=["two words"]), "bad_request", "not a valid tag"),
        (TaskEdit(id="nope", repo="proj", title="y"), "not_found", "has no task 'nope'"),
        (TaskImport(text="- [ ] a\0b", repo="proj"), "bad_request", "binary file"),
        (Claim(repo="/nonexistent/dir"), "not_found", "No registered repository"),
    ]
    for body, code, words in cases:
        with pytest.raises(ChkdError) as err:
            c.call(body)
        assert err.value.code == code and words in err.value.message, body
    assert c.call(TaskList(repo="proj")).tasks == []
    report = c.call(TaskImport(text="\ufffd" * 1000 + "\n- [ ] fine\n", repo="proj"))
    assert report.new == ["T.1"]
