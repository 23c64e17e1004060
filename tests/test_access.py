"""Access: no other local user reaches chkd's sockets, database or logs (issue 10, defects 7 and 12).

The run directory is the access boundary for the sockets: one another user made first
(socket squatting), one open to group/others, or a symlink is refused, by the daemon at
start and by every client before it connects. Files under `state/` are 0600 and its
directories 0700, whatever the umask; the checkouts chkd makes keep the user's modes.

The tests that need a second user run as root (CI does): as `nobody`, a tiny Python tries
to open the files and connect to the sockets, below a directory `nobody` may traverse, so
it is chkd's own modes that stop it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chkd.daemon.store import db_path
from chkd.protocol.launch import NEUTRAL_CWD, module_argv
from chkd.protocol.messages import Ping, WorkerShow

from conftest import BIN, DEFAULT_TEST_CONFIG, Daemon, _kill_strays, make_repo, wait_for

DEMO = str(BIN / "chkd-demo-agent")
NOBODY = 65534
ME = os.geteuid()

needs_root = pytest.mark.needs("root")  # only root can act as a second user (setpriv) and chown to it


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def start_chkdd(home: Path | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run chkdd in the foreground; it is expected to refuse, so it exits at once."""
    argv = module_argv("chkd.daemon.main", *(["--home", str(home)] if home else []))
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env, cwd=NEUTRAL_CWD)


def chkdctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "chkdctl"), *args], capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL
    )


def home_env(home: Path, autostart: bool) -> dict[str, str]:
    return {**os.environ, "CHKD_HOME": str(home), "CHKD_NO_AUTOSTART": "0" if autostart else "1"}


def xdg_env(base: Path, autostart: bool = True) -> dict[str, str]:
    """No CHKD_HOME: the XDG rules pick the directories, all below `base`."""
    env = {k: v for k, v in os.environ.items() if k != "CHKD_HOME"}
    env.update(
        HOME=str(base),
        XDG_RUNTIME_DIR=str(base / "rt"),
        XDG_STATE_HOME=str(base / "st"),
        XDG_CONFIG_HOME=str(base / "cf"),
        CHKD_NO_AUTOSTART="0" if autostart else "1",
    )
    (base / "rt").mkdir(mode=0o700, exist_ok=True)
    return env


def assert_refused_everywhere(sentence: str, *, home: Path | None, env: dict[str, str]) -> None:
    """chkdd, and chkdctl with and without autostart, all refuse with exactly `sentence`."""
    daemon = start_chkdd(home, env)
    assert daemon.returncode == 1, daemon
    assert daemon.stderr.strip() == f"chkdd: {sentence}"
    for autostart in ("0", "1"):
        ctl = chkdctl("ping", env={**env, "CHKD_NO_AUTOSTART": autostart})
        assert ctl.returncode == 1, ctl
        assert ctl.stderr.splitlines()[0] == f"chkdctl: {sentence}", ctl.stderr
        assert "Traceback" not in ctl.stderr


# -- the run directory (defect 7) ------------------------------------------------------------------
def test_a_run_dir_open_to_others_is_refused(chkd_home: Path) -> None:
    run = chkd_home / "run"
    run.mkdir()
    os.chmod(run, 0o777)
    assert_refused_everywhere(
        f"The run directory {run} has mode 0777; run `chmod 700 {run}`.",
        home=chkd_home,
        env=home_env(chkd_home, autostart=True),
    )
    assert mode(run) == 0o777  # refused, not silently "fixed": someone may have planted a socket in it
    assert not (run / "ctl.sock").exists()


def test_an_xdg_run_dir_open_to_the_group_is_refused(tmp_path: Path) -> None:
    env = xdg_env(tmp_path)
    run = tmp_path / "rt" / "chkd"
    run.mkdir()
    os.chmod(run, 0o750)
    assert_refused_everywhere(f"The run directory {run} has mode 0750; run `chmod 700 {run}`.", home=None, env=env)


def test_a_symlinked_run_dir_is_refused(chkd_home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (chkd_home / "run").symlink_to(elsewhere)
    assert_refused_everywhere(
        f"The run directory {chkd_home / 'run'} is a symbolic link; remove it or use another CHKD_HOME.",
        home=chkd_home,
        env=home_env(chkd_home, autostart=True),
    )
    assert not any(elsewhere.iterdir())


def test_a_run_dir_made_by_chkd_is_0700_whatever_the_umask(chkd_home: Path) -> None:
    env = home_env(chkd_home, autostart=True)
    d = Daemon(chkd_home)
    d.write_config(DEFAULT_TEST_CONFIG)
    try:
        res = subprocess.run(
            ["sh", "-c", f"umask 0 && exec {BIN / 'chkdctl'} ping"], env=env, capture_output=True, text=True, timeout=30
        )
        assert res.returncode == 0, res
        assert mode(d.paths.run) == 0o700
        assert mode(d.paths.state) == 0o700 and mode(d.paths.worker_logs) == 0o700
    finally:
        chkdctl("daemon", "stop", env=env)


def test_a_client_refuses_a_run_dir_opened_while_the_daemon_runs(daemon: Daemon) -> None:
    assert daemon.ctl("ping").code == 0
    os.chmod(daemon.paths.run, 0o755)
    try:
        res = daemon.ctl("ping")
        assert res.code == 1
        run = daemon.paths.run
        assert res.err.splitlines()[0] == f"chkdctl: The run directory {run} has mode 0755; run `chmod 700 {run}`."
    finally:
        os.chmod(daemon.paths.run, 0o700)


@needs_root
def test_a_run_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    env = xdg_env(tmp_path)
    run = tmp_path / "rt" / "chkd"
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOBODY)  # another user was first: every request would go to them
    assert_refused_everywhere(
        f"The run directory {run} is owned by uid {NOBODY}, not you (uid {ME}); remove it or set XDG_RUNTIME_DIR.",
        home=None,
        env=env,
    )
    assert not any(run.iterdir())


@needs_root
def test_a_state_dir_owned_by_another_user_is_refused(chkd_home: Path) -> None:
    state = chkd_home / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    res = start_chkdd(chkd_home, home_env(chkd_home, autostart=False))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"chkdd: The state directory {state} is owned by uid {NOBODY}, not you (uid {ME}); "
        f"remove it or use another CHKD_HOME."
    )
    assert not db_path(Daemon(chkd_home).paths).exists()


# -- file modes (defect 12) ---------------------------------------------------------------------------
@pytest.fixture
def open_state_home(tmp_path: Path) -> Path:
    """A home whose state/ and state/workers were made 0755 before chkd ever ran (as an old chkd or a
    careless `mkdir -p` would leave them), with an existing world-readable log."""
    home = tmp_path / "home"
    (home / "state" / "workers").mkdir(parents=True)
    for d in (home / "state", home / "state" / "workers"):
        os.chmod(d, 0o755)
    (home / "state" / "chkdd.log").write_text("")
    os.chmod(home / "state" / "chkdd.log", 0o644)
    return home


def test_state_files_are_private_and_checkouts_keep_the_users_modes(open_state_home: Path, tmp_path: Path) -> None:
    d = Daemon(open_state_home)
    d.write_config(DEFAULT_TEST_CONFIG)
    repo = make_repo(tmp_path / "proj")
    d.start()
    try:
        res = d.ctl("--json", "spawn", "T1", "--title", "modes", "--cmd", f"{DEMO} --steps 1 --step-s 0", cwd=repo)
        assert res.code == 0, res
        worker = res.json()
        client = d.client()
        wait_for(
            lambda: client.call(WorkerShow(worker=worker["id"])).worker.status == "done",
            20,
            what="the worker to finish",
        )
        db = d.db
        private = [
            db,
            Path(f"{db}-wal"),
            Path(f"{db}-shm"),
            d.paths.log_file,
            d.paths.state / "chkdd.out",
            d.paths.worker_log(worker["id"]),
        ]
        assert {str(p): oct(mode(p)) for p in private} == {str(p): oct(0o600) for p in private}
        assert (mode(d.paths.state), mode(d.paths.worker_logs)) == (0o700, 0o700)
        # no process-wide umask: the worktree chkd checked out has the user's normal modes
        assert mode(Path(worker["worktree"]) / "README.md") == 0o666 & ~_umask()
    finally:
        d.stop()
        _kill_strays(open_state_home)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# -- a second user (root only) -------------------------------------------------------------------------
PROBE = r"""
import json, os, socket, sys
out = {}
for name in sys.argv[2:]:
    kind, _, path = name.partition("=")
    try:
        if kind == "sock":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
            finally:
                s.close()
        elif kind == "list":
            os.listdir(path)
        else:
            open(path, "rb").close()
        out[name] = "ok"
    except OSError as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


def _nobody_python() -> str:
    """An interpreter `nobody` may run (the test's own may live below root's private home)."""
    for candidate in (os.path.realpath(sys.executable), shutil.which("python3") or "", "/usr/bin/python3"):
        if candidate and _as_nobody([candidate, "-I", "-c", "pass"]).returncode == 0:
            return candidate
    pytest.fail("no Python interpreter here can be run by uid 65534, so the access probe cannot run")


def _as_nobody(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )


def probe_as_nobody(targets: dict[str, Path]) -> dict[str, str]:
    """What `nobody` gets trying each target: "ok", or the OSError it hit."""
    names = [f"{kind}={path}" for kind, path in targets.items()]
    proc = _as_nobody([_nobody_python(), "-I", "-c", PROBE, "probe", *names])
    assert proc.returncode == 0, proc
    raw = json.loads(proc.stdout)
    return {kind: raw[f"{kind}={path}"] for kind, path in targets.items()}


@pytest.fixture
def traversable(tmp_path: Path) -> Iterator[Path]:
    """A directory every user may traverse (pytest's own tmp dirs are 0700: they would stop `nobody` first)."""
    base = Path(tempfile.mkdtemp(prefix="chkd-access-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@needs_root
def test_another_user_can_reach_neither_sockets_nor_database_nor_logs(traversable: Path) -> None:
    home = traversable / "home"
    (home / "state" / "workers").mkdir(parents=True)
    for d in (home, home / "state", home / "state" / "workers"):
        os.chmod(d, 0o755)  # all open before chkd runs: chkd itself must close them
    d = Daemon(home)
    d.write_config(DEFAULT_TEST_CONFIG)
    repo = make_repo(traversable / "proj")
    d.start()
    try:
        res = d.ctl("--json", "spawn", "T1", "--title", "probe", "--cmd", f"{DEMO} --steps 1 --step-s 0", cwd=repo)
        assert res.code == 0, res
        wid = res.json()["id"]
        client = d.client()
        wait_for(lambda: client.call(WorkerShow(worker=wid)).worker.status == "done", 20, what="the worker to finish")
        seen = probe_as_nobody(
            {
                "list": home,  # the control: nobody does get this far
                "db": d.db,
                "log": d.paths.log_file,
                "out": d.paths.state / "chkdd.out",
                "worker_log": d.paths.worker_log(wid),
                "sock": d.paths.ctl_sock,
            }
        )
        seen_events = probe_as_nobody({"sock": d.paths.events_sock})
        assert seen == {
            "list": "ok",
            "db": "PermissionError",
            "log": "PermissionError",
            "out": "PermissionError",
            "worker_log": "PermissionError",
            "sock": "PermissionError",
        }
        assert seen_events == {"sock": "PermissionError"}
        assert d.call(Ping()).pid == d.proc.pid  # and the owner still gets in
    finally:
        d.stop()
        _kill_strays(home)
