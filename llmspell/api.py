"""The scripting API: ``llmspell.stream``, ``llmspell.complete`` and ``LocalLLM``, over one shared Hub."""

from __future__ import annotations

import asyncio
import atexit
import builtins
import concurrent.futures
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, SupportsIndex, TypeVar, overload

from llmspell.errors import BackendUnavailable
from llmspell.hub import Hub
from llmspell.spec import ModelSpec
from llmspell.types import BackendStatus, Chunk, Message, ModelInfo, Options, PullProgress

T = TypeVar("T")
_hub: Hub | None = None
_hub_lock = threading.Lock()


def get_hub() -> Hub:
    """The process-wide Hub (created on first use from ~/.llmspell/config.toml)."""
    global _hub
    with _hub_lock:
        if _hub is None:
            _hub = Hub()
            atexit.register(_close_hub)
        return _hub


def set_hub(hub: Hub | None) -> None:
    """Replace the process-wide Hub (tests, or an app with its own config)."""
    global _hub
    with _hub_lock:
        _hub = hub


def _close_hub() -> None:
    hub = _hub
    if hub is not None:
        for backend in hub.backends.values():
            backend.close_sync()


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code, also when called inside a running loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _messages(messages: str | Sequence[Message | dict[str, Any]]) -> list[Message]:
    if isinstance(messages, str):
        return [Message("user", messages)]
    return [Message.coerce(m) for m in messages]


async def stream(
    model: str | ModelSpec | None,
    messages: str | Sequence[Message | dict[str, Any]],
    *,
    options: Options | None = None,
    raw: bool = False,
    **opts: Any,
) -> AsyncGenerator[Chunk, None]:
    """Stream an answer as Chunks; the last has ``done`` and ``stats``. ``raw`` = plain completion of a string."""
    merged = Options.from_dict(opts) if opts else None
    options = (options or Options()).merged(merged) if (options or merged) else None
    hub = get_hub()
    if raw:
        if not isinstance(messages, str):
            raise TypeError("raw=True takes the prompt as a string")
        gen = hub.complete(model, messages, options)
    else:
        gen = hub.chat(model, _messages(messages), options)
    try:
        async for chunk in gen:
            yield chunk
    finally:
        await gen.aclose()


async def acomplete(
    model: str | ModelSpec | None, prompt: str | Sequence[Message | dict[str, Any]], *, raw: bool = False, **opts: Any
) -> str:
    """The whole answer as one string (async)."""
    return "".join([c.text async for c in stream(model, prompt, raw=raw, **opts)])


def complete(
    model: str | ModelSpec | None, prompt: str | Sequence[Message | dict[str, Any]], *, raw: bool = False, **opts: Any
) -> str:
    """The whole answer as one string; a chat turn by default, plain completion with ``raw=True``."""
    return _run_sync(acomplete(model, prompt, raw=raw, **opts))


def embed(model: str | ModelSpec | None, texts: str | Sequence[str], **opts: Any) -> list[list[float]]:
    """One L2-normalised vector per text (a single text gives a list of one vector)."""
    items = [texts] if isinstance(texts, str) else list(texts)
    result = _run_sync(get_hub().embed(model, items, options=Options.from_dict(opts) if opts else None))
    return result.vectors


class Agent:
    """A conversation for scripts: a model, a system prompt and options, and each ``complete`` or ``stream``
    the next turn of it (the model sees every earlier turn), as the faces' Session keeps it."""

    def __init__(
        self, model: str | None = None, system_prompt: str | None = None, *, save: bool = False, **options: Any
    ) -> None:
        from llmspell.chat import Conversation
        from llmspell.session import Session
        from llmspell.store import Store

        hub = get_hub()
        conv = Conversation(model or hub.config.default_model, system=system_prompt, options=Options.from_dict(options))
        #: the Session under it: ``save=True`` keeps the conversation in the history the faces open
        self.session = Session(hub, Store() if save else None, conv)

    @classmethod
    def create(cls, model: str | None = None, system_prompt: str | None = None, **options: Any) -> Agent:
        """The seeds' spelling of the constructor: ``Agent.create(model=..., system_prompt=...)``."""
        return cls(model, system_prompt, **options)

    @property
    def model(self) -> str:
        """The model it talks to."""
        return self.session.model

    @property
    def history(self) -> builtins.list[Message]:
        """What the model is sent before the next prompt: the system prompt, then every turn so far."""
        return self.session.conv.messages()

    def stream(self, text: str, **options: Any) -> AsyncGenerator[Chunk, None]:
        """The next turn's answer as chunks (``async for``); closing it cancels, and what came is kept."""
        turn = self.session.send(text, Options.from_dict(options) if options else None)

        async def chunks() -> AsyncGenerator[Chunk, None]:
            try:
                async for chunk in turn:  # a backend's error comes out of here, the turn recorded as failed
                    yield chunk
            finally:
                await turn.aclose()
                self.session.result(turn)

        return chunks()

    async def acomplete(self, text: str, **options: Any) -> str:
        """The next turn's whole answer; the error that stopped it is raised (the turn stays, marked failed)."""
        parts = [chunk.text async for chunk in self.stream(text, **options)]
        return "".join(parts)

    def complete(self, text: str, **options: Any) -> str:
        """``acomplete`` from synchronous code."""
        return _run_sync(self.acomplete(text, **options))

    def reset(self) -> None:
        """Forget the turns (the system prompt and options stay)."""
        self.session.restart()


class Statuses(list[BackendStatus]):
    """Each backend's status, in order, and also by name: ``statuses["ollama"]`` or ``statuses.ollama``."""

    @overload
    def __getitem__(self, key: SupportsIndex) -> BackendStatus: ...
    @overload
    def __getitem__(self, key: slice) -> list[BackendStatus]: ...
    @overload
    def __getitem__(self, key: str) -> BackendStatus: ...
    def __getitem__(self, key: SupportsIndex | slice | str) -> BackendStatus | list[BackendStatus]:
        """A backend's status by position or by name."""
        if isinstance(key, str):
            for status in self:
                if status.backend == key:
                    return status
            raise KeyError(f"no backend named {key!r}; backends here: {', '.join(s.backend for s in self) or 'none'}")
        return super().__getitem__(key)

    def __getattr__(self, name: str) -> BackendStatus:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(str(exc.args[0])) from None


class ModelList(list[ModelInfo]):
    """Models listed, with the backends that could not be asked: a backend that is down is never silently an
    empty list."""

    def __init__(self, models: Sequence[ModelInfo] = (), unreachable: Sequence[BackendStatus] = ()) -> None:
        super().__init__(models)
        #: the status (with the reason) of each backend that could not list its models
        self.unreachable: list[BackendStatus] = list(unreachable)


class LocalLLM:
    """A model by name, plus class methods to manage all models: list, pull, info, status, rm, unload."""

    def __init__(self, model: str | ModelSpec | None = None, **options: Any) -> None:
        self.model = model
        self.options = Options.from_dict(options)

    def complete(self, prompt: str | Sequence[Message | dict[str, Any]], *, raw: bool = False, **opts: Any) -> str:
        """The whole answer of this model."""
        return complete(self.model, prompt, raw=raw, **{**self.options.to_dict(), **opts})

    def stream(
        self, prompt: str | Sequence[Message | dict[str, Any]], *, raw: bool = False, **opts: Any
    ) -> AsyncGenerator[Chunk, None]:
        """Stream this model's answer."""
        return stream(self.model, prompt, raw=raw, **{**self.options.to_dict(), **opts})

    def embed(self, texts: str | Sequence[str]) -> builtins.list[builtins.list[float]]:
        """Embeddings of ``texts`` from this model, one L2-normalised vector per text."""
        return embed(self.model, texts, **self.options.to_dict())

    @staticmethod
    def list(backend: str | None = None) -> ModelList:
        """Every model of every backend (or of one); ``.unreachable`` holds the backends that could not be
        asked. Naming a backend that cannot be asked raises BackendUnavailable with its reason."""
        models, failed = _run_sync(get_hub().list_all(backend))
        if backend is not None and failed:
            raise BackendUnavailable(
                f"cannot list the models of {backend}: {failed[0].error or 'it is not ready'}",
                hint="see LocalLLM.status() for every backend",
            )
        return ModelList(models, failed)

    @staticmethod
    def status() -> Statuses:
        """Each backend: ready or not, why, version, device, models; by position or name (``.ollama``)."""
        return Statuses(_run_sync(get_hub().status_all()))

    @staticmethod
    def info(model: str | ModelSpec) -> ModelInfo:
        """Family, parameters, quantization, context, chat template, file, sha256."""
        return _run_sync(get_hub().info(model))

    @staticmethod
    def pull(model: str | ModelSpec, progress: Callable[[PullProgress], None] | None = None) -> Path | None:
        """Pull a model, calling ``progress`` with each step; returns the file for embedded models."""

        async def run() -> Path | None:
            path = None
            async for p in get_hub().pull(model):
                if progress:
                    progress(p)
                path = p.path or path
            return path

        return _run_sync(run())

    @staticmethod
    def rm(model: str | ModelSpec) -> None:
        """Delete a model (the backend must be named: NAME@llamacpp)."""
        _run_sync(get_hub().delete(model))

    @staticmethod
    def unload(model: str | ModelSpec) -> bool:
        """Free a loaded model's memory."""
        return _run_sync(get_hub().unload(model))
