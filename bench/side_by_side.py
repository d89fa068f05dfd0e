"""Benchmark: two models streaming at once on the embedded backend, cores split vs each taking them all.

Run: .venv/bin/python bench/side_by_side.py
Prints each model's tokens/s alone and side by side, and the combined throughput as a fraction of running
the two answers one after the other (1.0 = no gain from running them together; below 1.0 = a loss).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import date

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.machine import physical_cores
from llmspell.spec import parse_spec
from llmspell.types import Options

MODELS = ("smollm2:135m", "gemma3:270m")
PROMPT = "Once upon a time, in a kingdom far away,"


async def rate(backend: LlamaCppBackend, spec: str, threads: int | None) -> float:
    """Generation tokens/s of one plain completion of 128 tokens."""
    stats = None
    async for chunk in backend.complete(
        parse_spec(spec), PROMPT, Options(temperature=0, max_tokens=128, num_threads=threads)
    ):
        stats = chunk.stats or stats
    assert stats is not None
    return stats.generation_tokens_per_s


async def main() -> None:
    backend = LlamaCppBackend(Config())
    for spec in MODELS:
        await rate(backend, spec, None)  # load both
    alone = {spec: (await rate(backend, spec, None)) for spec in MODELS}
    split = await asyncio.gather(*(rate(backend, s, None) for s in MODELS))
    full = await asyncio.gather(*(rate(backend, s, physical_cores()) for s in MODELS))
    print(f"# bench/side_by_side.py  {date.today()}  {physical_cores()} cores")
    for spec in MODELS:
        print(f"{spec} alone: {alone[spec]:.1f} tok/s")
    for label, rates in (("cores split (default)", split), ("each with all cores", full)):
        combined = sum(r / alone[s] for r, s in zip(rates, MODELS, strict=True))
        print(
            f"side by side, {label}: "
            + ", ".join(f"{s} {r:.1f}" for s, r in zip(MODELS, rates, strict=True))
            + f" tok/s; combined throughput {combined:.2f}x of one after the other"
        )
    await backend.close()


if __name__ == "__main__":
    asyncio.run(main())
