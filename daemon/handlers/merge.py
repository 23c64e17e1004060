"""Handlers for the merge area (see protocol/messages.py)."""

from __future__ import annotations

HANDLERS: dict = {}
