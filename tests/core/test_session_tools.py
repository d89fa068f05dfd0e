"""Tools behind the Session every face drives: a turn that calls tools streams like any other, tells the face each
call and result as it happens, and leaves every step in the conversation and the store (calls, results, timings,
refusals, cancels), so a reopened conversation goes on with the model seeing what its tools said.

The model is smollm2 behind llama-cpp-python's own OpenAI server (a real engine with real tool calls; a forced
tool_choice makes a 135M model call deterministically)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from peers import PEER_MODEL, LlamaCppServer, hub_on, llama_cpp_server

from llmspell.chat import Conversation
from llmspell.config import load_config
from llmspell.errors import ToolError
from llmspell.hub import Hub
from llmspell.session import Session, export_conversation
from llmspell.store import SCHEMA_VERSION, Store
from llmspell.tools import Tool, ToolRegistry, tool_from_function
from llmspell.tools.loop import LoopEvent, StepEnd, ToolCallEvent, ToolResultEvent
from llmspell.tools.toolset import ToolSet, call_line, result_line
from llmspell.types import Options

PEER = f"{PEER_MODEL}@peer"
QUICK = Options(temperature=0.0, max_tokens=24, seed=7)


def get_weather(city: str) -> str:
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


def session_with(hub: Hub, tools: list[Tool], events: list[LoopEvent], **kwargs: object) -> Session:
    session = Session(hub, Store(), Conversation(PEER, options=QUICK))
    session.use_tools(ToolRegistry(tools), on_event=events.append, **kwargs)  # type: ignore[arg-type]
    return session


async def run_turn(session: Session, text: str) -> tuple[str, object]:
    turn = session.send(text)
    parts: list[str] = []
    async with contextlib.aclosing(turn):
        async for chunk in turn:
            parts.append(chunk.text)
    return "".join(parts), session.result(turn)


async def test_a_tool_turn_streams_tells_each_step_and_stores_every_message(hub: Hub) -> None:
    events: list[LoopEvent] = []
    session = session_with(hub, [tool_from_function(get_weather)], events, tool_choice="get_weather")
    text, result = await run_turn(session, "What is the weather in Paris?")

    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["StepEnd", "ToolCallEvent", "ToolResultEvent"] and kinds[-1] == "StepEnd"
    call = next(e for e in events if isinstance(e, ToolCallEvent)).call
    told = next(e for e in events if isinstance(e, ToolResultEvent)).result
    assert call.name == "get_weather" and told.ok and told.content.startswith("sunny and 21 C in")
    assert result.state == "done" and result.stats is not None and result.text.strip()  # type: ignore[attr-defined]
    assert text.endswith(result.text)  # type: ignore[attr-defined]

    conv = session.conv
    assert [e.role for e in conv.entries] == ["user", "assistant", "tool", "assistant"]
    step, tool, answer = conv.entries[1:]
    assert step.tool_calls == (call,) and step.state == "done"
    assert tool.tool_call_id == call.id and tool.content == told.content
    assert tool.tool is not None and tool.tool["name"] == "get_weather" and tool.tool["ok"] is True
    assert answer.content == result.text  # type: ignore[attr-defined]

    # stored as it happened, and a reopened conversation sends the calls and results again
    again = Store().load(conv.id)
    assert [(e.role, e.content, e.tool_calls, e.tool_call_id) for e in again.entries] == [
        (e.role, e.content, e.tool_calls, e.tool_call_id) for e in conv.entries
    ]
    sent = again.messages()
    assert [m.role for m in sent] == ["user", "assistant", "tool", "assistant"]
    assert sent[1].tool_calls == (call,) and sent[2].tool_call_id == call.id and sent[2].name == "get_weather"

    # the next turn goes on from there (the server takes the history with its tool messages)
    reopened = Session(hub, Store(), again)
    reopened.use_tools(ToolRegistry([tool_from_function(get_weather)]))
    _, second = await run_turn(reopened, "Thanks. And in Rome?")
    assert second.state == "done"  # type: ignore[attr-defined]


async def test_a_refused_side_effect_is_recorded_and_the_model_is_told(hub: Hub, tmp_path: Path) -> None:
    wrote: list[str] = []

    def save_note(text: Literal["hello", "goodbye"]) -> str:
        """Save a note to the notebook."""
        wrote.append(text)
        return "saved"

    tool = tool_from_function(save_note, side_effects=True)
    asked: list[tuple[str, dict[str, object]]] = []

    def confirm(t: Tool, arguments: dict[str, object]) -> bool:
        asked.append((t.name, arguments))
        return False

    events: list[LoopEvent] = []
    session = session_with(hub, [tool], events, tool_choice="save_note", confirm=confirm)
    _, result = await run_turn(session, "Save a note saying hello")
    assert len(asked) == 1 and asked[0][0] == "save_note" and wrote == []
    entry = next(e for e in session.conv.entries if e.role == "tool")
    assert entry.tool is not None and entry.tool["refused"] is True and entry.tool["ok"] is False
    assert "did not allow" in entry.content or "refused" in entry.content.lower()
    assert result.state == "done"  # type: ignore[attr-defined]
    result_event = next(e for e in events if isinstance(e, ToolResultEvent))
    assert result_line(result_event.result).startswith("refused")


async def test_cancel_while_a_tool_runs_records_it_cancelled_and_the_conversation_goes_on(hub: Hub) -> None:
    started = asyncio.Event()

    async def slow_lookup(city: str) -> str:
        """Look a city up in a slow archive."""
        started.set()
        await asyncio.Event().wait()  # never answers: only a cancel ends it
        return "unreachable"

    events: list[LoopEvent] = []
    session = session_with(hub, [tool_from_function(slow_lookup)], events, tool_choice="slow_lookup")
    turn = session.send("Look up Paris")

    async def consume() -> None:
        async for _ in turn:
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 120)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await turn.aclose()
    result = session.result(turn)
    assert result.state == "cancelled"
    tool = next(e for e in session.conv.entries if e.role == "tool")
    assert tool.state == "cancelled" and tool.tool is not None and tool.tool["cancelled"] is True
    stored = Store().load(session.conv.id)
    assert [e.role for e in stored.entries] == ["user", "assistant", "tool"]
    assert stored.entries[2].tool_call_id == stored.entries[1].tool_calls[0].id
    # no call is left without its result, so the next turn is one the server takes
    session.use_tools(None)
    _, after = await run_turn(session, "Never mind. Say hi.")
    assert after.state == "done"  # type: ignore[attr-defined]


async def test_a_cancel_while_the_face_draws_a_call_still_records_it_cancelled(hub: Hub) -> None:
    # the TUI's on_event awaits its widgets: a cancel lands there, outside the loop, before the call's result exists
    drawing = asyncio.Event()

    async def slow_face(event: LoopEvent) -> None:
        if isinstance(event, ToolCallEvent):
            drawing.set()
            await asyncio.Event().wait()

    session = Session(hub, Store(), Conversation(PEER, options=QUICK))
    session.use_tools(ToolRegistry([tool_from_function(get_weather)]), on_event=slow_face, tool_choice="get_weather")
    turn = session.send("Weather in Paris?")

    async def consume() -> None:
        async for _ in turn:
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(drawing.wait(), 120)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await turn.aclose()
    assert session.result(turn).state == "cancelled"
    stored = Store().load(session.conv.id)
    assert [e.role for e in stored.entries] == ["user", "assistant", "tool"]
    assert stored.entries[2].tool_call_id == stored.entries[1].tool_calls[0].id
    assert stored.entries[2].state == "cancelled" and stored.messages()[-1].role == "tool"


async def test_a_step_limit_is_told_and_the_unrun_calls_are_recorded(hub: Hub) -> None:
    events: list[LoopEvent] = []
    session = session_with(hub, [tool_from_function(get_weather)], events, tool_choice="get_weather", max_steps=1)
    _, result = await run_turn(session, "Weather in Oslo?")
    assert any(type(e).__name__ == "StepLimitReached" for e in events)
    tool = next(e for e in session.conv.entries if e.role == "tool")
    assert tool.tool is not None and tool.tool.get("not_run") is True and "max_steps" in tool.content
    assert result.state == "done"  # type: ignore[attr-defined]


async def test_export_shows_each_call_and_its_result(hub: Hub, tmp_path: Path) -> None:
    events: list[LoopEvent] = []
    session = session_with(hub, [tool_from_function(get_weather)], events, tool_choice="get_weather")
    await run_turn(session, "What is the weather in Paris?")
    markdown = export_conversation(session.conv, tmp_path / "c.md").read_text()
    assert "*called* `get_weather(" in markdown and "tool get_weather: ok" in markdown
    data = json.loads(export_conversation(session.conv, tmp_path / "c.json").read_text())
    roles = [m["role"] for m in data["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert data["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert data["messages"][2]["tool"]["ok"] is True


async def test_step_ends_carry_each_steps_numbers(hub: Hub) -> None:
    events: list[LoopEvent] = []
    session = session_with(hub, [tool_from_function(get_weather)], events, tool_choice="get_weather")
    await run_turn(session, "Weather in Lima?")
    ends = [e for e in events if isinstance(e, StepEnd)]
    assert [e.step for e in ends] == [1, 2] and all(e.stats.generated_tokens > 0 for e in ends)
    assert call_line(ends[0].message.tool_calls[0]).startswith("get_weather({")


def test_the_scripting_api_takes_plain_functions_as_tools(hub: Hub) -> None:
    import llmspell
    from llmspell.api import set_hub

    cities: list[str] = []

    def get_weather(city: str) -> str:
        """The weather now in a city.

        Args:
            city: the city's name
        """
        cities.append(city)
        return f"sunny and 21 C in {city}"

    set_hub(hub)
    try:
        answer = llmspell.complete(
            PEER, "What is the weather in Paris?", tools=[get_weather], tool_choice="get_weather", **QUICK.to_dict()
        )
        assert len(cities) == 1 and answer.strip()
        agent = llmspell.Agent(PEER, tools=[get_weather], **QUICK.to_dict())
        agent.session.tools.tool_choice = "get_weather"  # type: ignore[union-attr]
        reply = agent.complete("Weather in Rome?")
        assert len(cities) == 2 and reply.strip()
        assert [m.role for m in agent.history] == ["user", "assistant", "tool", "assistant"]
        agent.session.tools.max_steps = 1  # type: ignore[union-attr]
        with pytest.raises(ToolError, match="stopped after 1 model step"):
            agent.complete("Weather in Oslo?")  # the model only called: there is no answer to return
        with pytest.raises(TypeError, match="tools need a chat"):
            llmspell.complete(PEER, "x", raw=True, tools=[get_weather])
    finally:
        set_hub(None)


# -- without a model ---------------------------------------------------------------------------------------------


def test_a_history_from_before_tools_opens_and_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    from llmspell.store import MIGRATIONS

    for script in MIGRATIONS[:4]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 4")
    db.execute(
        "INSERT INTO conversations (id, title, model, system, options, created, updated) "
        "VALUES ('c1', 't', 'm', NULL, '{}', 1, 1)"
    )
    db.execute("INSERT INTO messages (conversation_id, role, content, created) VALUES ('c1', 'user', 'hi', 1)")
    db.commit()
    db.close()
    store = Store(path)
    assert store.version == SCHEMA_VERSION
    conv = store.load("c1")
    assert [(e.role, e.content, e.tool_calls, e.tool_call_id, e.tool) for e in conv.entries] == [
        ("user", "hi", (), None, None)
    ]


async def test_tool_names_open_built_ins_in_the_root_and_refuse_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    config = load_config()
    async with await ToolSet.open("read_file, write_file", config=config, root=tmp_path) as tools:
        assert tools.registry.names() == ["read_file", "write_file"]
        lines = tools.lines()
        assert any(line.startswith("read_file (built-in, runs without asking)") for line in lines)
        assert any(line.startswith("write_file (built-in, asks first)") for line in lines)
        assert lines[-1] == f"file tools confined to {tmp_path.resolve()}"
        result = await tools.registry.call("read_file", {"path": "notes.txt"})
        assert result.ok and "hello" in result.content
    async with await ToolSet.open(["write_file"], config=config, root=tmp_path, yes=True) as tools:
        assert "runs without asking" in tools.lines()[0]
    with pytest.raises(ToolError, match=r"no tool or MCP server named 'reed_file' \(built-ins: read_file"):
        await ToolSet.open("reed_file", config=config)


async def test_an_mcp_server_named_in_tools_is_started_listed_and_stopped(tmp_path: Path) -> None:
    home = Path(os.environ["LLMSPELL_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[mcp.servers.time]\ncommand = {json.dumps(sys.executable)}\nargs = ["-m", "mcp_server_time", '
        '"--local-timezone", "UTC"]\nside_effects = false\n\n[mcp.servers.broken]\ncommand = "no-such-mcp-server"\n'
    )
    config = load_config()
    tools = await ToolSet.open("time broken", config=config)
    try:
        names = tools.registry.names()
        assert "time__get_current_time" in names
        assert any(line.startswith("MCP broken: failed") for line in tools.lines())
        result = await tools.registry.call("time__get_current_time", {"timezone": "UTC"})
        assert result.ok and "UTC" in result.content
    finally:
        await tools.close()
    assert tools.statuses() == []


def test_the_tools_section_of_the_config_is_read_and_bad_values_name_the_key(tmp_path: Path) -> None:
    from llmspell.errors import ConfigError
    from llmspell.tools.toolset import chosen_tool_names

    path = tmp_path / "config.toml"
    path.write_text(
        f'[tools]\nenabled = ["read_file", "time"]\nallow = ["write_file"]\nmax_steps = 3\nroot = "{tmp_path}"\n'
    )
    config = load_config(path)
    assert config.tool_enabled == ("read_file", "time") and config.tool_allow == ("write_file",)
    assert config.tool_max_steps == 3 and config.tool_root == tmp_path
    assert chosen_tool_names(None, config) == ["read_file", "time"]
    assert chosen_tool_names(["off"], config) == []
    assert chosen_tool_names("list_directory", config) == ["list_directory"]
    for text, needle in [
        ("[tools]\nenabled = [1]\n", "tools.enabled must be a list of tool names"),
        ("[tools]\nmax_steps = 0\n", "tools.max_steps"),
        ('[tools]\nroot = ""\n', "tools.root is empty"),
        ("[tools]\nallowed = []\n", "unknown key(s) allowed in [tools]"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(needle)):
            load_config(path)
