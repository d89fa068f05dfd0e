"""Conversation: model, system prompt, options and messages; ``ask`` streams a turn and records it as it goes."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmspell.types import Chunk, Message, Options, Stats

if TYPE_CHECKING:
    from llmspell.hub import Hub
    from llmspell.store import Store

#: how often a streaming answer's text is written to the store (a crash loses at most this much)
SAVE_EVERY = 0.25


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

    @property
    def message(self) -> Message:
        """The message as a backend takes it."""
        return Message(self.role, self.content)  # type: ignore[arg-type]


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

    def messages(self) -> list[Message]:
        """What the model is sent: the system prompt, then every user and finished or partial assistant turn."""
        out = [Message("system", self.system)] if self.system else []
        return out + [e.message for e in self.entries if e.role in ("user", "assistant") and e.content]

    def to_markdown(self) -> str:
        """The conversation as a Markdown document (for export)."""
        lines = [f"# {self.title or 'Conversation'}", "", f"Model: `{self.model}`"]
        if self.system:
            lines += ["", f"System: {self.system}"]
        for e in self.entries:
            who = "You" if e.role == "user" else f"{e.model or self.model}"
            lines += ["", f"## {who}", "", e.content]
            if e.state != "done":
                lines += ["", f"*({'interrupted' if e.state == 'cancelled' else 'unfinished'})*"]
        return "\n".join(lines) + "\n"


async def ask(
    hub: Hub, conv: Conversation, text: str, store: Store | None = None, options: Options | None = None
) -> AsyncGenerator[Chunk, None]:
    """Send ``text`` as the next user turn and stream the answer; both are recorded in ``conv`` (and ``store``).

    Closing the stream cancels the answer; what arrived until then is kept, marked cancelled.
    """
    user = Entry("user", text)
    if store is not None:
        store.add(conv, user)
    else:
        conv.entries.append(user)
    answer = (
        store.begin_answer(conv, conv.model)
        if store is not None
        else Entry("assistant", "", conv.model, state="streaming")
    )
    if store is None:
        conv.entries.append(answer)
    parts: list[str] = []
    stats: Stats | None = None
    last_save = time.monotonic()
    # the empty answer row is not part of messages(): only entries with text are sent
    stream = hub.chat(conv.model, conv.messages(), conv.options.merged(options))
    try:
        async for chunk in stream:
            parts.append(chunk.text)
            if chunk.done:
                stats = chunk.stats
            elif store is not None and time.monotonic() - last_save >= SAVE_EVERY:
                store.update_answer(answer, "".join(parts))
                last_save = time.monotonic()
            else:
                answer.content = "".join(parts)
            yield chunk
    finally:
        await stream.aclose()
        cancelled = stats is None or stats.stop_reason == "cancelled"
        final = "".join(parts)
        if store is not None:
            store.finish_answer(answer, final, stats, cancelled=cancelled)
        else:
            answer.content, answer.stats = final, stats
            answer.state = "cancelled" if cancelled else "done"
