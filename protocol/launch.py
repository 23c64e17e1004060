"""How one chkd process starts another: the argv, and a neutral working directory.

Why: `python -m chkd.x` normally puts the current directory first on `sys.path`, so a
repository (or any directory) holding a `chkd/` folder would run its code as chkd.
`-P` (Python 3.11+) never prepends the cwd or a script's directory; unlike `-I` it keeps
the user's site-packages and environment, where chkd itself may be installed.
Both sides use this: chkdctl starting the daemon, the daemon starting shims, the tests.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

#: Where chkd's own processes run unless they need a particular directory: nothing to import there.
NEUTRAL_CWD = "/"


def module_argv(module: str, *args: str) -> list[str]:
    """The argv that runs chkd's `module` (e.g. "chkd.daemon.main") with this interpreter, safely."""
    return [sys.executable, "-P", "-m", module, *args]


def installed_argv(script: str, module: str) -> list[str]:
    """An absolute argv for one of chkd's console scripts (`chkd-mcp`, `chkdctl`) of this
    installation: the script beside this Python, else on PATH (absolute), else this interpreter
    running `module`. For files other programs run later (.mcp.json, Claude Code hooks)."""
    beside = Path(sys.executable).parent / script
    if beside.exists():
        return [str(beside)]
    found = shutil.which(script)
    if found and os.path.isabs(found):  # a relative PATH entry ('.') would find a repository's own
        return [found]
    return module_argv(module)
