"""The Backend contract every engine implements; faces and the hub only ever see this."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from llmspell.spec import ModelSpec
from llmspell.types import BackendStatus, Chunk, Embeddings, Message, ModelInfo, Options, PullProgress

if TYPE_CHECKING:
    from llmspell.config import Config
    from llmspell.endpoints import Endpoint


@dataclass(frozen=True)
class RunningModel:
    """One loaded copy of a model, as `/api/ps` and serve's `/health` report it."""

    #: the canonical model name (every spelling of the model maps to it)
    name: str
    backend: str
    #: generating now, and requests waiting behind that
    busy: bool = False
    pending: int = 0
    #: seconds it stays loaded when idle (negative: until unloaded); None when the backend does not say
    keep_alive: float | None = None
    #: seconds left before it is unloaded if nothing uses it; None: never, or not known
    expires_in: float | None = None
    last_stop_reason: str | None = None
    last_generated_tokens: int = 0
    #: what the copy is loaded for: "chat" (generating) or "embed" (a pooling copy for embeddings)
    purpose: str = "chat"


class Backend(ABC):
    """One kind of engine (and one endpoint of it). All methods are async and never block the loop."""

    #: the backend kind, as written after '@' in a spec
    kind: ClassVar[str]
    #: True when loaded models live in this process (so its shutdown unloads them, and a face drawing here
    #: competes with them for the cores); False for a server elsewhere
    IN_PROCESS: ClassVar[bool] = False
    #: capability flags, so faces can hide what a backend cannot do
    IMPLEMENTS_CANCEL: ClassVar[bool] = True
    IMPLEMENTS_PULL: ClassVar[bool] = True
    IMPLEMENTS_DELETE: ClassVar[bool] = True
    IMPLEMENTS_FORMAT: ClassVar[bool] = True
    IMPLEMENTS_EMBED: ClassVar[bool] = False
    #: True when ``chat`` takes ``tools`` and ``tool_choice`` (keyword-only) and reports the model's tool calls;
    #: the hub refuses tools for a backend without it rather than let them be dropped
    IMPLEMENTS_TOOLS: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Config) -> Backend:
        """The backend as the config describes it (the registry builds every enabled kind this way)."""
        raise NotImplementedError(f"{cls.__name__} does not say how to build itself from the config")

    @classmethod
    def from_endpoint(cls, config: Config, endpoint: Endpoint) -> Backend:
        """The backend for one ``[[endpoints]]`` entry of this kind, named as the entry is."""
        raise NotImplementedError(f"{cls.__name__} cannot be a named endpoint")

    def __init__(self, name: str | None = None) -> None:
        #: the instance name; equals ``kind`` unless several endpoints of one kind are configured
        self.name = name or self.kind
        #: the config entry this backend was made from, when it is a named endpoint
        self.endpoint: Endpoint | None = None

    @property
    def address(self) -> str | None:
        """Where a server backend sends its requests (None for an engine in this process)."""
        return None

    def offers(self, model: str) -> bool:
        """Whether the endpoint's model filter lets ``model`` through (always, for a backend that is not one)."""
        return self.endpoint is None or self.endpoint.allows(model)

    @abstractmethod
    async def status(self) -> BackendStatus:
        """Ready or not (with the reason), version, device, model count, loaded models. Never raises."""

    @abstractmethod
    async def list_models(self) -> list[ModelInfo]:
        """Every model this backend can run now."""

    @abstractmethod
    async def has_model(self, spec: ModelSpec) -> bool:
        """Whether the model is available here without a pull."""

    @abstractmethod
    async def info(self, spec: ModelSpec) -> ModelInfo:
        """Everything known about one model; raises ModelNotFound."""

    @abstractmethod
    def pull(self, spec: ModelSpec) -> AsyncGenerator[PullProgress, None]:
        """Fetch a model, yielding progress; closing the iterator cancels the pull."""

    @abstractmethod
    async def delete(self, spec: ModelSpec) -> None:
        """Remove a model this backend owns; raises ModelNotFound."""

    @abstractmethod
    async def loaded(self) -> list[str]:
        """Names of the models in memory now."""

    @abstractmethod
    async def unload(self, spec: ModelSpec) -> bool:
        """Free a loaded model; False when it was not loaded."""

    @abstractmethod
    def chat(
        self, spec: ModelSpec, messages: Sequence[Message], options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Stream the answer to a conversation; the last chunk has ``done`` and ``stats``. Closing cancels."""

    @abstractmethod
    def complete(self, spec: ModelSpec, prompt: str, options: Options | None = None) -> AsyncGenerator[Chunk, None]:
        """Stream a plain continuation of ``prompt`` (no chat template). Closing cancels."""

    async def embed(
        self,
        spec: ModelSpec,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        options: Options | None = None,
    ) -> Embeddings:
        """One vector per text, in order, L2-normalised; a text past the context is cut unless ``truncate`` is
        False (then PromptTooLong)."""
        from llmspell.errors import InvalidOptions

        raise InvalidOptions(f"the {self.name} backend does not compute embeddings", hint="use a local model")

    async def canonical_name(self, spec: ModelSpec) -> str:
        """The one name of the model ``spec`` means here, so every spelling of a model shares one admission
        bound in the server (``smollm2`` and ``smollm2:135m`` are one file on the embedded backend)."""
        return spec.tag

    async def running(self) -> list[RunningModel]:
        """Every loaded copy of every model: busy or idle, queue, keep-alive, expiry."""
        return [RunningModel(name, self.name) for name in await self.loaded()]

    async def set_keep_alive(self, spec: ModelSpec, seconds: float) -> None:  # noqa: B027 - optional hook
        """From now on keep the model loaded ``seconds`` after its last use (negative: until unloaded). A backend
        that takes keep-alive per request (a server) needs nothing here."""

    def limit_instances(self, copies: int | None) -> None:  # noqa: B027 - optional hook
        """Let at most ``copies`` loaded copies of one model answer at once; more requests for it wait in its queue
        (None: the backend decides). Only a backend that runs models in this process has copies to limit."""

    def close_sync(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release what the backend holds from synchronous code (atexit, a signal handler, tests)."""

    def room_to_draw(self) -> AbstractAsyncContextManager[bool]:
        """Keep a core free of this backend's engine threads while a face in this process draws; the block
        gets True when a core was held (a model was generating), so the face knows its drawing is awaited.

        Only an engine running in this process competes with the face for the cores; others need nothing.
        """
        return contextlib.nullcontext(False)

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release what the backend holds (loaded models, connections)."""
