"""The placeholder llmspell-tui screen under App.run_test(): backend status and the model table."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from llmspell.config import Config
from llmspell.hub import Hub
from llmspell_tui.app import create_app


async def test_app_shows_backends_and_models(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    app = create_app(Hub(Config()))
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        status = str(app.query_one("#status", Static).render())
        assert "llamacpp" in status and "ollama" in status and "not reachable" in status
        table = app.query_one(DataTable)
        names = {table.get_row_at(i)[0] for i in range(table.row_count)}
        assert {"smollm2:135m", "gemma3:270m"} <= names
        await pilot.press("r")
        await app.workers.wait_for_complete()
        assert app.query_one(DataTable).row_count == table.row_count
