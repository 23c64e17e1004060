"""chkdctl task add|list|show|edit|cancel|retry|hold|release|claim|import, task dep add|rm."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from ..output import Exit, ago, echo, fail, json_option, print_json, table, visible

if TYPE_CHECKING:
    from chkd.protocol.statuses import TaskStatus

#: Largest spec file sent to the daemon (its frame limit is 4 MiB).
MAX_SPEC_BYTES = 4 * 1024 * 1024 - 64 * 1024


class PriorityType(click.ParamType):
    """`P0`..`P4`, or the bare number."""

    name = "P0..P4"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip().upper().removeprefix("P")
            if not text.isdigit():
                self.fail(f"'{value}' is not a priority; use P0 (most urgent) to P4.", param, ctx)
            number = int(text)
        if not 0 <= number <= 4:
            self.fail(f"P{number} does not exist; use P0 (most urgent) to P4.", param, ctx)
        return number


PRIORITY = PriorityType()
STATUSES = click.Choice(["pending", "claimed", "in_progress", "review", "done", "failed", "cancelled"])


def repo_option(fn: Any) -> Any:
    fn = json_option(fn)
    return click.option(
        "--repo", metavar="NAME|PATH", help="The repository (default: the one containing the current directory)."
    )(fn)


def _repo(repo: str | None) -> str:
    return repo or os.getcwd()


def state_word(t: Any) -> str:
    """What a person wants to know about a task in one word."""
    if t.status == "pending":
        if t.held:
            return "held"
        return "ready" if t.ready else "waiting"
    return t.status + (" (held)" if t.held else "")


def full(task: Any) -> dict[str, Any] | None:
    """A TaskInfo with every field (the wire form omits defaults; scripts want `ready: false`)."""
    import msgspec

    return None if task is None else msgspec.structs.asdict(task)


def _print_task(app: Any, res: Any, verb: str) -> None:
    if app.json:
        print_json(full(res.task))
        return
    t = res.task
    echo(f"{verb} {t.id} (P{t.priority}, {state_word(t)}) in {t.repo}: {t.title}")


# -- add / list / show / edit ----------------------------------------------------------------------
@click.command("add")
@click.argument("title")
@click.option("--id", "task_id", metavar="ID", help="Your id for the task (like SD.13); default T-1, T-2, ...")
@click.option("--priority", "-p", type=PRIORITY, default=2, show_default="P2", help="P0 (most urgent) .. P4.")
@click.option("--after", multiple=True, metavar="ID", help="Run after this task is done (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="A tag (repeatable).")
@click.option("--description", "-d", default="", help="What to do, for the agent.")
@click.option("--max-attempts", type=int, default=None, help="Attempts before the task fails (default: config).")
@repo_option
@click.pass_obj
def task_add(
    app: Any,
    title: str,
    task_id: str | None,
    priority: int,
    after: tuple[str, ...],
    tags: tuple[str, ...],
    description: str,
    max_attempts: int | None,
    repo: str | None,
) -> None:
    """Add a task. Inside a git repository chkd does not know yet, the repository is added too."""
    from chkd.protocol.messages import TaskAdd

    res = app.call(
        TaskAdd(
            title=title,
            repo=_repo(repo),
            id=task_id,
            priority=priority,
            after=list(after),
            tags=list(tags),
            description=description,
            max_attempts=max_attempts,
        )
    )
    _print_task(app, res, "Added")


@click.command("list")
@click.option("--status", type=STATUSES, default=None, help="Only tasks with this status.")
@click.option("--ready", is_flag=True, help="Only tasks that can be claimed now.")
@click.option("--tag", default=None, metavar="TAG", help="Only tasks with this tag.")
@click.option("--all-repos", is_flag=True, help="Tasks of every repository.")
@repo_option
@click.pass_obj
def task_list(app: Any, status: str | None, ready: bool, tag: str | None, all_repos: bool, repo: str | None) -> None:
    """List tasks: ready first, then by priority, then oldest first (no row limit)."""
    from chkd.protocol.messages import TaskList

    res = app.call(
        TaskList(
            repo=None if all_repos else _repo(repo),
            status=cast("TaskStatus | None", status),
            ready=ready,
            all_repos=all_repos,
            tag=tag,
        )
    )
    if app.json:
        print_json([full(t) for t in res.tasks])
        return
    if not res.tasks:
        echo("No tasks match." if (status or ready or tag) else "No tasks yet: `chkdctl task add TITLE`.")
        return
    headers = ["ID", "PRI", "STATE", "AGE", "DEPENDS", "TITLE"]
    if all_repos:
        headers.insert(0, "REPO")
    rows = []
    for t in res.tasks:
        row = [
            t.id,
            f"P{t.priority}",
            state_word(t) + (f" {t.claimed_by}" if t.claimed_by else ""),
            ago(t.created_at),
            ",".join(t.depends_on) or "-",
            t.title,
        ]
        rows.append([t.repo, *row] if all_repos else row)
    click.echo(table(rows, headers))


@click.command("show")
@click.argument("task_id", metavar="ID")
@repo_option
@click.pass_obj
def task_show(app: Any, task_id: str, repo: str | None) -> None:
    """A task with its dependencies, dependants, attempts and history."""
    from chkd.protocol.events import fields_of
    from chkd.protocol.messages import TaskShow

    res = app.call(TaskShow(id=task_id, repo=_repo(repo)))
    if app.json:
        print_json({"task": full(res.task), "history": res.history})
        return
    t = res.task
    echo(f"{t.id}: {t.title}")
    echo(f"  repo       {t.repo}")
    echo(f"  state      {state_word(t)}, P{t.priority}, attempts {t.attempts}/{t.max_attempts}")
    if t.claimed_by:
        echo(f"  claimed by {t.claimed_by} ({ago(t.claimed_at)} ago)")
    if t.tags:
        echo(f"  tags       {', '.join(t.tags)}")
    echo(f"  after      {', '.join(t.depends_on) or '-'}")
    echo(f"  before     {', '.join(t.dependants) or '-'}")
    echo(f"  created    {ago(t.created_at)} ago" + (f", finished {ago(t.completed_at)} ago" if t.completed_at else ""))
    if t.description:
        echo("")
        for line in t.description.splitlines():
            echo(f"  {line.expandtabs(4)}")
    if res.history:
        echo("")
        echo("history:")
        for ev in res.history:
            detail = " ".join(f"{k}={v}" for k, v in fields_of(ev.data).items() if v not in (None, "", [], {}))
            who = f" [{ev.worker_id}]" if ev.worker_id else ""
            echo(f"  #{ev.seq} {ago(ev.at):>4} ago  {ev.kind}{who} {detail}".rstrip())


@click.command("edit")
@click.argument("task_id", metavar="ID")
@click.option("--title", default=None)
@click.option("--description", "-d", default=None)
@click.option("--priority", "-p", type=PRIORITY, default=None, help="P0 (most urgent) .. P4.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Replace the tags (repeatable).")
@click.option("--no-tags", is_flag=True, help="Remove every tag.")
@click.option("--max-attempts", type=int, default=None)
@repo_option
@click.pass_obj
def task_edit(
    app: Any,
    task_id: str,
    title: str | None,
    description: str | None,
    priority: int | None,
    tags: tuple[str, ...],
    no_tags: bool,
    max_attempts: int | None,
    repo: str | None,
) -> None:
    """Change a task's title, description, priority, tags or attempts."""
    from chkd.protocol.messages import TaskEdit

    new_tags = [] if no_tags else (list(tags) if tags else None)
    res = app.call(
        TaskEdit(
            id=task_id,
            repo=_repo(repo),
            title=title,
            description=description,
            priority=priority,
            tags=new_tags,
            max_attempts=max_attempts,
        )
    )
    _print_task(app, res, "Edited")


def _simple(name: str, command: str, verb: str, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @click.argument("task_id", metavar="ID")
    @repo_option
    @click.pass_obj
    def _cmd(app: Any, task_id: str, repo: str | None) -> None:
        from chkd.protocol import messages

        res = app.call(getattr(messages, command)(id=task_id, repo=_repo(repo)))
        _print_task(app, res, verb)

    return _cmd


task_cancel = _simple("cancel", "TaskCancel", "Cancelled", "Cancel a task that is still wanted.")
task_retry = _simple("retry", "TaskRetry", "Retrying", "Put a failed or cancelled task back in the queue.")
task_hold = _simple("hold", "TaskHold", "Holding", "Hold a task: it is never claimed until released.")
task_release = _simple(
    "release",
    "TaskRelease",
    "Released",
    "Un-hold a task, or put a claimed task whose worker went away back in the queue.",
)


# -- dependencies -----------------------------------------------------------------------------------
@click.group("dep")
def dep_group() -> None:
    """Dependencies: `task dep add A B` = A runs after B is done."""


def _dep(name: str, command: str, doc: str) -> click.Command:
    @dep_group.command(name, help=doc)
    @click.argument("task")
    @click.argument("depends_on", metavar="AFTER")
    @repo_option
    @click.pass_obj
    def _cmd(app: Any, task: str, depends_on: str, repo: str | None) -> None:
        from chkd.protocol import messages

        res = app.call(getattr(messages, command)(task=task, depends_on=depends_on, repo=_repo(repo)))
        if app.json:
            print_json(full(res.task))
            return
        t = res.task
        echo(f"{t.id} now runs after: {', '.join(t.depends_on) or 'nothing'} ({state_word(t)}).")

    return _cmd


_dep("add", "DepAdd", "TASK runs after AFTER is done (a cycle is refused).")
_dep("rm", "DepRm", "Remove the dependency of TASK on AFTER.")


# -- claim -------------------------------------------------------------------------------------------
@click.command("claim")
@click.option("--worker", "-w", default=None, metavar="W", help="Who claims it (a worker id or an agent name).")
@click.option("--tag", default=None, metavar="TAG", help="Only tasks with this tag.")
@repo_option
@click.pass_obj
def task_claim(app: Any, worker: str | None, tag: str | None, repo: str | None) -> None:
    """Atomically take the most urgent ready task. Prints `ID<TAB>TITLE`; exit code 3 when nothing is ready."""
    from chkd.protocol.messages import Claim

    res = app.call(Claim(repo=_repo(repo), worker=worker or os.environ.get("CHKD_WORKER_ID"), tag=tag))
    if app.json:
        print_json(full(res.task))
    elif res.task is not None:
        click.echo(f"{visible(res.task.id)}\t{visible(res.task.title)}")  # the tab is the separator scripts cut on
    else:
        echo("Nothing is ready to claim" + (f" with tag '{tag}'." if tag else "."), err=True)
    if res.task is None:
        raise Exit(3)


# -- import ---------------------------------------------------------------------------------------------
def read_spec(file: str) -> str:
    """The file's text, or a clear error (missing, a directory, binary, not UTF-8, too large)."""
    path = Path(file)
    if not path.exists():
        fail(f"{file} does not exist.")
    if path.is_dir():
        fail(f"{file} is a directory; give a markdown file (like docs/SPEC.md).")
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"{file} cannot be read ({exc.strerror or exc}).")
    if len(data) > MAX_SPEC_BYTES:
        fail(f"{file} is {len(data) / 2**20:.1f} MiB; a spec can be at most {MAX_SPEC_BYTES // 2**20} MiB.")
    if b"\0" in data:
        fail(f"{file} is a binary file, not a markdown checklist.")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        fail(f"{file} is not UTF-8 text, so it is not a markdown checklist chkd can read.")


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=True))
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@repo_option
@click.pass_obj
def task_import(app: Any, file: str, dry_run: bool, repo: str | None) -> None:
    """Import tasks from a spec checklist (docs/SPEC.md) or any markdown checklist. Re-importing is safe."""
    from chkd.protocol.messages import TaskImport

    text = read_spec(file)
    res = app.call(TaskImport(text=text, source=file, repo=_repo(repo), dry_run=dry_run))
    if app.json:
        import msgspec

        print_json(msgspec.structs.asdict(res))  # every list, even the empty ones
        return
    click.echo(format_report(res, file))


def format_report(r: Any, file: str) -> str:
    counts = f"{len(r.new)} new, {len(r.updated)} updated, {len(r.unchanged)} unchanged, {len(r.skipped)} skipped"
    lines = [f"{'Dry run, nothing changed' if r.dry_run else 'Imported'} {file} into {r.repo}: {counts}."]
    would = "would be " if r.dry_run else ""
    if r.new:
        lines.append(f"  {would}new: {_ids(r.new)}")
    for label, ids in ((f"{would}updated", r.updated), ("skipped", r.skipped)):
        if ids:
            lines.append(f"  {label}: {_ids([_with_fields(i, r.changes) for i in ids])}")
    if r.vanished:
        lines.append(f"  no longer in the file (kept): {_ids(r.vanished)}")
    for w in r.warnings:
        lines.append(f"  warning: {w}")
    for p in r.problems:
        lines.append(f"  line {p.line}: {p.reason}: {p.text}")
    return "\n".join(visible(line) for line in lines)


def _with_fields(task_id: str, changes: dict[str, list[str]]) -> str:
    """`SD.1 (title, priority)`: what the file changes on that task."""
    fields = changes.get(task_id)
    return f"{task_id} ({', '.join(fields)})" if fields else task_id


def _ids(ids: list[str], limit: int = 30) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


@click.group("task")
def task_group() -> None:
    """The task queue: add, list, claim, import a spec, dependencies."""


for _cmd in (
    task_add,
    task_list,
    task_show,
    task_edit,
    task_cancel,
    task_retry,
    task_hold,
    task_release,
    dep_group,
    task_claim,
    task_import,
):
    task_group.add_command(_cmd)

COMMANDS: list[click.Command] = [task_group]
