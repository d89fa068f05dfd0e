"""Tool calls through `llmspell serve`, with the official clients: the openai client gets calls in its own types
(arguments as JSON text, finish_reason tool_calls, streamed deltas that assemble to the same call) and sends the
result back as a tool message; the ollama client gets ``message.tool_calls`` with arguments as a dict and sends
``role: tool`` back; a bad tools payload is a 400 in each API's error shape. The server never runs a tool: the
clients here do, and only they. A named tool_choice makes even the 135M model call deterministically (the engine
holds the call to the tool's schema with a grammar)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import ollama
import openai
import pytest
from server.serveproc import ServeProcess, serve

MODEL = "smollm2:135m"
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city's name"}},
            "required": ["city"],
        },
    },
}
PARAMS = WEATHER["function"]["parameters"]
FORCE: dict[str, Any] = {"type": "function", "function": {"name": "get_weather"}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
QUICK: dict[str, Any] = {"temperature": 0, "seed": 7, "max_tokens": 24}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[ServeProcess]:
    yield from serve(tmp_path_factory, shared_models, None)


@pytest.fixture
def client(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="anything", timeout=120, max_retries=0)


@pytest.fixture
def oclient(server: ServeProcess) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=120)


def weather(city: str) -> str:
    """The client's own handler: the server never runs it."""
    return f"sunny and 21 C in {city}"


# -- OpenAI ------------------------------------------------------------------------------------------------------


def test_openai_client_gets_a_forced_call_and_the_answer_after_its_result(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice=FORCE, **QUICK)  # type: ignore[arg-type]
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and isinstance(calls[0], openai.types.chat.ChatCompletionMessageFunctionToolCall)
    call = calls[0]
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)  # a JSON string, as OpenAI sends it
    jsonschema.validate(arguments, PARAMS)

    # the client runs the tool and tells the model; the model answers in text
    history = [*ASK, choice.message, {"role": "tool", "tool_call_id": call.id, "content": weather(arguments["city"])}]
    final = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], tool_choice="none", **QUICK)  # type: ignore[arg-type]
    assert final.choices[0].finish_reason in ("stop", "length") and final.choices[0].message.content
    assert not final.choices[0].message.tool_calls
    # the call and its result were read: the prompt is the question's and then some
    alone = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=1)  # type: ignore[arg-type]
    assert final.usage is not None and alone.usage is not None
    assert final.usage.prompt_tokens > alone.usage.prompt_tokens + 10


def test_openai_streamed_call_deltas_assemble_to_the_same_call(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice=FORCE, **QUICK)  # type: ignore[arg-type]
    expected = (whole.choices[0].message.tool_calls or [])[0]
    parts: dict[int, dict[str, str]] = {}
    finishes = []
    first_pieces = []
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=FORCE,  # type: ignore[arg-type]
        stream=True,
        **QUICK,
    )
    for chunk in stream:
        for c in chunk.choices:
            if c.finish_reason:
                finishes.append(c.finish_reason)
            for d in c.delta.tool_calls or ():
                if d.index not in parts:
                    first_pieces.append(d)
                    parts[d.index] = {"id": "", "name": "", "arguments": ""}
                p = parts[d.index]
                p["id"] = p["id"] or (d.id or "")
                p["name"] += (d.function.name or "") if d.function else ""
                p["arguments"] += (d.function.arguments or "") if d.function else ""
    assert finishes == ["tool_calls"] and list(parts) == [0]
    # the first piece of a call carries its id, type and name
    assert first_pieces[0].id and first_pieces[0].type == "function" and first_pieces[0].function
    assert first_pieces[0].function.name == "get_weather"
    assert parts[0]["name"] == "get_weather" and parts[0]["id"].startswith("call_")
    assert json.loads(parts[0]["arguments"]) == json.loads(expected.function.arguments)


def test_openai_required_calls_one_of_the_tools_and_parallel_false_keeps_one(client: openai.OpenAI) -> None:
    time_tool = {"type": "function", "function": {"name": "get_time", "description": "The time now."}}
    r = client.chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER, time_tool],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        **QUICK,
    )
    calls = r.choices[0].message.tool_calls or []
    assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 1
    assert calls[0].function.name in ("get_weather", "get_time")  # type: ignore[union-attr]
    assert isinstance(json.loads(calls[0].function.arguments), dict)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "param", "needle"),
    [
        ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools[0].function.name", "name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
            "tools[0].function.parameters",
            "type object",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type", "'function'"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "nope",
        ),
        ({"functions": [WEATHER["function"]]}, "functions", "send tools and tool_choice"),
    ],
)
def test_a_bad_tools_payload_is_a_400_in_openais_shape(
    server: ServeProcess, extra: dict[str, Any], param: str, needle: str
) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": MODEL, "messages": ASK, **extra}, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and needle in error["message"]


def test_a_tool_message_needs_its_call_id_and_sent_back_calls_keep_openais_shape(server: ServeProcess) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    cases = [
        ([*ASK, {"role": "tool", "content": "sunny"}], "messages[1].tool_call_id"),
        ([*ASK, {"role": "assistant", "content": None, "tool_calls": [call]}], "messages[1].tool_calls[0]"),
    ]
    for messages, param in cases:
        body = {"model": MODEL, "messages": messages, "tools": [WEATHER]}
        r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"].startswith(param), r.text


# -- Ollama ------------------------------------------------------------------------------------------------------


#: a conversation that shows the tool in use twice: Ollama's API has no tool_choice, and with the tool shown the
#: small model calls it for the next city of its own accord. Shown once, it sometimes answered in prose instead
#: (greedy, but the cores a busy machine leaves and a reused prompt cache move a near tie either way)
OSLO_CALL = {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
ROME_CALL = {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}
SHOWN: list[dict[str, Any]] = [
    {"role": "system", "content": "You answer questions about the weather only by calling get_weather."},
    {"role": "user", "content": "What is the weather in Oslo?"},
    {"role": "assistant", "content": "", "tool_calls": [OSLO_CALL]},
    {"role": "tool", "tool_name": "get_weather", "content": "snow and -3 C in Oslo"},
    {"role": "assistant", "content": "It is snowing and -3 C in Oslo."},
    {"role": "user", "content": "What is the weather in Rome?"},
    {"role": "assistant", "content": "", "tool_calls": [ROME_CALL]},
    {"role": "tool", "tool_name": "get_weather", "content": "rainy and 12 C in Rome"},
    {"role": "assistant", "content": "It is rainy and 12 C in Rome."},
    {"role": "user", "content": "What is the weather in Paris?"},
]  # fmt: skip
GREEDY = {"temperature": 0, "seed": 7, "num_predict": 40}


def test_ollama_client_gets_tool_calls_with_arguments_as_a_dict_and_answers_after_the_result(
    oclient: ollama.Client,
) -> None:
    r = oclient.chat(MODEL, messages=SHOWN, tools=[WEATHER], options=GREEDY)
    calls = r.message.tool_calls or []
    assert r.done_reason == "stop" and len(calls) == 1 and r.message.content == ""
    assert calls[0].function.name == "get_weather" and isinstance(calls[0].function.arguments, dict)
    jsonschema.validate(dict(calls[0].function.arguments), PARAMS)
    city = calls[0].function.arguments["city"]

    # the client runs the tool and sends its result back as Ollama does: role tool, the tool's name, no call id
    result = {"role": "tool", "tool_name": "get_weather", "content": weather(city)}
    final = oclient.chat(MODEL, messages=[*SHOWN, r.message, result], options=GREEDY)
    assert final.done and final.message.content and not final.message.tool_calls
    assert "21 C" in final.message.content  # the model read the tool's result (greedy: every run alike)


def test_ollama_streamed_call_comes_on_a_line_of_its_own_before_the_last(
    oclient: ollama.Client, server: ServeProcess
) -> None:
    lines = list(oclient.chat(MODEL, messages=SHOWN, tools=[WEATHER], options=GREEDY, stream=True))
    with_calls = [line for line in lines if line.message.tool_calls]
    assert len(with_calls) == 1 and not with_calls[0].done and lines[-1].done and lines[-1].done_reason == "stop"
    assert with_calls[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
    # on the wire: an id and the call's index, as current Ollama servers write them (the tool as the client sends it)
    tool = ollama.Tool.model_validate(WEATHER).model_dump(exclude_none=True)
    body = {"model": MODEL, "messages": SHOWN, "tools": [tool], "options": GREEDY, "stream": False}
    wire = httpx.post(server.url + "/api/chat", json=body, timeout=120).json()["message"]["tool_calls"][0]
    assert wire["id"].startswith("call_") and wire["function"]["index"] == 0
    assert wire["function"]["arguments"] == dict(with_calls[0].message.tool_calls[0].function.arguments)  # type: ignore[index]


@pytest.mark.parametrize(
    ("tools", "needle"),
    [
        ([{"function": {"name": "get weather"}}], "tools[0].function.name"),
        ([{"function": {"name": "f", "parameters": {"type": "array"}}}], "type object"),
        (["get_weather"], "tools[0] must be an object"),
    ],
)
def test_a_bad_tools_payload_is_a_400_in_ollamas_shape(server: ServeProcess, tools: list[Any], needle: str) -> None:
    body = {"model": MODEL, "messages": ASK, "tools": tools, "stream": False}
    r = httpx.post(server.url + "/api/chat", json=body, timeout=60)
    assert r.status_code == 400 and set(r.json()) == {"error"} and needle in r.json()["error"], r.text
    if needle.endswith(".name"):  # what the official client sends at all (it checks the parameters' type itself)
        with pytest.raises(ollama.ResponseError) as err:
            ollama.Client(host=server.url).chat(MODEL, messages=ASK, tools=tools)
        assert err.value.status_code == 400 and needle in err.value.error
