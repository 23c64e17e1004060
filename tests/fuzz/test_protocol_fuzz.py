"""Protocol fuzzing against ONE live daemon: hostile values in well-formed requests of every command
type, and raw byte frames. Throughout: the daemon never dies, answers `ping` within 1 s after every
example, every reply is a Result or an Err with a known code (never `internal`) and a one-line
message, and a REJECTED request leaves the database exactly as it was (a logical dump of every
table, read with a read-only connection, before and after).

`CHKD_FUZZ_EXAMPLES=N` raises the number of examples per test for long runs by hand. The figures
(cases tried, daemon crashes, rejected requests that changed the database) are printed at the end.

Nothing here can start an agent or touch a real repository: the commands with side effects on
processes or git (spawn, merge, approve, update, rm, attic restore, done, gc --apply) only ever name
workers and repositories that do not exist, so they must fail; shutdown is never sent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chkd.client.client import Client
from chkd.daemon.notify import CURSOR_KEY
from chkd.protocol import codec
from chkd.protocol.errors import ErrorCode
from chkd.protocol.messages import (
    COMMANDS,
    AgentLimit,
    Approve,
    AtticRestore,
    Done,
    Err,
    Gc,
    Merge,
    Ping,
    Pong,
    Remove,
    RepoAdd,
    RepoRm,
    ResumeAgent,
    RunStart,
    Shutdown,
    Spawn,
    TaskAdd,
    Update,
    WorkerShow,
)

from conftest import BIN, Daemon, _kill_strays, make_repo, wait_for

EXAMPLES = int(os.environ.get("CHKD_FUZZ_EXAMPLES", "0") or 0)
KNOWN_CODES = frozenset(ErrorCode.__args__)  # type: ignore[attr-defined]
#: Commands that act on processes or git when they succeed: fuzzed only with names that match nothing.
#: (repo rm too: removing a fixture repository could leave one, which `repo=None` would then pick.)
SIDE_EFFECTS = (Spawn, Merge, Approve, Update, Remove, AtticRestore, Done, RepoRm, ResumeAgent)
NEVER = (Shutdown,)

CONFIG = """\
heartbeat_s = 0.5
heartbeat_timeout_s = 3
stall_timeout_s = 30
abort_grace_s = 1
notify = false
"""


# -- the live daemon and what it holds -------------------------------------------------------------
@dataclass
class Stats:
    tried: int = 0
    rejected: int = 0
    crashes: int = 0
    changed_db: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


@dataclass
class Live:
    daemon: Daemon
    client: Client
    db: apsw.Connection
    stats: Stats
    base: Path


STATS = Stats()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("fuzz")
    home = base / "home"
    home.mkdir()
    daemon = Daemon(home)
    daemon.write_config(CONFIG)
    saved = os.getcwd()
    os.chdir(base)  # a relative path in a request resolves here, never inside the source checkout
    try:
        daemon.start()
    finally:
        os.chdir(saved)
    try:
        _populate(daemon, base)
        db = apsw.Connection(str(daemon.db), flags=apsw.SQLITE_OPEN_READONLY)
        yield Live(daemon, daemon.client(timeout=15), db, STATS, base)
        db.close()
    finally:
        report(
            request,
            f"protocol fuzz: {STATS.tried} cases tried, {STATS.rejected} rejected, daemon crashes "
            f"{STATS.crashes}, rejected requests that changed the DB {STATS.changed_db}; "
            f"errors by code {dict(sorted(STATS.by_code.items()))}",
        )
        try:
            daemon.stop()
        finally:
            daemon.kill()
            _kill_strays(home)


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Print `line` on the terminal even while output is captured (the lead collects these figures)."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


def _populate(daemon: Daemon, base: Path) -> None:
    """Two repositories with tasks, and one finished worker (w1, task A-1) in the first."""
    for name in ("one", "two"):
        daemon.call(RepoAdd(path=str(make_repo(base / name))))
        for i in range(3):
            daemon.call(TaskAdd(title=f"{name} task {i}", id=f"{name[0].upper()}-{i + 2}", repo=name))
    demo = [str(BIN / "chkd-demo-agent"), "--steps", "1", "--step-s", "0"]
    w = daemon.call(Spawn(repo="one", task_id="A-1", title="the only worker", cmd=demo)).worker
    wait_for(
        lambda: daemon.call(WorkerShow(worker=w.id)).worker.status == "done", 30, what="the setup worker to finish"
    )


def dump(db: apsw.Connection) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Every row of every table, in a stable order (the notifier's background cursor left out)."""
    db.execute("BEGIN")
    try:
        tables = [
            r[0]
            for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_stat%' ORDER BY name"
            )
        ]
        out = []
        for table in tables:
            ncols = len(list(db.execute(f'PRAGMA table_info("{table}")')))
            order = ", ".join(str(i) for i in range(1, ncols + 1))
            rows = list(db.execute(f'SELECT * FROM "{table}" ORDER BY {order}'))
            if table == "meta":
                rows = [r for r in rows if r[0] != CURSOR_KEY]
            out.append((table, rows))
        return out
    finally:
        db.execute("COMMIT")


# -- hostile values -----------------------------------------------------------------------------------
HUGE = "x" * 70_000
HOSTILE = [
    "",
    " ",
    "\0",
    "a\0b",
    "..",
    "../..",
    "/",
    "-",
    "-x",
    "--help",
    "a..b",
    "x.lock",
    "HEAD",
    "@{-1}",
    "~nosuchuser/x",
    "$(touch /tmp/chkd-fuzz-PWNED)",
    "; rm -rf ~",
    "'\"`",
    "\n",
    "a\nb",
    "\x1b]0;t\x07",
    "\x1b[2J",
    "\u202e",
    "é",
    "🟢👩‍💻",
    "\ufffd",
    "p" * 300,
    "/" + "p" * 300,
    "x" * 65,
    "x" * 501,
    HUGE,
    "%s%n",
    "{title}",
    "{{",
]
generic_text = st.one_of(st.text(max_size=30), st.sampled_from(HOSTILE), st.text(alphabet="./-~ \0\n{}", max_size=8))
REPOS = ["one", "two", "one/README.md", "./one", "three", "/nonexistent/repo"]
WORKERS = ["w1", "w", "w2", "w999", "A-1", "1"]
TASK_IDS = ["A-1", "O-2", "T-3", "nope", "O-9"]
INTS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, -1, 1, 2, 4, 5, 2**31, 2**40, 2**40 + 1, 2**53, 2**62, 2**63, 2**64 - 1, -(2**63)]),
)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e6, 1e6 + 1, float("nan"), float("inf"), float("-inf"), 1e308]),
)
HUGE_LISTS = [["t"] * 100_000, [str(i) for i in range(100_000)]]


def text_for(name: str, safe: bool) -> st.SearchStrategy[str]:
    """Strings for a field: its real values (repositories, workers, tasks) mixed with hostile ones;
    `safe` (commands with side effects): only values that name nothing."""
    if safe:
        return generic_text.map(lambda s: "zz" + s)
    if name in ("repo",):
        return st.one_of(st.sampled_from(REPOS), generic_text)
    if name in ("worker",):
        return st.one_of(st.sampled_from(WORKERS), generic_text)
    if name in ("id", "task", "task_id", "depends_on", "after"):
        return st.one_of(st.sampled_from(TASK_IDS), generic_text)
    return generic_text


def for_type(t: Any, name: str, safe: bool) -> st.SearchStrategy[Any]:
    insp = msgspec.inspect
    if isinstance(t, insp.UnionType):
        return st.one_of(*(for_type(m, name, safe) for m in t.types))
    if isinstance(t, insp.NoneType):
        return st.none()
    if isinstance(t, insp.StrType):
        return text_for(name, safe)
    if isinstance(t, insp.BoolType):
        return st.booleans()
    if isinstance(t, insp.IntType):
        return INTS
    if isinstance(t, insp.FloatType):
        return FLOATS
    if isinstance(t, insp.LiteralType):
        return st.one_of(st.sampled_from(list(t.values)), generic_text)
    if isinstance(t, insp.ListType):
        small = st.lists(for_type(t.item_type, name, safe), max_size=4)
        if isinstance(t.item_type, insp.StrType) and not safe:
            return st.one_of(small, st.sampled_from(HUGE_LISTS))
        return small
    return st.none()


def command_strategy(cmd: type) -> st.SearchStrategy[Any]:
    safe = cmd in SIDE_EFFECTS
    info = msgspec.inspect.type_info(cmd)
    fields = {f.name: for_type(f.type, f.name, safe) for f in info.fields}  # type: ignore[attr-defined]
    if cmd is Gc:
        fields["apply"] = st.just(False)  # gc --apply removes files: listing only
    if cmd in (Spawn, AtticRestore):
        fields["repo"] = st.none()  # with two repositories registered, no repository is chosen: it must fail
    if cmd is Spawn:
        fields["cmd"] = st.just(["/nonexistent/chkd-fuzz-agent"])  # and even then no agent could run
        fields["agent"] = st.none()
    if cmd is RunStart:  # an autopilot that started would spawn agents between the checks
        fields["agent"] = st.just("chkd-fuzz-no-such-profile")
    if cmd is AgentLimit:  # an accepted limit parks a profile whose wait ends (an event) during later checks
        fields["worker"] = st.just("w999999")
    return st.builds(cmd, **fields)


COMMAND_STRATEGY = st.one_of(*(command_strategy(c) for c in COMMANDS if c not in NEVER))


# -- one exchange, checked -------------------------------------------------------------------------------
def check_reply(body: Any) -> None:
    assert isinstance(body, msgspec.Struct), body
    if isinstance(body, Err):
        assert body.code in KNOWN_CODES, body
        assert body.code != "internal", body
        assert body.message and len(body.message.splitlines()) == 1 and "\r" not in body.message, body
        assert "Traceback" not in body.message and "\n" not in body.hint, body


def exchange(live: Live, send: Any) -> None:
    """Send a command (or raw bytes), check the reply, the database after a rejection, and ping."""
    live.stats.tried += 1
    before = dump(live.db)
    if isinstance(send, bytes):
        live.client.send_raw(send)
        body = codec.decode_reply(live.client.recv_raw(15)).body
    else:
        body = live.client.request(send, timeout=15)
    if live.daemon.proc.poll() is not None:
        live.stats.crashes += 1
        raise AssertionError(f"chkdd died: {live.daemon.output()[-2000:]}")
    check_reply(body)
    if isinstance(body, Err):
        live.stats.rejected += 1
        live.stats.by_code[body.code] = live.stats.by_code.get(body.code, 0) + 1
        if dump(live.db) != before:
            live.stats.changed_db += 1
            raise AssertionError(f"a rejected request changed the database: {send!r:.500} -> {body}")
    t0 = time.monotonic()
    pong = live.client.request(Ping(), timeout=1.0)
    assert isinstance(pong, Pong) and time.monotonic() - t0 < 1.0


FUZZ = {
    "deadline": None,
    "derandomize": False,
    "database": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
}


@settings(max_examples=EXAMPLES or 1500, **FUZZ)
@given(cmd=COMMAND_STRATEGY)
def test_well_formed_requests_with_hostile_values(live: Live, cmd: Any) -> None:
    exchange(live, cmd)


def _raw_frames() -> st.SearchStrategy[bytes]:
    samples = [
        codec.encode_request(7, c)
        for c in (Ping(), TaskAdd(title="x", repo="one", tags=["a"]), Merge(worker="zz"), Gc(repo="one"))
    ]
    values = st.recursive(
        st.none() | st.booleans() | INTS | FLOATS | st.text(max_size=8) | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=12,
    )
    envelope = st.fixed_dictionaries(
        {
            "v": st.one_of(st.just(1), values),
            "id": st.one_of(INTS, values),
            "body": st.one_of(
                values,
                st.dictionaries(st.sampled_from(["op", "title", "repo", "worker", "tags", "v"]), values, max_size=4),
            ),
        }
    )
    return st.one_of(
        st.binary(max_size=300),
        st.tuples(st.sampled_from(samples), st.integers(0, 200)).map(lambda p: p[0][: p[1]]),  # truncated
        envelope.map(msgspec.msgpack.encode),
        values.map(msgspec.msgpack.encode),
        st.sampled_from(
            [
                b"\x91" * 100_000,
                b"\x83\xa1v\x01\xa2id\x01\xa4body" + b"\x81\xa1a" * 50_000 + b"\xc0",
                b"\xdd\xff\xff\xff\xff",
                b"\xc7\x01\x05x",
                b"\xdb\xff\xff\xff\xff",
            ]
        ),
    )


@settings(max_examples=EXAMPLES or 500, **FUZZ)
@given(payload=_raw_frames())
def test_raw_byte_frames(live: Live, payload: bytes) -> None:
    exchange(live, payload)


def test_the_daemon_survived_everything(live: Live) -> None:
    """Runs last in this module: the figures the issue asks for."""
    assert live.daemon.proc.poll() is None
    assert live.stats.crashes == 0 and live.stats.changed_db == 0
    assert live.stats.tried > 0
