"""chkdctl: the command-line client. This module only wires the commands together.

Start-up stays lean: nothing heavier than click is imported here; each command
imports zmq (through the Client), mcp or textual only when it runs.
"""

from __future__ import annotations

import gc

# A short-lived CLI creates its objects once; cyclic GC passes during start-up are pure cost
# (about 5 ms of ~100). Long-running commands (watch, logs -f, demo) call `gc.enable()`.
gc.disable()

import os
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import click

from chkd.protocol.errors import ChkdError

from .commands.index import INDEX
from .output import Exit, echo, exit_code, fail

if TYPE_CHECKING:
    from chkd.protocol.messages import Command, Result
    from chkd.protocol.paths import Paths

    from .client import Client


R = TypeVar("R", bound="Result")


class App:
    """Global options and the lazily made client, passed to every command as `ctx.obj`."""

    def __init__(self, home: str | None, json: bool) -> None:
        self.home = home
        self.json = json
        self._client: Any = None

    @property
    def paths(self) -> Paths:
        from chkd.protocol.paths import resolve

        return resolve(self.home)

    @property
    def client(self) -> Client:
        if self._client is None:
            from .client import Client

            self._client = Client(self.paths)
        return self._client

    def call(self, body: Command[R], timeout: float | None = None) -> R:
        """The client's `call`, with relative `repo` paths made absolute first."""
        return self.client.call(_with_local_paths(body), timeout)


def _with_local_paths(body: Any) -> Any:
    """A `repo` typed as a relative path (`.`, `../proj`) means chkdctl's directory, not the
    daemon's (which is `/`): send it absolute. Names and absolute paths pass unchanged."""
    repo = getattr(body, "repo", None)
    if not isinstance(repo, str) or not (os.sep in repo or repo.startswith((".", "~"))):
        return body
    local = os.path.expanduser(repo)
    if (local == repo and os.path.isabs(repo)) or not os.path.exists(local):
        return body
    import msgspec

    return msgspec.structs.replace(body, repo=os.path.abspath(local))


CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class LazyGroup(click.Group):
    """The top-level group: commands come from `commands.index.INDEX`, each area's module imported
    only when one of its commands runs, and `--help` lists them from the index without importing any."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(INDEX)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in INDEX:
            return None
        if cmd_name not in self.commands:
            import importlib

            area = importlib.import_module(f"{__package__}.commands.{INDEX[cmd_name][0]}")
            for command in area.COMMANDS:
                self.commands.setdefault(str(command.name), command)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, with each line taken from the index."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, click.Command(name, help=INDEX[name][1]).get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--home",
    envvar="CHKD_HOME",
    metavar="DIR",
    help="Use this chkd home (sockets, state, config). Default: $CHKD_HOME, else the XDG directories.",
)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
@click.version_option(package_name="chkd", prog_name="chkdctl")
@click.pass_context
def cli(ctx: click.Context, home: str | None, as_json: bool) -> None:
    """chkd: run several coding agents in parallel on one git repository.

    chkdd (the daemon) keeps the task queue, one worktree and branch per worker,
    heartbeats, and merges. chkdctl talks to it, starting it when needed
    (set CHKD_NO_AUTOSTART=1 to turn that off).

    Exit codes: 0 ok, 1 error (or no daemon), 2 usage, 3 nothing to claim.
    """
    if home:
        os.environ["CHKD_HOME"] = home  # the daemon we start, and anything it starts, use the same home
    ctx.obj = App(home=home, json=as_json)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="chkdctl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("chkdctl: interrupted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exit as exc:
        sys.exit(exc.code)
    except ChkdError as exc:
        fail(exc, code=exit_code(exc))
    except KeyboardInterrupt:
        click.echo("chkdctl: interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug: a sentence for the user, the traceback only on request
        if os.environ.get("CHKD_DEBUG"):
            raise
        echo(f"chkdctl: unexpected {type(exc).__name__}: {exc} (set CHKD_DEBUG=1 for the traceback).", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
