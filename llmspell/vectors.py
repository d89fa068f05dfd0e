"""Small arithmetic on embedding vectors that every face shares: unit length, fewer dimensions, similarity."""

from __future__ import annotations

import math
from collections.abc import Sequence

from llmspell.errors import InvalidOptions


def unit(vector: Sequence[float]) -> list[float]:
    """``vector`` scaled to length 1 (a zero vector stays as it is)."""
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else [float(x) for x in vector]


def shorten(vectors: Sequence[Sequence[float]], dimensions: int | None) -> list[list[float]]:
    """The first ``dimensions`` values of each vector, scaled back to length 1, as Ollama and OpenAI shorten a
    vector (Matryoshka-style); None keeps them whole. Fewer than 1 or more than the vectors have is an error."""
    if dimensions is None:
        return [list(v) for v in vectors]
    size = len(vectors[0]) if vectors else 0
    if dimensions < 1:
        raise InvalidOptions(f"dimensions={dimensions} is too small", hint="keep at least 1 value")
    if vectors and dimensions > size:
        raise InvalidOptions(
            f"dimensions={dimensions} is more than the model gives: its vectors have {size} values",
            hint=f"use 1 to {size}, or leave dimensions out",
        )
    return [unit(v[:dimensions]) for v in vectors]


def similarity(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """The cosine similarity of every pair of vectors (the dot product over the lengths)."""
    norms = [math.sqrt(math.fsum(x * x for x in v)) or 1.0 for v in vectors]
    return [
        [math.fsum(x * y for x, y in zip(a, b, strict=True)) / (na * nb) for b, nb in zip(vectors, norms, strict=True)]
        for a, na in zip(vectors, norms, strict=True)
    ]
