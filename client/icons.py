"""One icon per worker status, shared by `workers`, `watch`, the demo and the TUI."""

from __future__ import annotations

STATUS_ICONS: dict[str, str] = {
    "starting": "⚪",
    "working": "🟢",
    "waiting": "🔔",
    "stalled": "🟠",
    "paused": "🟡",
    "done": "✅",
    "merging": "🔀",
    "merged": "✅",
    "conflict": "⚠",
    "error": "🔴",
    "dead": "🔴",
    "aborted": "⛔",
}
