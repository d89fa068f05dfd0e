"""End to end: the real embedded model streams into a chat pane of the real app, and the store keeps up.

In process, answers pass ``GatedHub``'s gate (the real hub and engine; the test decides when chunks may go on),
so "while it streams" is a state the test holds rather than a race against a fast model; keys go in with
``press_now``, since Pilot's ``press`` waits for an idle process and a generating engine never is one. The
last test runs the installed ``llmspell-tui`` in a terminal and kills it mid-answer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pexpect
import pytest
from helpers import GatedHub, press_now, until
from textual.widgets import Static

from llmspell.config import Config, config_path, history_path
from llmspell.hub import Hub
from llmspell.store import Store, StoreError
from llmspell.types import Options
from llmspell_tui.app import create_app
from llmspell_tui.screens.chat import ChatScreen
from llmspell_tui.widgets.chat_answer import AnswerView
from llmspell_tui.widgets.pane import ChatPane


@pytest.fixture
def gated_hub(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> GatedHub:
    """The real hub on the embedded engine, behind a closed gate."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    return GatedHub(Config(keep_alive=300, num_ctx=2048))


async def test_an_answer_streams_from_the_real_model_into_a_pane(
    gated_hub: GatedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders: list[tuple[bool, str, str]] = []  # after each flush: still streaming?, the answer shown, the stats line
    flush = ChatPane._flush

    async def recording_flush(self: ChatPane) -> None:
        await flush(self)
        views = self.log_view.query(AnswerView)
        shown = "".join(views.last().sources) if views else ""
        renders.append((self.streaming, shown, str(self.stats_line.render())))

    monkeypatch.setattr(ChatPane, "_flush", recording_flush)
    gated_hub.allow(5)
    app = create_app(gated_hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        pane = screen.active_pane
        pane.conv.options = Options(temperature=0, max_tokens=48)
        await pilot.press(*"Write a poem about the sea.")  # nothing generates yet: Pilot's own keys are fine
        assert screen.prompt.text == "Write a poem about the sea."
        press_now(app, "enter")
        await until(pilot, lambda: any(streaming and shown for streaming, shown, _ in renders), "a partial render")
        assert screen.prompt.text == "", "the prompt was taken"
        gated_hub.open()
        await until(pilot, lambda: not screen.generating, "the whole answer")
        await pilot.pause(0.01)
        stored = app.store.load(pane.conv.id).entries[-1]
        final = "".join(pane.log_view.query(AnswerView).last().sources)
        assert stored.state == "done" and final == stored.content == pane.answer_text
        partial = [shown for streaming, shown, _ in renders if streaming]
        assert any(0 < len(p) < len(final) for p in partial), "part of the answer was on screen before its end"
        assert all(final.startswith(p) for p in partial), "each render showed a beginning of the final answer"
        assert [len(p) for p in partial] == sorted(len(p) for p in partial), "streamed text only grew"
        live = [line for streaming, shown, line in renders if streaming and shown]
        assert any(line.startswith("TTFT ") and "tok/s" in line for line in live), "live numbers while streaming"
        assert stored.stats is not None and str(pane.stats_line.render()) == stored.stats.summary()


async def test_the_engine_leaves_a_pane_a_core_while_it_draws(gated_hub: GatedHub) -> None:
    """Each live render of a pane asks the in-process engine for a core: drawn during a decode that runs a
    thread on every core, a frame stalls the engine's threads at their next barrier."""
    backend = gated_hub.backends["llamacpp"]
    if backend.budget.total < 2:  # type: ignore[attr-defined]
        pytest.skip("one core only: the engine runs one thread and has nothing to leave")
    granted: list[bool] = []
    room = gated_hub.room_to_draw

    @contextlib.asynccontextmanager
    async def recording_room() -> AsyncIterator[bool]:
        async with room() as held:
            granted.append(held)
            yield held

    gated_hub.room_to_draw = recording_room  # type: ignore[method-assign]
    gated_hub.open()
    app = create_app(gated_hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        screen.active_pane.conv.options = Options(temperature=0, max_tokens=200)
        screen.prompt.text = "Write a long story about a dragon who learns to paint."
        press_now(app, "enter")
        await until(pilot, lambda: screen.generating, "the answer to start")
        await until(pilot, lambda: not screen.generating, "the whole answer")
        worker = backend.worker_for("smollm2:135m")  # type: ignore[attr-defined]
    assert True in granted, f"no live render was given a core: {granted}"
    total = backend.budget.total  # type: ignore[attr-defined]
    assert total - 1 in worker.report.threads_used, f"the engine never stepped aside: {worker.report.threads_used}"


async def test_the_answer_is_in_the_store_while_it_streams(gated_hub: GatedHub) -> None:
    """A second reader of the history sees the prompt and the partial answer mid-stream (kill-safe)."""
    gated_hub.allow(1)
    app = create_app(gated_hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        pane = screen.active_pane
        pane.conv.options = Options(temperature=0, max_tokens=400)
        screen.prompt.text = "Write a very long story about a dragon, in many paragraphs."
        press_now(app, "enter")
        other = Store(history_path())
        partial = None
        # one more chunk at a time, until the writer's next periodic save has put some text in the file
        for _ in range(24000):
            await pilot.pause(0.01)
            try:
                entries = other.load(pane.conv.id).entries
            except StoreError:  # the conversation row is written with the first message
                continue
            if len(entries) == 2 and entries[1].content:
                partial = entries
                break
            if gated_hub.waiting:
                gated_hub.allow(1)
        assert partial is not None, "the partial answer reached the history file before the answer ended"
        assert partial[0].content.startswith("Write a very long story") and partial[1].state == "streaming"
        assert screen.generating and pane.streaming
        press_now(app, "escape")
        await until(pilot, lambda: not screen.generating, "the cancel")
        assert other.load(pane.conv.id).entries[1].state == "cancelled"
        other.close()


# an answer that cannot end early: llama.cpp's grammar allows no end of text before 400 items (booleans: an
# array of integers is allowed too, but its grammar makes the sampler take seconds per token)
_ENDLESS_OPTIONS = """[options]
temperature = 0
max_tokens = 2000
format = { type = "array", items = { type = "boolean" }, minItems = 400 }
"""


def _answer_rows(path: Path) -> list[tuple[str, str, str]]:
    """(role, content, state) of every stored message, read the way another process would."""
    if not path.exists():
        return []
    with sqlite3.connect(path, timeout=5) as db:
        try:
            return list(db.execute("SELECT role, content, state FROM messages ORDER BY id"))
        except sqlite3.OperationalError:  # the tables are created as the app starts
            return []


async def test_a_killed_app_keeps_the_prompt_and_the_partial_answer(shared_models: Path) -> None:
    """SIGKILL the real llmspell-tui mid-answer: the history has the prompt and the partial answer, unfinished."""
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text(_ENDLESS_OPTIONS, encoding="utf-8")
    env = {**os.environ, "LLMSPELL_MODELS": str(shared_models), "TERM": "xterm-256color", "COLUMNS": "100"}
    script = Path(sys.executable).with_name("llmspell-tui")
    child = pexpect.spawn(str(script), env=env, dimensions=(30, 100), encoding="utf-8", timeout=60)
    seen: list[tuple[str, str, str]] = []
    try:
        # the first status check has answered: the screen is up and the prompt has had its focus for a while
        child.expect("none loaded")
        child.send("Count from one.")
        child.expect("Count from one.")  # typed into the prompt, not lost
        child.send("\r")
        for _ in range(6000):
            try:  # keep reading the screen: a full terminal buffer would stall the app
                child.read_nonblocking(1 << 16, timeout=0.05)
            except pexpect.TIMEOUT:
                pass
            seen = _answer_rows(history_path())
            if len(seen) == 2 and seen[1][1]:
                break
        assert len(seen) == 2 and seen[1][1], "the answer was being written to the history"
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.isalive():
            child.kill(signal.SIGKILL)
    assert child.signalstatus == signal.SIGKILL

    store = Store(history_path())
    [row] = store.list()
    conv = store.load(row.id)
    user, answer = conv.entries
    assert user.role == "user" and user.content == "Count from one."
    assert answer.role == "assistant" and answer.state == "streaming", "marked unfinished"
    assert answer.content.startswith(seen[1][1]) and answer.content.startswith("["), "the partial answer is kept"
    # the next start shows it so
    app = create_app(Hub(Config()), store)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        await screen.open_conversation(conv.id)
        pane = screen.active_pane
        await until(pilot, lambda: pane.conv.id == conv.id, "the conversation reopened")
        notes = [str(w.render()) for w in pane.log_view.query("Static.note").results(Static)]
        assert notes == ["(unfinished)"] and pane.log_view.query_one(AnswerView).text == answer.content
