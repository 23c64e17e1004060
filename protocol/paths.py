"""Where chkd keeps its sockets, database, logs and config.

`CHKD_HOME` relocates everything below one directory (tests, several instances).
Otherwise the XDG rules apply: sockets in `$XDG_RUNTIME_DIR/chkd` (fallback
`/tmp/chkd-$UID`), state in `$XDG_STATE_HOME/chkd`, config in `$XDG_CONFIG_HOME/chkd`.

Unix socket paths are short (107 bytes on Linux, 103 on macOS): when the home is so deep
that `run/events.sock` would be longer, the two sockets live in a short directory of their
own, `/tmp/chkd-$UID/<hash of the run directory>/` (same rules as the run directory), so
chkd works from any depth; the lock and everything else stay in the run directory.

The run directory is the access boundary for the sockets. In the `/tmp` fallback another
local user could create it first and receive every client's requests, so a run directory
that is not ours, is open to group or others, or is a symlink is refused (checked with
`lstat`) by the daemon at start and by every client before it connects; one chkd makes is
0700 from the start. The state directory (database, logs) is tightened to 0700 when it is
ours and refused when it is not; the files in it are created 0600 (`open_private`).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import IO, Any

from .errors import ChkdError

#: The longest socket path the platform takes (sun_path's size less its NUL byte).
SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107
#: The longest socket name chkd uses (`events.sock`; `ctl.sock` is shorter).
_LONGEST_SOCKET = "events.sock"


def socket_dir_for(run: Path) -> Path:
    """Where the sockets go for this run directory: itself when `events.sock` fits, else a short one."""
    if len(os.fsencode(run / _LONGEST_SOCKET)) <= SOCKET_PATH_MAX:
        return run
    import hashlib

    digest = hashlib.blake2b(os.fsencode(run), digest_size=8).hexdigest()
    return Path("/tmp") / f"chkd-{os.geteuid()}" / f"s-{digest}"


def socket_problem(sock: Path, limit: int = SOCKET_PATH_MAX) -> str | None:
    """One sentence when `sock` is too long for a Unix socket (naming it, its length, the limit, the fix)."""
    length = len(os.fsencode(sock))
    if length <= limit:
        return None
    return (
        f"The socket path {sock} is {length} bytes, longer than the {limit} bytes Unix sockets allow here; "
        "use a shorter CHKD_HOME (or XDG_RUNTIME_DIR)."
    )


class Paths:
    """The locations for one chkd home. (A plain class: dataclasses cost chkdctl start-up.)"""

    __slots__ = ("config_file", "home", "run", "state")

    def __init__(self, run: Path, state: Path, config_file: Path, home: Path | None = None) -> None:
        self.run = run
        self.state = state
        self.config_file = config_file
        self.home = home  # set when CHKD_HOME (or --home) chose one directory for everything

    def __repr__(self) -> str:
        return f"Paths(run={self.run!s}, state={self.state!s}, config_file={self.config_file!s})"

    def home_env(self) -> dict[str, str]:
        """`CHKD_HOME` for the processes chkd starts, when one directory was chosen for everything."""
        return {"CHKD_HOME": str(self.home)} if self.home is not None else {}

    @property
    def sock_dir(self) -> Path:
        """The run directory, or a short directory of its own when the home is deep (see above)."""
        return socket_dir_for(self.run)

    @property
    def ctl_sock(self) -> Path:
        return self.sock_dir / "ctl.sock"

    @property
    def events_sock(self) -> Path:
        return self.sock_dir / _LONGEST_SOCKET

    @property
    def ctl_endpoint(self) -> str:
        return f"ipc://{self.ctl_sock}"

    @property
    def events_endpoint(self) -> str:
        return f"ipc://{self.events_sock}"

    @property
    def tmux_socket(self) -> Path:
        """chkd's own tmux server (interactive workers), never the user's default one; beside the
        other sockets, so a deep home's tmux socket is short enough too (`tmux.sock` is shorter than
        `events.sock`; the daemon leaves a socket directory that still holds it)."""
        return self.sock_dir / "tmux.sock"

    @property
    def lock_file(self) -> Path:
        return self.run / "chkdd.lock"

    @property
    def log_file(self) -> Path:
        return self.state / "chkdd.log"

    @property
    def worker_logs(self) -> Path:
        return self.state / "workers"

    def worker_log(self, worker_id: str) -> Path:
        return self.worker_logs / f"{worker_id}.log"

    def check_run(self) -> None:
        """Refuse (a sentence with the fix) a run directory that another user could reach; a missing one is fine."""
        problem = self.run_problem()
        if problem:
            raise ChkdError("refused", problem.message)

    def run_problem(self) -> DirProblem | None:
        way_out = self._way_out("XDG_RUNTIME_DIR")
        problem = run_dir_problem(self.run, way_out)
        sock_dir = self.sock_dir
        if problem is None and sock_dir != self.run:
            problem = run_dir_problem(sock_dir.parent, way_out) or run_dir_problem(sock_dir, way_out)
        return problem

    def state_problems(self) -> list[DirProblem]:
        """What `ensure` would refuse (another user's) or tighten (open to others) in the state directories."""
        way_out = self._way_out("XDG_STATE_HOME")
        return [p for p in (state_dir_problem(d, way_out) for d in (self.state, self.worker_logs)) if p]

    def ensure(self) -> None:
        """Create the directories, or check the ones that exist: the run directory must be private
        already (refused otherwise); the state directories are ours and tightened to 0700."""
        self.run.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(self.run, 0o700)
            created = True
        except FileExistsError:
            created = False
        if created and stat.S_IMODE(os.lstat(self.run).st_mode) != 0o700:
            os.chmod(self.run, 0o700)  # a umask took owner bits away; it can never have added any
        sock_dir = self.sock_dir
        if sock_dir != self.run:
            for directory in (sock_dir.parent, sock_dir):
                try:
                    os.mkdir(directory, 0o700)
                    os.chmod(directory, 0o700)
                except FileExistsError:
                    pass
        self.check_run()
        for path in (self.state, self.worker_logs):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            problem = state_dir_problem(path, self._way_out("XDG_STATE_HOME"))
            if problem and not problem.tightenable:
                raise ChkdError("refused", problem.message)
            if problem:
                os.chmod(path, 0o700)

    def _way_out(self, xdg_var: str) -> tuple[str, str]:
        """The other half of a refusal: where else chkd could live, in words and as a command."""
        if self.home is not None:
            return "use another CHKD_HOME", 'export CHKD_HOME="$HOME/.chkd"'
        return f"set {xdg_var}", f'export {xdg_var}="$(mktemp -d)"'


class DirProblem:
    """Why a directory cannot be chkd's (one sentence), the command that fixes it, and whether
    chkd may fix it itself (a state directory of ours that is merely too open)."""

    __slots__ = ("fix", "message", "tightenable")

    def __init__(self, message: str, fix: str, tightenable: bool = False) -> None:
        self.message = message
        self.fix = fix
        self.tightenable = tightenable

    def __repr__(self) -> str:
        return f"DirProblem({self.message!r})"


def run_dir_problem(path: Path, way_out: tuple[str, str]) -> DirProblem | None:
    """Why `path` cannot be the run directory (lstat: a symlink is refused too); None when fine or missing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return _foreign(path, "run directory", st, way_out, links_allowed=False) or _too_open(path, "run directory", st)


def state_dir_problem(path: Path, way_out: tuple[str, str]) -> DirProblem | None:
    """Why `path` cannot hold chkd's state (it follows a symlink of the user's); None when fine or missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    what = "state directory" if path.name != "workers" else "worker log directory"
    return _foreign(path, what, st, way_out, links_allowed=True) or _too_open(path, what, st, tightenable=True)


def _foreign(
    path: Path, what: str, st: os.stat_result, way_out: tuple[str, str], *, links_allowed: bool
) -> DirProblem | None:
    words, command = way_out
    me = os.geteuid()
    if not links_allowed and stat.S_ISLNK(st.st_mode):
        fix = f"rm {_quoted(path)}" if st.st_uid == me else command
        return DirProblem(f"The {what} {path} is a symbolic link; remove it or {words}.", fix)
    if not stat.S_ISDIR(st.st_mode):
        fix = f"rm {_quoted(path)}" if st.st_uid == me else command
        return DirProblem(f"The {what} {path} is not a directory; remove it or {words}.", fix)
    if st.st_uid != me:
        return DirProblem(
            f"The {what} {path} is owned by uid {st.st_uid}, not you (uid {me}); remove it or {words}.", command
        )
    return None


def _too_open(path: Path, what: str, st: os.stat_result, tightenable: bool = False) -> DirProblem | None:
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o077:
        return None
    fix = f"chmod 700 {_quoted(path)}"
    return DirProblem(f"The {what} {path} has mode {mode:04o}; run `{fix}`.", fix, tightenable)


def _private_fd(path: str | os.PathLike[str], flags: int) -> int:
    """`os.open` creating the file 0600 whatever the umask, and tightening an existing one of ours."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: str | os.PathLike[str], mode: str = "ab", **kwargs: Any) -> IO[Any]:
    """Open a log for appending (`mode` "ab" or "a"), private to its owner: 0600, not the umask's choice."""
    return open(_private_fd(path, os.O_WRONLY | os.O_APPEND), mode, **kwargs)


def make_private(path: str | os.PathLike[str]) -> None:
    """Create `path` empty and 0600 if missing, else tighten it to 0600 (a database before SQLite opens it)."""
    os.close(_private_fd(path, os.O_RDONLY))


def _quoted(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def resolve(home: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Paths:
    """The paths for an explicit home, `CHKD_HOME`, or the XDG defaults, in that order."""
    env = dict(os.environ) if env is None else env
    chosen = home if home is not None else env.get("CHKD_HOME") or None
    if chosen:
        base = Path(chosen).expanduser().resolve()
        return Paths(run=base / "run", state=base / "state", config_file=base / "config.toml", home=base)
    user_home = Path(env.get("HOME") or Path.home())
    runtime = env.get("XDG_RUNTIME_DIR")
    run = Path(runtime) / "chkd" if runtime else Path(f"/tmp/chkd-{os.getuid()}")
    state = Path(env.get("XDG_STATE_HOME") or user_home / ".local" / "state") / "chkd"
    config = Path(env.get("XDG_CONFIG_HOME") or user_home / ".config") / "chkd" / "config.toml"
    return Paths(run=run, state=state, config_file=config)


def find_repo_root(start: str | os.PathLike[str]) -> Path | None:
    """The main repository that `start` lies in, read from `.git` files without running git.

    Inside a linked worktree, `.git` is a file naming `<main>/.git/worktrees/<name>`;
    its `commondir` leads back to the main repository's `.git`, so a worker's worktree
    maps to the repository it was made from.
    """
    path = Path(start).expanduser().resolve()
    for candidate in (path, *path.parents):
        dot_git = candidate / ".git"
        if dot_git.is_dir():
            return candidate
        if dot_git.is_file():
            try:
                text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                return None
            if not text.startswith("gitdir:"):
                return None
            gitdir = Path(text.split(":", 1)[1].strip())
            if not gitdir.is_absolute():
                gitdir = (candidate / gitdir).resolve()
            commondir_file = gitdir / "commondir"
            try:
                common = Path(commondir_file.read_text(encoding="utf-8").strip())
            except OSError:
                return candidate  # a submodule or a plain gitfile: the checkout itself
            if not common.is_absolute():
                common = (gitdir / common).resolve()
            return common.parent if common.name == ".git" else common
    return None
