"""How chkdctl prints: `--json` for scripts, plain lines for people, errors as sentences."""

from __future__ import annotations

import sys
import time
from typing import Any, NoReturn

import click
import msgspec

from chkd.protocol.errors import ChkdError
from chkd.protocol.text import visible as _visible


class Exit(SystemExit):
    pass


def json_option(fn: Any) -> Any:
    """`--json` after the command too (`chkdctl workers --json`), same as the global one."""

    def _set(ctx: click.Context, _param: Any, value: bool) -> None:
        if value and ctx.obj is not None:
            ctx.obj.json = True

    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set,
        help="Print machine-readable JSON.",
    )(fn)


def visible(text: object) -> str:
    """The one way chkdctl shows text it did not write itself (titles, messages, ids, paths, file
    names, error sentences): control characters as escapes (`\\x1b`), so nothing in the data can
    move the cursor, recolour or retitle the terminal, or fake a line. JSON output does not need it."""
    return _visible(str(text))


def echo(line: object = "", err: bool = False) -> None:
    """Print one line of text output, made `visible`."""
    click.echo(visible(line), err=err)


def print_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(obj), indent=2).decode() + "\n")


#: Error codes with an exit code of their own (every other error exits 1).
EXIT_CODES: dict[str, int] = {"nothing_ready": 3}


def exit_code(err: ChkdError) -> int:
    """chkdctl's exit code for an error reply: decided by its code, never its wording."""
    return EXIT_CODES.get(err.code, 1)


def fail(err: ChkdError | str, code: int = 1) -> NoReturn:
    """Print the error as a sentence (and its hint) on stderr and exit with `code`."""
    if isinstance(err, ChkdError):
        echo(f"chkdctl: {err.message}", err=True)
        if err.hint:
            echo(f"  hint: {err.hint}", err=True)
    else:
        echo(f"chkdctl: {err}", err=True)
    raise Exit(code)


def ago(ms: int | None, now_ms: int | None = None) -> str:
    """'3s', '5m', '2h', '4d' ago, or '-'."""
    if not ms:
        return "-"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    s = max(0, (now - ms) // 1000)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def table(rows: list[list[str]], headers: list[str]) -> str:
    """Left-aligned columns; the last column is never padded. Every cell is made `visible`."""
    cells = [[visible(c) for c in r] for r in (headers, *rows)]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        parts = [c + " " * (widths[i] - _width(c)) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _width(text: str) -> int:
    import unicodedata

    w = 0
    for ch in text:
        if unicodedata.combining(ch) or ch == "\ufe0f":
            continue
        w += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return w
