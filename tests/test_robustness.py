"""Bad input gets a clear answer, one log line, and the daemon keeps serving."""

from __future__ import annotations

import random

import msgspec
import pytest
import zmq

from chkd.protocol import codec
from chkd.protocol.messages import COMMANDS, Err, Ping, Reply

from conftest import Daemon, wait_for


def rejected(daemon: Daemon) -> list[dict]:
    return [line for line in daemon.log_lines() if line.get("event") == "rejected_frame"]


def raw_exchange(daemon: Daemon, payload: bytes, timeout: float = 10.0) -> Reply:
    client = daemon.client()
    client.send_raw(payload)
    return codec.decode_reply(client.recv_raw(timeout))


def assert_serving(daemon: Daemon) -> None:
    pong = daemon.call(Ping())
    assert pong.pid == daemon.proc.pid


def test_random_bytes_are_rejected_one_log_line_each(daemon: Daemon) -> None:
    rng = random.Random(1234)
    client = daemon.client()
    payloads = [rng.randbytes(rng.randint(0, 300)) for _ in range(1000)]
    for p in payloads:
        client.send_raw(p)
    replies = [codec.decode_reply(client.recv_raw(10)) for _ in payloads]
    assert all(isinstance(r.body, Err) and r.body.code == "bad_request" for r in replies)
    assert all(r.body.message.endswith(".") and "\n" not in r.body.message for r in replies)
    assert_serving(daemon)
    assert len(wait_for(lambda: len(rejected(daemon)) >= 1000 and rejected(daemon), what="1000 log lines")) == 1000


@pytest.mark.parametrize(
    "payload",
    [
        msgspec.msgpack.encode([1, 2, 3]),
        msgspec.msgpack.encode({"v": "one", "id": 1, "body": {}}),
        msgspec.msgpack.encode({"v": 1, "id": 1}),
        msgspec.msgpack.encode({"v": 1, "id": 1, "body": "ping"}),
        msgspec.msgpack.encode({"v": 1, "id": 1, "body": {"op": "ping", "extra": 1, "nested": [1, 2]}}) + b"\x00",
        msgspec.msgpack.encode({"v": 1, "id": 1, "body": {"op": "task.show"}}),
        msgspec.msgpack.encode({"v": 1, "id": 1, "body": {"op": "task.add", "title": 42}}),
        b"\x91" * 200_000,  # arrays nested 200,000 deep
        b"\x83\xa1v\x01\xa2id\x01\xa4body" + b"\x81\xa1a" * 100_000 + b"\xc0",  # a body nested 100,000 deep
    ],
)
def test_wrong_shapes_are_bad_requests(daemon: Daemon, payload: bytes) -> None:
    reply = raw_exchange(daemon, payload)
    assert isinstance(reply.body, Err)
    assert reply.body.code == "bad_request"
    assert "Traceback" not in reply.body.message
    assert_serving(daemon)
    assert len(rejected(daemon)) == 1


def test_unknown_command_is_named(daemon: Daemon) -> None:
    reply = raw_exchange(daemon, msgspec.msgpack.encode({"v": 1, "id": 7, "body": {"op": "rm_rf_slash"}}))
    assert reply.id == 7
    assert isinstance(reply.body, Err) and reply.body.code == "bad_request"
    assert "Unknown command 'rm_rf_slash'" in reply.body.message
    assert_serving(daemon)


def test_missing_op_is_explained(daemon: Daemon) -> None:
    reply = raw_exchange(daemon, msgspec.msgpack.encode({"v": 1, "id": 8, "body": {"title": "x"}}))
    assert isinstance(reply.body, Err) and "'op'" in reply.body.message


def test_wrong_protocol_version(daemon: Daemon) -> None:
    reply = raw_exchange(daemon, msgspec.msgpack.encode({"v": 99, "id": 3, "body": {"op": "ping"}}))
    assert reply.id == 3
    assert isinstance(reply.body, Err) and reply.body.code == "unsupported_version"
    assert "version 99" in reply.body.message
    assert_serving(daemon)
    assert [r["reason"] for r in rejected(daemon)] == ["unsupported version"]


def test_five_mib_frame_is_refused(daemon: Daemon) -> None:
    big = codec.encode_request(5, Ping()) + b"\x00" * (5 * 1024 * 1024)
    reply = raw_exchange(daemon, big)
    assert isinstance(reply.body, Err) and reply.body.code == "bad_request"
    assert "5.0 MiB" in reply.body.message
    assert_serving(daemon)
    assert [r["reason"] for r in rejected(daemon)] == ["too large"]


def test_client_gone_before_reply(daemon: Daemon) -> None:
    zctx = zmq.Context.instance()
    for i in range(50):
        s = zctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 1000)
        s.connect(daemon.paths.ctl_endpoint)
        s.send(codec.encode_request(i, Ping()))
        s.close()
    assert_serving(daemon)


def test_multipart_garbage_does_not_break_the_loop(daemon: Daemon) -> None:
    zctx = zmq.Context.instance()
    s = zctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(daemon.paths.ctl_endpoint)
    try:
        s.send_multipart([b"", b"junk", b"\xff\xfe"])
        assert s.poll(10_000)
        frames = s.recv_multipart()
        reply = codec.decode_reply(frames[-1])
        assert isinstance(reply.body, Err) and reply.body.code == "bad_request"
    finally:
        s.close()
    assert_serving(daemon)


def test_every_command_has_a_handler() -> None:
    from chkd.daemon.handlers import HANDLERS

    missing = [c.__name__ for c in COMMANDS if c not in HANDLERS]
    assert missing == []
    assert set(HANDLERS) <= set(COMMANDS)
