"""Tool calls through the core: messages that carry them, the OpenAI backend passing tools to a real server
(llama-cpp-python's own, which constrains a forced call's arguments with a grammar from the schema), and the tool
loop end to end: model, tool call, a real Python handler, its result told back, the model's answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TypeVar

import jsonschema
import pytest
from peers import PEER_MODEL, LlamaCppServer, hub_on, llama_cpp_server

from llmspell.config import load_config
from llmspell.errors import InvalidOptions
from llmspell.hub import Hub
from llmspell.tools import Tool, ToolRegistry, tool_from_function
from llmspell.tools.loop import (
    FinalAnswer,
    LoopError,
    LoopEvent,
    StepEnd,
    StepLimitReached,
    TextChunk,
    ToolCallEvent,
    ToolLoop,
    ToolResultEvent,
    run_tools,
)
from llmspell.types import Chunk, Message, Options, ToolCall

PEER = f"{PEER_MODEL}@peer"
QUICK = Options(temperature=0.0, max_tokens=24, seed=7)
ASK = [Message("user", "What is the weather in Paris?")]
E = TypeVar("E")


def get_weather(city: str) -> str:
    """The weather now in a city.

    Args:
        city: the city's name
    """
    return f"sunny and 21 C in {city}"


WEATHER = tool_from_function(get_weather)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    yield from llama_cpp_server(tmp_path_factory.mktemp("peer"))


@pytest.fixture
def hub(peer: LlamaCppServer) -> Hub:
    """A hub whose config names the peer server as the OpenAI endpoint `peer` (the embedded backend is there too)."""
    return hub_on(peer)


async def events_of(loop: ToolLoop) -> list[LoopEvent]:
    """Every event of a loop, run to its end."""
    async with contextlib.aclosing(loop) as events:
        return [event async for event in events]


def of(kind: type[E], events: list[LoopEvent]) -> list[E]:
    """The events of one kind."""
    return [e for e in events if isinstance(e, kind)]


def round_trips(messages: list[Message]) -> bool:
    return all(Message.coerce(m.to_dict()) == m for m in messages)


# -- the contract ----------------------------------------------------------------------------------------------


def test_tool_call_messages_round_trip_through_the_openai_shape() -> None:
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    garbled = ToolCall.parse("call_2", "get_weather", '{"city": "Par')
    assert garbled.arguments == {} and garbled.raw == '{"city": "Par'
    asked = Message("assistant", "", tool_calls=(call, garbled))
    told = Message("tool", "sunny", tool_call_id="call_1", name="get_weather")
    assert round_trips([asked, told, Message("user", "hi")])
    # still a value: an equal message holding calls hashes alike (a set or a cache key takes it)
    same = Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", {"city": "Paris"}), garbled))
    assert same == asked and len({same, asked}) == 1
    assert asked.to_dict()["tool_calls"][0] == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert Message("user", "hi").to_dict() == {"role": "user", "content": "hi"}  # plain messages are unchanged
    # the API's own shape: null content beside the calls
    wire = {"role": "assistant", "content": None, "tool_calls": [call.to_dict()]}
    assert Message.coerce(wire) == Message("assistant", "", tool_calls=(call,))


def test_message_coercion_refuses_malformed_tool_fields_with_a_clear_error() -> None:
    with pytest.raises(InvalidOptions, match="tool_call_id"):
        Message.coerce({"role": "tool", "content": "x"})
    with pytest.raises(InvalidOptions, match="only an assistant message can have tool_calls"):
        Message.coerce({"role": "user", "content": "x", "tool_calls": [ToolCall("a", "b", {}).to_dict()]})
    with pytest.raises(InvalidOptions, match="unknown tool call field"):
        Message.coerce({"role": "assistant", "content": "", "tool_calls": [{"id": "a", "function": {}, "x": 1}]})
    with pytest.raises(InvalidOptions, match="unknown message field"):
        Message.coerce({"role": "user", "content": "hi", "name": "x"})


async def test_a_backend_without_tool_support_refuses_tools_clearly() -> None:
    # every backend llmspell ships passes tools now; a backend from elsewhere (the registry takes any) may not, and
    # only a stand-in can be one here: the scripted backend, which has no IMPLEMENTS_TOOLS
    from scripted import ScriptedBackend

    hub = Hub(load_config(), backends=[ScriptedBackend()])
    with pytest.raises(InvalidOptions, match="the llamacpp backend does not pass tools yet"):
        async with contextlib.aclosing(
            hub.chat("smollm2:135m@llamacpp", ASK, QUICK, tools=[WEATHER.openai_schema()])
        ) as stream:
            await anext(stream)
    events = await events_of(run_tools(hub, "smollm2:135m@llamacpp", ASK, ToolRegistry([WEATHER])))
    assert len(events) == 1 and isinstance(events[0], LoopError)
    assert isinstance(events[0].error, InvalidOptions) and "does not pass tools yet" in events[0].text


def test_the_loop_refuses_a_forced_tool_that_is_not_there_before_anything_runs() -> None:
    with pytest.raises(InvalidOptions, match="'get_time', which is not a tool here"):
        run_tools(Hub(load_config()), PEER, ASK, ToolRegistry([WEATHER]), tool_choice="get_time")
    with pytest.raises(InvalidOptions, match="max_steps"):
        run_tools(Hub(load_config()), PEER, ASK, ToolRegistry([WEATHER]), max_steps=0)


# -- the OpenAI backend against a real server --------------------------------------------------------------------


async def test_a_forced_call_comes_back_as_a_tool_call_whose_arguments_fit_the_schema(hub: Hub) -> None:
    chunks: list[Chunk] = []
    choice = {"type": "function", "function": {"name": "get_weather"}}
    async with contextlib.aclosing(
        hub.chat(PEER, ASK, QUICK, tools=[WEATHER.openai_schema()], tool_choice=choice)
    ) as stream:
        async for chunk in stream:
            chunks.append(chunk)
    last = chunks[-1]
    assert last.done and last.stats is not None and last.stats.stop_reason == "stop"
    assert len(last.tool_calls) == 1
    call = last.tool_calls[0]
    assert call.name == "get_weather" and call.id and call.raw == ""
    jsonschema.validate(call.arguments, WEATHER.parameters)
    assert last.stats.generated_tokens > 0


async def test_the_backend_refuses_a_tool_choice_naming_a_tool_it_was_not_given(hub: Hub) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    with pytest.raises(InvalidOptions, match="'get_time', which is not among the tools sent"):
        async with contextlib.aclosing(
            hub.chat(PEER, ASK, QUICK, tools=[WEATHER.openai_schema()], tool_choice=choice)
        ) as stream:
            await anext(stream)


# -- the loop, end to end ----------------------------------------------------------------------------------------


async def test_the_loop_runs_a_real_handler_and_ends_with_the_models_answer(hub: Hub) -> None:
    cities: list[str] = []

    def weather(city: str) -> str:
        """The weather now in a city."""
        cities.append(city)
        return f"sunny and 21 C in {city}"

    registry = ToolRegistry([tool_from_function(weather, name="get_weather")])
    steps: list[StepEnd] = []
    loop = run_tools(hub, PEER, ASK, registry, options=QUICK, tool_choice="get_weather", on_step=steps.append)
    events = await events_of(loop)

    calls, results = of(ToolCallEvent, events), of(ToolResultEvent, events)
    assert [e.call.name for e in calls] == ["get_weather"] and len(cities) == 1 and isinstance(cities[0], str)
    assert results[0].result.ok and results[0].result.content == f"sunny and 21 C in {cities[0]}"
    answer = events[-1]
    assert isinstance(answer, FinalAnswer) and answer.steps == 2 and answer.text.strip()
    assert "".join(e.text for e in of(TextChunk, events) if e.step == 2) == answer.text
    assert [s.step for s in steps] == [1, 2] and steps[0].message.tool_calls == (calls[0].call,)

    roles = [m.role for m in loop.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    told = loop.messages[2]
    assert told.tool_call_id == calls[0].call.id and told.content == results[0].result.content
    assert list(answer.messages) == loop.messages and round_trips(loop.messages)


async def test_a_tool_that_raises_is_told_to_the_model_and_the_loop_still_answers(hub: Hub) -> None:
    def get_weather(city: str) -> str:
        """The weather now in a city."""
        raise ConnectionError(f"no weather station answers for {city}")

    loop = run_tools(hub, PEER, ASK, ToolRegistry([tool_from_function(get_weather)]), options=QUICK,
                     tool_choice="get_weather")  # fmt: skip
    events = await events_of(loop)
    (result,) = [e.result for e in of(ToolResultEvent, events)]
    assert not result.ok and not result.refused and result.error is not None
    assert "ConnectionError: no weather station answers for" in result.error
    assert loop.messages[2].role == "tool" and loop.messages[2].content.startswith("error: get_weather failed")
    assert isinstance(events[-1], FinalAnswer)


async def test_a_refused_side_effect_tool_never_runs_and_the_model_is_told(hub: Hub) -> None:
    ran: list[str] = []
    asked: list[tuple[str, dict[str, object]]] = []

    def delete_city(city: str) -> str:
        """Remove a city from the forecast list."""
        ran.append(city)
        return "removed"

    async def confirm(tool: Tool, arguments: dict[str, object]) -> bool:
        asked.append((tool.name, arguments))
        return False

    registry = ToolRegistry([tool_from_function(delete_city, side_effects=True)])
    loop = run_tools(hub, PEER, ASK, registry, options=QUICK, tool_choice="delete_city", confirm=confirm)
    events = await events_of(loop)
    (result,) = [e.result for e in of(ToolResultEvent, events)]
    assert result.refused and not result.ok and ran == []
    assert [name for name, _ in asked] == ["delete_city"] and "city" in asked[0][1]
    assert loop.messages[2].content.startswith("refused: the user did not allow this call to delete_city")
    assert isinstance(events[-1], FinalAnswer) and loop.results == [result]


async def test_reaching_max_steps_is_one_clear_event_and_the_calls_do_not_run(hub: Hub) -> None:
    cities: list[str] = []

    def get_weather(city: str) -> str:
        """The weather now in a city."""
        cities.append(city)
        return "sunny"

    loop = run_tools(hub, PEER, ASK, ToolRegistry([tool_from_function(get_weather)]), options=QUICK,
                     tool_choice="get_weather", max_steps=1)  # fmt: skip
    events = await events_of(loop)
    limits = of(StepLimitReached, events)
    assert len(limits) == 1 and events[-1] is limits[0]
    assert [c.name for c in limits[0].pending] == ["get_weather"]
    assert limits[0].text.startswith("stopped after 1 model step: the model still asked for get_weather")
    assert cities == [] and not of(ToolResultEvent, events) and not of(FinalAnswer, events)
    # the conversation stays one the API takes: the call has its answer
    assert loop.messages[-1].role == "tool" and loop.messages[-1].tool_call_id == limits[0].pending[0].id
    assert round_trips(loop.messages)


async def test_cancelling_mid_loop_stops_the_running_tool_and_records_it_cancelled(hub: Hub) -> None:
    started = asyncio.Event()
    stopped: list[str] = []

    async def get_weather(city: str) -> str:
        """The weather now in a city (from a station that never answers)."""
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.append(city)
            raise
        return "never"

    loop = run_tools(hub, PEER, ASK, ToolRegistry([tool_from_function(get_weather)]), options=QUICK,
                     tool_choice="get_weather")  # fmt: skip
    seen: list[LoopEvent] = []

    async def drive() -> None:
        async for event in loop:
            seen.append(event)

    task = asyncio.create_task(drive())
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await loop.aclose()

    assert len(stopped) == 1 and of(ToolCallEvent, seen) and not of(ToolResultEvent, seen)
    (result,) = loop.results
    assert result.cancelled and not result.ok and "cancelled; the handler was stopped" in (result.error or "")
    assert loop.messages[-1].role == "tool" and "cancelled" in loop.messages[-1].content
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("tool ")]


async def test_closing_the_loop_mid_answer_closes_the_models_stream(hub: Hub) -> None:
    story = [Message("user", "Write a long story about a lighthouse keeper.")]
    loop = run_tools(hub, PEER, story, ToolRegistry([WEATHER]), options=Options(temperature=0.0, max_tokens=400))
    first = await anext(loop)
    assert isinstance(first, TextChunk)
    await loop.aclose()
    backend = hub.backend("peer")
    assert backend._streams == 0  # type: ignore[attr-defined]  # the response was closed, the server told
    assert loop.messages[-1] == Message("assistant", first.text)
    # and the server takes the next request as usual
    async with contextlib.aclosing(hub.chat(PEER, ASK, QUICK)) as stream:
        assert [c async for c in stream][-1].done


async def test_closing_the_loop_at_a_tool_call_leaves_a_conversation_a_server_takes(hub: Hub) -> None:
    cities: list[str] = []

    def get_weather(city: str) -> str:
        """The weather now in a city."""
        cities.append(city)
        return "sunny"

    loop = run_tools(hub, PEER, ASK, ToolRegistry([tool_from_function(get_weather)]), options=QUICK,
                     tool_choice="get_weather")  # fmt: skip
    async for event in loop:
        if isinstance(event, ToolCallEvent):
            break
    await loop.aclose()
    assert cities == [] and [r.cancelled for r in loop.results] == [True]
    assert [m.role for m in loop.messages] == ["user", "assistant", "tool"]
    assert loop.messages[-1].content == "error: get_weather was cancelled before it started"
    # the stored conversation goes on: the server takes the call and its answer
    async with contextlib.aclosing(hub.chat(PEER, [*loop.messages, Message("user", "Thanks.")], QUICK)) as stream:
        assert [c async for c in stream][-1].done


async def test_an_alias_of_a_model_behind_the_endpoint_calls_tools_too(hub: Hub) -> None:
    from llmspell.aliases import Alias

    hub.aliases.put(Alias("forecaster", PEER, system="You report the weather briefly.", options={"max_tokens": 24}))
    loop = run_tools(hub, "forecaster", ASK, ToolRegistry([WEATHER]), tool_choice="get_weather")
    events = await events_of(loop)
    (result,) = [e.result for e in of(ToolResultEvent, events)]
    assert result.ok and result.content.startswith("sunny and 21 C in ")
    assert isinstance(events[-1], FinalAnswer)
    assert loop.messages[0] == ASK[0]  # the alias's system prompt goes to the model, not into the conversation
