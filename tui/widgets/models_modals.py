"""The model screen's dialogs: pull (catalog list, live progress, cancel) and info (facts and chat template)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Input, Label, LoadingIndicator, OptionList, ProgressBar, Static, TextArea
from textual.widgets.option_list import Option
from textual.worker import Worker

from llmspell.errors import LLMSpellError
from llmspell.machine import human_bytes
from llmspell.types import ModelInfo, PullProgress
from llmspell_tui.widgets.modals import report_worker_failure

if TYPE_CHECKING:
    from llmspell.hub import Hub

CANCELLED_NOTE = "pull cancelled; the part already downloaded is kept, pull again to resume"


@dataclass(frozen=True)
class CatalogRow:
    """One downloadable model of the catalog, as the pull dialog lists it."""

    tag: str
    parameters: str
    quantization: str
    size_bytes: int
    description: str
    on_disk: bool

    def label(self) -> Text:
        """The option's text: tag, size of the download, parameters, and whether it is here already."""
        text = Text()
        text.append(f"{self.tag:<22}", style="bold")
        text.append(f" {self.parameters:>6} {self.quantization:<7} {human_bytes(self.size_bytes):>9}")
        if self.on_disk:
            text.append("  on disk", style="green")
        return text


def catalog_rows(present: set[str]) -> list[CatalogRow]:
    """Every variant of the catalog at its default quantization; ``present`` names the models on disk."""
    from llmspell.catalog import load_catalog

    rows = []
    for entry in load_catalog().entries.values():
        for variant in entry.variants.values():
            quant = variant.default
            tag = f"{entry.name}:{variant.name}"
            full = f"{tag}-{quant.name}"
            rows.append(
                CatalogRow(
                    tag,
                    variant.parameters,
                    quant.name,
                    quant.size_bytes,
                    entry.description,
                    on_disk=bool({tag, full} & present),
                )
            )
    return rows


class PullScreen(ModalScreen[str | None]):
    """Pull a model by catalog name or spec with a live progress bar; Escape or Stop cancels, keeping the part."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "stop_or_close", "Stop / close")]

    #: a pull is running
    pulling: reactive[bool] = reactive(False)

    def __init__(self, hub: Hub, *, present: set[str] | None = None, value: str = "") -> None:
        super().__init__()
        self.hub = hub
        self.present = present or set()
        self.value = value
        self.rows: list[CatalogRow] = []
        self._worker: Worker[None] | None = None
        #: the last progress shown (tests read it)
        self.last_progress: PullProgress | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="pull-dialog"):
            yield Label("Pull a model", classes="dialog-title")
            yield Input(
                self.value,
                placeholder="catalog name or spec, e.g. qwen2.5:0.5b or smollm2:135m-Q8_0",
                id="pull-spec",
            )
            yield OptionList(id="catalog")
            yield Static("choose a catalog model or type a spec, then Enter", id="pull-status")
            yield ProgressBar(id="pull-bar", show_eta=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Pull", id="pull", variant="primary")
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        try:
            self.rows = catalog_rows(self.present)
        except LLMSpellError as exc:
            self.notify(str(exc), severity="error", title="catalog")
        self.query_one("#pull-spec", Input).suggester = SuggestFromList(
            [r.tag for r in self.rows], case_sensitive=False
        )
        self._fill(self.value)
        self.query_one("#pull-bar", ProgressBar).display = False
        self.query_one("#pull-spec", Input).focus()

    @property
    def status_text(self) -> str:
        """The dialog's status line as plain text."""
        return str(self.query_one("#pull-status", Static).content)

    def _fill(self, text: str) -> None:
        words = text.lower().split()
        options = self.query_one("#catalog", OptionList)
        options.clear_options()
        options.add_options(
            Option(r.label(), id=r.tag)
            for r in self.rows
            if all(w in f"{r.tag} {r.description}".lower() for w in words)
        )

    @on(Input.Changed, "#pull-spec")
    def _typed(self, event: Input.Changed) -> None:
        if not self.pulling:
            self._fill(event.value)

    @on(Input.Submitted, "#pull-spec")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.start(event.value)

    @on(OptionList.OptionSelected, "#catalog")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id is not None and not self.pulling:
            self.query_one("#pull-spec", Input).value = event.option.id
            self.start(event.option.id)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "pull":
            if self.pulling:
                self.stop()
            else:
                self.start(self.query_one("#pull-spec", Input).value)
        else:
            self.action_stop_or_close()

    def watch_pulling(self, pulling: bool) -> None:
        self.query_one("#pull", Button).label = "Stop (Esc)" if pulling else "Pull"
        self.query_one("#pull", Button).variant = "warning" if pulling else "primary"
        self.query_one("#pull-spec", Input).disabled = pulling
        self.query_one("#catalog", OptionList).disabled = pulling
        if pulling:
            self.query_one("#pull", Button).focus()

    def start(self, spec: str) -> None:
        """Begin pulling ``spec`` (nothing happens while another pull runs, or for an empty name)."""
        spec = spec.strip()
        if self.pulling:
            return
        if not spec:
            self.notify("type a model name or pick one from the list", severity="warning")
            return
        self.pulling = True
        self.show_status(f"pulling {spec}…")
        bar = self.query_one("#pull-bar", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._worker = self.run_pull(spec)

    def stop(self) -> None:
        """Cancel the pull in flight: the worker's cancel closes the stream, which stops the download."""
        if self._worker is not None and self._worker.is_running:
            self._worker.cancel()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_failure(self, event)

    def action_stop_or_close(self) -> None:
        """Escape: stop a running pull, otherwise close the dialog."""
        if self.pulling:
            self.stop()
        else:
            self.dismiss(None)

    def show_status(self, text: str, *, style: str = "") -> None:
        """Put a line in the dialog's status."""
        self.query_one("#pull-status", Static).update(Text(text, style=style))

    def show_progress(self, p: PullProgress) -> None:
        """One progress step: bytes done of the total on the bar, the step's words on the status line."""
        self.last_progress = p
        bar = self.query_one("#pull-bar", ProgressBar)
        if p.total:
            bar.display = True
            bar.update(total=p.total, progress=p.completed)
            self.show_status(f"{p.status} · {human_bytes(p.completed)} of {human_bytes(p.total)}")
        else:
            self.show_status(p.status)

    @work(exclusive=True, group="pull", exit_on_error=False)
    async def run_pull(self, spec: str) -> None:
        """Stream the pull's progress into the dialog; close it with the spec when the model is in place."""
        stream = self.hub.pull(spec)
        try:
            async for p in stream:
                self.show_progress(p)
        except LLMSpellError as exc:
            self.show_status(str(exc), style="bold red")
            self.notify(str(exc), severity="error", title=f"cannot pull {spec}")
            return
        except asyncio.CancelledError:
            self.show_status(CANCELLED_NOTE, style="bold yellow")
            self.notify(CANCELLED_NOTE, severity="warning", title=spec)
            raise
        finally:
            await stream.aclose()
            self.pulling = False
        self.notify(f"{spec} is ready", title="pulled")
        self.dismiss(spec)


def info_rows(info: ModelInfo) -> list[tuple[str, str]]:
    """The facts ``llmspell model info`` prints, as label and value (empty values left out)."""
    return info.facts()


class InfoScreen(ModalScreen[None]):
    """Everything known about one model, and its chat template in a scrollable, read-only editor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, hub: Hub, spec: str) -> None:
        super().__init__()
        self.hub = hub
        self.spec = spec
        self.info: ModelInfo | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="info-dialog"):
            yield Label(f"Model info · {self.spec}", classes="dialog-title")
            yield LoadingIndicator(id="info-loading")
            with VerticalScroll(id="info-facts-scroll"):
                yield Static("", id="info-facts")
            yield Label("Chat template", classes="dialog-subtitle")
            yield TextArea("", id="info-template", read_only=True, show_line_numbers=False, soft_wrap=True)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close (Esc)", id="close", variant="primary")

    def on_mount(self) -> None:
        self.load()

    @work(exclusive=True, group="info", exit_on_error=False)
    async def load(self) -> None:
        """Ask the hub for the model's info (reads the GGUF header, so not on the UI thread)."""
        try:
            info = await self.hub.info(self.spec)
        except LLMSpellError as exc:
            self.notify(str(exc), severity="error", title=f"no info for {self.spec}")
            self.dismiss(None)
            return
        self.show(info)

    def show(self, info: ModelInfo) -> None:
        """Fill the dialog with the facts and the template."""
        self.info = info
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for label, value in info_rows(info):
            table.add_row(label, value)
        if info.source == "not downloaded":
            table.add_row("status", f"not downloaded; pull it with p on the model screen ({info.name}@{info.backend})")
        self.query_one("#info-facts", Static).update(table)
        if info.chat_template:
            template = info.chat_template
        elif info.has_chat_template is None:
            template = "(not known until the model is downloaded: the template is read from its file)"
        else:
            template = "(this model carries no chat template: plain completion only)"
        if info.base_model:
            template = f"({info.chat_warning()})\n\n{template}"
        self.query_one("#info-template", TextArea).load_text(template)
        self.query_one("#info-loading").display = False
        self.query_one("#close", Button).focus()

    @property
    def facts_text(self) -> str:
        """The facts as plain text, one ``label value`` per line (for tests)."""
        return "\n".join(f"{label} {value}" for label, value in info_rows(self.info)) if self.info else ""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state.name == "ERROR":
            report_worker_failure(self, event)
            self.dismiss(None)

    def action_close(self) -> None:
        """Close the dialog."""
        self.dismiss(None)

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)
