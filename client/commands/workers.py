"""chkdctl commands for the workers area."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
