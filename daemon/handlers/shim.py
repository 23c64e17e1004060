"""Handlers for the shim area (see protocol/messages.py)."""

from __future__ import annotations

HANDLERS: dict = {}
