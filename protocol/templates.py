"""`{name}` placeholders in agent commands and the worktree pattern: a small grammar, never `str.format`.

`str.format` evaluates attribute and index lookups (`{task.__class__.__name__}`) and raises
KeyError on unknown names at spawn time; this grammar only knows `{name}` for the names a
caller allows, `{{` and `}}` for literal braces, and everything else is an error found when
the configuration is loaded. Substitution is one pass: a value that itself contains `{title}`
is never expanded again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Placeholders of an agent's `cmd` (config.toml `[agents.NAME]`, `spawn --cmd`).
AGENT_PLACEHOLDERS = ("worker_id", "task_id", "title", "description", "worktree", "branch", "prompt")
#: Placeholders of an agent's `prompt` template (the prompt itself is what `{prompt}` becomes).
PROMPT_PLACEHOLDERS = ("worker_id", "task_id", "title", "description", "worktree", "branch")
#: Placeholders of an agent's `resume` argv: `{prompt}` is the instructions (conflict files, a reviewer's reason).
RESUME_PLACEHOLDERS = (*AGENT_PLACEHOLDERS, "session_id")
#: Placeholders of `worktree_pattern`.
PATTERN_PLACEHOLDERS = ("repo", "task")

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _names(allowed: Iterable[str]) -> str:
    return " ".join("{" + a + "}" for a in allowed)


def template_problem(text: str, allowed: Iterable[str]) -> str | None:
    """Why `text` is not a valid template over `allowed`, or None."""
    allowed = tuple(allowed)
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token in ("{{", "}}"):
            continue
        if token == "{":
            return "a single '{' must be written '{{'"
        if token == "}":
            return "a single '}' must be written '}}'"
        name = m.group(1)
        if name not in allowed:
            shown = name if len(name) <= 40 else name[:39] + "…"
            return f"unknown placeholder {{{shown}}}; use {_names(allowed)} ({{{{ and }}}} for literal braces)"
    return None


def render(text: str, values: Mapping[str, str]) -> str:
    """`text` with each `{name}` in `values` replaced, `{{`/`}}` made single; anything else left as it is."""

    def _sub(m: re.Match[str]) -> str:
        token = m.group()
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = m.group(1)
        return str(values[name]) if name is not None and name in values else token

    return _TOKEN.sub(_sub, text)


def literal_braces(text: str, allowed: Iterable[str]) -> str:
    """`text` as a template in which only `{name}` for `allowed` names is a placeholder: every
    other brace is doubled, so rendering gives it back as typed (for `spawn --cmd`, where an
    argument like `{"a": {"b": 1}}` is data, not a template)."""
    allowed = tuple(allowed)

    def _sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name is not None and name in allowed:
            return m.group()
        return m.group().replace("{", "{{").replace("}", "}}")

    return _TOKEN.sub(_sub, text)


def argv_problem(argv: list[str]) -> str | None:
    """Why `argv` cannot be run (no program, a NUL byte), or None."""
    if not argv or not argv[0].strip():
        return "must name a program (a list like [\"prog\", \"arg\"] whose first item is not empty)"
    if any("\0" in arg for arg in argv):
        return "cannot contain a NUL byte"
    return None


def worktree_pattern_problem(pattern: str) -> str | None:
    """Why worktrees made from `pattern` (relative to the repository) could land in the wrong place, or None.

    The rule: a worktree lands inside the repository's parent directory, never inside the
    repository itself (nor its .git), and every task gets its own path (`{task}` survives `..`).
    `{repo}` may equal the repository's directory name, so `../{repo}/x` counts as inside it.
    """
    if "\0" in pattern:
        return "cannot contain a NUL byte"
    problem = template_problem(pattern, PATTERN_PLACEHOLDERS)
    if problem is not None:
        return problem
    if "{task}" not in pattern:
        return "must contain {task}"
    example = "(like ../{repo}-{task})"
    if pattern.startswith(("/", "~")):
        return f"must be relative to the repository {example}"
    repo_dir = "\0repo"
    parts = [repo_dir]  # the path below the repository's parent directory
    for part in pattern.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return f"must land inside the repository's parent directory {example}"
            parts.pop()
        else:
            parts.append(part)
    if not parts:
        return f"must land inside the repository's parent directory, not be it {example}"
    if parts[0] in (repo_dir, "{repo}"):
        return f"must not land inside the repository {example}"
    if not any("{task}" in part for part in parts):
        return "must keep {task} in the path (a '..' after it removes it)"
    return None
