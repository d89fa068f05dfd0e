"""The Ollama backend's tools against a real Ollama-API server (`llmspell serve` over the real smollm2:135m): tools
go natively through the official client and calls come back as ToolCall objects with ids made here; Ollama's API
has no tool_choice, so a named or required choice is asked for with Ollama's ``format`` and read back as the call;
and the tool loop runs end to end over it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from helpers import collect
from server.serveproc import ServeProcess, serve

from llmspell.backends.ollama import OllamaBackend
from llmspell.config import Config
from llmspell.errors import InvalidOptions
from llmspell.hub import Hub
from llmspell.spec import parse_spec
from llmspell.tools import ToolRegistry, tool_from_function
from llmspell.tools.loop import FinalAnswer, StepEnd, StepLimitReached, ToolCallEvent, ToolResultEvent, run_tools
from llmspell.types import Message, Options, ToolCall

SMOL = parse_spec("smollm2:135m@ollama")
GREEDY = Options(temperature=0, seed=7, max_tokens=40)
ASK = [Message("user", "What is the weather in Paris?")]


def get_weather(city: str) -> str:
    """The weather now in a city.

    Args:
        city: the city's name
    """
    return f"sunny and 21 C in {city}"


WEATHER = tool_from_function(get_weather)
SCHEMA = WEATHER.openai_schema()
#: the tool shown in use once: with it, the small model calls the tool for the next city of its own accord
SHOWN = [
    Message("system", "You answer questions about the weather only by calling get_weather."),
    Message("user", "What is the weather in Oslo?"),
    Message("assistant", "", tool_calls=(ToolCall("c0", "get_weather", {"city": "Oslo"}),)),
    Message("tool", "snow and -3 C in Oslo", tool_call_id="c0", name="get_weather"),
    Message("assistant", "It is snowing and -3 C in Oslo."),
    Message("user", "What is the weather in Rome?"),
    Message("assistant", "", tool_calls=(ToolCall("c1", "get_weather", {"city": "Rome"}),)),
    Message("tool", "rainy and 12 C in Rome", tool_call_id="c1", name="get_weather"),
    Message("assistant", "It is rainy and 12 C in Rome."),
    *ASK,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[ServeProcess]:
    yield from serve(tmp_path_factory, shared_models, None)


@pytest.fixture
def ollama_backend(server: ServeProcess) -> OllamaBackend:
    return OllamaBackend(Config(ollama_connect_timeout=2.0, ollama_read_timeout=120.0), url=server.url)


async def test_tools_pass_natively_and_the_calls_come_back_as_tool_calls(ollama_backend: OllamaBackend) -> None:
    assert OllamaBackend.IMPLEMENTS_TOOLS
    text, last = await collect(ollama_backend.chat(SMOL, SHOWN, GREEDY, tools=[SCHEMA]))
    assert text == "" and last.done and len(last.tool_calls) == 1
    call = last.tool_calls[0]
    # Ollama gives no ids the official client keeps: one is made, so a tool message can answer it
    assert call.name == "get_weather" and call.id.startswith("call_") and not call.raw
    jsonschema.validate(call.arguments, SCHEMA["function"]["parameters"])
    # with tool_choice none the tools are not sent, and the model answers in text
    text, last = await collect(ollama_backend.chat(SMOL, ASK, GREEDY, tools=[SCHEMA], tool_choice="none"))
    assert text and not last.tool_calls


async def test_a_named_or_required_choice_is_forced_through_format(ollama_backend: OllamaBackend) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice in (named, "required"):
        text, last = await collect(ollama_backend.chat(SMOL, ASK, GREEDY, tools=[SCHEMA], tool_choice=choice))
        assert text == "" and [c.name for c in last.tool_calls] == ["get_weather"], choice
        jsonschema.validate(last.tool_calls[0].arguments, SCHEMA["function"]["parameters"])
    with pytest.raises(InvalidOptions, match="not among the tools"):
        other = {**named, "function": {"name": "x"}}
        await collect(ollama_backend.chat(SMOL, ASK, GREEDY, tools=[SCHEMA], tool_choice=other))
    with pytest.raises(InvalidOptions, match="format"):
        await collect(ollama_backend.chat(SMOL, ASK, Options(format="json"), tools=[SCHEMA], tool_choice=named))


async def test_the_tool_loop_runs_end_to_end_over_the_ollama_backend(
    server: ServeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    cities: list[str] = []

    def weather(city: str) -> str:
        """The weather now in a city."""
        cities.append(city)
        return f"sunny and 21 C in {city}"

    monkeypatch.setenv("OLLAMA_HOST", server.url)  # the hub's Ollama backend is the server's Ollama API
    hub = Hub(Config(ollama_read_timeout=120.0))
    registry = ToolRegistry([tool_from_function(weather, name="get_weather")])
    loop = run_tools(hub, "smollm2:135m@ollama", ASK, registry, options=GREEDY, tool_choice="get_weather", max_steps=3)
    async with contextlib.aclosing(loop) as events:
        seen = [e async for e in events]
    calls = [e for e in seen if isinstance(e, ToolCallEvent)]
    results = [e for e in seen if isinstance(e, ToolResultEvent)]
    # the first step is forced; the real handler ran with the model's city, and the model was told its result
    assert calls[0].step == 1 and calls[0].call.name == "get_weather" and cities[0] == calls[0].call.arguments["city"]
    assert results[0].result.ok and loop.messages[2].role == "tool" and loop.messages[2].content == weather(cities[0])
    # then "auto", the tools sent natively: whether the 135M model answers or asks again is its own affair (the
    # server's prompt cache may tip it); either way the loop took the step over Ollama and ended cleanly, with every
    # call answered, so the stored conversation is one a server takes again
    assert any(isinstance(e, StepEnd) and e.step == 2 for e in seen)
    assert isinstance(seen[-1], (FinalAnswer, StepLimitReached))
    answered = {m.tool_call_id for m in loop.messages if m.role == "tool"}
    assert answered == {c.id for m in loop.messages for c in m.tool_calls}
