"""The settings form of a chat pane: system prompt, sampling options and the screen's comparison switches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, Switch

from llmspell.errors import LLMSpellError
from llmspell.options import OPTIONS
from llmspell.session import error_text
from llmspell.types import Options, parse_option_value

#: the options the form edits (every one of the option table meant for forms), with what each one is for
FIELDS: tuple[tuple[str, str], ...] = tuple((o.name, o.help) for o in OPTIONS if o.form)


@dataclass(frozen=True)
class PaneSettings:
    """What the form edits: one pane's system prompt and options, and the screen's switches."""

    system: str = ""
    options: Options = field(default_factory=Options)
    same_for_all: bool = False
    parallel: bool = True
    compare: bool = False


class SettingsScreen(ModalScreen[PaneSettings | None]):
    """A small modal form; Apply checks every value and names the one that is wrong, Escape leaves unchanged."""

    DEFAULT_CSS = """
    SettingsScreen {
        align: center middle;
    }
    SettingsScreen > Vertical {
        width: 80;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    SettingsScreen Grid {
        grid-size: 3;
        grid-columns: 17 12 1fr;
        grid-rows: 1;
        grid-gutter: 0 1;
        height: auto;
    }
    SettingsScreen Grid Input {
        border: none;
        height: 1;
        padding: 0 1;
        background: $boost;
    }
    SettingsScreen Grid Input:focus {
        /* Input:focus sets a tall border, which outranks the rule above and leaves a one-row input all border */
        border: none;
        background: $accent 30%;
    }
    SettingsScreen .help {
        color: $text-muted;
    }
    SettingsScreen #system {
        border: none;
        height: 1;
        background: $boost;
        margin-bottom: 1;
    }
    SettingsScreen #system:focus {
        background: $accent 30%;
    }
    SettingsScreen .switches {
        height: 1;
    }
    SettingsScreen #same-row {
        margin-top: 1;
    }
    SettingsScreen .switches Label {
        padding: 0 2 0 1;
    }
    SettingsScreen .switches Switch {
        width: auto;
        height: 1;
        border: none;
        padding: 0;
    }
    SettingsScreen .switches Switch:focus {
        background: $accent 30%;
    }
    SettingsScreen #error {
        color: $error;
        height: auto;
        margin: 1 0 0 0;
    }
    SettingsScreen .buttons {
        height: auto;
        align-horizontal: right;
    }
    SettingsScreen Button {
        margin-left: 1;
        height: 1 !important;
        min-width: 10;
        border: none !important;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_form", "Cancel"),
        Binding("ctrl+s", "apply", "Apply"),
    ]

    def __init__(self, current: PaneSettings, *, title: str = "Settings") -> None:
        super().__init__()
        self.current = current
        self.title_text = title

    def compose(self) -> ComposeResult:
        opts = self.current.options
        with Vertical() as box:
            box.border_title = self.title_text
            yield Label("System prompt")
            yield Input(self.current.system, placeholder="(none)", id="system")
            with Grid():
                for name, help_text in FIELDS:
                    value = getattr(opts, name)
                    shown = "|".join(value) if isinstance(value, tuple) else "" if value is None else str(value)
                    yield Label(name)
                    yield Input(shown, placeholder="default", id=f"opt-{name}")
                    yield Static(help_text, classes="help")
            with Horizontal(classes="switches", id="same-row"):
                yield Switch(self.current.same_for_all, id="same")
                yield Label("same settings & seed for all panes")
            with Horizontal(classes="switches"):
                yield Switch(self.current.compare, id="compare")
                yield Label("compare: send to every pane")
                yield Switch(self.current.parallel, id="parallel")
                yield Label("at once")
            yield Static("", id="error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Apply", id="apply", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#system", Input).focus()

    def read(self) -> PaneSettings:
        """The form's values; raises LLMSpellError naming the option that is wrong."""
        values: dict[str, Any] = {}
        for name, _ in FIELDS:
            values[name] = parse_option_value(name, self.query_one(f"#opt-{name}", Input).value)
        options = self.current.options.with_values(values)
        return PaneSettings(
            system=self.query_one("#system", Input).value.strip(),
            options=options,
            same_for_all=self.query_one("#same", Switch).value,
            parallel=self.query_one("#parallel", Switch).value,
            compare=self.query_one("#compare", Switch).value,
        )

    def action_apply(self) -> None:
        """Check and apply the form, or say which value is wrong and keep it open."""
        try:
            result = self.read()
        except LLMSpellError as exc:
            self.query_one("#error", Static).update(error_text(exc))
            return
        self.dismiss(result)

    def action_dismiss_form(self) -> None:
        """Leave without changing anything."""
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#apply")
    def _apply_pressed(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)
