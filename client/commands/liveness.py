"""chkdctl commands for the liveness area."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
