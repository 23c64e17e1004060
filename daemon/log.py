"""Structured logging to `state/chkdd.log`: JSON lines, or console rendering on request.

Loggers are built per daemon (no `structlog.configure`), so several daemons in one
process (tests) never share state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TextIO, cast

import structlog

from chkd.protocol.paths import open_private

LogFormat = Literal["json", "console"]


def make_logger(path: Path, fmt: LogFormat = "json") -> tuple[structlog.typing.FilteringBoundLogger, TextIO]:
    # 0600; line-buffered: one write per line
    stream = cast(TextIO, open_private(path, "a", buffering=1, encoding="utf-8"))
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info if fmt == "json" else structlog.processors.StackInfoRenderer(),
        renderer,
    ]
    logger = structlog.wrap_logger(
        structlog.PrintLogger(stream),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=True,
    )
    return cast(structlog.typing.FilteringBoundLogger, logger), stream
