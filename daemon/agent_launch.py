"""Starting an agent: the plain values an off-loop launch needs, its argv, and the shim's `go`.

Used by spawn (a new worktree) and by resume (the worker's existing worktree, the profile's
`resume` argv continuing the agent's session).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chkd.protocol.messages import ShimGo, TmuxTarget, encode_go

from . import agent_profiles, failpoints, pool, procs, reposettings, shimstandby
from . import workerrecords as W


@dataclass(frozen=True)
class LaunchSpec:
    """Everything the off-loop launch needs, as plain values (the names are already recorded)."""

    worker_id: str
    repo_path: str
    path: str
    branch: str
    base_sha: str
    template: list[str]
    values: dict[str, str]
    shim_argv: list[str]
    shim_env: dict[str, str]
    agent_env: dict[str, str]
    log_path: str
    heartbeat_s: float
    abort_grace_s: float
    owner: dict[str, Any] | None = None  # the worktree's marker: gc removes only what chkd made
    agent: agent_profiles.AgentPlan | None = None
    claude_dir: str | None = None  # where a claude_hooks profile's --mcp-config/--settings files go
    tmux: TmuxTarget | None = None  # interactive: the session on chkd's own tmux server
    workspace: reposettings.Workspace | None = None  # copy + setup_cmd, run before the agent starts
    pooled: pool.Taken | None = None  # a warm worktree to move into place instead of `git worktree add`


def agent_argv(spec: LaunchSpec, worktree: str, branch: str) -> list[str]:
    """Off-loop: the agent's argv with its prompt filled in, and for a claude_hooks profile its
    MCP config and hooks written to chkd's state dir and appended (after the prompt)."""
    values = {**spec.values, "worktree": worktree, "branch": branch}
    if "prompt" not in values:
        values["prompt"] = _prompt(spec, values)
    argv = W.render_argv(spec.template, values)
    if spec.agent is not None and spec.agent.claude and spec.claude_dir:
        mcp, settings = agent_profiles.write_claude_files(Path(spec.claude_dir), spec.worker_id, spec.agent_env)
        argv += agent_profiles.claude_args(spec.agent, mcp, settings)
    return argv


def _prompt(spec: LaunchSpec, values: dict[str, str]) -> str:
    default = W.default_prompt(
        values["worker_id"],
        values["task_id"],
        values["title"],
        values["description"],
        worktree=values["worktree"],
        branch=values["branch"],
        mcp=spec.agent is not None and spec.agent.claude,
    )
    return default if spec.agent is None else agent_profiles.render_prompt(spec.agent, values, default)


def go_message(spec: LaunchSpec, argv: list[str], cwd: str) -> ShimGo:
    return ShimGo(
        worker=spec.worker_id,
        argv=argv,
        cwd=cwd,
        env=spec.agent_env,
        log=spec.log_path,
        heartbeat_s=spec.heartbeat_s,
        abort_grace_s=spec.abort_grace_s,
        output=spec.agent.output if spec.agent is not None else "plain",
        tmux=spec.tmux,
    )


def restart_agent(spec: LaunchSpec, standby: shimstandby.Standby | None = None) -> list[str]:
    """Off-loop: a shim for the worker's existing worktree (a standby one when it fits), told `go` at once.
    Returns the argv."""
    failpoints.hit("resume.recorded")
    shim = shimstandby.start_shim(standby, spec)
    try:
        argv = agent_argv(spec, spec.path, spec.branch)
    except BaseException:
        procs.release_shim(shim, "stop")
        raise
    shimstandby.release(shim, encode_go(go_message(spec, argv, spec.path)), spec)
    return argv
