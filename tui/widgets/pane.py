"""One chat pane: a model picker, the conversation streamed as Markdown, and a live stats line."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.timer import Timer
from textual.widgets import Input, Static

from llmspell.chat import Conversation, Entry, state_note
from llmspell.compare import StreamMetrics
from llmspell.session import context_note
from llmspell.types import ToolCall
from llmspell_tui.widgets.chat_answer import AnswerView

if TYPE_CHECKING:
    from llmspell.tools.loop import LoopEvent
    from llmspell_tui.widgets.tool_block import ToolBlock

#: seconds a tool event waits for the text before it to reach the pane (it comes through another queue)
CATCH_UP_WITHIN = 30.0

#: how often streamed text is handed to the Markdown widget (batched: never a re-render per token). Each flush
#: costs a screen update on the cores the engine shares; 100 ms is the slowest that still reads as live.
FLUSH_EVERY = 0.1


class ChatPane(Vertical):
    """A conversation with one model; the chat screen feeds it the events of the compare runner."""

    DEFAULT_CSS = """
    ChatPane {
        width: 1fr;
        height: 1fr;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        padding: 0 0;
    }
    ChatPane.-active {
        border: round $accent;
        border-title-color: $text;
    }
    ChatPane > Input.model {
        border: none;
        height: 1;
        padding: 0 1;
        background: $boost;
    }
    ChatPane > Input.model:focus {
        background: $accent 30%;
    }
    ChatPane > VerticalScroll {
        height: 1fr;
        padding: 0 1;
    }
    ChatPane .user {
        color: $text;
        background: $primary 15%;
        padding: 0 1;
        margin: 1 0 0 0;
    }
    ChatPane .error {
        color: $error;
        padding: 0 1;
    }
    ChatPane .note {
        color: $warning;
        text-style: italic;
        padding: 0 1;
    }
    ChatPane > .stats {
        height: auto;
        max-height: 3;
        color: $text-muted;
        padding: 0 1;
        background: $boost;
    }
    """

    class ModelChosen(Message):
        """The user picked another model for this pane."""

        def __init__(self, pane: ChatPane, model: str) -> None:
            super().__init__()
            self.pane = pane
            self.model = model

    def __init__(
        self,
        conv: Conversation,
        *,
        suggestions: list[str] | None = None,
        id: str | None = None,
        room_to_draw: Callable[[], AbstractAsyncContextManager[bool]] | None = None,
    ) -> None:
        super().__init__(id=id)
        self.conv = conv
        #: asks the engines of this process to leave a core free while the pane draws (Hub.room_to_draw)
        self._room_to_draw = room_to_draw or (lambda: contextlib.nullcontext(False))
        self._suggestions = suggestions or []
        self._answer: AnswerView | None = None
        self._pending: list[str] = []
        self._parts: list[str] = []
        self._timer: Timer | None = None
        self._metrics: StreamMetrics | None = None
        # one writer at a time into the answer: the flush timer's write and finish() must not interleave (stopping
        # the timer mid-write would cancel it between sealing a segment and recording it, and finish would seal
        # that text a second time)
        self._write_lock = asyncio.Lock()
        #: True while an answer streams into this pane
        self.streaming = False
        self._stats_rows = 0
        #: where the answer streaming now (or the last one) runs, "@llamacpp" or "@gpubox"; "" when not known
        self.where = ""
        #: characters of the answer fed so far, and a signal each time more arrive (see caught_up)
        self._received = 0
        self._fed = asyncio.Event()
        #: the tool calls of the answer streaming now, by call id
        self._blocks: dict[str, ToolBlock] = {}

    def compose(self) -> ComposeResult:
        yield Input(
            self.conv.model,
            placeholder="model, e.g. smollm2:135m (Enter to switch)",
            suggester=SuggestFromList(self._suggestions, case_sensitive=False),
            classes="model",
        )
        yield VerticalScroll(classes="log")
        yield Static("", classes="stats")

    async def on_mount(self) -> None:
        self._retitle()
        await self._show_entries()

    # ----- accessors ---------------------------------------------------------------------

    @property
    def log_view(self) -> VerticalScroll:
        """The scrolling list of messages."""
        return self.query_one(VerticalScroll)

    @property
    def model_input(self) -> Input:
        """The model picker."""
        return self.query_one("Input.model", Input)

    @property
    def stats_line(self) -> Static:
        """The line under the messages: live metrics, the final stats, or the error."""
        return self.query_one(".stats", Static)

    @property
    def answer_text(self) -> str:
        """The text of the answer streaming now (or the last one)."""
        return "".join(self._parts)

    def _retitle(self) -> None:
        self.border_title = self.conv.title or "new chat"

    def runs_on(self, where: str, address: str | None = None) -> None:
        """Say where the next answer runs: ``where`` opens the stats line, a remote server's address goes on the
        pane's lower border (so a comparison across machines says which pane ran where)."""
        self.where = where
        self.border_subtitle = f"{where.removeprefix('@')} · {address}" if where and address else ""

    def _at(self, text: str) -> str:
        """A stats line that opens with where the answer ran."""
        return f"{self.where} · {text}" if self.where else text

    def model_switched(self) -> None:
        """The conversation goes on with another model: the picker and the stats line say which."""
        self.model_input.value = self.conv.model
        self.runs_on("")  # the next answer says where the new model runs
        if self.conv.entries:
            self.stats_line.update(f"now talking to {self.conv.model}; the conversation goes on")

    def set_suggestions(self, names: list[str]) -> None:
        """Model names offered while typing in the picker."""
        self._suggestions = names
        self.model_input.suggester = SuggestFromList(names, case_sensitive=False)

    # ----- conversation ------------------------------------------------------------------

    async def load(self, conv: Conversation) -> None:
        """Show another conversation in this pane (model, settings and every message)."""
        self.conv = conv
        self._retitle()
        self.runs_on("")  # a stored answer does not say where it ran
        self.model_input.value = conv.model
        await self.log_view.remove_children()
        self.stats_line.update("")
        await self._show_entries()

    async def _show_entries(self) -> None:
        widgets = []
        last: Entry | None = None
        calls: dict[str, ToolCall] = {}
        for i, e in enumerate(self.conv.entries):
            if i == self.conv.context_from and i > 0:
                # what is above was left out when the conversation outgrew the model's context
                widgets.append(Static("(the messages above are no longer sent: outside the context)", classes="note"))
            if e.role == "user":
                widgets.append(Static(e.content, classes="user", markup=False))
            elif e.role == "assistant":
                if e.content or not e.tool_calls:  # a step that only called tools shows only its calls
                    widgets.append(AnswerView(e.content))
                if e.state != "done":
                    widgets.append(Static(f"({state_note(e.state)})", classes="note"))
                calls.update((c.id, c) for c in e.tool_calls)
                last = e
            elif e.role == "tool":
                from llmspell_tui.widgets.tool_block import ToolBlock

                widgets.append(ToolBlock.from_entry(e, calls.get(e.tool_call_id or "")))
        if widgets:
            await self.log_view.mount_all(widgets)
            self.call_after_refresh(self._follow)
        if last is not None and last.stats is not None:
            self.stats_line.update(last.stats.summary())
        elif self.conv.system:
            self.stats_line.update("system prompt set")

    def new_conversation(self, model: str | None = None) -> Conversation:
        """A fresh conversation in this pane, keeping the system prompt and options."""
        self.conv = Conversation(model or self.conv.model, self.conv.system, self.conv.options)
        return self.conv

    @on(Input.Submitted, "Input.model")
    def _model_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        model = event.value.strip()
        if model:
            self.post_message(self.ModelChosen(self, model))

    # ----- streaming ---------------------------------------------------------------------

    async def begin(self, prompt: str, metrics: StreamMetrics | None = None) -> None:
        """Show the prompt and an empty answer that text will stream into."""
        self._parts, self._pending = [], []
        self._metrics = metrics
        self._received = 0
        self._blocks = {}
        self.streaming = True
        self._answer = AnswerView()
        await self.log_view.mount_all([Static(prompt, classes="user", markup=False), self._answer])
        self.stats_line.update(self._at("waiting…"))
        self._stats_rows = 0
        self._timer = self.set_interval(FLUSH_EVERY, self._flush)

    def feed(self, text: str, metrics: StreamMetrics | None = None) -> None:
        """Take a delta; it reaches the screen at the next flush."""
        if metrics is not None:
            self._metrics = metrics
        if text:
            self._parts.append(text)
            self._pending.append(text)
            self._received += len(text)
        self._fed.set()

    async def caught_up(self, within: float = CATCH_UP_WITHIN) -> None:
        """Wait until every character the answer produced so far has been fed to this pane (the runner's events
        come through a queue; a tool event does not), bounded so a lost event never stalls the answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            metrics = self._metrics
            if metrics is not None and self._received >= len(metrics.text):
                return
            left = deadline - loop.time()
            if left <= 0:
                return
            self._fed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fed.wait(), left)

    async def tool_event(self, event: LoopEvent) -> None:
        """Show a tool event where it happened: a call ends the text so far and opens a block, whose title says how
        the call ended once it did; the model's next text goes below it."""
        from llmspell.tools.loop import StepLimitReached, ToolCallEvent, ToolResultEvent
        from llmspell_tui.widgets.tool_block import ToolBlock

        if isinstance(event, ToolCallEvent):
            async with self._write_lock:
                answer = self._answer
                if answer is not None:
                    await answer.finish("".join(self._pending))
                    self._pending.clear()
                    if not answer.text:
                        await answer.remove()
                block = ToolBlock(event.call)
                self._blocks[event.call.id] = block
                self._answer = AnswerView()
                await self.log_view.mount_all([block, self._answer])
            self._follow()
        elif isinstance(event, ToolResultEvent):
            shown = self._blocks.get(event.call.id)
            if shown is not None:
                shown.finish(event.result)
        elif isinstance(event, StepLimitReached):
            await self.log_view.mount(Static(f"({event.text})", classes="note", markup=False), before=self._answer)

    @property
    def tool_blocks(self) -> list[ToolBlock]:
        """The tool call blocks shown in this pane, top to bottom."""
        from llmspell_tui.widgets.tool_block import ToolBlock

        return list(self.log_view.query(ToolBlock))

    def _follow(self) -> None:
        # anchored only once the messages overflow: an anchored log aligns short content to the bottom
        log = self.log_view
        if not log.is_anchored and log.max_scroll_y > 0:
            log.anchor()

    async def _flush(self) -> None:
        async with self._write_lock, self._room_to_draw() as held:
            await self._flush_now()
            if held:  # the engine runs on fewer threads until the screen shows what was written
                await self._drawn()

    async def _drawn(self) -> None:
        """Wait until the screen shows what was just written (the drawing is the costly part, not the write)."""
        shown = asyncio.get_running_loop().create_future()

        def drawn() -> None:
            if not shown.done():
                shown.set_result(None)

        self.call_after_refresh(drawn)
        await asyncio.wait({shown}, timeout=FLUSH_EVERY)

    async def _flush_now(self) -> None:
        if self._pending and self._answer is not None:
            text = "".join(self._pending)
            self._pending.clear()
            await self._answer.write(text)
        self._follow()
        if self._metrics is not None and self.streaming:
            self._live_stats(self._at(self._metrics.live_summary()))

    def _live_stats(self, text: str) -> None:
        """Show the live numbers; a new layout only when the line's wrapped height changes.

        A layout pass visits the whole screen: a dozen a second per pane costs the engine (which shares the
        cores) several percent of its tokens/s, while the stats line almost never changes height.
        """
        line = self.stats_line
        width = max(1, line.content_size.width)
        rows = -(-len(text) // width)
        line.update(text, layout=rows != self._stats_rows)
        self._stats_rows = rows

    async def finish(self, metrics: StreamMetrics | None = None, *, error: str | None = None) -> None:
        """End the answer: one full update with the whole text (so nothing is lost), then the stats or error."""
        if not self.streaming:
            return
        self.streaming = False
        self._retitle()
        async with self._write_lock:
            # under the lock the timer is between two flushes, so stopping it cancels no write
            if self._timer is not None:
                self._timer.stop()
                self._timer = None
            # the final flush: what arrived since the last batch, and one full update of the open segment
            if self._answer is not None:
                await self._answer.finish("".join(self._pending))
            self._pending.clear()
        for block in self._blocks.values():
            block.cancel()  # a call still running when the answer ended was cut by it
        self._blocks = {}
        metrics = metrics or self._metrics
        text = self.answer_text
        status = metrics.status if metrics is not None else "cancelled"
        if metrics is not None and metrics.left_out:
            note = context_note(metrics.left_out, metrics.model)
            await self.log_view.mount(Static(f"({note})", classes="note", markup=False))
        if error is None and metrics is not None and metrics.error:
            error = metrics.error
        if error is not None:
            if not text and self._answer is not None:
                await self._answer.remove()
            await self.log_view.mount(Static(error, classes="error", markup=False))
            self.stats_line.update(self._at("error: the prompt is kept in the input"))
        elif status == "cancelled" or metrics is None or metrics.stats is None:
            note = state_note("cancelled")
            await self.log_view.mount(Static(f"({note})", classes="note"))
            n = metrics.chunks if metrics is not None else len(self._parts)
            self.stats_line.update(self._at(f"{note} · {n} tokens received"))
        else:
            assert metrics.stats is not None
            self.stats_line.update(self._at(metrics.stats.summary()))
        self._answer = None
        self.call_after_refresh(self._follow)
