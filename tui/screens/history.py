"""The history screen: saved conversations to reopen in the chat screen, export to Markdown, or delete."""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from llmspell.errors import LLMSpellError
from llmspell.session import error_text, export_conversation
from llmspell_tui.widgets.modals import ConfirmScreen, TextPromptScreen
from llmspell_tui.widgets.status import BackendStatusBar

if TYPE_CHECKING:
    from llmspell.store import ConversationRow, Store


def when(timestamp: float) -> str:
    """A stored time as local date and minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def export_name(title: str, conv_id: str) -> str:
    """A file name for a conversation's Markdown: its title made safe, else its id."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()[:48]
    return f"{slug or 'conversation'}-{conv_id[:6]}.md"


class HistoryScreen(Screen[None]):
    """Every saved conversation, newest first: Enter reopens it in the chat screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
        Binding("slash", "focus_filter", "Filter"),
        Binding("e", "export", "Export"),
        Binding("d,delete", "delete", "Delete"),
        Binding("r", "reload", "Refresh"),
        Binding("escape", "leave_filter", "Table", show=False),
    ]

    def __init__(self, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        #: the conversations the store listed (id, title, model, updated, messages)
        self.conversations: list[ConversationRow] = []

    @property
    def store(self) -> Store:
        """The app's history store."""
        return self.app.store  # type: ignore[attr-defined,no-any-return]

    @property
    def table(self) -> DataTable[str]:
        """The conversation table."""
        return self.query_one("#history-table", DataTable)

    @property
    def filter_input(self) -> Input:
        """The filter box."""
        return self.query_one("#history-filter", Input)

    def compose(self) -> ComposeResult:
        yield BackendStatusBar()
        with Horizontal(id="history-bar"):
            yield Input(placeholder="filter: title or model…  (/)", id="history-filter")
            yield Static("", id="history-count")
        yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="history-empty")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.table.add_column("Title", key="title")
        self.table.add_column("Model", key="model")
        self.table.add_column("Updated", key="updated")
        self.table.add_column("Msgs", key="messages")
        self.reload()
        self.table.focus()

    def on_resize(self) -> None:
        self.show()

    def on_screen_resume(self) -> None:
        # the chat screen saves as it goes: show what it added since
        self.reload()

    def reload(self) -> None:
        """Read the list from the store (one indexed query) and show it."""
        try:
            self.conversations = self.store.list(limit=1000)
        except LLMSpellError as exc:
            self.notify(str(exc), severity="error", title="history")
            self.conversations = []
        self.show()

    def show(self) -> None:
        """Rebuild the rows, filtered, keeping the selected conversation selected."""
        table = self.table
        selected = self.selected_id()
        table.clear()
        words = self.filter_input.value.lower().split()
        shown = [c for c in self.conversations if all(w in f"{c.title} {c.model}".lower() for w in words)]
        # the other columns keep their width; the title gets the rest (at least 16 cells)
        room = max(16, (table.size.width or self.app.size.width) - 46)
        for c in shown:
            title = c.title or "(untitled)"
            title = title if len(title) <= room else title[: room - 1] + "…"
            table.add_row(title, c.model, when(c.updated), str(c.messages), key=c.id)
        ids = [c.id for c in shown]
        if selected in ids:
            table.move_cursor(row=ids.index(selected), animate=False)
        total = len(self.conversations)
        self.query_one("#history-count", Static).update(
            f"{len(shown)} of {total} conversations" if len(shown) != total else f"{total} conversations"
        )
        empty = self.query_one("#history-empty", Static)
        empty.display = not self.conversations
        empty.update("No conversations yet: chat on the chat screen (F1) and they are saved here as you go.")

    def selected_id(self) -> str | None:
        """The id of the selected conversation, or None when there is none."""
        table = self.table
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def titles(self) -> list[str]:
        """The full titles of the rows, top to bottom."""
        by_id = {c.id: c.title for c in self.conversations}
        return [by_id[str(row.key.value)] for row in self.table.ordered_rows]

    def _need_selection(self) -> str | None:
        conv_id = self.selected_id()
        if conv_id is None:
            self.notify("no conversation is selected", severity="warning")
        return conv_id

    # ----- filter ------------------------------------------------------------------------------------------------

    @on(Input.Changed, "#history-filter")
    def _filter_changed(self) -> None:
        self.show()

    @on(Input.Submitted, "#history-filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def action_focus_filter(self) -> None:
        """Type to filter the list."""
        self.filter_input.focus()

    def action_leave_filter(self) -> None:
        """Back from the filter to the list."""
        self.table.focus()

    # ----- actions -----------------------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#history-table")
    async def _row_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        await self.action_open()

    async def action_open(self) -> None:
        """Reopen the selected conversation in the chat screen, to read it or go on."""
        conv_id = self._need_selection()
        if conv_id is None:
            return
        await self.open_in_chat(conv_id)

    async def open_in_chat(self, conv_id: str) -> None:
        """Switch to the chat mode and hand it the conversation."""
        await self.app.switch_mode("chat")
        opened = self.app.screen.open_conversation(conv_id)  # type: ignore[attr-defined]
        if inspect.isawaitable(opened):
            await opened

    def action_delete(self) -> None:
        """Delete the selected conversation, after a confirmation."""
        conv_id = self._need_selection()
        if conv_id is None:
            return
        row = next(c for c in self.conversations if c.id == conv_id)
        title = row.title or "(untitled)"

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.store.delete(conv_id)
            except LLMSpellError as exc:
                self.notify(str(exc), severity="error", title="cannot delete")
                return
            self.notify(f"deleted “{title}”", title="history")
            self.reload()

        self.app.push_screen(
            ConfirmScreen(f"Delete “{title}”?", f"{row.messages} messages with {row.model}; no undo."),
            answered,
        )

    def action_export(self) -> None:
        """Write the selected conversation as Markdown to a file the user names."""
        conv_id = self._need_selection()
        if conv_id is None:
            return
        row = next(c for c in self.conversations if c.id == conv_id)
        default = export_name(row.title, conv_id)

        def chosen(path: str | None) -> None:
            if path:
                self.export_to(conv_id, path)

        self.app.push_screen(
            TextPromptScreen("Export as Markdown to:", default, ok="Export", placeholder="file name"), chosen
        )

    def export_to(self, conv_id: str, path_text: str, *, replace: bool = False) -> None:
        """Write the Markdown to ``path_text`` (relative to the current folder); asks before replacing a file."""
        path = Path(path_text).expanduser()
        if path.is_dir():
            path = path / export_name(next(c.title for c in self.conversations if c.id == conv_id), conv_id)
        if path.exists() and not replace:

            def answered(yes: bool | None) -> None:
                if yes:
                    self.export_to(conv_id, str(path), replace=True)

            self.app.push_screen(ConfirmScreen(f"Replace {path}?", "The file exists.", yes="Replace"), answered)
            return
        try:
            written = export_conversation(self.store.load(conv_id), path)
        except LLMSpellError as exc:
            self.notify(error_text(exc), severity="error", title="cannot export", markup=False)
            return
        self.notify(f"wrote {written}", title="exported", markup=False)

    def action_reload(self) -> None:
        """Read the history again."""
        self.reload()

    def system_commands(self) -> Iterable[SystemCommand]:
        """This screen's actions for the command palette."""
        yield SystemCommand("Open conversation (Enter)", "Continue the selected conversation", self.action_open)
        yield SystemCommand("Export conversation (e)", "Write it as Markdown to a file", self.action_export)
        yield SystemCommand("Delete conversation (d)", "Delete it from the history, after asking", self.action_delete)
        yield SystemCommand("Filter conversations (/)", "Type to narrow the list", self.action_focus_filter)
