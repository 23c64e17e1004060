"""Compact text a model reads well: one line per thing, a table for lists (pure, no I/O)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from chkd.protocol.text import visible


def _cell(value: Any, width: int = 60) -> str:
    text = " ".join(visible(str(value if value is not None else "-")).split()) or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> str:
    """A plain aligned table, or `empty` when there are no rows."""
    if not rows:
        return empty
    cells = [list(headers), *([_cell(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in cells)


def ago(ms: int | None, now_ms: int | None = None) -> str:
    if not ms:
        return "-"
    s = max(0, ((now_ms or int(time.time() * 1000)) - ms) // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def workers_table(workers: Sequence[Any]) -> str:
    rows = [
        [
            w.id,
            w.status,
            w.task_id,
            w.task_title,
            ago(w.activity_at or w.heartbeat_at),
            w.message or w.last_error,
            w.branch,
        ]
        for w in workers
    ]
    return table(["ID", "STATUS", "TASK", "TITLE", "ACTIVE", "MESSAGE", "BRANCH"], rows, "No workers.")


def task_state(t: Any) -> str:
    if t.status == "pending":
        return "held" if t.held else ("ready" if t.ready else "waiting")
    return t.status


def tasks_table(tasks: Sequence[Any]) -> str:
    rows = [
        [t.id, task_state(t), f"P{t.priority}", t.title, ",".join(t.depends_on) or "-", t.claimed_by] for t in tasks
    ]
    return table(["ID", "STATE", "PRI", "TITLE", "AFTER", "WORKER"], rows, "No tasks.")


def worker_line(w: Any) -> str:
    task = f"task {w.task_id}: {w.task_title}" if w.task_id else "no task"
    extra = f"; {w.message or w.last_error}" if (w.message or w.last_error) else ""
    return visible(f"{w.id} {w.status}, {task}, branch {w.branch or '-'}, worktree {w.worktree or '-'}{extra}")


def workers_list(workers: Sequence[Any]) -> str:
    return "\n".join(worker_line(w) for w in workers) or "No worker."


def task_line(t: Any) -> str:
    deps = f", after {', '.join(t.depends_on)}" if t.depends_on else ""
    return visible(f"{t.id} ({task_state(t)}, P{t.priority}{deps}): {t.title}")


def merge_line(m: Any) -> str:
    state = m.status.replace("_", " ")
    if m.status == "merged":
        return visible(
            f"merge {m.id} of {m.worker_id}: merged into {m.target} as {(m.result_sha or '')[:10]}; "
            "worktree and branch removed, task done."
        )
    if m.status == "conflict":
        return visible(
            f"merge {m.id} of {m.worker_id}: conflict with {m.target} in {', '.join(m.conflict_files)}; "
            "nothing was changed."
        )
    if m.status == "awaiting_review":
        return visible(
            f"merge {m.id} of {m.worker_id} into {m.target} passed its checks and waits for review: "
            f"chkd_approve_merge or chkd_reject_merge."
        )
    tail = m.log.strip().splitlines()[-3:] if m.status == "failed" and m.log else []
    return visible(
        f"merge {m.id} of {m.worker_id} into {m.target}: {state}" + (": " + " | ".join(tail) if tail else ".")
    )


def overlaps_table(overlaps: Sequence[Any]) -> str:
    rows = [
        [o.a, o.b or "(target)", "yes" if o.conflict else "no", ", ".join(o.conflict_files or o.files)]
        for o in overlaps
    ]
    return table(["WORKER", "WITH", "CONFLICT", "FILES"], rows, "No overlapping work.")


def overview_text(o: Any) -> str:
    """chkd_status: the whole picture in a few short sections."""
    counts = ", ".join(f"{n} {s}" for s, n in sorted(o.workers_by_status.items()) if s != "merged") or "none"
    lines = [f"chkd: {', '.join(o.repos) or 'no repository'}. Workers: {counts}."]
    c = o.cost
    lines.append(
        f"Cost today: ${c.today_usd:.2f} ({c.today_tokens_in} tokens in, {c.today_tokens_out} out); "
        f"all time ${c.total_usd:.2f}."
    )
    if o.workers:
        lines += ["", "Workers:", workers_table(o.workers)]
    for title, tasks in (("Ready", o.ready), ("Running", o.running), ("Waiting on dependencies", o.waiting)):
        lines += ["", f"{title} ({len(tasks)}):", *([task_line(t) for t in tasks[:20]] or ["none"])]
        if len(tasks) > 20:
            lines.append(f"… and {len(tasks) - 20} more (chkd_tasks)")
    lines += [
        "",
        f"Merges awaiting review ({len(o.awaiting_review)}):",
        *([merge_line(m) for m in o.awaiting_review] or ["none"]),
    ]
    conflicting = [x for x in o.conflicts if x.conflict]
    lines += [
        "",
        f"Conflicts ({len(conflicting)} of {len(o.conflicts)} overlaps):",
        overlaps_table(o.conflicts) if o.conflicts else "none",
    ]
    return "\n".join(lines)


def import_text(r: Any) -> str:
    head = (
        f"{'Dry run: ' if r.dry_run else ''}{r.repo}: {len(r.new)} new, {len(r.updated)} updated, "
        f"{len(r.unchanged)} unchanged, {len(r.skipped)} skipped."
    )
    lines = [head]
    if r.new:
        lines.append("new: " + ", ".join(r.new))
    if r.updated:
        lines.append("updated: " + ", ".join(r.updated))
    lines += [f"warning: {w}" for w in r.warnings]
    lines += [f"line {p.line}: {p.reason}: {p.text}" for p in r.problems]
    return visible("\n".join(lines))
