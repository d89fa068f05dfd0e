"""The OpenAPI description of `llmspell serve`: what each route takes and what it answers, status by status.

The request models keep the server's own checks and messages; where a check is the server's (a model spec, a
keep-alive duration, an option's range) rather than pydantic's, the schema pieces here say the same thing, so
``/openapi.json`` describes what the routes really accept. Responses are documented, not enforced: each route
names its answer's model, its streams (NDJSON under /api, server-sent events under /v1) and its errors in the
dialect of its API. ``tests/server/test_openapi_fuzz.py`` runs schemathesis over the running server to hold the
description and the routes together.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from llmspell import __version__
from llmspell.optionspec import OptionSpec
from llmspell.types import MAX_KEEP_ALIVE, OPTIONS

# -- what a request may send --------------------------------------------------------------------------------------

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
#: a model spec the server parses: NAME[/NAME...][:VARIANT][@BACKEND or @ENDPOINT] (``smollm2:135m``,
#: ``local/qwen2.5:0.5b@ollama``, ``ORG/REPO:FILE``). A name ending in .gguf is a file path, which the server opens
#: only inside a --model-folder, so the pattern leaves paths out.
MODEL_SPEC = (
    rf"(?![^@\s]*\.[Gg][Gg][Uu][Ff](?:@|\s|$)){_SEGMENT}(?:/{_SEGMENT})*(?::{_SEGMENT})?"
    r"(?:@[A-Za-z0-9][A-Za-z0-9_-]{0,39})?"
)
MODEL_PATTERN = f"^{MODEL_SPEC}$"
#: an alias /api/create and /api/copy may make: a name with an optional :TAG, no backend, no folders
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(?::[A-Za-z0-9._-]+)?$"
#: seconds as text (``"300"``, ``"-1"``)
SECONDS_TEXT = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
#: a Go-style duration, as Ollama's clients send it (``"5m"``, ``"1h30m"``, ``"300ms"``)
DURATION_TEXT = r"(?:-?[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+"
#: the custom string format of a keep-alive duration, whose value must also be at most a year
KEEP_ALIVE_FORMAT = "keep-alive"

MODEL_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": MODEL_PATTERN,
    "description": "a model as /api/tags lists it (NAME:VARIANT, NAME@BACKEND, NAME@ENDPOINT); an unknown one is a 404",
    "examples": ["smollm2:135m"],
}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or null (a field a client may send as null to mean "not given")."""
    return {"anyOf": [schema, {"type": "null"}]}


KEEP_ALIVE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "maximum": MAX_KEEP_ALIVE},
        {"type": "string", "pattern": f"^(?:{SECONDS_TEXT}|{DURATION_TEXT})?$", "format": KEEP_ALIVE_FORMAT},
        {"type": "null"},
    ],
    "description": "how long the model stays loaded after this request: seconds, or a duration such as 5m or 1h; "
    "0 unloads it, a negative value keeps it loaded; at most a year",
}
#: an empty list or null: what the server takes for a feature it does not support
NONE_GIVEN: dict[str, Any] = {
    "anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}],
    "description": "not supported by llmspell serve: leave it out (a non-empty value is a 400)",
}
EMPTY_TEXT: dict[str, Any] = {
    "anyOf": [{"type": "string", "maxLength": 0}, {"type": "null"}],
    "description": "not supported by llmspell serve: leave it out (a non-empty value is a 400)",
}
#: how many likeliest tokens to report in each token's place
TOP_LOGPROBS: dict[str, Any] = nullable({"type": "integer", "minimum": 0, "maximum": 20})
STOP_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}},
        {"type": "null"},
    ],
    "description": "stop at any of these texts",
}
#: a JSON schema an answer must match: {} (any JSON value), or a schema with a type. llama.cpp's converter turns
#: it into a grammar, reading properties, items, enum, anyOf, $defs... as it does; one it cannot convert is a 400
FORMAT_OBJECT: dict[str, Any] = {
    "type": "object",
    "anyOf": [
        {"maxProperties": 0},
        {
            "required": ["type"],
            "properties": {"type": {"enum": ["string", "number", "integer", "boolean", "null", "object", "array"]}},
        },
    ],
    "description": "a JSON schema the answer must match: {} for any JSON value, else a schema with a type; "
    "llama.cpp's converter turns it into a grammar, and one it cannot convert is a 400 saying why",
}
FORMAT_SCHEMA: dict[str, Any] = {
    "anyOf": [{"const": "json"}, FORMAT_OBJECT, {"type": "null"}],
    "description": '"json" for any JSON value, or a JSON schema the answer must match',
}


#: a function's parameters: a JSON schema of type object ({} or null: no parameters); one that is not a valid JSON
#: schema, or that no value can match, is a 400 naming the function
TOOL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "anyOf": [
        {"maxProperties": 0},
        {
            "required": ["type"],
            "properties": {
                "type": {"const": "object"},
                "properties": {"type": "object", "additionalProperties": {"type": "object"}},
                "required": {"type": "array", "items": {"type": "string"}},
            },
        },
    ],
    "description": "a JSON schema of type object for the function's arguments",
}
#: OpenAI's rule for a function's name
FUNCTION_NAME: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "examples": ["get_weather"]}


def tools_schema(*, need_type: bool) -> dict[str, Any]:
    """The ``tools`` of a chat request: functions the model may call (OpenAI's shape; Ollama's may leave out type)."""
    function = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": FUNCTION_NAME,
            "description": nullable({"type": "string"}),
            "parameters": nullable(TOOL_PARAMETERS),
            "strict": nullable({"type": "boolean"}),
        },
    }
    tool = {
        "type": "object",
        "required": ["type", "function"] if need_type else ["function"],
        "properties": {"type": {"const": "function"}, "function": function},
    }
    return {
        "anyOf": [{"type": "array", "maxItems": 128, "items": tool}, {"type": "null"}],
        "description": "functions the model may call; the server returns the calls and never runs them",
    }


#: ``tool_choice``: none, auto, required, or one of the tools by name (the last two need tools)
TOOL_CHOICE: dict[str, Any] = {
    "anyOf": [
        {"enum": ["none", "auto", "required"]},
        {
            "type": "object",
            "required": ["type", "function"],
            "properties": {
                "type": {"const": "function"},
                "function": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
            },
        },
        {"type": "null"},
    ],
    "description": "none, auto, required, or a function of tools by name (required and a name need tools; a name "
    "must be one of theirs)",
}


def option_schema(o: OptionSpec, *, negative_means_unset: bool = False) -> dict[str, Any]:
    """The JSON schema of one option's value, from the option table (null means "the default")."""
    if o.kind == "stop":
        return STOP_SCHEMA
    if o.kind == "format":
        return FORMAT_SCHEMA
    kind = "integer" if o.kind == "int" else "number"
    ranged: dict[str, Any] = {"type": kind, "minimum": o.low, "maximum": o.high}
    if o.kind == "int":
        ranged = {"type": kind, "minimum": int(o.low or 0), "maximum": int(o.high or 0)}
    if negative_means_unset:
        # Ollama's num_predict: -1 is "no limit", -2 "fill the context"
        ranged = {"anyOf": [ranged, {"type": "integer", "maximum": -1}]}
    return {**nullable(ranged), "description": o.help}


#: llmspell's own option names (``POST /generate``'s ``options``): unknown names are a 400
LLMSPELL_OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {o.name: option_schema(o) for o in OPTIONS},
    "additionalProperties": False,
    "description": "llmspell's generation options",
}


def ollama_options_schema(ignored: frozenset[str], *, extra: bool) -> dict[str, Any]:
    """Ollama's ``options`` object: its option names (``num_predict``, ``num_ctx``...) with their ranges; the
    options that mean nothing to these engines are taken and ignored; other names are logged and ignored
    (``extra``) or refused."""
    props: dict[str, Any] = {
        o.ollama: option_schema(o, negative_means_unset=extra and o.name == "max_tokens") for o in OPTIONS if o.ollama
    }
    props.update({name: {"description": "taken and ignored: it means nothing to these engines"} for name in ignored})
    return {
        "type": "object",
        "properties": props,
        "additionalProperties": extra,
        "description": "Ollama's options; names llmspell does not know are ignored with a line in the log"
        if extra
        else "Ollama's PARAMETER names and values; an unknown name is a 400",
    }


def top_level_option(name: str) -> dict[str, Any]:
    """The schema of an option given outside ``options`` (``POST /generate`` takes some there)."""
    return next(option_schema(o) for o in OPTIONS if o.name == name)


# -- errors --------------------------------------------------------------------------------------------------------


class OllamaError(BaseModel):
    """An error under /api and the server's own routes: one line saying what went wrong and what to do."""

    error: str


class OpenAIErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """An error under /v1, as OpenAI writes it."""

    error: OpenAIErrorDetail


_WHY = {
    400: "the request is malformed or asks for what this server cannot do; the message names the field",
    401: "the server was started with --api-key and the request carries no key or a wrong one",
    403: "the Host header names another machine, or the Origin header a web page that is not allowed",
    404: "no such model (or no such backend or endpoint after '@')",
    409: "the model's file is not the server's to delete (a Python package's, the Hugging Face cache's, Ollama's)",
    501: "not offered by llmspell serve",
    502: "the hub the model is downloaded from failed",
    503: "the backend is unavailable, or too many requests wait for this model (--max-queue)",
    507: "not enough memory or disk for the model",
}


def errors(*codes: int, openai: bool = False) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route: each status with why it happens and the error body of its API."""
    model = OpenAIError if openai else OllamaError
    return {code: {"model": model, "description": _WHY[code]} for code in codes}


#: what a route that runs a model may answer besides its result
GENERATION_ERRORS = (400, 404, 503, 507)


#: models the document names by reference only (a stream's line, an event's data): added to its components
_REFERENCED: list[type[BaseModel]] = [OllamaError, OpenAIErrorDetail, OpenAIError]


def ndjson_answer(line: type[BaseModel], final: type[BaseModel] | None = None, what: str = "") -> dict[int | str, Any]:
    """A 200 that is one JSON object (``stream: false``) or NDJSON lines (``stream: true``, the default)."""
    _REFERENCED.append(line)
    item = {"anyOf": [_error_ref(line), _error_ref(OllamaError)]}
    return {
        200: {
            "model": final or line,
            "description": what
            or "the answer: one JSON object with stream false, else NDJSON lines, the last one "
            'with "done": true (an error after the first line is one last {"error": ...} line)',
            # as OpenAPI 3.2 reads a sequential media type: the schema is the whole stream, an array of its lines
            "content": {"application/x-ndjson": {"schema": {"type": "array", "items": item}}},
        }
    }


def sse_answer(event: type[BaseModel], final: type[BaseModel], what: str) -> dict[int | str, Any]:
    """A 200 that is one JSON object, or with ``stream: true`` server-sent events: ``data: <chunk>`` lines and a
    last ``data: [DONE]`` (an error after the start is one event holding OpenAI's error object)."""
    _REFERENCED.append(event)
    data = {
        "anyOf": [
            {"const": "[DONE]"},
            {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"anyOf": [_error_ref(event), _error_ref(OpenAIError)]},
            },
        ],
        "description": f"a {event.__name__} as JSON, an error object as JSON, or [DONE] (the last event)",
    }
    return {
        200: {
            "model": final,
            "description": what,
            "content": {
                "text/event-stream": {
                    "schema": {"type": "object", "required": ["data"], "properties": {"data": data}},
                }
            },
        }
    }


def _error_ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


# -- what the routes answer ----------------------------------------------------------------------------------------


class _Out(BaseModel):
    # documentation only: a later field in an answer is not an error for a client
    model_config = ConfigDict(extra="allow")


class Health(_Out):
    """``GET /health``: 200 when a backend is ready, 503 (same body) when none is."""

    status: Literal["ok", "unavailable"]
    version: str
    backends: list[dict[str, Any]]
    queues: dict[str, int]
    workers: list[dict[str, Any]]


class GenerateResult(_Out):
    """``POST /generate`` with ``stream: false``: the whole answer and its statistics."""

    text: str
    model: str
    stats: dict[str, Any]


class GenerateLine(_Out):
    """One NDJSON line of ``POST /generate`` with ``stream: true``; the last has ``done``, the model and stats."""

    text: str
    done: bool
    model: str | None = None
    stats: dict[str, Any] | None = None


class Version(_Out):
    """``GET /api/version``."""

    version: str
    llmspell_version: str


class ModelDetails(_Out):
    """What Ollama's listings say of a model's file."""

    parent_model: str
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str


class TagModel(_Out):
    """One model of ``GET /api/tags``."""

    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class Tags(_Out):
    """``GET /api/tags``: every model the server can run now."""

    models: list[TagModel]


class RunningModel(_Out):
    """One model of ``GET /api/ps``."""

    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int


class Running(_Out):
    """``GET /api/ps``: the models in memory."""

    models: list[RunningModel]


class Show(_Out):
    """``POST /api/show``: a model's template, details, facts and license."""

    license: str
    modelfile: str
    parameters: str
    system: str | None = None
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class TopLogprob(_Out):
    """One likely token in the place of the one written."""

    token: str
    logprob: float
    bytes: list[int]


class Logprob(TopLogprob):
    """A token written, its log-probability and the likeliest tokens in its place."""

    top_logprobs: list[TopLogprob]


class _Timings(_Out):
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    logprobs: list[Logprob] | None = None


class OllamaFunctionCall(_Out):
    """The function a call names, with its arguments as an object."""

    index: int
    name: str
    arguments: dict[str, Any]


class OllamaToolCall(_Out):
    """A tool call as Ollama writes it."""

    id: str
    function: OllamaFunctionCall


class AssistantMessage(_Out):
    """The model's turn (or a piece of it, in a stream); its tool calls come on a line of their own."""

    role: Literal["assistant"]
    content: str
    tool_calls: list[OllamaToolCall] | None = None


class ChatResponse(_Timings):
    """``POST /api/chat``: the answer (or one NDJSON line of it); the last line has ``done`` and the statistics. An
    empty ``messages`` loads the model (``done_reason: load``), with ``keep_alive: 0`` unloads it."""

    model: str
    created_at: str
    message: AssistantMessage
    done: bool


class GenerateResponse(_Timings):
    """``POST /api/generate``: the completion (or one NDJSON line of it). An empty ``prompt`` loads the model."""

    model: str
    created_at: str
    response: str
    done: bool


class StatusLine(_Out):
    """A progress line of ``/api/pull`` and ``/api/create`` (the last says ``success``)."""

    status: str
    total: int | None = None
    completed: int | None = None
    digest: str | None = None


class Embed(_Out):
    """``POST /api/embed``: one vector per input."""

    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class Embedding(_Out):
    """``POST /api/embeddings``: one vector (empty for an empty prompt, which only loads the model)."""

    embedding: list[float]


class ModelObject(_Out):
    """A model, as OpenAI's API lists it."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Out):
    """``GET /v1/models``."""

    object: Literal["list"]
    data: list[ModelObject]


class Usage(_Out):
    """Tokens read and written."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatLogprobs(_Out):
    """The logprobs of a chat choice."""

    content: list[Logprob]
    refusal: None = None


class FunctionCall(_Out):
    """The function a call names, with its arguments as JSON text."""

    name: str
    arguments: str


class ToolCallOut(_Out):
    """A tool call the model made."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessageOut(_Out):
    """The message of a chat completion choice (content null when the model only called tools)."""

    role: Literal["assistant"]
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(_Out):
    """One choice of a chat completion."""

    index: int
    message: ChatMessageOut
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: ChatLogprobs | None


class ChatCompletion(_Out):
    """``POST /v1/chat/completions`` with ``stream: false``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class FunctionDelta(_Out):
    """A piece of a call's function: the name on its first piece, the arguments' JSON text in pieces."""

    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Out):
    """A piece of one tool call, by its index; the first piece carries the id, type and name."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta | None = None


class ChatDelta(_Out):
    """What a chunk adds to a choice's message."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(_Out):
    """One choice's piece in a chat completion chunk."""

    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls"] | None


class ChatCompletionChunk(_Out):
    """One server-sent event of ``POST /v1/chat/completions`` with ``stream: true``."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionLogprobs(_Out):
    """The completions API's older logprobs: parallel lists and each token's offset in the text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(_Out):
    """One choice of a completion (or its piece in a chunk)."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class Completion(_Out):
    """``POST /v1/completions`` (or, with ``stream: true``, one server-sent event of it)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class EmbeddingObject(_Out):
    """One vector: floats, or base64 of little-endian float32 with ``encoding_format: base64``."""

    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingUsage(_Out):
    """Tokens read."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingList(_Out):
    """``POST /v1/embeddings``."""

    object: Literal["list"]
    data: list[EmbeddingObject]
    model: str
    usage: EmbeddingUsage


# -- the document --------------------------------------------------------------------------------------------------

_DESCRIPTION = (
    "Every model llmspell can run, over HTTP: the Ollama REST API under /api, the OpenAI API under /v1, and "
    'llmspell\'s own /health and /generate. Errors are Ollama\'s {"error": "..."} outside /v1 and OpenAI\'s error '
    "object under /v1. A method a path does not take is a 405 with an Allow header."
)


def install_openapi(app: FastAPI, *, api_key: bool) -> None:
    """Make ``app`` describe itself as it behaves: no 422 (a malformed body is a 400 naming the field), the 403 of
    the Host and Origin guards on every route, and with an API key the bearer scheme and its 401."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title="llmspell", version=__version__, description=_DESCRIPTION, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        _, named = models_json_schema(
            [(m, "serialization") for m in dict.fromkeys(_REFERENCED)], ref_template="#/components/schemas/{model}"
        )
        for name, schema in named.get("$defs", {}).items():
            schemas.setdefault(name, schema)
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path, operations in doc["paths"].items():
            error = _error_ref(OpenAIError if path.startswith("/v1/") else OllamaError)
            for operation in operations.values():
                responses = operation["responses"]
                responses.pop("422", None)
                responses.setdefault("403", _response(_WHY[403], error))
                if api_key and path != "/":
                    responses.setdefault("401", _response(_WHY[401], error))
                elif api_key:
                    operation["security"] = []  # the liveness probe answers without a key
        if api_key:
            doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            doc["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
