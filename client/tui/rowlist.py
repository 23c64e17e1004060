"""A table for long lists that change often (the task queue): Textual's line API, one cached
strip per row, and only the changed rows repainted.

Why not DataTable: any cell update there re-renders every visible row (its caches are keyed
on an update counter), about 40-90 ms per frame with 1,000 tasks on this machine — most of a
frame's budget. Here a changed row costs one strip; the rest come from the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

HEADER_STYLE = Style(bold=True, reverse=True)
CURSOR_STYLE = Style(reverse=True)


class RowList(ScrollView, can_focus=True):
    """Rows of text cells under a fixed header; a cursor row (keys or a click)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False),
        Binding("down", "move(1)", show=False),
        Binding("pageup", "move(-20)", show=False),
        Binding("pagedown", "move(20)", show=False),
        Binding("home", "move(-1000000)", show=False),
        Binding("end", "move(1000000)", show=False),
    ]

    class Highlighted(Message):
        def __init__(self, key: str | None) -> None:
            super().__init__()
            self.key = key

    def __init__(self, columns: Sequence[tuple[str, int]], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = list(columns)
        self.keys: list[str] = []
        self.rows: dict[str, tuple[str, ...]] = {}
        self.cursor = 0
        self._strips: dict[str, Strip] = {}
        self._header = self._strip(tuple(name for name, _ in self.columns), HEADER_STYLE)
        self._width = sum(w + 1 for _, w in self.columns)

    # -- data ------------------------------------------------------------------------------
    def set_rows(self, keys: list[str], rows: dict[str, tuple[str, ...]]) -> int:
        """Show `rows` in the order of `keys`; returns how many rows changed (were re-rendered)."""
        changed = [k for k in keys if self.rows.get(k) != rows[k]]
        for k in changed:
            self._strips.pop(k, None)
        for k in set(self._strips) - set(rows):
            del self._strips[k]
        reordered = keys != self.keys
        self.keys, self.rows = keys, rows
        self.cursor = min(self.cursor, max(0, len(keys) - 1))
        self.virtual_size = Size(self._width, len(keys) + 1)
        if reordered:
            self.refresh()
        else:
            top = int(self.scroll_offset.y)
            index = {k: i for i, k in enumerate(keys)} if changed else {}
            for k in changed:
                y = index[k] - top + 1
                if 1 <= y <= self.size.height:
                    self.refresh_line(y)
        return len(changed)

    @property
    def cursor_key(self) -> str | None:
        return self.keys[self.cursor] if 0 <= self.cursor < len(self.keys) else None

    # -- rendering ----------------------------------------------------------------------------
    def _strip(self, cells: tuple[str, ...], style: Style | None = None) -> Strip:
        text = " ".join(f"{c[:w]:<{w}}" for c, (_, w) in zip(cells, self.columns, strict=False))
        return Strip([Segment(text, style)], len(text))

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            strip = self._header
        else:
            i = int(scroll_y) + y - 1
            if i >= len(self.keys):
                return Strip.blank(width)
            key = self.keys[i]
            cached = self._strips.get(key)
            if cached is None:
                cached = self._strips[key] = self._strip(self.rows[key])
            strip = cached
            if i == self.cursor and self.has_focus:
                strip = strip.apply_style(CURSOR_STYLE)
            elif i == self.cursor:
                strip = strip.apply_style(Style(underline=True))
        return strip.crop(int(scroll_x), int(scroll_x) + width).extend_cell_length(width)

    # -- cursor --------------------------------------------------------------------------------
    def action_move(self, step: int) -> None:
        self._set_cursor(self.cursor + step)

    def on_click(self, event: events.Click) -> None:
        if event.y >= 1:
            self._set_cursor(int(self.scroll_offset.y) + event.y - 1)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def _set_cursor(self, i: int) -> None:
        if not self.keys:
            return
        self.cursor = max(0, min(len(self.keys) - 1, i))
        top = int(self.scroll_offset.y)
        visible = max(1, self.size.height - 1)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)
        self.refresh()
        self.post_message(self.Highlighted(self.cursor_key))
