"""chkdctl daemon start|stop|restart|status."""

from __future__ import annotations

from typing import Any

import click

from chkd.protocol.errors import ChkdError

from ..output import echo, fail, print_json


@click.group("daemon")
def daemon_group() -> None:
    """Start, stop and inspect the chkdd daemon of this home."""


@daemon_group.command("start")
@click.pass_obj
def start(app: Any) -> None:
    """Start chkdd detached; returns once it answers. Does nothing if it runs already."""
    from .. import daemonctl

    paths = app.paths
    if daemonctl.is_running(paths):
        pid = daemonctl.pid(paths)
        _say(app, {"running": True, "pid": pid, "started": False}, f"chkdd is already running (pid {pid}).")
        return
    pid = daemonctl.start(paths)
    _say(app, {"running": True, "pid": pid, "started": True}, f"chkdd started (pid {pid}); log: {paths.log_file}")


@daemon_group.command("stop")
@click.pass_obj
def stop(app: Any) -> None:
    """Stop chkdd (SIGTERM; it finishes the current request and exits). Workers keep running."""
    from .. import daemonctl

    pid = daemonctl.pid(app.paths)
    if not daemonctl.stop(app.paths):
        _say(app, {"running": False, "stopped": False}, "chkdd is not running.")
        return
    _say(app, {"running": False, "stopped": True, "pid": pid}, f"chkdd (pid {pid}) stopped.")


@daemon_group.command("restart")
@click.pass_obj
def restart(app: Any) -> None:
    """Stop chkdd if it runs, then start it. Workers keep running and reconnect."""
    from .. import daemonctl

    daemonctl.stop(app.paths)
    pid = daemonctl.start(app.paths)
    _say(app, {"running": True, "pid": pid, "started": True}, f"chkdd restarted (pid {pid}).")


@daemon_group.command("status")
@click.pass_obj
def status(app: Any) -> None:
    """Say whether chkdd runs, and its pid, version and uptime. Exit 1 if it does not run."""
    from chkd.protocol.messages import Ping

    from .. import daemonctl
    from ..client import Client

    paths = app.paths
    if not daemonctl.is_running(paths):
        if app.json:
            print_json({"running": False})
            raise SystemExit(1)
        fail(ChkdError("not_found", "chkdd is not running.", "Start it with `chkdctl daemon start`."))
    with Client(paths, autostart=False, timeout=5) as client:
        pong = client.call(Ping())
    if app.json:
        print_json({"running": True, **_pong_dict(pong)})
        return
    echo(f"chkdd {pong.version} running, pid {pong.pid}, up {_uptime(pong.uptime_s)}")
    echo(f"  home: {pong.home}")
    echo(f"  db:   {pong.db}")
    echo(f"  log:  {paths.log_file}")
    echo(f"  {pong.repos} repositories, {pong.tasks} tasks, {pong.workers} workers")


def _pong_dict(pong: Any) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(pong)


def _uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _say(app: Any, data: dict[str, Any], text: str) -> None:
    if app.json:
        print_json(data)
    else:
        echo(text)


COMMANDS: list[click.Command] = [daemon_group]
