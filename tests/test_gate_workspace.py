"""The persistent gate tests the merge result, not the main checkout (issue 14).

A small real package with a `src/` layout, "installed editable" into a venv the test creates
(a path entry in the venv's site-packages pointing at the main checkout's `src/`, which is what an
editable install is; created with `--without-pip`, so it is fast and offline). That shared venv is the
trap: a gate run with it imports the main checkout's code.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from test_merge import CONFIG, add_repo, done_worker, events

from chkd.daemon import gate
from chkd.protocol.messages import Merge, MergeShow

from conftest import Daemon, git, make_repo, wait_for

PKG = {
    ".gitignore": ".venv/\n__pycache__/\n",
    "pyproject.toml": '[project]\nname = "mypkg"\nversion = "0"\n',
    "src/mypkg/__init__.py": "def greet():\n    return 'hello'\n",
    "tests/__init__.py": "",
    "tests/test_greet.py": textwrap.dedent("""\
        import unittest
        import mypkg

        class Greet(unittest.TestCase):
            def test_greet(self):
                self.assertEqual(mypkg.greet(), 'hello')
        """),
}
#: A good change: a new function and a test that imports it.
GOOD = {
    "src/mypkg/__init__.py": "def greet():\n    return 'hello'\n\n\ndef wave():\n    return 'o/'\n",
    "tests/test_wave.py": "import unittest\nfrom mypkg import wave\n\n\nclass Wave(unittest.TestCase):\n"
    "    def test_wave(self):\n        self.assertEqual(wave(), 'o/')\n",
}
#: A bad change: breaks the module, its tests unchanged.
BAD = {"src/mypkg/__init__.py": "def greet():\n    return 'bye'\n"}
UNITTEST = ["-m", "unittest", "discover", "-s", "tests", "-t", "."]
#: setup_cmd: the gate's own venv, with the package installed editable from the gate worktree itself.
SETUP = [
    "sh",
    "-c",
    f"{sys.executable} -m venv --without-pip --system-site-packages .venv && "
    "echo \"$CHKD_WORKTREE/src\" > \"$(.venv/bin/python -c 'import sysconfig; "
    "print(sysconfig.get_paths()[\"purelib\"])')/mypkg.pth\" && echo SETUP-DONE",
]


@pytest.fixture
def daemon_config() -> str:
    return CONFIG


def editable_venv(where: Path, src: Path) -> Path:
    """A venv at `where` with `src` on its path (an editable install of the package); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(where)], check=True)
    py = where / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "mypkg.pth").write_text(f"{src}\n")
    return py


def merged(daemon: Daemon, worker_id: str) -> Any:
    m = daemon.call(Merge(worker=worker_id, strategy="auto")).merge
    return wait_for(
        lambda: (x := daemon.call(MergeShow(id=m.id)).merge).status in ("merged", "failed", "conflict") and x,
        30,
        what=f"merge {m.id}",
    )


def test_the_suspect_rule() -> None:
    out = (
        "ImportError: cannot import name 'wave' from 'mypkg' (/m/proj/src/mypkg/__init__.py)\n"
        'File "/g/tests/test_wave.py", line 2'
    )
    assert gate.suspect(out, "/m/proj", "/g") == "/m/proj/src/mypkg/__init__.py"
    assert gate.suspect('File "/g/src/mypkg/__init__.py" (also /m/proj/src/mypkg/__init__.py)', "/m/proj", "/g") is None
    assert gate.suspect("a worker's /m/proj-t1/src/x.py is not the main checkout", "/m/proj", "/g") is None
    assert gate.suspect("Ran 3 tests, OK", "/m/proj", "/g") is None


def test_a_shared_editable_env_makes_the_gate_suspect(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", PKG)
    shared = editable_venv(tmp_path / "shared-venv", repo / "src")
    add_repo(daemon, repo, test_cmd=[str(shared), *UNITTEST])
    w = done_worker(daemon, repo, "add wave", GOOD)
    m = merged(daemon, w.id)
    # the good change fails: the gate imported the main checkout's mypkg, which has no wave()
    assert m.status == "failed"
    main_file = f"{repo}/src/mypkg/__init__.py"
    assert f"the gate read {main_file} from the main checkout" in m.log and "set `setup_cmd`" in m.log
    [ev] = events(daemon, "merge.gate_suspect")
    assert ev.data.path == main_file and ev.data.merge_id == m.id


def test_with_setup_cmd_the_gate_tests_the_merge_result(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj", PKG)
    editable_venv(tmp_path / "shared-venv", repo / "src")  # still there: the gate must not use it
    add_repo(daemon, repo, test_cmd=[".venv/bin/python", *UNITTEST])
    import shlex

    res = daemon.ctl("repo", "edit", "proj", "--setup-cmd", shlex.join(SETUP), "--setup-input", "pyproject.toml")
    assert res.code == 0, res
    bad = done_worker(daemon, repo, "break greet", BAD)
    good = done_worker(daemon, repo, "add wave", GOOD)
    before = git(repo, "rev-parse", "main")
    m_bad = merged(daemon, bad.id)
    assert m_bad.status == "failed" and "AssertionError: 'bye' != 'hello'" in m_bad.log
    assert git(repo, "rev-parse", "main") == before
    m_good = merged(daemon, good.id)
    assert m_good.status == "merged", m_good.log
    assert "def wave" in git(repo, "show", "main:src/mypkg/__init__.py")
    assert "setup ran in the gate" in m_bad.log and "setup ran in the gate" not in m_good.log  # once
    assert events(daemon, "merge.gate_suspect") == []
    gate_dir = Path(gate.gate_path(daemon.paths.state, 1, "proj"))
    assert (gate_dir / ".venv").is_dir()  # ignored: survives `git clean -fd` between merges
    assert git(gate_dir, "rev-parse", "HEAD") == m_good.result_sha


def test_gate_strict_fails_a_passing_gate_that_read_the_main_checkout(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    add_repo(daemon, repo, test_cmd=[sys.executable, "-c", f"print('loaded {repo}/src/mod.py')"])
    assert daemon.ctl("repo", "edit", "proj", "--gate-strict").code == 0
    w = done_worker(daemon, repo, "anything", {"f.txt": "1\n"})
    before = git(repo, "rev-parse", "main")
    m = merged(daemon, w.id)
    assert m.status == "failed" and "gate_strict" in m.log
    assert git(repo, "rev-parse", "main") == before
    [ev] = events(daemon, "merge.gate_suspect")
    assert ev.data.strict is True
    gate_dir = gate.gate_path(daemon.paths.state, 1, "proj")
    assert gate_dir in git(repo, "worktree", "list")
    assert daemon.ctl("repo", "rm", "proj").code == 0  # the gate worktree is chkd's: it goes with the repository
    wait_for(
        lambda: gate_dir not in git(repo, "worktree", "list") and not Path(gate_dir).exists(),
        10,
        what="the gate worktree to go",
    )
