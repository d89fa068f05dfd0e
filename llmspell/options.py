"""Every generation option, as the faces, flags and wire mappings read it.

The options are written once, as the fields of :class:`llmspell.types.Options` (each with its ``opt``
metadata: kind, help, range, default, CLI flag, Ollama and OpenAI names). The CLI flags of ``run`` and
``chat``, the REPL's ``/set`` list and completion, the kernel's ``%set``, the TUI's settings form, the Ollama
backend, ``llmspell serve``'s Ollama and OpenAI mappings and the engine's sampling defaults all come from
the tables here; ``tests/core/test_options.py`` checks that each face offers every option.
"""

from __future__ import annotations

from llmspell.optionspec import OptionSpec
from llmspell.types import FLOAT_OPTIONS, INT_OPTIONS, OPTIONS, RANGES

__all__ = [
    "BY_NAME",
    "ENGINE_DEFAULTS",
    "FLOAT_OPTIONS",
    "INT_OPTIONS",
    "OLLAMA_OPTIONS",
    "OPTIONS",
    "RANGES",
    "OptionSpec",
    "help_lines",
]

BY_NAME: dict[str, OptionSpec] = {o.name: o for o in OPTIONS}
#: Ollama's option key -> llmspell's option name
OLLAMA_OPTIONS: dict[str, str] = {o.ollama: o.name for o in OPTIONS if o.ollama}
#: the embedded engine's sampling defaults, by option name
ENGINE_DEFAULTS: dict[str, float] = {o.name: o.engine_default for o in OPTIONS if o.engine_default is not None}


def help_lines() -> list[tuple[str, str]]:
    """Each option with its help, range and default, for a face's option list."""
    out = []
    for o in OPTIONS:
        extra = ", ".join(x for x in (o.range_text, f"default {o.default}") if x)
        out.append((o.name, f"{o.help} ({extra})"))
    return out
