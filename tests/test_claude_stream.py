"""The stream-json parser on the real CLI's recorded output (../shared/claude-code/samples), and the
daemon's sentences for what it finds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chkd.client.claude_stream import Facts, StreamReader
from chkd.daemon.agent_usage import api_error_sentence, limit_sentence, reset_words, result_sentence
from chkd.protocol.agents import ApiError, RunUsage, UsageLimit

#: The real CLI's output, recorded offline (copied from shared/claude-code/samples).
SAMPLES = Path(__file__).resolve().parent / "data" / "claude-stream"


def read(name: str, chunk: int = 997) -> list[Facts]:
    """Feed a sample in odd-sized chunks, as a pipe delivers it."""
    data = (SAMPLES / name).read_bytes()
    reader = StreamReader()
    out: list[Facts] = []
    for i in range(0, len(data), chunk):
        out += reader.feed(data[i : i + chunk])
    return out + reader.finish()


def merged(facts: list[Facts]) -> Facts:
    total = Facts()
    for f in facts:
        total.session_id = total.session_id or f.session_id
        total.model = total.model or f.model
        total.usage = f.usage or total.usage
        total.usage_limit = total.usage_limit or f.usage_limit
        total.api_error = total.api_error or f.api_error
    return total


def test_a_successful_run_gives_session_model_and_the_result_usage_with_cache_tokens() -> None:
    f = merged(read("stream-mcp-stop-exit2.jsonl"))
    assert f.session_id == "45f57291-cda2-4972-b93d-58f4a787040b" and f.model == "claude-opus-5-5"
    assert f.usage is not None and not f.usage.is_error
    # 6000 input + 36000 cache creation + 16000 cache read; assistant lines' partial usage is not summed
    assert (f.usage.tokens_in, f.usage.tokens_out, f.usage.cost_usd) == (58000, 168, 0.21056)
    assert f.usage.terminal_reason == "completed" and f.usage.num_turns == 4
    assert f.usage_limit is None and f.api_error is None


def test_the_usage_limit_is_reported_once_with_its_reset_time_and_the_run_is_an_error() -> None:
    facts = read("stream-usage-limit-oauth.jsonl")
    limits = [f.usage_limit for f in facts if f.usage_limit]
    assert limits == [UsageLimit(resets_at=1796238050 * 1000, limit_type="five_hour")]
    f = merged(facts)
    assert f.usage is not None and f.usage.is_error and f.usage.terminal_reason == "api_error"
    assert f.usage.subtype == "success"  # the CLI says success: only is_error tells
    assert "5-hour limit" in f.usage.text and f.api_error is None


@pytest.mark.parametrize(
    ("sample", "kind", "status"),
    [
        ("stream-429-apikey.jsonl", "rate_limit", 429),
        ("stream-not-logged-in.jsonl", "authentication_failed", None),
    ],
)
def test_api_errors_keep_their_kind(sample: str, kind: str, status: int | None) -> None:
    f = merged(read(sample))
    assert f.api_error is not None and (f.api_error.kind, f.api_error.status) == (kind, status)
    assert f.usage is not None and f.usage.is_error and f.usage_limit is None


def test_max_turns_is_an_error_result() -> None:
    f = merged(read("stream-max-turns.jsonl"))
    assert f.usage is not None and f.usage.is_error and f.usage.subtype == "error_max_turns"
    assert "turns" in result_sentence("Claude", f.usage)


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.jsonl")))
def test_every_sample_has_a_session_and_exactly_one_result(sample: str) -> None:
    facts = read(sample, chunk=61)
    assert [f.session_id for f in facts if f.session_id][:1], "no session id"
    assert len([f for f in facts if f.usage]) == 1


def test_lines_that_are_not_stream_json_are_only_activity() -> None:
    reader = StreamReader()
    assert reader.feed(b"npm WARN something\n[1, 2]\n{\"type\": \"assistant\", \"message\": {}}\n{bad") == []
    assert reader.finish() == []
    assert reader.feed(b'{"type":"result","usage":{"input_tokens":-5,"output_tokens":"x"},"total_cost_usd":1e300}\n')[
        0
    ].usage == RunUsage(ref="None#1")


def test_a_result_line_split_across_reads_is_parsed_once() -> None:
    line = (
        json.dumps(
            {
                "type": "result",
                "uuid": "u1",
                "is_error": False,
                "total_cost_usd": 0.5,
                "usage": {"input_tokens": 10, "output_tokens": 3},
            }
        ).encode()
        + b"\n"
    )
    reader = StreamReader()
    assert reader.feed(line[:7]) == []
    (facts,) = reader.feed(line[7:])
    assert facts.usage == RunUsage(ref="u1", tokens_in=10, tokens_out=3, cost_usd=0.5)


def test_an_allowed_rate_limit_event_is_not_a_stop() -> None:
    reader = StreamReader()
    line = {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed_warning", "resetsAt": 1}}
    assert reader.feed(json.dumps(line).encode() + b"\n") == []


def test_sentences_a_user_reads() -> None:
    at = 1796238050 * 1000  # 19:00:50 UTC
    assert reset_words(at, now_ms_=at - 3600_000) == "resets 19:00 UTC"
    assert reset_words(at, now_ms_=at - 2 * 86400_000) == "resets 2026-12-02 19:00 UTC"
    assert (
        limit_sentence("Claude", UsageLimit(resets_at=at, limit_type="five_hour"), now_ms_=at - 60_000)
        == "Claude stopped: 5-hour usage limit, resets 19:00 UTC."
    )
    assert limit_sentence("Claude", UsageLimit()) == "Claude stopped: usage limit."
    assert (
        api_error_sentence("Claude", ApiError(kind="billing_error"))
        == "Claude stopped: the account has no credit left (billing error)."
    )
    assert (
        api_error_sentence("Claude", ApiError(kind="unknown", status=500, text="boom.\nbang"))
        == "Claude stopped: an API error (500): boom. bang."
    )
