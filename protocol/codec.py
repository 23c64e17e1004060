"""One reusable msgpack encoder and the decoders for each envelope."""

from __future__ import annotations

from functools import cache

import msgspec

from .events import MergeEvent
from .messages import PROTOCOL_VERSION, AnyCommand, AnyResult, Event, RawRequest, Reply, Request

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode


# Decoders are built on first use: building one for a large union costs milliseconds,
# and a client only ever needs the reply and event decoders (chkdctl start-up is a hot path).
@cache
def _decoder(kind: object) -> msgspec.msgpack.Decoder:
    return msgspec.msgpack.Decoder(kind)


DecodeError = msgspec.DecodeError
ValidationError = msgspec.ValidationError


def encode_request(req_id: int, body: AnyCommand) -> bytes:
    return _encoder.encode(Request(PROTOCOL_VERSION, req_id, body))


def encode_reply(req_id: int, body: AnyResult) -> bytes:
    return _encoder.encode(Reply(PROTOCOL_VERSION, req_id, body))


def decode_envelope(data: bytes) -> RawRequest:
    return _decoder(RawRequest).decode(data)


def decode_command(raw: msgspec.Raw | bytes) -> AnyCommand:
    return _decoder(AnyCommand).decode(raw)


def decode_reply(data: bytes) -> Reply:
    return _decoder(Reply).decode(data)


def decode_event(data: bytes) -> Event:
    return _decoder(Event).decode(data)


def topic_for(event: Event) -> bytes:
    """PUB topic: `worker.<id>`, `merge.<id>`, `task.<id>`, or `daemon`."""
    if isinstance(event.data, MergeEvent):
        return f"merge.{event.data.merge_id}".encode()
    if event.worker_id:
        return f"worker.{event.worker_id}".encode()
    if event.task_id:
        return f"task.{event.task_id}".encode()
    return b"daemon"
