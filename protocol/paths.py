"""Where chkd keeps its sockets, database, logs and config.

`CHKD_HOME` relocates everything below one directory (tests, several instances).
Otherwise the XDG rules apply: sockets in `$XDG_RUNTIME_DIR/chkd` (fallback
`/tmp/chkd-$UID`), state in `$XDG_STATE_HOME/chkd`, config in `$XDG_CONFIG_HOME/chkd`.
The run directory is created mode 0700: it is the access boundary for the sockets.
"""

from __future__ import annotations

import os
from pathlib import Path


class Paths:
    """The locations for one chkd home. (A plain class: dataclasses cost chkdctl start-up.)"""

    __slots__ = ("run", "state", "config_file", "home")

    def __init__(self, run: Path, state: Path, config_file: Path, home: Path | None = None) -> None:
        self.run = run
        self.state = state
        self.config_file = config_file
        self.home = home  # set when CHKD_HOME (or --home) chose one directory for everything

    def __repr__(self) -> str:
        return f"Paths(run={self.run!s}, state={self.state!s}, config_file={self.config_file!s})"

    @property
    def ctl_sock(self) -> Path:
        return self.run / "ctl.sock"

    @property
    def events_sock(self) -> Path:
        return self.run / "events.sock"

    @property
    def ctl_endpoint(self) -> str:
        return f"ipc://{self.ctl_sock}"

    @property
    def events_endpoint(self) -> str:
        return f"ipc://{self.events_sock}"

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

    def ensure(self) -> None:
        """Create the directories; the run directory is 0700 whatever the umask."""
        self.run.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.run, 0o700)
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.worker_logs.mkdir(parents=True, exist_ok=True, mode=0o700)


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
