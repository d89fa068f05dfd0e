"""Snapshots of the chat screen (scripted backend, so every pixel is repeatable; no timing text is shown)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from scripted import ScriptedBackend
from textual.pilot import Pilot
from textual.widgets import Input

from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell_tui.app import LIGHT_THEME, create_app
from llmspell_tui.screens.chat import ChatScreen
from llmspell_tui.widgets.settings import FIELDS, SettingsScreen

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


def _app() -> Any:
    app = create_app(Hub(Config(), backends=[ScriptedBackend()]), Store())
    # one status check, at mount: a second one during a slow run would turn "none loaded" into "loaded: ..."
    app.status_interval = 1e6
    return app


async def _until(pilot: Pilot, cond: Callable[[], object], what: str) -> None:
    """Let the app run until ``cond()`` holds (bounded: a hang fails instead of blocking)."""
    for _ in range(1000):
        if cond():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"gave up waiting for {what}")


async def _settle(pilot: Pilot) -> ChatScreen:
    """Wait for the first status check, the model list and the prompt's focus, then stop the cursor blinking."""
    await pilot.app.workers.wait_for_complete()
    screen = pilot.app.screen
    assert isinstance(screen, ChatScreen)
    # focus is set by a callback after mount: changing the cursor before it lands races with it
    await _until(pilot, lambda: screen.focused is screen.prompt, "the prompt's focus")
    screen.prompt.cursor_blink = False
    await pilot.pause()
    return screen


async def _answer(pilot: Pilot, text: str) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, ChatScreen)
    screen.prompt.text = text
    await pilot.press("enter")
    for _ in range(400):
        if not screen.generating:
            break
        await pilot.pause(0.01)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _run(steps: Callable[[Pilot], Awaitable[None]]) -> Callable[[Pilot], Awaitable[None]]:
    async def run_before(pilot: Pilot) -> None:
        await _settle(pilot)
        await steps(pilot)
        # let workers, the modal's fade-in and any other animation finish, so every run shows the same frame
        await pilot.app.workers.wait_for_complete()
        await pilot.app.animator.wait_until_complete()
        await pilot.pause(0.2)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_one_empty_pane(snap_compare: Any, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot) -> None:
        return None

    assert snap_compare(_app(), terminal_size=size, run_before=_run(steps))


@pytest.mark.parametrize("size", SIZES)
def test_one_pane_after_an_answer(snap_compare: Any, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot) -> None:
        await _answer(pilot, "Say something short.")

    assert snap_compare(_app(), terminal_size=size, run_before=_run(steps))


@pytest.mark.parametrize("size", SIZES)
def test_one_pane_after_an_answer_in_the_light_theme(snap_compare: Any, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot) -> None:
        await pilot.press("f4")
        assert pilot.app.theme == LIGHT_THEME
        await _answer(pilot, "Say something short.")

    assert snap_compare(_app(), terminal_size=size, run_before=_run(steps))


@pytest.mark.parametrize("size", SIZES)
def test_two_panes_compared(snap_compare: Any, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot) -> None:
        await pilot.press("ctrl+n")
        screen = pilot.app.screen
        assert isinstance(screen, ChatScreen)
        pane = screen.panes[1]
        await pilot.press("ctrl+l")  # the new pane's model picker
        await _until(pilot, lambda: screen.focused is pane.model_input, "the model picker's focus")
        pane.model_input.value = "gemma3:270m"
        await pilot.press("enter")
        await _until(pilot, lambda: screen.focused is screen.prompt, "the prompt's focus again")
        await pilot.press("ctrl+t")
        await _answer(pilot, "Compare yourselves.")

    assert snap_compare(_app(), terminal_size=size, run_before=_run(steps))


@pytest.mark.parametrize("size", SIZES)
def test_settings_form(snap_compare: Any, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot) -> None:
        await pilot.press("ctrl+o")
        await _until(pilot, lambda: isinstance(pilot.app.screen, SettingsScreen), "the settings form")
        form = pilot.app.screen
        await _until(pilot, lambda: form.focused is form.query_one("#system"), "the system prompt's focus")
        for widget in form.query(Input):
            widget.cursor_blink = False
        for name, value in (("system", "You are terse."), ("opt-temperature", "0.2"), ("opt-seed", "42")):
            form.query_one(f"#{name}", Input).value = value
        # from the system prompt through the options in the form's order to max_tokens, as a user moves
        await pilot.press(*["tab"] * (1 + [name for name, _ in FIELDS].index("max_tokens")))
        await _until(pilot, lambda: form.focused is form.query_one("#opt-max_tokens"), "max_tokens' focus")

    assert snap_compare(_app(), terminal_size=size, run_before=_run(steps))
