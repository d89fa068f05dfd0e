"""The server's shared state: its settings, admission per model, a generation in flight, a client that left."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

from llmspell import errors as E
from llmspell.backends.base import Backend
from llmspell.hub import Hub
from llmspell.server.access import add_tokens, model_shown, note, write_line
from llmspell.server.errors import ApiError, ClientGone, QueueFull, ServerStopping
from llmspell.spec import ModelSpec
from llmspell.types import Chunk, Stats, TokenLogprob, ToolCall

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
    #: folders whose .gguf files a client may name by path; none by default (any path would be parsed otherwise)
    model_folders: list[Path] = field(default_factory=list)
    #: refuse (400) unknown fields and options that are otherwise ignored with a warning in the log, as Ollama
    strict: bool = False
    #: no access log line per request
    quiet: bool = False
    #: copies of one model answering at once; more requests for it wait in its queue (memory grows per copy)
    parallel: int = 1


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
        #: the request this answers, for its access-log line
        self.request: Request | None = None
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
                if self.state.stopping and not chunk.done:
                    # ended here, with a last line that says why (uvicorn would cut the stream mid-line later)
                    raise ServerStopping(
                        "llmspell serve is shutting down: this answer was stopped",
                        hint="send the request again when the server is back",
                    )
                if chunk.done and self.request is not None and chunk.stats is not None:
                    add_tokens(self.request, chunk.stats.prompt_tokens, chunk.stats.generated_tokens)
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
        text, stats, _, _ = await self.collect_all(request)
        return text, stats

    async def collect_all(self, request: Request) -> tuple[str, Stats, list[TokenLogprob], tuple[ToolCall, ...]]:
        """The whole answer with its logprobs, if they were asked for, and the tool calls on its last chunk."""

        async def gather() -> tuple[str, Stats, list[TokenLogprob], tuple[ToolCall, ...]]:
            parts: list[str] = []
            logprobs: list[TokenLogprob] = []
            stats = None
            calls: tuple[ToolCall, ...] = ()
            async for chunk in self.chunks():
                parts.append(chunk.text)
                logprobs.extend(chunk.logprobs)
                if chunk.done:
                    stats, calls = chunk.stats, chunk.tool_calls
            return "".join(parts), stats or Stats(stop_reason="cancelled"), logprobs, calls

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
        #: set when a signal asks the server to stop: answers still streaming end with an error line
        self.stopping = False

    def ignored(self, request: Request, what: str, names: list[str]) -> None:
        """Fields or options a client sent that mean nothing here: a 400 with --strict, else a line in the log
        (Ollama ignores them too, and its clients send some by default)."""
        text = f"{what} {', '.join(names)}"
        if self.settings.strict:
            raise ApiError(
                f"{text}: llmspell serve does not take them (it runs with --strict)",
                param=names[0],
                code="unknown_parameter",
            )
        write_line(f"warning: {request.method} {request.url.path}: ignored {text}")

    def stop(self) -> None:
        """The server is shutting down: every answer still streaming ends at its next token, saying why."""
        self.stopping = True

    async def resolve(self, model: str | None) -> tuple[Backend, ModelSpec]:
        """A model name as clients send it (``:latest`` means the default variant) to a backend and spec."""
        if model is not None and model.endswith(":latest"):
            model = model[: -len(":latest")]
        if not model:
            raise E.InvalidSpec("the request names no model", hint='add "model": "smollm2:135m" (see /api/tags)')
        return await self.hub.resolve(self.known_backend(self.spec(model)))

    def known_backend(self, spec: ModelSpec) -> ModelSpec:
        """``spec``, if the backend or endpoint it names after '@' is one this server has; else a 404."""
        if spec.backend:
            try:
                self.hub.backend(spec.backend)
            except E.BackendUnavailable as exc:
                # the model asked for is not here, which is the client's to fix; 503 is for a backend that is
                # configured and not answering
                raise ApiError(exc.message, status=404, param="model", code="model_not_found", hint=exc.hint) from None
        return spec

    def spec(self, model: str) -> ModelSpec:
        """A model as a client names it; a path is taken only inside a folder the server was given."""
        spec = self.hub.spec(model)
        if spec.path is not None:
            try:
                path = spec.path.expanduser().resolve()
            except (OSError, ValueError, RuntimeError):  # a NUL byte, a link loop, an unknown ~user
                raise E.InvalidSpec(
                    f"{model!r} is not a usable file path", hint="name the model (see /api/tags)"
                ) from None
            if not any(path.is_relative_to(folder.expanduser().resolve()) for folder in self.settings.model_folders):
                raise E.InvalidSpec(
                    f"{model!r} is a file path, and this server does not open files by path",
                    hint="name the model (see /api/tags), or start llmspell serve with --model-folder DIR",
                )
        return spec

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
        gen.request = request
        if request is not None:
            note(request, model=model_shown(model, spec))  # an alias is logged with the model it ran on
        try:
            # a queued request waits here (behind other requests, then until its prompt is accepted: the engine
            # sends an empty chunk before it reads the prompt, so a stream's status line and headers go out before
            # a long prefill); a client that hangs up meanwhile frees its admission slot at once
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
                    "purpose": r.purpose,
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


def state_of(request: Request) -> ServerState:
    """The shared server state from inside a route."""
    return request.app.state.llmspell  # type: ignore[no-any-return]
