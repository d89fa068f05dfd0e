"""A scripted stand-in backend for repeatable screen snapshots only; every face also has tests on the real model.

It answers every chat with fixed text and fixed stats, lists fixed models and a fixed status, and never
sleeps unless asked to (``delay``), so a screen rendered from it is the same on every machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from llmspell.backends.base import Backend
from llmspell.errors import ModelNotFound
from llmspell.spec import ModelSpec
from llmspell.types import BackendStatus, Chunk, Message, ModelInfo, Options, PullProgress, Stats

SCRIPTED_ANSWER = (
    "Here is a short answer.\n\n- one point\n- another point\n\n```python\nprint('hello')\n```\n\nThat is all."
)

SCRIPTED_STATS = Stats(
    prompt_tokens=24,
    prompt_eval_tokens=24,
    generated_tokens=32,
    load_time=0.1,
    time_to_first_token=0.05,
    prompt_eval_time=0.03,
    generation_time=0.25,
    total_time=0.3,
    stop_reason="stop",
)

SCRIPTED_MODELS = (
    ModelInfo(
        name="smollm2:135m",
        backend="llamacpp",
        location="/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        source="pypi",
        size_bytes=94_800_000,
        quantization="Q4_1",
        family="llama",
        parameters="135M",
        context_length=8192,
        has_chat_template=True,
        chat_template="{% for m in messages %}{{ m.content }}{% endfor %}",
        license="apache-2.0",
        sha256="0" * 64,
    ),
    ModelInfo(
        name="gemma3:270m",
        backend="llamacpp",
        location="/models/gemma-3-270m-Q4_K_M.gguf",
        source="pypi",
        size_bytes=253_000_000,
        quantization="Q4_K_M",
        family="gemma3",
        parameters="268M",
        context_length=32768,
        has_chat_template=False,
        license="gemma",
        sha256="1" * 64,
    ),
)


class ScriptedBackend(Backend):
    """Stand-in "llamacpp" backend with fixed answers, for snapshot tests (the real engine has its own tests)."""

    kind = "llamacpp"

    def __init__(
        self,
        answer: str = SCRIPTED_ANSWER,
        *,
        pieces: int = 8,
        delay: float = 0.0,
        models: Sequence[ModelInfo] = SCRIPTED_MODELS,
    ) -> None:
        super().__init__()
        self.answer = answer
        self.pieces = pieces
        self.delay = delay
        self.models = list(models)
        self.loaded_names: list[str] = []
        #: every (spec, messages, options) a chat was asked with, for tests that check what a face sent
        self.requests: list[tuple[ModelSpec, list[Message], Options | None]] = []

    def _find(self, spec: ModelSpec) -> ModelInfo:
        for m in self.models:
            if m.name == spec.tag or (m.name.split(":")[0] == spec.name and not spec.variant):
                return m
        raise ModelNotFound(f"no model {spec.tag} in the scripted backend", hint="use smollm2:135m or gemma3:270m")

    async def status(self) -> BackendStatus:
        """Always ready, with a fixed version and device."""
        return BackendStatus(
            self.name,
            True,
            version="scripted",
            device="cpu (2 threads)",
            model_count=len(self.models),
            loaded=tuple(self.loaded_names),
        )

    async def list_models(self) -> list[ModelInfo]:
        """The fixed models."""
        return [
            ModelInfo(**{**m.to_dict(), "loaded": m.name in self.loaded_names})  # type: ignore[arg-type]
            for m in self.models
        ]

    async def has_model(self, spec: ModelSpec) -> bool:
        """Whether the model is one of the fixed ones."""
        try:
            self._find(spec)
        except ModelNotFound:
            return False
        return True

    async def info(self, spec: ModelSpec) -> ModelInfo:
        """The fixed model's info."""
        return self._find(spec)

    async def pull(self, spec: ModelSpec) -> AsyncGenerator[PullProgress, None]:
        """A fixed progress sequence."""
        total = 1000
        for done in range(0, total + 1, 250):
            yield PullProgress("downloading", completed=done, total=total)
            if self.delay:
                await asyncio.sleep(self.delay)
        yield PullProgress("success", done=True)

    async def delete(self, spec: ModelSpec) -> None:
        """Drop a fixed model from the list."""
        self.models.remove(self._find(spec))

    async def loaded(self) -> list[str]:
        """Names marked loaded by a chat."""
        return list(self.loaded_names)

    async def unload(self, spec: ModelSpec) -> bool:
        """Unmark a model."""
        name = self._find(spec).name
        if name in self.loaded_names:
            self.loaded_names.remove(name)
            return True
        return False

    async def _script(self, spec: ModelSpec) -> AsyncGenerator[Chunk, None]:
        name = self._find(spec).name
        if name not in self.loaded_names:
            self.loaded_names.append(name)
        n = max(1, self.pieces)
        size = -(-len(self.answer) // n)
        for i in range(0, len(self.answer), size):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield Chunk(self.answer[i : i + size], model=name)
        yield Chunk("", done=True, stats=SCRIPTED_STATS, model=name)

    async def chat(
        self, spec: ModelSpec, messages: Sequence[Message], options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """The fixed answer in ``pieces`` chunks, then the fixed stats."""
        self.requests.append((spec, list(messages), options))
        async for chunk in self._script(spec):
            yield chunk

    async def complete(
        self, spec: ModelSpec, prompt: str, options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """The same fixed answer for a plain completion."""
        async for chunk in self._script(spec):
            yield chunk
