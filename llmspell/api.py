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
    model: str | ModelSpec | None,
    prompt: str | Sequence[Message | dict[str, Any]],
    *,
    raw: bool = False,
    tools: Sequence[Callable[..., Any]] | None = None,
    tool_choice: str | dict[str, Any] | None = "auto",
    max_steps: int = 8,
    **opts: Any,
) -> str:
    """The whole answer as one string (async); with ``tools``, the model's final answer after it called them."""
    if tools:
        if raw:
            raise TypeError("tools need a chat: raw=True takes no tools")
        return await _answer_with_tools(model, prompt, tools, tool_choice, max_steps, opts)
    return "".join([c.text async for c in stream(model, prompt, raw=raw, **opts)])


def complete(
    model: str | ModelSpec | None,
    prompt: str | Sequence[Message | dict[str, Any]],
    *,
    raw: bool = False,
    tools: Sequence[Callable[..., Any]] | None = None,
    tool_choice: str | dict[str, Any] | None = "auto",
    max_steps: int = 8,
    **opts: Any,
) -> str:
    """The whole answer as one string; a chat turn by default, plain completion with ``raw=True``.

    ``tools`` are plain functions (or Tools) the model may call: each function's type hints and docstring say what
    it takes; the model calls them, reads what they return and answers, within ``max_steps`` model steps. They run
    without asking (the script chose them); a bad call or a function that raises is told to the model, not raised.
    """
    return _run_sync(
        acomplete(model, prompt, raw=raw, tools=tools, tool_choice=tool_choice, max_steps=max_steps, **opts)
    )


async def _answer_with_tools(
    model: str | ModelSpec | None,
    prompt: str | Sequence[Message | dict[str, Any]],
    tools: Sequence[Callable[..., Any]],
    tool_choice: str | dict[str, Any] | None,
    max_steps: int,
    opts: dict[str, Any],
) -> str:
    """The tool loop for a script: the final answer's text; a model error or the step limit is raised."""
    import contextlib

    from llmspell.errors import ToolError
    from llmspell.tools.loop import FinalAnswer, LoopError, StepLimitReached, run_tools
    from llmspell.tools.toolset import ToolSet

    registry = ToolSet.from_functions(tools).registry
    options = Options.from_dict(opts) if opts else None
    loop = run_tools(
        get_hub(), model, _messages(prompt), registry, options=options, tool_choice=tool_choice, max_steps=max_steps
    )
    async with contextlib.aclosing(loop):
        async for event in loop:
            if isinstance(event, FinalAnswer):
                return event.text
            if isinstance(event, LoopError):
                raise event.error
            if isinstance(event, StepLimitReached):
                raise ToolError(event.text, hint="pass a larger max_steps, or fewer tools")
    raise ToolError("the tool loop ended without an answer")


def embed(model: str | ModelSpec | None, texts: str | Sequence[str], **opts: Any) -> list[list[float]]:
    """One L2-normalised vector per text (a single text gives a list of one vector)."""
    items = [texts] if isinstance(texts, str) else list(texts)
    result = _run_sync(get_hub().embed(model, items, options=Options.from_dict(opts) if opts else None))
    return result.vectors


class Agent:
    """A conversation for scripts: a model, a system prompt and options, and each ``complete`` or ``stream``
    the next turn of it (the model sees every earlier turn), as the faces' Session keeps it."""

    def __init__(
        self,
        model: str | None = None,
        system_prompt: str | None = None,
        *,
        save: bool = False,
        tools: Sequence[Callable[..., Any]] | None = None,
        **options: Any,
    ) -> None:
        from llmspell.chat import Conversation
        from llmspell.session import Session
        from llmspell.store import Store

        hub = get_hub()
        conv = Conversation(model or hub.config.default_model, system=system_prompt, options=Options.from_dict(options))
        #: the Session under it: ``save=True`` keeps the conversation in the history the faces open
        self.session = Session(hub, Store() if save else None, conv)
        self._turn: Any = None
        if tools:
            from llmspell.tools.toolset import ToolSet

            # every turn may call them; each call and result is kept in the conversation (``history``)
            self.session.use_tools(ToolSet.from_functions(tools).registry)

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
        turn = self._turn = self.session.send(text, Options.from_dict(options) if options else None)

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
        last = self.session.last
        if self.session.tools is None or last is None:
            return "".join(parts)
        limit = getattr(self._turn, "limit", None)
        if limit is not None:
            from llmspell.errors import ToolError

            # as llmspell.complete: the model never answered, so there is no answer to return
            raise ToolError(limit.text, hint="pass a larger max_steps, or fewer tools")
        # with tools, the answer is the last step's: the earlier steps' words led to the calls
        return last.text

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
