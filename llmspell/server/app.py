"""The ASGI app of `llmspell serve`: Ollama and OpenAI APIs over the Hub, with admission, cancellation and guards."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from llmspell import __version__
from llmspell import errors as E
from llmspell.backends.base import Backend
from llmspell.hub import Hub
from llmspell.server.security import LOCAL_ORIGIN_REGEX, ApiKeyGuard, HostGuard, is_loopback_bind
from llmspell.spec import ModelSpec
from llmspell.types import Chunk, Message, Options, Stats

T = TypeVar("T")


@dataclass
class ServerSettings:
    """How the server listens and whom it lets in."""

    host: str = "127.0.0.1"
    port: int = 11435
    #: a bearer token every request must carry; None lets everyone on the allowed hosts in
    api_key: str | None = None
    #: browser origins allowed besides this machine's own
    cors_origins: list[str] = field(default_factory=list)
    #: requests allowed to wait per model behind the one generating; one more is answered 503
    max_queue: int = 16


class QueueFull(Exception):
    """Too many requests are waiting for one model."""


class ClientGone(Exception):
    """The client hung up before its answer was ready."""


_STATUS = {
    E.ModelNotFound: 404,
    E.ModelFileMissing: 404,
    E.InvalidSpec: 400,
    E.InvalidOptions: 400,
    E.NoChatTemplate: 400,
    E.BackendUnavailable: 503,
    E.Cancelled: 499,
    E.InsufficientResources: 507,
    E.DownloadError: 502,
}


def error_status(exc: BaseException) -> int:
    """The HTTP status for a core error (Ollama's codes where it has one: 404 for an unknown model)."""
    for kind, status in _STATUS.items():
        if isinstance(exc, kind):
            return status
    return 500


def error_text(exc: BaseException) -> str:
    """One line a user can act on: the message, then the hint."""
    if isinstance(exc, E.LLMSpellError):
        return f"{exc.message}; {exc.hint}" if exc.hint else exc.message
    if isinstance(exc, QueueFull):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def error_body(path: str, message: str, status: int) -> dict[str, Any]:
    """An error in the dialect of the API that was called: OpenAI's object under /v1, Ollama's string elsewhere."""
    if path.startswith("/v1/"):
        kind = (
            "invalid_request_error"
            if status in (400, 404, 422)
            else "authentication_error"
            if status == 401
            else "server_error"
        )
        code = "model_not_found" if status == 404 else None
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"error": message}


def now_iso() -> str:
    """The current time as Ollama writes it (RFC 3339, UTC)."""
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_keep_alive(value: float | int | str | None) -> float | None:
    """Ollama's keep_alive: seconds as a number, or a duration such as "5m", "1h30m", "300ms", "-1"."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise E.InvalidOptions("keep_alive must be a number of seconds or a duration such as 5m")
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    import re

    parts = re.findall(r"(-?\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise E.InvalidOptions(f"keep_alive {value!r} is not a duration", hint="use e.g. 300, 5m, 1h, 0 or -1")
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    return sum(float(n) * scale[u] for n, u in parts)


class Admission:
    """Counts the requests per model (running and waiting) and refuses one past the bound."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.counts: dict[str, int] = {}

    def enter(self, key: str) -> None:
        """Admit a request for ``key`` or raise QueueFull."""
        n = self.counts.get(key, 0)
        if n > self.max_queue:
            raise QueueFull(
                f"server busy: {n} requests for {key} are already running or waiting (--max-queue "
                f"{self.max_queue}); try again shortly"
            )
        self.counts[key] = n + 1

    def leave(self, key: str) -> None:
        """A request for ``key`` is finished."""
        n = self.counts.get(key, 0) - 1
        if n > 0:
            self.counts[key] = n
        else:
            self.counts.pop(key, None)


class Generation:
    """One admitted stream whose first chunk has arrived, so errors before any output still get a status code."""

    def __init__(self, state: ServerState, backend: Backend, spec: ModelSpec, key: str, stream: Any) -> None:
        self.state, self.backend, self.spec, self.key, self.stream = state, backend, spec, key, stream
        self.first: Chunk | None = None
        self.keep_alive: float | None = None
        self.started = time.perf_counter()
        self._closed = False

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The first chunk, then the rest; the stream is closed (the generation cancelled) however this ends."""
        try:
            if self.first is not None:
                yield self.first
                if self.first.done:
                    return
            async for chunk in self.stream:
                yield chunk
                if chunk.done:
                    return
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel what is still running, release the queue slot, honour keep_alive 0."""
        if self._closed:
            return
        self._closed = True
        # shielded: this runs when the client hung up and the response task is being cancelled
        with anyio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            finally:
                self.state.admission.leave(self.key)
                await self.state.apply_keep_alive(self.backend, self.spec, self.keep_alive, self.key)

    async def collect(self, request: Request) -> tuple[str, Stats]:
        """The whole answer (for stream:false); a client that hangs up meanwhile cancels it."""

        async def gather() -> tuple[str, Stats]:
            parts: list[str] = []
            stats = None
            async for chunk in self.chunks():
                parts.append(chunk.text)
                if chunk.done:
                    stats = chunk.stats
            return "".join(parts), stats or Stats(stop_reason="cancelled")

        try:
            return await unless_gone(gather(), request)
        except ClientGone:
            await self.close()
            raise


async def wait_disconnect(request: Request) -> None:
    """Return when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_gone(work: Awaitable[T], request: Request | None) -> T:
    """Await ``work`` unless the client hangs up first: then cancel it and raise ClientGone."""

    async def run() -> T:
        return await work

    task = asyncio.ensure_future(run())
    if request is None:
        return await task
    watcher = asyncio.ensure_future(wait_disconnect(request))
    gone = False
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        gone = not task.done()
    finally:
        watcher.cancel()
        if not task.done():
            # the client left (or this handler itself is being cancelled): the work must not run on unobserved
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if gone:
        raise ClientGone()
    return task.result()


class GenerationResponse(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends, even if its body iterator never started."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]], media_type: str):
        super().__init__(content, media_type=media_type)
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Send the response, then close the generation (releasing its admission slot)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Starlette can fail or be cancelled at http.response.start, before the body iterator runs: then the
            # iterator's own finally never runs and, without this, the request would keep its queue slot forever
            with anyio.CancelScope(shield=True):
                await self.on_close()


class ServerState:
    """What every route shares: the hub, settings and the per-model admission counts."""

    def __init__(self, hub: Hub, settings: ServerSettings) -> None:
        self.hub = hub
        self.settings = settings
        self.admission = Admission(settings.max_queue)
        self.started = time.time()

    async def resolve(self, model: str | None) -> tuple[Backend, ModelSpec]:
        """A model name as clients send it (``:latest`` means the default variant) to a backend and spec."""
        if model is not None and model.endswith(":latest"):
            model = model[: -len(":latest")]
        if not model:
            raise E.InvalidSpec("the request names no model", hint='add "model": "smollm2:135m" (see /api/tags)')
        return await self.hub.resolve(model)

    async def model_key(self, backend: Backend, spec: ModelSpec) -> str:
        """The admission key of a request: the model it will run on, so every spelling of one model shares a bound."""
        return f"{await backend.canonical_name(spec)}@{backend.name}"

    async def open(
        self,
        model: str | None,
        start: Callable[[Backend, ModelSpec], AsyncGenerator[Chunk, None]],
        keep_alive: float | None = None,
        request: Request | None = None,
    ) -> Generation:
        """Resolve, admit, start a stream and wait for its first chunk, giving up if the client leaves meanwhile."""
        backend, spec = await self.resolve(model)
        key = await self.model_key(backend, spec)
        self.admission.enter(key)
        try:
            stream = start(backend, spec)
        except BaseException:
            self.admission.leave(key)
            raise
        gen = Generation(self, backend, spec, key, stream)
        gen.keep_alive = keep_alive
        try:
            # a queued request waits here (behind other requests, then through its prefill): a client that hangs
            # up meanwhile must free its admission slot at once and never have its prompt evaluated
            gen.first = await unless_gone(anext(stream), request)
        except StopAsyncIteration:
            await gen.close()
            raise E.GenerationError(f"{spec} produced no answer") from None
        except BaseException:
            await gen.close()
            raise
        return gen

    async def apply_keep_alive(self, backend: Backend, spec: ModelSpec, seconds: float | None, key: str) -> None:
        """keep_alive 0 unloads once no other request for the model is in the queue; other values set the timer."""
        if seconds is None:
            return
        if seconds == 0:
            if key not in self.admission.counts:
                with contextlib.suppress(E.LLMSpellError):
                    await backend.unload(spec)
            return
        await backend.set_keep_alive(spec, seconds)

    async def workers(self) -> list[dict[str, Any]]:
        """What each loaded model of this process is doing: busy or idle, queued jobs, how its last answer ended."""
        out = []
        for backend in self.hub.backends.values():
            if not backend.IN_PROCESS:
                continue
            try:
                running = await backend.running()
            except E.LLMSpellError:
                continue
            # the embedded backend may run several copies of one model for requests arriving together
            out += [
                {
                    "model": r.name,
                    "backend": r.backend,
                    "busy": r.busy,
                    "pending": r.pending,
                    "last_stop_reason": r.last_stop_reason,
                    "last_generated_tokens": r.last_generated_tokens,
                }
                for r in running
            ]
        return out

    async def expires_at(self, backend: Backend, name: str) -> str:
        """When a loaded model will be unloaded, as Ollama's /api/ps reports it."""
        far = "2318-01-01T00:00:00Z"
        try:
            copies = [r for r in await backend.running() if r.name == name]
        except E.LLMSpellError:
            copies = []
        if not copies or any(r.expires_in is None for r in copies):
            return far
        # the model stays in memory until its last copy times out
        left = max(r.expires_in or 0.0 for r in copies)
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=left)
        return when.isoformat().replace("+00:00", "Z")


def ndjson(items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Encode dicts as NDJSON lines; an error after the first line becomes one ``{"error": ...}`` line, as Ollama."""

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for item in items:
                yield json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        except Exception as exc:  # the status line is sent already: the error can only be the last line
            yield json.dumps({"error": error_text(exc)}).encode() + b"\n"

    return lines()


def stats_ns(stats: Stats) -> dict[str, Any]:
    """Ollama's final-line statistics, in nanoseconds, from the core's Stats."""
    ns = 1_000_000_000
    return {
        "done_reason": {"stop": "stop", "length": "length"}.get(stats.stop_reason, stats.stop_reason),
        "total_duration": int(stats.total_time * ns),
        "load_duration": int(stats.load_time * ns),
        "prompt_eval_count": stats.prompt_tokens,
        "prompt_eval_duration": int(stats.prompt_eval_time * ns),
        "eval_count": stats.generated_tokens,
        "eval_duration": int(stats.generation_time * ns),
    }


class GenerateBody(BaseModel):
    """``POST /generate``: one prompt in, the answer's text out."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str = Field(min_length=1)
    system: str | None = None
    #: llmspell option names (temperature, max_tokens, seed, stop, format, ...)
    options: dict[str, Any] | None = None
    stream: bool = False


def create_app(hub: Hub, settings: ServerSettings | None = None) -> Any:
    """The ASGI app: the FastAPI routes wrapped in the Host guard, CORS and the API-key check."""
    from llmspell.server.ollama_api import router as ollama_router
    from llmspell.server.openai_api import router as openai_router

    settings = settings or ServerSettings()
    state = ServerState(hub, settings)

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
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        message = "invalid request body: " + "; ".join(problems)
        return JSONResponse(error_body(request.url.path, message, 400), status_code=400)

    @app.exception_handler(E.LLMSpellError)
    async def core_error(request: Request, exc: E.LLMSpellError) -> JSONResponse:
        status = error_status(exc)
        return JSONResponse(error_body(request.url.path, error_text(exc), status), status_code=status)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, str(exc), 503), status_code=503)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, "the client closed the connection", 499), status_code=499)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}".lower()
        return JSONResponse(error_body(request.url.path, message, exc.status_code), status_code=exc.status_code)

    @app.get("/health")
    async def health() -> JSONResponse:
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

    @app.post("/generate")
    async def generate(body: GenerateBody, request: Request) -> Any:
        opts = Options.from_dict(body.options or {})
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

    wrapped: Any = ApiKeyGuard(_JsonBodies(app), key=settings.api_key)
    wrapped = CORSMiddleware(
        wrapped,
        allow_origins=[o for o in settings.cors_origins if o != "*"],
        allow_origin_regex=None if "*" in settings.cors_origins else LOCAL_ORIGIN_REGEX,
        allow_methods=["GET", "POST", "DELETE", "HEAD", "OPTIONS"],
        allow_headers=["*"],
    )
    if "*" in settings.cors_origins:
        wrapped = CORSMiddleware(wrapped.app, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    wrapped = HostGuard(wrapped, enabled=is_loopback_bind(settings.host))
    wrapped.state = state  # type: ignore[attr-defined]
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


def state_of(request: Request) -> ServerState:
    """The shared server state from inside a route."""
    return request.app.state.llmspell  # type: ignore[no-any-return]
