"""Agent profiles at spawn: the argv, prompt and environment, and Claude Code's per-worker files.

Everything a spawn can refuse is checked here, on the loop, before anything is created: an
unknown profile, a program that is not installed, a permission mode Claude Code refuses as
root. For a `claude_hooks` profile chkd writes nothing into the worktree: the MCP server
config and the hooks live in `state/workers/<id>.claude/` (0600, removed with the worker), and
their paths are appended to the argv after the prompt (Claude Code's variadic flags would
swallow a prompt that came after them).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chkd.protocol import templates
from chkd.protocol.config import BUILTIN_AGENTS, AgentConfig, AgentOutput, Config
from chkd.protocol.errors import ChkdError
from chkd.protocol.launch import installed_argv
from chkd.protocol.paths import Paths

#: What a Claude worker may do without asking: its chkd MCP tools and git (commits as it goes).
CHKD_ALLOWED_TOOLS = ("mcp__chkd", "mcp__chkd__*", "Bash(git:*)")
#: Claude Code refuses these as root unless IS_SANDBOX=1 (FACTS.md).
BYPASS_MODES = frozenset({"bypassPermissions"})


@dataclass(frozen=True)
class AgentPlan:
    """The resolved profile for one worker run (plain values: the launch runs off-loop)."""

    name: str
    template: list[str]
    env: dict[str, str]
    output: AgentOutput = "plain"
    claude: bool = False
    permission_mode: str = "acceptEdits"
    allowed_tools: tuple[str, ...] = ()
    prompt: str | None = None  # the profile's prompt template, or None for chkd's default
    interactive: bool = False  # runs in a tmux session on chkd's own server (attach, peek, send)
    #: `max_task_usd`, for a Claude profile: passed as --max-budget-usd (claude stops itself at the cap).
    task_cap_usd: float | None = None


def profile_named(config: Config, name: str) -> AgentConfig:
    profile = config.agent_profile(name)
    if profile is None:
        known = sorted({*config.agents, *BUILTIN_AGENTS})
        raise ChkdError(
            "not_found",
            f"There is no agent profile '{name}' (known: {', '.join(known)}).",
            "Define it as [agents.NAME] cmd = [...] in config.toml, or pass --cmd.",
        )
    return profile


def find_program(program: str, env: dict[str, str]) -> str | None:
    """Where `program` is: a path, on the agent's PATH, or beside this Python (chkd's own scripts)."""
    if os.sep in program:
        return program if os.access(program, os.X_OK) else None
    found = shutil.which(program, path=env.get("PATH", os.environ.get("PATH")))
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), program)
    return beside if os.access(beside, os.X_OK) else None


def plan(name: str, profile: AgentConfig, *, resume: bool = False, task_cap_usd: float | None = None) -> AgentPlan:
    """The run `profile` describes, or a ChkdError sentence (nothing has been created yet). A Claude
    profile's first run and its resumes alike get `task_cap_usd` (the config's `max_task_usd`)."""
    argv = profile.resume if resume else profile.cmd
    if argv is None:
        raise ChkdError(
            "conflict",
            f"The agent profile '{name}' cannot continue a session: it has no `resume` argv.",
            f"Add resume = [..., \"{{session_id}}\", ...] to [agents.{name}] in config.toml.",
        )
    env = {**os.environ, **profile.env}
    if find_program(argv[0], env) is None:
        raise ChkdError(
            "not_found",
            f"The agent profile '{name}' runs '{argv[0]}', which is not installed (not found on PATH).",
            f"Install it, or set [agents.{name}] cmd = [\"/full/path/to/{os.path.basename(argv[0])}\", ...].",
        )
    if (
        profile.claude_hooks
        and profile.permission_mode in BYPASS_MODES
        and os.geteuid() == 0
        and env.get("IS_SANDBOX") != "1"
    ):
        raise ChkdError(
            "refused",
            f"Claude Code refuses --permission-mode {profile.permission_mode} as root unless IS_SANDBOX=1.",
            f"Inside a sandbox set [agents.{name}] env = {{ IS_SANDBOX = \"1\" }}, or use "
            f"permission_mode = \"acceptEdits\".",
        )
    return AgentPlan(
        name=name,
        template=list(argv),
        env=dict(profile.env),
        output=profile.output,
        claude=profile.claude_hooks,
        permission_mode=profile.permission_mode,
        allowed_tools=tuple(profile.allowed_tools),
        prompt=profile.prompt,
        interactive=profile.interactive,
        task_cap_usd=task_cap_usd if profile.claude_hooks and "--max-budget-usd" not in argv else None,
    )


def render_prompt(plan_: AgentPlan, values: dict[str, str], default: str) -> str:
    if plan_.prompt is None:
        return default
    return templates.render(plan_.prompt, {k: v for k, v in values.items() if k in templates.PROMPT_PLACEHOLDERS})


# -- Claude Code's per-worker files ------------------------------------------------------------------
def claude_dir(paths: Paths, worker_id: str) -> Path:
    return paths.state / "workers" / f"{worker_id}.claude"


def mcp_config(worker_id: str, agent_env: dict[str, str]) -> dict[str, Any]:
    """The chkd-mcp server for this worker, with the worker's environment (it finds its worker by it)."""
    argv = installed_argv("chkd-mcp", "chkd.client.mcp.server")
    env = {k: v for k, v in agent_env.items() if k.startswith("CHKD_")}
    env["CHKD_WORKER_ID"] = worker_id
    return {"mcpServers": {"chkd": {"type": "stdio", "command": argv[0], "args": argv[1:], "env": env}}}


def hook_settings() -> dict[str, Any]:
    """Claude Code hooks → `chkdctl hook <event>` (activity, message delivery; CHKD_WORKER_ID from the env)."""
    ctl = shlex.join(installed_argv("chkdctl", "chkd.client.cli"))

    def entry(event: str, matcher: str | None) -> list[dict[str, Any]]:
        hook: dict[str, Any] = {"hooks": [{"type": "command", "command": f"{ctl} hook {event}", "timeout": 30}]}
        if matcher is not None:
            hook = {"matcher": matcher, **hook}
        return [hook]

    return {
        "hooks": {
            "PostToolUse": entry("post-tool-use", "*"),
            "Notification": entry("notification", None),
            "Stop": entry("stop", None),
        }
    }


def write_claude_files(directory: Path, worker_id: str, agent_env: dict[str, str]) -> tuple[Path, Path]:
    """Off-loop: (mcp config, settings) for the worker, private to the user, rewritten on every run."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    mcp, settings = directory / "mcp.json", directory / "settings.json"
    for path, data in ((mcp, mcp_config(worker_id, agent_env)), (settings, hook_settings())):
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
    return mcp, settings


def claude_args(plan_: AgentPlan, mcp: Path, settings: Path) -> list[str]:
    """Appended after the profile's argv, so the prompt stays before the variadic flags."""
    cap = ["--max-budget-usd", f"{plan_.task_cap_usd:g}"] if plan_.task_cap_usd else []
    return [
        *cap,
        "--permission-mode",
        plan_.permission_mode,
        "--mcp-config",
        str(mcp),
        "--settings",
        str(settings),
        "--allowedTools",
        *CHKD_ALLOWED_TOOLS,
        *plan_.allowed_tools,
    ]


def remove_claude_files(paths: Paths, worker_id: str) -> None:
    """The worker is gone: its Claude files go too (chkd made them and recorded where)."""
    directory = claude_dir(paths, worker_id)
    if directory.is_dir():
        shutil.rmtree(directory, ignore_errors=True)


def forget_claude_files(ctx: Any, worker_id: str) -> None:
    """Once the worker row's removal is committed, remove its Claude files (two small files: on the loop)."""
    paths = ctx.paths
    ctx.after_commit(lambda: remove_claude_files(paths, worker_id))
