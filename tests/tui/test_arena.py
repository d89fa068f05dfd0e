"""The arena screen of the real app on the real models: letters until the vote key, names after it, the vote
stored; a stopped round is not votable; the leaderboard sorts and draws the intervals."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import GatedHub, notes, press_now, until
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.types import Options, Stats
from llmspell.votes import Answer, Vote
from llmspell_tui.app import create_app
from llmspell_tui.screens.arena import ArenaScreen
from llmspell_tui.screens.leaderboard import LeaderboardScreen

POOL = ("smollm2:135m", "gemma3:270m")
NAMES = ("smollm2", "gemma3")


def arena_config(**changes: object) -> Config:
    """Short, repeatable answers from the two bundled models."""
    base: dict[str, object] = {
        "keep_alive": 300,
        "num_ctx": 2048,
        "arena_pool": POOL,
        "options": Options(max_tokens=8, temperature=0),
    }
    return Config(**{**base, **changes})  # type: ignore[arg-type]


@pytest.fixture
def models_env(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled models, as the engine finds them."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    return shared_models


async def arena_ready(pilot: Pilot[None]) -> ArenaScreen:
    """The arena screen, once its pool of two models is checked."""
    screen = pilot.app.screen
    assert isinstance(screen, ArenaScreen)
    await until(pilot, lambda: screen.arena is not None and len(screen.arena.pool) == 2, "the pool")
    return screen


def shown(screen: ArenaScreen) -> str:
    """Everything the answers show: titles, subtitles, text and stats lines."""
    parts = []
    for a in screen.answers:
        parts += [str(a.border_title), str(a.border_subtitle or ""), a.view.text, str(a.stats_line.render())]
    return "\n".join(parts)


async def test_a_blind_round_shows_names_only_after_the_vote_key(models_env: Path) -> None:
    app = create_app(Hub(arena_config()), Store(), mode="arena")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await arena_ready(pilot)

        press_now(app, *"a")  # at the prompt, a key is a character of the prompt, never a vote
        await pilot.pause(0.05)
        assert screen.prompt.text == "a" and Store().votes() == []
        screen.prompt.clear()

        assert screen.send("Name a colour.")
        await until(pilot, lambda: screen.awaiting_vote, "the round to wait for its vote")
        before = shown(screen)
        assert [a.border_title for a in screen.answers] == ["A", "B"]
        assert not any(name in before for name in NAMES), "no model name before the vote"
        assert "tok/s" not in before and "TTFT" not in before, "speed would give the model away"
        assert screen.vote_bar.display
        await until(pilot, lambda: screen.focused is screen.vote_bar, "the vote bar to take the focus")

        assert not screen.send("Another one."), "a new prompt waits for the vote"
        await pilot.press("b")
        await until(pilot, lambda: not screen.awaiting_vote, "the vote")
        after = shown(screen)
        assert all(name in after for name in NAMES) and "tok/s" in after, "names and speed after the vote"
        assert screen.answers[1].has_class("-winner") and not screen.answers[0].has_class("-winner")
        votes = Store().votes()
        assert len(votes) == 1 and votes[0].winner == 1
        assert str(screen.answers[1].border_title).endswith(votes[0].answers[1].label)
        assert all(a.digest and a.quantization and a.stats for a in votes[0].answers)
        assert screen.focused is screen.prompt


async def test_a_stopped_round_cannot_be_voted(models_env: Path) -> None:
    hub = GatedHub(arena_config(options=Options(max_tokens=64, temperature=0)), free=1)
    app = create_app(hub, Store(), mode="arena")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await arena_ready(pilot)
        assert screen.send("Tell a long story.")
        await until(pilot, lambda: hub.waiting, "an answer held mid-stream")
        press_now(app, "escape")
        await until(pilot, lambda: not screen.generating, "the round to stop")
        hub.open()
        assert not screen.awaiting_vote and not screen.vote_bar.display
        assert "interrupted" in shown(screen)
        press_now(app, "b")
        await pilot.pause(0.05)
        assert Store().votes() == [], "nothing stored for a stopped round"
        assert not any(name in shown(screen) for name in NAMES), "a round not voted is never revealed"


def _vote(winner: int | str, a: str, b: str, category: str | None = None) -> Vote:
    stats = Stats(prompt_tokens=5, generated_tokens=20, time_to_first_token=0.05, generation_time=0.2)
    return Vote(
        "q",
        (Answer(a, "llamacpp", "Q4_K_M", "ab" * 32, "x", stats), Answer(b, "llamacpp", "Q4_0", None, "y", stats)),
        winner,
        category=category,
    )


async def test_the_leaderboard_sorts_and_draws_each_interval(models_env: Path) -> None:
    store = Store()
    for _ in range(6):
        store.add_vote(_vote(0, "alpha", "beta", "code"))
        store.add_vote(_vote(0, "beta", "gamma"))
        store.add_vote(_vote(0, "alpha", "gamma"))
    store.add_vote(_vote("tie", "gamma", "beta"))
    app = create_app(Hub(arena_config()), store, mode="arena")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("ctrl+b")
        board = app.screen
        assert isinstance(board, LeaderboardScreen)
        await until(pilot, lambda: board.table.row_count == 3, "the ratings")
        table: DataTable[str] = board.table

        def column(n: int) -> list[str]:
            return [str(table.get_row_at(i)[n]) for i in range(table.row_count)]

        assert column(1) == ["alpha@llamacpp", "beta@llamacpp", "gamma@llamacpp"], "best first"
        ratings = [int(x) for x in column(2)]
        assert ratings == sorted(ratings, reverse=True) and ratings[0] > 1000 > ratings[-1]
        assert column(4) == ["12", "13", "13"] and column(5)[2] == "0/12/1"
        plot = str(board.query_one("#board-plot", Static).render())
        assert plot.count("●") == 3 and plot.count("├") == 3, "one interval per model"

        await pilot.press("o")  # sort by the next column: interval width
        await pilot.press("o")  # then by votes, most first
        assert "sorted by votes" in str(board.query_one("#board-title", Static).render())
        assert column(4)[0] == "13"

        await pilot.press("g")  # the first category: only the votes tagged "code"
        await until(pilot, lambda: board.table.row_count == 2, "the category's board")
        assert "category 'code' · 6 votes" in str(board.query_one("#board-title", Static).render())
        await pilot.press("escape")
        assert isinstance(app.screen, ArenaScreen)


async def test_a_pool_of_one_model_is_refused_and_the_old_pool_stays(models_env: Path) -> None:
    app = create_app(Hub(arena_config()), Store(), mode="arena")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await arena_ready(pilot)
        await pilot.press("ctrl+l")
        pool_input = app.screen.query_one("#answer")
        pool_input.value = "smollm2 smollm2:135m nosuch:1b"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: any("at least two" in n for n in notes(app)), "the refusal")
        assert screen.arena is not None and len(screen.arena.pool) == 2


async def test_typing_the_next_prompt_never_turns_into_a_vote(models_env: Path) -> None:
    hub = GatedHub(arena_config(), free=1)
    app = create_app(hub, Store(), mode="arena")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await arena_ready(pilot)
        assert screen.send("Name a colour.")
        await until(pilot, lambda: hub.waiting, "an answer held mid-stream")
        press_now(app, *"what is bes")  # the user starts the next prompt while the answers are still coming
        hub.open()
        await until(pilot, lambda: screen.awaiting_vote, "the round to wait for its vote")
        assert "loaded" not in app.screen.query_one("BackendStatusBar").text, "which models are loaded is not said"
        assert screen.focused is screen.prompt, "the focus stays where the user types"
        press_now(app, *"t")
        await pilot.pause(0.05)
        assert screen.prompt.text.endswith("best") and Store().votes() == [], "a t in a prompt is a t, not a tie"
        screen.prompt.clear()
        press_now(app, "enter")  # Enter on an empty prompt goes to the vote
        await until(pilot, lambda: screen.focused is screen.vote_bar, "the vote bar")
        press_now(app, "x")
        await until(pilot, lambda: not screen.awaiting_vote, "the vote")
        assert [v.winner for v in Store().votes()] == ["bad"]


async def test_a_tag_with_markup_is_shown_as_typed(models_env: Path) -> None:
    store = Store()
    store.add_vote(_vote(0, "a[b]", "c", "[/x]"))
    app = create_app(Hub(arena_config()), store, mode="arena")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await arena_ready(pilot)
        await pilot.press("ctrl+g")
        app.screen.query_one("#answer").value = "[/x]"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: screen.arena is not None and screen.arena.category == "[/x]", "the tag")
        assert "tag: [/x]" in str(screen.query_one("#arena-info", Static).render())
        await pilot.press("ctrl+b")
        board = app.screen
        assert isinstance(board, LeaderboardScreen)
        await until(pilot, lambda: board.table.row_count == 2, "the ratings")
        await pilot.press("g")
        await until(pilot, lambda: "[/x]" in str(board.query_one("#board-title", Static).render()), "the category")
        assert str(board.table.get_row_at(0)[1]) == "a[b]@llamacpp", "a name with brackets is shown as it is"
