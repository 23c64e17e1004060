"""Process identity the way psutil computes it, without psutil (clients never import it)."""

from __future__ import annotations

import os
import time


def _boot_time() -> float:
    with open("/proc/stat", "rb") as fh:
        for line in fh:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def create_time(pid: int) -> float:
    """The process's create time in epoch seconds: boot time + starttime / CLK_TCK, as psutil does on Linux.

    Elsewhere (no /proc) it falls back to the current time, which is only right for a
    process that was just started — the one case the shim needs.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        fields = data[data.rindex(b")") + 2 :].split()
        ticks = float(int(fields[19]))  # field 22 of stat: starttime, in clock ticks since boot
        return ticks / os.sysconf("SC_CLK_TCK") + _boot_time()
    except (OSError, ValueError, IndexError):
        return time.time()


def same_process(pid: int, started: float, tolerance: float = 0.05) -> bool:
    """Whether `pid` still is the process created at `started` (and not a zombie). Without /proc
    (macOS) only whether some process has that pid: the best a client can tell without psutil."""
    if not os.path.exists("/proc/self/stat"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    if data[data.rindex(b")") + 2 :].split()[:1] == [b"Z"]:
        return False
    return abs(create_time(pid) - started) <= tolerance
