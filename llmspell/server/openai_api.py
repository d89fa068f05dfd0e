"""The OpenAI API (``/v1/*``) over the core: models, chat completions and completions, with SSE streaming."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from llmspell import errors as E
from llmspell.options import OPTIONS
from llmspell.server.errors import error_body, error_status, error_text
from llmspell.server.state import GenerationResponse, state_of
from llmspell.types import Chunk, Message, Options, Stats

router = APIRouter(prefix="/v1")


class _Body(BaseModel):
    # OpenAI answers 400 to parameters it does not know; so do we, naming them
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    user: str | None = None
    # accepted for compatibility; only their neutral value is honoured
    frequency_penalty: float | None = None
    presence_penalty: float | None = None


class ChatMessageIn(BaseModel):
    """One message of a chat completion request."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ResponseFormat(BaseModel):
    """``response_format``: text, any JSON, or JSON matching a schema."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None
    #: llama-cpp-python's extension: a schema attached to json_object
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class ChatCompletionBody(_Body):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = None
    response_format: ResponseFormat | None = None


class CompletionBody(_Body):
    """``POST /v1/completions``."""

    prompt: str | list[str]
    max_tokens: int | None = 16  # OpenAI's default for this endpoint
    echo: bool = False


def _format(rf: ResponseFormat | None) -> dict[str, Any] | str | None:
    """response_format as the core's format: a schema becomes a grammar (llama-cpp-python would ignore it)."""
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return rf.schema_ or "json"
    js = rf.json_schema or {}
    schema = js.get("schema")
    if not isinstance(schema, dict):
        raise E.InvalidOptions(
            "response_format json_schema needs a schema object",
            hint='send {"type": "json_schema", "json_schema": {"name": "x", "schema": {...}}}',
        )
    return schema


def _options(body: _Body, max_tokens: int | None, fmt: Any = None) -> Options:
    if body.n != 1:
        raise E.InvalidOptions(f"n={body.n} is not supported; ask for one choice (n=1)")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name) not in (None, 0, 0.0):
            raise E.InvalidOptions(f"{name} is not supported; use repeat_penalty through the Ollama API")
    # the sampling fields OpenAI shares with llmspell, by the option table's OpenAI names; max_tokens (two
    # spellings, a per-endpoint default), stop (a string or a list) and response_format are read above
    fields = body.model_dump()
    values: dict[str, Any] = {
        o.name: fields[o.openai] for o in OPTIONS if o.openai and o.name not in ("max_tokens", "stop")
    }
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return Options.from_dict({**values, "max_tokens": max_tokens, "stop": stop or None, "format": fmt})


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text":
            raise E.InvalidOptions(f"content parts of type {part.get('type')!r} are not supported; send text")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def _finish(stats: Stats | None) -> str:
    return "length" if stats is not None and stats.stop_reason == "length" else "stop"


def _usage(stats: Stats | None) -> dict[str, int]:
    p, c = (stats.prompt_tokens, stats.generated_tokens) if stats else (0, 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _sse(events: AsyncIterator[dict[str, Any]], path: str) -> AsyncIterator[bytes]:
    """Server-sent events ending with ``[DONE]``; an error after the start is one ``error`` event."""
    try:
        async for event in events:
            yield b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    except Exception as exc:  # the status line is sent already: the error can only be one last event
        yield b"data: " + json.dumps(error_body(path, error_text(exc), error_status(exc))).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    """Every model the core can run now."""
    found, _ = await state_of(request).hub.list_all()
    now = int(time.time())
    return {
        "object": "list",
        "data": [
            {
                "id": m.name if m.backend == "llamacpp" else f"{m.name}@{m.backend}",
                "object": "model",
                "created": now,
                "owned_by": "llmspell",
            }
            for m in found
            if m.source != "not downloaded"
        ],
    }


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionBody, request: Request) -> Response:
    """A chat completion, streamed as SSE chunks when ``stream`` is set."""
    state = state_of(request)
    messages = []
    for m in body.messages:
        role = "system" if m.role == "developer" else m.role
        messages.append(Message(role, _text(m.content)))
    opts = _options(body, body.max_completion_tokens or body.max_tokens, _format(body.response_format))
    gen = await state.open(body.model, lambda b, s: b.chat(s, messages, opts), request=request)
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    base = {"id": cid, "created": created, "model": body.model}
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[dict[str, Any]]:
            obj = {**base, "object": "chat.completion.chunk"}
            yield {
                **obj,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
            }
            async for chunk in gen.chunks():
                if chunk.text:
                    yield {**obj, "choices": [{"index": 0, "delta": {"content": chunk.text}, "finish_reason": None}]}
                if chunk.done:
                    yield {**obj, "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(chunk.stats)}]}
                    if include_usage:
                        yield {**obj, "choices": [], "usage": _usage(chunk.stats)}

        return GenerationResponse(_sse(events(), request.url.path), gen.close, media_type="text/event-stream")
    text, stats = await gen.collect(request)
    return JSONResponse(
        {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": _finish(stats),
                    "logprobs": None,
                }
            ],
            "usage": _usage(stats),
        }
    )


@router.post("/completions")
async def completions(body: CompletionBody, request: Request) -> Response:
    """A plain completion of the prompt (no chat template)."""
    state = state_of(request)
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise E.InvalidOptions("send one prompt per request (a list of exactly one string)")
        prompt = prompt[0]
    if not prompt:
        raise E.InvalidOptions("the prompt is empty", hint="send some text to continue")
    opts = _options(body, body.max_tokens)
    gen = await state.open(body.model, lambda b, s: b.complete(s, prompt, opts), request=request)
    cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    base = {"id": cid, "object": "text_completion", "created": created, "model": body.model}

    def choice(text: str, finish: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[dict[str, Any]]:
            if body.echo:
                yield {**base, "choices": [choice(prompt, None)]}
            async for chunk in gen.chunks():
                last: Chunk = chunk
                if chunk.text or chunk.done:
                    yield {**base, "choices": [choice(chunk.text, _finish(chunk.stats) if chunk.done else None)]}
            if include_usage:
                yield {**base, "choices": [], "usage": _usage(last.stats)}

        return GenerationResponse(_sse(events(), request.url.path), gen.close, media_type="text/event-stream")
    text, stats = await gen.collect(request)
    if body.echo:
        text = prompt + text
    return JSONResponse({**base, "choices": [choice(text, _finish(stats))], "usage": _usage(stats)})
