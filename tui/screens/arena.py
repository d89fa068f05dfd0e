"""The arena screen: blind rounds between two (up to four) models of a pool, a one-key vote, then the reveal.

Answers stream side by side under the letters A, B, ...; the models' names (and, by default, their speed,
which gives a model away) appear only after the vote. Keys: a / b / c / d vote for an answer, t a tie, x all
bad, s skips the round; Ctrl+L sets the pool, Ctrl+G tags the next votes, Ctrl+B opens the leaderboard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static
from textual.worker import Worker

from llmspell.arena import Arena, Round
from llmspell.compare import StreamMetrics
from llmspell.errors import LLMSpellError
from llmspell.session import error_text
from llmspell_tui.widgets.chat_answer import AnswerView
from llmspell_tui.widgets.modals import TextPromptScreen
from llmspell_tui.widgets.prompt import PromptArea, SendsPrompts
from llmspell_tui.widgets.status import BackendStatusBar, hold_status_checks

if TYPE_CHECKING:
    from llmspell.hub import Hub
    from llmspell.store import Store

#: how often streamed text is handed to the Markdown view (as in the chat panes)
FLUSH_EVERY = 0.1


class BlindAnswer(Vertical):
    """One answer of a round, titled only by its letter until the vote; then its model and speed."""

    DEFAULT_CSS = """
    BlindAnswer {
        width: 1fr;
        height: 1fr;
        border: round $panel-lighten-2;
        border-title-color: $text;
        border-title-style: bold;
    }
    BlindAnswer.-winner {
        border: round $success;
    }
    BlindAnswer > VerticalScroll {
        height: 1fr;
        padding: 0 1;
    }
    BlindAnswer > .stats {
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    """

    def __init__(self, letter: str, *, hide_stats: bool) -> None:
        super().__init__(id=f"answer-{letter.lower()}")
        self.letter = letter
        self.hide_stats = hide_stats
        self.border_title = letter
        self._pending = ""
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield AnswerView()
        yield Static("waiting…", classes="stats")

    @property
    def view(self) -> AnswerView:
        """The answer's text."""
        return self.query_one(AnswerView)

    @property
    def stats_line(self) -> Static:
        """The line under the answer: its progress, then (after the vote, or at once if allowed) its speed."""
        return self.query_one(".stats", Static)

    def on_mount(self) -> None:
        self._timer = self.set_interval(FLUSH_EVERY, self._flush)

    def feed(self, text: str, metrics: StreamMetrics) -> None:
        """Take a chunk of the answer (drawn at the next flush) and show how far it is."""
        self._pending += text
        if self.hide_stats:
            # not even the token count: it shows the tokenizer, and so the family
            self.stats_line.update("writing…" if metrics.chunks else "reading the prompt…")
        else:
            self.stats_line.update(metrics.live_summary())

    async def _flush(self) -> None:
        if self._pending:
            text, self._pending = self._pending, ""
            await self.view.write(text)
            self.query_one(VerticalScroll).scroll_end(animate=False)

    async def finish(self, metrics: StreamMetrics) -> None:
        """The answer ended: draw the rest and say how it ended (speed only when it may be shown)."""
        if self._timer is not None:
            self._timer.stop()
        rest, self._pending = self._pending, ""
        await self.view.finish(rest)
        if metrics.status == "error":
            self.stats_line.update(Text(f"failed: {metrics.error}"))  # a message is text, never markup
        elif metrics.status == "cancelled":
            self.stats_line.update("interrupted")
        elif self.hide_stats:
            self.stats_line.update("done")
        else:
            self.stats_line.update(metrics.live_summary())

    def reveal(self, label: str, metrics: StreamMetrics | None, *, chosen: bool) -> None:
        """After the vote: the model's name in the title, its speed under the answer."""
        self.border_title = escape(f"{self.letter} · {label}")
        self.set_class(chosen, "-winner")
        if chosen:
            self.border_subtitle = "your choice"
        if metrics is not None:
            self.stats_line.update(metrics.live_summary())


class ArenaScreen(SendsPrompts, Screen[None]):
    """Blind rounds: a prompt goes to models drawn from the pool, shown as A, B, ...; one key votes."""

    DEFAULT_CSS = """
    ArenaScreen {
        layout: vertical;
    }
    ArenaScreen > #arena-info {
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    ArenaScreen > #answers {
        height: 1fr;
    }
    ArenaScreen > #answers > #arena-empty {
        width: 1fr;
        padding: 1 2;
        color: $text-muted;
    }
    ArenaScreen > #vote-bar {
        height: 1;
        padding: 0 1;
        background: $accent 30%;
        display: none;
    }
    ArenaScreen > #vote-bar:focus {
        background: $accent 60%;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", key_display="esc"),
        Binding("a", "vote('a')", "A better", show=False),
        Binding("b", "vote('b')", "B better", show=False),
        Binding("c", "vote('c')", "C better", show=False),
        Binding("d", "vote('d')", "D better", show=False),
        Binding("t", "vote('tie')", "Tie", show=False),
        Binding("x", "vote('bad')", "Both bad", show=False),
        Binding("s", "skip", "Skip", show=False),
        Binding("ctrl+l", "pool", "Pool"),
        Binding("ctrl+g", "tag", "Tag"),
        Binding("ctrl+b", "leaderboard", "Leaderboard"),
    ]

    def __init__(self, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.arena: Arena | None = None
        #: the round on screen; it waits for its vote once every answer finished
        self.round: Round | None = None
        self.awaiting_vote = False
        self._generation: Worker[None] | None = None
        self._answers: list[BlindAnswer] = []

    @property
    def hub(self) -> Hub:
        """The app's hub (all backends)."""
        return self.app.hub  # type: ignore[attr-defined,no-any-return]

    @property
    def store(self) -> Store | None:
        """The app's store, where votes are kept."""
        return getattr(self.app, "store", None)

    @property
    def prompt(self) -> PromptArea:
        """The prompt input."""
        return self.query_one(PromptArea)

    @property
    def vote_bar(self) -> Static:
        """The line that asks for the vote; it has the focus while a round waits for one."""
        return self.query_one("#vote-bar", Static)

    @property
    def answers(self) -> list[BlindAnswer]:
        """The answers of the round on screen, in the order shown."""
        return list(self._answers)

    @property
    def generating(self) -> bool:
        """Whether a round's answers are streaming now."""
        return self._generation is not None and not self._generation.is_finished

    def compose(self) -> ComposeResult:
        # the status line's list of loaded models would say which models answer a round
        yield BackendStatusBar(show_loaded=False)
        yield Static("arena: choosing the pool…", id="arena-info")
        with Horizontal(id="answers"):
            yield Static(
                "Type a prompt: two models of the pool answer it as A and B, in a random order. Vote with a key "
                "(a, b, t tie, x both bad, s skip); only then are their names shown. Ctrl+L sets the pool, "
                "Ctrl+B shows the leaderboard.",
                id="arena-empty",
            )
        vote = Static("", id="vote-bar")
        vote.can_focus = True
        yield vote
        yield PromptArea(id="prompt", soft_wrap=True, show_line_numbers=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.arena = Arena(self.hub, self.store)
        self.prompt.focus()
        self.set_pool(None)

    # ----- the pool -----------------------------------------------------------------------------------

    @work(exclusive=True, group="pool", exit_on_error=False)
    async def set_pool(self, specs: list[str] | None) -> None:
        """Check and use ``specs`` (None: the config's pool, else every model here); a refusal keeps the old one."""
        assert self.arena is not None
        try:
            await self.arena.set_pool(specs)
        except LLMSpellError as exc:
            self.notify(error_text(exc), severity="error", title="arena pool", markup=False)
            if not self.arena.pool:
                self.query_one("#arena-info", Static).update("arena: no pool (Ctrl+L names the models)")
            return
        for spec, why in self.arena.skipped:
            self.notify(f"left out {spec}: {why}", severity="warning", markup=False)
        self._show_info()

    def _show_info(self) -> None:
        arena = self.arena
        if arena is None or not arena.pool:
            return
        names = ", ".join(c.label for c in arena.pool)
        tag = f" · tag: {arena.category}" if arena.category else ""
        # Text: a tag or a model name is shown as typed, never read as markup ("[/x]" would stop the app)
        self.query_one("#arena-info", Static).update(
            Text(f"pool ({len(arena.pool)}): {names} · {min(arena.size, len(arena.pool))} per round{tag}")
        )

    def action_pool(self) -> None:
        """Name the models rounds are drawn from."""
        current = " ".join(c.label for c in self.arena.pool) if self.arena else ""
        self.app.push_screen(
            TextPromptScreen(
                "Arena pool: models, separated by spaces", current, placeholder="smollm2:135m gemma3:270m"
            ),
            self._pool_named,
        )

    def _pool_named(self, text: str | None) -> None:
        if text:
            self.set_pool(text.split())

    def action_tag(self) -> None:
        """Tag the next votes with a category (empty: no tag), for per-category leaderboards."""
        current = (self.arena.category or "") if self.arena else ""
        self.app.push_screen(
            TextPromptScreen("Tag the next votes (empty: none)", current, placeholder="coding", empty_ok=True),
            self._tagged,
        )

    def _tagged(self, text: str | None) -> None:
        if text is None or self.arena is None:
            return
        self.arena.category = text or None
        self._show_info()

    def action_leaderboard(self) -> None:
        """Show the ratings made from every vote."""
        from llmspell_tui.screens.leaderboard import LeaderboardScreen

        self.app.push_screen(LeaderboardScreen())

    # ----- rounds -------------------------------------------------------------------------------------

    def empty_enter(self) -> None:
        """Enter on an empty prompt while a round waits for its vote goes to the vote bar."""
        if self.awaiting_vote:
            self.vote_bar.focus()

    def submit(self, text: str) -> bool:
        """Start a round for ``text``; False, with a note why, when it cannot start now."""
        if not text.strip():
            return False
        if self.generating:
            self.notify("the answers are still streaming: press Escape to stop them", severity="warning")
            return False
        if self.awaiting_vote:
            self.notify("vote first (a, b, t tie, x both bad) or press s to skip", severity="warning")
            self.vote_bar.focus()
            return False
        if self.arena is None or not self.arena.pool:
            self.notify("the arena has no pool yet: Ctrl+L names the models", severity="warning")
            return False
        try:
            round_ = self.arena.start(text)
        except LLMSpellError as exc:
            self.notify(error_text(exc), severity="error", markup=False)
            return False
        self.round = round_
        self._generation = self._play(round_)
        return True

    @work(group="generation", exit_on_error=False)
    async def _play(self, round_: Round) -> None:
        hide = self.hub.config.arena_hide_stats
        box = self.query_one("#answers", Horizontal)
        await box.remove_children()
        self._answers = [BlindAnswer(letter, hide_stats=hide) for letter in round_.letters]
        await box.mount_all(self._answers)
        self.vote_bar.display = False
        stream = round_.stream(self.hub, parallel=True)
        remote = [self.hub.backends.get(c.backend) for c in round_.contenders]
        held = hold_status_checks(self.app, any(b is not None and b.endpoint is not None for b in remote))
        try:
            with held:
                async for event in stream:
                    answer = self._answers[event.index]
                    answer.feed(event.text, event.metrics)
                    if event.kind in ("done", "error"):
                        await answer.finish(event.metrics)
        except asyncio.CancelledError:
            self.notify("stopped: a round with a stopped answer cannot be voted; send the prompt again", timeout=4)
            self.prompt.focus()
            raise
        finally:
            await stream.aclose()
            for answer, m in zip(self._answers, round_.metrics, strict=False):
                if m.status == "cancelled":
                    await answer.finish(m)
        self._ask_vote(round_)

    def _ask_vote(self, round_: Round) -> None:
        if self.arena is not None:
            for label, why in self.arena.take_dropped():
                self.notify(f"{label} {why}", severity="warning", markup=False)
        problem = round_.problem()
        if problem is not None:
            self.notify(problem, severity="warning", title="not votable", markup=False)
            self.prompt.focus()
            return
        self.awaiting_vote = True
        keys = " · ".join(f"{x.lower()}: {x} is better" for x in round_.letters)
        self.vote_bar.update(f"Which is better?  {keys} · t: tie · x: all bad · s: skip")
        self.vote_bar.display = True
        if self.prompt.text.strip():
            # the next prompt is being typed: its keys must not turn into a vote; Enter on an empty prompt or
            # Tab reaches the vote bar
            self.notify("both answers are in: vote with Tab, then a key", timeout=4)
        else:
            # after the refresh that shows the bar: a widget still hidden cannot take the focus
            self.call_after_refresh(self.vote_bar.focus)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The vote keys work only while a round waits for its vote, and never while the prompt is typed in."""
        if action in ("vote", "skip"):
            if not self.awaiting_vote or self.focused is self.prompt:
                return False
            if action == "vote" and parameters and parameters[0] in ("c", "d") and self.round is not None:
                return str(parameters[0]).upper() in self.round.letters
        return True

    async def action_vote(self, choice: str) -> None:
        """Record the vote for the waiting round, then show which model gave which answer."""
        round_ = self.round
        if self.arena is None or round_ is None or not self.awaiting_vote:
            return
        try:
            vote = self.arena.vote(round_, choice)
        except LLMSpellError as exc:
            self.notify(error_text(exc), severity="error", markup=False)
            return
        self.awaiting_vote = False
        for n, (answer, (_letter, label, metrics)) in enumerate(zip(self._answers, round_.reveal(), strict=True)):
            answer.reveal(label, metrics, chosen=vote.winner == n)
        self.vote_bar.display = False
        self.notify(f"vote saved: {vote.winner_text}", timeout=3)
        self.prompt.focus()

    def action_skip(self) -> None:
        """Drop the waiting round without a vote."""
        if not self.awaiting_vote:
            return
        self.awaiting_vote = False
        self.vote_bar.display = False
        self.notify("round dropped without a vote", timeout=3)
        self.prompt.focus()

    def action_cancel(self) -> None:
        """Stop the round's answers; a stopped round cannot be voted."""
        if self.generating and self._generation is not None:
            self._generation.cancel()
        elif self.focused is not self.prompt:
            self.prompt.focus()

    def system_commands(self) -> Iterable[SystemCommand]:
        """This screen's actions for the command palette."""
        yield SystemCommand("Arena pool (Ctrl+L)", "The models blind rounds are drawn from", self.action_pool)
        yield SystemCommand("Tag the next votes (Ctrl+G)", "A category for per-category ratings", self.action_tag)
        yield SystemCommand("Arena leaderboard (Ctrl+B)", "Ratings from every vote", self.action_leaderboard)
