"""End to end: the real embedded model streams into a chat pane of the real app, and the store keeps up."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Markdown

from llmspell.config import Config, history_path
from llmspell.hub import Hub
from llmspell.store import Store, StoreError
from llmspell.types import Options
from llmspell_tui.app import create_app
from llmspell_tui.screens.chat import ChatScreen


@pytest.fixture
def hub(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    """The real hub on the embedded engine."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    return Hub(Config(keep_alive=300, num_ctx=2048))


async def test_an_answer_streams_from_the_real_model_into_a_pane(hub: Hub) -> None:
    app = create_app(hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        pane = screen.active_pane
        pane.conv.options = Options(temperature=0, max_tokens=48)
        await pilot.press(*"Write a poem about the sea.")
        assert screen.prompt.text == "Write a poem about the sea."
        await pilot.press("enter")
        assert screen.prompt.text == "", "the prompt was taken"
        seen_partial: list[str] = []
        live_lines: list[str] = []
        for _ in range(6000):
            await pilot.pause(0.05)
            shown = [md.source for md in pane.log_view.query(Markdown)]
            if pane.streaming and shown and shown[-1]:
                seen_partial.append(shown[-1])
                live_lines.append(str(pane.stats_line.render()))
            if not screen.generating:
                break
        assert seen_partial, "text appeared in the pane while the answer was still streaming"
        assert any(line.startswith("TTFT ") and "tok/s" in line for line in live_lines), "live numbers"
        stored = app.store.load(pane.conv.id).entries[-1]
        final = pane.log_view.query(Markdown).last().source
        assert stored.state == "done" and final == stored.content == pane.answer_text
        assert all(final.startswith(p) for p in seen_partial), "streamed text only grew, and it all arrived"
        assert stored.stats is not None and str(pane.stats_line.render()) == stored.stats.summary()


async def test_the_answer_is_in_the_store_while_it_streams(hub: Hub) -> None:
    """A second reader of the history sees the prompt and the partial answer mid-stream (kill-safe)."""
    app = create_app(hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        pane = screen.active_pane
        pane.conv.options = Options(temperature=0, max_tokens=400)
        screen.prompt.text = "Write a very long story about a dragon, in many paragraphs."
        await pilot.press("enter")
        other = Store(history_path())
        partial = None
        for _ in range(6000):
            await pilot.pause(0.05)
            if not screen.generating:
                break
            try:
                entries = other.load(pane.conv.id).entries
            except StoreError:  # the conversation row is written with the first message
                continue
            if len(entries) == 2 and entries[1].content:
                partial = entries
                break
        assert partial is not None, "the partial answer reached the history file before the answer ended"
        assert partial[0].content.startswith("Write a very long story") and partial[1].state == "streaming"
        assert screen.generating
        await pilot.press("escape")
        for _ in range(2000):
            if not screen.generating:
                break
            await pilot.pause(0.05)
        assert other.load(pane.conv.id).entries[1].state == "cancelled"
        other.close()
