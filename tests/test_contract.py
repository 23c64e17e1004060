"""The typed contract: every event kind is a declared Struct, every command names its result,
old event rows still decode, and decisions come from codes and types, not from text."""

from __future__ import annotations

import ast
from pathlib import Path

import apsw
import msgspec
import pytest

from chkd.daemon.context import EVENT_COLUMNS, row_event
from chkd.daemon.store import Store
from chkd.protocol import codec, events
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    COMMANDS,
    RESULT_TYPES,
    Event,
    EventList,
    Events,
    Ok,
    Ping,
    Pong,
    RepoAdd,
    Result,
    ShimGo,
    Spawn,
    TaskAdd,
    TaskImport,
    decode_go,
    encode_go,
    event_of,
    result_type,
)

from conftest import Daemon, make_repo

ROOT = Path(__file__).resolve().parent.parent
FROZEN_V1 = Path(__file__).parent / "data" / "chkd_v1.sql"


def test_every_command_names_a_result_type() -> None:
    assert set(RESULT_TYPES) == set(COMMANDS)
    assert result_type(Ping()) is Pong and result_type(Events) is EventList
    assert all(issubclass(r, Result) for r in RESULT_TYPES.values())


def test_every_event_kind_is_declared_once_with_its_kind_as_tag() -> None:
    tags = [t.__struct_config__.tag for t in events.EVENT_TYPES]
    assert len(tags) == len(set(tags)) and all(isinstance(t, str) for t in tags)
    assert events.BY_KIND["worker.status"] is events.WorkerStatusChanged


def test_the_daemon_emits_only_structs() -> None:
    """No `ctx.emit("kind", ...)` with a string anywhere in the daemon."""
    bad = []
    for path in (ROOT / "daemon").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "emit"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                bad.append(f"{path.name}:{node.lineno}")
    assert bad == []


def test_an_event_round_trips_with_from_as_its_wire_name() -> None:
    ev = event_of(events.WorkerStatusChanged(from_="working", to="done", reason="exit 0"), seq=3, at=1, worker_id="w1")
    assert ev.kind == "worker.status"
    wire = msgspec.to_builtins(ev)
    assert wire["data"] == {"kind": "worker.status", "from": "working", "to": "done", "reason": "exit 0"}
    assert codec.decode_event(codec.encode(ev)) == ev


def test_merge_events_publish_on_their_merge_topic() -> None:
    ev = event_of(events.MergeConflicted(merge_id=7, files=["a"]), seq=1, at=1, worker_id="w1")
    assert codec.topic_for(ev) == b"merge.7"
    assert codec.topic_for(event_of(events.TaskClaimed(by="w1"), seq=1, at=1, worker_id="w1")) == b"worker.w1"


def test_old_event_rows_decode_by_their_kind(tmp_path: Path) -> None:
    """Rows written before events were typed: a tagless map, a NULL, a shape no longer declared."""
    db = tmp_path / "old.db"
    conn = apsw.Connection(str(db))
    conn.execute(FROZEN_V1.read_text())
    conn.close()
    store = Store(db)
    old = msgspec.msgpack.encode({"from": "working", "to": "done", "reason": "exit 0"})
    store.x("INSERT INTO events(at, kind, worker_id, data) VALUES(2, 'worker.status', 'w1', ?)", (old,))
    store.x("INSERT INTO events(at, kind, data) VALUES(3, 'no.such.kind', ?)", (msgspec.msgpack.encode({"x": 1}),))
    rows = [row_event(r) for r in store.all(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq")]
    store.close()
    assert rows[0].kind == "worker.status" and rows[0].data == events.Unreadable()  # v1's row had no data
    assert rows[1].data == events.WorkerStatusChanged(from_="working", to="done", reason="exit 0")
    assert rows[2].kind == "no.such.kind" and rows[2].data == events.Unreadable(fields={"x": 1})
    for ev in rows:  # each one still travels to a client
        assert codec.decode_event(codec.encode(ev)) == ev


def test_emitting_an_undeclared_kind_fails(daemon: Daemon) -> None:
    from chkd.daemon.context import Ctx

    class Sneaky(events.EventBody, tag="sneaky"):
        pass

    ctx = Ctx.__new__(Ctx)  # emit checks before it touches anything
    with pytest.raises(TypeError, match="not an event declared"):
        ctx.emit(Sneaky())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not an event declared"):
        ctx.emit(events.Unreadable())


def test_client_call_refuses_a_reply_of_another_type(daemon: Daemon) -> None:
    client = daemon.client()

    def wrong(body: object, timeout: float | None = None) -> Result:
        return Ok(message="not a pong")

    client.request = wrong  # type: ignore[method-assign]
    with pytest.raises(ChkdError) as err:
        client.call(Ping())
    assert err.value.code == "internal" and "Ok where Pong was expected" in err.value.message


def test_the_shim_go_line_is_a_struct() -> None:
    go = ShimGo(worker="w1", argv=["echo", "a\nb"], cwd="/tmp", log="/tmp/w1.log", env={"A": "1"})
    line = encode_go(go)
    assert "\n" not in line and decode_go(line + "\n") == go
    assert decode_go("stop\n") is None
    with pytest.raises(msgspec.ValidationError):
        decode_go('go {"worker": "w1"}')


def test_spawn_next_with_nothing_ready_has_its_own_code_and_exit_3(daemon: Daemon, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "proj")
    daemon.call(RepoAdd(path=str(repo)))
    with pytest.raises(ChkdError) as err:
        daemon.call(Spawn(repo="proj", next=True))
    assert err.value.code == "nothing_ready"
    out = daemon.ctl("spawn", "--next", "--repo", "proj")
    assert out.code == 3 and "ready to be claimed" in out.err


def test_a_spec_import_that_ticks_a_task_done_is_a_task_event_only(daemon: Daemon, tmp_path: Path) -> None:
    """What the notifier's old `.endswith(".status")` rule turned into "worker done"."""
    from chkd.daemon.notify import classify

    repo = make_repo(tmp_path / "proj")
    daemon.call(RepoAdd(path=str(repo)))
    daemon.call(TaskAdd(repo="proj", id="SD.1", title="One"))
    daemon.call(TaskImport(repo="proj", text="# P\n\n## Site Design\n\n- [x] **SD.1 One**\n"))
    evs: list[Event] = daemon.call(Events(task="SD.1")).events
    ticked = [e for e in evs if isinstance(e.data, events.TaskStatusChanged) and e.data.to == "done"]
    assert ticked, [e.kind for e in evs]
    assert [classify(e.data) for e in evs] == [None] * len(evs)
