"""The blocking merge engine (daemon/mergeengine.py) against real repositories, no daemon."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from chkd.daemon import mergeengine
from chkd.protocol.errors import ChkdError

from conftest import busy_for, git, make_repo


def _branch(repo: Path, name: str, files: dict[str, str], msg: str = "work") -> Path:
    """A worktree beside the repo on a new branch `name` from main, with `files` committed."""
    wt = repo.parent / f"wt-{name.replace('/', '-')}"
    git(repo, "worktree", "add", "-q", "-b", name, str(wt), "main")
    for f, text in files.items():
        (wt / f).parent.mkdir(parents=True, exist_ok=True)
        (wt / f).write_text(text)
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", msg)
    return wt


def _commit_main(repo: Path, files: dict[str, str], msg: str = "main moves") -> str:
    for f, text in files.items():
        (repo / f).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj", {"README.md": "hello\n", "a.txt": "one\ntwo\nthree\n"})


def test_clean_plan_lands_by_cas_and_updates_clean_checkout(proj: Path) -> None:
    _branch(proj, "chkd/T-1", {"new.txt": "new\n"})
    old = git(proj, "rev-parse", "main")
    plan = mergeengine.plan(proj, "main", "refs/heads/chkd/T-1", "Merge T-1")
    assert plan.conflict_files == [] and plan.commit and not plan.already_in
    assert git(proj, "rev-parse", "main") == old  # planning moves nothing
    parents = git(proj, "rev-list", "--parents", "-n", "1", plan.commit).split()[1:]
    assert parents == [old, plan.head_sha]
    res = mergeengine.land(proj, "main", plan.commit, old)
    assert not res.moved and res.updated_checkouts == [str(proj)]
    assert git(proj, "rev-parse", "main") == plan.commit
    assert (proj / "new.txt").read_text() == "new\n"
    assert git(proj, "status", "--porcelain") == ""


def test_conflict_plan_lists_files_and_changes_nothing(proj: Path) -> None:
    _branch(proj, "chkd/T-2", {"a.txt": "ONE\ntwo\nthree\n"})
    old = _commit_main(proj, {"a.txt": "uno\ntwo\nthree\n"})
    refs_before = git(proj, "for-each-ref")
    plan = mergeengine.plan(proj, "main", "refs/heads/chkd/T-2", "Merge T-2")
    assert plan.tree is None and plan.commit is None and plan.conflict_files == ["a.txt"]
    assert git(proj, "for-each-ref") == refs_before
    assert git(proj, "rev-parse", "main") == old
    assert (proj / "a.txt").read_text() == "uno\ntwo\nthree\n"


def test_dirty_checkout_refuses_and_writes_nothing(proj: Path) -> None:
    _branch(proj, "chkd/T-3", {"new.txt": "new\n"})
    (proj / "README.md").write_text("local edit\n")
    old = git(proj, "rev-parse", "main")
    plan = mergeengine.plan(proj, "main", "refs/heads/chkd/T-3", "m")
    with pytest.raises(ChkdError) as err:
        mergeengine.land(proj, "main", plan.commit, old)
    assert err.value.code == "refused" and "README.md" in err.value.message
    assert git(proj, "rev-parse", "main") == old
    assert (proj / "README.md").read_text() == "local edit\n" and not (proj / "new.txt").exists()


def test_untracked_file_in_the_way_refuses(proj: Path) -> None:
    _branch(proj, "chkd/T-4", {"new.txt": "from branch\n"})
    (proj / "new.txt").write_text("mine, untracked\n")
    old = git(proj, "rev-parse", "main")
    plan = mergeengine.plan(proj, "main", "refs/heads/chkd/T-4", "m")
    with pytest.raises(ChkdError) as err:
        mergeengine.land(proj, "main", plan.commit, old)
    assert "new.txt" in err.value.message
    assert git(proj, "rev-parse", "main") == old and (proj / "new.txt").read_text() == "mine, untracked\n"


def _exclude(repo: Path, *patterns: str) -> None:
    with open(repo / ".git" / "info" / "exclude", "a") as f:
        f.write("".join(p + "\n" for p in patterns))


@pytest.mark.parametrize(
    ("brought", "users", "ignore"),
    [
        ("build.log", "build.log", "build.log"),  # an ignored file at the path the merge brings
        ("logs/today.txt", "logs", "logs"),  # an ignored file where a directory must go
        ("out", "out/cache.bin", "out/"),  # an ignored directory where a file must go
        ("new.txt", "new.txt", None),  # a plain untracked file
    ],
)
def test_untracked_or_ignored_paths_the_merge_needs_refuse_before_the_cas(
    proj: Path, brought: str, users: str, ignore: str | None
) -> None:
    _branch(proj, "chkd/T-8", {brought: "from branch\n"})
    if ignore:
        _exclude(proj, ignore)
    (proj / users).parent.mkdir(parents=True, exist_ok=True)
    (proj / users).write_bytes(b"mine\x00\n")
    old = git(proj, "rev-parse", "main")
    plan = mergeengine.plan(proj, "main", "refs/heads/chkd/T-8", "m")
    with pytest.raises(ChkdError) as err:
        mergeengine.land(proj, "main", plan.commit, old)
    assert err.value.code == "refused" and brought.split("/")[0] in err.value.message
    assert "nothing was merged" in err.value.message
    assert git(proj, "rev-parse", "main") == old and (proj / users).read_bytes() == b"mine\x00\n"


def test_a_tracked_file_becoming_a_directory_is_not_in_the_way(proj: Path) -> None:
    wt = _branch(proj, "chkd/T-9", {"extra.txt": "x\n"})
    git(wt, "rm", "-q", "a.txt")
    (wt / "a.txt").mkdir()
    (wt / "a.txt" / "inner.txt").write_text("now a directory\n")
    git(wt, "add", "-A")
    git(wt, "commit", "-q", "-m", "a.txt becomes a directory")
    old = git(proj, "rev-parse", "main")
    plan = mergeengine.plan(proj, "main", "refs/heads/chkd/T-9", "m")
    res = mergeengine.land(proj, "main", plan.commit, old)
    assert res.updated_checkouts == [str(proj)] and (proj / "a.txt" / "inner.txt").exists()
    assert git(proj, "status", "--porcelain") == ""


def test_target_moved_is_reported_not_forced(proj: Path) -> None:
    _branch(proj, "chkd/T-5", {"new.txt": "new\n"})
    old = git(proj, "rev-parse", "main")
    plan = mergeengine.plan(proj, "main", "refs/heads/chkd/T-5", "m")
    moved = _commit_main(proj, {"other.txt": "x\n"})
    res = mergeengine.land(proj, "main", plan.commit, old)
    assert res.moved and git(proj, "rev-parse", "main") == moved


def test_squash_merged_branch_counts_as_in_target(proj: Path) -> None:
    _branch(proj, "chkd/T-6", {"new.txt": "new\n", "a.txt": "one\n2\nthree\n"})
    git(proj, "merge", "-q", "--squash", "chkd/T-6")
    git(proj, "commit", "-q", "-m", "squashed")
    plan = mergeengine.plan(proj, "main", "refs/heads/chkd/T-6", "m")
    assert plan.already_in and plan.commit is None


def _ws(repo: Path) -> Any:
    from chkd.daemon.reposettings import Workspace

    return Workspace(main_checkout=str(repo), setup_cmd=None, setup_timeout_s=60, copy=[], setup_inputs=[])


def test_gate_runs_in_the_merge_result_and_reports_failure(proj: Path, tmp_path: Path) -> None:
    from chkd.daemon import gate

    _branch(proj, "chkd/T-7", {"new.txt": "new\n"})
    plan = mergeengine.plan(proj, "main", "refs/heads/chkd/T-7", "m")
    where, owner, log = str(tmp_path / "gate"), {"home": "/h"}, str(tmp_path / "gate.log")

    def run(cmd: list[str], timeout: float = 30) -> mergeengine.GateResult:
        return gate.run(str(proj), where, plan.commit, cmd, timeout, owner, _ws(proj), log)

    ok = run([sys.executable, "-c", "print(open('new.txt').read()); open('stray.txt', 'w').write('x')"])
    assert ok.ok and "new" in ok.output
    bad = run([sys.executable, "-c", "import os, sys; print('boom', os.path.exists('stray.txt')); sys.exit(3)"])
    assert not bad.ok and bad.returncode == 3 and "boom False" in bad.output  # `git clean -fd` between runs
    slow = run(busy_for(30), 0.5)
    assert not slow.ok and slow.timed_out and slow.seconds < 10
    missing = run(["no-such-test-runner-xyz"], 5)
    assert not missing.ok and "could not start" in missing.output
    assert git(proj, "worktree", "list").count("\n") == 2  # one persistent gate worktree, reused
    from chkd.daemon import worktrees

    assert worktrees.read_marker(where)["purpose"] == "gatetree"
    (tmp_path / "not-a-gate").mkdir()
    (tmp_path / "not-a-gate" / "file").write_text("mine")
    with pytest.raises(ChkdError, match="not chkd's gate worktree"):
        gate.bring_to(str(proj), str(tmp_path / "not-a-gate"), plan.commit, owner)
    assert (tmp_path / "not-a-gate" / "file").read_text() == "mine"


def test_update_branch_clean_then_conflict(proj: Path) -> None:
    wt = _branch(proj, "chkd/T-8", {"b.txt": "b\n"})
    _commit_main(proj, {"c.txt": "c\n"})
    res = mergeengine.update_branch(str(wt), "main")
    assert res.merged and not res.up_to_date and (wt / "c.txt").exists()
    assert mergeengine.update_branch(str(wt), "main").up_to_date
    (wt / "a.txt").write_text("branch\n")
    git(wt, "commit", "-qam", "branch edit")
    _commit_main(proj, {"a.txt": "main\n"})
    res = mergeengine.update_branch(str(wt), "main")
    assert not res.merged and res.conflict_files == ["a.txt"]
    assert "<<<<<<<" in (wt / "a.txt").read_text()
    with pytest.raises(ChkdError, match="already in progress"):
        mergeengine.update_branch(str(wt), "main")


def test_diff_shows_the_workers_change_only(proj: Path) -> None:
    wt = _branch(proj, "chkd/T-9", {"b.txt": "b\n"})
    _commit_main(proj, {"c.txt": "c\n"})
    (wt / "README.md").write_text("uncommitted\n")
    text, _base, _head = mergeengine.diff(proj, "main", "refs/heads/chkd/T-9", str(wt), stat=False)
    assert "b.txt" in text and "uncommitted" in text and "c.txt" not in text
    stat, _, _ = mergeengine.diff(proj, "main", "refs/heads/chkd/T-9", None, stat=True)
    assert "b.txt" in stat and "README" not in stat and "changed" in stat


def test_leftover_temporary_gates_of_older_versions_are_pruned_only_when_ours(proj: Path, tmp_path: Path) -> None:
    import json
    import time

    from chkd.daemon import worktrees

    # leftovers of killed daemons: ours (marked by this home), another home's, and an unmarked look-alike
    # (a daemon killed between `git worktree add` and marking left only the temporary directory's record)
    left = {}
    for name, home, where in (
        ("ours", "/h", "marker"),
        ("reserved", "/h", "reservation"),
        ("other", "/other", "marker"),
        ("other-reserved", "/other", "reservation"),
        ("unmarked", None, None),
    ):
        wt = tmp_path / f"{mergeengine.GATE_PREFIX}{name}" / "tree"
        wt.parent.mkdir()
        git(proj, "worktree", "add", "-q", "--detach", str(wt), "main")
        made = 1 if home == "/h" else int(time.time() * 1000)  # the other home's gates are recent
        owner = {"home": home, "worker": "w1", "purpose": "gate", "created_at": made}
        if where == "marker":
            worktrees.mark_worktree(wt, owner)
        elif where == "reservation":
            (wt.parent / worktrees.MARKER).write_text(json.dumps(owner))
        left[name] = wt
    assert mergeengine.prune_gates(proj, time.time() + 1, "/h") == 2
    assert not left["ours"].parent.exists() and not left["reserved"].parent.exists()
    kept = [left[n] for n in ("other", "other-reserved", "unmarked")]
    assert all(wt.is_dir() for wt in kept)
    listed = {
        ln.split(" ", 1)[1]
        for ln in git(proj, "worktree", "list", "--porcelain").splitlines()
        if ln.startswith("worktree ")
    }
    assert {str(wt) for wt in kept} <= listed and str(left["ours"]) not in listed
    assert mergeengine.prune_gates(proj, time.time() - 3600, "/other") == 0  # made after `before`: kept
