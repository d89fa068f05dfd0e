"""The leaderboard: every voted model's rating with its 95% interval, votes and speed, sortable, with the
intervals drawn under the table on one shared scale."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from llmspell.arena import BOARD_HEADERS, board_rows, load_board
from llmspell.ratings import Standing, interval_bars

if TYPE_CHECKING:
    from llmspell.store import Store

#: how a row sorts by each column of BOARD_HEADERS, and whether more comes first (higher rating, more votes)
_SORTS: tuple[tuple[Callable[[Standing], Any], bool], ...] = (
    (lambda s: s.rank, False),
    (lambda s: s.model.casefold(), False),
    (lambda s: s.rating, True),
    (lambda s: s.high - s.low, False),
    (lambda s: s.votes, True),
    (lambda s: s.win_rate, True),
    (lambda s: s.tokens_per_s or 0.0, True),
    (lambda s: s.ttft if s.ttft is not None else float("inf"), False),
)
#: the table's columns: heading, sort key, most first
COLUMNS = tuple((name, key, most) for name, (key, most) in zip(BOARD_HEADERS, _SORTS, strict=True))


class LeaderboardScreen(Screen[None]):
    """Ratings from every vote (or one category's); a column heading, or the sort key, orders the table."""

    DEFAULT_CSS = """
    LeaderboardScreen > #board-title {
        height: 1;
        padding: 0 1;
        text-style: bold;
    }
    LeaderboardScreen > DataTable {
        height: auto;
        max-height: 60%;
    }
    LeaderboardScreen > #board-plot {
        height: auto;
        padding: 1 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Back"),
        Binding("o", "sort_next", "Sort"),
        Binding("g", "next_category", "Category"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.standings: list[Standing] = []
        #: the column the table is sorted by
        self.sort_column = 2
        self.category: str | None = None
        self.votes = 0

    @property
    def store(self) -> Store:
        """The app's store, where the votes are."""
        return self.app.store  # type: ignore[attr-defined,no-any-return]

    @property
    def table(self) -> DataTable[Text]:
        """The ratings table."""
        return self.query_one(DataTable)

    def compose(self) -> ComposeResult:
        yield Static("leaderboard", id="board-title")
        yield DataTable(cursor_type="row", zebra_stripes=True)
        yield Static("", id="board-plot")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.table.add_columns(*(name for name, _, _ in COLUMNS))
        self.table.focus()
        self.action_reload()

    @work(exclusive=True, group="board", exit_on_error=False)
    async def action_reload(self) -> None:
        """Read the votes again and refit (off the screen's thread: the bootstrap refits 200 times)."""
        import asyncio

        self.votes, self.standings = await asyncio.to_thread(load_board, self.store, self.category)
        self._draw()

    def _draw(self) -> None:
        name, key, descending = COLUMNS[self.sort_column]
        ordered = sorted(self.standings, key=key, reverse=descending)
        self.table.clear()
        for s, cells in zip(ordered, board_rows(ordered), strict=True):
            # Text cells: a model name or an imported category is shown as it is, never read as markup
            self.table.add_row(*(Text(c) for c in cells), key=s.model)
        where = f"category {self.category!r}" if self.category else "all votes"
        self.query_one("#board-title", Static).update(
            Text(f"leaderboard · {where} · {self.votes} vote{'s' if self.votes != 1 else ''} · sorted by {name}")
        )
        plot = self.query_one("#board-plot", Static)
        if not self.standings:
            plot.update("no votes yet: vote in the arena (F5), then come back")
            return
        width = max(20, self.size.width - max(len(s.model) for s in ordered) - 6)
        bars, axis = interval_bars(ordered, width)
        pad = max(len(s.model) for s in ordered)
        lines = [f"{s.model.ljust(pad)}  {bar}" for s, bar in zip(ordered, bars, strict=True)]
        note = "tok/s and TTFT: medians over the answers that ran alone (not side by side)"
        plot.update(Text("\n".join([*lines, f"{''.ljust(pad)}  {axis}", "", note])))

    def action_sort_next(self) -> None:
        """Sort by the next column."""
        self.sort_column = (self.sort_column + 1) % len(COLUMNS)
        self._draw()

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        self.sort_column = event.column_index
        self._draw()

    def action_next_category(self) -> None:
        """Show the next category's board (all votes, then each tag in turn)."""
        tags: list[str | None] = [None, *self.store.categories()]
        self.category = tags[(tags.index(self.category) + 1) % len(tags)] if self.category in tags else None
        self.action_reload()

    def action_close(self) -> None:
        """Back to where the leaderboard was opened from."""
        self.dismiss()
