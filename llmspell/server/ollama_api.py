"""The Ollama REST API (``/api/*``) over the core, as Ollama documents it: NDJSON streams, nanosecond stats."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from llmspell import __version__
from llmspell import errors as E
from llmspell.aliases import _IGNORED_PARAMETERS, Alias, alias_name, parameters, parse_modelfile
from llmspell.backends.base import Backend
from llmspell.options import OLLAMA_OPTIONS
from llmspell.server.access import write_line
from llmspell.server.errors import ApiError, unsupported
from llmspell.server.openapi import (
    ALIAS_PATTERN,
    EMPTY_TEXT,
    FORMAT_OBJECT,
    GENERATION_ERRORS,
    KEEP_ALIVE_SCHEMA,
    MODEL_SCHEMA,
    MODEL_SPEC,
    NONE_GIVEN,
    ChatResponse,
    GenerateResponse,
    OllamaError,
    Running,
    Show,
    StatusLine,
    Tags,
    Version,
    errors,
    ndjson_answer,
    nullable,
    ollama_options_schema,
    tools_schema,
)
from llmspell.server.state import Generation, GenerationResponse, ServerState, state_of
from llmspell.server.toolwire import call_id, chat_start, check_tools, collect_answer
from llmspell.server.wire import (
    Whole,
    check_format,
    check_stop,
    ndjson,
    now_iso,
    parse_keep_alive,
    stats_ns,
    whole,
    whole_options,
)
from llmspell.spec import ModelSpec
from llmspell.types import Chunk, Message, ModelInfo, Options, TokenLogprob, ToolCall

router = APIRouter()

#: the Ollama release whose API (routes, fields, logprobs, embed dimensions) this server follows
OLLAMA_API_VERSION = "0.13.0"

#: Ollama options with no meaning for these engines; Ollama itself lets a model ignore what it does not use
_OPTION_IGNORED = frozenset(
    {
        "numa",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_keep",
        "tfs_z",
        "typical_p",
        "repeat_last_n",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "penalize_newline",
        "rope_frequency_base",
        "rope_frequency_scale",
        "num_gqa",
    }
)


def ollama_options(request: Request, raw: dict[str, Any] | None, fmt: Any = None) -> Options:
    """Ollama's ``options`` and ``format`` as llmspell Options. Ollama's own options with no meaning for these
    engines are ignored, as Ollama lets a model ignore them; other names are logged (a 400 with --strict); a bad
    value of a known option is an error."""
    raw = raw or {}
    unknown = sorted(k for k in raw if k not in OLLAMA_OPTIONS and k not in _OPTION_IGNORED)
    if unknown:
        state_of(request).ignored(request, "unknown option(s)", unknown)
    values = whole_options({OLLAMA_OPTIONS[k]: v for k, v in raw.items() if k in OLLAMA_OPTIONS and v is not None})
    if isinstance(values.get("max_tokens"), int) and not isinstance(values["max_tokens"], bool):
        if values["max_tokens"] < 0:  # -1 is "no limit", -2 "fill the context" in Ollama
            del values["max_tokens"]
    if isinstance(check_stop(values.get("stop")), list):
        values["stop"] = tuple(values["stop"])
    if fmt not in (None, ""):
        if fmt != "json" and not isinstance(fmt, dict):
            raise E.InvalidOptions('format must be "json" or a JSON schema object')
        values["format"] = check_format(fmt)
    return Options.from_dict(values)


def warn_extra(request: Request, body: BaseModel) -> None:
    """Top-level fields Ollama does not have (or that it ignores, like ``truncate`` on chat): logged, not refused."""
    extra = sorted(body.model_extra or {})
    if extra:
        state_of(request).ignored(request, "unknown field(s)", extra)


#: the body names its model in ``model`` or in ``name``
_MODEL_OR_NAME: dict[str, Any] = {
    "anyOf": [
        {"required": ["model"], "properties": {"model": {"type": "string"}}},
        {"required": ["name"], "properties": {"name": {"type": "string"}}},
    ]
}
#: the options object of Ollama's generation routes
OPTIONS_SCHEMA = nullable(ollama_options_schema(frozenset(_OPTION_IGNORED), extra=True))


class _Body(BaseModel):
    # Ollama ignores fields it does not know (clients send newer ones, such as truncate or shift); so do we,
    # with a line in the log, or a 400 under --strict. Types are strict, as Ollama's Go decoder: "stream": "no"
    # or "stream": 0 is a 400, not a guess.
    model_config = ConfigDict(extra="allow", protected_namespaces=(), strict=True, json_schema_extra=_MODEL_OR_NAME)

    model: Annotated[str | None, WithJsonSchema(nullable(MODEL_SCHEMA))] = None
    #: the older name of ``model`` that Ollama still accepts
    name: Annotated[str | None, WithJsonSchema(nullable({**MODEL_SCHEMA, "description": "model's older name"}))] = None

    @model_validator(mode="after")
    def _model_or_name(self) -> _Body:
        if not self.model and self.name:
            self.model = self.name
        return self


#: an assistant's tool call sent back, as Ollama writes it: the function with its arguments as an object (the id
#: and index newer servers add are optional)
_OLLAMA_CALL_IN: dict[str, Any] = {
    "type": "object",
    "required": ["function"],
    "properties": {
        "id": nullable({"type": "string"}),
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "index": nullable({"type": "integer"}),
                "name": {"type": "string", "minLength": 1},
                "arguments": nullable({"type": "object"}),
            },
        },
    },
}
#: only an assistant message carries tool calls
_CALLS_ON_ASSISTANT: dict[str, Any] = {
    "anyOf": [
        {"properties": {"role": {"const": "assistant"}}},
        {"properties": {"tool_calls": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}}},
    ]
}


class ChatMessage(BaseModel):
    """One message of ``/api/chat``."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra=_CALLS_ON_ASSISTANT)

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: Annotated[list[Any] | None, WithJsonSchema(NONE_GIVEN)] = None
    tool_calls: Annotated[list[Any] | None, WithJsonSchema(nullable({"type": "array", "items": _OLLAMA_CALL_IN}))] = (
        None
    )
    #: the tool a tool message answers for (Ollama's clients send this), or the call's id (newer servers')
    tool_name: str | None = None
    tool_call_id: str | None = None
    thinking: str | None = None


class _GenBody(_Body):
    format: Annotated[
        Literal["", "json"] | dict[str, Any] | None,
        WithJsonSchema({"anyOf": [{"enum": ["", "json"]}, FORMAT_OBJECT, {"type": "null"}]}),
    ] = None
    options: Annotated[dict[str, Any] | None, WithJsonSchema(OPTIONS_SCHEMA)] = None
    stream: bool = True
    keep_alive: Annotated[float | str | None, WithJsonSchema(KEEP_ALIVE_SCHEMA)] = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[
        Whole | None, WithJsonSchema(nullable({"type": "integer", "minimum": 0, "maximum": 20}))
    ] = None


class ChatBody(_GenBody):
    """``POST /api/chat``."""

    # a call's arguments follow its tool's schema: a format beside tools is a 400
    model_config = ConfigDict(
        json_schema_extra={
            **_MODEL_OR_NAME,
            "allOf": [
                {
                    "anyOf": [
                        {"properties": {"tools": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}}},
                        {"properties": {"format": {"enum": ["", None]}}},
                    ]
                }
            ],
        }
    )

    messages: list[ChatMessage] = []
    tools: Annotated[list[Any] | None, WithJsonSchema(tools_schema(need_type=False))] = None


class GenerateBody(_GenBody):
    """``POST /api/generate``."""

    prompt: str = ""
    suffix: Annotated[str | None, WithJsonSchema(EMPTY_TEXT)] = None
    system: str | None = None
    template: Annotated[str | None, WithJsonSchema(EMPTY_TEXT)] = None
    context: list[Whole] | None = None
    raw: bool = False
    images: Annotated[list[Any] | None, WithJsonSchema(NONE_GIVEN)] = None


class ModelBody(_Body):
    """``/api/show`` and ``/api/delete``."""

    verbose: bool | None = None


_DELETABLE = nullable({**MODEL_SCHEMA, "examples": ["smollm2-brief"]})


class DeleteBody(ModelBody):
    """``DELETE /api/delete`` (the example is the named model /api/create's example makes)."""

    model: Annotated[str | None, WithJsonSchema(_DELETABLE)] = None
    name: Annotated[str | None, WithJsonSchema(_DELETABLE)] = None


class PullBody(_Body):
    """``POST /api/pull``."""

    insecure: bool | None = None
    stream: bool = True


def _unsupported(what: str) -> E.InvalidOptions:
    return E.InvalidOptions(f"{what} are not supported by llmspell serve", hint="send text messages only")


def _display_name(m: ModelInfo) -> str:
    return m.name if m.backend == "llamacpp" else f"{m.name}@{m.backend}"


def _details(m: ModelInfo) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": m.family or "",
        "families": [m.family] if m.family else None,
        "parameter_size": m.parameters or "",
        "quantization_level": m.quantization or "",
    }


def _modified(m: ModelInfo) -> str:
    if m.extra.get("modified_at"):
        return str(m.extra["modified_at"])  # a named model: when it was made
    try:
        ts = Path(m.location).stat().st_mtime
    except (OSError, ValueError):
        return now_iso()
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


_PROBE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string", "const": "Ollama is running"}}}}
}


@router.get("/", response_class=PlainTextResponse, responses=_PROBE)
@router.head("/", response_class=PlainTextResponse, responses=_PROBE)
async def root() -> PlainTextResponse:
    """What Ollama answers, so tools that probe for a server find one."""
    return PlainTextResponse("Ollama is running")


@router.get("/api/version", response_model=None, responses={200: {"model": Version}})
@router.head("/api/version", response_model=None, responses={200: {"model": Version}})
async def version() -> dict[str, str]:
    """The Ollama release whose API this server follows (clients compare it to enable features), and
    llmspell's own version beside it."""
    return {"version": OLLAMA_API_VERSION, "llmspell_version": __version__}


@router.get("/api/tags", response_model=None, responses={200: {"model": Tags}})
@router.head("/api/tags", response_model=None, responses={200: {"model": Tags}})
async def tags(request: Request) -> dict[str, Any]:
    """Every model the core can run now, from every ready backend."""
    models, _failed = await state_of(request).hub.list_all()
    return {
        "models": [
            {
                "name": _display_name(m),
                "model": _display_name(m),
                "modified_at": _modified(m),
                "size": m.size_bytes or 0,
                "digest": m.sha256 or "",
                "details": _details(m),
            }
            for m in models
            if m.source != "not downloaded"
        ]
    }


@router.post("/api/show", response_model=None, responses={200: {"model": Show}, **errors(400, 404, 503)})
async def show(body: ModelBody, request: Request) -> dict[str, Any]:
    """Template, details, architecture facts and license of one model."""
    state = state_of(request)
    backend, spec = await state.resolve(body.model)
    info = await backend.info(spec)
    arch = info.extra.get("architecture") or info.family or "llama"
    model_info: dict[str, Any] = {"general.architecture": arch, "general.basename": info.name}
    if info.extra.get("parameter_count"):
        model_info["general.parameter_count"] = info.extra["parameter_count"]
    if info.context_length:
        model_info[f"{arch}.context_length"] = info.context_length
    alias = state.hub.aliases.get(body.model or "")
    modelfile = f"# served by llmspell {__version__}\n" + (alias.modelfile if alias else f"FROM {info.location}\n")
    params = "\n".join(line.removeprefix("PARAMETER ") for line in modelfile.splitlines() if line.startswith("PARAM"))
    return {
        "license": info.license or "",
        "modelfile": modelfile,
        "parameters": params,
        **({"system": alias.system} if alias and alias.system else {}),
        "template": info.chat_template or "",
        "details": _details(info),
        "model_info": model_info,
        "capabilities": _capabilities(backend, info),
        "modified_at": _modified(info),
    }


def _capabilities(backend: Backend, info: ModelInfo) -> list[str]:
    """What clients may ask of a model, as its backend reports it (a remote Ollama's own list, the embedded
    backend's: completion unless an encoder, embedding always); else completion."""
    given = info.extra.get("capabilities")
    if isinstance(given, list) and given:
        return [str(c) for c in given]
    return ["completion", "embedding"] if backend.IMPLEMENTS_EMBED else ["completion"]


#: a line of a Modelfile the server takes (a text may not span lines here; SYSTEM """...""" may, in fact)
_TEXT = r"[^\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"
_MODELFILE_LINE = rf"(?:#{_TEXT}*|(?:SYSTEM|LICENSE)(?: (?![ ]*\"\"\"){_TEXT}*)?|FROM {MODEL_SPEC}|)"
MODELFILE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": rf"^(?:{_MODELFILE_LINE}\n)*FROM {MODEL_SPEC}(?:\n{_MODELFILE_LINE})*$"},
        {"type": "null"},
    ],
    "description": "a Modelfile: FROM (the model it is made from), SYSTEM and PARAMETER lines; TEMPLATE, ADAPTER "
    "and MESSAGE are a 400",
}
_ALIAS_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": ALIAS_PATTERN,
    "description": "the new model's name: NAME or NAME:TAG (not a name a model already has)",
    "examples": ["smollm2-brief"],
}
_NO_OBJECT: dict[str, Any] = {
    "anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}],
    "description": "not supported by llmspell serve: leave it out (a non-empty value is a 400)",
}


class CreateBody(_Body):
    """``POST /api/create``: a named model from an existing one, by fields or by a Modelfile."""

    # a name (``model``, or ``name`` as older clients send it) and what it is made from (``from``, or a FROM line)
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name, source], "properties": {name: {"type": "string"}, source: {"type": "string"}}}
                for name in ("model", "name")
                for source in ("from", "modelfile")
            ]
        }
    )

    model: Annotated[str | None, WithJsonSchema(_ALIAS_SCHEMA)] = None
    name: Annotated[str | None, WithJsonSchema(_ALIAS_SCHEMA)] = None
    from_: Annotated[str | None, WithJsonSchema(nullable(MODEL_SCHEMA))] = Field(default=None, alias="from")
    modelfile: Annotated[str | None, WithJsonSchema(MODELFILE_SCHEMA)] = None
    system: str | None = None
    template: Annotated[str | None, WithJsonSchema(EMPTY_TEXT)] = None
    parameters: Annotated[
        dict[str, Any] | None,
        WithJsonSchema(nullable(ollama_options_schema(_IGNORED_PARAMETERS, extra=False))),
    ] = None
    license: str | list[str] | None = None
    messages: Annotated[list[Any] | None, WithJsonSchema(NONE_GIVEN)] = None
    files: Annotated[dict[str, Any] | None, WithJsonSchema(_NO_OBJECT)] = None
    adapters: Annotated[dict[str, Any] | None, WithJsonSchema(_NO_OBJECT)] = None
    quantize: Annotated[str | None, WithJsonSchema(EMPTY_TEXT)] = None
    stream: bool = True


class CopyBody(BaseModel):
    """``POST /api/copy``."""

    model_config = ConfigDict(extra="allow", strict=True)

    source: Annotated[str, WithJsonSchema(MODEL_SCHEMA)]
    destination: Annotated[str, WithJsonSchema(_ALIAS_SCHEMA)]


async def _make_alias(state: ServerState, name: str, source: str, system: str | None, params: dict[str, Any]) -> Alias:
    """Check and store an alias of ``source`` (an alias of an alias is made of the first one's model)."""
    name = alias_name(name)
    base = state.hub.aliases.get(source)
    if base is not None:
        source, system, params = base.target, system or base.system, {**base.options, **params}
    backend, spec = await state.resolve(source)
    if not await backend.has_model(spec):
        raise E.ModelNotFound(f"model {source!r} not found", hint="see /api/tags, or pull it with /api/pull")
    if state.hub.aliases.get(name) is None:
        # a name that already means a model (downloaded or not: a catalog name) would hide it: never taken
        taken = False
        with contextlib.suppress(E.LLMSpellError):
            other, other_spec = await state.resolve(name)
            taken = await other.has_model(other_spec) or bool(await other.info(other_spec))
        if taken:
            raise ApiError(f"{name!r} is already the name of a model; choose another name", param="model")
    # the model's own name on its backend, as the backend lists it: the alias lists beside it and runs there
    target = f"{await backend.canonical_name(spec)}@{backend.name}"
    return state.hub.aliases.put(Alias(name, target, system or None, params))


@router.post(
    "/api/create",
    response_model=None,
    responses={
        **ndjson_answer(StatusLine, what="progress: one JSON object with stream false, else NDJSON lines"),
        **errors(400, 404, 503),
    },
)
async def create(body: CreateBody, request: Request) -> Any:
    """A named model made from an existing one: FROM, SYSTEM and PARAMETER lines (or the same fields)."""
    state = state_of(request)
    if not body.model:
        raise E.InvalidSpec("the request names no model to create", hint='send {"model": "NAME", "from": "MODEL"}')
    sheet = parse_modelfile(body.modelfile) if body.modelfile else {"parameters": {}}
    for what, given in (
        ("files", body.files),
        ("adapters", body.adapters or sheet.get("adapter")),
        ("quantize", body.quantize),
        ("messages", body.messages or sheet.get("messages")),
    ):
        if given:
            raise unsupported(
                f"{what} in /api/create is not supported by llmspell serve: it makes a named model FROM an "
                "existing one, with SYSTEM and PARAMETER lines",
                param=what,
            )
    if body.template or sheet.get("template"):
        raise unsupported(
            "TEMPLATE is not supported: Ollama's templates are Go templates, and llmspell renders each model's own "
            "Jinja chat template; leave TEMPLATE out",
            param="template",
        )
    source = body.from_ or sheet.get("from")
    if not source:
        raise ApiError("the new model needs a FROM: the model it is made from", param="from")
    # null is "not set", as in options; a whole number may come as 7.0
    given = {k: whole(v) for k, v in (body.parameters or {}).items() if v is not None}
    check_stop(given.get("stop"))
    params = parameters({**sheet["parameters"], **given})
    alias = await _make_alias(state, body.model, source, body.system or sheet.get("system"), params)
    lines = [{"status": f"using {alias.target}"}, {"status": f"writing {alias.name}"}, {"status": "success"}]
    if not body.stream:
        return {"status": "success"}

    async def items() -> AsyncIterator[dict[str, Any]]:
        for line in lines:
            yield line

    return StreamingResponse(ndjson(items()), media_type="application/x-ndjson")


@router.post(
    "/api/copy",
    response_class=Response,
    responses={200: {"description": "the copy is made (no body)"}, **errors(400, 404, 503)},
)
async def copy(body: CopyBody, request: Request) -> Response:
    """Another name for a model (an alias, kept under LLMSPELL_HOME; removed with /api/delete)."""
    state = state_of(request)
    await _make_alias(state, body.destination, body.source.removesuffix(":latest"), None, {})
    return Response(status_code=200)


@router.post(
    "/api/push",
    status_code=501,
    response_model=None,
    responses={501: {"model": OllamaError, "description": "always: llmspell has no registry to push to"}},
)
async def push(request: Request) -> JSONResponse:
    """Not offered: llmspell has no registry to push a model to."""
    message = "pushing models is not supported by llmspell serve: it has no registry to push to"
    return JSONResponse({"error": message}, status_code=501)


@router.get("/api/ps", response_model=None, responses={200: {"model": Running}})
async def ps(request: Request) -> dict[str, Any]:
    """Models in memory now, with size and when they will be unloaded."""
    state = state_of(request)
    models, _ = await state.hub.list_all()
    by_name = {(m.backend, m.name): m for m in models}
    out = []
    for backend in state.hub.backends.values():
        try:
            names = await backend.loaded()
        except E.LLMSpellError:
            continue
        for name in names:
            m = by_name.get((backend.name, name)) or ModelInfo(name=name, backend=backend.name)
            out.append(
                {
                    "name": _display_name(m),
                    "model": _display_name(m),
                    "size": m.size_bytes or 0,
                    "digest": m.sha256 or "",
                    "details": _details(m),
                    "expires_at": await state.expires_at(backend, name),
                    "size_vram": 0,
                }
            )
    return {"models": out}


def _call_in(value: Any, where: str) -> ToolCall:
    """One tool call of an assistant message sent back, as Ollama writes it (arguments as an object, the id
    optional: one is made up, and the tool message answering it is matched by name or order)."""
    function = value.get("function") if isinstance(value, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise E.InvalidOptions(f'{where} needs "function": {{"name": ..., "arguments": {{...}}}}')
    index = function.get("index")
    if (
        value.get("type", "function") != "function"
        or isinstance(index, bool)
        or not isinstance(index, (int, type(None)))
    ):
        raise E.InvalidOptions(f"{where}: type must be 'function' and function.index a whole number")
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise E.InvalidOptions(f"{where}.function.arguments must be an object, as Ollama writes them")
    given = value.get("id")
    if given is not None and not isinstance(given, str):
        raise E.InvalidOptions(f"{where}.id must be a text")
    return ToolCall(given or call_id(), function["name"], dict(arguments or {}))


def _chat_messages(body: ChatBody) -> list[Message]:
    """The conversation as the core's messages. Ollama's tool message names its tool (``tool_name``) rather than
    the call it answers: it is matched to the earliest unanswered call of that name, else of any name; by its
    ``tool_call_id`` when it has one."""
    out: list[Message] = []
    open_calls: list[ToolCall] = []
    for i, m in enumerate(body.messages):
        if m.images:
            raise _unsupported("images")
        if m.tool_calls and m.role != "assistant":
            raise E.InvalidOptions(f"messages[{i}]: only an assistant message has tool_calls")
        if m.role == "tool":
            call = _answered(open_calls, m.tool_call_id, m.tool_name)
            if call is not None:
                open_calls.remove(call)
            name = call.name if call is not None else m.tool_name
            out.append(Message("tool", m.content, tool_call_id=call.id if call else m.tool_call_id or call_id(),
                               name=name))  # fmt: skip
            continue
        calls = tuple(_call_in(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(m.tool_calls or ()))
        if calls:
            open_calls = list(calls)
        out.append(Message(m.role, m.content, tool_calls=calls))
    return out


def _answered(calls: list[ToolCall], call_id: str | None, name: str | None) -> ToolCall | None:
    """The unanswered call a tool message answers: by id; else the first of its tool's name, else the first open
    one (Ollama's clients send the tool's name, and models sometimes misspell it)."""
    for call in calls:
        if call_id and call.id == call_id:
            return call
    for call in calls:
        if name and call.name == name:
            return call
    return calls[0] if calls and not call_id else None


def _call_out(n: int, call: ToolCall) -> dict[str, Any]:
    """A tool call as Ollama writes it: an id, and the function with its place and its arguments as an object."""
    return {"id": call.id, "function": {"index": n, "name": call.name, "arguments": call.arguments}}


def _calls_out(calls: Sequence[ToolCall]) -> tuple[list[dict[str, Any]], str]:
    """The calls Ollama can write, and the text of those it cannot: arguments that are not a JSON object are the
    model's text, as Ollama itself returns a call it cannot parse."""
    good = [c for c in calls if not c.raw]
    text = "".join(f'{{"name": "{c.name}", "arguments": {c.raw}}}' for c in calls if c.raw)
    return [_call_out(n, c) for n, c in enumerate(good)], text


async def _load_or_unload(
    state: ServerState, body: _GenBody, keep_alive: float | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """An empty request is how Ollama clients load (or, with keep_alive 0, unload) a model."""
    backend, spec = await state.resolve(body.model)
    if keep_alive == 0:
        await backend.unload(spec)
        reason = "unload"
    else:
        if not await backend.has_model(spec):
            raise E.ModelNotFound(f"model {body.model!r} not found", hint="see /api/tags, or pull it with /api/pull")
        reason = "load"
    return {"model": body.model, "created_at": now_iso(), **extra, "done": True, "done_reason": reason}


async def _respond(gen: Generation, model: str | None, stream: bool, request: Request, piece: Any) -> Response:
    if stream:

        async def items() -> AsyncIterator[dict[str, Any]]:
            async for chunk in gen.chunks():
                if chunk.text or chunk.done:
                    yield _line(model, chunk, piece)

        return GenerationResponse(ndjson(items()), gen.close, media_type="application/x-ndjson")
    text, stats, logprobs, _ = await gen.collect_all(request)
    out = {"model": model, "created_at": now_iso(), **piece(text), "done": True, **stats_ns(stats)}
    if logprobs:
        out["logprobs"] = wire_logprobs(logprobs)
    return JSONResponse(out)


def _line(model: str | None, chunk: Chunk, piece: Any) -> dict[str, Any]:
    line = {"model": model, "created_at": now_iso(), **piece(chunk.text), "done": chunk.done}
    if chunk.logprobs:
        line["logprobs"] = wire_logprobs(chunk.logprobs)
    if chunk.done and chunk.stats is not None:
        line.update(stats_ns(chunk.stats))
    return line


def wire_logprobs(items: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """Logprobs as Ollama and OpenAI's chat API both write them: token, logprob, bytes, top_logprobs."""
    return [
        {
            "token": lp.token,
            "logprob": lp.logprob,
            "bytes": list(lp.bytes),
            "top_logprobs": [{"token": t, "logprob": v, "bytes": list(b)} for t, v, b in lp.top],
        }
        for lp in items
    ]


def _think(request: Request, body: _GenBody) -> None:
    """``think`` asks for the model's reasoning apart from its answer, which llmspell does not separate yet."""
    if body.think not in (None, False, ""):
        write_line(
            f"warning: {request.method} {request.url.path}: ignored think={body.think!r}: llmspell serve does not "
            "separate a model's thinking from its answer (a thinking model writes it into the answer)"
        )


def _with_logprobs(opts: Options, body: _GenBody) -> Options:
    """Ollama's top-level ``logprobs`` and ``top_logprobs`` as the core's option."""
    top = body.top_logprobs or 0
    if not 0 <= top <= 20:
        raise E.InvalidOptions(f"top_logprobs must be 0 to 20, not {top}")
    if not body.logprobs:
        return opts
    return opts.with_values({"logprobs": top})


@router.post(
    "/api/chat",
    response_model=None,
    responses={**ndjson_answer(ChatResponse), **errors(*GENERATION_ERRORS)},
)
async def chat(body: ChatBody, request: Request) -> Any:
    """A chat turn, streamed as NDJSON (or one object with ``stream: false``)."""
    state = state_of(request)
    warn_extra(request, body)
    _think(request, body)
    tools = check_tools(body.tools, need_type=False)
    messages = _chat_messages(body)
    opts = _with_logprobs(ollama_options(request, body.options, body.format), body)
    keep_alive = parse_keep_alive(body.keep_alive)

    def piece(text: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": text}}

    if not messages:
        return await _load_or_unload(state, body, keep_alive, piece(""))
    start = chat_start(messages, opts, tools, None, "tools" if tools else "messages")
    gen = await state.open(body.model, start, keep_alive, request)
    if body.stream:
        return _respond_chat_stream(gen, body.model)
    text, stats, logprobs, calls = await collect_answer(gen, request)
    wire_calls, unparsed = _calls_out(calls)
    message: dict[str, Any] = {"role": "assistant", "content": text + unparsed}
    if wire_calls:
        message["tool_calls"] = wire_calls
    out = {"model": body.model, "created_at": now_iso(), "message": message, "done": True, **stats_ns(stats)}
    if logprobs:
        out["logprobs"] = wire_logprobs(logprobs)
    return JSONResponse(out)


def _respond_chat_stream(gen: Generation, model: str | None) -> Response:
    """/api/chat's NDJSON lines: the text as it comes; tool calls on a line of their own before the last, as Ollama
    sends them."""

    def piece(text: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": text}}

    async def items() -> AsyncIterator[dict[str, Any]]:
        async for chunk in gen.chunks():
            if chunk.done and chunk.tool_calls:
                wire_calls, unparsed = _calls_out(chunk.tool_calls)
                message: dict[str, Any] = {"role": "assistant", "content": unparsed}
                if wire_calls:
                    message["tool_calls"] = wire_calls
                yield {"model": model, "created_at": now_iso(), "message": message, "done": False}
            if chunk.text or chunk.done:
                yield _line(model, chunk, piece)

    return GenerationResponse(ndjson(items()), gen.close, media_type="application/x-ndjson")


@router.post(
    "/api/generate",
    response_model=None,
    responses={**ndjson_answer(GenerateResponse), **errors(*GENERATION_ERRORS)},
)
async def generate(body: GenerateBody, request: Request) -> Any:
    """A completion of one prompt (through the chat template unless ``raw``), streamed as NDJSON."""
    state = state_of(request)
    if body.images:
        raise _unsupported("images")
    if body.suffix:
        raise E.InvalidOptions("suffix (fill-in-the-middle) is not supported by llmspell serve")
    if body.template:
        raise E.InvalidOptions("a template override is not supported by llmspell serve", hint="leave template out")
    warn_extra(request, body)
    _think(request, body)
    opts = _with_logprobs(ollama_options(request, body.options, body.format), body)
    keep_alive = parse_keep_alive(body.keep_alive)

    def piece(text: str) -> dict[str, Any]:
        return {"response": text}

    if not body.prompt:
        return await _load_or_unload(state, body, keep_alive, piece(""))

    def start(backend: Backend, spec: ModelSpec) -> AsyncGenerator[Chunk, None]:
        if body.raw:
            return backend.complete(spec, body.prompt, opts)
        messages = [Message("system", body.system)] if body.system else []
        messages.append(Message("user", body.prompt))
        return _chat_or_plain(backend, spec, messages, body.prompt, opts, plain_ok=not body.system)

    gen = await state.open(body.model, start, keep_alive, request)
    return await _respond(gen, body.model, body.stream, request, piece)


async def _chat_or_plain(
    backend: Backend, spec: ModelSpec, messages: list[Message], prompt: str, opts: Options, *, plain_ok: bool
) -> AsyncGenerator[Chunk, None]:
    """Through the chat template; a base model without one gets the bare prompt, as Ollama's default template."""
    stream = backend.chat(spec, messages, opts)
    try:
        try:
            first = await anext(stream)
        except E.NoChatTemplate:
            if not plain_ok:
                raise
            await stream.aclose()
            stream = backend.complete(spec, prompt, opts)
            first = await anext(stream)
        yield first
        if first.done:
            return
        async for chunk in stream:
            yield chunk
    finally:
        await stream.aclose()


@router.post(
    "/api/pull",
    response_model=None,
    responses={
        **ndjson_answer(StatusLine, what="progress: one JSON object with stream false, else NDJSON lines"),
        **errors(400, 404, 502, 503, 507),
    },
)
async def pull(body: PullBody, request: Request) -> Any:
    """Download a model through the core (Hugging Face for the embedded engine), streaming progress."""
    state = state_of(request)
    model = (body.model or "").removesuffix(":latest")
    if not model:
        # the hub would pull the default model for an empty name; a pull must say what it fetches
        raise E.InvalidSpec("the request names no model to pull", hint='send {"model": "NAME"} (see /api/tags)')
    state.known_backend(state.hub.spec(model))
    stream = state.hub.pull(model)
    try:
        first = await anext(stream)
    except BaseException:
        await stream.aclose()
        raise

    def line(p: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"status": p.status}
        if p.total:
            out.update(total=p.total, completed=p.completed)
        if p.digest:
            out["digest"] = p.digest if ":" in p.digest else f"sha256:{p.digest}"
        return out

    async def items() -> AsyncIterator[dict[str, Any]]:
        last = first
        try:
            yield line(first)
            async for p in stream:
                last = p
                yield line(p)
        finally:
            await stream.aclose()
        if last.status != "success":
            # Ollama's clients wait for this line (a model already on disk ends with another status)
            yield {"status": "success"}

    if body.stream:
        return GenerationResponse(ndjson(items()), stream.aclose, media_type="application/x-ndjson")
    async for _ in items():
        pass
    return {"status": "success"}


@router.delete(
    "/api/delete",
    response_class=Response,
    responses={200: {"description": "the model is deleted (no body)"}, **errors(400, 404, 409, 503)},
)
async def delete(body: DeleteBody, request: Request) -> Response:
    """Delete a model the server's own store holds (``NAME@BACKEND`` for another backend)."""
    state = state_of(request)
    if not body.model:
        raise E.InvalidSpec("the request names no model", hint='send {"model": "NAME"}')
    spec = state.known_backend(state.spec(body.model.removesuffix(":latest")))
    if not spec.backend and state.hub.aliases.get(spec.tag) is None:
        # a bare name is the embedded store's file; a named model's name goes alone (its model stays)
        spec = spec.with_backend("llamacpp")
    try:
        await state.hub.delete(spec)
    except E.InvalidOptions as exc:
        # the store refuses a file it does not own (a package's, the HF cache's, Ollama's): the request is fine,
        # the model's state is what stands in its way
        raise ApiError(exc.message, status=409, param="model", code="model_not_deletable", hint=exc.hint) from None
    return Response(status_code=200)
