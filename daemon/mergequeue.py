"""The merge queue: one merge at a time per repository, in task-priority order.

Merges of different repositories run side by side; every git step runs off-loop
(`daemon/mergeengine.py` through `ctx.submit`), so the loop keeps answering meanwhile.

State machine (merges.status):
    queued → checking → testing → awaiting_review → (approve) queued → checking → merged
                  ↘ conflict    ↘ failed            ↘ (reject) rejected
A merge that waits for review does not hold its repository: the next one may go.
After approval it lands without asking again; if the target moved meanwhile it is
re-checked (and re-tested) against the new target first. A CAS that loses a race
goes back to `checking`, never forces.

Events (kind → data; every one carries repo, worker_id and task_id too):
    merge.queued          merge_id, strategy, target, priority, run_tests, [approved]
    merge.checking        merge_id (a re-check after the target moved: also retry=True, why)
    merge.testing         merge_id, cmd
    merge.awaiting_review merge_id, result_sha
    merge.approved        merge_id
    merge.merged          merge_id, result_sha, target, already_in (True: nothing to merge,
                          e.g. squash-merged), checkouts (paths brought up to date)
    merge.conflict        merge_id, files
    merge.train           (one per train) train, merge_ids, gate_runs, landing, failed, conflicts
    merge.gate_suspect    merge_id, path (a main-checkout file the gate's output names), message, strict, [train]
    merge.failed          merge_id, reason
    merge.rejected        merge_id, reason
    worker.update         worker's branch took the target in (`chkdctl update`): merged, files
    overlap               (radar) a, b (None = the target), files, conflict, conflict_files
Worker and task status changes go through the workers and tasks areas (their own events).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chkd.protocol import events as ev
from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import MergeInfo
from chkd.protocol.statuses import ACTIVE_MERGE_STATUSES, FINAL_MERGE_STATUSES, RUNNING_MERGE_STATUSES

from . import gate, lookup, mergeengine, reposettings, train
from .context import Ctx
from .store import now_ms

FINAL = FINAL_MERGE_STATUSES
ACTIVE = ACTIVE_MERGE_STATUSES
#: States during which the repository's merge slot is held.
RUNNING = RUNNING_MERGE_STATUSES

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"checking", "rejected", "failed"}),
    "checking": frozenset({"testing", "awaiting_review", "merged", "conflict", "failed", "checking", "queued"}),
    "testing": frozenset({"awaiting_review", "checking", "merged", "conflict", "failed", "queued"}),
    "awaiting_review": frozenset({"queued", "rejected", "failed"}),
}

EXT = "merge.queue"


# -- pure logic ------------------------------------------------------------------------------------
def can_transition(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, frozenset())


def pick_next(queued: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most urgent queued merge: lowest task priority number, then first come."""
    return min(queued, key=lambda m: (m["priority"], m["id"]), default=None)


def step_after_check(
    plan: mergeengine.Plan, *, gate: bool, review: bool, approved: bool, tested_base: str | None
) -> str:
    """What follows the conflict check: merged (nothing to do) | conflict | testing | awaiting_review | landing.

    An approved merge whose target has not moved since its gate passed lands directly."""
    if plan.already_in:
        return "merged"
    if plan.tree is None:
        return "conflict"
    if approved and tested_base == plan.target_sha:
        return "landing"
    if gate:
        return "testing"
    return step_after_gate(review=review, approved=approved)


def step_after_gate(*, review: bool, approved: bool) -> str:
    return "awaiting_review" if review and not approved else "landing"


# -- the queue on the loop ----------------------------------------------------------------------------
@dataclass
class QueueState:
    #: repo_id → merge_id currently holding that repository's merge slot
    busy: dict[int, int] = field(default_factory=dict)
    #: merge_id → the plan being tested or landed (kept in memory; a restart re-checks)
    plans: dict[int, mergeengine.Plan] = field(default_factory=dict)
    #: merge_id → the target sha its last test gate passed against
    tested: dict[int, str] = field(default_factory=dict)


def state(ctx: Ctx) -> QueueState:
    st = ctx.ext.get(EXT)
    if st is None:
        st = ctx.ext[EXT] = QueueState()
    return st


def setup(ctx: Ctx) -> None:
    """Merges cut off by a restart start over from the check (it is idempotent); one cut off after
    it recorded its CAS first finishes bringing the target's checkouts along, then re-checks
    (which finds the work already in the target, and cleans up). Then go."""
    st = state(ctx)
    for m in ctx.store.dicts("SELECT * FROM merges WHERE status IN ('checking', 'testing')"):
        if m["land_new"] and m["repo_id"] not in st.busy:
            st.busy[m["repo_id"]] = m["id"]
            repo = _repo(ctx, m)
            ctx.submit(
                mergeengine.finish_landing,
                repo["path"],
                m["target"],
                m["land_old"],
                m["land_new"],
                then=_then_guarded(ctx, m["id"], _landing_finished),
            )
            continue
        ctx.store.x("UPDATE merges SET status='queued', land_old=NULL, land_new=NULL WHERE id=?", (m["id"],))
        _emit(ctx, m, ev.MergeQueued(merge_id=m["id"], note="requeued after a daemon restart"))
    for repo in ctx.store.dicts("SELECT path FROM repos"):
        ctx.submit(mergeengine.prune_gates, repo["path"], time.time(), str(ctx.paths.state), then=lambda _n, _e: None)
    ctx.timers.every(2.0, lambda: kick_all(ctx), "merge-queue", first_in=0.05)


def kick_all(ctx: Ctx) -> None:
    for (repo_id,) in ctx.store.all("SELECT DISTINCT repo_id FROM merges WHERE status='queued'"):
        kick(ctx, repo_id)


def kick(ctx: Ctx, repo_id: int) -> None:
    """Start the repository's next merge if its slot is free."""
    st = state(ctx)
    if repo_id in st.busy:
        return
    queued = ctx.store.dicts("SELECT * FROM merges WHERE repo_id=? AND status='queued'", (repo_id,))
    nxt = pick_next(queued)
    if nxt is None:
        return
    cars = train_cars(ctx, queued)
    if len(cars) >= 2:
        _start_train(ctx, repo_id, cars)
        return
    st.busy[repo_id] = nxt["id"]
    try:
        _start_check(ctx, nxt)
    except BaseException:
        st.busy.pop(repo_id, None)  # the caller's savepoint rolls back; the timer retries
        raise


# -- the merge train -------------------------------------------------------------------------------------
#: With a merge train, a merge queued into an idle queue waits this long for others to join it
#: (merges asked for in one go — a script, `merge --all` — then share one gate run).
TRAIN_GATHER_S = 0.3


def _kick_soon(ctx: Ctx, repo: dict[str, Any]) -> None:
    if reposettings.merge_batch(ctx, repo) > 1 and test_cmd(ctx, repo) and repo["id"] not in state(ctx).busy:
        ctx.timers.after(TRAIN_GATHER_S, lambda: kick(ctx, repo["id"]), "merge-train-gather")
    else:
        kick(ctx, repo["id"])


def train_cars(ctx: Ctx, queued: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The next merges, in queue order, that can be gated together: up to `merge_batch` of them from
    the front of the queue, each landing right after its gate (auto, tested, same target)."""
    if not queued:
        return []
    repo = _repo(ctx, queued[0])
    batch = reposettings.merge_batch(ctx, repo)
    if batch < 2 or not test_cmd(ctx, repo):
        return []
    cars: list[dict[str, Any]] = []
    for m in sorted(queued, key=lambda m: (m["priority"], m["id"])):
        if m["strategy"] != "auto" or not m["run_tests"] or m["approved_at"] or len(cars) == batch:
            break
        if cars and m["target"] != cars[0]["target"]:
            break
        cars.append(m)
    return cars


def _start_train(ctx: Ctx, repo_id: int, cars: list[dict[str, Any]]) -> None:
    """All cars to `testing` (one train id: the first's), then off-loop: stack, gate, bisect."""
    st = state(ctx)
    train_id = cars[0]["id"]
    st.busy[repo_id] = -train_id  # held by the train as a whole, not by one of its merges
    repo = _repo(ctx, cars[0])
    cmd = test_cmd(ctx, repo)
    assert cmd is not None
    ids = [m["id"] for m in cars]
    on_board: list[train.Car] = []
    try:
        for m in cars:
            worker = _worker(ctx, m)
            if worker is None or not worker["branch_name"]:
                _fail(ctx, m, "The worker or its branch is gone.")
                continue
            _set(ctx, m, "checking")
            _emit(ctx, m, ev.MergeChecking(merge_id=m["id"], train=train_id))
            _set(ctx, m, "testing", train=train_id)
            _emit(ctx, m, ev.MergeTesting(merge_id=m["id"], cmd=list(cmd), train=train_id, cars=ids))
            on_board.append(
                train.Car(
                    m["id"],
                    f"refs/heads/{worker['branch_name']}",
                    _message(worker),
                    m["head_sha"],
                    worker["worktree_path"],
                )
            )
    except BaseException:
        st.busy.pop(repo_id, None)  # the caller's savepoint rolls back; the timer retries
        raise
    gate_fn = train.gate_with(
        repo["path"],
        gate.gate_path(ctx.paths.state, repo["id"], repo["name"]),
        cmd,
        test_timeout(ctx, repo),
        {"home": str(ctx.paths.state)},
        reposettings.workspace(ctx, repo),
        str(gate_log(ctx, repo)),
        reposettings.gate_strict(ctx, repo),
    )
    car_ids = [c.merge_id for c in on_board]
    ctx.submit(
        train.run,
        repo["path"],
        cars[0]["target"],
        on_board,
        gate_fn,
        then=lambda out, exc: _train_step(ctx, repo_id, train_id, car_ids, _train_gated, out, exc),
    )


def _message(worker: dict[str, Any]) -> str:
    return (
        f"Merge {worker['branch_name']}"
        + (f" ({worker['task_id']}: {worker['task_title']})" if worker["task_id"] else "")
        + f" [chkd {worker['id']}]"
    )


def _train_step(
    ctx: Ctx, repo_id: int, train_id: int, ids: list[int], step: Any, result: Any, exc: BaseException | None
) -> None:
    """Like `_guard`, for a whole train: a bug fails the train's open merges; the slot is freed at the end."""
    st = state(ctx)
    held = True
    try:
        with ctx.savepoint():
            held = step(ctx, repo_id, train_id, ids, result, exc)
    except Exception as err:
        ctx.log.error("merge_train_step_failed", train=train_id, step=step.__name__, exc_info=True)
        held = False
        for mid in ids:
            m = ctx.store.dict("SELECT * FROM merges WHERE id=?", (mid,))
            if m is not None and m["status"] not in FINAL:
                _fail(ctx, m, f"The daemon failed during the merge train ({type(err).__name__}); see its log.")
    finally:
        if not held and st.busy.get(repo_id) == -train_id:
            del st.busy[repo_id]
            ctx.timers.after(0, lambda: kick(ctx, repo_id), "merge-queue-next")


def _train_gated(
    ctx: Ctx, repo_id: int, train_id: int, ids: list[int], out: train.Outcome | None, exc: BaseException | None
) -> bool:
    """Record conflicts and failures; record the CAS intent on every landing merge, then land. True while held."""
    merges = {mid: m for mid in ids if (m := ctx.store.dict("SELECT * FROM merges WHERE id=?", (mid,)))}
    if exc is not None or out is None:
        for m in merges.values():
            _fail(ctx, m, f"The merge train could not run: {_why(exc) if exc else 'no result'}")
        return False
    summary = "\n".join(out.log)
    for m in merges.values():
        if summary:
            _append_log(ctx, m, summary)
    strict = reposettings.gate_strict(ctx, _repo(ctx, next(iter(merges.values())))) if merges else False
    for path in out.suspects:
        sentence = gate.suspect_sentence(path)
        for m in merges.values():
            _append_log(
                ctx, m, f"warning: {sentence}" + (" (gate_strict: a run that read it failed)" if strict else "")
            )
        first = merges[ids[0]] if ids[0] in merges else next(iter(merges.values()))
        _emit(
            ctx,
            first,
            ev.MergeGateSuspect(
                merge_id=first["id"],
                path=path,
                message=sentence[:1].upper() + sentence[1:],
                strict=strict,
                train=train_id,
            ),
        )
    for mid, files in out.conflicts.items():
        _conflict(ctx, merges[mid], files)
    for mid, why in out.failed.items():
        m = merges[mid]
        _append_log(ctx, m, why)
        _fail(
            ctx,
            m,
            f"The test gate failed with this merge in a merge train; {m['target']} does not have it "
            "(see `chkdctl merges --json` for the output).",
            logged=True,
        )
    landing = [mid for mid, _, _ in out.landed] + list(out.already_in)
    if not landing:
        _train_event(ctx, merges, train_id, out, [])
        return False
    cleanups = []
    for mid in landing:
        worker = _worker(ctx, merges[mid]) or {}
        cleanups.append(train.Cleanup(mid, worker.get("worktree_path"), worker.get("branch_name")))
    if out.tip is None:  # only already-merged cars: nothing moves, only the cleanup
        out.tip = out.target_sha
    for mid, _, head in out.landed:
        ctx.store.x(
            "UPDATE merges SET base_sha=?, head_sha=?, land_old=?, land_new=? WHERE id=?",
            (out.target_sha, head, out.target_sha, out.tip, mid),
        )
    repo = _repo(ctx, merges[landing[0]])
    target = merges[landing[0]]["target"]
    ctx.submit(
        train.land,
        repo["path"],
        target,
        out.tip,
        out.target_sha,
        cleanups,
        then=lambda res, e: _train_step(ctx, repo_id, train_id, landing, _train_landed, (out, res), e),
    )
    _train_event(ctx, merges, train_id, out, landing)
    return True


def _train_event(
    ctx: Ctx, merges: dict[int, dict[str, Any]], train_id: int, out: train.Outcome, landing: list[int]
) -> None:
    if not merges:
        return
    first = merges.get(train_id) or next(iter(merges.values()))
    _emit(
        ctx,
        first,
        ev.MergeTrainRan(
            merge_id=first["id"],
            train=train_id,
            merge_ids=list(merges),
            gate_runs=out.gate_runs,
            landing=landing,
            failed=sorted(out.failed),
            conflicts=sorted(out.conflicts),
            isolated_after={str(k): v for k, v in out.isolated.items()},
        ),
    )


def _train_landed(
    ctx: Ctx,
    repo_id: int,
    train_id: int,
    ids: list[int],
    result: tuple[train.Outcome, train.TrainLanded | None],
    exc: BaseException | None,
) -> bool:
    out, res = result
    merges = {mid: m for mid in ids if (m := ctx.store.dict("SELECT * FROM merges WHERE id=?", (mid,)))}
    for mid in merges:
        ctx.store.x("UPDATE merges SET land_old=NULL, land_new=NULL WHERE id=?", (mid,))
    if exc is not None or res is None:
        for m in merges.values():
            _fail(ctx, m, _why(exc) if exc else "The merge train's landing returned nothing.")
        return False
    if res.landed.moved:  # lost the CAS: each goes back to the queue and is checked again
        for m in merges.values():
            _set(ctx, m, "queued")
            _emit(
                ctx,
                m,
                ev.MergeQueued(merge_id=m["id"], note=f"{m['target']} moved during the merge train; checking again"),
            )
        return False
    commits = {mid: commit for mid, commit, _ in out.landed}
    for mid, m in merges.items():
        notes = list(res.landed.notes) + res.notes.get(mid, [])
        if mid in commits:
            _after_land(
                ctx,
                m,
                mergeengine.Landed(new_sha=commits[mid], updated_checkouts=res.landed.updated_checkouts, notes=notes),
                already_in=False,
            )
        else:
            _after_land(ctx, m, mergeengine.Landed(new_sha=out.target_sha, notes=notes), already_in=True)
    return False


def enqueue(ctx: Ctx, worker: dict[str, Any], repo: dict[str, Any], strategy: str, run_tests: bool) -> dict[str, Any]:
    """A queued merge for a done worker; the worker becomes `merging`."""
    priority = ctx.store.scalar("SELECT priority FROM task_queue WHERE pk=?", (worker["task_pk"],), 2)
    merge_id = ctx.store.insert(
        "INSERT INTO merges(worker_id, repo_id, strategy, status, target, priority, run_tests, created_at) "
        "VALUES(?,?,?,?,?,?,?,?)",
        (worker["id"], repo["id"], strategy, "queued", target_of(ctx, repo), priority, int(run_tests), now_ms()),
    )
    m = load(ctx, merge_id)
    _emit(
        ctx,
        m,
        ev.MergeQueued(
            merge_id=merge_id, strategy=strategy, target=m["target"], priority=priority, run_tests=bool(run_tests)
        ),
    )
    set_worker(ctx, worker, "merging", message=f"merge {merge_id} queued")
    _kick_soon(ctx, repo)
    return load(ctx, merge_id)


def approve(ctx: Ctx, m: dict[str, Any]) -> dict[str, Any]:
    _set(ctx, m, "queued", approved_at=now_ms())
    _emit(ctx, m, ev.MergeApproved(merge_id=m["id"]))
    _emit(ctx, m, ev.MergeQueued(merge_id=m["id"], approved=True))
    kick(ctx, m["repo_id"])
    return load(ctx, m["id"])


def reject(ctx: Ctx, m: dict[str, Any], reason: str) -> dict[str, Any]:
    text = reason.strip() or "rejected in review"
    _finish(ctx, m, "rejected", log_add=f"rejected: {text}")
    _emit(ctx, m, ev.MergeRejected(merge_id=m["id"], reason=text))
    worker = _worker(ctx, m)
    if worker is not None:
        set_worker(ctx, worker, "working", message=text)
        set_task(ctx, worker, "in_progress", note=f"merge rejected: {text}")
        fresh = _worker(ctx, m)
        if fresh is not None and reason.strip():  # a reason to act on: the agent continues its session with it
            from . import agent_resume

            agent_resume.maybe_start(ctx, fresh, agent_resume.reject_prompt(fresh, text), f"merge rejected: {text}")
    return load(ctx, m["id"])


# -- steps ----------------------------------------------------------------------------------------------
def _start_check(ctx: Ctx, m: dict[str, Any], retry: str | None = None) -> None:
    worker = _worker(ctx, m)
    repo = _repo(ctx, m)
    if worker is None or not worker["branch_name"]:
        _fail(ctx, m, "The worker or its branch is gone.")
        return
    _set(ctx, m, "checking")
    _emit(ctx, m, ev.MergeChecking(merge_id=m["id"], retry=retry is not None, why=retry))
    message = (
        f"Merge {worker['branch_name']}"
        + (f" ({worker['task_id']}: {worker['task_title']})" if worker["task_id"] else "")
        + f" [chkd {worker['id']}]"
    )
    ctx.submit(
        mergeengine.plan,
        repo["path"],
        m["target"],
        f"refs/heads/{worker['branch_name']}",
        message,
        m["head_sha"],
        worker["worktree_path"],
        then=lambda plan, exc: _guard(ctx, m["id"], _checked, plan, exc),
    )


def _checked(ctx: Ctx, m: dict[str, Any], plan: mergeengine.Plan | None, exc: BaseException | None) -> None:
    if exc is not None:
        _fail(ctx, m, _why(exc))
        return
    assert plan is not None
    ctx.store.x("UPDATE merges SET base_sha=?, head_sha=? WHERE id=?", (plan.target_sha, plan.head_sha, m["id"]))
    st = state(ctx)
    repo = _repo(ctx, m)
    gate_cmd = test_cmd(ctx, repo) if m["run_tests"] else None
    step = step_after_check(
        plan,
        gate=bool(gate_cmd),
        review=m["strategy"] == "review",
        approved=m["approved_at"] is not None,
        tested_base=st.tested.get(m["id"]),
    )
    if step == "merged":
        worker = _worker(ctx, m) or {}
        ctx.submit(
            mergeengine.clean_merged,
            repo["path"],
            m["target"],
            plan.target_sha,
            worker.get("worktree_path"),
            worker.get("branch_name"),
            then=lambda res, e: _guard(ctx, m["id"], _cleaned_already_in, res, e),
        )
        return
    if step == "conflict":
        _conflict(ctx, m, plan.conflict_files)
        return
    st.plans[m["id"]] = plan
    if step == "testing":
        assert gate_cmd is not None and plan.commit is not None
        _set(ctx, m, "testing")
        _emit(ctx, m, ev.MergeTesting(merge_id=m["id"], cmd=list(gate_cmd)))
        ctx.submit(
            gate.run,
            repo["path"],
            gate.gate_path(ctx.paths.state, repo["id"], repo["name"]),
            plan.commit,
            gate_cmd,
            test_timeout(ctx, repo),
            {"home": str(ctx.paths.state)},
            reposettings.workspace(ctx, repo),
            str(gate_log(ctx, repo)),
            then=lambda res, e: _guard(ctx, m["id"], _gated, res, e),
        )
    elif step == "awaiting_review":
        _await_review(ctx, m, plan)
    else:
        _land(ctx, m, plan)


def _gated(ctx: Ctx, m: dict[str, Any], res: mergeengine.GateResult | None, exc: BaseException | None) -> None:
    if exc is not None:
        _fail(ctx, m, f"The test gate could not run: {_why(exc)}")
        return
    assert res is not None
    plan = state(ctx).plans[m["id"]]
    head = f"test gate ({res.seconds:.1f} s): " + (
        "passed" if res.ok else "timed out" if res.timed_out else f"failed (exit {res.returncode})"
    )
    _append_log(ctx, m, f"{head}\n{res.output}")
    if res.suspect is not None:
        sentence = gate.suspect_sentence(res.suspect)
        strict = reposettings.gate_strict(ctx, _repo(ctx, m))
        _append_log(ctx, m, f"warning: {sentence}" + (" (gate_strict: the merge fails)" if strict else ""))
        _emit(
            ctx,
            m,
            ev.MergeGateSuspect(
                merge_id=m["id"], path=res.suspect, message=sentence[:1].upper() + sentence[1:], strict=strict
            ),
        )
        if strict and res.ok:
            _fail(
                ctx,
                m,
                f"The test gate may have tested the main checkout: {sentence} "
                f"{m['target']} is untouched (gate_strict).",
                logged=True,
            )
            return
    if not res.ok:
        _fail(
            ctx,
            m,
            f"The test gate {'timed out' if res.timed_out else 'failed'}; "
            f"{m['target']} is untouched (see `chkdctl merges --json` for the output).",
            logged=True,
        )
        return
    state(ctx).tested[m["id"]] = plan.target_sha
    if step_after_gate(review=m["strategy"] == "review", approved=m["approved_at"] is not None) == "awaiting_review":
        _await_review(ctx, m, plan)
    else:
        _land(ctx, m, plan)


def _await_review(ctx: Ctx, m: dict[str, Any], plan: mergeengine.Plan) -> None:
    _set(ctx, m, "awaiting_review", result_sha=plan.commit)
    _emit(ctx, m, ev.MergeAwaitingReview(merge_id=m["id"], result_sha=plan.commit))
    _release(ctx, m)


def _cleaned_already_in(ctx: Ctx, m: dict[str, Any], res: mergeengine.Landed | None, exc: BaseException | None) -> None:
    if exc is not None:
        _fail(ctx, m, _why(exc))
        return
    assert res is not None
    _after_land(ctx, m, res, already_in=True)


def _landing_finished(ctx: Ctx, m: dict[str, Any], notes: list[str] | None, exc: BaseException | None) -> None:
    """The checkouts of a CAS cut off by a restart are brought along: check again from the start."""
    ctx.store.x("UPDATE merges SET land_old=NULL, land_new=NULL WHERE id=?", (m["id"],))
    if exc is not None:
        _append_log(ctx, m, f"bringing the checkouts along after a restart failed: {_why(exc)}")
    elif notes:
        _append_log(ctx, m, "\n".join(notes))
    _start_check(ctx, m, retry="resuming after a daemon restart")


def _land(ctx: Ctx, m: dict[str, Any], plan: mergeengine.Plan) -> None:
    """Off-loop: CAS the target, bring its checkouts along, then remove the worker's worktree and branch.
    (old, new) is recorded first: the job starts only once that is committed."""
    assert plan.commit is not None
    repo = _repo(ctx, m)
    worker = _worker(ctx, m) or {}
    ctx.store.x("UPDATE merges SET land_old=?, land_new=? WHERE id=?", (plan.target_sha, plan.commit, m["id"]))
    ctx.submit(
        mergeengine.land_and_clean,
        repo["path"],
        m["target"],
        plan.commit,
        plan.target_sha,
        worker.get("worktree_path"),
        worker.get("branch_name"),
        then=lambda res, e: _guard(ctx, m["id"], _landed, res, e),
    )


def _landed(ctx: Ctx, m: dict[str, Any], res: mergeengine.Landed | None, exc: BaseException | None) -> None:
    ctx.store.x("UPDATE merges SET land_old=NULL, land_new=NULL WHERE id=?", (m["id"],))
    if exc is not None:
        _fail(ctx, m, _why(exc))
        return
    assert res is not None
    if res.moved:
        _start_check(ctx, m, retry=f"{m['target']} moved while merging; checking again against the new target")
        return
    _after_land(ctx, m, res, already_in=False)


def _after_land(ctx: Ctx, m: dict[str, Any], res: mergeengine.Landed, *, already_in: bool) -> None:
    """The target holds the work (and the worktree and branch are gone): worker merged, task done."""
    worker = _worker(ctx, m)
    notes = list(res.notes)
    if already_in:
        notes.insert(0, f"the branch's content is already in {m['target']}; nothing to merge")
    _finish(ctx, m, "merged", result_sha=res.new_sha, log_add="\n".join(notes) if notes else None)
    _emit(
        ctx,
        m,
        ev.MergeMerged(
            merge_id=m["id"],
            result_sha=res.new_sha,
            target=m["target"],
            already_in=already_in,
            checkouts=res.updated_checkouts,
        ),
    )
    if worker is not None:
        set_worker(ctx, worker, "merged", message=f"merged into {m['target']}")
        set_task(ctx, worker, "done", note=f"merged into {m['target']}")


def _conflict(ctx: Ctx, m: dict[str, Any], files: list[str]) -> None:
    _finish(ctx, m, "conflict", conflict_files=files, log_add=f"conflict with {m['target']} in: {', '.join(files)}")
    _emit(ctx, m, ev.MergeConflicted(merge_id=m["id"], files=files))
    worker = _worker(ctx, m)
    if worker is not None:
        set_worker(
            ctx,
            worker,
            "conflict",
            message=f"conflicts with {m['target']} in {', '.join(files)}; run `chkdctl update {worker['id']}`",
        )


def _fail(ctx: Ctx, m: dict[str, Any], reason: str, *, logged: bool = False) -> None:
    m = load(ctx, m["id"])
    if m["status"] in FINAL:
        _release(ctx, m)
        return
    _finish(ctx, m, "failed", log_add=None if logged else reason)
    _emit(ctx, m, ev.MergeFailed(merge_id=m["id"], reason=reason))
    worker = _worker(ctx, m)
    if worker is not None and worker["status"] == "merging":
        set_worker(ctx, worker, "done", message=f"merge {m['id']} failed: {reason}")


def _then_guarded(ctx: Ctx, merge_id: int, step: Any) -> Callable[[Any, BaseException | None], None]:
    """A `then` for ctx.submit that runs `step` through `_guard` for this merge."""
    return lambda result, exc: _guard(ctx, merge_id, step, result, exc)


def _guard(ctx: Ctx, merge_id: int, step: Any, result: Any, exc: BaseException | None) -> None:
    """Run a step; a bug in it fails that merge (and frees its repository) instead of wedging the queue."""
    m = ctx.store.dict("SELECT * FROM merges WHERE id=?", (merge_id,))
    if m is None:  # the request that queued it was rolled back: just free the slot
        st = state(ctx)
        for repo_id, held in list(st.busy.items()):
            if held == merge_id:
                del st.busy[repo_id]
        return
    try:
        with ctx.savepoint():
            step(ctx, m, result, exc)
    except Exception as err:
        ctx.log.error("merge_step_failed", merge_id=merge_id, step=step.__name__, exc_info=True)
        _fail(ctx, m, f"The daemon failed during the merge ({type(err).__name__}); see its log.")
    finally:
        _release_if_done(ctx, merge_id)


# -- bookkeeping -------------------------------------------------------------------------------------------
def load(ctx: Ctx, merge_id: int) -> dict[str, Any]:
    m = ctx.store.dict("SELECT * FROM merges WHERE id=?", (merge_id,))
    if m is None:
        raise ChkdError("not_found", f"There is no merge {merge_id}.")
    return m


def _set(ctx: Ctx, m: dict[str, Any], status: str, **cols: Any) -> None:
    current = ctx.store.scalar("SELECT status FROM merges WHERE id=?", (m["id"],))
    if current != status and not can_transition(current, status):
        raise ChkdError(
            "conflict", f"Merge {m['id']} is {current.replace('_', ' ')}; it cannot become {status.replace('_', ' ')}."
        )
    sets = ", ".join(["status=?"] + [f"{k}=?" for k in cols])
    ctx.store.x(f"UPDATE merges SET {sets} WHERE id=?", (status, *cols.values(), m["id"]))
    m["status"] = status
    m.update(cols)


def _finish(
    ctx: Ctx,
    m: dict[str, Any],
    status: str,
    *,
    log_add: str | None = None,
    conflict_files: list[str] | None = None,
    result_sha: str | None = None,
) -> None:
    cols: dict[str, Any] = {"finished_at": now_ms()}
    if conflict_files is not None:
        cols["conflict_files"] = json.dumps(conflict_files)
    if result_sha is not None:
        cols["result_sha"] = result_sha
    _set(ctx, m, status, **cols)
    if log_add:
        _append_log(ctx, m, log_add)
    state(ctx).plans.pop(m["id"], None)
    state(ctx).tested.pop(m["id"], None)
    _release(ctx, m)


def _append_log(ctx: Ctx, m: dict[str, Any], text: str) -> None:
    ctx.store.x("UPDATE merges SET log = log || ? WHERE id=?", (text.rstrip("\n") + "\n", m["id"]))


def _release(ctx: Ctx, m: dict[str, Any]) -> None:
    """Free the repository's merge slot and start its next merge (next loop turn at the latest)."""
    st = state(ctx)
    if st.busy.get(m["repo_id"]) == m["id"]:
        del st.busy[m["repo_id"]]
        ctx.timers.after(0, lambda: kick(ctx, m["repo_id"]), "merge-queue-next")


def _release_if_done(ctx: Ctx, merge_id: int) -> None:
    m = ctx.store.dict("SELECT id, repo_id, status FROM merges WHERE id=?", (merge_id,))
    if m is not None and m["status"] not in RUNNING:
        _release(ctx, m)


def _emit(ctx: Ctx, m: dict[str, Any], data: ev.MergeData) -> None:
    """Emit a merge event with the merge's repository, worker and task."""
    worker = _worker(ctx, m)
    repo = ctx.store.scalar("SELECT name FROM repos WHERE id=?", (m["repo_id"],))
    ctx.emit(data, repo=repo, worker_id=m["worker_id"], task_id=worker["task_id"] if worker else None)


def _worker(ctx: Ctx, m: dict[str, Any]) -> dict[str, Any] | None:
    return lookup.load_worker(ctx.store, m["worker_id"])


def _repo(ctx: Ctx, m: dict[str, Any]) -> dict[str, Any]:
    row = ctx.store.dict("SELECT * FROM repos WHERE id=?", (m["repo_id"],))
    if row is None:
        raise ChkdError("not_found", f"The repository of merge {m['id']} is no longer registered.")
    return row


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ChkdError) else f"{type(exc).__name__}: {exc}"


def target_of(ctx: Ctx, repo: dict[str, Any]) -> str:
    """The branch work lands on: `[repos.NAME] main_branch` in config.toml, else the repository's."""
    return ctx.config.for_repo(repo["name"]).main_branch or repo["main_branch"]


def test_cmd(ctx: Ctx, repo: dict[str, Any]) -> list[str] | None:
    """The repository's test gate: `[repos.NAME] test_cmd` in config.toml, else the database's (repo add/edit)."""
    cmd = reposettings.effective(ctx, repo).test_cmd
    return list(cmd) if cmd else None


def gate_log(ctx: Ctx, repo: dict[str, Any]) -> Any:
    """Where the gate's setup output goes (the gate's test output is in each merge's log)."""
    return ctx.paths.state / "gates" / f"{repo['id']}-setup.log"


def test_timeout(ctx: Ctx, repo: dict[str, Any]) -> float:
    return reposettings.effective(ctx, repo).test_timeout_s or ctx.config.test_timeout_s


def default_strategy(ctx: Ctx, repo: dict[str, Any]) -> str:
    return ctx.config.for_repo(repo["name"]).merge_strategy or ctx.config.merge_strategy


def merge_info(ctx: Ctx, m: dict[str, Any]) -> MergeInfo:
    repo = ctx.store.scalar("SELECT name FROM repos WHERE id=?", (m["repo_id"],)) or "?"
    task_id = ctx.store.scalar("SELECT task_id FROM workers WHERE id=?", (m["worker_id"],))
    return MergeInfo(
        id=m["id"],
        worker_id=m["worker_id"],
        repo=repo,
        strategy=m["strategy"],
        status=m["status"],
        task_id=task_id,
        target=m["target"],
        base_sha=m["base_sha"],
        head_sha=m["head_sha"],
        result_sha=m["result_sha"],
        conflict_files=json.loads(m["conflict_files"] or "[]"),
        log=m["log"] or "",
        created_at=m["created_at"],
        finished_at=m["finished_at"],
    )


# -- other areas: worker and task status -------------------------------------------------------------------
def set_worker(ctx: Ctx, worker: dict[str, Any], status: str, **fields: Any) -> None:
    """Through the workers area (its `worker.status` event); `worker` is updated in place."""
    from .workerrecords import set_worker_status

    fresh = lookup.load_worker(ctx.store, worker["id"]) or worker
    worker.update(set_worker_status(ctx, fresh, status, **fields))


def set_task(ctx: Ctx, worker: dict[str, Any], status: str, note: str) -> None:
    if worker.get("task_pk") is None:
        return
    from . import taskqueue

    task = ctx.store.dict("SELECT * FROM task_queue WHERE pk=?", (worker["task_pk"],))
    if task is None or task["status"] == status:
        return
    try:
        taskqueue.set_task_status(ctx, task, status, worker_id=worker["id"], note=note)
    except ChkdError as exc:  # e.g. a task cancelled meanwhile: the merge stands, say so in the log
        ctx.log.warning("merge_task_status", task=task["id"], wanted=status, error=exc.message)
