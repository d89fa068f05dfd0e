"""The chat screen's tool dialogs: the question before a side-effect tool runs, and the list of tools with the
switch that turns them on or off for the panes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static, Switch

from llmspell_tui.widgets.tool_block import cut


class ToolConfirmScreen(ModalScreen[bool]):
    """Ask before a side-effect tool runs: the tool, its arguments and the root it works in. "Deny" has the focus
    and Escape denies, so only a deliberate key lets it run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "answer(True)", "Allow"),
        Binding("d", "answer(False)", "Deny"),
        Binding("escape", "answer(False)", "Deny"),
    ]

    def __init__(self, tool: str, arguments: dict[str, Any], root: Path | None = None, *, model: str = "") -> None:
        super().__init__()
        self.tool = tool
        self.arguments = arguments
        self.root = root
        self.model = model

    @property
    def detail(self) -> str:
        """What the dialog shows under its question."""
        args = cut(json.dumps(self.arguments, ensure_ascii=False, indent=2), chars=1200, lines=20)
        where = f"\n\nroot: {self.root}" if self.root is not None else ""
        return f"arguments:\n{args}{where}"

    def compose(self) -> ComposeResult:
        asker = f"{self.model} wants" if self.model else "The model wants"
        with Vertical(classes="dialog", id="tool-confirm"):
            yield Label(f"{asker} to run {self.tool}, which changes something. Allow it?", classes="dialog-title")
            yield Static(self.detail, classes="dialog-detail", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Allow (a)", id="allow", variant="warning")
                yield Button("Deny (d)", id="deny", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#deny", Button).focus()

    def action_answer(self, answer: bool) -> None:
        """Close the dialog with the answer."""
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "allow")


class ToolsScreen(ModalScreen[bool | None]):
    """The tools the panes may call (``ToolSet.lines()``) and a switch for them; closes with the switch's state."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    DEFAULT_CSS = """
    ToolsScreen #tool-lines {
        height: auto;
        max-height: 20;
    }
    ToolsScreen .tool-line {
        padding: 0 0 0 1;
    }
    ToolsScreen .tools-switch {
        height: auto;
        padding: 1 0 0 0;
    }
    ToolsScreen .tools-switch Label {
        padding: 1 1;
    }
    """

    def __init__(self, lines: list[str], *, enabled: bool, available: bool) -> None:
        super().__init__()
        self.lines = lines
        self.enabled = enabled
        #: whether there are tools at all (else the switch is not offered)
        self.available = available

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="tools-dialog"):
            yield Label("Tools the models may call", classes="dialog-title")
            with VerticalScroll(id="tool-lines"):
                if self.lines:
                    for line in self.lines:
                        yield Static(line, classes="tool-line", markup=False)
                else:
                    yield Static(
                        "No tools: start llmspell-tui with --tools NAMES (e.g. --tools read_file,list_directory), "
                        "or list them in config.toml's [tools] enabled.",
                        classes="tool-line",
                        markup=False,
                    )
            if self.available:
                with Horizontal(classes="tools-switch"):
                    yield Switch(self.enabled, id="tools-on")
                    yield Label("use these tools in the chat panes")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary")

    def on_mount(self) -> None:
        if self.available:
            self.query_one(Switch).focus()
        else:
            self.query_one("#close", Button).focus()

    def action_close(self) -> None:
        """Close, keeping the switch's state."""
        self.dismiss(self.query_one(Switch).value if self.available else None)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.action_close()
