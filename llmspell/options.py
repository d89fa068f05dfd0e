"""Every generation option once: its type, range, default, help, CLI flag and the names it has on the wire.

:class:`llmspell.types.Options` checks values against this table; the CLI flags of ``run`` and ``chat``, the
REPL's ``/set`` list and completion, the kernel's ``%set``, the TUI's settings form, the Ollama backend and
``llmspell serve``'s Ollama and OpenAI mappings are all generated from it. Adding an option is one entry
here plus its field on ``Options`` (a test checks the two agree and that every face offers it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OptionKind = Literal["float", "int", "stop", "format"]


@dataclass(frozen=True)
class OptionSpec:
    """One option: what it is, what values it takes, and what it is called everywhere."""

    name: str
    kind: OptionKind
    help: str
    #: what the engine does when the option is not set (shown in help; the number for the embedded engine)
    default: str
    low: float | None = None
    high: float | None = None
    #: the embedded engine's own default, where it is a number the engine is given
    engine_default: float | None = None
    #: the command-line flag of ``run`` and ``chat``; None where the option has none on purpose
    flag: str | None = None
    #: the key in Ollama's ``options`` object; None where Ollama has no such option
    ollama: str | None = None
    #: the field of an OpenAI request body; None where OpenAI has none
    openai: str | None = None
    #: shown in the TUI's settings form
    form: bool = True

    @property
    def range_text(self) -> str:
        """The allowed values, as messages and help show them."""
        if self.low is None or self.high is None:
            return ""
        if self.kind == "int":
            return f"{int(self.low)} to {int(self.high)}"
        return f"{self.low} to {self.high}"


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "temperature", "float", "randomness; 0 = always the likeliest token", "0.8", 0.0, 5.0, 0.8,
        "--temperature", "temperature", "temperature",
    ),
    OptionSpec("top_k", "int", "sample among the k likeliest tokens", "40", 0, 100_000, 40, "--top-k", "top_k"),
    OptionSpec("top_p", "float", "nucleus: likeliest tokens up to this share", "0.95", 0.0, 1.0, 0.95,
               "--top-p", "top_p", "top_p"),
    OptionSpec("min_p", "float", "drop tokens under this share of the top", "0.05", 0.0, 1.0, 0.05,
               "--min-p", "min_p"),
    OptionSpec("repeat_penalty", "float", "above 1 discourages repeating tokens", "1.0", 0.0, 10.0, 1.0,
               "--repeat-penalty", "repeat_penalty"),
    OptionSpec("seed", "int", "same seed + settings = same answer", "random", -1, 2**32 - 1, None,
               "--seed", "seed", "seed"),
    OptionSpec("stop", "stop", "stop at any of these texts (a|b)", "none", flag="--stop",
               ollama="stop", openai="stop"),
    OptionSpec("max_tokens", "int", "stop after this many tokens", "until the context is full", 1, 1_000_000,
               None, "--max-tokens", "num_predict", "max_tokens"),
    OptionSpec("num_ctx", "int", "context window in tokens", "the config's num_ctx", 16, 1_048_576, None,
               "--num-ctx", "num_ctx"),
    # no flag: `run` never had one and the engine picks the count from the machine's load (README)
    OptionSpec("num_threads", "int", "engine threads", "one per free core", 1, 1024,
               None, None, "num_thread"),
    # Ollama takes format beside options, OpenAI as response_format: both are mapped by hand in serve
    OptionSpec("format", "format", '"json" or a JSON schema the answer must match', "free text",
               flag="--format", form=False),
)  # fmt: skip

BY_NAME: dict[str, OptionSpec] = {o.name: o for o in OPTIONS}
#: names of the options that take whole numbers, and of those that take any number
INT_OPTIONS = frozenset(o.name for o in OPTIONS if o.kind == "int")
FLOAT_OPTIONS = frozenset(o.name for o in OPTIONS if o.kind == "float")
#: each ranged option's (low, high)
RANGES: dict[str, tuple[float, float]] = {
    o.name: (o.low, o.high) for o in OPTIONS if o.low is not None and o.high is not None
}
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
