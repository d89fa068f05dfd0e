"""One assistant answer as Markdown that can grow while it streams, kept cheap to render however long it gets.

Deltas arrive in batches (the pane flushes every ~100 ms) and go to ``Markdown.get_stream``. A long answer is
split into segments at paragraph breaks outside code fences: each segment is one Markdown widget, sealed with
a full ``update()`` of its own text when the next one starts, and the open one gets its full ``update()`` when
the answer ends. Every part of the text is so parsed whole once (no token lost, fences rendered), while each
append and the final update only touch the last segment instead of re-parsing and re-laying out everything.
"""

from __future__ import annotations

from rich.markdown import Markdown as RichMarkdown
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Markdown, Static
from textual.widgets._markdown import MarkdownStream

#: a segment is sealed at the first paragraph break after this many characters (outside a code fence)
SEGMENT_CHARS = 1500


def _fence_open(text: str) -> bool:
    """Whether ``text`` ends inside a fenced code block."""
    fences = sum(1 for line in text.splitlines() if line.lstrip().startswith(("```", "~~~")))
    return fences % 2 == 1


def cut_point(text: str, limit: int = SEGMENT_CHARS) -> int:
    """Where a segment of ``text`` may end: after a blank line past ``limit``, outside a fence; 0 if none."""
    if len(text) <= limit:
        return 0
    start = limit
    while True:
        i = text.find("\n\n", start)
        if i < 0:
            return 0
        cut = i + 2
        if not _fence_open(text[:cut]):
            return cut
        start = cut


def segments(text: str, limit: int = SEGMENT_CHARS) -> list[str]:
    """``text`` split the way a streamed answer is split (so a reloaded long answer renders as cheaply)."""
    parts = []
    while (cut := cut_point(text, limit)) > 0:
        parts.append(text[:cut])
        text = text[cut:]
    return [*parts, text]


class SealedSegment(Static):
    """A finished segment of a long answer: its whole text rendered once by Rich's Markdown, as one widget."""

    DEFAULT_CSS = """
    SealedSegment {
        height: auto;
        padding: 0 1 1 1;
    }
    """

    def __init__(self, markdown: str) -> None:
        super().__init__(RichMarkdown(markdown, code_theme="monokai"))
        self.markdown = markdown


def _sealed(text: str) -> SealedSegment:
    return SealedSegment(text)


class AnswerView(Vertical):
    """An answer in one or more Markdown segments; ``text`` is always the whole answer received so far."""

    DEFAULT_CSS = """
    AnswerView {
        height: auto;
    }
    AnswerView > Markdown {
        margin: 0;
        padding: 0;
    }
    """

    def __init__(self, text: str = "", *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        parts = segments(text)
        self._sealed: list[str] = parts[:-1]
        self._open = parts[-1]
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        for part in self._sealed:
            yield _sealed(part)
        yield Markdown(self._open)

    @property
    def text(self) -> str:
        """The whole answer so far."""
        return "".join(self._sealed) + self._open

    @property
    def sources(self) -> list[str]:
        """The text each segment shows (their concatenation is ``text`` once the answer ended)."""
        return [
            w.source if isinstance(w, Markdown) else w.markdown
            for w in self.query("Markdown, SealedSegment")
            if isinstance(w, (Markdown, SealedSegment))
        ]

    def _last(self) -> Markdown:
        return self.query(Markdown).last()

    async def write(self, text: str) -> None:
        """Append a batch of deltas: streamed into the open segment, which is sealed when it has grown long."""
        if not text:
            return
        self._open += text
        cut = cut_point(self._open)
        if not cut:
            # made only when there is text for it: a stream stopped before its task first ran raises
            # CancelledError from stop() (Textual 8.2), which would end the caller as if it had been cancelled
            if self._stream is None:
                self._stream = Markdown.get_stream(self._last())
            await self._stream.write(text)
            return
        head, tail = self._open[:cut], self._open[cut:]
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        last = self._last()
        # sealed: its full text parsed whole, as one widget (a Markdown widget is one child per block, and every
        # layout pass visits them all: a long answer would slow down each later append)
        await self.mount(_sealed(head), before=last)
        await last.update(tail)
        self._sealed.append(head)
        self._open = tail

    async def finish(self, rest: str = "") -> None:
        """The answer ended (``rest`` is what arrived since the last batch): stop streaming and render the open
        segment from its full text, the one full ``update()`` that guarantees nothing is lost."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        *done, last_part = segments(self._open + rest)
        last = self._last()
        if done:
            await self.mount_all([_sealed(part) for part in done], before=last)
            self._sealed += done
        self._open = last_part
        await last.update(last_part)
