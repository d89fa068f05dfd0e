"""How an answer reaches the screen while it streams: plain text, or Markdown rendered block by block.

Markdown is rendered progressively: every finished block (a paragraph, list or code block followed by
a blank line) is printed once, for good, and only the block still growing lives in a small live region
that is redrawn as tokens arrive (its last screenful only, so a long code block never scrolls the live
region off the screen). Nothing re-renders the whole answer per token.
"""

from __future__ import annotations

import re
import time
from typing import Protocol

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.markdown import Markdown
from rich.segment import Segment

#: a fence line opens or closes a code block (``` or ~~~, possibly indented up to 3 spaces)
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
#: the live region is redrawn at most this often; finished blocks are printed at once
REFRESH_EVERY = 1 / 15


class AnswerView(Protocol):
    """Where one streamed answer is shown."""

    def feed(self, text: str) -> None:
        """Show the next piece of the answer."""

    def close(self) -> None:
        """The answer ended (finished, failed or interrupted): leave everything on the screen."""


class PlainView:
    """Writes each piece as it arrives, unchanged."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.text = ""
        self.closed = False

    def feed(self, text: str) -> None:
        """Write ``text`` now."""
        if not text:
            return
        if not self.text:
            text = text.lstrip("\n")
        self.text += text
        self.console.file.write(text)
        self.console.file.flush()

    def close(self) -> None:
        """End the answer's last line (once: a second call must not add a blank line)."""
        if self.closed:
            return
        self.closed = True
        if self.text and not self.text.endswith("\n"):
            self.console.file.write("\n")
        self.console.file.flush()


class _Tail:
    """A renderable showing only the last ``lines`` lines of another one."""

    def __init__(self, renderable: RenderableType, lines: int) -> None:
        self.renderable = renderable
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rendered = console.render_lines(self.renderable, options, pad=False)
        for line in rendered[-self.lines :]:
            yield from line
            yield Segment.line()


def split_finished(text: str) -> tuple[str, str]:
    """Split Markdown into the blocks that can no longer change and the block still being written.

    A block is finished at a blank line outside a code fence once the next line has begun at the left
    margin (an indented line may still belong to the block above, e.g. a list item's continuation).
    """
    lines = text.split("\n")
    in_fence = False
    cut = 0  # index in ``lines`` where the unfinished part starts
    offset = 0  # characters before line ``i``
    cut_offset = 0
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
        # a line is complete only when a newline follows it; the last element is still growing
        if (
            not in_fence
            and i + 1 < len(lines)
            and line.strip() == ""
            and i > cut
            and lines[i + 1][:1] not in ("", " ", "\t")
        ):
            cut = i + 1
            cut_offset = offset + len(line) + 1
        offset += len(line) + 1
    return text[:cut_offset], text[cut_offset:]


class MarkdownView:
    """Renders Markdown as it streams: finished blocks printed once, the growing block redrawn live."""

    def __init__(self, console: Console, *, code_theme: str = "monokai") -> None:
        self.console = console
        self.code_theme = code_theme
        self.text = ""
        self.printed = 0  # characters of ``text`` already printed for good
        self.last_refresh = 0.0
        self.live = Live(
            console=console,
            auto_refresh=False,
            transient=True,
            vertical_overflow="visible",
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start()

    def _markdown(self, text: str) -> Markdown:
        return Markdown(text, code_theme=self.code_theme)

    def feed(self, text: str) -> None:
        """Add ``text``; print blocks that just finished; redraw the growing block now and then."""
        if not text:
            return
        self.text += text
        done, _ = split_finished(self.text[self.printed :])
        if done.strip():
            self.live.update("", refresh=False)
            self.live.refresh()
            self.console.print(self._markdown(done))
            self.printed += len(done)
            self.last_refresh = 0.0
        elif done:
            self.printed += len(done)
        now = time.monotonic()
        if now - self.last_refresh >= REFRESH_EVERY:
            self.last_refresh = now
            self.live.update(self._pending(), refresh=True)

    def _pending(self) -> RenderableType:
        rest = self.text[self.printed :]
        return _Tail(self._markdown(rest), max(self.console.height - 2, 3)) if rest.strip() else ""

    def close(self) -> None:
        """Print the last block for good and remove the live region (once: a second call does nothing)."""
        if not self.live.is_started:
            return
        rest = self.text[self.printed :]
        self.live.update("", refresh=True)
        self.live.stop()
        if rest.strip():
            self.console.print(self._markdown(rest))
        self.printed = len(self.text)


def make_view(console: Console, *, markdown: bool) -> AnswerView:
    """Markdown on a terminal that can show it, plain text otherwise."""
    if markdown and console.is_terminal and not console.is_dumb_terminal:
        return MarkdownView(console)
    return PlainView(console)
