"""The backends together: status of all, models of all, and which backend a spec goes to."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from llmspell import config as cfgmod
from llmspell.backends.base import Backend
from llmspell.errors import BackendUnavailable, InvalidSpec, LLMSpellError
from llmspell.spec import ModelSpec, parse_spec
from llmspell.types import BackendStatus, Chunk, Message, ModelInfo, Options, PullProgress

#: how long a backend's reachability is trusted when auto-detecting, so a dead server is not probed per request
_STATUS_TTL = 5.0


class Hub:
    """Owns one instance of each configured backend and routes every request to the right one."""

    def __init__(self, config: cfgmod.Config | None = None, backends: Sequence[Backend] | None = None) -> None:
        self.config = config or cfgmod.load_config()
        if backends is None:
            from llmspell.backends.registry import create_backends

            backends = create_backends(self.config)
        self.backends: dict[str, Backend] = {b.name: b for b in backends}
        self._status_cache: dict[str, tuple[float, BackendStatus]] = {}

    def backend(self, name: str) -> Backend:
        """The backend called ``name``; a clear error when it is not configured."""
        try:
            return self.backends[name]
        except KeyError:
            known = ", ".join(self.backends) or "none"
            raise BackendUnavailable(
                f"backend {name!r} is not enabled", hint=f"enabled backends: {known} (see ~/.llmspell/config.toml)"
            ) from None

    def spec(self, spec: str | ModelSpec | None) -> ModelSpec:
        """Parse a spec, using the configured default model when none is given."""
        if spec is None or spec == "":
            spec = self.config.default_model
        return parse_spec(spec) if isinstance(spec, str) else spec

    async def _status(self, backend: Backend, timeout: float) -> BackendStatus:
        try:
            status = await asyncio.wait_for(backend.status(), timeout)
        except TimeoutError:
            status = BackendStatus(backend.name, False, error=f"no answer within {timeout:.0f} s")
        except Exception as exc:  # status() must never break a listing; report the failure instead
            status = BackendStatus(backend.name, False, error=f"{type(exc).__name__}: {exc}")
        self._status_cache[backend.name] = (time.monotonic(), status)
        return status

    async def status_all(self, timeout: float = 10.0) -> list[BackendStatus]:
        """Every backend's status, checked concurrently; a dead backend never delays the others much."""
        return list(await asyncio.gather(*(self._status(b, timeout) for b in self.backends.values())))

    async def _recent_status(self, backend: Backend) -> BackendStatus:
        hit = self._status_cache.get(backend.name)
        if hit and time.monotonic() - hit[0] < _STATUS_TTL:
            return hit[1]
        return await self._status(backend, 5.0)

    async def list_all(self, backend: str | None = None) -> tuple[list[ModelInfo], list[BackendStatus]]:
        """Models of every ready backend (or one), plus the status of those that could not be listed."""
        chosen = [self.backend(backend)] if backend else list(self.backends.values())

        async def one(b: Backend) -> tuple[list[ModelInfo], BackendStatus | None]:
            try:
                return await asyncio.wait_for(b.list_models(), 15.0), None
            except TimeoutError:
                return [], BackendStatus(b.name, False, error="listing models took longer than 15 s")
            except LLMSpellError as exc:
                return [], BackendStatus(b.name, False, error=str(exc))
            except Exception as exc:  # one broken backend must not hide the others' models
                return [], BackendStatus(b.name, False, error=f"{type(exc).__name__}: {exc}")

        results = await asyncio.gather(*(one(b) for b in chosen))
        models = [m for ms, _ in results for m in ms]
        failed = [st for _, st in results if st is not None]
        return models, failed

    async def resolve(self, spec: str | ModelSpec | None) -> tuple[Backend, ModelSpec]:
        """Pick the backend for a spec: the one named after '@', else Ollama if it has the model, else embedded."""
        parsed = self.spec(spec)
        if parsed.backend:
            return self.backend(parsed.backend), parsed
        ollama = self.backends.get("ollama")
        if ollama is not None:
            status = await self._recent_status(ollama)
            if status.ready:
                try:
                    if await asyncio.wait_for(ollama.has_model(parsed), 5.0):
                        return ollama, parsed.with_backend("ollama")
                except (TimeoutError, LLMSpellError):
                    pass
        if "llamacpp" not in self.backends:
            raise BackendUnavailable(f"no backend can run {parsed}", hint="enable the llamacpp or ollama backend")
        return self.backends["llamacpp"], parsed.with_backend("llamacpp")

    async def chat(
        self, spec: str | ModelSpec | None, messages: Sequence[Message | dict[str, Any]], options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a chat answer from whichever backend serves ``spec``; closing the stream cancels it."""
        backend, parsed = await self.resolve(spec)
        stream = backend.chat(parsed, [Message.coerce(m) for m in messages], options)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    async def complete(
        self, spec: str | ModelSpec | None, prompt: str, options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a plain completion (no chat template)."""
        backend, parsed = await self.resolve(spec)
        stream = backend.complete(parsed, prompt, options)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    async def info(self, spec: str | ModelSpec) -> ModelInfo:
        """Everything known about one model."""
        backend, parsed = await self.resolve(spec)
        return await backend.info(parsed)

    async def pull(self, spec: str | ModelSpec) -> AsyncGenerator[PullProgress, None]:
        """Pull a model; without '@' it goes to the embedded backend (Hugging Face)."""
        parsed = self.spec(spec)
        backend = self.backend(parsed.backend or "llamacpp")
        stream = backend.pull(parsed.with_backend(backend.name))
        try:
            async for p in stream:
                yield p
        finally:
            await stream.aclose()

    async def delete(self, spec: str | ModelSpec) -> None:
        """Delete a model; the backend must be named, so nothing is removed by a guess."""
        parsed = self.spec(spec)
        if not parsed.backend:
            raise InvalidSpec(
                f"say which backend to delete {parsed} from", hint=f"e.g. llmspell model rm {parsed}@llamacpp"
            )
        await self.backend(parsed.backend).delete(parsed)

    async def unload(self, spec: str | ModelSpec) -> bool:
        """Free a loaded model."""
        backend, parsed = await self.resolve(spec)
        return await backend.unload(parsed)

    @contextlib.asynccontextmanager
    async def room_to_draw(self) -> AsyncIterator[bool]:
        """A face is about to draw: engines in this process leave it a core until the block ends (True if any
        engine was generating and did)."""
        async with contextlib.AsyncExitStack() as stack:
            held = [await stack.enter_async_context(b.room_to_draw()) for b in self.backends.values()]
            yield any(held)

    async def close(self) -> None:
        """Unload models and close connections of every backend."""
        for b in self.backends.values():
            await b.close()
