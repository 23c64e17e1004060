"""Handlers for the tasks area (see protocol/messages.py)."""

from __future__ import annotations

HANDLERS: dict = {}
