"""`chkdd`: the daemon's entry point. Runs in the foreground, as systemd and launchd expect."""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from typing import TextIO

import chkd
from chkd.protocol import paths as paths_mod
from chkd.protocol.config import ConfigError, load_config
from chkd.protocol.errors import ChkdError
from chkd.protocol.launch import NEUTRAL_CWD

from .context import Ctx
from .log import make_logger
from .sdnotify import SdNotifier
from .store import Store, StoreError, db_path


def acquire_lock(path: os.PathLike[str]) -> TextIO | None:
    """The single-instance lock: held for the daemon's whole life, released by the kernel on any exit."""
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the daemon's life
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def lock_holder(path: os.PathLike[str]) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip() or "?"
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chkdd",
        description="The chkd daemon. Runs in the foreground; `chkdctl daemon start` detaches it.",
    )
    parser.add_argument(
        "--home", help="keep sockets, state and config below this directory (default: $CHKD_HOME or XDG dirs)"
    )
    parser.add_argument("--log-format", choices=("json", "console"), default="json", help="format of state/chkdd.log")
    parser.add_argument("--version", action="version", version=f"chkdd {chkd.__version__}")
    args = parser.parse_args(argv)
    notifier = SdNotifier.from_environ()  # before anything we start could inherit NOTIFY_SOCKET

    paths = paths_mod.resolve(args.home)
    if args.home:
        os.environ["CHKD_HOME"] = str(paths.home)  # workers and shims inherit the same home
    os.chdir(NEUTRAL_CWD)  # whoever started us, nothing we run inherits their directory
    try:
        paths.ensure()
    except ChkdError as exc:  # a run or state directory another user could reach
        print(f"chkdd: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"chkdd: cannot create its directories ({exc}).", file=sys.stderr)
        return 1
    for sock in (paths.ctl_sock, paths.events_sock):
        problem = paths_mod.socket_problem(sock)
        if problem is not None:
            print(f"chkdd: {problem}", file=sys.stderr)
            return 1
    try:
        config = load_config(paths.config_file)
    except ConfigError as exc:
        print(f"chkdd: {exc}", file=sys.stderr)
        return 1

    lock = acquire_lock(paths.lock_file)
    if lock is None:
        print(f"chkdd already running (pid {lock_holder(paths.lock_file)})", file=sys.stderr)
        return 1

    log, log_stream = make_logger(paths.log_file, args.log_format)
    try:
        store = Store(db_path(paths))
    except (StoreError, Exception) as exc:
        log.error("store_open_failed", exc_info=True)
        print(f"chkdd: cannot open the database {db_path(paths)} ({exc}).", file=sys.stderr)
        return 1

    from .server import Server  # imports every handler module

    ctx = Ctx(paths=paths, config=config, store=store, log=log)
    server = Server(ctx, notifier)
    try:
        server.bind()
    except Exception as exc:
        log.error("bind_failed", exc_info=True)
        print(f"chkdd: cannot listen on {paths.ctl_endpoint} ({exc}).", file=sys.stderr)
        return 1
    server.install_signals()
    log.info("started", version=chkd.__version__, pid=os.getpid(), home=str(paths.home or paths.state))
    try:
        server.run()
    except Exception:
        log.critical("loop_crashed", exc_info=True)
        return 1
    finally:
        server.close()
        notifier.close()
        store.close()
        log.info("stopped")
        log_stream.close()
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
