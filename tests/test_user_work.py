"""User work: nothing of a person's is touched — dirty and ignored files in the main checkout, a user
committing to main during a merge, the user's own worktrees and branches next to chkd's, a worktree
deleted by hand, and `attic restore` pointed at refs that are not chkd's.

Real daemon, real chkdctl, real git, the demo agent.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    AtticRestore,
    Events,
    MergeShow,
    RepoAdd,
    Spawn,
    TaskAdd,
    WorkerInfo,
    WorkerShow,
)

from conftest import BIN, Daemon, git, make_repo, wait_for

DEMO = str(BIN / "chkd-demo-agent")

CONFIG = """\
heartbeat_s = 0.5
heartbeat_timeout_s = 5
stall_timeout_s = 60
notify = false
max_workers = 6
"""

NOT_OURS = "not created by chkd"


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


@pytest.fixture
def proj(daemon: Daemon, tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "proj", {"README.md": "hello\n", "a.txt": "one\n"})
    daemon.call(RepoAdd(path=str(repo)))
    return repo


# -- helpers ------------------------------------------------------------------------------------------
def done_worker(daemon: Daemon, repo: Path, task: str, *agent_args: str) -> WorkerInfo:
    """A demo worker that made one commit (on `--conflict-file PATH` if given) and is done."""
    daemon.call(TaskAdd(title=f"task {task}", repo=str(repo), id=task))
    cmd = [DEMO, "--steps", "1", "--step-s", "0", *agent_args]
    w = daemon.call(Spawn(repo=str(repo), task_id=task, cmd=cmd)).worker
    return wait_for(lambda: _done(daemon, w.id), 20, what=f"worker {w.id} to be done")


def _done(daemon: Daemon, wid: str) -> WorkerInfo | None:
    w = daemon.call(WorkerShow(worker=wid)).worker
    assert w.status not in ("error", "dead"), w
    return w if w.status == "done" else None


def status(daemon: Daemon, wid: str) -> str:
    return daemon.call(WorkerShow(worker=wid)).worker.status


def refs(repo: Path) -> dict[str, str]:
    text = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ", 1) for line in text.splitlines())


def branches(repo: Path) -> set[str]:
    return set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())


def registered(repo: Path) -> set[str]:
    """Every worktree git knows (the directory may be gone)."""
    lines = git(repo, "worktree", "list", "--porcelain").splitlines()
    return {ln[len("worktree ") :] for ln in lines if ln.startswith("worktree ")}


def exclude(repo: Path, *patterns: str) -> None:
    """Ignore `patterns` the way a person does locally: .git/info/exclude."""
    info = repo / ".git" / "info"
    info.mkdir(exist_ok=True)
    with open(info / "exclude", "a") as f:
        f.write("".join(p + "\n" for p in patterns))


def gc_json(daemon: Daemon, repo: Path, *extra: str) -> list[dict[str, Any]]:
    """`chkdctl --json gc` items, with the defaults the JSON leaves out filled in."""
    res = daemon.ctl("--json", "gc", *extra, cwd=repo)
    assert res.code == 0, res
    return [{"removable": True, "removed": False, **it} for it in res.json().get("items", [])]


def gc_items(daemon: Daemon, repo: Path) -> dict[str, Any]:
    return {it["what"]: it for it in gc_json(daemon, repo)}


def merge(daemon: Daemon, repo: Path, wid: str, *extra: str) -> Any:
    return daemon.ctl("merge", wid, "--strategy", "auto", *extra, cwd=repo)


# -- dirty and ignored files in the main checkout ------------------------------------------------------
@pytest.mark.timeout(60)
def test_a_merge_touching_a_dirty_tracked_file_is_refused_and_the_file_unchanged(daemon: Daemon, proj: Path) -> None:
    w = done_worker(daemon, proj, "T1", "--conflict-file", "README.md")
    mine = b"my local edit\r\nwith \x00 odd bytes\n"
    (proj / "README.md").write_bytes(mine)
    main_sha = git(proj, "rev-parse", "main")
    res = merge(daemon, proj, w.id)
    assert res.code == 1 and "uncommitted changes to README.md" in res.err and "nothing was merged" in res.err, res
    assert git(proj, "rev-parse", "main") == main_sha
    assert (proj / "README.md").read_bytes() == mine
    assert status(daemon, w.id) == "done"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("brought", "users"), [("build.log", "build.log"), ("logs/today.txt", "logs")], ids=["same-path", "parent-path"]
)
def test_an_ignored_file_at_a_path_the_merge_brings_is_refused_and_unchanged(
    daemon: Daemon, proj: Path, brought: str, users: str
) -> None:
    w = done_worker(daemon, proj, "T1", "--conflict-file", brought)
    exclude(proj, users)  # a local, ignored file of the user's where the merge brings a tracked one
    mine = b"local build output, not in git\n"
    (proj / users).write_bytes(mine)
    assert git(proj, "status", "--porcelain") == ""  # ignored: the checkout counts as clean
    main_sha = git(proj, "rev-parse", "main")
    res = merge(daemon, proj, w.id)
    assert res.code == 1 and users in res.err and "nothing was merged" in res.err, res
    assert "Traceback" not in res.err
    assert git(proj, "rev-parse", "main") == main_sha
    assert (proj / users).read_bytes() == mine
    assert status(daemon, w.id) == "done"
    # once the user moved the file away, the same merge goes through
    (proj / users).rename(proj.parent / "saved-by-user")
    assert merge(daemon, proj, w.id).code == 0
    assert (proj / brought).read_text().startswith("T1 by ")


@pytest.mark.timeout(60)
def test_unrelated_untracked_and_ignored_files_survive_a_merge(daemon: Daemon, proj: Path) -> None:
    w = done_worker(daemon, proj, "T1")
    exclude(proj, ".env", "cache/")
    mine = {"notes.txt": b"untracked notes\n", ".env": b"SECRET=1\n", "cache/blob.bin": bytes(range(256))}
    for name, data in mine.items():
        (proj / name).parent.mkdir(exist_ok=True)
        (proj / name).write_bytes(data)
    res = merge(daemon, proj, w.id)
    assert res.code == 0, res
    assert (proj / "chkd-demo-T1.txt").exists()
    assert {name: (proj / name).read_bytes() for name in mine} == mine
    assert git(proj, "status", "--porcelain") == "?? notes.txt"


# -- a user committing to main during a merge ------------------------------------------------------------
#: The test gate (it runs between the conflict check and the CAS): the first time it runs, the user
#: commits to main in the main checkout, so the CAS that follows must lose.
USER_COMMITS = r"""
import os, subprocess, sys
flag, main = sys.argv[1], sys.argv[2]
if not os.path.exists(flag):
    open(flag, "w").close()
    subprocess.run(["git", "-C", main, "commit", "-q", "--allow-empty", "-m", "user: committed during the merge"],
                   check=True)
"""


@pytest.mark.timeout(60)
def test_a_user_commit_during_the_merge_is_kept_and_the_merge_lands_on_top(daemon: Daemon, tmp_path: Path) -> None:
    proj = make_repo(tmp_path / "proj")
    flag = tmp_path / "user-committed"
    daemon.call(RepoAdd(path=str(proj), test_cmd=[sys.executable, "-c", USER_COMMITS, str(flag), str(proj)]))
    w = done_worker(daemon, proj, "T1")
    before = git(proj, "rev-parse", "main")
    res = merge(daemon, proj, w.id)
    assert res.code == 0, res
    user = git(proj, "log", "--format=%H", "--grep=^user: committed during the merge", "main")
    assert user and user != before and flag.exists()
    head = git(proj, "rev-parse", "main")
    assert git(proj, "rev-list", "--parents", "-n", "1", head).split()[1] == user  # on top of the user's commit
    git(proj, "merge-base", "--is-ancestor", user, head)  # raises unless the user's commit is in main
    assert git(proj, "rev-parse", f"{user}^") == before
    assert git(proj, "status", "--porcelain") == "" and (proj / "chkd-demo-T1.txt").exists()
    m = daemon.call(MergeShow(worker=w.id)).merge
    assert m.status == "merged" and m.result_sha == head
    checks = [e for e in daemon.call(Events(since=0, limit=1000)).events if e.kind == "merge.checking"]
    assert len(checks) == 2 and "moved" in (checks[1].data.why or "")


# -- the user's own worktrees and branches next to chkd's ---------------------------------------------------
def _users_things(proj: Path, tmp_path: Path) -> dict[str, Path]:
    """Worktrees and branches a person made by hand, named the way chkd names its own."""
    exclude(proj, "*.log")
    hotfix = tmp_path / "proj-hotfix"  # matches worktree_pattern ../{repo}-{task}
    git(proj, "worktree", "add", "-q", str(hotfix), "-b", "hotfix")
    (hotfix / "debug.log").write_text("the user's ignored notes\n")
    elsewhere = tmp_path / "elsewhere"  # on a chkd/... branch
    git(proj, "worktree", "add", "-q", str(elsewhere), "-b", "chkd/mine")
    gone = tmp_path / "proj-gone"  # registered, directory deleted by the user
    git(proj, "worktree", "add", "-q", str(gone), "-b", "gone")
    shutil.rmtree(gone)
    git(proj, "branch", "chkd/old")  # merged, no worktree
    return {"hotfix": hotfix, "elsewhere": elsewhere, "gone": gone}


@pytest.mark.timeout(60)
def test_gc_removes_none_of_a_users_own_worktrees_and_branches(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    mine = _users_things(proj, tmp_path)
    before_refs, before_wts = refs(proj), registered(proj)
    items = gc_items(daemon, proj)
    for what in (str(mine["hotfix"]), str(mine["elsewhere"]), str(mine["gone"]), "chkd/old"):
        assert what in items, items
        assert items[what]["removable"] is False and NOT_OURS in items[what]["reason"], items[what]
    assert not any(it["removed"] for it in gc_json(daemon, proj, "--apply"))
    assert refs(proj) == before_refs and registered(proj) == before_wts
    assert (mine["hotfix"] / "debug.log").read_text() == "the user's ignored notes\n"
    assert (mine["elsewhere"] / "README.md").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("daemon_config", [CONFIG + 'branch_prefix = "release-"\n'])
def test_gc_never_deletes_merged_branches_that_match_the_branch_prefix(daemon: Daemon, proj: Path) -> None:
    git(proj, "branch", "develop")
    git(proj, "branch", "release-1")
    before = refs(proj)
    items = gc_items(daemon, proj)
    assert items["release-1"]["removable"] is False and NOT_OURS in items["release-1"]["reason"]
    assert daemon.ctl("gc", "--apply", cwd=proj).code == 0
    assert refs(proj) == before


# -- a worktree deleted by hand ----------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_a_worktree_deleted_by_hand_is_handled_through_its_record(daemon: Daemon, proj: Path, tmp_path: Path) -> None:
    merged = done_worker(daemon, proj, "T1")
    unmerged = done_worker(daemon, proj, "T2")
    git(proj, "merge", "-q", "--squash", merged.branch)  # the user merged T1's work by hand
    git(proj, "commit", "-q", "-m", "squash T1")
    for w in (merged, unmerged):
        shutil.rmtree(w.worktree)
    users_gone = tmp_path / "proj-mine"  # the user's own worktree, also deleted by hand
    git(proj, "worktree", "add", "-q", str(users_gone), "-b", "mine")
    shutil.rmtree(users_gone)
    users_kept = tmp_path / "proj-keep"
    git(proj, "worktree", "add", "-q", str(users_kept), "-b", "keep")
    items = gc_items(daemon, proj)
    assert items[merged.id]["removable"] is True and "is gone" in items[merged.id]["reason"]
    assert items[unmerged.id]["removable"] is False and "not in main" in items[unmerged.id]["reason"]
    assert NOT_OURS in items[str(users_gone)]["reason"] and NOT_OURS in items[str(users_kept)]["reason"]
    assert {it["what"] for it in gc_json(daemon, proj, "--apply") if it["removed"]} == {merged.id}
    gone = daemon.ctl("worker", "show", merged.id, cwd=proj)
    assert gone.code == 1 and "No worker" in gone.err
    assert merged.branch not in branches(proj) and merged.worktree not in registered(proj)
    # the record that still holds work, and everything of the user's, stay
    assert status(daemon, unmerged.id) == "done" and unmerged.branch in branches(proj)
    assert {"mine", "keep", "main"} <= branches(proj)
    assert {str(users_gone), str(users_kept)} <= registered(proj) and (users_kept / "README.md").exists()


# -- attic restore --------------------------------------------------------------------------------------------
@pytest.fixture
def attic(daemon: Daemon, proj: Path) -> tuple[str, str]:
    """An attic entry made the way chkd makes them: `rm --force` of a worker with unmerged work."""
    w = done_worker(daemon, proj, "R")
    res = daemon.ctl("rm", w.id, "--force", cwd=proj)
    assert res.code == 0 and f"refs/chkd/attic/{w.id}" in res.out, res
    return w.id, git(proj, "rev-parse", f"refs/chkd/attic/{w.id}")


def restore_error(daemon: Daemon, proj: Path, ref: str, branch: str | None) -> ChkdError:
    with pytest.raises(ChkdError) as err:
        daemon.call(AtticRestore(ref=ref, branch=branch, repo=str(proj)))
    assert "\n" not in err.value.message
    return err.value


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/main",
        "refs/tags/v1",
        "refs/chkd/attic/w1/x",
        "refs/chkd/attic/",
        "heads/main",
        "attic/../heads/main",
        "-x",
        "refs/chkd/other/w1",
    ],
)
def test_attic_restore_refuses_anything_but_chkds_attic_entries(
    daemon: Daemon, proj: Path, attic: tuple[str, str], ref: str
) -> None:
    git(proj, "tag", "v1")
    before = refs(proj)
    err = restore_error(daemon, proj, ref, "oops")
    assert err.code == "bad_request" and "attic" in err.message, err
    assert refs(proj) == before and "oops" not in branches(proj)
    res = daemon.ctl("attic", "restore", "--branch", "oops", "--", ref, cwd=proj)
    assert res.code == 1 and res.err.startswith("chkdctl: ") and "Traceback" not in res.err, res
    assert refs(proj) == before
    assert git(proj, "log", "-1", "--format=%s", "main") == "initial"  # main is intact


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("branch", "code", "words"),
    [
        ("main", "conflict", "main"),
        ("chkd/R", "conflict", "chkd/R"),
        ("bad..name", "bad_request", "not a valid branch name"),
        ("-x", "bad_request", "not a valid branch name"),
        ("x.lock", "bad_request", "not a valid branch name"),
        ("@{-1}", "bad_request", "not a valid branch name"),
    ],
)
def test_attic_restore_refuses_an_existing_or_invalid_target_branch(
    daemon: Daemon, proj: Path, attic: tuple[str, str], branch: str, code: str, words: str
) -> None:
    wid, _sha = attic
    git(proj, "checkout", "-q", "-b", "side")  # so @{-1} could expand to main
    git(proj, "checkout", "-q", "main")
    git(proj, "branch", "chkd/R")  # the worker's old branch name, now the user's
    before = refs(proj)
    err = restore_error(daemon, proj, wid, branch)
    assert err.code == code and words in err.message, err
    assert refs(proj) == before
    res = daemon.ctl("attic", "restore", wid, f"--branch={branch}", cwd=proj)
    assert res.code == 1 and words in res.err and "Traceback" not in res.err, res
    assert refs(proj) == before


@pytest.mark.timeout(60)
def test_attic_restore_creates_the_branch_and_removes_only_the_attic_ref(
    daemon: Daemon, proj: Path, attic: tuple[str, str]
) -> None:
    wid, sha = attic
    before = refs(proj)
    res = daemon.ctl("attic", "restore", f"attic/{wid}", "--branch", "rescued", cwd=proj)
    assert res.code == 0 and "as branch rescued" in res.out, res
    after = refs(proj)
    assert after.pop("refs/heads/rescued") == sha
    expected = dict(before)
    del expected[f"refs/chkd/attic/{wid}"]
    assert after == expected


@pytest.mark.timeout(60)
def test_attic_restore_picks_a_free_default_name_and_says_so(
    daemon: Daemon, proj: Path, attic: tuple[str, str]
) -> None:
    wid, sha = attic
    git(proj, "branch", "chkd/R")  # the worker's old branch name is taken meanwhile
    users = git(proj, "rev-parse", "chkd/R")
    res = daemon.ctl("attic", "restore", wid, cwd=proj)
    assert res.code == 0 and "as branch chkd/R-2" in res.out and "chkd/R" in res.out.split("chkd/R-2", 1)[1], res
    assert git(proj, "rev-parse", "chkd/R-2") == sha and git(proj, "rev-parse", "chkd/R") == users
    assert f"refs/chkd/attic/{wid}" not in refs(proj)
