"""Results only chkd-mcp returns (msgspec Structs, like every other boundary): a worker with the
tail of its log, a worker's status with its messages, a sent message."""

from __future__ import annotations

from msgspec import Struct

from chkd.protocol.messages import MessageInfo, TaskInfo, WorkerInfo, WorkerStatus


class WorkerDetail(Struct, omit_defaults=True):
    worker: WorkerInfo
    log_tail: list[str] = []


class WorkerStatusReport(Struct, omit_defaults=True):
    """What the daemon wants from this worker now, and the messages it had not read yet."""

    status: WorkerStatus
    instruction: str
    messages: list[MessageInfo] = []


class ClaimReport(Struct, omit_defaults=True):
    task: TaskInfo | None = None


class MessageReport(Struct, omit_defaults=True):
    messages: list[MessageInfo] = []
