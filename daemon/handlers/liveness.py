"""Handlers for the liveness area (see protocol/messages.py)."""

from __future__ import annotations

HANDLERS: dict = {}
