"""How the kernel shows %embed: per text its dimensions, length and first values, and for two texts or more
their cosine similarities; as an HTML table (the similarities shaded) with a plain-text twin."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from html import escape

from llmspell.types import Embeddings
from llmspell.vectors import similarity

#: characters of a text shown in a row (the whole text is the cell's tooltip)
TEXT_WIDTH = 60
#: values of each vector shown
FIRST_VALUES = 5
#: the similarity table is drawn for up to this many texts
MATRIX_MAX = 24


def shorten(text: str, width: int = TEXT_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters (with an ellipsis)."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def norm(vector: Sequence[float]) -> float:
    """The vector's Euclidean length (1 for what the core returns)."""
    return math.sqrt(sum(x * x for x in vector))


def summary(result: Embeddings) -> str:
    """One line: the model, how many texts and dimensions, the tokens read."""
    count = len(result.vectors)
    dims = len(result.vectors[0]) if result.vectors else 0
    tokens = f"{result.prompt_tokens} token{'s' if result.prompt_tokens != 1 else ''} read"
    return f"{result.model} · {count} text{'s' if count != 1 else ''} × {dims} dims · {tokens}"


def _first(vector: Sequence[float]) -> str:
    more = ", …" if len(vector) > FIRST_VALUES else ""
    return "[" + ", ".join(f"{x:+.4f}" for x in vector[:FIRST_VALUES]) + more + "]"


def embed_text(texts: Sequence[str], result: Embeddings) -> str:
    """The plain-text view: a row per text, then the similarity matrix (2 to MATRIX_MAX texts), then the summary."""
    number = len(str(len(texts)))
    shown = [shorten(t) for t in texts]
    width = max(len(s) for s in shown)
    lines = [
        f"{i + 1:>{number}}  {text.ljust(width)}  {len(v)} dims  norm {norm(v):.4f}  {_first(v)}"
        for i, (text, v) in enumerate(zip(shown, result.vectors, strict=True))
    ]
    if 2 <= len(texts) <= MATRIX_MAX:
        lines += ["", "cosine similarity", " " * number + "".join(f"  {j + 1:>6}" for j in range(len(texts)))]
        lines += [
            f"{i + 1:>{number}}" + "".join(f"  {v:6.3f}" for v in row)
            for i, row in enumerate(similarity(result.vectors))
        ]
    elif len(texts) > MATRIX_MAX:
        lines += ["", f"(no similarity table for more than {MATRIX_MAX} texts; the vectors are in Out[n])"]
    return "\n".join([*lines, "", summary(result)])


def _shade(value: float) -> str:
    """A background for a similarity: clear at 0 (or below), a solid blue at 1."""
    alpha = min(max(value, 0.0), 1.0) ** 2 * 0.6
    return f"background-color: rgba(76, 120, 168, {alpha:.2f})"


def embed_html(texts: Sequence[str], result: Embeddings) -> str:
    """The HTML view: a table of the texts (dims, norm, first values), the similarity table, the summary."""
    rows = "".join(
        f'<tr><td>{i + 1}</td><td title="{escape(text, quote=True)}">{escape(shorten(text))}</td>'
        f"<td>{len(v)}</td><td>{norm(v):.4f}</td><td><code>{escape(_first(v))}</code></td></tr>"
        for i, (text, v) in enumerate(zip(texts, result.vectors, strict=True))
    )
    parts = [
        '<div class="llmspell-embed">',
        '<table class="llmspell-embed-vectors"><thead><tr><th>#</th><th>text</th><th>dims</th><th>norm</th>'
        f"<th>first values</th></tr></thead><tbody>{rows}</tbody></table>",
    ]
    if 2 <= len(texts) <= MATRIX_MAX:
        head = "".join(f"<th>{j + 1}</th>" for j in range(len(texts)))
        body = "".join(
            f"<tr><th>{i + 1}</th>" + "".join(f'<td style="{_shade(v)}">{v:.3f}</td>' for v in row) + "</tr>"
            for i, row in enumerate(similarity(result.vectors))
        )
        parts.append(
            "<p><strong>cosine similarity</strong></p>"
            f'<table class="llmspell-embed-similarity"><thead><tr><th></th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>"
        )
    elif len(texts) > MATRIX_MAX:
        parts.append(f"<p><em>no similarity table for more than {MATRIX_MAX} texts; the vectors are in Out[n]</em></p>")
    parts.append(f"<p><small>{escape(summary(result))}</small></p></div>")
    return "".join(parts)
