"""No code from the current directory runs as chkd (issue 10, defect 6).

A repository may hold a folder named `chkd/`. Processes chkd starts with `python -m …`
must never import it: the daemon autostarted by a chkdctl run inside that repository,
the shim it starts for a worker, and everything after.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chkd.client import daemonctl
from chkd.protocol.messages import WorkerShow

from conftest import BIN, DEFAULT_TEST_CONFIG, Daemon, _kill_strays, make_repo, wait_for

DEMO = str(BIN / "chkd-demo-agent")


def _trap_package(marker: Path) -> str:
    """A `chkd/__init__.py` that leaves a mark when imported, and otherwise looks like chkd."""
    return (
        f"import os, sys\n"
        f"with open({str(marker)!r}, 'a') as fh:\n"
        f"    fh.write(f'{{os.getpid()}} {{sys.argv!r}}\\n')\n"
        f"__version__ = '0.0.0+trap'\n"
    )


@pytest.fixture
def autostarted(chkd_home: Path) -> Iterator[Daemon]:
    """A home whose daemon only chkdctl itself starts (autostart on); stopped afterwards."""
    d = Daemon(chkd_home)
    d.write_config(DEFAULT_TEST_CONFIG)
    try:
        yield d
    finally:
        try:
            daemonctl.stop(d.paths)
        finally:
            _kill_strays(chkd_home)


def test_a_chkd_folder_in_the_repository_is_never_imported(tmp_path: Path, autostarted: Daemon) -> None:
    marker = tmp_path / "imported-from-cwd"
    repo = make_repo(tmp_path / "proj", {"README.md": "# trap\n", "chkd/__init__.py": _trap_package(marker)})

    res = autostarted.ctl(
        "spawn",
        "T1",
        "--title",
        "Trap",
        "--cmd",
        f"{DEMO} --steps 1 --step-s 0",
        cwd=repo,
        env={"CHKD_NO_AUTOSTART": "0"},
    )
    assert res.code == 0, res
    client = autostarted.client()
    wait_for(lambda: client.call(WorkerShow(worker="w1")).worker.status == "done", 20, what="the worker to finish")

    assert daemonctl.is_running(autostarted.paths)
    assert not marker.exists(), f"the repository's chkd/ was imported: {marker.read_text()}"


def test_a_relative_repo_path_means_chkdctl_s_directory_not_the_daemon_s(daemon: Daemon, repo: Path) -> None:
    """The daemon runs in a neutral directory, so `--repo .` or `--repo ../proj` is resolved where it was typed."""
    (repo / "sub").mkdir()
    added = daemon.ctl("task", "add", "Relative", "--id", "R1", "--repo", "..", cwd=repo / "sub")
    assert added.code == 0, added
    listed = daemon.ctl("--json", "task", "list", "--repo", ".", cwd=repo)
    assert listed.code == 0, listed
    assert [t["id"] for t in listed.json()] == ["R1"]
    assert [t["repo"] for t in listed.json()] == [repo.name]
