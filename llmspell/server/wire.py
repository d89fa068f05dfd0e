"""What the server writes on the wire that both APIs share: times, durations, NDJSON lines, Ollama's stats."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator

from llmspell import errors as E
from llmspell.server.errors import error_text
from llmspell.types import MAX_KEEP_ALIVE, Stats, check_keep_alive

T = TypeVar("T")


def whole(value: Any) -> Any:
    """An integral float (``7.0``) as the int it is: JSON does not tell them apart, nor does JSON Schema's integer
    (a Python client's ``json.dumps(7.0)`` writes 7.0); anything else as it is, for the check that follows."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: a whole number in a request body: an int, or a float with no fraction
Whole = Annotated[int, BeforeValidator(whole)]


def whole_options(values: dict[str, Any]) -> dict[str, Any]:
    """llmspell options as a client sent them, with the integral floats of whole-number options made ints."""
    from llmspell.options import INT_OPTIONS

    return {k: whole(v) if k in INT_OPTIONS else v for k, v in values.items()}


def now_iso() -> str:
    """The current time as Ollama writes it (RFC 3339, UTC)."""
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


#: seconds as text, and a Go-style duration (ASCII digits only: float() would also take "1_0", " 5" or "١٢")
_SECONDS = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_DURATION = re.compile(r"(?:-?[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+")
_PART = re.compile(r"(-?[0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_keep_alive(value: float | int | str | None) -> float | None:
    """Ollama's keep_alive: seconds as a number, or a duration such as "5m", "1h30m", "300ms", "-1"."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise E.InvalidOptions("keep_alive must be a number of seconds or a duration such as 5m")
    if isinstance(value, (int, float)):
        return check_keep_alive(float(value))
    if _SECONDS.fullmatch(value):
        return check_keep_alive(float(value))
    if _DURATION.fullmatch(value):
        return check_keep_alive(sum(float(n) * _UNIT[u] for n, u in _PART.findall(value)))
    if value.strip().lower().lstrip("+-") in ("inf", "infinity", "nan"):
        raise E.InvalidOptions(
            f"keep_alive {value.strip()} is out of range",
            hint=f"use seconds from 0 to {MAX_KEEP_ALIVE:.0f} (a year), or -1 to keep the model loaded",
        )
    raise E.InvalidOptions(f"keep_alive {value!r} is not a duration", hint="use e.g. 300, 5m, 1h, 0 or -1")


def check_stop(value: T) -> T:
    """A stop value as clients send it: a text or a list of texts, none empty (an empty one matches everywhere)."""
    texts = [value] if isinstance(value, str) else value
    if value is None or (isinstance(texts, list) and all(isinstance(t, str) and t for t in texts)):
        return value
    raise E.InvalidOptions("option stop must be a text or a list of non-empty texts")


def check_format(fmt: T) -> T:
    """A JSON schema given as ``format``, refused at the edge when no value can satisfy it (see
    ``unsatisfiable_schema``: the engine crashed on its grammar, and with it every client of the server)."""
    from llmspell.backends._llama_prompt import unsatisfiable_schema

    problem = unsatisfiable_schema(fmt)
    if problem:
        raise E.InvalidOptions(f"format: {problem}")
    return fmt


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
