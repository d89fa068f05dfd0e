"""Snapshots of the model, info, pull and history screens at 80x24 and 160x48, from the scripted backend.

The scripted backend (tests/scripted.py) is here only so that pixels repeat; every screen shown here has
tests on the real engine in test_models_screen.py and test_history.py. Nothing in these screens shows a clock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scripted import ScriptedBackend
from textual.pilot import Pilot

from llmspell.backends.ollama import OllamaBackend
from llmspell.chat import Conversation, Entry
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.types import PullProgress
from llmspell_tui.app import LLMSpellApp, create_app
from llmspell_tui.widgets.models_modals import PullScreen

SIZES = [(80, 24), (160, 48)]
#: 2026-11-23 09:30 UTC and a day before: fixed, so the history's "Updated" column never changes
FIXED_TIMES = (1795426200.0, 1795339800.0)


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC while the test runs, so stored times print the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def scripted_app(tmp_path: Path, mode: str) -> LLMSpellApp:
    """The app over the scripted backend plus an Ollama backend on a port where nothing listens."""
    config = Config()
    hub = Hub(config, backends=[ScriptedBackend(), OllamaBackend(config, url="http://127.0.0.1:9")])
    app = create_app(hub, Store(tmp_path / "history.db"), mode=mode)
    # one status check, at mount, so the status bar cannot change while a slow run is being captured
    app.status_interval = 1e6
    return app


async def settle(pilot: Pilot[None]) -> None:
    """Wait for the status check and the listings, then for the screen to repaint."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_models_screen(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(scripted_app(tmp_path, "models"), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_info_dialog(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    async def open_info(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("down", "i")  # smollm2:135m, the second row sorted by backend then name
        await settle(pilot)

    assert snap_compare(scripted_app(tmp_path, "models"), terminal_size=size, run_before=open_info)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_pull_dialog_with_progress(snap_compare, tmp_path: Path, size: tuple[int, int]) -> None:
    async def pulling(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("p")
        await pilot.press(*"qwen2.5")
        pull = pilot.app.screen
        assert isinstance(pull, PullScreen)
        # one progress step, exactly as the pull worker would show it
        pull.show_progress(PullProgress("downloading", completed=196_560_000, total=491_400_000))
        await pilot.pause()

    assert snap_compare(scripted_app(tmp_path, "models"), terminal_size=size, run_before=pulling)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history_screen(snap_compare, tmp_path: Path, utc: None, size: tuple[int, int]) -> None:
    app = scripted_app(tmp_path, "history")
    store: Store = app.store
    for title, model, when in (
        ("Capital of France", "smollm2:135m", FIXED_TIMES[1]),
        ("Explain Python's sorted() with a key function", "gemma3:270m", FIXED_TIMES[0]),
    ):
        conv = Conversation(model, title=title)
        store.add(conv, Entry("user", title))
        store.add(conv, Entry("assistant", "An answer.", model=model))
        with sqlite3.connect(store.path) as db:
            db.execute("UPDATE conversations SET updated=? WHERE id=?", (when, conv.id))
    assert snap_compare(app, terminal_size=size, run_before=settle)
