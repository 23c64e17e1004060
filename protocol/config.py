"""config.toml: its schema, defaults, and validation into one-sentence errors.

Lives in protocol/ because both sides read it: the daemon at start-up, `chkdctl
config check|show` without a daemon. Unknown keys and wrong types are errors
that name the key.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from . import limits
from .messages import MAX_ATTEMPTS, RepoSettings
from .names import branch_problem
from .templates import (
    AGENT_PLACEHOLDERS,
    PROMPT_PLACEHOLDERS,
    RESUME_PLACEHOLDERS,
    argv_problem,
    template_problem,
    worktree_pattern_problem,
)


def branch_prefix_problem(prefix: str) -> str | None:
    """`branch_prefix` + a task id must be a branch name git accepts, and chkd's branches must be
    told apart from a person's: not empty, and no trailing '.' (`x.` + `lock` would make `x.lock`)."""
    if not prefix:
        return "must not be empty (chkd's branches must be told apart from yours; the default is \"chkd/\")"
    problem = branch_problem(prefix + "x")
    if problem is not None:
        return problem
    if prefix.endswith("."):
        return "must not end with '.'"
    return None


# Duration settings: a finite number of seconds in a range (NaN and inf fail the bounds).
HeartbeatS = Annotated[float, Meta(ge=0.05, le=3600)]
HeartbeatTimeoutS = Annotated[float, Meta(ge=0.1, le=86400)]
StallTimeoutS = Annotated[float, Meta(ge=0.5, le=7 * 86400)]
GraceS = Annotated[float, Meta(ge=0.05, le=3600)]
TestTimeoutS = Annotated[float, Meta(ge=0.1, le=86400)]
IntervalS = Annotated[float, Meta(ge=0.05, le=3600)]
Workers = Annotated[int, Meta(ge=1, le=1000)]
Standby = Annotated[int, Meta(ge=0, le=64)]
LimitMarginS = Annotated[float, Meta(ge=0, le=86400)]
BackoffS = Annotated[float, Meta(ge=0.05, le=3600)]
Attempts = Annotated[int, Meta(ge=1, le=MAX_ATTEMPTS)]
#: A spending cap in US dollars (finite, positive).
BudgetUsd = Annotated[float, Meta(gt=0, le=1_000_000)]


def _rule(key: str, problem: str | None) -> None:
    """Raise the broken rule for `key`; `_sentence` turns it into `config.toml: 'key': problem.`"""
    if problem is not None:
        raise ValueError(f"'{key}': {problem}")


def glob_problem(pattern: str) -> str | None:
    """A `copy` / `setup_inputs` glob: relative to the main checkout and staying inside it."""
    if not pattern.strip():
        return "an empty pattern matches nothing"
    if pattern.startswith(("/", "~")):
        return f"{pattern!r} must be relative to the main checkout"
    parts = pattern.split("/")
    if ".." in parts:
        return f"{pattern!r} must not leave the main checkout ('..')"
    if parts[0] == ".git":
        return f"{pattern!r} names git's own directory"
    return None


def settings_problem(settings: RepoSettings) -> tuple[str, str] | None:
    """The first broken rule of a repository's settings as (key, problem), or None (the bounds are the Struct's)."""
    for key in ("test_cmd", "setup_cmd"):
        argv = getattr(settings, key)
        if argv is not None and (problem := argv_problem(argv)) is not None:
            return key, problem
    for key in ("copy", "setup_inputs"):
        for pattern in getattr(settings, key) or []:
            if (problem := glob_problem(pattern)) is not None:
                return key, problem
    return None


class RepoConfig(RepoSettings, forbid_unknown_fields=True, omit_defaults=True):
    """Per-repository overrides, keyed by repository name (the workspace keys are RepoSettings')."""

    max_workers: Workers | None = None
    merge_strategy: Literal["auto", "review"] | None = None
    main_branch: str | None = None
    default_agent: str | None = None
    budget_usd_per_day: BudgetUsd | None = None

    def __post_init__(self) -> None:
        broken = settings_problem(self)
        if broken is not None:
            _rule(*broken)
        if self.main_branch is not None:
            _rule("main_branch", branch_problem(self.main_branch))

    def settings(self) -> RepoSettings:
        """Only the workspace keys (what `repo edit` could also set)."""
        return RepoSettings(**{k: getattr(self, k) for k in RepoSettings.__struct_fields__})


#: Claude Code's permission modes (`--permission-mode`); the bypass modes need IS_SANDBOX=1 as root.
PermissionMode = Literal["default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto"]
AgentOutput = Literal["plain", "claude-stream-json"]


class AgentConfig(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An agent profile. Placeholders in `cmd`: {worker_id} {task_id} {title}
    {description} {worktree} {branch} {prompt}; `{{` and `}}` are literal braces.

    `prompt` is the template `{prompt}` becomes (the same placeholders but {prompt}; None: chkd's
    default). `output` says how the shim reads the agent's stdout (`claude-stream-json`: session,
    usage, cost and limits from Claude Code's stream). `resume` is the argv that continues the
    agent's session in its worktree ({session_id}, and {prompt} = the instructions). `claude_hooks`:
    chkd gives the agent its MCP server, hooks, allowed tools and permission mode (Claude Code's
    --mcp-config, --settings, --allowedTools, --permission-mode), from files in chkd's state dir.
    A profile named like a built-in one (`[agents.claude]`) without `cmd` changes only the keys it sets.
    """

    cmd: list[str]
    prompt: str | None = None
    env: dict[str, str] = {}
    #: The autopilot gives a task carrying one of these tags to this profile.
    tags: list[str] = []
    output: AgentOutput = "plain"
    resume: list[str] | None = None
    claude_hooks: bool = False
    #: Run the agent in a terminal: a tmux session on chkd's own tmux server, one per worker, that
    #: `chkdctl attach`, `peek` and `send` reach (its screen is also appended to the worker log).
    interactive: bool = False
    permission_mode: PermissionMode = "acceptEdits"
    #: Extra `--allowedTools` rules on top of chkd's own (mcp__chkd__*, Bash(git:*)).
    allowed_tools: list[str] = []

    def __post_init__(self) -> None:
        _rule("cmd", argv_problem(self.cmd))
        for arg in self.cmd:
            _rule("cmd", template_problem(arg, AGENT_PLACEHOLDERS))
        if self.prompt is not None:
            _rule("prompt", template_problem(self.prompt, PROMPT_PLACEHOLDERS))
            if not self.prompt.strip():
                _rule("prompt", "must not be empty (leave it out for chkd's default)")
        if self.resume is not None:
            _rule("resume", argv_problem(self.resume))
            for arg in self.resume:
                _rule("resume", template_problem(arg, RESUME_PLACEHOLDERS))
            if not any("{session_id}" in arg for arg in self.resume):
                _rule("resume", "must contain {session_id} (the session it continues)")
        for tag in self.tags:
            if not tag.strip() or len(tag) > 64 or "\0" in tag:
                _rule("tags", f"{tag!r} is not a tag (1 to 64 characters)")
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key:
                _rule("env", f"{key!r} is not an environment variable name")
            if "\0" in value:
                _rule(f"env.{key}", "cannot contain a NUL byte")


class Config(Struct, forbid_unknown_fields=True):
    heartbeat_s: HeartbeatS = 10.0
    heartbeat_timeout_s: HeartbeatTimeoutS = 30.0
    stall_timeout_s: StallTimeoutS = 600.0
    on_stall: Literal["notify", "abort", "requeue"] = "notify"
    max_workers: Workers = 3
    max_attempts: Attempts = 3
    abort_grace_s: GraceS = 5.0
    #: chkd-shim processes kept started ahead, so a spawn waits for no Python start-up (0: none).
    shim_standby: Standby = 2
    worktree_pattern: str = "../{repo}-{task}"
    branch_prefix: str = "chkd/"
    merge_strategy: Literal["auto", "review"] = "review"
    test_timeout_s: TestTimeoutS = 600.0
    radar_interval_s: IntervalS = 3.0
    notify: bool = True
    notify_cmd: list[str] = []
    default_agent: str = "demo"
    #: Spending caps: at 80 % a warning, at 100 % every running worker is paused and nothing starts.
    budget_usd_per_day: BudgetUsd | None = None
    #: Passed to agents that take a per-run cap (claude's --max-budget-usd).
    max_task_usd: BudgetUsd | None = None
    #: After a usage limit's reset time the autopilot waits this much longer before it starts that agent again.
    usage_limit_margin_s: LimitMarginS = 60.0
    #: The first wait after an HTTP 429; it doubles with every 429 in a row (at most 15 minutes).
    rate_limit_backoff_s: BackoffS = 10.0
    repos: dict[str, RepoConfig] = {}
    agents: dict[str, AgentConfig] = {}

    def __post_init__(self) -> None:
        if self.heartbeat_timeout_s <= self.heartbeat_s:
            _rule("heartbeat_timeout_s", f"must be longer than heartbeat_s ({self.heartbeat_s:g} s)")
        _rule("worktree_pattern", worktree_pattern_problem(self.worktree_pattern))
        _rule("branch_prefix", branch_prefix_problem(self.branch_prefix))
        if self.notify_cmd:
            _rule("notify_cmd", argv_problem(self.notify_cmd))
        _rule("default_agent", self._unknown_agent(self.default_agent))
        for name, repo in self.repos.items():
            if repo.default_agent is not None:
                _rule(f"repos.{name}.default_agent", self._unknown_agent(repo.default_agent))

    def _unknown_agent(self, name: str) -> str | None:
        if name in self.agents or name in BUILTIN_AGENTS:
            return None
        known = ", ".join(sorted({*self.agents, *BUILTIN_AGENTS}))
        return f"there is no agent profile '{name}' (known: {known}; define it as [agents.{name}])"

    def for_repo(self, name: str) -> RepoConfig:
        return self.repos.get(name) or RepoConfig()

    def max_workers_for(self, name: str) -> int:
        return self.for_repo(name).max_workers or self.max_workers

    def agent_profile(self, name: str) -> AgentConfig | None:
        if name in self.agents:
            return self.agents[name]
        return BUILTIN_AGENTS.get(name)


#: Profiles that exist without configuration. `demo` is the bundled scripted agent; `claude` is
#: Claude Code in print mode, its stream read by the shim (FACTS: the prompt goes before the
#: variadic flags chkd appends: --allowedTools, --mcp-config, ...).
CLAUDE_STREAM_ARGS = ["--output-format", "stream-json", "--verbose"]
BUILTIN_AGENTS: dict[str, AgentConfig] = {
    "demo": AgentConfig(cmd=["chkd-demo-agent"]),
    #: The demo agent in tmux: asks a question first (the worker turns `waiting`), then works.
    "demo-interactive": AgentConfig(
        cmd=["chkd-demo-agent", "--ask", "Shall I go ahead with {task_id}? (yes/no)"],
        interactive=True,
    ),
    "claude": AgentConfig(
        cmd=["claude", "-p", "{prompt}", *CLAUDE_STREAM_ARGS],
        resume=["claude", "--resume", "{session_id}", "-p", "{prompt}", *CLAUDE_STREAM_ARGS],
        output="claude-stream-json",
        claude_hooks=True,
        tags=["claude"],
    ),
    #: The Claude Code TUI in tmux, the task as its first prompt, the same hooks as `claude`.
    "claude-interactive": AgentConfig(cmd=["claude", "{prompt}"], claude_hooks=True, interactive=True),
}


class ConfigError(Exception):
    """A config problem, as one sentence naming the file and key."""


_PATH_RE = re.compile(r"\s*-?\s*at `\$\.?([^`]*)`")
_TYPE_WORDS = {
    "float": "a number",
    "int": "a whole number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
    "null": "nothing",
    "int | null": "a whole number",
    "float | null": "a number",
    "str | null": "a string",
    "array | null": "a list",
    "bool | null": "true or false",
}


def _sentence(path: Path, prefix: str, exc: Exception, kind: Any = None) -> str:
    text = str(exc)
    m = _PATH_RE.search(text)
    where = m.group(1) if m else ""
    text = _PATH_RE.sub("", text).strip()
    rule = _RULE_RE.match(text)
    if rule:  # a rule of __post_init__: 'key': problem
        key = ".".join(p for p in (prefix, where, rule.group(1)) if p)
        return f"{path}: '{key}': {rule.group(2).rstrip('.')}."
    full = ".".join(p for p in (prefix, where) if p)
    unknown = re.match(r"Object contains unknown field `([^`]+)`", text)
    if unknown:
        key = ".".join(p for p in (full, unknown.group(1)) if p)
        return f"{path}: unknown key '{key}'."
    limit = limits.describe(kind, where, text, finite=True) if kind is not None and where else None
    typed = re.match(r"Expected `([^`]+)`, got `([^`]+)`", text)
    if limit:
        text = limit
    elif typed:
        want, got = (_TYPE_WORDS.get(t, t) for t in typed.groups())
        text = f"expected {want}, got {got}"
    else:
        text = text[:1].lower() + text[1:]
    return f"{path}: '{full}': {text.rstrip('.')}." if full else f"{path}: {text.rstrip('.')}."


_RULE_RE = re.compile(r"'([^']+)': (.*)$", re.S)


def parse_config(text: str, path: Path) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
    # Convert the named tables one entry at a time so an error can name the entry.
    tables: dict[str, dict] = {}
    for section, kind in (("repos", RepoConfig), ("agents", AgentConfig)):
        raw = data.pop(section, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: '{section}' must be a table ([{section}.NAME]).")
        tables[section] = {}
        for name, entry in raw.items():
            if section == "agents" and isinstance(entry, dict) and "cmd" not in entry and name in BUILTIN_AGENTS:
                entry = {**msgspec.to_builtins(BUILTIN_AGENTS[name]), **entry}  # change only what it sets
            try:
                tables[section][name] = msgspec.convert(entry, kind)
            except msgspec.ValidationError as exc:
                raise ConfigError(_sentence(path, f"{section}.{name}", exc, kind)) from None
    try:
        return msgspec.convert({**data, **tables}, Config, from_attributes=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_sentence(path, "", exc, Config)) from None


def load_config(path: Path) -> Config:
    """The configuration at `path`, or the defaults when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}).") from None
    return parse_config(text, path)


def config_to_toml(cfg: Config) -> str:
    """Render the effective settings as TOML (for `chkdctl config show`)."""
    data = msgspec.to_builtins(cfg)
    lines: list[str] = []
    tables: list[tuple[str, dict]] = []
    for key, value in data.items():
        if value is None:  # an unset optional setting (budget_usd_per_day): nothing to show
            continue
        if isinstance(value, dict):
            for sub, subval in value.items():
                tables.append((f"{key}.{_key(sub)}", subval))
            continue
        lines.append(f"{key} = {_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _value(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):  # a TOML basic string: JSON's escapes are TOML's, DEL must be escaped too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if value is None:  # unset optional settings are skipped by config_to_toml
        return '""'
    raise TypeError(type(value))
