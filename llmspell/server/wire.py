"""What the server writes on the wire that both APIs share: times, durations, NDJSON lines, Ollama's stats."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from llmspell import errors as E
from llmspell.server.errors import error_text
from llmspell.types import Stats, check_keep_alive


def now_iso() -> str:
    """The current time as Ollama writes it (RFC 3339, UTC)."""
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def parse_keep_alive(value: float | int | str | None) -> float | None:
    """Ollama's keep_alive: seconds as a number, or a duration such as "5m", "1h30m", "300ms", "-1"."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise E.InvalidOptions("keep_alive must be a number of seconds or a duration such as 5m")
    if isinstance(value, (int, float)):
        return check_keep_alive(float(value))
    text = value.strip()
    try:
        return check_keep_alive(float(text))
    except ValueError:
        pass
    import re

    parts = re.findall(r"(-?\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise E.InvalidOptions(f"keep_alive {value!r} is not a duration", hint="use e.g. 300, 5m, 1h, 0 or -1")
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
    return check_keep_alive(sum(float(n) * scale[u] for n, u in parts))


def ndjson(items: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Encode dicts as NDJSON lines; an error after the first line becomes one ``{"error": ...}`` line, as Ollama."""

    async def lines() -> AsyncIterator[bytes]:
        try:
            async for item in items:
                yield json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        except Exception as exc:  # the status line is sent already: the error can only be the last line
            yield json.dumps({"error": error_text(exc)}).encode() + b"\n"

    return lines()


def stats_ns(stats: Stats) -> dict[str, Any]:
    """Ollama's final-line statistics, in nanoseconds, from the core's Stats."""
    ns = 1_000_000_000
    return {
        "done_reason": {"stop": "stop", "length": "length"}.get(stats.stop_reason, stats.stop_reason),
        "total_duration": int(stats.total_time * ns),
        "load_duration": int(stats.load_time * ns),
        "prompt_eval_count": stats.prompt_tokens,
        "prompt_eval_duration": int(stats.prompt_eval_time * ns),
        "eval_count": stats.generated_tokens,
        "eval_duration": int(stats.generation_time * ns),
    }
