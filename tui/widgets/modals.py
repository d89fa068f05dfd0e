"""Small dialogs the model and history screens share: a yes/no confirmation and a one-line text prompt."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static
from textual.worker import Worker, WorkerState


def report_worker_failure(node: Widget | Screen[object], event: Worker.StateChanged) -> None:
    """Show a worker's unexpected failure as one notification (the expected ones are caught where they happen)."""
    if event.state == WorkerState.ERROR and event.worker.error is not None:
        err = event.worker.error
        node.notify(f"{type(err).__name__}: {err}", severity="error", title=f"{event.worker.name or 'task'} failed")


class ConfirmScreen(ModalScreen[bool]):
    """Ask before something that cannot be undone; "No" has the focus, so Enter alone never destroys."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, question: str, detail: str = "", *, yes: str = "Delete") -> None:
        super().__init__()
        self.question = question
        self.detail = detail
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            if self.detail:
                yield Static(self.detail, classes="dialog-detail", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, answer: bool) -> None:
        """Close the dialog with the answer."""
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TextPromptScreen(ModalScreen[str | None]):
    """Ask for one line of text (a file name); Enter accepts, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, question: str, value: str = "", *, ok: str = "OK", placeholder: str = "", empty_ok: bool = False
    ) -> None:
        super().__init__()
        #: an empty answer is an answer (it clears something), not a mistake
        self.empty_ok = empty_ok
        self.question = question
        self.value = value
        self.ok = ok
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, id="answer")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.ok, id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def action_cancel(self) -> None:
        """Close without an answer."""
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._accept()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._accept()
        else:
            self.dismiss(None)

    def _accept(self) -> None:
        text = self.query_one(Input).value.strip()
        if not text and not self.empty_ok:
            self.notify("type an answer first, or press Escape to cancel", severity="warning")
            return
        self.dismiss(text)
