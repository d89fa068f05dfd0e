"""Embeddings in both APIs: Ollama's ``/api/embed`` and ``/api/embeddings``, OpenAI's ``/v1/embeddings``."""

from __future__ import annotations

import base64
import struct
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, WithJsonSchema

from llmspell import errors as E
from llmspell.server.access import model_shown, note
from llmspell.server.errors import ApiError, unsupported
from llmspell.server.ollama_api import OPTIONS_SCHEMA
from llmspell.server.openapi import (
    KEEP_ALIVE_SCHEMA,
    MODEL_SCHEMA,
    Embed,
    Embedding,
    EmbeddingList,
    errors,
    nullable,
)
from llmspell.server.state import state_of, unless_gone
from llmspell.server.wire import Whole, parse_keep_alive
from llmspell.types import Embeddings, Options
from llmspell.vectors import shorten

router = APIRouter()


async def embed(
    request: Request,
    model: str | None,
    texts: list[str],
    *,
    truncate: bool = True,
    dimensions: int | None = None,
    options: Options | None = None,
    keep_alive: float | None = None,
) -> Embeddings:
    """Resolve, admit and embed ``texts`` (a client that hangs up cancels it); vectors shortened to ``dimensions``."""
    state = state_of(request)
    backend, spec = await state.resolve(model)
    if dimensions is not None and dimensions < 1:
        raise ApiError(f"dimensions={dimensions} is too small; keep at least 1 value", param="dimensions")
    key = await state.model_key(backend, spec)
    state.admission.enter(key)
    try:
        if not texts:
            # an empty input is how Ollama clients load an embedding model
            if not await backend.has_model(spec):
                raise ApiError(f"model {model!r} not found", status=404, param="model", code="model_not_found")
            result = Embeddings([], spec.tag)
        else:
            work = backend.embed(spec, texts, truncate=truncate, options=options)
            result = await unless_gone(work, request)
    finally:
        state.admission.leave(key)
        await state.apply_keep_alive(backend, spec, keep_alive, key)
    try:
        vectors = shorten(result.vectors, dimensions)
    except E.InvalidOptions as exc:
        raise ApiError(exc.message, param="dimensions", hint=exc.hint) from None
    note(request, model=model_shown(model, spec), prompt_tokens=result.prompt_tokens)
    return Embeddings(vectors, result.model, result.prompt_tokens, result.load_time, result.total_time)


#: /api/embed's input: a text (empty: only load the model) or a list of texts (empty: the same), none of them empty
_INPUTS: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string", "minLength": 1}}],
    "default": "",
}
#: vectors shortened to their first N values (at most what the model gives: more is a 400)
_DIMENSIONS: dict[str, Any] = nullable({"type": "integer", "minimum": 1})


class OllamaEmbedBody(BaseModel):
    """``POST /api/embed``: one text or a list, each its own vector."""

    # strict types, as Ollama's; a model is required (the embed routes have no default model)
    model_config = ConfigDict(
        extra="allow", protected_namespaces=(), strict=True, json_schema_extra={"required": ["model"]}
    )

    model: Annotated[str | None, WithJsonSchema(MODEL_SCHEMA)] = None
    input: Annotated[str | list[str], WithJsonSchema(_INPUTS)] = ""
    truncate: bool = True
    dimensions: Annotated[Whole | None, WithJsonSchema(_DIMENSIONS)] = None
    options: Annotated[dict[str, Any] | None, WithJsonSchema(OPTIONS_SCHEMA)] = None
    keep_alive: Annotated[float | str | None, WithJsonSchema(KEEP_ALIVE_SCHEMA)] = None


class OllamaEmbeddingsBody(BaseModel):
    """``POST /api/embeddings``, Ollama's older route: one prompt, one vector."""

    model_config = ConfigDict(
        extra="allow", protected_namespaces=(), strict=True, json_schema_extra={"required": ["model"]}
    )

    model: Annotated[str | None, WithJsonSchema(MODEL_SCHEMA)] = None
    prompt: str = ""
    #: what some clients send instead of ``prompt`` (the name /api/embed uses)
    input: str | None = None
    options: Annotated[dict[str, Any] | None, WithJsonSchema(OPTIONS_SCHEMA)] = None
    keep_alive: Annotated[float | str | None, WithJsonSchema(KEEP_ALIVE_SCHEMA)] = None


@router.post("/api/embed", response_model=None, responses={200: {"model": Embed}, **errors(400, 404, 503, 507)})
async def ollama_embed(body: OllamaEmbedBody, request: Request) -> dict[str, Any]:
    """Vectors for ``input`` in Ollama's shape, durations in nanoseconds."""
    from llmspell.server.ollama_api import ollama_options, warn_extra

    warn_extra(request, body)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    texts = [t for t in texts if t] if isinstance(body.input, str) else texts
    started = time.perf_counter()
    result = await embed(
        request,
        body.model,
        texts,
        truncate=body.truncate,
        dimensions=body.dimensions,
        options=ollama_options(request, body.options),
        keep_alive=parse_keep_alive(body.keep_alive),
    )
    ns = 1_000_000_000
    return {
        "model": body.model,
        "embeddings": result.vectors,
        "total_duration": int((time.perf_counter() - started) * ns),
        "load_duration": int(result.load_time * ns),
        "prompt_eval_count": result.prompt_tokens,
    }


@router.post(
    "/api/embeddings", response_model=None, responses={200: {"model": Embedding}, **errors(400, 404, 503, 507)}
)
async def ollama_embeddings(body: OllamaEmbeddingsBody, request: Request) -> dict[str, Any]:
    """One vector for ``prompt`` (an empty prompt loads the model and gets an empty vector, as Ollama)."""
    from llmspell.server.ollama_api import ollama_options, warn_extra

    warn_extra(request, body)
    result = await embed(
        request,
        body.model,
        [text] if (text := body.prompt or body.input or "") else [],
        options=ollama_options(request, body.options),
        keep_alive=parse_keep_alive(body.keep_alive),
    )
    return {"embedding": result.vectors[0] if result.vectors else []}


#: what /v1/embeddings embeds: a text or a list of texts, none empty
_TEXTS: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
    ],
    "description": "a text or a list of texts, none empty (token ids are a 400: they mean nothing to this model)",
}


class OpenAIEmbeddingsBody(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True)

    model: Annotated[str, WithJsonSchema(MODEL_SCHEMA)]
    # token ids are taken so that their refusal says why (ids of another tokenizer mean nothing here)
    input: Annotated[str | list[str] | list[int] | list[list[int]], WithJsonSchema(_TEXTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[Whole | None, WithJsonSchema(_DIMENSIONS)] = None
    user: str | None = None


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "base64":
        # what the OpenAI clients ask for by default: little-endian float32, base64
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector


@router.post(
    "/v1/embeddings",
    response_model=None,
    responses={200: {"model": EmbeddingList}, **errors(400, 404, 503, 507, openai=True)},
)
async def openai_embeddings(body: OpenAIEmbeddingsBody, request: Request) -> dict[str, Any]:
    """Vectors for ``input`` in OpenAI's shape (floats, or base64 as the official clients ask)."""
    raw = body.input
    items = [raw] if isinstance(raw, str) else list(raw)
    if not items:
        raise ApiError("input is empty; send a text or a list of texts", param="input")
    if not all(isinstance(t, str) for t in items):
        raise unsupported(
            "input as token ids is not supported: ids of another tokenizer mean nothing to this model; send text",
            param="input",
            hint="LangChain's OpenAIEmbeddings sends ids unless created with check_embedding_ctx_length=False",
        )
    texts = [str(t) for t in items]
    if any(not t for t in texts):
        raise ApiError("input holds an empty text; each text must have some characters", param="input")
    result = await embed(request, body.model, texts, dimensions=body.dimensions)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(result.vectors)
        ],
        "model": body.model,
        "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
    }
