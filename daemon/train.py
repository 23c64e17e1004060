"""The merge train: several waiting merges stacked and gated together (blocking; off-loop only).

Why: a real test suite makes a one-at-a-time gate the bottleneck. K merges waiting in queue
order are stacked (`merge-tree` + `commit-tree` onto each other, no checkout; each keeps its
own merge commit), the gate runs once on the top of the stack, and on success the target moves
once, by compare-and-swap, to that top. On failure the first failing prefix is found by
halving (gating prefixes of the stack), that merge fails with its gate output, and the rest is
stacked again without it and gated once more; whatever lands was gated as exactly that stack.
A conflict inside the batch (with the target or an earlier merge of the batch) drops that merge
to `conflict` before any gate runs. Nothing here touches the store or moves a ref.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from chkd.protocol.errors import ChkdError

from . import failpoints, git, mergeengine


@dataclass(frozen=True)
class Car:
    """One merge of the train (plain data)."""

    merge_id: int
    head: str  # the worker's branch ref
    message: str
    known_head: str | None = None
    worktree: str | None = None


@dataclass
class Outcome:
    target_sha: str  # the target when the train started (the CAS's old value)
    tip: str | None = None  # the top of the gated stack to land (None: nothing to land)
    landed: list[tuple[int, str, str]] = field(default_factory=list)  # (merge_id, its merge commit, head sha)
    already_in: list[int] = field(default_factory=list)
    conflicts: dict[int, list[str]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)  # merge_id → why, with the gate output
    gate_runs: int = 0
    isolated: dict[int, int] = field(default_factory=dict)  # merge_id → the gate run after which it was isolated
    log: list[str] = field(default_factory=list)  # one line per gate run, for every car's merge log
    suspects: list[str] = field(default_factory=list)


Gate = Callable[[str], mergeengine.GateResult]


def _stack(repo: str, base: str, cars: list[Car], out: Outcome) -> list[tuple[Car, str, str]]:
    """Stack `cars` onto `base` in order: [(car, merge commit, head sha)]. A conflicting, already
    merged or refused car is recorded in `out` and left out (the next one stacks on the previous)."""
    stacked: list[tuple[Car, str, str]] = []
    tip = base
    for car in cars:
        try:
            head_sha = git.rev(car.head, repo)
            if head_sha is None and car.known_head and _is_ancestor(car.known_head, tip, repo):
                out.already_in.append(car.merge_id)
                continue
            if head_sha is None:
                raise ChkdError("not_found", f"The branch '{car.head}' no longer exists; nothing to merge.")
            if _is_ancestor(head_sha, tip, repo):
                out.already_in.append(car.merge_id)
                continue
            tree, conflicts = git.merge_tree(tip, head_sha, repo)
            if tree is None:
                out.conflicts[car.merge_id] = conflicts
                continue
            _refuse_copied(repo, tip, tree, car)
            commit = git.out(
                ["commit-tree", tree, "-p", tip, "-p", head_sha, "-m", car.message], repo, env=git.identity_env(repo)
            )
        except ChkdError as exc:
            out.failed[car.merge_id] = exc.message
            continue
        stacked.append((car, commit, head_sha))
        tip = commit
    return stacked


def _refuse_copied(repo: str, tip: str, tree: str, car: Car) -> None:
    from . import worktrees

    copied = worktrees.copied_files(car.worktree) if car.worktree and os.path.isdir(car.worktree) else []
    if copied and git.out(["diff", "--name-only", "--diff-filter=A", tip, tree, "--", *copied], repo).strip():
        raise ChkdError(
            "refused", "The branch commits a file chkd copied in from the main checkout (copy); nothing was merged."
        )


def _is_ancestor(a: str, b: str, repo: str) -> bool:
    return git.run(["merge-base", "--is-ancestor", a, b], repo, check=False).returncode == 0


def _gate(gate: Gate, commit: str, what: str, out: Outcome) -> mergeengine.GateResult:
    res = gate(commit)
    out.gate_runs += 1
    verdict = "passed" if res.ok else "timed out" if res.timed_out else f"failed (exit {res.returncode})"
    out.log.append(f"train gate run {out.gate_runs} on {what} ({res.seconds:.1f} s): {verdict}")
    if res.suspect and res.suspect not in out.suspects:
        out.suspects.append(res.suspect)
    return res


def _ids(stacked: list[tuple[Car, str, str]]) -> str:
    return "merges " + ", ".join(str(c.merge_id) for c, _, _ in stacked)


def run(repo: str, target: str, cars: list[Car], gate: Gate) -> Outcome:
    """Stack, gate once, bisect on failure. The result says what lands (one CAS, by the caller)."""
    target_sha = git.rev(mergeengine.target_ref(target), repo)
    if target_sha is None:
        raise ChkdError("not_found", f"The target branch '{target}' does not exist in {repo}.")
    out = Outcome(target_sha)
    base = target_sha
    pending = _stack(repo, base, cars, out)
    good: list[tuple[Car, str, str]] = []
    while pending:
        res = _gate(gate, pending[-1][1], _ids(pending), out)
        if res.ok:
            good += pending
            base = pending[-1][1]
            break
        # the first failing prefix: pending[:lo] passes (or is empty), pending[:hi] fails
        lo, hi, failing = 0, len(pending), res
        while hi - lo > 1:
            mid = (lo + hi) // 2
            probe = _gate(gate, pending[mid - 1][1], _ids(pending[:mid]), out)
            if probe.ok:
                lo = mid
            else:
                hi, failing = mid, probe
        bad = pending[hi - 1][0]
        why = "timed out" if failing.timed_out else f"failed (exit {failing.returncode})"
        out.isolated[bad.merge_id] = out.gate_runs
        out.failed[bad.merge_id] = (
            f"The test gate {why} with this merge on top of the train "
            f"({_ids(pending[:hi])}); isolated after gate run {out.gate_runs}:\n"
            f"{failing.output}"
        )
        good += pending[:lo]
        base = pending[lo - 1][1] if lo else base
        rest = [c for c, _, _ in pending[hi:]]
        pending = _stack(repo, base, rest, out)  # without the failing one: new merge commits
    out.landed = [(c.merge_id, commit, head) for c, commit, head in good]
    out.tip = base if good else None
    return out


@dataclass(frozen=True)
class Cleanup:
    merge_id: int
    worktree: str | None
    branch: str | None


@dataclass
class TrainLanded:
    landed: mergeengine.Landed
    notes: dict[int, list[str]] = field(default_factory=dict)


def land(repo: str, target: str, tip: str, old: str, cleanups: list[Cleanup]) -> TrainLanded:
    """One CAS of the target from `old` to the train's `tip`, then each landed worker's cleanup.
    The caller recorded (old, tip) on every landing merge first (a kill after the CAS is finished
    at start-up, and the re-check finds each branch in the target)."""
    landed = mergeengine.land(repo, target, tip, old)
    if landed.moved:
        return TrainLanded(landed)
    notes = {c.merge_id: mergeengine.remove_checkout(repo, c.worktree, c.branch, target) for c in cleanups}
    failpoints.hit("merge.landed")
    return TrainLanded(landed, notes)


def gate_with(
    repo: str,
    path: str,
    cmd: list[str],
    timeout: float,
    owner: dict[str, object],
    ws: object,
    log_path: str,
    strict: bool,
) -> Gate:
    """The train's gate: the persistent gate worktree; under gate_strict a suspect run fails."""
    from . import gate as gate_area

    def _run(commit: str) -> mergeengine.GateResult:
        res = gate_area.run(repo, path, commit, cmd, timeout, owner, ws, log_path)  # type: ignore[arg-type]
        failpoints.hit("train.gated")
        if strict and res.ok and res.suspect:
            return mergeengine.GateResult(
                False,
                res.output + f"\n[chkd] gate_strict: {gate_area.suspect_sentence(res.suspect)}\n",
                res.seconds,
                returncode=res.returncode,
                suspect=res.suspect,
            )
        return res

    return _run
