"""Conversation: model, system prompt, options and messages; ``ask`` streams a turn and records it as it goes."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmspell.errors import PromptTooLong
from llmspell.types import Chunk, Message, Options, Stats, ToolCall

if TYPE_CHECKING:
    from llmspell.hub import Hub
    from llmspell.store import Store

#: how often a streaming answer's text is written to the store (a crash loses at most this much)
SAVE_EVERY = 0.25

AnswerState = Literal["done", "cancelled", "failed"]

#: how each face marks an answer that did not finish normally ("streaming" left in the store = the writer died)
STATE_NOTES = {"cancelled": "interrupted", "failed": "failed", "streaming": "unfinished"}


@dataclass
class Entry:
    """One stored message with what the core knows about it."""

    role: str
    content: str
    model: str | None = None
    stats: Stats | None = None
    state: str = "done"
    id: int | None = None
    created: float = field(default_factory=time.time)
    #: the tools an assistant step called (its content may then be empty)
    tool_calls: tuple[ToolCall, ...] = ()
    #: for a tool message (role "tool"): the id of the call it answers
    tool_call_id: str | None = None
    #: for a tool message: what the call came to, as every face shows it (name, arguments, ok, error, seconds,
    #: refused, cancelled)
    tool: dict[str, Any] | None = None

    @property
    def message(self) -> Message:
        """The message as a backend takes it."""
        name = str(self.tool.get("name")) if self.role == "tool" and self.tool and self.tool.get("name") else None
        return Message(
            self.role,  # type: ignore[arg-type]
            self.content,
            tool_calls=self.tool_calls,
            tool_call_id=self.tool_call_id if self.role == "tool" else None,
            name=name,
        )

    def copy(self) -> Entry:
        """The same message, not yet stored (for a copy of a conversation)."""
        return Entry(
            self.role,
            self.content,
            self.model,
            self.stats,
            self.state,
            created=self.created,
            tool_calls=self.tool_calls,
            tool_call_id=self.tool_call_id,
            tool=dict(self.tool) if self.tool is not None else None,
        )


@dataclass
class Conversation:
    """A conversation: model, system prompt, options and its messages in order."""

    model: str
    system: str | None = None
    options: Options = field(default_factory=Options)
    title: str = ""
    entries: list[Entry] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    #: entries at the head that are no longer sent: the conversation outgrew the model's context
    context_from: int = 0

    def messages(self, end: int | None = None) -> list[Message]:
        """What the model is sent: the system prompt, then every answered user turn and its (partial) answer,
        from ``context_from`` on (up to entry ``end``).

        A prompt whose answer never got any text (the backend failed, or it was cancelled before the first
        token) is left out with that answer: sending it again would put two user turns in a row. A step that
        called tools is sent with its calls, and each call's result as a tool message.
        """
        out = [Message("system", self.system)] if self.system else []
        entries = self.entries[: len(self.entries) if end is None else end]
        for i, e in enumerate(entries):
            if i < self.context_from:
                continue
            if e.role == "tool":
                if e.tool_call_id:
                    out.append(e.message)
                continue
            if e.role not in ("user", "assistant") or not (e.content or e.tool_calls):
                continue
            after = entries[i + 1] if i + 1 < len(entries) else None
            if (
                e.role == "user"
                and after is not None
                and after.role == "assistant"
                and not (after.content or after.tool_calls)
            ):
                continue
            out.append(e.message)
        return out

    def to_markdown(self) -> str:
        """The conversation as a Markdown document (for export)."""
        lines = [f"# {self.title or 'Conversation'}", "", f"Model: `{self.model}`"]
        if self.system:
            lines += ["", f"System: {self.system}"]
        for e in self.entries:
            if e.role == "tool":
                lines += ["", f"> {tool_line(e)}"]
                lines += ["> " + line if line else ">" for line in _fenced(e.content)]
                continue
            if e.role == "assistant" and not e.content and e.tool_calls:
                lines += [""]
            else:
                who = "You" if e.role == "user" else f"{e.model or self.model}"
                lines += ["", f"## {who}", "", e.content]
            for call in e.tool_calls:
                lines += ["", f"*called* `{call.name}({call.arguments_text})`"]
            if e.state != "done":
                lines += ["", f"*({state_note(e.state)})*"]
        return "\n".join(lines) + "\n"


def _fenced(text: str) -> list[str]:
    """``text`` in a code fence longer than any run of backticks inside it."""
    longest = max((len(m) for m in text.split("\n") if set(m) == {"`"}), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, *text.splitlines(), fence]


def tool_outcome(info: Mapping[str, Any], *, cancelled: bool = False) -> str:
    """What one tool call came to, in the words every face shows, live or reopened: ok and its time, refused (why),
    failed (the error), cancelled, not run (the step limit), or asked again. ``info`` is a tool entry's record."""
    if cancelled or info.get("cancelled"):
        return "cancelled"
    if info.get("repeated"):
        return "asked again: not run twice, the earlier result told again"
    if info.get("not_run"):
        return "not run: the step limit came first"
    if info.get("refused"):
        return f"refused: {info.get('error') or 'not confirmed'}"
    if not info.get("ok", True):
        return f"failed: {info.get('error') or 'error'}"
    seconds = float(info.get("seconds") or 0.0)
    return f"ok · {seconds:.2f} s" if seconds >= 0.01 else "ok"


def tool_line(entry: Entry) -> str:
    """One line saying what a stored tool call came to: its name and :func:`tool_outcome`."""
    info = entry.tool or {}
    return f"tool {info.get('name') or 'tool'}: {tool_outcome(info, cancelled=entry.state == 'cancelled')}"


def answer_state(stats: Stats | None, *, failed: bool = False) -> AnswerState:
    """How an answer ended, decided here once for every face: failed (the backend raised), cancelled (closed
    early, or the engine says so) or done."""
    if failed:
        return "failed"
    if stats is None or stats.stop_reason == "cancelled":
        return "cancelled"
    return "done"


def state_note(state: str) -> str:
    """The words every face shows beside an answer that did not finish normally ("" for a finished one)."""
    return "" if state == "done" else STATE_NOTES.get(state, "unfinished")


class Turn:
    """One user turn being answered: iterate for the answer's chunks, close to cancel; ``answer`` is the stored
    entry (its ``state`` says how it ended once the stream is closed or exhausted) and ``error`` what failed.

    Both the prompt and the answer are recorded in the conversation (and the store) while it streams.
    """

    def __init__(
        self, hub: Hub, conv: Conversation, text: str, store: Store | None = None, options: Options | None = None
    ) -> None:
        self.conv = conv
        self.text = text
        self.answer: Entry | None = None
        self.error: BaseException | None = None
        #: messages this turn left out at the head of the conversation, to fit the model's context
        self.left_out = 0
        self._stream: AsyncGenerator[Chunk, None] = _empty()
        self._run_stream = self._run(hub, store, options)

    def __aiter__(self) -> Turn:
        return self

    async def __anext__(self) -> Chunk:
        return await self._run_stream.__anext__()

    async def aclose(self) -> None:
        """Stop the answer (if it still runs) and record how it ended."""
        await self._run_stream.aclose()

    @property
    def state(self) -> str:
        """streaming while it runs, then done, cancelled or failed."""
        return self.answer.state if self.answer is not None else "streaming"

    async def _run(self, hub: Hub, store: Store | None, options: Options | None) -> AsyncGenerator[Chunk, None]:
        conv = self.conv
        user = Entry("user", self.text)
        if store is not None:
            store.add(conv, user)  # a copy made in memory (a fork) is stored with it
        else:
            conv.entries.append(user)
        # taken before the empty answer row exists, so this prompt is the last message sent
        messages = conv.messages()
        answer = (
            store.begin_answer(conv, conv.model)
            if store is not None
            else Entry("assistant", "", conv.model, state="streaming")
        )
        if store is None:
            conv.entries.append(answer)
        self.answer = answer
        parts: list[str] = []
        stats: Stats | None = None
        failed = False
        last_save = time.monotonic()
        opts = conv.options.merged(options)
        stream = hub.chat(conv.model, messages, opts)
        try:
            chunk = await self._fit(hub, store, stream, opts)
            while chunk is not None:
                parts.append(chunk.text)
                if chunk.done:
                    stats = chunk.stats
                elif store is not None and time.monotonic() - last_save >= SAVE_EVERY:
                    store.update_answer(answer, "".join(parts))
                    last_save = time.monotonic()
                else:
                    answer.content = "".join(parts)
                yield chunk
                if chunk.done:
                    break
                try:
                    chunk = await anext(self._stream)
                except StopAsyncIteration:
                    chunk = None
        except Exception as exc:
            # a backend error (not a cancel): the partial text stays, marked failed; the caller shows the error
            failed = True
            self.error = exc
            raise
        finally:
            await self._stream.aclose()
            final = "".join(parts)
            state = answer_state(stats, failed=failed)
            if store is not None:
                store.finish_answer(answer, final, stats, cancelled=state == "cancelled", failed=state == "failed")
            else:
                answer.content, answer.stats, answer.state = final, stats, state

    async def _fit(
        self, hub: Hub, store: Store | None, stream: AsyncGenerator[Chunk, None], opts: Options
    ) -> Chunk | None:
        """The answer's first chunk (None when the stream ended without one); while the conversation is longer
        than the model's context, its oldest turns are left out (the system prompt and this prompt stay) and it
        is asked again, unless the config says to fail. ``left_out`` counts the messages this turn left out;
        a turn that fails or is stopped anyway leaves the conversation's context where it was."""
        conv = self.conv
        start = conv.context_from
        self._stream = stream
        try:
            while True:
                try:
                    first = await anext(stream)
                except StopAsyncIteration:
                    first = None
                except PromptTooLong as exc:
                    await stream.aclose()
                    if hub.config.context_overflow == "fail" or not self._leave_out(exc, opts):
                        raise
                    # the prompt is the last entry but one: the empty answer row follows it
                    stream = self._stream = hub.chat(conv.model, conv.messages(len(conv.entries) - 1), opts)
                    continue
                if store is not None and conv.context_from != start:
                    store.save(conv)  # only now: the cut fits, and the model is answering
                return first
        except BaseException:
            conv.context_from, self.left_out = start, 0
            raise

    def _leave_out(self, exc: PromptTooLong, opts: Options) -> bool:
        """Move ``context_from`` past the oldest turns, about as many as the prompt is over (with room for an
        answer); False when only the system prompt and this prompt are left."""
        conv = self.conv
        last = len(conv.entries) - 2  # this prompt: never left out
        start = conv.context_from
        if start >= last:
            return False
        sent = conv.entries[start:last]
        chars = sum(len(e.content) for e in conv.entries[start : last + 1]) + len(conv.system or "")
        if exc.size and exc.limit and exc.size > 0:
            room = min(opts.max_tokens or 256, exc.limit // 4)
            share = (exc.size - (exc.limit - room)) / exc.size  # of the prompt, to drop
            goal = max(1, int(chars * share))
        else:
            goal = max(1, sum(len(e.content) for e in sent) // 4)
        dropped = 0
        index = start
        while index < last and dropped < goal:
            dropped += len(conv.entries[index].content)
            index += 1
        # a turn goes whole: never an answer without its question at the head
        while index < last and conv.entries[index].role != "user":
            index += 1
        if index == start:
            return False
        conv.context_from = index
        self.left_out += index - start
        return True


async def _empty() -> AsyncGenerator[Chunk, None]:
    return
    yield  # an async generator that ends at once


def ask(hub: Hub, conv: Conversation, text: str, store: Store | None = None, options: Options | None = None) -> Turn:
    """Send ``text`` as the next user turn and stream the answer; both are recorded in ``conv`` (and ``store``).

    Closing the stream cancels the answer; what arrived until then is kept, marked cancelled.
    """
    return Turn(hub, conv, text, store, options)
