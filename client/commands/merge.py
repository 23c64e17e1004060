"""chkdctl commands for the merge area."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
