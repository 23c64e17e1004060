"""Error codes: the only ones a reply may carry. Messages are one sentence a user can act on."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "bad_request",  # the request could not be decoded, or its fields make no sense
    "unsupported_version",  # the envelope's `v` is not one this daemon speaks
    "not_found",  # no such repository, task, worker or merge
    "nothing_ready",  # no task is ready to be claimed (`spawn --next`; chkdctl exits 3)
    "conflict",  # the request contradicts current state (duplicate id, invalid transition, a cycle)
    "refused",  # doing it would lose work; retry with --force where that is offered
    "busy",  # a limit is reached (max_workers, a merge already running); try again later
    "internal",  # a bug: the daemon logged a traceback
]


class ChkdError(Exception):
    """An error with a code and a one-sentence message; raised by handlers, shown by clients."""

    def __init__(self, code: ErrorCode, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message
