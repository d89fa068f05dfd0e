"""Tools in the chat panes of the real app: each call is a collapsible block where it happened (the call, then how
it ended), the answer goes on below it, a side-effect tool asks first (Deny refuses, Allow runs), Escape while a
tool runs cancels it, F6 lists the tools and switches them off, and a reopened conversation shows its calls.

The model is smollm2 behind llama-cpp-python's own OpenAI server (a real engine with real tool calls); a forced
tool_choice and greedy sampling make the 135M model call deterministically, with Literal-typed arguments short
enough for a few tokens.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from helpers import press_now, until, wait_until
from peers import PEER_MODEL, LlamaCppServer, hub_on, llama_cpp_server, write_endpoints
from textual.pilot import Pilot
from textual.widgets import Switch

from llmspell.config import load_config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.tools import tool_from_function
from llmspell.types import Options
from llmspell_tui.app import LLMSpellApp, ToolOptions, create_app, main
from llmspell_tui.screens.chat import ChatScreen
from llmspell_tui.screens.history import HistoryScreen
from llmspell_tui.widgets.chat_answer import AnswerView
from llmspell_tui.widgets.pane import ChatPane
from llmspell_tui.widgets.tool_block import ToolBlock
from llmspell_tui.widgets.tools_modals import ToolConfirmScreen, ToolsScreen

PEER = f"{PEER_MODEL}@peer"
QUICK = Options(temperature=0.0, max_tokens=24, seed=7)


def get_weather(city: Literal["Paris", "Rome"]) -> str:
    """The weather now in a city.

    Args:
        city: the city's name
    """
    return f"sunny and 21 C in {city}"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    yield from llama_cpp_server(tmp_path_factory.mktemp("peer"))


@pytest.fixture
def hub(peer: LlamaCppServer) -> Hub:
    return hub_on(peer)


def tools_app(hub: Hub, tools: ToolOptions) -> LLMSpellApp:
    return create_app(hub, Store(), tools=tools)


async def ready_pane(pilot: Pilot[None]) -> tuple[ChatScreen, ChatPane]:
    """The chat screen once its tools are open, its pane on the peer's model with quick greedy answers."""
    app = pilot.app
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    await app.tools_ready()  # type: ignore[attr-defined]
    pane = screen.active_pane
    pane.conv.model = PEER
    pane.conv.options = QUICK
    return screen, pane


async def send(pilot: Pilot[None], screen: ChatScreen, text: str) -> None:
    screen.prompt.text = text
    press_now(pilot.app, "enter")
    await until(pilot, lambda: screen.generating, "the answer to start")


def title(block: ToolBlock) -> str:
    return str(block.query_one("CollapsibleTitle").render())


def ok(block: ToolBlock, call: str) -> bool:
    """Whether the block's title is ``call`` that ended well ("ok", and its time when it took a while)."""
    return re.fullmatch(re.escape(call) + r" · ok( · \d+\.\d\d s)?", block.title) is not None


def log_order(pane: ChatPane) -> list[str]:
    """What the pane's log holds, top to bottom: "user", "answer: TEXT", "tool: TITLE", "note"."""
    out = []
    for w in pane.log_view.children:
        if isinstance(w, ToolBlock):
            out.append(f"tool: {w.title}")
        elif isinstance(w, AnswerView):
            out.append(f"answer: {w.text}")
        else:
            out.append(next(iter(w.classes), ""))
    return out


async def test_a_call_is_a_block_where_it_happened_and_the_answer_follows_it(hub: Hub) -> None:
    gate = asyncio.Event()
    cities: list[str] = []

    async def weather(city: Literal["Paris", "Rome"]) -> str:
        """The weather now in a city."""
        cities.append(city)
        await gate.wait()  # the test holds the call running, to see the block say so
        return f"sunny and 21 C in {city}"

    app = tools_app(hub, ToolOptions(tool_choice="weather", functions=[weather]))
    async with app.run_test(size=(110, 36)) as pilot:
        screen, pane = await ready_pane(pilot)
        await send(pilot, screen, "What is the weather in Paris?")
        await until(pilot, lambda: pane.tool_blocks, "the call's block")
        (block,) = pane.tool_blocks
        await until(pilot, lambda: cities, "the tool to run")
        assert block.running and block.collapsed
        assert title(block).startswith('▶ weather({"city": "Paris"}) · ') and "running…" in title(block)

        gate.set()
        await until(pilot, lambda: not screen.generating, "the answer")
        assert ok(block, 'weather({"city": "Paris"})')
        stored = app.store.load(pane.conv.id)
        assert [e.role for e in stored.entries] == ["user", "assistant", "tool", "assistant"]
        final = stored.entries[-1].content
        assert final.strip() and pane.log_view.query(AnswerView).last().text == final
        # the block sits where the call happened: the final answer's text is below it, not above
        assert log_order(pane)[-2:] == [f"tool: {block.title}", f"answer: {final}"]
        # the body has the arguments and what the model was told
        block.collapsed = False
        await pilot.pause()
        body = str(block.query_one(".tool-body").render())
        assert '"city": "Paris"' in body and "sunny and 21 C in Paris" in body

        # reopened from the history: the same block, collapsed, between the question and the answer
        await pilot.press("ctrl+r")
        assert not pane.tool_blocks
        await pilot.press("f3")
        history = app.screen
        assert isinstance(history, HistoryScreen)
        await wait_until(pilot, lambda: history.table.row_count == 1, "the conversation listed")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "chat" and pane.conv.id == stored.id, "reopened")
        await wait_until(pilot, lambda: bool(pane.tool_blocks), "the stored block")
        (again,) = pane.tool_blocks
        assert again.collapsed and again.title == block.title
        assert log_order(pane) == ["user", f"tool: {again.title}", f"answer: {final}"]


async def test_a_side_effect_asks_first_deny_refuses_and_allow_writes(hub: Hub, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"

    def save_note(text: Literal["hello", "goodbye"]) -> str:
        """Save a note to the notebook."""
        note.write_text(text)
        return "saved"

    tools = ToolOptions(
        names=("list_directory",),
        root=tmp_path,
        tool_choice="save_note",
        max_steps=2,
        functions=[tool_from_function(save_note, side_effects=True)],
    )
    app = tools_app(hub, tools)
    async with app.run_test(size=(110, 36)) as pilot:
        screen, pane = await ready_pane(pilot)
        await send(pilot, screen, "Save a note saying hello.")
        await until(pilot, lambda: isinstance(app.screen, ToolConfirmScreen), "the question")
        dialog = app.screen
        assert isinstance(dialog, ToolConfirmScreen)
        assert dialog.tool == "save_note" and dialog.arguments == {"text": "hello"}
        assert '"text": "hello"' in dialog.detail and f"root: {tmp_path.resolve()}" in dialog.detail
        (block,) = pane.tool_blocks
        assert block.running, "the call waits for the answer"
        press_now(app, "escape")  # Escape is Deny
        await until(pilot, lambda: not screen.generating, "the answer after the refusal")
        assert block.title.startswith('save_note({"text": "hello"}) · refused')
        assert not note.exists()
        stored = app.store.load(pane.conv.id)
        assert next(e for e in stored.entries if e.role == "tool").tool["refused"] is True  # type: ignore[index]

        await send(pilot, screen, "Save a note saying hello.")
        await until(pilot, lambda: isinstance(app.screen, ToolConfirmScreen), "the question again")
        press_now(app, "a")
        await until(pilot, lambda: not screen.generating, "the answer after the call")
        assert note.read_text() == "hello"
        assert ok(pane.tool_blocks[-1], 'save_note({"text": "hello"})')


async def test_escape_while_a_tool_runs_cancels_it_and_the_block_says_so(hub: Hub) -> None:
    started = asyncio.Event()
    never = asyncio.Event()

    async def weather(city: Literal["Paris", "Rome"]) -> str:
        """The weather now in a city."""
        started.set()
        await never.wait()
        return "unreachable"

    app = tools_app(hub, ToolOptions(tool_choice="weather", functions=[weather]))
    async with app.run_test(size=(110, 36)) as pilot:
        screen, pane = await ready_pane(pilot)
        await send(pilot, screen, "What is the weather in Paris?")
        await until(pilot, started.is_set, "the tool to run")
        press_now(app, "escape")
        await until(pilot, lambda: not screen.generating, "the cancel")
        (block,) = pane.tool_blocks
        assert block.title == 'weather({"city": "Paris"}) · cancelled'
        stored = app.store.load(pane.conv.id)
        tool = next(e for e in stored.entries if e.role == "tool")
        assert tool.tool is not None and tool.tool["cancelled"] is True


async def test_f6_lists_the_tools_and_switches_them_off(peer: LlamaCppServer, tmp_path: Path) -> None:
    # the config's [tools] turns read_file on, as --tools would
    extra = f'[tools]\nenabled = ["read_file"]\nroot = "{tmp_path}"'
    write_endpoints(Path(os.environ["LLMSPELL_HOME"]), [{"name": "peer", "kind": "openai", "url": peer.url}], extra)
    hub = Hub(load_config())
    app = tools_app(hub, ToolOptions(tool_choice="get_weather", functions=[get_weather]))
    async with app.run_test(size=(110, 36)) as pilot:
        screen, pane = await ready_pane(pilot)
        await pilot.press("f6")
        await wait_until(pilot, lambda: isinstance(app.screen, ToolsScreen), "the tools screen")
        listing = app.screen
        assert isinstance(listing, ToolsScreen)
        assert listing.lines[0].startswith("read_file (built-in, runs without asking)")
        assert listing.lines[1].startswith("get_weather (python, runs without asking): The weather now in a city.")
        assert listing.lines[-1] == f"file tools confined to {tmp_path.resolve()}"
        switch = listing.query_one(Switch)
        assert switch.value is True
        await pilot.press("space", "escape")  # the switch has the focus
        await wait_until(pilot, lambda: app.screen is screen, "back to the chat")
        assert app.tools_on is False

        await send(pilot, screen, "What is the weather in Paris?")
        await until(pilot, lambda: not screen.generating, "a plain answer")
        assert not pane.tool_blocks
        assert [e.role for e in app.store.load(pane.conv.id).entries] == ["user", "assistant"]


def test_an_unknown_tool_name_is_refused_before_the_screen_opens(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tools", "read_file,teleport"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmspell-tui: no tool or MCP server named 'teleport' (built-ins: read_file,")
    assert err.endswith("MCP servers are [mcp.servers.NAME] tables in config.toml") and "Traceback" not in err
