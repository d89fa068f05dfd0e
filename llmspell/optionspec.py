"""What an option is, beside its value: written once per option, as the metadata of its field on Options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

OptionKind = Literal["float", "int", "stop", "format"]


@dataclass(frozen=True)
class OptionSpec:
    """One option: what it is, what values it takes, and what it is called everywhere."""

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
    #: the field's name on Options (filled in from the field)
    name: str = ""

    @property
    def range_text(self) -> str:
        """The allowed values, as messages and help show them."""
        if self.low is None or self.high is None:
            return ""
        if self.kind == "int":
            return f"{int(self.low)} to {int(self.high)}"
        return f"{self.low} to {self.high}"


def opt(*args: Any, **kwargs: Any) -> dict[str, OptionSpec]:
    """The metadata of an Options field: ``field(default=None, metadata=opt(kind, help, default, ...))``."""
    return {"option": OptionSpec(*args, **kwargs)}
