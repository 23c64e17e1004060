"""Every request is bounded: sizes and numbers over the limits get one sentence naming the field and
the limit (before any handler runs), and what is within the limits costs linear time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import (
    Heartbeat,
    Ping,
    RepoAdd,
    TaskAdd,
    TaskEdit,
    TaskImport,
    TaskList,
)

from conftest import Daemon


def refused(daemon: Daemon, body: object, timeout: float = 10.0) -> ChkdError:
    with pytest.raises(ChkdError) as info:
        daemon.call(body, timeout=timeout)
    return info.value


@pytest.fixture
def proj(daemon: Daemon, repo: Path) -> str:
    daemon.call(RepoAdd(path=str(repo)))
    return "proj"


def test_100k_tags_are_refused_at_once_and_the_daemon_keeps_answering(daemon: Daemon, proj: str) -> None:
    t0 = time.monotonic()
    err = refused(daemon, TaskAdd(title="many tags", repo=proj, tags=[f"t{i}" for i in range(100_000)]))
    assert time.monotonic() - t0 < 5
    assert (err.code, err.message) == ("bad_request", "The field 'tags' can hold at most 64 items.")
    t0 = time.monotonic()
    daemon.call(Ping(), timeout=2)
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (TaskAdd(title="x" * 501), "The field 'title' is longer than 500 characters."),
        (
            TaskAdd(title="x", description="d" * (64 * 1024 + 1)),
            "The field 'description' is longer than 65536 characters.",
        ),
        (TaskAdd(title="x", tags=["t" * 65]), "The field 'tags[0]' is longer than 64 characters."),
        (TaskAdd(title="x", id="i" * 65), "The field 'id' is longer than 64 characters."),
        (TaskAdd(title="x", after=["a"] * 257), "The field 'after' can hold at most 256 items."),
        (TaskAdd(title="x", max_attempts=0), "The field 'max_attempts' must be a whole number from 1 to 1000."),
        (TaskAdd(title="a\0b"), "The field 'title' cannot contain a NUL byte."),
        (TaskEdit(id="x", tags=["a"] * 65), "The field 'tags' can hold at most 64 items."),
        (Heartbeat(worker="w1", cost_usd=float("nan")), "The field 'cost_usd' must be a number from 0 to 1000000."),
        (Heartbeat(worker="w1", cost_usd=float("inf")), "The field 'cost_usd' must be a number from 0 to 1000000."),
        (Heartbeat(worker="w1", cost_usd=-1.0), "The field 'cost_usd' must be a number from 0 to 1000000."),
        (
            Heartbeat(worker="w1", tokens_in=2**63),
            "The field 'tokens_in' must be a whole number from 0 to 1099511627776.",
        ),
        (RepoAdd(path="/tmp/a\0b"), "The field 'path' cannot contain a NUL byte."),
        (RepoAdd(path="/tmp", name="n" * 10_000), "The field 'name' is longer than 100 characters."),
        (TaskList(repo="/" + "p" * 5000), "The field 'repo' is longer than 4096 characters."),
    ],
)
def test_a_value_over_its_limit_is_one_sentence_naming_the_field_and_the_limit(
    daemon: Daemon, body: object, message: str
) -> None:
    err = refused(daemon, body)
    assert (err.code, err.message) == ("bad_request", message)


def test_a_long_title_with_little_text_is_still_within_the_title_rule(daemon: Daemon, proj: str) -> None:
    task = daemon.call(TaskAdd(title="  fix   the   login  ", repo=proj)).task
    assert task.title == "fix the login"


def test_import_refuses_too_many_items_with_a_sentence(daemon: Daemon, proj: str) -> None:
    text = "".join(f"- [ ] item {i}\n" for i in range(20_001))
    err = refused(daemon, TaskImport(text=text, repo=proj), timeout=30)
    assert err.code == "bad_request"
    assert err.message == "SPEC.md has 20001 items; one import can hold at most 5000."
    assert daemon.call(TaskList(repo=proj)).tasks == []


def test_import_an_item_with_a_huge_description_is_a_problem_line(daemon: Daemon, proj: str) -> None:
    text = "- [ ] **T.1 small**\n- [ ] **T.2 big**\n" + "".join(f"  line {i} " + "x" * 60 + "\n" for i in range(2000))
    report = daemon.call(TaskImport(text=text, repo=proj))
    assert report.new == ["T.1"]
    assert [(p.line, p.reason) for p in report.problems] == [(2, "The description is longer than 65536 characters.")]


def test_import_of_the_largest_allowed_spec_takes_moments(daemon: Daemon, proj: str) -> None:
    text = "".join(f"- [ ] item {i} #t{i % 7}\n" for i in range(5000))
    t0 = time.monotonic()
    report = daemon.call(TaskImport(text=text, repo=proj), timeout=30)
    assert len(report.new) == 5000
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("a heading with many spaces", "# a" + " " * 20_000 + "b\n"),
        ("a heading with many parentheses", "## " + "(" * 20_000 + "\n"),
        ("20,000 items without ids", "".join(f"- [ ] item {i}\n" for i in range(20_000))),
    ],
)
def test_spec_parsing_is_linear(name: str, text: str) -> None:
    from chkd.daemon import spec

    t0 = time.perf_counter()
    spec.parse(text)
    assert time.perf_counter() - t0 < 1.0, name


def test_spec_numbers_of_any_length_never_crash_the_parser() -> None:
    from chkd.daemon import spec

    doc = spec.parse("- [ ] [P" + "9" * 5000 + "] big priority\n- [ ] SD." + "9" * 5000 + " big id\n- [ ] fine\n")
    assert [i.title for i in doc.items] == ["big priority", "big id", "fine"]
    assert doc.problems[0].line == 1 and "does not exist" in doc.problems[0].reason
