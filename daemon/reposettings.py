"""A repository's effective workspace settings, and where each one lives.

One source per key: `[repos.NAME] KEY` in config.toml when it sets the key (read at start-up),
else the database (`repo add --test-cmd`, `repo edit`), else the global default. `repo edit`
refuses a key config.toml sets, so an edit can never be silently shadowed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

from chkd.protocol.config import settings_problem
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import REPO_SETTING_KEYS, RepoSettings

from .context import Ctx

DEFAULT_SETUP_TIMEOUT_S = 600.0
DEFAULT_MERGE_BATCH = 4


@dataclass(frozen=True)
class Workspace:
    """What spawn, the pool and the gate need, resolved to plain values (safe off-loop)."""

    main_checkout: str
    setup_cmd: list[str] | None
    setup_timeout_s: float
    copy: list[str]
    setup_inputs: list[str]


def stored(row: dict[str, Any]) -> RepoSettings:
    """The settings the database holds for the repository row (test_cmd has its own column)."""
    settings = msgspec.json.decode(row["settings"], type=RepoSettings) if row.get("settings") else RepoSettings()
    if row.get("test_cmd"):
        settings.test_cmd = json.loads(row["test_cmd"])
    return settings


def from_config(ctx: Ctx, name: str) -> list[str]:
    """The keys config.toml's [repos.NAME] sets (each of those lives there, not in the database)."""
    configured = ctx.config.repos.get(name)
    if configured is None:
        return []
    return [k for k in REPO_SETTING_KEYS if getattr(configured, k) is not None]


def effective(ctx: Ctx, row: dict[str, Any]) -> RepoSettings:
    """config.toml over the database, key by key (None: the global default applies)."""
    merged = stored(row)
    configured = ctx.config.repos.get(row["name"])
    if configured is not None:
        for key in REPO_SETTING_KEYS:
            value = getattr(configured, key)
            if value is not None:
                setattr(merged, key, value)
    return merged


def workspace(ctx: Ctx, row: dict[str, Any]) -> Workspace:
    s = effective(ctx, row)
    return Workspace(
        main_checkout=row["path"],
        setup_cmd=list(s.setup_cmd) if s.setup_cmd else None,
        setup_timeout_s=s.setup_timeout_s or DEFAULT_SETUP_TIMEOUT_S,
        copy=list(s.copy or []),
        setup_inputs=list(s.setup_inputs or []),
    )


def merge_batch(ctx: Ctx, row: dict[str, Any]) -> int:
    return effective(ctx, row).merge_batch or DEFAULT_MERGE_BATCH


def pool_size(ctx: Ctx, row: dict[str, Any]) -> int:
    return effective(ctx, row).pool_size or 0


def gate_strict(ctx: Ctx, row: dict[str, Any]) -> bool:
    return bool(effective(ctx, row).gate_strict)


def edit(ctx: Ctx, row: dict[str, Any], changes: RepoSettings, unset: list[str]) -> list[str]:
    """Store `changes` (and clear `unset`) in the database; returns the keys changed.

    Refused with one sentence: an unknown key, a broken rule, or a key config.toml sets."""
    unknown = [k for k in unset if k not in REPO_SETTING_KEYS]
    if unknown:
        raise ChkdError(
            "bad_request", f"There is no repository setting '{unknown[0]}' (known: {', '.join(REPO_SETTING_KEYS)})."
        )
    given = [k for k in REPO_SETTING_KEYS if getattr(changes, k) is not None]
    both = sorted(set(given) & set(unset))
    if both:
        raise ChkdError("bad_request", f"'{both[0]}' is both set and unset; pick one.")
    if not given and not unset:
        raise ChkdError("bad_request", "Nothing to change: give a setting (like --setup-cmd) or --unset KEY.")
    broken = settings_problem(changes)
    if broken is not None:
        raise ChkdError("bad_request", f"'{broken[0]}': {broken[1].rstrip('.')}.")
    shadowed = sorted(set(given + unset) & set(from_config(ctx, row["name"])))
    if shadowed:
        raise ChkdError(
            "refused",
            f"'{shadowed[0]}' for '{row['name']}' is set in config.toml "
            f"([repos.\"{row['name']}\"]), which is its one source; nothing was changed.",
            "Edit it in config.toml and restart the daemon, or remove it there to manage it here.",
        )
    current = stored(row)
    for key in given:
        setattr(current, key, getattr(changes, key))
    for key in unset:
        setattr(current, key, None)
    test_cmd, current.test_cmd = current.test_cmd, None
    ctx.store.x(
        "UPDATE repos SET settings=?, test_cmd=? WHERE id=?",
        (msgspec.json.encode(current).decode(), json.dumps(test_cmd) if test_cmd else None, row["id"]),
    )
    return given + list(unset)
