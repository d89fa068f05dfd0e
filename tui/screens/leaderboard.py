"""The leaderboard: every voted model's rating with its 95% interval, votes and speed, sortable, with the
intervals drawn under the table on one shared scale."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from llmspell.arena import board
from llmspell.ratings import Standing, interval_bars

if TYPE_CHECKING:
    from llmspell.store import Store

#: the table's columns: heading, and how a row sorts by it (ascending; the screen reverses where more is better)
COLUMNS: tuple[tuple[str, Callable[[Standing], Any], bool], ...] = (
    ("#", lambda s: s.rank, False),
    ("model", lambda s: s.model.casefold(), False),
    ("rating", lambda s: s.rating, True),
    ("95% interval", lambda s: s.high - s.low, False),
    ("votes", lambda s: s.votes, True),
    ("W/L/T", lambda s: s.win_rate, True),
    ("tok/s", lambda s: s.tokens_per_s or 0.0, True),
    ("TTFT", lambda s: s.ttft if s.ttft is not None else float("inf"), False),
)


def row_of(s: Standing) -> tuple[str, ...]:
    """One model's cells, as the table shows them."""
    return (
        str(s.rank),
        s.model,
        f"{s.rating:.0f}",
        f"{s.low:.0f} – {s.high:.0f}",
        str(s.votes),
        f"{s.wins}/{s.losses}/{s.ties}",
        "–" if s.tokens_per_s is None else f"{s.tokens_per_s:.1f}",
        "–" if s.ttft is None else f"{s.ttft * 1000:.0f} ms",
    )


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
    def table(self) -> DataTable[str]:
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

        votes = await asyncio.to_thread(self.store.votes, self.category)
        self.standings = await asyncio.to_thread(board, votes)
        self.votes = len(votes)
        self._draw()

    def _draw(self) -> None:
        name, key, descending = COLUMNS[self.sort_column]
        ordered = sorted(self.standings, key=key, reverse=descending)
        self.table.clear()
        for s in ordered:
            self.table.add_row(*row_of(s), key=s.model)
        where = f"category {self.category!r}" if self.category else "all votes"
        self.query_one("#board-title", Static).update(
            f"leaderboard · {where} · {self.votes} vote{'s' if self.votes != 1 else ''} · sorted by {name}"
        )
        plot = self.query_one("#board-plot", Static)
        if not self.standings:
            plot.update("no votes yet: vote in the arena (F5), then come back")
            return
        width = max(20, self.size.width - max(len(s.model) for s in ordered) - 6)
        bars, axis = interval_bars(ordered, width)
        pad = max(len(s.model) for s in ordered)
        lines = [f"{s.model.ljust(pad)}  {bar}" for s, bar in zip(ordered, bars, strict=True)]
        plot.update("\n".join([*lines, f"{''.ljust(pad)}  {axis}"]))

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
