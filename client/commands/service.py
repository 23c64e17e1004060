"""chkdctl service install|uninstall|status: chkdd as a systemd user unit or a launchd agent."""

from __future__ import annotations

import shlex
from typing import Any

import click

from ..output import Exit, echo, json_option, print_json

_manager_option = click.option(
    "--manager",
    type=click.Choice(["systemd", "launchd"]),
    default=None,
    help="Which service manager to write for (default: launchd on macOS, else systemd).",
)
_print_option = click.option(
    "--print", "print_only", is_flag=True, help="Only print what would be done; change nothing."
)


@click.group("service")
def service_group() -> None:
    """Run chkdd as a user service (systemd on Linux, launchd on macOS).

    The service starts chkdd at login and restarts it after a failure; workers outlive
    a daemon restart. While it is installed, chkdctl starts chkdd through it.
    """


def _commands(argvs: list[list[str]]) -> list[str]:
    return [shlex.join(a) for a in argvs]


@service_group.command("install")
@_manager_option
@_print_option
@json_option
@click.pass_obj
def install(app: Any, manager: str | None, print_only: bool) -> None:
    """Write the service definition with this installation's paths, then enable and start it."""
    from .. import daemonctl, service

    plan = service.plan(app.paths, manager)
    if print_only:
        if app.json:
            print_json(
                {
                    "manager": plan.manager,
                    "path": str(plan.path),
                    "content": plan.content.decode(),
                    "commands": _commands(plan.enable),
                }
            )
            return
        echo(f"# {plan.manager}: would write {plan.path}:")
        for line in plan.content.decode().splitlines():
            echo(line)
        echo("# then run:")
        for cmd in _commands(plan.enable):
            echo(cmd)
        return

    plan.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan.path.with_name(plan.path.name + ".tmp")
    tmp.write_bytes(plan.content)
    tmp.replace(plan.path)  # never half a unit file
    problem = service.manager_problem(plan.manager)
    if problem:
        _report(
            app,
            {
                "installed": True,
                "path": str(plan.path),
                "enabled": False,
                "problem": problem,
                "commands": _commands(plan.enable),
            },
            [
                f"Wrote {plan.path}, but {problem}, so it is not enabled.",
                "Run these where that manager runs:",
                *(f"  {c}" for c in _commands(plan.enable)),
            ],
        )
        raise Exit(1)

    took_over = None
    if daemonctl.is_running(app.paths) and service.run(plan.query)[0] != 0:
        # a chkdd started by chkdctl holds the lock: the service's would exit "already running"
        took_over = daemonctl.pid(app.paths)
        daemonctl.stop(app.paths)
    for argv in plan.enable:
        code, said = service.run(argv)
        if code != 0:
            _report(
                app,
                {
                    "installed": True,
                    "path": str(plan.path),
                    "enabled": False,
                    "problem": f"{shlex.join(argv)} failed: {said}",
                },
                [
                    f"Wrote {plan.path}, but `{shlex.join(argv)}` failed ({said or f'exit {code}'}).",
                    "Look at `chkdctl service status`, fix it, and run install again.",
                ],
            )
            raise Exit(1)
    lines = [f"Installed and started the chkd service ({plan.path})."]
    if took_over:
        lines.append(f"The chkdd chkdctl had started (pid {took_over}) was stopped for it; workers keep running.")
    _report(app, {"installed": True, "path": str(plan.path), "enabled": True, "replaced_pid": took_over}, lines)


@service_group.command("uninstall")
@_manager_option
@_print_option
@json_option
@click.pass_obj
def uninstall(app: Any, manager: str | None, print_only: bool) -> None:
    """Stop and disable the service and remove its file. Workers keep running; chkdctl then
    starts chkdd itself again."""
    from .. import service

    plan = service.plan(app.paths, manager)
    steps = [*_commands(plan.disable[:1]), shlex.join(["rm", str(plan.path)]), *_commands(plan.disable[1:])]
    if print_only:
        if app.json:
            print_json({"manager": plan.manager, "path": str(plan.path), "commands": steps})
            return
        for cmd in steps:
            echo(cmd)
        return
    if not plan.path.exists():
        _report(
            app,
            {"installed": False, "path": str(plan.path)},
            [f"No chkd service is installed ({plan.path} does not exist)."],
        )
        return
    problem = service.manager_problem(plan.manager)
    if problem is None:
        service.run(plan.disable[0])  # may fail when it was never enabled; removing the file is what counts
    plan.path.unlink()
    if problem is None:
        for argv in plan.disable[1:]:
            service.run(argv)
    lines = [f"Removed the chkd service ({plan.path})."]
    if problem:
        lines.append(f"Note: {problem}; nothing else was changed.")
    _report(app, {"installed": False, "path": str(plan.path), "removed": True, "problem": problem}, lines)


@service_group.command("status")
@_manager_option
@_print_option
@json_option
@click.pass_obj
def status(app: Any, manager: str | None, print_only: bool) -> None:
    """Whether the service is installed, for which home, whether its file matches this
    installation, and what the service manager says. `--print` shows the installed file."""
    from .. import daemonctl, service

    plan = service.plan(app.paths, manager)
    try:
        installed = plan.path.read_bytes()
    except OSError:
        installed = None
    if print_only:
        if installed is None:
            echo(f"No chkd service is installed ({plan.path} does not exist).")
            raise Exit(1)
        for line in installed.decode("utf-8", "replace").splitlines():
            echo(line)
        return
    home = service.installed_home(plan.manager) if installed is not None else None
    problem = service.manager_problem(plan.manager)
    state = None if problem else service.run(plan.query)[1]
    running = daemonctl.is_running(app.paths)
    data = {
        "manager": plan.manager,
        "path": str(plan.path),
        "installed": installed is not None,
        "home": home,
        "this_home": plan.home,
        "current": installed == plan.content,
        "manager_state": state,
        "manager_problem": problem,
        "daemon_running": running,
        "daemon_pid": daemonctl.pid(app.paths) if running else None,
    }
    if app.json:
        print_json(data)
        return
    if installed is None:
        echo(f"No chkd service is installed ({plan.path}); install it with `chkdctl service install`.")
    else:
        echo(f"{plan.manager} service: {plan.path}")
        echo(f"  serves home: {home}" + ("" if home == plan.home else f" (not this one: {plan.home})"))
        echo(
            "  file: matches this installation"
            if installed == plan.content
            else "  file: differs from what this installation would write; run `chkdctl service install` again"
        )
    echo(f"  manager: {problem}" if problem else f"  manager says: {state or '?'}")
    echo(f"  chkdd: running, pid {data['daemon_pid']}" if running else "  chkdd: not running")


def _report(app: Any, data: dict[str, Any], lines: list[str]) -> None:
    if app.json:
        print_json(data)
    else:
        for line in lines:
            echo(line)


COMMANDS: list[click.Command] = [service_group]
