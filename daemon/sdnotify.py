"""The service manager's side channel: systemd's `sd_notify` over `NOTIFY_SOCKET`, no library.

Why: as a `Type=notify` unit chkdd says `READY=1` only once it serves (so `systemctl start`
and whatever is ordered after it wait for a daemon that answers), pings `WATCHDOG=1` from
its own timer heap (a loop stuck for `WatchdogSec` gets restarted), and says `STOPPING=1`
when it shuts down. The protocol is one datagram of `KEY=VALUE` lines to a unix socket
(a path, or an abstract name written with a leading `@`); without `NOTIFY_SOCKET`
every call is a no-op.

The variables are taken out of the environment when read, so shims and agents (which
inherit chkdd's environment) never talk to the service manager as if they were chkdd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

#: What systemd sets for a notify service; consumed by `from_environ`.
ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SdNotifier:
    """Sends state lines to the service manager; silent (and harmless) when there is none."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        #: How often the manager expects `WATCHDOG=1`; None when it does not watch us.
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> SdNotifier:
        """Read (and remove) NOTIFY_SOCKET / WATCHDOG_USEC / WATCHDOG_PID.

        The watchdog applies only when WATCHDOG_PID is absent or names this process, as
        sd_watchdog_enabled(3) says; a malformed value means no watchdog, not a crash."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        try:
            usec = int(env.get("WATCHDOG_USEC", "")) or None
            wd_pid = env.get("WATCHDOG_PID")
            if wd_pid and int(wd_pid) != os.getpid():
                usec = None
        except ValueError:
            usec = None
        for key in ENV_KEYS:
            env.pop(key, None)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Half the manager's timeout, as sd_watchdog_enabled(3) recommends; None: no watchdog."""
        return None if not self.enabled or not self.watchdog_usec else self.watchdog_usec / 2e6

    def notify(self, *lines: str) -> bool:
        """Send `lines` as one datagram; False (never an exception) when it could not be sent."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # the loop never waits on the service manager
            self._sock.sendto("\n".join(lines).encode("utf-8", "replace"), target)
            return True
        except OSError:
            return False

    def ready(self, status: str = "serving") -> bool:
        return self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
