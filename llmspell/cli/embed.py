"""``llmspell embed``: one vector per text from a local model, shown short with a similarity matrix, or as JSON."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from llmspell.errors import InvalidOptions
from llmspell.types import Embeddings, printable
from llmspell.vectors import shorten as shorten_vectors
from llmspell.vectors import similarity

#: how many characters of a text the plain output shows
TEXT_WIDTH = 40
#: how many values of each vector the plain output shows
FIRST_VALUES = 4
#: the similarity matrix is printed for up to this many texts (a wider one would not fit a terminal)
MATRIX_MAX = 16


def add_embed_parser(sub: Any) -> None:
    """Add ``embed MODEL [TEXT...] [--json] [--no-truncate] [--dimensions N]`` to the ``llmspell`` command."""
    e = sub.add_parser(
        "embed",
        help="one embedding vector per text (texts as arguments, or one per line on standard input)",
        description="Embed texts with a model: any local GGUF model (a chat model is mean-pooled) or an "
        "Ollama model. The vectors have length 1, so the cosine similarity of two texts is their dot product.",
    )
    e.add_argument("model", help="model spec, e.g. smollm2:135m")
    e.add_argument("texts", nargs="*", metavar="TEXT", help="the texts (none: one per line of standard input)")
    e.add_argument("--json", action="store_true", help='print {"model", "embeddings", "prompt_tokens"} as JSON')
    e.add_argument(
        "--no-truncate",
        dest="truncate",
        action="store_false",
        help="refuse a text longer than the context window instead of cutting it",
    )
    e.add_argument(
        "--dimensions", type=int, metavar="N", help="keep the first N values of each vector, scaled back to length 1"
    )
    e.set_defaults(func=cmd_embed)


def _read_stdin() -> list[str]:
    """The non-blank lines of standard input, each one text."""
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidOptions(f"standard input is not UTF-8 text: {exc.reason}") from None
    return [line for line in text.splitlines() if line.strip()]


def shorten(text: str, width: int = TEXT_WIDTH) -> str:
    """``text`` on one line, safe for a terminal, cut to ``width`` characters (with an ellipsis)."""
    flat = re.sub(r"\s+", " ", printable(text)).strip()
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def truncate_dimensions(vectors: Sequence[Sequence[float]], n: int) -> list[list[float]]:
    """The first ``n`` values of each vector, scaled back to length 1; the core's refusal, worded as the flag."""
    try:
        return shorten_vectors(vectors, n)
    except InvalidOptions as exc:
        hint = (exc.hint or "").replace("leave dimensions", "leave --dimensions")
        raise InvalidOptions(exc.message.replace("dimensions=", "--dimensions ", 1), hint=hint or None) from None


def plain_lines(texts: Sequence[str], result: Embeddings, full_size: int | None = None) -> list[str]:
    """The plain output: one line per text (text, dimensions, first values), the similarity matrix for 2 to
    MATRIX_MAX texts, then the model and the tokens read. ``full_size``: the model's size before --dimensions."""
    vectors = result.vectors
    number = len(str(len(texts)))
    shown = [shorten(t) for t in texts]
    width = max(len(s) for s in shown)
    lines = []
    for i, (text, vector) in enumerate(zip(shown, vectors, strict=True)):
        first = " ".join(f"{x:+.4f}" for x in vector[:FIRST_VALUES])
        more = " …" if len(vector) > FIRST_VALUES else ""
        lines.append(f"{i + 1:>{number}}  {text.ljust(width)}  {len(vector)} dims  [{first}{more}]")
    if 2 <= len(vectors) <= MATRIX_MAX:
        matrix = similarity(vectors)
        lines += ["", "cosine similarity", " " * number + "".join(f"  {j + 1:>6}" for j in range(len(vectors)))]
        lines += [f"{i + 1:>{number}}" + "".join(f"  {v:6.3f}" for v in row) for i, row in enumerate(matrix)]
    elif len(vectors) > MATRIX_MAX:
        lines += ["", f"(no similarity matrix for more than {MATRIX_MAX} texts; --json gives every vector)"]
    count = f"{len(texts)} text{'s' if len(texts) != 1 else ''}"
    cut = f" · first {len(vectors[0])} of {full_size} dims, re-normalised" if full_size is not None else ""
    tokens = f"{result.prompt_tokens} token{'s' if result.prompt_tokens != 1 else ''} read"
    lines += ["", f"{result.model} · {count} · {tokens}{cut}"]
    return lines


def _hub() -> Any:
    from llmspell.api import get_hub

    return get_hub()


async def cmd_embed(args: argparse.Namespace) -> int:
    """Embed the texts of the command line (or of standard input) and print them."""
    if args.dimensions is not None and args.dimensions < 1:
        truncate_dimensions([], args.dimensions)  # refused before the model loads
    texts: list[str] = list(args.texts)
    if not texts and not sys.stdin.isatty():
        texts = _read_stdin()
    if not texts:
        print(
            "error: no text given\n  pass the texts as arguments, or one per line on standard input",
            file=sys.stderr,
        )
        return 2
    result: Embeddings = await _hub().embed(args.model, texts, truncate=args.truncate)
    full_size = None
    if args.dimensions is not None:
        full_size = len(result.vectors[0]) if result.vectors else 0
        result = replace(result, vectors=truncate_dimensions(result.vectors, args.dimensions))
    if args.json:
        json.dump(
            {"model": result.model, "embeddings": result.vectors, "prompt_tokens": result.prompt_tokens}, sys.stdout
        )
        sys.stdout.write("\n")
        return 0
    for line in plain_lines(texts, result, full_size):
        print(line)
    return 0
