"""config.toml: its schema, defaults, and validation into one-sentence errors.

Lives in protocol/ because both sides read it: the daemon at start-up, `chkdctl
config check|show` without a daemon. Unknown keys and wrong types are errors
that name the key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

import msgspec
from msgspec import Struct


class RepoConfig(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Per-repository overrides, keyed by repository name."""

    max_workers: int | None = None
    test_cmd: list[str] | None = None
    test_timeout_s: float | None = None
    merge_strategy: Literal["auto", "review"] | None = None
    main_branch: str | None = None
    default_agent: str | None = None


class AgentConfig(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An agent profile. Placeholders in `cmd`: {worker_id} {task_id} {title}
    {description} {worktree} {branch} {prompt}."""

    cmd: list[str]
    env: dict[str, str] = {}
    claude_hooks: bool = False


class Config(Struct, forbid_unknown_fields=True):
    heartbeat_s: float = 10.0
    heartbeat_timeout_s: float = 30.0
    stall_timeout_s: float = 600.0
    on_stall: Literal["notify", "abort", "requeue"] = "notify"
    max_workers: int = 3
    max_attempts: int = 3
    abort_grace_s: float = 5.0
    worktree_pattern: str = "../{repo}-{task}"
    branch_prefix: str = "chkd/"
    merge_strategy: Literal["auto", "review"] = "review"
    test_timeout_s: float = 600.0
    radar_interval_s: float = 3.0
    notify: bool = True
    notify_cmd: list[str] = []
    default_agent: str = "demo"
    repos: dict[str, RepoConfig] = {}
    agents: dict[str, AgentConfig] = {}

    def __post_init__(self) -> None:
        for name in ("heartbeat_s", "heartbeat_timeout_s", "stall_timeout_s", "abort_grace_s",
                     "test_timeout_s", "radar_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if self.heartbeat_timeout_s <= self.heartbeat_s:
            raise ValueError("heartbeat_timeout_s must be longer than heartbeat_s")
        if self.max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if "{task}" not in self.worktree_pattern:
            raise ValueError("worktree_pattern must contain {task}")

    def for_repo(self, name: str) -> RepoConfig:
        return self.repos.get(name) or RepoConfig()

    def max_workers_for(self, name: str) -> int:
        return self.for_repo(name).max_workers or self.max_workers

    def agent_profile(self, name: str) -> AgentConfig | None:
        if name in self.agents:
            return self.agents[name]
        return BUILTIN_AGENTS.get(name)


#: Profiles that exist without configuration. `demo` is the bundled scripted agent.
BUILTIN_AGENTS: dict[str, AgentConfig] = {
    "demo": AgentConfig(cmd=["chkd-demo-agent"]),
    "claude": AgentConfig(
        cmd=["claude", "-p", "{prompt}", "--output-format", "stream-json", "--verbose"],
        claude_hooks=True,
    ),
}


class ConfigError(Exception):
    """A config problem, as one sentence naming the file and key."""


_PATH_RE = re.compile(r"\s*-?\s*at `\$\.?([^`]*)`")
_TYPE_WORDS = {"float": "a number", "int": "a whole number", "str": "a string", "bool": "true or false",
               "array": "a list", "object": "a table", "null": "nothing", "int | null": "a whole number",
               "float | null": "a number", "str | null": "a string", "array | null": "a list"}


def _sentence(path: Path, prefix: str, exc: Exception) -> str:
    text = str(exc)
    m = _PATH_RE.search(text)
    where = m.group(1) if m else ""
    text = _PATH_RE.sub("", text).strip()
    where = ".".join(p for p in (prefix, where) if p)
    unknown = re.match(r"Object contains unknown field `([^`]+)`", text)
    if unknown:
        key = ".".join(p for p in (where, unknown.group(1)) if p)
        return f"{path}: unknown key '{key}'."
    typed = re.match(r"Expected `([^`]+)`, got `([^`]+)`", text)
    if typed:
        want, got = (_TYPE_WORDS.get(t, t) for t in typed.groups())
        text = f"expected {want}, got {got}"
    else:
        text = text[:1].lower() + text[1:]
    return f"{path}: '{where}': {text.rstrip('.')}." if where else f"{path}: {text.rstrip('.')}."


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
            try:
                tables[section][name] = msgspec.convert(entry, kind)
            except msgspec.ValidationError as exc:
                raise ConfigError(_sentence(path, f"{section}.{name}", exc)) from None
    try:
        return msgspec.convert({**data, **tables}, Config, from_attributes=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_sentence(path, "", exc)) from None


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
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if value is None:
        return '""'
    raise TypeError(type(value))
