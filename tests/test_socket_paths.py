"""Unix socket paths are short (107 bytes on Linux): chkd works from a home of any depth."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from chkd.protocol.messages import Ping
from chkd.protocol.paths import SOCKET_PATH_MAX, resolve, socket_problem

from conftest import Daemon


def deep_home(tmp_path: Path) -> Path:
    home = tmp_path / ("d" * 60) / ("e" * 60)
    home.mkdir(parents=True)
    return home


def test_a_deep_home_gets_its_sockets_in_a_short_private_directory(tmp_path: Path) -> None:
    home = deep_home(tmp_path)
    paths = resolve(home)
    assert len(os.fsencode(home / "run" / "events.sock")) > SOCKET_PATH_MAX
    assert paths.sock_dir != paths.run and paths.sock_dir == resolve(home).sock_dir  # the same for every client
    assert len(os.fsencode(paths.events_sock)) <= SOCKET_PATH_MAX
    assert paths.tmux_socket.parent == paths.sock_dir  # chkd's tmux server too (interactive workers)
    assert len(os.fsencode(paths.tmux_socket)) <= SOCKET_PATH_MAX
    assert paths.lock_file.parent == paths.run  # only the sockets move
    paths.ensure()
    for d in (paths.sock_dir.parent, paths.sock_dir):
        st = os.lstat(d)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    os.rmdir(paths.sock_dir)
    shallow = resolve(tmp_path / "h")
    assert shallow.sock_dir == shallow.run


def test_the_daemon_runs_and_answers_from_a_deep_home(tmp_path: Path) -> None:
    d = Daemon(deep_home(tmp_path))
    try:
        d.start()
        assert d.call(Ping()).pid == d.proc.pid  # type: ignore[union-attr]
        out = d.ctl("ping")
        assert out.code == 0, out.err
        assert d.paths.ctl_sock.exists() and d.paths.events_sock.exists()
    finally:
        d.stop()
    assert not d.paths.ctl_sock.exists() and not d.paths.sock_dir.exists()  # chkd removes what it made


def test_a_socket_dir_another_user_could_reach_is_refused(tmp_path: Path) -> None:
    paths = resolve(deep_home(tmp_path))
    paths.ensure()
    os.chmod(paths.sock_dir, 0o755)
    try:
        problem = paths.run_problem()
        assert problem is not None and str(paths.sock_dir) in problem.message and "0755" in problem.message
    finally:
        os.chmod(paths.sock_dir, 0o700)
        os.rmdir(paths.sock_dir)


def test_a_socket_path_that_cannot_fit_is_one_sentence_naming_it_its_length_and_the_limit() -> None:
    sock = Path("/x" * 60) / "events.sock"
    text = socket_problem(sock)
    assert text is not None and str(sock) in text and "132 bytes" in text and f"{SOCKET_PATH_MAX} bytes" in text
    assert "CHKD_HOME" in text and "\n" not in text
    assert socket_problem(Path("/tmp/short/events.sock")) is None
