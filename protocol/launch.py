"""How one chkd process starts another: the argv, and a neutral working directory.

Why: `python -m chkd.x` normally puts the current directory first on `sys.path`, so a
repository (or any directory) holding a `chkd/` folder would run its code as chkd.
`-P` (Python 3.11+) never prepends the cwd or a script's directory; unlike `-I` it keeps
the user's site-packages and environment, where chkd itself may be installed.
Both sides use this: chkdctl starting the daemon, the daemon starting shims, the tests.
"""

from __future__ import annotations

import sys

#: Where chkd's own processes run unless they need a particular directory: nothing to import there.
NEUTRAL_CWD = "/"


def module_argv(module: str, *args: str) -> list[str]:
    """The argv that runs chkd's `module` (e.g. "chkd.daemon.main") with this interpreter, safely."""
    return [sys.executable, "-P", "-m", module, *args]
