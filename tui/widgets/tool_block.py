"""A tool call in a chat pane: a collapsible block, titled with the call and what it came to, holding the
arguments and the result. Live calls and reopened ones (from stored entries) are the same block."""

from __future__ import annotations

import json
from typing import Any

from textual.content import Content
from textual.timer import Timer
from textual.widgets import Collapsible, Static

from llmspell.chat import Entry, tool_outcome
from llmspell.tools.base import ToolResult
from llmspell.tools.toolset import call_line, result_line
from llmspell.types import ToolCall

#: how much of a result the block shows (the model got all of it; the store keeps all of it)
SHOWN_CHARS = 2000
SHOWN_LINES = 40
#: the spinner's frames while a call runs (or waits for the user's answer)
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def cut(text: str, chars: int = SHOWN_CHARS, lines: int = SHOWN_LINES) -> str:
    """``text`` cut to a size a pane can show, saying how much was left out."""
    short = "\n".join(text.splitlines()[:lines])[:chars]
    if len(short) >= len(text.rstrip()):
        return text
    return f"{short}\n… ({len(text) - len(short)} more characters)"


def _arguments_text(arguments: dict[str, Any] | str) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False, indent=2)


def stored_result(entry: Entry) -> ToolResult:
    """A stored tool entry as the result it recorded (what ``result_line`` words)."""
    info = entry.tool or {}
    return ToolResult(
        name=str(info.get("name") or "tool"),
        arguments=info.get("arguments") or {},
        content=entry.content,
        ok=bool(info.get("ok", True)),
        error=info.get("error"),
        seconds=float(info.get("seconds") or 0.0),
        refused=bool(info.get("refused")),
        cancelled=bool(info.get("cancelled")) or entry.state == "cancelled",
        repeated=bool(info.get("repeated")),
    )


class ToolBlock(Collapsible):
    """One tool call: the title is ``name(arguments)`` and, once it ended, how (ok, refused, failed, cancelled)."""

    DEFAULT_CSS = """
    ToolBlock {
        height: auto;
        margin: 0 0 1 0;
        padding: 0;
        border-top: none;
        background: $boost;
    }
    ToolBlock > Contents {
        padding: 0 1 0 2;
        height: auto;
    }
    ToolBlock .tool-body {
        color: $text-muted;
    }
    ToolBlock.-running CollapsibleTitle {
        color: $warning;
    }
    ToolBlock.-failed CollapsibleTitle {
        color: $error;
    }
    """

    def __init__(self, call: ToolCall, result: ToolResult | None = None, *, outcome: str | None = None) -> None:
        self.call = call
        #: how the call ended (result_line's words); None while it runs
        self.outcome: str | None = None
        self.result: ToolResult | None = None
        self._body = Static(self._body_text(), classes="tool-body", markup=False)
        self._frame = 0
        self._spinner: Timer | None = None
        super().__init__(self._body, title=self._headline(), collapsed=True)
        if result is not None:
            self._end(result, outcome)
        else:
            self.add_class("-running")

    @classmethod
    def from_entry(cls, entry: Entry, call: ToolCall | None) -> ToolBlock:
        """The block of a stored tool entry (its call from the assistant step that made it, when known)."""
        result = stored_result(entry)
        info = entry.tool or {}
        if call is None:
            args = result.arguments
            call = ToolCall(entry.tool_call_id or "", result.name, args if isinstance(args, dict) else {})
        return cls(call, result, outcome=tool_outcome(info, cancelled=entry.state == "cancelled"))

    # the title is literal text: arguments hold brackets that Textual would read as markup
    def _watch_title(self, title: str) -> None:
        self._title.label = Content(title)

    @property
    def running(self) -> bool:
        """Whether the call has not ended yet."""
        return self.outcome is None

    def on_mount(self) -> None:
        if self.running:
            self._spinner = self.set_interval(0.2, self._spin)

    def _spin(self) -> None:
        self._frame += 1
        self.title = self._headline()

    def _headline(self) -> str:
        line = call_line(self.call)
        if self.outcome is None:
            return f"{line} · {SPINNER[self._frame % len(SPINNER)]} running…"
        return f"{line} · {self.outcome}"

    def _body_text(self) -> str:
        parts = [f"arguments:\n{_arguments_text(self.call.arguments if self.call.arguments else self.call.raw)}"]
        if self.result is not None:
            parts.append(f"result:\n{cut(self.result.content)}")
        return "\n\n".join(parts)

    def _end(self, result: ToolResult | None, outcome: str | None = None) -> None:
        self.result = result
        self.outcome = outcome or (result_line(result) if result is not None else "cancelled")
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
        self.remove_class("-running")
        self.set_class(result is not None and not result.ok, "-failed")
        self.title = self._headline()
        self._body.update(self._body_text())

    def finish(self, result: ToolResult) -> None:
        """The call ended: the title says how, the body shows what the model was told."""
        self._end(result)

    def cancel(self) -> None:
        """The answer was cancelled before this call ended."""
        if self.running:
            self._end(None, "cancelled")
