"""The wire contract and path rules, without a daemon."""

from __future__ import annotations

import subprocess
import typing
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chkd.protocol import codec
from chkd.protocol.messages import COMMANDS, Err, Ping, Pong, Reply, Request, TaskAdd
from chkd.protocol.paths import find_repo_root, resolve

from conftest import make_repo


def test_request_round_trip() -> None:
    body = TaskAdd(title="Fix login", priority=1, tags=["ui"], after=["T-1"])
    data = codec.encode_request(9, body)
    env = codec.decode_envelope(data)
    assert (env.v, env.id) == (1, 9)
    assert codec.decode_command(env.body) == body


def test_reply_round_trip() -> None:
    pong = Pong(version="1", pid=2, uptime_s=0.5, home="/h", db="/h/db", repos=0, tasks=0, workers=0)
    assert codec.decode_reply(codec.encode_reply(4, pong)) == Reply(1, 4, pong)
    err = Err(code="not_found", message="No such task.")
    assert codec.decode_reply(codec.encode_reply(5, err)).body == err


def test_command_tags_are_unique_and_dotted_names() -> None:
    tags = [msgspec.inspect.type_info(c).tag for c in COMMANDS]
    assert len(tags) == len(set(tags))
    assert all(t.replace(".", "").replace("_", "").isalnum() for t in tags)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_only_raises_decode_errors(data: bytes) -> None:
    try:
        env = codec.decode_envelope(data)
        codec.decode_command(env.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass


def test_paths_with_home(tmp_path: Path) -> None:
    p = resolve(tmp_path / "h")
    assert p.run == tmp_path / "h" / "run"
    assert p.state == tmp_path / "h" / "state"
    assert p.config_file == tmp_path / "h" / "config.toml"


def test_paths_follow_xdg(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(tmp_path / "rt"),
        "XDG_STATE_HOME": str(tmp_path / "st"),
        "XDG_CONFIG_HOME": str(tmp_path / "cf"),
    }
    p = resolve(env=env)
    assert p.run == tmp_path / "rt" / "chkd"
    assert p.state == tmp_path / "st" / "chkd"
    assert p.config_file == tmp_path / "cf" / "chkd" / "config.toml"
    fallback = resolve(env={"HOME": str(tmp_path)})
    assert str(fallback.run).startswith("/tmp/chkd-")
    assert fallback.state == tmp_path / ".local" / "state" / "chkd"


def test_find_repo_root_maps_worktrees_back(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    (repo / "src" / "deep").mkdir(parents=True)
    assert find_repo_root(repo / "src" / "deep") == repo
    subprocess.run(["git", "worktree", "add", "-q", "-b", "chkd/T-1", str(tmp_path / "proj-T-1")], cwd=repo, check=True)
    assert find_repo_root(tmp_path / "proj-T-1") == repo
    assert find_repo_root(tmp_path) is None


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_encodes(cmd: type) -> None:
    fields = msgspec.structs.fields(cmd)
    kwargs = {f.name: _sample(f.type) for f in fields if f.required}
    body = cmd(**kwargs)
    assert codec.decode_command(codec.decode_envelope(codec.encode_request(1, body)).body) == body


def _sample(tp: object) -> object:
    if typing.get_origin(tp) is typing.Annotated:  # a bounded type: sample its base
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is typing.Literal:  # a required choice (Hook.event): its first value
        return typing.get_args(tp)[0]
    return {str: "x", int: 1, float: 1.0, bool: True}.get(tp, "x")  # type: ignore[arg-type]


def test_request_struct_is_the_envelope() -> None:
    assert msgspec.msgpack.decode(codec.encode_request(1, Ping()), type=Request).body == Ping()


def test_cli_status_choices_match_the_protocol() -> None:
    """chkdctl spells the statuses out (importing messages would slow its start-up): keep them in step."""
    from chkd.client.commands.tasks import STATUSES
    from chkd.protocol.messages import TASK_STATUSES

    assert tuple(STATUSES.choices) == TASK_STATUSES
