"""The backends together: status of all, models of all, and which backend a spec goes to."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from llmspell import config as cfgmod
from llmspell.backends.base import Backend
from llmspell.errors import BackendUnavailable, InvalidOptions, InvalidSpec, LLMSpellError
from llmspell.spec import ModelSpec, parse_spec
from llmspell.types import (
    BackendStatus,
    Chunk,
    Embeddings,
    Message,
    ModelInfo,
    Options,
    PullProgress,
    base_model_warning,
)

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
        from llmspell.aliases import AliasStore

        #: named models made from others (``/api/create``, ``/api/copy``)
        self.aliases = AliasStore()

    def backend(self, name: str) -> Backend:
        """The backend called ``name`` or by an alias of its kind (``candle``, ``gguf``); a clear error naming the
        enabled backends and the config file in force when it is not configured."""
        from llmspell.spec import known_backend

        kind = known_backend(name)
        found = self.backends.get(name) or self.backends.get(kind or name)
        if found is not None:
            return found
        known = ", ".join(self.backends) or "none"
        where = self.config.path or cfgmod.config_path()
        from llmspell.backends.registry import ENDPOINT_ONLY

        if kind in ENDPOINT_ONLY:
            raise BackendUnavailable(
                f"{kind!r} is a kind of endpoint, not a backend: name the endpoint after '@' (MODEL@gpubox)",
                hint=f"enabled backends and endpoints: {known}; add one with `llmspell endpoint add NAME URL` "
                f"(see {where})",
            )
        off = next((e for e in self.config.endpoints if e.name == name and not e.enabled), None)
        if kind:
            problem = f"backend {name!r} is not enabled"
        elif off is not None:
            problem = f"endpoint {name!r} is turned off (enabled = false)"
        else:
            problem = f"there is no backend or endpoint called {name!r}"
        raise BackendUnavailable(
            problem,
            hint=f"enabled backends and endpoints: {known} (see {where}); add a server with `llmspell endpoint add`",
        )

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
        backend = chosen[0].name if backend else None  # "candle" is the llamacpp backend

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
        return models + self._alias_infos(models, backend), failed

    def _alias_infos(self, models: list[ModelInfo], backend: str | None) -> list[ModelInfo]:
        """Each alias as a model of the backend its model is on, with that model's facts."""
        import dataclasses

        out = []
        try:
            aliases = self.aliases.all()
        except LLMSpellError:
            return []
        for alias in aliases.values():
            target = parse_spec(alias.target)
            found = next(
                (
                    m
                    for m in models
                    # Ollama lists a model without a tag as NAME:latest
                    if m.name in (target.tag, f"{target.tag}:latest")
                    and (target.backend is None or m.backend == target.backend)
                    and m.source != "not downloaded"
                ),
                None,
            )
            if found is None or (backend and found.backend != backend):
                continue
            own = alias.system or alias.options
            # a named model with its own system prompt or options is another model to clients that group by
            # digest (llm-ollama took the base model's name for the alias); a plain copy shares its model's
            digest = (
                hashlib.sha256(
                    json.dumps([found.sha256 or found.name, alias.system, alias.options], sort_keys=True).encode()
                ).hexdigest()
                if own
                else found.sha256
            )
            extra = {**found.extra, "alias_of": alias.target, "modified_at": alias.created}
            out.append(dataclasses.replace(found, name=alias.name, source="alias", sha256=digest, extra=extra))
        return out

    async def resolve(self, spec: str | ModelSpec | None) -> tuple[Backend, ModelSpec]:
        """Pick the backend for a spec: the one named after '@', else Ollama if it has the model, else embedded.
        An alias resolves to its model, behind a backend that adds the alias's system prompt and options."""
        parsed = self.spec(spec)
        alias = None
        if parsed.path is None:
            # a damaged aliases file must not stop every other model: creating or removing one names it
            with contextlib.suppress(LLMSpellError):
                alias = self.aliases.get(parsed.tag)
        if alias is not None and parsed.backend in (None, parse_spec(alias.target).backend):
            from llmspell.aliases import AliasedBackend, target_spec

            backend, target = await self.resolve(target_spec(alias))
            inner = backend.inner if isinstance(backend, AliasedBackend) else backend
            return AliasedBackend(inner, alias), target
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
        self,
        spec: str | ModelSpec | None,
        messages: Sequence[Message | dict[str, Any]],
        options: Options | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """Stream a chat answer from whichever backend serves ``spec``; closing the stream cancels it.

        ``tools`` (OpenAI ``tools`` shape) and ``tool_choice`` go to a backend that implements tools; any other
        backend refuses them (and a conversation holding tool calls) rather than drop them."""
        backend, parsed = await self.resolve(spec)
        msgs = [Message.coerce(m) for m in messages]
        if tools or tool_choice not in (None, "none") or any(m.tool_calls or m.role == "tool" for m in msgs):
            stream = self.chat_with_tools(backend, parsed, msgs, options, list(tools or ()), tool_choice)
        else:
            stream = backend.chat(parsed, msgs, options)
        try:
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    @staticmethod
    def chat_with_tools(
        backend: Backend,
        spec: ModelSpec,
        messages: list[Message],
        options: Options | None,
        tools: list[dict[str, Any]],
        tool_choice: str | dict[str, Any] | None,
    ) -> AsyncGenerator[Chunk, None]:
        """``backend``'s chat with tools (for a caller that resolved the backend itself, as the server does), or
        InvalidOptions when the backend cannot pass them."""
        from llmspell.aliases import AliasedBackend

        inner = backend.inner if isinstance(backend, AliasedBackend) else backend
        if not inner.IMPLEMENTS_TOOLS:
            raise InvalidOptions(
                f"the {backend.name} backend does not pass tools yet, so {spec.tag} cannot call them",
                hint="use a model of the embedded engine (@llamacpp), Ollama or an endpoint, or chat without tools",
            )
        if isinstance(backend, AliasedBackend):
            # the alias's system prompt and options still apply; the inner backend is the one that takes tools
            messages, options = backend._messages(messages), backend._options(options)
        chat: Any = inner.chat  # only backends with IMPLEMENTS_TOOLS take these keywords
        stream: AsyncGenerator[Chunk, None] = chat(spec, messages, options, tools=tools, tool_choice=tool_choice)
        return stream

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

    async def embed(
        self,
        spec: str | ModelSpec | None,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        dimensions: int | None = None,
        options: Options | None = None,
    ) -> Embeddings:
        """One L2-normalised vector per text, from whichever backend serves ``spec``; ``dimensions`` keeps the
        first values of each, scaled back to length 1."""
        import dataclasses

        from llmspell.vectors import shorten

        if dimensions is not None:
            shorten([], dimensions)  # a bad count is refused before the model loads
        backend, parsed = await self.resolve(spec)
        result = await backend.embed(parsed, list(texts), truncate=truncate, options=options)
        if dimensions is None:
            return result
        return dataclasses.replace(result, vectors=shorten(result.vectors, dimensions))

    async def info(self, spec: str | ModelSpec) -> ModelInfo:
        """Everything known about one model."""
        backend, parsed = await self.resolve(spec)
        return await backend.info(parsed)

    async def chat_warning(self, spec: str | ModelSpec) -> str | None:
        """What to tell someone about to chat with ``spec``: a catalog file marked ``base`` continues text rather
        than answering. Read from the catalog alone (no file is read or hashed); None when nothing is amiss or the
        model cannot be resolved (the chat itself then says why)."""
        try:
            backend, parsed = await self.resolve(spec)
            if backend.kind != "llamacpp" or parsed.path is not None:
                return None
            from llmspell.catalog import load_catalog

            catalog = load_catalog()
            if catalog.get(parsed.name) is None:
                return None
            resolved = catalog.resolve(parsed.name, parsed.variant)
        except LLMSpellError:
            return None
        return base_model_warning(parsed.tag) if resolved.is_base else None

    async def pull(self, spec: str | ModelSpec) -> AsyncGenerator[PullProgress, None]:
        """Pull a model; without '@' it goes to the embedded backend (Hugging Face)."""
        parsed = self.spec(spec)
        backend = self.backend(parsed.backend or "llamacpp")
        if not backend.IMPLEMENTS_PULL:
            raise InvalidSpec(
                f"{backend.name} does not pull models: it serves the models its server was started with",
                hint=f"see them with `llmspell model list --backend {backend.name}`",
            )
        stream = backend.pull(parsed.with_backend(backend.name))
        try:
            async for p in stream:
                yield p
        finally:
            await stream.aclose()

    async def delete(self, spec: str | ModelSpec) -> None:
        """Delete a model; the backend must be named, so nothing is removed by a guess."""
        parsed = self.spec(spec)
        named = False
        # only a name without a backend is an alias's: NAME@llamacpp means the file, never the alias
        if parsed.path is None and parsed.backend is None:
            with contextlib.suppress(LLMSpellError):
                named = self.aliases.get(parsed.tag) is not None
        if named and self.aliases.remove(parsed.tag):
            return  # an alias goes; the model it was made from stays
        if not parsed.backend:
            raise InvalidSpec(
                f"say which backend to delete {parsed} from", hint=f"e.g. llmspell model rm {parsed}@llamacpp"
            )
        backend = self.backend(parsed.backend)
        if not backend.IMPLEMENTS_DELETE:
            raise InvalidSpec(
                f"{backend.name} does not delete models: they belong to its server",
                hint="remove the model on that server itself, or leave it out with the endpoint's models filter",
            )
        await backend.delete(parsed)

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
