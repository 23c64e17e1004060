"""chkdctl commands for the repos area."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
