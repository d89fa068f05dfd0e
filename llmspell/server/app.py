"""The ASGI app of `llmspell serve`: Ollama and OpenAI APIs over the Hub, with admission, cancellation and guards."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match

from llmspell import __version__
from llmspell import errors as E
from llmspell.hub import Hub
from llmspell.server.access import AccessLog
from llmspell.server.errors import ClientGone, QueueFull, error_body, error_fields, error_status, error_text
from llmspell.server.openapi import (
    GENERATION_ERRORS,
    LLMSPELL_OPTIONS_SCHEMA,
    MODEL_SCHEMA,
    GenerateLine,
    GenerateResult,
    Health,
    errors,
    install_openapi,
    ndjson_answer,
    nullable,
    top_level_option,
)
from llmspell.server.security import ApiKeyGuard, HostGuard, OriginGuard, is_loopback_bind, origin_regex
from llmspell.server.state import GenerationResponse, ServerSettings, ServerState
from llmspell.server.wire import check_format, check_stop, ndjson, whole_options
from llmspell.types import Chunk, Message, Options

#: the model of ``POST /generate``: the configured default one when left out, null or empty
DEFAULT_MODEL_SCHEMA = {
    "anyOf": [MODEL_SCHEMA, {"type": "string", "maxLength": 0}, {"type": "null"}],
    "description": "the model to run; the configured default model when left out",
}


def _option(name: str) -> WithJsonSchema:
    """The schema of a top-level option of ``POST /generate``: any value reaches Options, whose check it describes."""
    return WithJsonSchema(top_level_option(name))


class GenerateBody(BaseModel):
    """``POST /generate``: one prompt in, the answer's text out."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: Annotated[str | None, WithJsonSchema(DEFAULT_MODEL_SCHEMA)] = None
    prompt: str = Field(min_length=1)
    system: str | None = None
    #: llmspell option names (temperature, max_tokens, seed, stop, format, ...)
    options: Annotated[dict[str, Any] | None, WithJsonSchema(nullable(LLMSPELL_OPTIONS_SCHEMA))] = None
    stream: bool = False
    # the seed documents' body puts these options at the top level; ``options`` wins where both give one. They are
    # checked by Options, as inside ``options``, so both places answer a bad value alike.
    max_tokens: Annotated[Any, _option("max_tokens")] = None
    temperature: Annotated[Any, _option("temperature")] = None
    top_p: Annotated[Any, _option("top_p")] = None
    top_k: Annotated[Any, _option("top_k")] = None
    seed: Annotated[Any, _option("seed")] = None
    stop: Annotated[Any, _option("stop")] = None

    def options_given(self) -> dict[str, Any]:
        """The options of the body: the top-level ones, then ``options`` over them."""
        top = {name: getattr(self, name) for name in _TOP_LEVEL_OPTIONS if getattr(self, name) is not None}
        # null is "not given", in either place: it does not undo a value given at the top
        return {**top, **{k: v for k, v in (self.options or {}).items() if v is not None}}


#: the options ``POST /generate`` also takes outside ``options``
_TOP_LEVEL_OPTIONS = ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop")


def _generate_options(values: dict[str, Any]) -> Options:
    """``POST /generate``'s options, checked where Options is lenient for the CLI (a JSON text as format)."""
    fmt = values.get("format")
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
        raise E.InvalidOptions('option format must be "json" or a JSON schema object')
    check_stop(values.get("stop"))
    check_format(fmt)
    return Options.from_dict(whole_options(values))


def create_app(hub: Hub, settings: ServerSettings | None = None) -> Any:
    """The ASGI app: the FastAPI routes wrapped in the Host guard, CORS and the API-key check."""
    from llmspell.server.embeddings import router as embeddings_router
    from llmspell.server.ollama_api import router as ollama_router
    from llmspell.server.openai_api import router as openai_router

    settings = settings or ServerSettings()
    state = ServerState(hub, settings)
    for backend in hub.backends.values():
        # a second request for a model waits for the first (--parallel 1) instead of loading another copy
        backend.limit_instances(settings.parallel)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # Ctrl-C / SIGTERM: uvicorn stops accepting, then this unloads every model and says which it unloaded
        before = await _loaded_here(hub)
        await hub.close()
        after = set(await _loaded_here(hub))
        gone = [name for name in before if name not in after]
        print(
            f"llmspell serve: unloaded {', '.join(gone)}" if gone else "llmspell serve: no model was loaded",
            file=sys.stderr,
            flush=True,
        )

    app = FastAPI(title="llmspell", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.llmspell = state

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems, unknown, first = [], [], None
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p != "body"]
            where = ".".join(loc)
            first = first or (loc[0] if loc else None)
            if err.get("type") == "extra_forbidden":
                unknown.append(where)
            else:
                problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        if unknown:
            # named, not pydantic's "extra inputs are not permitted": the client learns which field is unknown
            problems.insert(0, f"unknown parameter(s) {', '.join(unknown)}: llmspell serve does not take them")
        message = "invalid request body: " + "; ".join(problems)
        code = "unknown_parameter" if unknown else "invalid_value"
        body = error_body(request.url.path, message, 400, param=unknown[0] if unknown else first, code=code)
        return JSONResponse(body, status_code=400)

    @app.exception_handler(E.LLMSpellError)
    async def core_error(request: Request, exc: E.LLMSpellError) -> JSONResponse:
        status = error_status(exc)
        param, code = error_fields(exc)
        body = error_body(request.url.path, error_text(exc), status, param=param, code=code)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, str(exc), 503, code="server_busy"), status_code=503)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, "the client closed the connection", 499), status_code=499)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            # the route is what is missing here; an unknown model is a 404 with code model_not_found
            message, code = f"{route}: no such route in llmspell serve (see the README for the routes)", "unknown_route"
        elif exc.status_code == 405:
            message, code = f"{route}: this route does not take {request.method}", "method_not_allowed"
            # every method of the path: Starlette's own Allow names only the first route that matched it (GET
            # where GET and HEAD are two routes)
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(_allowed(app, request.scope))}
        else:
            message, code = f"{route}: {exc.detail}".lower(), None
        body = error_body(request.url.path, message, exc.status_code, code=code)
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/health", response_model=None, responses={200: {"model": Health}, 503: {"model": Health}})
    async def health() -> JSONResponse:
        """Whether the server can answer: each backend's status, the queues and what each loaded model is doing
        (503, same body, when no backend is ready)."""
        statuses = await hub.status_all(timeout=5.0)
        ready = any(s.ready for s in statuses)
        return JSONResponse(
            {
                "status": "ok" if ready else "unavailable",
                "version": __version__,
                "backends": [s.to_dict() for s in statuses],
                "queues": dict(state.admission.counts),
                "workers": await state.workers(),
            },
            status_code=200 if ready else 503,
        )

    @app.post(
        "/generate",
        response_model=None,
        responses={
            **ndjson_answer(GenerateLine, GenerateResult, "the answer: one JSON object, or NDJSON lines (stream true)"),
            **errors(*GENERATION_ERRORS),
        },
    )
    async def generate(body: GenerateBody, request: Request) -> Any:
        """One prompt through the model's chat template (the configured default model unless one is named)."""
        opts = _generate_options(body.options_given())
        messages = [Message("system", body.system)] if body.system else []
        messages.append(Message("user", body.prompt))
        model = body.model or hub.config.default_model
        gen = await state.open(model, lambda b, s: b.chat(s, messages, opts), request=request)
        if body.stream:

            async def items() -> AsyncIterator[dict[str, Any]]:
                async for chunk in gen.chunks():
                    if chunk.done:
                        yield {"text": chunk.text, "done": True, "model": str(gen.spec), "stats": _stats(chunk)}
                    elif chunk.text:
                        yield {"text": chunk.text, "done": False}

            return GenerationResponse(ndjson(items()), gen.close, media_type="application/x-ndjson")
        text, stats = await gen.collect(request)
        return {"text": text, "model": str(gen.spec), "stats": stats.to_dict()}

    app.include_router(ollama_router)
    app.include_router(openai_router)
    app.include_router(embeddings_router)
    install_openapi(app, api_key=bool(settings.api_key))

    wrapped: Any = ApiKeyGuard(_JsonBodies(app), key=settings.api_key)
    # inside CORS: a preflight is answered by CORS itself; any other request from a foreign page stops here
    wrapped = OriginGuard(wrapped, allowed=settings.cors_origins)
    wrapped = CORSMiddleware(
        wrapped,
        allow_origin_regex=origin_regex(settings.cors_origins),
        allow_methods=["GET", "POST", "DELETE", "HEAD", "OPTIONS"],
        allow_headers=["*"],
    )
    wrapped = HostGuard(wrapped, enabled=is_loopback_bind(settings.host))
    # outermost: a request any guard refuses is logged too
    wrapped = AccessLog(wrapped, state)
    wrapped.state = state
    return wrapped


class _JsonBodies:
    """Read every request body as JSON, as Ollama does: curl -d and many clients send no JSON content type."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "DELETE"):
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def served_routes(app: FastAPI) -> list[Any]:
    """Every route of ``app``, with those of its included routers (FastAPI 0.165 keeps them apart, with their
    prefixes applied, behind ``iter_route_contexts``; before, ``app.routes`` held them all)."""
    import fastapi.routing

    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(contexts(app.routes)) if contexts else list(app.routes)


def _allowed(app: FastAPI, scope: Any) -> list[str]:
    """The methods the routes of the request's path take."""
    methods: set[str] = set()
    for route in served_routes(app):
        if route.matches(scope)[0] is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


async def _loaded_here(hub: Hub) -> list[str]:
    """``NAME@BACKEND`` of the models loaded in this process (a remote Ollama's models are not ours to unload)."""
    out: list[str] = []
    for backend in hub.backends.values():
        if not backend.IN_PROCESS:
            continue
        with contextlib.suppress(E.LLMSpellError):
            out.extend(f"{name}@{backend.name}" for name in await backend.loaded())
    return out


def _stats(chunk: Chunk) -> dict[str, Any]:
    return chunk.stats.to_dict() if chunk.stats else {}
