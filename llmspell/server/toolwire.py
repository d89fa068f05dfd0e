"""Tool calling as both server APIs carry it: the ``tools`` a request sends, checked at the edge; the generation
with them (through the backend that passes tools, or a clear 400); the whole answer with its tool calls.

The server never runs a tool: it hands the model's calls to the client, in the shape of the API that was called,
and reads the client's results back as ``tool`` messages.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

import jsonschema
from fastapi import Request

from llmspell import errors as E
from llmspell.backends.base import Backend
from llmspell.hub import Hub
from llmspell.server.errors import ApiError, unsupported
from llmspell.server.state import Generation
from llmspell.spec import ModelSpec
from llmspell.types import Chunk, Message, Options, Stats, TokenLogprob, ToolCall

#: OpenAI's rule for a function's name (Ollama's and the chat templates' too)
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_NAME = re.compile(NAME_PATTERN)
#: the most tools one request may carry (OpenAI's bound)
MAX_TOOLS = 128


def call_id() -> str:
    """A fresh id for a tool call that came without one."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _bad(message: str, param: str, code: str = "invalid_value") -> ApiError:
    return ApiError(message, param=param, code=code)


def check_tools(tools: Sequence[Any] | None, param: str = "tools", *, need_type: bool = True) -> list[dict[str, Any]]:
    """``tools`` as OpenAI and Ollama send them, checked (an object of type function, a name OpenAI allows, a JSON
    schema of type object as parameters) and returned in the OpenAI shape the core takes. Ollama's
    clients may leave ``type`` out (``need_type=False``)."""
    if not tools:
        return []
    if len(tools) > MAX_TOOLS:
        raise _bad(f"{param} holds {len(tools)} tools; at most {MAX_TOOLS} are allowed", param)
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        where = f"{param}[{i}]"
        if not isinstance(tool, dict):
            raise _bad(f"{where} must be an object, not {type(tool).__name__}", where)
        kind = tool.get("type", None if need_type else "function")
        if kind != "function":
            raise _bad(f"{where}.type must be 'function', not {kind!r:.40}", f"{where}.type")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _bad(f'{where} needs "function": {{"name": ..., "parameters": {{...}}}}', f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _bad(
                f"{where}.function.name {name!r:.80} is not a function name: use 1 to 64 letters, digits, _ or -",
                f"{where}.function.name",
            )
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            raise _bad(f"{where}.function.description must be a text", f"{where}.function.description")
        if not isinstance(function.get("strict", False), (bool, type(None))):
            raise _bad(f"{where}.function.strict must be true or false", f"{where}.function.strict")
        parameters = function.get("parameters")
        fn: dict[str, Any] = {"name": name}
        if description:
            fn["description"] = description
        fn["parameters"] = _check_parameters(name, parameters, f"{where}.function.parameters")
        out.append({"type": "function", "function": fn})
    return out


def _check_parameters(name: str, parameters: Any, where: str) -> dict[str, Any]:
    """A function's parameters: a JSON schema of type object (left out or {} means no parameters)."""
    from llmspell.backends._llama_prompt import unsatisfiable_schema

    code = "invalid_function_parameters"
    if parameters is None or parameters == {}:
        return {"type": "object", "properties": {}}
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        got = parameters.get("type") if isinstance(parameters, dict) else type(parameters).__name__
        raise _bad(
            f"invalid schema for function {name!r}: parameters must be a JSON schema of type object, got {got!r:.40}",
            where,
            code,
        )
    try:
        jsonschema.Draft202012Validator.check_schema(parameters)
    except jsonschema.SchemaError as err:
        raise _bad(f"invalid schema for function {name!r}: {err.message:.200}", where, code) from None
    problem = unsatisfiable_schema(parameters)
    if problem:
        raise _bad(f"invalid schema for function {name!r}: {problem}", where, code)
    return parameters


def check_tool_choice(choice: Any, tools: Sequence[dict[str, Any]], param: str = "tool_choice") -> Any:
    """``tool_choice`` checked against the tools: "none", "auto", "required" or one of them by name (the API's
    ``{"type": "function", "function": {"name": ...}}``); anything but none or auto needs tools."""
    if choice is None or choice in ("none", "auto"):
        return choice
    names = [t["function"]["name"] for t in tools]
    if choice == "required":
        if not tools:
            raise _bad(f"{param} 'required' needs tools to call; send tools with it", param)
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if not tools:
            raise _bad(f"{param} names {name!r:.80}, but the request sends no tools", param)
        if name not in names:
            raise _bad(f"{param} names {name!r:.80}, which is not among the tools: {', '.join(names)}", param)
        return {"type": "function", "function": {"name": name}}
    raise _bad(
        f"{param} {choice!r:.80} is not one the API takes: use 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        param,
    )


def uses_tools(messages: Sequence[Message], tools: Sequence[dict[str, Any]], choice: Any) -> bool:
    """Whether a request needs a backend that passes tools: it sends some, forces a call, or holds calls."""
    return bool(tools) or choice not in (None, "none") or any(m.tool_calls or m.role == "tool" for m in messages)


def chat_start(
    messages: list[Message],
    options: Options,
    tools: list[dict[str, Any]],
    choice: Any,
    param: str = "tools",
) -> Callable[[Backend, ModelSpec], AsyncGenerator[Chunk, None]]:
    """How a generation with tools starts on the backend serving the model: through the hub's route for tools (an
    alias's system prompt and options applied), or a 400 naming ``param`` when that backend cannot pass tools."""

    def start(backend: Backend, spec: ModelSpec) -> AsyncGenerator[Chunk, None]:
        if not uses_tools(messages, tools, choice):
            return backend.chat(spec, messages, options)
        try:
            return Hub.chat_with_tools(backend, spec, messages, options, tools, choice)
        except E.InvalidOptions as exc:
            raise unsupported(exc.message, param=param, hint=exc.hint) from None

    return start


async def collect_answer(
    gen: Generation, request: Request
) -> tuple[str, Stats, list[TokenLogprob], tuple[ToolCall, ...]]:
    """The whole answer (for stream false) with its logprobs and its tool calls, each with an id; a client that
    hangs up meanwhile cancels it."""
    text, stats, logprobs, calls = await gen.collect_all(request)
    return text, stats, logprobs, with_ids(calls)


def with_ids(calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
    """Every call with an id (a backend may report calls without one; a client answers a call by its id)."""
    return tuple(c if c.id else ToolCall(call_id(), c.name, c.arguments, c.raw) for c in calls)
