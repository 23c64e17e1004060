"""chkdctl's command index (client/commands/index.py) is the commands themselves, and it is what
keeps start-up lean: `--help` and every command import only what they use."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import chkd.client.commands as commands_pkg
from chkd.client.commands.index import INDEX


def _defined() -> dict[str, tuple[str, str]]:
    """Every top-level command every area module defines: name → (module, its --help line)."""
    found: dict[str, tuple[str, str]] = {}
    for info in pkgutil.iter_modules(commands_pkg.__path__):
        module = importlib.import_module(f"chkd.client.commands.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            assert command.name not in found, f"{command.name} is defined twice"
            found[str(command.name)] = (info.name, command.get_short_help_str(limit=10**6))
    return found


def test_the_index_lists_every_command_with_its_own_module_and_help_line() -> None:
    assert _defined() == INDEX


def _modules_after(argv: list[str]) -> list[str]:
    probe = (
        "import sys\nfrom chkd.client.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('--modules--', *(m for m in sys.modules if m.startswith('chkd.client.commands.')))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.rsplit("--modules--", 1)[1].split())


def test_help_imports_no_command_module_and_a_command_only_its_own() -> None:
    assert [m for m in _modules_after(["--help"]) if m != "chkd.client.commands.index"] == []
    ran = _modules_after(["agents", "--help"])
    assert "chkd.client.commands.agents" in ran
    assert not {"chkd.client.commands.workers", "chkd.client.commands.tasks"} & set(ran), ran
