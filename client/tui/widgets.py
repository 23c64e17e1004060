"""The dashboard's pieces: a worker card, and the modal screens that confirm or ask for text."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label

from chkd.protocol.messages import WorkerInfo
from chkd.protocol.text import visible

from .model import TROUBLE, age, icon


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def tokens(n: int) -> str:
    return f"{n / 1_000_000:.1f}M" if n >= 1_000_000 else f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def card_text(w: WorkerInfo, now_ms: int, width: int = 36) -> Text:
    """Four lines: icon, id and status; task; last message; heartbeat age, elapsed, tokens, cost."""
    end = w.completed_at or now_ms
    task = f"{w.task_id or '-'} {visible(w.task_title or '')}"
    t = Text(no_wrap=True, overflow="ellipsis")
    t.append(f"{icon(w.status)} {w.id}", style="bold")
    t.append(f" {w.status}\n", style="dim" if w.status in ("done", "merged", "aborted") else "")
    t.append(_clip(task, width) + "\n")
    said = (w.last_error if w.status in TROUBLE and w.last_error else None) or w.message or ""
    t.append(_clip(visible(said), width) + "\n", style="italic")
    t.append(
        f"♥ {age(w.heartbeat_at or w.activity_at, now_ms)}  ⏱ {age(w.started_at, end) if w.started_at else '-'}"
        f"  {tokens(w.tokens_in + w.tokens_out)} tok  ${w.cost_usd:.2f}",
        style="dim",
    )
    return t


class TextLine(Widget):
    """Shows one prepared `Text`. Setting new text repaints only this widget: unlike
    `Static.update` it never asks for a layout pass (the size is fixed by CSS), which is what
    keeps a tick with 100 changed cards cheap."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.text = Text()

    def set_text(self, text: Text) -> None:
        if text != self.text:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        return self.text


#: Card text colours by status (inline, so a status change is a repaint, not a CSS pass).
STATUS_STYLE = {"conflict": "red", "error": "red", "dead": "red", "waiting": "yellow", "stalled": "yellow"}


class WorkerCard(TextLine):
    """One worker; clicking it selects it. Updated in place, never rebuilt."""

    class Selected(Message):
        def __init__(self, worker_id: str) -> None:
            super().__init__()
            self.worker_id = worker_id

    def __init__(self, worker_id: str) -> None:
        super().__init__(id=f"card-{worker_id}", classes="card")
        self.worker_id = worker_id
        self.shown: tuple[str, str] | None = None  # (text, status) on screen, to skip identical updates

    def show(self, w: WorkerInfo, now_ms: int) -> None:
        text = card_text(w, now_ms)
        key = (text.plain, w.status)
        if key == self.shown:
            return
        self.shown = key
        if w.status in STATUS_STYLE:
            text.stylize(STATUS_STYLE[w.status])
        self.set_text(text)

    def on_click(self) -> None:
        self.post_message(self.Selected(self.worker_id))


class Confirm(ModalScreen[bool]):
    """Yes or no, for anything that could lose work. Enter/y confirms, Escape/n declines."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__(classes="modal")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Prompt(ModalScreen["str | None"]):
    """One line of text (a reason, a message, a task id); Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, question: str, placeholder: str = "", allow_empty: bool = False) -> None:
        super().__init__(classes="modal")
        self.question = question
        self.placeholder = placeholder
        self.allow_empty = allow_empty

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            yield Input(placeholder=self.placeholder, id="answer")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if value or self.allow_empty:
            self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
