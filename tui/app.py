"""llmspell-tui: the full-screen face. For now one screen: backend status and the model table."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header, Static

from llmspell.hub import Hub
from llmspell.machine import human_bytes


class LLMSpellApp(App[None]):
    """Backend status on top, every model below; the chat screens arrive with the TUI issue."""

    TITLE = "llmspell"
    CSS = """
    #status { height: auto; padding: 0 1; background: $boost; }
    #models { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "refresh", "Refresh"), Binding("q", "quit", "Quit")]

    def __init__(self, hub: Hub | None = None) -> None:
        super().__init__()
        self.hub = hub or Hub()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("checking backends…", id="status")
        yield DataTable(id="models", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"default model: {self.hub.config.default_model}"
        table = self.query_one(DataTable)
        table.add_columns("Name", "Backend", "Size", "Quant", "Source", "Loaded")
        self.action_refresh()

    def action_refresh(self) -> None:
        """Re-read backend status and the model list in a worker, so the screen never freezes."""
        self.load()

    @work(exclusive=True, group="refresh")
    async def load(self) -> None:
        """Fetch status and models through the core and show them."""
        statuses = await self.hub.status_all()
        parts = []
        for s in statuses:
            if s.ready:
                parts.append(f"[green]●[/] {s.backend} {s.version or ''} · {s.device or ''} · {s.model_count} models")
            else:
                parts.append(f"[red]●[/] {s.backend}: {s.error}")
        self.query_one("#status", Static).update("\n".join(parts))
        models, _ = await self.hub.list_all()
        table = self.query_one(DataTable)
        table.clear()
        for m in models:
            table.add_row(
                m.name, m.backend, human_bytes(m.size_bytes), m.quantization or "-", m.source, "●" if m.loaded else ""
            )

    async def on_unmount(self) -> None:
        await self.hub.close()


def create_app(hub: Hub | None = None) -> LLMSpellApp:
    """The app factory shared by the script and the tests."""
    return LLMSpellApp(hub)


def main() -> None:
    """Entry point of ``llmspell-tui``."""
    create_app().run()
