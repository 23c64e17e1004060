"""chkdctl commands for the tasks area."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
