"""chkdctl ping, status, config check|show."""

from __future__ import annotations

import time
from typing import Any

import click

from ..output import echo, fail, print_json


@click.command("ping")
@click.pass_obj
def ping(app: Any) -> None:
    """Ask the daemon for its version, pid, uptime and counts (starts it if needed)."""
    from chkd.protocol.messages import Ping

    t0 = time.perf_counter()
    pong = app.call(Ping())
    rtt_ms = (time.perf_counter() - t0) * 1000
    if app.json:
        import msgspec

        print_json({**msgspec.to_builtins(pong), "rtt_ms": round(rtt_ms, 3)})
        return
    echo(
        f"pong from chkdd {pong.version} (pid {pong.pid}, up {pong.uptime_s:.0f}s) in {rtt_ms:.1f} ms: "
        f"{pong.repos} repos, {pong.tasks} tasks, {pong.workers} workers, {pong.standby_shims} standby shims"
    )


@click.command("status")
@click.pass_obj
def status(app: Any) -> None:
    """Overview: repositories, tasks and workers by status."""
    from chkd.protocol.messages import Status

    res = app.call(Status())
    if app.json:
        print_json(res)
        return
    p = res.pong
    echo(f"chkdd {p.version}, pid {p.pid}, up {p.uptime_s:.0f}s, home {p.home}")
    if not res.repos:
        echo("No repositories yet: `chkdctl repo add PATH` or `chkdctl task add` inside one.")
    for r in res.repos:
        echo(f"  {r.name}: {r.path} ({r.main_branch}), {r.tasks} tasks, {r.live_workers} live workers")
    if res.tasks_by_status:
        echo("tasks:   " + ", ".join(f"{n} {s}" for s, n in sorted(res.tasks_by_status.items())))
    if res.workers_by_status:
        echo("workers: " + ", ".join(f"{n} {s}" for s, n in sorted(res.workers_by_status.items())))


@click.group("config")
def config_group() -> None:
    """Check or show config.toml (works without the daemon)."""


@config_group.command("check")
@click.pass_obj
def config_check(app: Any) -> None:
    """Validate config.toml: unknown keys and wrong types are errors naming the key."""
    from chkd.protocol.config import ConfigError, load_config

    path = app.paths.config_file
    try:
        load_config(path)
    except ConfigError as exc:
        if app.json:
            print_json({"ok": False, "path": str(path), "error": str(exc)})
            raise SystemExit(1) from None
        fail(str(exc))
    exists = path.exists()
    if app.json:
        print_json({"ok": True, "path": str(path), "exists": exists})
    else:
        echo(f"{path}: ok" if exists else f"{path} does not exist; the defaults apply.")


@config_group.command("show")
@click.pass_obj
def config_show(app: Any) -> None:
    """Print the effective settings (config.toml over the defaults)."""
    from chkd.protocol.config import ConfigError, config_to_toml, load_config

    path = app.paths.config_file
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        fail(str(exc))
    if app.json:
        print_json(cfg)
        return
    echo(f"# effective settings ({path}{'' if path.exists() else ', not present: defaults'})")
    click.echo(config_to_toml(cfg), nl=False)


COMMANDS: list[click.Command] = [ping, status, config_group]
