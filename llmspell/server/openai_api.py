"""The OpenAI API (``/v1/*``) over the core: models, chat completions and completions, with SSE streaming."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from llmspell import errors as E
from llmspell.backends.base import Backend
from llmspell.options import OPTIONS
from llmspell.server.errors import ApiError, error_body, error_fields, error_status, error_text, unsupported
from llmspell.server.ollama_api import warn_extra, wire_logprobs
from llmspell.server.openapi import (
    EMPTY_TEXT,
    FORMAT_OBJECT,
    GENERATION_ERRORS,
    MODEL_PATTERN,
    MODEL_SCHEMA,
    NONE_GIVEN,
    STOP_SCHEMA,
    TOOL_CHOICE,
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    ModelList,
    ModelObject,
    errors,
    nullable,
    sse_answer,
    tools_schema,
    top_level_option,
)
from llmspell.server.state import Generation, GenerationResponse, ServerState, state_of
from llmspell.server.toolwire import chat_start, check_tool_choice, check_tools, collect_answer, with_ids
from llmspell.server.wire import Whole, check_format, check_stop
from llmspell.spec import ModelSpec
from llmspell.types import Chunk, Message, ModelInfo, Options, Stats, TokenLogprob, ToolCall

router = APIRouter(prefix="/v1")


#: the most choices one request may ask for (each is a whole generation, one after the other)
MAX_CHOICES = 8


def _opt(name: str) -> WithJsonSchema:
    """An option's schema from the option table: Options checks the value, with its own message."""
    return WithJsonSchema(top_level_option(name))


class _Body(BaseModel):
    # a parameter the server does not know is ignored with a line in the log (as Ollama's and llama-server's
    # OpenAI APIs do: clients send newer fields and engine extensions), a 400 naming it under --strict; those
    # it knows are used where the engine can and otherwise refused by name below. Types are strict, as OpenAI's.
    model_config = ConfigDict(extra="allow", protected_namespaces=(), strict=True)

    model: Annotated[str, WithJsonSchema(MODEL_SCHEMA)]
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: Annotated[Whole | None, _opt("max_tokens")] = None
    temperature: Annotated[float | None, _opt("temperature")] = None
    top_p: Annotated[float | None, _opt("top_p")] = None
    seed: Annotated[Whole | None, _opt("seed")] = None
    stop: Annotated[str | list[str] | None, WithJsonSchema(STOP_SCHEMA)] = None
    n: Annotated[Whole, WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_CHOICES, "default": 1})] = 1
    frequency_penalty: Annotated[float | None, _opt("frequency_penalty")] = None
    presence_penalty: Annotated[float | None, _opt("presence_penalty")] = None
    logit_bias: Annotated[
        dict[str, float] | None,
        WithJsonSchema(
            {
                "anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}],
                "description": "not supported: token ids differ between models (a non-empty value is a 400)",
            }
        ),
    ] = None
    # the sampling extensions llama.cpp's and vLLM's servers take beside OpenAI's own
    top_k: Annotated[Whole | None, _opt("top_k")] = None
    min_p: Annotated[float | None, _opt("min_p")] = None
    repeat_penalty: Annotated[float | None, _opt("repeat_penalty")] = None
    # bookkeeping fields with no effect on the answer: taken and ignored
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


#: a message's content: a text, or text parts
_CONTENT: dict[str, Any] = {
    "anyOf": [
        {"type": "string"},
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
            },
        },
        {"type": "null"},
    ],
    "description": "a text, or a list of text parts (other kinds of part are a 400)",
}
#: response_format: text, any JSON, or JSON matching a schema (the schema is llama.cpp's to turn into a grammar)
_RESPONSE_FORMAT: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["text", "json_object", "json_schema"]},
                "json_schema": nullable({"type": "object"}),
                "schema": nullable({"type": "object"}),
            },
            "additionalProperties": False,
            "anyOf": [
                # what the type does not read is not looked at
                {"properties": {"type": {"const": "text"}}},
                {"properties": {"type": {"const": "json_object"}, "schema": nullable(FORMAT_OBJECT)}},
                {
                    "required": ["json_schema"],
                    "properties": {
                        "type": {"const": "json_schema"},
                        "json_schema": {
                            "type": "object",
                            "required": ["schema"],
                            "properties": {"schema": FORMAT_OBJECT},
                        },
                    },
                },
            ],
        },
        {"type": "null"},
    ],
    "description": "text, any JSON (json_object, with llama-cpp-python's schema beside it if wanted), or JSON "
    "matching json_schema.schema",
}


#: an assistant's tool call sent back: its id, and its function with the arguments as JSON text
_TOOL_CALL_IN: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "type": {"const": "function"},
        "index": {"type": "integer"},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}, "arguments": nullable({"type": "string"})},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
#: a tool message answers a call by its id; only an assistant message carries calls
_MESSAGE_RULES: dict[str, Any] = {
    "allOf": [
        {
            "anyOf": [
                {"properties": {"role": {"enum": ["system", "developer", "user", "assistant"]}}},
                {"required": ["tool_call_id"], "properties": {"tool_call_id": {"type": "string", "minLength": 1}}},
            ]
        },
        {
            "anyOf": [
                {"properties": {"role": {"const": "assistant"}}},
                {"properties": {"tool_calls": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}}},
            ]
        },
    ]
}
_LEGACY = "functions and function_call are OpenAI's deprecated form of tools: send tools and tool_choice instead"


class ChatMessageIn(BaseModel):
    """One message of a chat completion request."""

    # an answer sent back as the client got it carries refusal, annotations, audio... (the SDK's own message
    # objects): taken and ignored; what would change the conversation (tool calls) is checked below
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_MESSAGE_RULES)

    # "function" (the deprecated role) is taken so that its refusal can say what to send instead
    role: Annotated[
        Literal["system", "developer", "user", "assistant", "tool", "function"],
        WithJsonSchema({"enum": ["system", "developer", "user", "assistant", "tool"]}),
    ]
    content: Annotated[str | list[dict[str, Any]] | None, WithJsonSchema(_CONTENT)] = None
    name: str | None = None
    tool_calls: Annotated[list[Any] | None, WithJsonSchema(nullable({"type": "array", "items": _TOOL_CALL_IN}))] = None
    tool_call_id: str | None = None
    function_call: Annotated[Any, WithJsonSchema({"type": "null", "description": _LEGACY})] = None


class ResponseFormat(BaseModel):
    """``response_format``: text, any JSON, or JSON matching a schema."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None
    #: llama-cpp-python's extension: a schema attached to json_object
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


_NO_FUNCTIONS: dict[str, Any] = {
    "anyOf": [{"enum": ["none", "auto"]}, {"type": "null"}],
    "description": f"{_LEGACY} (none or auto are taken and mean nothing)",
}
_NO_FUNCTION_LIST: dict[str, Any] = {**NONE_GIVEN, "description": f"{_LEGACY} (a non-empty list is a 400)"}


class ChatCompletionBody(_Body):
    """``POST /v1/chat/completions``."""

    # top_logprobs above 0 needs logprobs: true
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"properties": {"top_logprobs": {"enum": [0, None]}}},
                {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
            ],
            "allOf": [
                # tool_choice required or a name needs tools to choose from
                {
                    "anyOf": [
                        {"properties": {"tool_choice": {"enum": ["none", "auto", None]}}},
                        {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}},
                    ]
                },
                # a call's arguments follow its tool's schema: a response_format beside tools is a 400
                {
                    "anyOf": [
                        {"properties": {"tools": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}}},
                        {
                            "properties": {
                                "response_format": {
                                    "anyOf": [{"type": "null"}, {"properties": {"type": {"const": "text"}}}]
                                }
                            }
                        },
                    ]
                },
            ],
        }
    )

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: Annotated[Whole | None, _opt("max_tokens")] = None
    response_format: Annotated[ResponseFormat | None, WithJsonSchema(_RESPONSE_FORMAT)] = None
    logprobs: bool | None = None
    top_logprobs: Annotated[
        Whole | None, WithJsonSchema(nullable({"type": "integer", "minimum": 0, "maximum": 20}))
    ] = None
    tools: Annotated[list[Any] | None, WithJsonSchema(tools_schema(need_type=True))] = None
    tool_choice: Annotated[str | dict[str, Any] | None, WithJsonSchema(TOOL_CHOICE)] = None
    parallel_tool_calls: bool | None = None
    functions: Annotated[list[dict[str, Any]] | None, WithJsonSchema(_NO_FUNCTION_LIST)] = None
    function_call: Annotated[str | dict[str, Any] | None, WithJsonSchema(_NO_FUNCTIONS)] = None
    modalities: Annotated[list[str] | None, WithJsonSchema(nullable({"type": "array", "items": {"const": "text"}}))] = (
        None
    )
    reasoning_effort: str | None = None


#: the prompts of /v1/completions times n are at most MAX_CHOICES answers; best_of is 1 or n
_COMPLETION_RULES: dict[str, Any] = {
    "allOf": [
        {
            "anyOf": [
                {"properties": {"prompt": {"type": "string"}}},
                {"not": {"required": ["n"]}},
                *(
                    {"required": ["n"], "properties": {"n": {"const": k}, "prompt": {"maxItems": MAX_CHOICES // k}}}
                    for k in range(1, MAX_CHOICES + 1)
                ),
            ]
        },
        {
            "anyOf": [
                {"properties": {"best_of": {"enum": [None, 1]}}},
                *(
                    {"required": ["n", "best_of"], "properties": {"n": {"const": k}, "best_of": {"const": k}}}
                    for k in range(2, MAX_CHOICES + 1)
                ),
            ]
        },
    ]
}
_PROMPT: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "maxItems": MAX_CHOICES, "items": {"type": "string", "minLength": 1}},
    ],
    "description": "a text to continue, or a list of them (each gets n choices)",
}


class CompletionBody(_Body):
    """``POST /v1/completions``."""

    model_config = ConfigDict(json_schema_extra=_COMPLETION_RULES)

    prompt: Annotated[str | list[str], WithJsonSchema(_PROMPT)]
    # OpenAI's default for this endpoint
    max_tokens: Annotated[Whole | None, WithJsonSchema({**top_level_option("max_tokens"), "default": 16})] = 16
    echo: bool = False
    #: the legacy API's logprobs: how many alternatives per token (0 to 5)
    logprobs: Annotated[Whole | None, WithJsonSchema(nullable({"type": "integer", "minimum": 0, "maximum": 5}))] = None
    best_of: Annotated[
        Whole | None, WithJsonSchema(nullable({"type": "integer", "minimum": 1, "maximum": MAX_CHOICES}))
    ] = None
    suffix: Annotated[str | None, WithJsonSchema(EMPTY_TEXT)] = None


def _format(rf: ResponseFormat | None) -> dict[str, Any] | str | None:
    """response_format as the core's format: a schema becomes a grammar (llama-cpp-python would ignore it)."""
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return check_format(rf.schema_) or "json"
    js = rf.json_schema or {}
    schema = js.get("schema")
    if not isinstance(schema, dict):
        raise E.InvalidOptions(
            "response_format json_schema needs a schema object",
            hint='send {"type": "json_schema", "json_schema": {"name": "x", "schema": {...}}}',
        )
    return check_format(schema)


def _options(body: _Body, max_tokens: int | None, fmt: Any = None, logprobs: int | None = None) -> Options:
    if not 1 <= body.n <= MAX_CHOICES:
        raise ApiError(f"n must be 1 to {MAX_CHOICES}, not {body.n} (each choice is a whole answer)", param="n")
    if body.logit_bias:
        raise unsupported(
            "logit_bias is not supported by llmspell serve: token ids differ between models", param="logit_bias"
        )
    # the sampling fields OpenAI shares with llmspell, by the option table's OpenAI names; max_tokens (two
    # spellings, a per-endpoint default), stop (a string or a list) and response_format are read above
    fields = body.model_dump()
    values: dict[str, Any] = {
        o.name: fields[o.openai] for o in OPTIONS if o.openai and o.name not in ("max_tokens", "stop")
    }
    values.update(top_k=body.top_k, min_p=body.min_p, repeat_penalty=body.repeat_penalty)
    stop = (body.stop,) if isinstance(check_stop(body.stop), str) else tuple(body.stop or ())
    return Options.from_dict(
        {**values, "max_tokens": max_tokens, "stop": stop or None, "format": fmt, "logprobs": logprobs}
    )


def _seeds(opts: Options, n: int) -> list[Options]:
    """The options of each of ``n`` choices: a given seed is the first choice's, the next ones count up from it
    (so the same request gives the same choices); without a seed each is random."""
    if n == 1:
        return [opts]
    if opts.seed is None or opts.seed < 0:
        return [opts] * n
    return [opts.with_values({"seed": (opts.seed + i) % 2**32}) for i in range(n)]


class _Opened:
    """The generations one request opens (its n choices, its prompts), so a response torn down between chunks
    closes every one of them, not only the first."""

    def __init__(self, state: ServerState, model: str, request: Request) -> None:
        self.state, self.model, self.request = state, model, request
        self.generations: list[Generation] = []

    async def open(self, start: Callable[[Backend, ModelSpec], AsyncGenerator[Chunk, None]]) -> Generation:
        """Admit and start one more answer of the request."""
        gen = await self.state.open(self.model, start, request=self.request)
        self.generations.append(gen)
        return gen

    async def close_all(self) -> None:
        """Close every answer opened so far (each close is idempotent)."""
        for gen in self.generations:
            await gen.close()


def _check_chat_extras(body: ChatCompletionBody) -> int | None:
    """Refuse what the chat body asks for and cannot be done, by name; return the logprobs to ask for."""
    if body.functions:
        raise unsupported(_LEGACY, param="functions")
    if body.function_call not in (None, "none", "auto"):
        raise unsupported(_LEGACY, param="function_call")
    if body.modalities and set(body.modalities) != {"text"}:
        raise unsupported("only text output is supported (modalities: ['text'])", param="modalities")
    if body.top_logprobs is not None and not 0 <= body.top_logprobs <= 20:
        raise ApiError(f"top_logprobs must be 0 to 20, not {body.top_logprobs}", param="top_logprobs")
    if body.top_logprobs and not body.logprobs:
        raise ApiError("top_logprobs needs logprobs: true", param="top_logprobs")
    return (body.top_logprobs or 0) if body.logprobs else None


def _call_in(value: Any, where: str) -> ToolCall:
    """One tool call of an assistant message sent back, in OpenAI's shape (arguments as JSON text)."""
    if not isinstance(value, dict):
        raise ApiError(f"{where} must be an object with id, type and function", param=where)
    function = value.get("function")
    index = value.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool):
        raise ApiError(f"{where}.index must be a whole number", param=f"{where}.index")
    if value.get("type") != "function":
        raise ApiError(f"{where}.type must be 'function', not {value.get('type')!r:.40}", param=f"{where}.type")
    if isinstance(function, dict) and not isinstance(function.get("arguments", ""), (str, type(None))):
        raise ApiError(
            f"{where}.function.arguments must be the arguments as JSON text, as the API returned them",
            param=f"{where}.function.arguments",
        )
    try:
        return ToolCall.coerce(value)
    except E.InvalidOptions as exc:
        raise ApiError(f"{where}: {exc.message}", param=where) from None


def _messages(body: ChatCompletionBody) -> list[Message]:
    """The conversation as the core's messages: an assistant's tool calls, and each tool message with the name of
    the call it answers (a chat template names the tool; OpenAI's tool message names only the call)."""
    names: dict[str, str] = {}
    out = []
    for i, m in enumerate(body.messages):
        where = f"messages[{i}]"
        if m.role == "function" or m.function_call is not None:
            raise unsupported(_LEGACY, param=where)
        if m.tool_calls and m.role != "assistant":
            raise ApiError(f"{where}: only an assistant message has tool_calls", param=f"{where}.tool_calls")
        if m.role == "tool":
            if not m.tool_call_id:
                raise ApiError(f"{where}: a tool message needs the tool_call_id of the call it answers",
                               param=f"{where}.tool_call_id")  # fmt: skip
            out.append(Message("tool", _text(m.content), tool_call_id=m.tool_call_id, name=names.get(m.tool_call_id)))
            continue
        calls = tuple(_call_in(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(m.tool_calls or ()))
        names.update((c.id, c.name) for c in calls)
        role = "system" if m.role == "developer" else m.role
        out.append(Message(role, _text(m.content), tool_calls=calls))
    return out


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise E.InvalidOptions(f"content parts of type {part.get('type')!r} are not supported; send text")
        if not isinstance(part.get("text", ""), str):
            raise E.InvalidOptions("a text part's text must be a string")
        parts.append(part.get("text", ""))
    return "".join(parts)


def _finish(stats: Stats | None, calls: Sequence[ToolCall] = ()) -> str:
    if calls:
        return "tool_calls"
    return "length" if stats is not None and stats.stop_reason == "length" else "stop"


def _usage(stats: Sequence[Stats | None], *, prompts: int = 1, n: int = 1) -> dict[str, int]:
    """Usage of all choices: each prompt counted once (its n choices read it alike), every choice's tokens."""
    known = [s for s in stats if s is not None]
    p = sum(s.prompt_tokens for s in known[::n]) if prompts > 1 else (known[0].prompt_tokens if known else 0)
    c = sum(s.generated_tokens for s in known)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _sse(events: AsyncIterator[dict[str, Any]], path: str) -> AsyncIterator[bytes]:
    """Server-sent events ending with ``[DONE]``; an error after the start is one ``error`` event."""
    try:
        async for event in events:
            yield b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    except Exception as exc:  # the status line is sent already: the error can only be one last event
        param, code = error_fields(exc)
        body = error_body(path, error_text(exc), error_status(exc), param=param, code=code)
        yield b"data: " + json.dumps(body).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def _model_id(m: ModelInfo) -> str:
    return m.name if m.backend == "llamacpp" else f"{m.name}@{m.backend}"


def _model_object(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "llmspell"}


@router.get("/models", response_model=None, responses={200: {"model": ModelList}})
async def models(request: Request) -> dict[str, Any]:
    """Every model the core can run now."""
    found, _ = await state_of(request).hub.list_all()
    now = int(time.time())
    return {
        "object": "list",
        "data": [_model_object(_model_id(m), now) for m in found if m.source != "not downloaded"],
    }


@router.get(
    "/models/{model_id:path}",
    response_model=None,
    responses={200: {"model": ModelObject}, **errors(400, 404, 503, openai=True)},
)
async def model(
    model_id: Annotated[str, Path(json_schema_extra={"pattern": MODEL_PATTERN, "examples": ["smollm2:135m"]})],
    request: Request,
) -> dict[str, Any]:
    """One model, by any name it answers to (``models.retrieve``); 404 when it is not here."""
    state = state_of(request)
    backend, spec = await state.resolve(model_id)
    if not await backend.has_model(spec):
        raise ApiError(f"the model {model_id!r} does not exist here", status=404, param="model", code="model_not_found")
    return _model_object(model_id, int(time.time()))


def _chat_logprobs(items: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {"content": wire_logprobs(items), "refusal": None}


def _legacy_logprobs(items: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """The completions API's older logprobs: parallel lists, and each token's offset in the text."""
    offsets = []
    for lp in items:
        offsets.append(offset)
        offset += len(lp.token)
    return {
        "tokens": [lp.token for lp in items],
        "token_logprobs": [lp.logprob for lp in items],
        "top_logprobs": [{t: v for t, v, _ in lp.top} for lp in items],
        "text_offset": offsets,
    }


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        **sse_answer(ChatCompletionChunk, ChatCompletion, "the completion, or with stream true server-sent events"),
        **errors(*GENERATION_ERRORS, openai=True),
    },
)
async def chat_completions(body: ChatCompletionBody, request: Request) -> Response:
    """A chat completion (``n`` choices, one after the other), streamed as SSE chunks when ``stream`` is set."""
    state = state_of(request)
    warn_extra(request, body)
    logprobs = _check_chat_extras(body)
    messages = _messages(body)
    tools = check_tools(body.tools)
    tool_choice = check_tool_choice(body.tool_choice, tools)
    if body.max_tokens is not None:
        Options.from_dict({"max_tokens": body.max_tokens})  # checked even where max_completion_tokens wins
    limit = body.max_tokens if body.max_completion_tokens is None else body.max_completion_tokens
    opts = _options(body, limit, _format(body.response_format), logprobs)
    choices = _seeds(opts, body.n)
    # a conversation holding calls needs a backend that passes tools even when this request sends none
    param = "tools" if tools else "tool_choice" if tool_choice not in (None, "none") else "messages"

    def calls_of(chunk: Chunk) -> tuple[ToolCall, ...]:
        # one call at most when the client asks for calls one at a time
        calls = with_ids(chunk.tool_calls)
        return calls[:1] if body.parallel_tool_calls is False else calls

    opened = _Opened(state, body.model, request)

    async def open_choice(o: Options) -> Generation:
        return await opened.open(chat_start(messages, o, tools, tool_choice, param))

    first = await open_choice(choices[0])
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    base = {"id": cid, "created": created, "model": body.model}
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        obj = {**base, "object": "chat.completion.chunk"}

        def event(index: int, delta: dict[str, Any], finish: str | None, lps: Any = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "logprobs": lps, "finish_reason": finish}
            return {**obj, "choices": [choice]}

        async def events() -> AsyncIterator[dict[str, Any]]:
            stats: list[Stats | None] = []
            for index, o in enumerate(choices):
                gen = first if index == 0 else await open_choice(o)
                yield event(index, {"role": "assistant", "content": ""}, None)
                async for chunk in gen.chunks():
                    if chunk.text:
                        lps = _chat_logprobs(chunk.logprobs) if logprobs is not None else None
                        yield event(index, {"content": chunk.text}, None, lps)
                    if chunk.done:
                        stats.append(chunk.stats)
                        calls = calls_of(chunk)
                        # each call whole in one delta: the first (and only) piece has its id, type and name
                        for n, call in enumerate(calls):
                            yield event(index, {"tool_calls": [{"index": n, **call.to_dict()}]}, None)
                        yield event(index, {}, _finish(chunk.stats, calls))
            if include_usage:
                yield {**obj, "choices": [], "usage": _usage(stats)}

        return GenerationResponse(_sse(events(), request.url.path), opened.close_all, media_type="text/event-stream")
    results = []
    for index, o in enumerate(choices):
        gen = first if index == 0 else await open_choice(o)
        text, stats, lps, calls = await collect_answer(gen, request)
        results.append((text, stats, lps, calls[:1] if body.parallel_tool_calls is False else calls))
    return JSONResponse(
        {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": index,
                    "message": _message_out(text, calls),
                    "finish_reason": _finish(stats, calls),
                    "logprobs": _chat_logprobs(lps) if logprobs is not None else None,
                }
                for index, (text, stats, lps, calls) in enumerate(results)
            ],
            "usage": _usage([stats for _, stats, _, _ in results]),
        }
    )


def _message_out(text: str, calls: Sequence[ToolCall]) -> dict[str, Any]:
    """A choice's message: the text, and the tool calls with their arguments as JSON text (content null when the
    model only called tools, as OpenAI writes it)."""
    if not calls:
        return {"role": "assistant", "content": text, "refusal": None}
    return {"role": "assistant", "content": text or None, "refusal": None, "tool_calls": [c.to_dict() for c in calls]}


@router.post(
    "/completions",
    response_model=None,
    responses={
        **sse_answer(Completion, Completion, "the completion, or with stream true server-sent events"),
        **errors(*GENERATION_ERRORS, openai=True),
    },
)
async def completions(body: CompletionBody, request: Request) -> Response:
    """A plain completion of each prompt (no chat template), ``n`` choices each, one after the other: choice
    ``i * n + j`` is prompt ``i``'s ``j``-th, as OpenAI numbers them."""
    state = state_of(request)
    warn_extra(request, body)
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts or not all(prompts):
        raise ApiError("a prompt is empty; send some text to continue", param="prompt")
    if len(prompts) * body.n > MAX_CHOICES:
        raise ApiError(
            f"{len(prompts)} prompts x n={body.n} is more than {MAX_CHOICES} answers in one request", param="prompt"
        )
    if body.suffix:
        raise unsupported("suffix (fill-in-the-middle) is not supported by llmspell serve", param="suffix")
    if body.best_of not in (None, 1, body.n):
        raise unsupported("best_of is not supported: ask for n choices and pick yourself", param="best_of")
    if body.logprobs is not None and not 0 <= body.logprobs <= 5:
        raise ApiError(f"logprobs must be 0 to 5 on this endpoint, not {body.logprobs}", param="logprobs")
    opts = _options(body, body.max_tokens, logprobs=body.logprobs)
    jobs = [(prompt, o) for prompt in prompts for o in _seeds(opts, body.n)]

    opened = _Opened(state, body.model, request)

    async def open_choice(prompt: str, o: Options) -> Generation:
        return await opened.open(lambda b, s: b.complete(s, prompt, o))

    first = await open_choice(*jobs[0])
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    base = {"id": cid, "object": "text_completion", "created": created, "model": body.model}

    def choice(index: int, text: str, finish: str | None, lps: Any = None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": lps, "finish_reason": finish}

    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[dict[str, Any]]:
            stats: list[Stats | None] = []
            for index, (prompt, o) in enumerate(jobs):
                gen = first if index == 0 else await open_choice(prompt, o)
                lead = prompt if body.echo else ""
                if lead:
                    yield {**base, "choices": [choice(index, lead, None)]}
                offset = len(lead)
                async for chunk in gen.chunks():
                    if chunk.text or chunk.done:
                        lps = _legacy_logprobs(chunk.logprobs, offset) if body.logprobs is not None else None
                        offset += len(chunk.text)
                        finish = _finish(chunk.stats) if chunk.done else None
                        yield {**base, "choices": [choice(index, chunk.text, finish, lps)]}
                    if chunk.done:
                        stats.append(chunk.stats)
            if include_usage:
                yield {**base, "choices": [], "usage": _usage(stats, prompts=len(prompts), n=body.n)}

        return GenerationResponse(_sse(events(), request.url.path), opened.close_all, media_type="text/event-stream")
    results = []
    for index, (prompt, o) in enumerate(jobs):
        gen = first if index == 0 else await open_choice(prompt, o)
        text, stats, lps, _ = await gen.collect_all(request)
        lead = prompt if body.echo else ""
        logprobs = _legacy_logprobs(lps, len(lead)) if body.logprobs is not None else None
        results.append((choice(index, lead + text, _finish(stats), logprobs), stats))
    usage = _usage([stats for _, stats in results], prompts=len(prompts), n=body.n)
    return JSONResponse({**base, "choices": [c for c, _ in results], "usage": usage})
