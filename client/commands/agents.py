"""chkdctl agents (the profiles: built-in and configured), resume-agent (continue an exited agent's session)."""

from __future__ import annotations

import shlex
from typing import Any

import click

from ..output import echo, fail, json_option, print_json, table


def agent_rows(config: Any) -> list[dict[str, Any]]:
    """Every profile the daemon would know with this config: configured ones over the built-ins."""
    import msgspec

    from chkd.protocol.config import BUILTIN_AGENTS

    names = sorted({*BUILTIN_AGENTS, *config.agents})
    rows = []
    for name in names:
        profile = config.agent_profile(name)
        source = "config" if name in config.agents else "built-in"
        if name in config.agents and name in BUILTIN_AGENTS:
            source = "config (over built-in)"
        rows.append(
            {"name": name, "source": source, "default": name == config.default_agent, **msgspec.to_builtins(profile)}
        )
    return rows


@click.command("agents")
@json_option
@click.pass_obj
def agents(app: Any) -> None:
    """List the agent profiles (built-in and [agents.NAME] in config.toml): command, output, tags, resume."""
    from chkd.protocol.config import ConfigError, load_config

    try:
        config = load_config(app.paths.config_file)
    except ConfigError as exc:
        fail(str(exc))
    rows = agent_rows(config)
    if app.json:
        print_json(rows)
        return
    lines = [
        [
            r["name"] + (" *" if r["default"] else ""),
            r["source"],
            r.get("output", "plain"),
            ",".join(r.get("tags", [])) or "-",
            "yes" if r.get("resume") else "-",
            shlex.join(r["cmd"]),
        ]
        for r in rows
    ]
    click.echo(table(lines, ["NAME", "SOURCE", "OUTPUT", "TAGS", "RESUME", "COMMAND"]))
    echo("(* the default agent)")


@click.command("resume-agent")
@click.argument("worker")
@click.option("--prompt", help="What the agent is told now (default: continue the task and call chkd_complete_work).")
@json_option
@click.pass_obj
def resume_agent(app: Any, worker: str, prompt: str | None) -> None:
    """Start WORKER's exited agent again in its worktree, continuing its session (the profile's `resume`)."""
    from chkd.protocol.messages import ResumeAgent

    res = app.call(ResumeAgent(worker=worker, prompt=prompt), timeout=60)
    w = res.worker
    if app.json:
        print_json(w)
        return
    echo(f"{w.id}  resumed: {w.agent} continues session {w.session_id or '-'} in {w.worktree} (run {w.runs}).")


COMMANDS: list[click.Command] = [agents, resume_agent]
