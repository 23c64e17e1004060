"""The autopilot's pure decisions: smart assignment, capacity, usage-limit skips, 429 back-off,
budget levels, and notifications once per budget day."""

from __future__ import annotations

from chkd.daemon import budget, notify, schedule
from chkd.daemon.schedule import Ready
from chkd.protocol import events as ev
from chkd.protocol.messages import Event, event_of


def test_a_tagged_task_goes_to_the_profile_carrying_its_tag_else_the_default() -> None:
    tagged = {"claude": ["backend", "hard"], "cheap": ["docs"]}
    assert schedule.profile_for(["docs"], tagged, "demo") == "cheap"
    assert schedule.profile_for(["ui", "hard"], tagged, "demo") == "claude"
    assert schedule.profile_for([], tagged, "demo") == "demo"
    assert schedule.profile_for(["ui"], tagged, "demo") == "demo"
    # two profiles carry the tag: the first by name, every time
    assert schedule.profile_for(["x"], {"b": ["x"], "a": ["x"]}, "demo") == "a"


def test_capacity_never_passes_n_nor_max_workers() -> None:
    assert schedule.capacity(3, 5, 0) == 3
    assert schedule.capacity(5, 3, 1) == 2
    assert schedule.capacity(3, 5, 3) == 0
    assert schedule.capacity(3, 5, 4) == 0  # more running than N (N was lowered): nothing starts


def test_plan_skips_tasks_whose_profile_waits_and_keeps_the_order() -> None:
    ready = [Ready("A", ("limited",)), Ready("B"), Ready("C", ("limited",)), Ready("D")]
    tagged = {"claude": ["limited"]}
    assert schedule.plan_starts(ready, 3, tagged, "demo", []) == [("A", "claude"), ("B", "demo"), ("C", "claude")]
    assert schedule.plan_starts(ready, 3, tagged, "demo", ["claude"]) == [("B", "demo"), ("D", "demo")]
    assert schedule.plan_starts(ready, 0, tagged, "demo", []) == []
    assert schedule.plan_starts(ready, 5, tagged, "demo", ["claude", "demo"]) == []


def test_repeated_429s_back_off_with_growing_delays_up_to_a_cap() -> None:
    delays = [schedule.backoff_s(n, 10) for n in range(1, 9)]
    assert delays[:4] == [10, 20, 40, 80]
    assert delays == sorted(delays) and delays[-1] == 900


def test_percentile_by_nearest_rank() -> None:
    assert schedule.percentile([], 90) is None
    assert schedule.percentile([5.0], 90) == 5.0
    assert schedule.percentile([float(n) for n in range(1, 11)], 90) == 9.0
    assert schedule.percentile([float(n) for n in range(1, 11)], 50) == 5.0


def test_budget_levels_warn_at_80_percent_and_stop_at_100() -> None:
    assert budget.level(0.5, None) == 0
    assert budget.level(7.9, 10) == 0
    assert budget.level(8.0, 10) == 1
    assert budget.level(10.0, 10) == 2
    assert budget.level(12.0, 10) == 2
    sentence = budget.used_up_sentence("global", 10.03, 10)
    assert (
        "$10.00" in sentence and "chkdctl resume --all --over-budget" in sentence and "budget_usd_per_day" in sentence
    )
    assert sentence.count(".") >= 1 and "\n" not in sentence


def test_budget_notifications_are_sent_once_per_day_and_usage_limits_once_per_reset() -> None:
    def warned(seq: int, day: str) -> Event:
        return event_of(
            ev.BudgetWarned(scope="global", day=day, spent_usd=8, budget_usd=10, percent=80, message="80 % used"),
            seq=seq,
            at=1,
        )

    def exceeded(seq: int, day: str) -> Event:
        return event_of(
            ev.BudgetExceeded(scope="global", day=day, spent_usd=10, budget_usd=10, percent=100, message="used up"),
            seq=seq,
            at=1,
        )

    def wait(seq: int, until: int, message: str = "waits") -> Event:
        return event_of(
            ev.LimitWaitStarted(profile="claude", until=until, tasks=3, reason="usage limit", message=message),
            seq=seq,
            at=1,
        )

    n = notify.Notifier()
    picked = n.pick(
        [
            warned(1, "2026-12-03"),
            exceeded(2, "2026-12-03"),
            exceeded(3, "2026-12-03"),
            exceeded(4, "2026-12-04"),
            wait(5, 1000, "Claude usage limit: 3 tasks wait until 19:00."),
            wait(6, 1000),
            wait(7, 2000),
        ]
    )
    assert [(c, e.seq) for c, e in picked] == [
        ("budget_warning", 1),
        ("budget", 2),
        ("budget", 4),
        ("usage_limit", 5),
        ("usage_limit", 7),
    ]
    title, body = notify.text("usage_limit", picked[3][1])
    assert title == "chkd: usage limit" and body == "Claude usage limit: 3 tasks wait until 19:00."
