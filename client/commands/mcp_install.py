"""chkdctl mcp install: put chkd's MCP server into a project's `.mcp.json` (Claude Code reads it),
merging with the servers already there and never touching them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..output import echo, fail

SERVER_NAME = "chkd"


def mcp_command() -> list[str]:
    """This installation's chkd-mcp as an absolute argv."""
    from chkd.protocol.launch import installed_argv

    return installed_argv("chkd-mcp", "chkd.client.mcp.server")


def server_entry(home: str | None) -> dict[str, Any]:
    argv = mcp_command()
    entry: dict[str, Any] = {"type": "stdio", "command": argv[0], "args": argv[1:]}
    if home:
        entry["env"] = {"CHKD_HOME": os.path.abspath(os.path.expanduser(home))}
    return entry


class McpJsonError(Exception):
    """The existing file cannot be merged into: one sentence, the file left as it is."""


def merged(existing: str | None, entry: dict[str, Any], where: str) -> tuple[dict[str, Any], str]:
    """The new document and what happened ('added', 'updated', 'unchanged'); pure."""
    import json

    doc: Any = {}
    if existing is not None and existing.strip():
        try:
            doc = json.loads(existing)
        except ValueError as exc:
            raise McpJsonError(f"{where} is not valid JSON ({exc}); fix it by hand, nothing was changed.") from None
    if not isinstance(doc, dict):
        raise McpJsonError(f"{where} does not hold a JSON object; nothing was changed.")
    servers = doc.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise McpJsonError(f"'mcpServers' in {where} is not a JSON object; nothing was changed.")
    before = servers.get(SERVER_NAME)
    servers[SERVER_NAME] = entry
    return doc, "unchanged" if before == entry else ("updated" if before is not None else "added")


def project_dir(repo: str | None) -> Path:
    """The repository containing `repo` (default: the current directory), else that directory."""
    from chkd.protocol.paths import find_repo_root

    start = Path(repo or os.getcwd()).expanduser()
    if not start.is_dir():
        fail(f"{start} is not a directory.")
    return find_repo_root(start) or start.resolve()


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.chkd-{os.getpid()}.tmp")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@click.group("mcp")
def mcp_group() -> None:
    """chkd's MCP server (chkd-mcp) for Claude Code and other MCP clients."""


@mcp_group.command("install")
@click.option("--print", "print_only", is_flag=True, help="Print the resulting .mcp.json instead of writing it.")
@click.option("--repo", metavar="PATH", help="The project (default: the repository containing the current directory).")
@click.pass_obj
def install(app: Any, print_only: bool, repo: str | None) -> None:
    """Add the `chkd` server to the project's .mcp.json (other servers are kept as they are),
    with the absolute path of this installation's chkd-mcp."""
    import json

    path = project_dir(repo) / ".mcp.json"
    try:
        existing = path.read_text(encoding="utf-8") if path.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"{path} cannot be read ({exc}); nothing was changed.")
    try:
        doc, what = merged(existing, server_entry(app.home), str(path))
    except McpJsonError as exc:
        fail(str(exc))
    text = json.dumps(doc, indent=2) + "\n"
    if print_only:
        click.echo(text, nl=False)
        return
    if what != "unchanged":
        try:
            write_atomically(path, text)
        except OSError as exc:
            fail(f"{path} cannot be written ({exc.strerror or exc}); nothing was changed.")
    if app.json:
        click.echo(json.dumps({"path": str(path), "result": what, "server": doc["mcpServers"][SERVER_NAME]}))
        return
    echo(f"{path}: chkd server {what} ({doc['mcpServers'][SERVER_NAME]['command']}).")


COMMANDS: list[click.Command] = [mcp_group]
