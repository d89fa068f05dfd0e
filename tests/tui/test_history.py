"""The history screen on a real SQLite store: list, filter, reopen in the chat screen, export, delete."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import notes, wait_until
from textual.pilot import Pilot
from textual.widgets import Input

from llmspell.chat import Conversation, Entry
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell_tui.app import create_app
from llmspell_tui.screens.history import HistoryScreen, export_name
from llmspell_tui.widgets.modals import ConfirmScreen, TextPromptScreen


def conversation(store: Store, title: str, model: str, turns: list[tuple[str, str]]) -> Conversation:
    """A stored conversation with the given user/assistant turns."""
    conv = Conversation(model, system="Be brief.", title=title)
    for question, answer in turns:
        store.add(conv, Entry("user", question))
        store.add(conv, Entry("assistant", answer, model=model))
    return conv


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "history.db")
    return s


@pytest.fixture
def convs(store: Store) -> list[Conversation]:
    a = conversation(store, "Capital of France", "smollm2:135m", [("Capital of France?", "Paris.")])
    b = conversation(
        store, "Sorting in Python", "gemma3:270m", [("How to sort?", "Use sorted()."), ("Reverse?", "reverse=True")]
    )
    return [a, b]


async def history(pilot: Pilot[None]) -> HistoryScreen:
    screen = pilot.app.screen
    assert isinstance(screen, HistoryScreen)
    await wait_until(pilot, lambda: screen.table.row_count == len(screen.conversations), "history listed")
    return screen


async def test_lists_newest_first_and_filters(store: Store, convs: list[Conversation]) -> None:
    app = create_app(Hub(Config()), store, mode="history")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await history(pilot)
        assert screen.titles() == ["Sorting in Python", "Capital of France"]
        row = screen.table.get_row_at(0)
        assert row[1] == "gemma3:270m" and row[3] == "4"
        assert str(screen.query_one("#history-count").content) == "2 conversations"  # type: ignore[attr-defined]
        await pilot.press("slash", "s", "m", "o", "l")
        assert screen.titles() == ["Capital of France"]
        assert str(screen.query_one("#history-count").content) == "1 of 2 conversations"  # type: ignore[attr-defined]


async def test_empty_history_says_how_to_fill_it(store: Store) -> None:
    app = create_app(Hub(Config()), store, mode="history")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await history(pilot)
        empty = screen.query_one("#history-empty")
        assert empty.display and "chat screen (F1)" in str(empty.content)  # type: ignore[attr-defined]
        await pilot.press("e")
        assert "no conversation is selected" in notes(app)


async def test_open_switches_to_chat_with_the_conversation(
    store: Store, convs: list[Conversation], shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    app = create_app(Hub(Config()), store, mode="history")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await history(pilot)
        screen.table.move_cursor(row=1)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "chat", "chat mode")
        chat = app.screen
        pane = chat.active_pane  # type: ignore[attr-defined]
        await wait_until(pilot, lambda: pane.conv.id == convs[0].id, "conversation opened in the pane")
        assert [e.content for e in pane.conv.entries] == ["Capital of France?", "Paris."]
        # back to the history: still there, nothing lost
        await pilot.press("f3")
        assert app.screen is screen and screen.titles() == ["Sorting in Python", "Capital of France"]


async def test_delete_asks_and_no_keeps_it(store: Store, convs: list[Conversation]) -> None:
    app = create_app(Hub(Config()), store, mode="history")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await history(pilot)
        await pilot.press("d")
        confirm = app.screen
        assert isinstance(confirm, ConfirmScreen) and "Sorting in Python" in confirm.question
        await pilot.press("escape")
        assert len(store.list()) == 2 and screen.titles()[0] == "Sorting in Python"
        await pilot.press("d", "n")
        assert len(store.list()) == 2
        await pilot.press("d", "y")
        await wait_until(pilot, lambda: screen.titles() == ["Capital of France"], "row gone")
        assert [c.id for c in store.list()] == [convs[0].id]


async def test_export_writes_the_markdown_and_asks_before_replacing(
    store: Store, convs: list[Conversation], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app(Hub(Config()), store, mode="history")
    async with app.run_test(size=(100, 30)) as pilot:
        await history(pilot)
        await pilot.press("e")
        prompt = app.screen
        assert isinstance(prompt, TextPromptScreen)
        default = export_name("Sorting in Python", convs[1].id)
        assert prompt.query_one(Input).value == default == f"sorting-in-python-{convs[1].id[:6]}.md"
        await pilot.press("enter")  # the default name, in the current folder
        written = tmp_path / default
        await wait_until(pilot, written.exists, "file written")
        assert written.read_text() == store.load(convs[1].id).to_markdown()
        assert "## You" in written.read_text() and "reverse=True" in written.read_text()
        assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"

        # the same name again: asks, and "no" leaves the file as it was
        written.write_text("my notes")
        await pilot.press("e", "enter")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert written.read_text() == "my notes"
        await pilot.press("e", "enter", "y")
        await wait_until(pilot, lambda: written.read_text() != "my notes", "replaced")
        assert written.read_text() == store.load(convs[1].id).to_markdown()

        # a folder that does not exist: one clear line, nothing written
        await pilot.press("e")
        app.screen.query_one(Input).value = str(tmp_path / "missing" / "x.md")
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("cannot write" in n for n in notes(app)), "error shown")
        assert any("No such file or directory" in n for n in notes(app))
        assert not (tmp_path / "missing").exists()


async def test_export_to_an_unwritable_place_says_why(
    store: Store, convs: list[Conversation], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    blocker = out / "notes.txt"  # a file where the path needs a folder: no user, root included, can write below it
    blocker.write_text("keep me")
    app = create_app(Hub(Config()), store, mode="history")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await history(pilot)
        await pilot.press("e")
        assert isinstance(app.screen, TextPromptScreen)
        app.screen.query_one(Input).value = str(blocker / "chat.md")
        await pilot.press("enter")
        await wait_until(pilot, lambda: any("cannot write" in n for n in notes(app)), "error shown")
        [error] = [n for n in notes(app) if "cannot write" in n]
        assert (
            error
            == f"cannot write {blocker / 'chat.md'}: Not a directory; check that the folder exists and is writable"
        )
        assert blocker.read_text() == "keep me" and [p.name for p in out.iterdir()] == ["notes.txt"]
        assert app.screen is screen and app.is_running, "the screen goes on"


async def test_a_damaged_history_is_a_notice_and_the_app_stays(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = Store(path)
    for n in range(60):
        conversation(store, f"talk {n}", "smollm2:135m", [("question " + "words " * 200, "answer")])
    store.close()
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 12] = b"\xde\xad\xbe\xef" * (4096 * 10 // 4)  # pages past the header overwritten
    path.write_bytes(bytes(data))
    app = create_app(Hub(Config()), Store(path), mode="history")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: any("cannot be read" in n for n in notes(app)), "the notice")
        assert app.is_running and isinstance(app.screen, HistoryScreen) and app.screen.conversations == []
        await pilot.press("f1")  # the other screens still work
        assert app.current_mode == "chat"
