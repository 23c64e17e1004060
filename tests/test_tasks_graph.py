"""The dependency graph and transition rules (daemon/taskgraph.py), tested directly."""

from __future__ import annotations

import pytest

from chkd.daemon import taskgraph as g


def test_ready_needs_pending_unheld_and_every_dependency_done() -> None:
    assert g.is_ready("pending", False, [])
    assert g.is_ready("pending", False, ["done", "done"])
    assert not g.is_ready("pending", False, ["done", "review"])
    assert not g.is_ready("pending", True, [])
    assert not g.is_ready("claimed", False, [])


def test_cycle_path_is_reported_in_order() -> None:
    deps = {"A": ["B"], "B": ["C"]}  # A after B, B after C
    assert g.cycle_if_added(deps, "C", "A") == ["C", "A", "B", "C"]
    assert g.format_cycle(["C", "A", "B", "C"]) == "C → A → B → C"
    assert g.cycle_if_added(deps, "C", "D") is None
    assert g.cycle_if_added(deps, "A", "C") is None  # a shortcut edge is no cycle
    assert g.cycle_if_added({}, "A", "A") == ["A", "A"]


def test_long_chain_does_not_recurse() -> None:
    deps = {f"T{i}": [f"T{i + 1}"] for i in range(5000)}
    path = g.cycle_if_added(deps, "T5000", "T0")
    assert path is not None and len(path) == 5002


@pytest.mark.parametrize(
    "old, new, ok",
    [
        ("pending", "claimed", True),
        ("claimed", "in_progress", True),
        ("in_progress", "review", True),
        ("review", "done", True),
        ("review", "in_progress", True),
        ("in_progress", "cancelled", True),
        ("claimed", "pending", True),
        ("failed", "pending", True),
        ("cancelled", "pending", True),
        ("done", "pending", False),
        ("done", "cancelled", False),
        ("pending", "review", False),
        ("cancelled", "done", False),
        ("review", "review", True),
    ],
)
def test_transitions(old: str, new: str, ok: bool) -> None:
    assert g.can_transition(old, new) is ok


def test_list_order_ready_first_then_priority_then_age() -> None:
    rows = [
        ("old-p2", False, 2, 1, 1),
        ("ready-p3", True, 3, 5, 2),
        ("ready-p1-new", True, 1, 9, 3),
        ("ready-p1-old", True, 1, 2, 4),
    ]
    rows.sort(key=lambda r: g.list_order_key(*r[1:]))
    assert [r[0] for r in rows] == ["ready-p1-old", "ready-p1-new", "ready-p3", "old-p2"]
