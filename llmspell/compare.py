"""One prompt to several conversations at once: parallel or one after another, with live per-stream metrics.

Each target is a :class:`~llmspell.chat.Conversation` (its own model, system prompt and options); every turn
goes through :func:`llmspell.chat.ask` (or a :class:`~llmspell.tools.turn.ToolTurn` when the target has tools), so
it is recorded in the store while it streams. The embedded
backend splits the cores among the models generating at the same moment (and runs a second instance of a
model when two conversations ask it at once), so parallel streams share the machine instead of fighting
over it. Closing the stream returned by :func:`compare` cancels every answer still in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from llmspell.chat import Conversation, answer_state, ask
from llmspell.errors import LLMSpellError
from llmspell.types import Options, Stats

if TYPE_CHECKING:
    from llmspell.chat import Turn
    from llmspell.hub import Hub
    from llmspell.store import Store
    from llmspell.tools.turn import ToolSettings

StreamStatus = Literal["waiting", "streaming", "done", "cancelled", "error"]
EventKind = Literal["start", "chunk", "done", "error"]


@dataclass
class Target:
    """One conversation to send the prompt to, with options that override its own for this turn."""

    conv: Conversation
    options: Options | None = None
    #: run before the answer starts (a model check, say); what it raises becomes this target's error event
    prepare: Callable[[], Awaitable[object]] | None = None
    #: tools this answer may call (the events go to its ``on_event``); None or no tools: a plain answer
    tools: ToolSettings | None = None


@dataclass
class StreamMetrics:
    """What one stream has done so far; live while it runs, exact (from the engine's Stats) when it ends."""

    index: int
    model: str
    status: StreamStatus = "waiting"
    started: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    #: text chunks received; the embedded backend sends one per token, so this counts tokens while streaming
    chunks: int = 0
    parts: list[str] = field(default_factory=list)
    stats: Stats | None = None
    error: str | None = None
    #: messages this answer left out at the head of its conversation to fit the model's context
    left_out: int = 0

    @property
    def text(self) -> str:
        """The answer received so far."""
        return "".join(self.parts)

    @property
    def ttft(self) -> float | None:
        """Seconds from the request to the first text (the engine's figure once finished)."""
        if self.stats is not None:
            return self.stats.time_to_first_token
        if self.started is None or self.first_token_at is None:
            return None
        return self.first_token_at - self.started

    @property
    def generated_tokens(self) -> int:
        """Tokens generated so far (the engine's count once finished)."""
        return self.stats.generated_tokens if self.stats is not None else self.chunks

    @property
    def tokens_per_s(self) -> float:
        """Generation speed: tokens after the first over the time since the first."""
        if self.stats is not None:
            return self.stats.generation_tokens_per_s
        if self.first_token_at is None or self.chunks < 2:
            return 0.0
        end = self.last_token_at if self.status != "streaming" else time.perf_counter()
        elapsed = (end or time.perf_counter()) - self.first_token_at
        return (self.chunks - 1) / elapsed if elapsed > 0 else 0.0

    @property
    def stop_reason(self) -> str | None:
        """Why the answer ended: stop, length, cancelled or error; None while it runs."""
        if self.stats is not None:
            return self.stats.stop_reason
        return {"cancelled": "cancelled", "error": "error"}.get(self.status)

    def live_summary(self) -> str:
        """One line for a face while the answer streams (``Stats.summary()`` replaces it at the end)."""
        if self.stats is not None:
            return self.stats.summary()
        if self.status == "waiting":
            return "waiting…"
        if self.first_token_at is None:
            return "reading the prompt…"
        ttft = self.ttft or 0.0
        shown = f"{ttft * 1000:.0f} ms" if ttft < 1 else f"{ttft:.2f} s"
        return f"TTFT {shown} · {self.tokens_per_s:.1f} tok/s · {self.chunks} tokens"


@dataclass(frozen=True)
class CompareEvent:
    """Something that happened to one stream: it started, a chunk of text arrived, it finished or failed."""

    index: int
    kind: EventKind
    metrics: StreamMetrics
    text: str = ""


def error_text(exc: BaseException) -> str:
    """The one way every face words an error: what went wrong and, after "; ", what to do; never a traceback."""
    if isinstance(exc, LLMSpellError):
        return f"{exc.message}; {exc.hint}" if exc.hint else exc.message
    if isinstance(exc, ConnectionError):
        return f"the backend cannot be reached: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _turn(hub: Hub, target: Target, text: str, store: Store | None) -> Turn:
    """The turn that answers one target: with its tools when it has any."""
    if target.tools is not None and len(target.tools.registry):
        # imported only then: the tools load jsonschema, which a plain comparison never needs
        from llmspell.tools.turn import ToolTurn

        return ToolTurn(hub, target.conv, text, target.tools, store, target.options)
    return ask(hub, target.conv, text, store, target.options)


async def compare(
    hub: Hub,
    targets: Sequence[Target | Conversation],
    text: str,
    *,
    store: Store | None = None,
    parallel: bool = True,
) -> AsyncGenerator[CompareEvent, None]:
    """Send ``text`` to every target and yield their events as they happen.

    ``parallel`` runs all answers at once (the embedded backend splits the cores among them); otherwise they
    run one after another in order. A failing target yields one ``error`` event and the others go on.
    Closing this stream cancels every answer still running; each keeps its partial text, marked cancelled.
    """
    items = [t if isinstance(t, Target) else Target(t) for t in targets]
    metrics = [StreamMetrics(i, t.conv.model) for i, t in enumerate(items)]
    queue: asyncio.Queue[CompareEvent | None] = asyncio.Queue()

    async def one(i: int) -> None:
        m, target = metrics[i], items[i]
        m.status, m.started = "streaming", time.perf_counter()
        queue.put_nowait(CompareEvent(i, "start", m))
        stream = _turn(hub, target, text, store)
        try:
            if target.prepare is not None:
                await target.prepare()
            async for chunk in stream:
                m.left_out = stream.left_out  # known from the first chunk on: the face may say so at once
                if chunk.text:
                    now = time.perf_counter()
                    if m.first_token_at is None:
                        m.first_token_at = now
                    m.last_token_at = now
                    m.chunks += 1
                    m.parts.append(chunk.text)
                if chunk.done:
                    m.stats = chunk.stats
                    m.status = "done" if answer_state(chunk.stats) == "done" else "cancelled"
                    queue.put_nowait(CompareEvent(i, "done", m, chunk.text))
                elif chunk.text:
                    queue.put_nowait(CompareEvent(i, "chunk", m, chunk.text))
        except asyncio.CancelledError:
            m.status = "cancelled"
            raise
        except Exception as exc:  # one failing model must not stop the others; the face shows the message
            m.status, m.error = "error", error_text(exc)
            queue.put_nowait(CompareEvent(i, "error", m))
        finally:
            await stream.aclose()
            m.last_token_at = m.last_token_at or time.perf_counter()
            if m.status in ("waiting", "streaming"):  # ended without a final chunk (the stored answer says how)
                m.status = "error" if stream.state == "failed" else "cancelled"
            queue.put_nowait(None)

    async def in_order() -> None:
        for i in range(len(items)):
            await one(i)

    tasks = [asyncio.create_task(one(i)) for i in range(len(items))] if parallel else [asyncio.create_task(in_order())]
    try:
        remaining = len(items)
        while remaining:
            event = await queue.get()
            if event is None:
                remaining -= 1
            else:
                yield event
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for m in metrics:
            if m.status in ("waiting", "streaming"):
                m.status = "cancelled"
