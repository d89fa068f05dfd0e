"""Tool calls on the embedded engine, on the real smollm2:135m and gemma3:270m: forced calls held to the schema by a
grammar, "auto" answers in prose or calls (a lazy grammar from the call's opening on), tool turns rendered for
templates that know tools and for those that do not, the tool loop end to end, and cancelling a call."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers import GEMMA, SMOL, smollm2_file, wait_idle

from llmspell.backends._llama_prompt import ChatTemplate
from llmspell.backends._llama_tools import GENERIC, HERMES, LLAMA3, MISTRAL, CallReader, detect_format
from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.errors import InvalidOptions
from llmspell.hub import Hub
from llmspell.spec import parse_spec
from llmspell.tools import ToolRegistry, tool_from_function
from llmspell.tools.loop import FinalAnswer, LoopEvent, ToolCallEvent, ToolResultEvent, run_tools
from llmspell.types import Chunk, Message, Options, ToolCall

QUICK = Options(temperature=0.0, max_tokens=60, seed=7)
WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TIME_PARAMS = {
    "type": "object",
    "properties": {"timezone": {"type": "string"}, "hours24": {"type": "boolean"}},
    "required": ["timezone", "hours24"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather now in a city.", "parameters": WEATHER_PARAMS},
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time now in a timezone.", "parameters": TIME_PARAMS},
}
SCHEMAS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
ASK = [Message("user", "What is the weather in Paris?")]
NAMED = {"type": "function", "function": {"name": "get_weather"}}

#: a chat template in the Hermes/Qwen style (ChatML with a tools section and <tool_call> blocks), written here
HERMES_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}{% else %}You are a helpful assistant.{% endif %}

# Tools

You are given these functions inside <tools></tools> tags:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>

To call one, answer with a JSON object inside <tool_call></tool_call> tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{{ message.content }}
{%- for call in message.tool_calls %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.role != 'system' %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


async def answer(
    backend: LlamaCppBackend,
    model: str,
    messages: list[Message],
    tools: list[dict[str, Any]] | None,
    choice: Any,
    options: Options = QUICK,
) -> list[Chunk]:
    """Every chunk of one answer."""
    async with contextlib.aclosing(
        backend.chat(parse_spec(model), messages, options, tools=tools, tool_choice=choice)
    ) as stream:
        return [c async for c in stream]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def valid(call: ToolCall) -> None:
    """The call names a tool it was given and its arguments fit that tool's schema."""
    assert call.name in SCHEMAS and call.raw == "" and call.id.startswith("call_") and len(call.id) > 10
    jsonschema.validate(call.arguments, SCHEMAS[call.name])


def with_turns(call: ToolCall) -> list[Message]:
    """A conversation that called ``call``, was told its result, and asks on."""
    return [
        *ASK,
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", "sunny and 21 C", tool_call_id=call.id, name=call.name),
    ]


# -- forced calls ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [SMOL, GEMMA])
async def test_a_forced_call_has_arguments_that_fit_the_tools_schema(backend: LlamaCppBackend, model: str) -> None:
    chunks = await answer(backend, model, ASK, [WEATHER, TIME], NAMED)
    last = chunks[-1]
    assert last.done and last.stats is not None and last.stats.stop_reason == "stop"
    assert len(last.tool_calls) == 1 and last.tool_calls[0].name == "get_weather"
    valid(last.tool_calls[0])
    assert text_of(chunks) == "", "the call's own text is not shown as text"
    assert last.stats.generated_tokens > 5


async def test_required_with_two_tools_calls_one_of_them(backend: LlamaCppBackend) -> None:
    ask = [Message("user", "What time is it in Tokyo, on a 24-hour clock?")]
    for model in (SMOL, GEMMA):
        last = (await answer(backend, model, ask, [WEATHER, TIME], "required"))[-1]
        assert len(last.tool_calls) == 1
        valid(last.tool_calls[0])


async def test_a_call_cut_by_max_tokens_comes_back_with_its_raw_text(backend: LlamaCppBackend) -> None:
    chunks = await answer(backend, GEMMA, ASK, [WEATHER], NAMED, Options(temperature=0.0, max_tokens=20))
    last = chunks[-1]
    assert last.stats is not None and last.stats.stop_reason == "length"
    (call,) = last.tool_calls
    # the tool loop hands raw arguments to the registry, which tells the model they were not valid JSON
    assert call.name == "get_weather" and call.arguments == {} and call.raw.startswith("{")
    assert text_of(chunks) == ""


# -- auto ---------------------------------------------------------------------------------------------------------


async def test_auto_lets_the_model_answer_in_prose_as_it_streams(backend: LlamaCppBackend) -> None:
    chunks = await answer(
        backend, SMOL, [Message("user", "Write a short poem about the sea.")], [WEATHER, TIME], "auto"
    )
    texts = [c.text for c in chunks if c.text]
    assert len(texts) > 3, "prose streams in pieces as it is written"
    assert "sea" in "".join(texts).lower() and chunks[-1].tool_calls == ()


async def test_auto_shows_the_text_before_a_call_and_reads_the_call(backend: LlamaCppBackend) -> None:
    chunks = await answer(backend, GEMMA, ASK, [WEATHER, TIME], None)
    last = chunks[-1]
    assert len(last.tool_calls) == 1
    valid(last.tool_calls[0])
    shown = text_of(chunks)
    assert "<tool_call" not in shown and "get_weather" not in shown


async def test_in_auto_the_grammar_holds_a_call_once_the_model_opens_one(backend: LlamaCppBackend) -> None:
    # asked to copy a call to a tool that does not exist: the words before the call are the model's own, but from
    # <tool_call> on only a call to a tool it was given can be written
    ask = [Message("user", 'Copy this exactly: <tool_call>{"name": "banana", "arguments": {"size": 3}}</tool_call>')]
    chunks = await answer(backend, SMOL, ask, [WEATHER], "auto")
    (call,) = chunks[-1].tool_calls
    valid(call)
    assert "banana" not in text_of(chunks) and text_of(chunks).strip(), "the words before the call are shown"


async def test_none_shows_no_tools_and_reads_no_calls(backend: LlamaCppBackend) -> None:
    local = backend.resolve(parse_spec(SMOL))
    info = await asyncio.to_thread(backend_info, backend, local)
    prompt, *_ = backend.render_tools(local, info, ASK, (WEATHER,), "none")
    assert "get_weather" not in prompt and "<tool_call>" not in prompt
    chunks = await answer(backend, SMOL, ASK, [WEATHER], "none")
    assert chunks[-1].tool_calls == () and text_of(chunks).strip()


def backend_info(backend: LlamaCppBackend, local: Any) -> Any:
    from llmspell.ggufcheck import read_gguf

    return read_gguf(backend.ensure_file(local))


# -- errors -------------------------------------------------------------------------------------------------------


async def test_a_tool_choice_naming_an_unknown_tool_is_one_clear_error(backend: LlamaCppBackend) -> None:
    with pytest.raises(InvalidOptions) as err:
        await answer(backend, SMOL, ASK, [WEATHER], {"type": "function", "function": {"name": "get_time"}})
    assert "'get_time', which is not among the tools sent" in err.value.message
    assert err.value.hint == "the tools are: get_weather"
    with pytest.raises(InvalidOptions, match="without any tools"):
        await answer(backend, SMOL, ASK, None, "required")


async def test_a_tool_whose_schema_cannot_be_a_grammar_is_named(backend: LlamaCppBackend) -> None:
    broken = {"type": "function", "function": {"name": "pick", "parameters": {"type": "object", "properties": {}}}}
    broken["function"]["parameters"]["properties"] = {"colour": {"enum": []}}
    with pytest.raises(InvalidOptions) as err:
        await answer(backend, SMOL, ASK, [WEATHER, broken], "required")
    assert err.value.message == "tool 'pick': the JSON schema has an empty 'enum', which no answer can match"


async def test_cancelling_mid_call_leaves_nothing_running_and_the_next_call_works(backend: LlamaCppBackend) -> None:
    stream = backend.chat(
        parse_spec(GEMMA), ASK, Options(temperature=0.0, max_tokens=400), tools=[WEATHER], tool_choice=NAMED
    )
    first = await anext(stream)  # the prompt is accepted: the call is being written from now on
    assert not first.done
    worker = backend.worker_for(GEMMA)
    assert worker is not None
    for _ in range(2000):
        if worker.report.generated_tokens > 0 or worker.report.phase == "generate":
            break
        await asyncio.sleep(0.005)
    await stream.aclose()
    await wait_idle(worker)
    assert worker.report.stop_reason == "cancelled"
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    last = (await answer(backend, GEMMA, ASK, [WEATHER], NAMED))[-1]
    valid(last.tool_calls[0])


# -- conversations with tool turns ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [SMOL, GEMMA])
async def test_tool_turns_render_for_a_template_without_tools_and_the_model_answers(
    backend: LlamaCppBackend, model: str
) -> None:
    call = ToolCall("call_abc123", "get_weather", {"city": "Paris"})
    local = backend.resolve(parse_spec(model))
    info = await asyncio.to_thread(backend_info, backend, local)
    prompt, *_, fmt = backend.render_tools(local, info, with_turns(call), (WEATHER,), "auto")
    assert fmt is GENERIC
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>' in prompt
    assert "Tool result (get_weather, id call_abc123):\nsunny and 21 C\n\nNow answer the user in plain words." in prompt
    chunks = await answer(backend, model, with_turns(call), [WEATHER], "auto")
    assert chunks[-1].done and (text_of(chunks).strip() or chunks[-1].tool_calls)
    # without tools (the hub sends the turns alone once the loop is done with them) it still renders
    chunks = await answer(backend, model, with_turns(call), None, None)
    assert text_of(chunks).strip() and chunks[-1].tool_calls == ()


def test_a_template_with_tools_is_read_as_its_own_format() -> None:
    hermes = ChatTemplate(HERMES_TEMPLATE, "<|im_end|>", "")
    assert detect_format(hermes, HERMES_TEMPLATE) is HERMES
    assert detect_format(ChatTemplate("{{ messages[0].content }}", "", ""), "{{ messages[0].content }}") is GENERIC
    mistral = "{% if tools %}[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]"
    assert detect_format(ChatTemplate(mistral, "", ""), mistral) is MISTRAL
    llama = '{% if tools %}{{ tools|tojson }} Answer with {"name": .., "parameters": ..}{% endif %}<|python_tag|>'
    assert detect_format(ChatTemplate(llama, "", ""), llama) is LLAMA3


def test_each_format_reads_several_calls_and_keeps_arguments_that_are_not_json() -> None:
    two = '<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>\n<tool_call>{"name": "b", "arguments": {}}'
    calls, rest = HERMES.parse(two + "</tool_call>")
    assert [(c.name, c.arguments) for c in calls] == [("a", {"x": 1}), ("b", {})] and rest == ""
    assert len({c.id for c in calls}) == 2
    (bad,), _ = HERMES.parse('<tool_call>{"name": "a", "arguments": {x: one}}</tool_call>')
    assert bad.name == "a" and bad.arguments == {} and bad.raw == "{x: one}"
    calls, _ = MISTRAL.parse('[TOOL_CALLS][{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]')
    assert [c.name for c in calls] == ["a", "b"]
    calls, _ = LLAMA3.parse('{"name": "a", "parameters": {"x": 1}}')
    assert calls[0].arguments == {"x": 1}
    # streamed: text before the call shows, the call is held, a text that only looks like an opening shows
    reader = CallReader(HERMES)
    shown = [reader.feed(p) for p in ("Let me look. <tool", '_call>{"name": "a", ', '"arguments": {}}</tool_call>')]
    assert shown == ["Let me look. ", "", ""] and reader.finish()[1][0].name == "a"
    reader = CallReader(HERMES)
    assert reader.feed("a <tool") == "a " and reader.feed("box> b") == "<toolbox> b" and reader.finish() == ("", ())


@pytest.fixture
def hermes_smollm2(tmp_path: Path) -> Path:
    """SmolLM2 (a ChatML model) with a Hermes-style tools template in place of its own."""
    out = tmp_path / "smollm2-hermes.gguf"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            str(smollm2_file()),
            str(out),
            "--chat-template",
            HERMES_TEMPLATE,
            "--force",
        ],
        check=True,
        capture_output=True,
    )
    return out


async def test_a_model_whose_template_knows_tools_gets_them_through_it(
    backend: LlamaCppBackend, hermes_smollm2: Path
) -> None:
    model = str(hermes_smollm2)
    local = backend.resolve(parse_spec(model))
    info = await asyncio.to_thread(backend_info, backend, local)
    call = ToolCall("call_abc123", "get_weather", {"city": "Paris"})
    prompt, *_, fmt = backend.render_tools(local, info, with_turns(call), (WEATHER,), "auto")
    assert fmt is HERMES
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in prompt
    # the earlier call's arguments reach the template as an object (it writes them with tojson)
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in prompt
    assert "<tool_response>\nsunny and 21 C\n</tool_response>" in prompt
    assert "You can call these tools" not in prompt, "the engine adds no section of its own"
    last = (await answer(backend, model, ASK, [WEATHER, TIME], NAMED))[-1]
    valid(last.tool_calls[0])
    last = (await answer(backend, model, ASK, [WEATHER, TIME], "required"))[-1]
    valid(last.tool_calls[0])


# -- the tool loop ------------------------------------------------------------------------------------------------


async def test_the_loop_runs_a_forced_call_through_a_real_handler_to_an_answer(backend: LlamaCppBackend) -> None:
    cities: list[str] = []

    def get_weather(city: str) -> str:
        """The weather now in a city."""
        cities.append(city)
        return f"sunny and 21 C in {city}"

    hub = Hub(backend.config, backends=[backend])
    registry = ToolRegistry([tool_from_function(get_weather)])
    loop = run_tools(hub, SMOL, ASK, registry, options=QUICK, tool_choice="get_weather", max_steps=2)
    async with contextlib.aclosing(loop) as stream:
        events: list[LoopEvent] = [e async for e in stream]
    (called,) = [e for e in events if isinstance(e, ToolCallEvent)]
    (result,) = [e for e in events if isinstance(e, ToolResultEvent)]
    assert cities == [called.call.arguments["city"]] and result.result.ok
    jsonschema.validate(called.call.arguments, get_weather_schema(registry))
    final = events[-1]
    assert isinstance(final, FinalAnswer) and final.steps == 2 and final.text.strip()
    assert [m.role for m in loop.messages] == ["user", "assistant", "tool", "assistant"]
    assert loop.messages[1].tool_calls == (called.call,) and loop.messages[2].tool_call_id == called.call.id
    assert "21" in final.text, "the model answered with what the tool told it"


def get_weather_schema(registry: ToolRegistry) -> dict[str, Any]:
    (schema,) = registry.schemas()
    parameters: dict[str, Any] = schema["function"]["parameters"]
    return parameters


async def test_a_call_asked_again_is_not_run_twice_and_the_model_then_answers(backend: LlamaCppBackend) -> None:
    # gemma3:270m asks for the same call again after its result, every time: without the guard the loop went on
    # to the step limit; with it the repeat is told the earlier result and the next step answers without tools
    cities: list[str] = []

    def get_weather(city: str) -> str:
        """The weather now in a city."""
        cities.append(city)
        return f"sunny and 21 C in {city}"

    hub = Hub(backend.config, backends=[backend])
    registry = ToolRegistry([tool_from_function(get_weather)])
    loop = run_tools(hub, GEMMA, ASK, registry, options=QUICK, tool_choice="get_weather", max_steps=4)
    async with contextlib.aclosing(loop) as stream:
        events: list[LoopEvent] = [e async for e in stream]
    results = [e.result for e in events if isinstance(e, ToolResultEvent)]
    assert len(results) == 2 and len(cities) == 1, "the handler ran once"
    assert not results[0].repeated and results[1].repeated and results[1].ok
    assert results[1].content.startswith("not run again") and "sunny and 21 C" in results[1].content
    final = events[-1]
    assert isinstance(final, FinalAnswer) and final.steps == 3
    assert [m.role for m in loop.messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]


async def test_only_a_control_token_opening_triggers_the_lazy_grammar_by_id(backend: LlamaCppBackend) -> None:
    # llama3's call opens with "{", one ordinary token: as a trigger id it would force a call at any brace in prose
    await answer(backend, SMOL, ASK, [WEATHER], "none")
    worker = backend.worker_for(SMOL)
    assert worker is not None
    assert worker._control_token_ids("{") == set()
    assert len(worker._control_token_ids("<|im_end|>")) == 1
