"""Snapshots of the chat screen (scripted backend, so every pixel is repeatable; no timing text is shown)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from scripted import ScriptedBackend
from textual.pilot import Pilot

from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell_tui.app import create_app
from llmspell_tui.screens.chat import ChatScreen

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


def _app() -> Any:
    return create_app(Hub(Config(), backends=[ScriptedBackend()]), Store())


async def _settle(pilot: Pilot) -> ChatScreen:
    """Wait for the first status check and the model list, and stop the cursor blinking."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, ChatScreen)
    screen.prompt.cursor_blink = False
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
def test_two_panes_compared(snap_compare: Any, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot) -> None:
        await pilot.press("ctrl+n")
        screen = pilot.app.screen
        assert isinstance(screen, ChatScreen)
        pane = screen.panes[1]
        pane.model_input.value = "gemma3:270m"
        pane.model_input.focus()
        await pilot.press("enter")
        await pilot.press("ctrl+t")
        await _answer(pilot, "Compare yourselves.")

    assert snap_compare(_app(), terminal_size=size, run_before=_run(steps))


@pytest.mark.parametrize("size", SIZES)
def test_settings_form(snap_compare: Any, size: tuple[int, int]) -> None:
    async def steps(pilot: Pilot) -> None:
        await pilot.press("ctrl+o")
        await pilot.pause()
        form = pilot.app.screen
        for name, value in (("system", "You are terse."), ("opt-temperature", "0.2"), ("opt-seed", "42")):
            form.query_one(f"#{name}").value = value  # type: ignore[attr-defined]
        form.query_one("#opt-max_tokens").focus()
        for widget in form.query("Input"):
            widget.cursor_blink = False  # type: ignore[attr-defined]

    assert snap_compare(_app(), terminal_size=size, run_before=_run(steps))
