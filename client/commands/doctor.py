"""chkdctl doctor: what is wrong with this chkd, each with the command that fixes it.

Client-side checks (directories, config) need no daemon; the rest asks a running daemon
(doctor never starts one): the git it runs and the live workers (`Doctor`), removable
leftovers (a `gc` dry run) and the database (`db check`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from ..output import Exit, echo, json_option, print_json

#: How long a running daemon gets to answer a ping before doctor calls it unresponsive.
PING_TIMEOUT = 5.0
#: The gc scan and the integrity check take a while on large repositories and databases.
SLOW_TIMEOUT = 300.0
MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@click.command("doctor")
@json_option
@click.pass_obj
def doctor(app: Any) -> None:
    """Check git, the run/state directories, the config, the daemon, workers, leftovers and the database.

    Never starts the daemon. Exit 1 when any check fails (warnings alone exit 0).
    """
    findings = diagnose(app.paths)
    failed = any(f.status == "fail" for f in findings)
    if app.json:
        print_json({"ok": not failed, "findings": findings})
    else:
        for f in findings:
            echo(f"{MARK[f.status]}  {f.check:<15} {f.message}")
            if f.fix and f.status != "ok":
                echo(f"{'':22}fix: {f.fix}")
    if failed:
        raise Exit(1)


def diagnose(paths: Any) -> list[Any]:
    """Every finding, in the order a person would fix them."""
    from chkd.protocol.messages import Finding

    findings: list[Finding] = [_run_dir(paths), *_state_dirs(paths), _config(paths)]
    if findings[0].status == "fail":  # a client must not connect there
        findings.append(
            Finding(
                "daemon",
                "warn",
                "The daemon was not asked (the run directory is unsafe), so git, "
                "workers, leftovers and the database were not checked.",
            )
        )
        return findings
    from .. import daemonctl
    from ..client import Client

    if not daemonctl.is_running(paths):
        findings.append(
            Finding(
                "daemon",
                "warn",
                "chkdd is not running, so git, workers, leftovers and the database were not checked.",
                "chkdctl daemon start",
            )
        )
        return findings
    with Client(paths, autostart=False, timeout=PING_TIMEOUT) as client:
        answer = _daemon(client, daemonctl.pid(paths))
        findings.append(answer)
        if answer.status == "fail":
            return findings
        for ask in (_daemon_side, _leftovers, _database):
            findings.extend(_asked(ask, client))
    return findings


# -- without the daemon ------------------------------------------------------------------------------
def _run_dir(paths: Any) -> Any:
    from chkd.protocol.messages import Finding

    problem = paths.run_problem()
    if problem:
        return Finding("run directory", "fail", problem.message, problem.fix)
    if not paths.run.exists():
        return Finding("run directory", "ok", f"{paths.run} does not exist yet; chkd creates it mode 0700.")
    return Finding("run directory", "ok", f"{paths.run} is yours, mode 0700.")


def _state_dirs(paths: Any) -> list[Any]:
    from chkd.protocol.messages import Finding

    problems = paths.state_problems()
    if not problems:
        if not paths.state.exists():
            return [Finding("state directory", "ok", f"{paths.state} does not exist yet; chkd creates it mode 0700.")]
        return [Finding("state directory", "ok", f"{paths.state} is yours, mode 0700.")]
    return [
        Finding(
            "state directory",
            "warn" if p.tightenable else "fail",
            p.message.rstrip(".") + (" (chkdd tightens it when it starts)." if p.tightenable else "."),
            p.fix,
        )
        for p in problems
    ]


def _config(paths: Any) -> Any:
    from chkd.protocol.config import ConfigError, load_config
    from chkd.protocol.messages import Finding

    path = paths.config_file
    try:
        load_config(path)
    except ConfigError as exc:
        return Finding("config", "fail", str(exc), f"${{EDITOR:-vi}} {path}  # then: chkdctl config check")
    if not path.exists():
        return Finding("config", "ok", f"{path} does not exist; the defaults apply.")
    return Finding("config", "ok", f"{path} parses.")


# -- asking the daemon ---------------------------------------------------------------------------------
def _daemon(client: Any, pid: int | None) -> Any:
    from chkd.protocol.errors import ChkdError
    from chkd.protocol.messages import Finding, Ping

    started = time.perf_counter()
    try:
        pong = client.call(Ping(), timeout=PING_TIMEOUT)
    except ChkdError as exc:
        return Finding(
            "daemon",
            "fail",
            f"chkdd (pid {pid or '?'}) runs but does not answer: {exc.message.rstrip('.')}.",
            "chkdctl daemon restart",
        )
    ms = (time.perf_counter() - started) * 1000
    return Finding("daemon", "ok", f"chkdd {pong.version} (pid {pong.pid}) answers in {ms:.0f} ms.")


def _asked(ask: Callable[[Any], list[Any]], client: Any) -> list[Any]:
    """One daemon-side check; a failing request is a finding of its own, not the end of doctor."""
    from chkd.protocol.errors import ChkdError
    from chkd.protocol.messages import Finding

    try:
        return ask(client)
    except ChkdError as exc:
        name = ask.__name__.strip("_").replace("_", " ")
        return [
            Finding(name, "fail", f"chkdd could not check this: {exc.message.rstrip('.')}.", "chkdctl daemon restart")
        ]


def _daemon_side(client: Any) -> list[Any]:
    from chkd.protocol.messages import Doctor

    return list(client.call(Doctor(), timeout=SLOW_TIMEOUT).findings)


def _leftovers(client: Any) -> list[Any]:
    from chkd.protocol.messages import Finding, Gc

    items = [i for i in client.call(Gc(apply=False), timeout=SLOW_TIMEOUT).items if i.removable and not i.removed]
    if not items:
        return [Finding("stale worktrees", "ok", "No worktrees, branches or workers are left over for gc.")]
    shown = "; ".join(f"{i.kind} {i.what} in {i.repo} ({i.reason})" for i in items[:5])
    more = f"; and {len(items) - 5} more" if len(items) > 5 else ""
    return [
        Finding(
            "stale worktrees",
            "warn",
            f"{len(items)} leftover(s) gc can remove without losing work: {shown}{more}.",
            "chkdctl gc --apply",
        )
    ]


def _database(client: Any) -> list[Any]:
    from chkd.protocol.messages import DbCheck, Finding

    res = client.call(DbCheck(), timeout=SLOW_TIMEOUT)
    if res.ok:
        return [Finding("database", "ok", f"{res.db} passes integrity_check and foreign_key_check.")]
    n = len(res.problems) + len(res.foreign_key_problems)
    first = (res.problems or res.foreign_key_problems)[0]
    return [Finding("database", "fail", f"{res.db} has {n} problem(s), the first: {first}.", "chkdctl db check")]


COMMANDS: list[click.Command] = [doctor]
