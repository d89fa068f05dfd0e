"""A conversation turn with tools: the tool loop behind a Session, every step recorded as it happens.

:class:`ToolTurn` is a :class:`~llmspell.chat.Turn` whose answer may take several model steps: the model
writes, calls tools, reads their results and writes again. It streams each step's text as chunks, exactly as a
plain turn does (so a face draws it the same way), and tells the face about the tools through one callback
(:class:`ToolSettings.on_event`) at the moment each thing happens, in order: a call, its result, a step's end, the
step limit. The conversation gets one assistant entry per step (with its calls), one tool entry per call (with
what it came to) and the final answer, each stored as soon as it exists, so a crash or a cancel leaves what
happened, never a call without its result.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmspell.chat import SAVE_EVERY, Conversation, Entry, Turn
from llmspell.errors import PromptTooLong
from llmspell.tools.base import ConfirmCallback, ToolRegistry, ToolResult
from llmspell.tools.loop import (
    FinalAnswer,
    LoopError,
    LoopEvent,
    StepEnd,
    StepLimitReached,
    TextChunk,
    ToolCallEvent,
    ToolResultEvent,
    run_tools,
)
from llmspell.types import Chunk, Message, Options, Stats, ToolCall

if TYPE_CHECKING:
    from llmspell.hub import Hub
    from llmspell.store import Store

__all__ = ["EventCallback", "ToolSettings", "ToolTurn", "result_record"]

#: told of each tool event (sync or async) while a turn runs: ToolCallEvent, ToolResultEvent, StepEnd,
#: StepLimitReached
EventCallback = Callable[[LoopEvent], "Awaitable[None] | None"]


@dataclass
class ToolSettings:
    """The tools a Session's turns may use and how: the registry, the first step's choice, the step bound, and
    the face's two callbacks (ask the user before a side effect; draw what happens)."""

    registry: ToolRegistry
    tool_choice: str | dict[str, Any] | None = "auto"
    max_steps: int = 8
    confirm: ConfirmCallback | None = None
    on_event: EventCallback | None = None


def result_record(result: ToolResult) -> dict[str, Any]:
    """What the store keeps about one call's outcome (the tool entry's ``tool`` field)."""
    return {
        "name": result.name,
        "arguments": result.arguments,
        "ok": result.ok,
        "error": result.error,
        "seconds": round(result.seconds, 4),
        "refused": result.refused,
        "cancelled": result.cancelled,
        "repeated": result.repeated,
    }


class ToolTurn(Turn):
    """One user turn answered with tools (see the module): iterate for the text chunks of every step (one done
    chunk at the very end), close to cancel; the tool events go to ``settings.on_event`` as they happen."""

    def __init__(
        self,
        hub: Hub,
        conv: Conversation,
        text: str,
        settings: ToolSettings,
        store: Store | None = None,
        options: Options | None = None,
    ) -> None:
        self.settings = settings
        #: model steps this turn took
        self.steps = 0
        #: set when the model still called tools after max_steps (those calls did not run)
        self.limit: StepLimitReached | None = None
        #: every call's outcome, in order
        self.results: list[ToolResult] = []
        self._tool_state = "streaming"
        self._open: Entry | None = None
        self._parts: list[str] = []
        self._saved_at = 0.0
        #: the ids of the calls this turn recorded
        self._recorded: set[str] = set()
        #: how many messages the loop was sent (what it adds comes after)
        self._sent = 0
        super().__init__(hub, conv, text, store, options)

    @property
    def state(self) -> str:
        """streaming while it runs, then done, cancelled (also while a tool ran) or failed."""
        if self._tool_state != "streaming":
            return self._tool_state
        return super().state

    async def _tell(self, event: LoopEvent) -> None:
        callback = self.settings.on_event
        if callback is None:
            return
        done = callback(event)
        if inspect.isawaitable(done):
            await done

    async def _run(self, hub: Hub, store: Store | None, options: Options | None) -> AsyncGenerator[Chunk, None]:
        conv = self.conv
        user = Entry("user", self.text)
        if store is not None:
            store.add(conv, user)
        else:
            conv.entries.append(user)
        opts = conv.options.merged(options)
        start = conv.context_from
        # the first step's answer row exists from the start, as in a plain turn (a face killed before the first
        # token leaves the prompt with an unfinished answer)
        self._begin(store)
        #: whether the model has produced anything yet (until then a too-long prompt is cut and sent again)
        answered = False
        stats: Stats | None = None
        try:
            while True:
                sent = conv.messages(len(conv.entries) - 1)
                self._sent = len(sent)
                loop = run_tools(
                    hub,
                    conv.model,
                    sent,
                    self.settings.registry,
                    options=opts,
                    tool_choice=self.settings.tool_choice,
                    max_steps=self.settings.max_steps,
                    confirm=self.settings.confirm,
                )
                retry = False
                try:
                    async with contextlib.aclosing(loop):
                        async for event in loop:
                            if isinstance(event, TextChunk):
                                answered = True
                                if self._open is None:
                                    self._begin(store)
                                self._grow(store, event.text)
                                yield Chunk(text=event.text, model=event.chunk.model, logprobs=event.chunk.logprobs)
                            elif isinstance(event, StepEnd):
                                answered = True
                                if self._open is None:
                                    self._begin(store)  # a step that only called tools
                                self.steps = event.step
                                stats = event.stats
                                self._finish_step(store, event.message, event.stats)
                                await self._tell(event)
                            elif isinstance(event, ToolCallEvent):
                                await self._tell(event)
                            elif isinstance(event, ToolResultEvent):
                                self._record(store, event.call, event.result)
                                await self._tell(event)
                            elif isinstance(event, StepLimitReached):
                                self.limit = event
                                self._record_limit(store, loop.messages, event)
                                await self._tell(event)
                            elif isinstance(event, LoopError):
                                error = event.error
                                if (
                                    not answered
                                    and event.step == 1
                                    and isinstance(error, PromptTooLong)
                                    and not self._parts
                                    and hub.config.context_overflow != "fail"
                                    and self._leave_out(error, opts)
                                ):
                                    retry = True
                                    break
                                raise error
                            elif isinstance(event, FinalAnswer):
                                stats = event.stats
                finally:
                    # calls cut by a cancel have results only once the loop is closed (recorded as cancelled); a
                    # cancel may also land in a face's on_event, outside the loop
                    self._record_rest(store, loop)
                if not retry:
                    break
            if store is not None and conv.context_from != start:
                store.save(conv)
            self._tool_state = "done"
            yield Chunk(done=True, stats=stats or Stats(), model=conv.model)
        except Exception as exc:
            if not answered:
                conv.context_from, self.left_out = start, 0
            self.error = exc
            self._tool_state = "failed"
            raise
        except BaseException:
            if self._tool_state == "streaming":
                self._tool_state = "cancelled"
            raise
        finally:
            self._close_open(store)

    # ----- recording -------------------------------------------------------------------------------------

    def _begin(self, store: Store | None) -> None:
        conv = self.conv
        if store is not None:
            self.answer = store.begin_answer(conv, conv.model)
        else:
            self.answer = Entry("assistant", "", conv.model, state="streaming")
            conv.entries.append(self.answer)
        self._open = self.answer
        self._parts = []
        self._saved_at = time.monotonic()

    def _grow(self, store: Store | None, text: str) -> None:
        self._parts.append(text)
        entry = self._open
        if entry is None:
            return
        if store is not None and time.monotonic() - self._saved_at >= SAVE_EVERY:
            store.update_answer(entry, "".join(self._parts))
            self._saved_at = time.monotonic()
        else:
            entry.content = "".join(self._parts)

    def _finish_step(self, store: Store | None, message: Message, stats: Stats) -> None:
        entry = self._open
        if entry is None:
            return
        if store is not None:
            store.finish_answer(entry, message.content, stats, tool_calls=message.tool_calls)
        else:
            entry.content, entry.stats, entry.tool_calls, entry.state = (
                message.content,
                stats,
                message.tool_calls,
                "done",
            )
        # the next step's row is made when it starts, so it comes after this step's results
        self._open = None
        self._parts = []

    def _add(self, store: Store | None, entry: Entry) -> None:
        if store is not None:
            store.add(self.conv, entry)
        else:
            self.conv.entries.append(entry)

    def _record(self, store: Store | None, call: ToolCall, result: ToolResult) -> None:
        # ids this turn recorded, not the conversation's: a server may use call_0 again in every answer
        if call.id in self._recorded:
            return
        self._recorded.add(call.id)
        self.results.append(result)
        state = "cancelled" if result.cancelled else "done"
        entry = Entry(
            "tool", result.content, self.conv.model, state=state, tool_call_id=call.id, tool=result_record(result)
        )
        self._add(store, entry)

    def _record_limit(self, store: Store | None, messages: list[Message], limit: StepLimitReached) -> None:
        for message in messages[self._sent :]:
            if message.role == "tool" and message.tool_call_id and message.tool_call_id not in self._recorded:
                self._recorded.add(message.tool_call_id)
                record = {"name": message.name, "ok": False, "error": limit.text, "not_run": True}
                entry = Entry("tool", message.content, self.conv.model, tool_call_id=message.tool_call_id, tool=record)
                self._add(store, entry)

    def _record_rest(self, store: Store | None, loop: Any) -> None:
        """Each call the loop answered that has no tool entry yet (cut by a cancel): recorded as it ended."""
        for message in loop.messages[self._sent :]:
            if message.role != "tool" or not message.tool_call_id or message.tool_call_id in self._recorded:
                continue
            result = loop.result_of.get(message.tool_call_id)
            if result is None:
                continue  # the step limit's unrun calls, recorded with the limit
            call = ToolCall(message.tool_call_id, result.name, {})
            self._record(store, call, result)

    def _close_open(self, store: Store | None) -> None:
        """The step still streaming when the turn ended: kept with its text, marked how the turn ended."""
        entry = self._open
        if entry is None:
            return
        text = "".join(self._parts)
        state = self._tool_state if self._tool_state in ("failed", "cancelled") else "cancelled"
        if store is not None:
            store.finish_answer(entry, text, None, cancelled=state == "cancelled", failed=state == "failed")
        else:
            entry.content, entry.stats, entry.state = text, None, state
        self._open = None
