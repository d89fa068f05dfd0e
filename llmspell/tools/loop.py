"""The tool loop: the model answers, calls tools, reads their results and answers again, until it is done.

:func:`run_tools` drives one user turn through as many model steps as it takes. Each step streams the model's
text; when the step ends with tool calls, they run through :meth:`ToolRegistry.call` (the calls of one step at
once, their results told back in call order) and the model is asked again. Everything that happens is an event
a face can show; the conversation as it grew (assistant turns with their tool calls, one ``tool`` message per
call) is :attr:`ToolLoop.messages`, kept up to date even when the loop is closed half-way, so it can be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmspell.errors import InvalidOptions, LLMSpellError
from llmspell.tools.base import ConfirmCallback, Tool, ToolRegistry, ToolResult
from llmspell.types import Chunk, Message, Options, Stats, ToolCall

if TYPE_CHECKING:
    from llmspell.hub import Hub
    from llmspell.spec import ModelSpec

__all__ = [
    "FinalAnswer",
    "LoopError",
    "LoopEvent",
    "StepEnd",
    "StepLimitReached",
    "TextChunk",
    "ToolCallEvent",
    "ToolLoop",
    "ToolResultEvent",
    "run_tools",
]


@dataclass(frozen=True)
class TextChunk:
    """A piece of the model's text in one step (``chunk`` keeps its logprobs and model name)."""

    text: str
    step: int
    chunk: Chunk


@dataclass(frozen=True)
class ToolCallEvent:
    """The model asked for a tool; it is about to run (or to be asked about, if it has side effects)."""

    call: ToolCall
    step: int


@dataclass(frozen=True)
class ToolResultEvent:
    """What one tool call came to: ``result.content`` is what the model is told."""

    call: ToolCall
    result: ToolResult
    step: int


@dataclass(frozen=True)
class StepEnd:
    """One model step finished: its assistant message (with any tool calls) and what the step measured."""

    step: int
    message: Message
    stats: Stats


@dataclass(frozen=True)
class FinalAnswer:
    """The model answered without calling tools: the loop is over."""

    message: Message
    #: the last step's measurements
    stats: Stats
    #: how many model steps the turn took
    steps: int
    #: the whole conversation, the caller's messages first
    messages: tuple[Message, ...]

    @property
    def text(self) -> str:
        """The answer's text."""
        return self.message.content


@dataclass(frozen=True)
class StepLimitReached:
    """The model still called tools after ``max_steps`` steps: those calls were not run and the loop stopped."""

    max_steps: int
    #: the calls of the last step, which did not run (each has a tool message saying so)
    pending: tuple[ToolCall, ...]

    @property
    def text(self) -> str:
        """The event in words, for a face."""
        names = ", ".join(dict.fromkeys(c.name for c in self.pending))
        return (
            f"stopped after {self.max_steps} model step{'s' * (self.max_steps != 1)}: the model still asked for "
            f"{names}, which did not run (raise max_steps to let it go on)"
        )


@dataclass(frozen=True)
class LoopError:
    """A model step failed (the backend refused or broke off); the loop stopped. ``error`` says why and what to do."""

    error: LLMSpellError
    step: int

    @property
    def text(self) -> str:
        """The error in one line."""
        return self.error.message


#: everything :func:`run_tools` yields
LoopEvent = TextChunk | ToolCallEvent | ToolResultEvent | StepEnd | FinalAnswer | StepLimitReached | LoopError
#: called after each model step (sync or async), e.g. to store the conversation as it grows
StepCallback = Callable[[StepEnd], "Awaitable[None] | None"]

_CHOICES = ("auto", "none", "required")


def _first_choice(tool_choice: str | dict[str, Any] | None, registry: ToolRegistry) -> str | dict[str, Any] | None:
    """``tool_choice`` in the API's shape; a bare tool name means that tool. Unknown names are refused now."""
    if tool_choice is None or tool_choice in _CHOICES:
        return tool_choice
    if isinstance(tool_choice, str):
        name = tool_choice
    elif isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        name = tool_choice["function"].get("name")
    else:
        raise InvalidOptions(
            f"tool_choice {tool_choice!r:.80} is not one a model takes",
            hint='use "auto", "none", "required" or the name of a tool',
        )
    if name not in registry:
        known = ", ".join(registry.names()) or "none"
        raise InvalidOptions(f"tool_choice names {name!r}, which is not a tool here", hint=f"the tools are: {known}")
    return {"type": "function", "function": {"name": name}}


class ToolLoop:
    """The events of one tool loop (iterate it) and the conversation it built (:attr:`messages`).

    Closing it (``aclose``, or cancelling the task that iterates it) stops the model's stream or the tool calls
    running at that moment; the calls that were cut are in :attr:`results` and :attr:`messages` as cancelled.
    """

    def __init__(
        self,
        hub: Hub,
        spec: str | ModelSpec | None,
        messages: Sequence[Message | dict[str, Any]],
        registry: ToolRegistry,
        *,
        options: Options | None,
        tool_choice: str | dict[str, Any] | None,
        max_steps: int,
        confirm: ConfirmCallback | None,
        on_step: StepCallback | None,
    ) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise InvalidOptions(f"max_steps must be a whole number of at least 1, not {max_steps!r}")
        self.hub, self.spec, self.registry = hub, spec, registry
        self.options, self.max_steps, self.on_step = options, max_steps, on_step
        self._choice = _first_choice(tool_choice, registry)
        self._confirm = confirm
        # one question at a time: the calls of a step run at once, but a face asks its user about one of them
        self._asking = asyncio.Lock()
        #: the conversation: the caller's messages, then each assistant step and one tool message per call
        self.messages: list[Message] = [Message.coerce(m) for m in messages]
        #: every tool call's result, in order, cancelled ones included
        self.results: list[ToolResult] = []
        #: each call's result by the call's id (calls the step limit stopped have none)
        self.result_of: dict[str, ToolResult] = {}
        #: what each call of the last step (by name and arguments) came to, so asking again at once is told, not run
        self._told: dict[tuple[str, str], ToolResult] = {}
        #: model steps taken so far
        self.steps = 0
        self._events = self._run()

    def __aiter__(self) -> ToolLoop:
        return self

    async def __anext__(self) -> LoopEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop the loop: the running model stream is closed, running tool calls are cancelled and recorded."""
        await self._events.aclose()

    async def _ask(self, tool: Tool, arguments: dict[str, Any]) -> bool:
        assert self._confirm is not None
        async with self._asking:
            answer = self._confirm(tool, arguments)
            if inspect.isawaitable(answer):
                answer = await answer
        return answer is True

    async def _run(self) -> AsyncGenerator[LoopEvent, None]:
        try:
            async with contextlib.aclosing(self._steps()) as events:
                async for event in events:
                    yield event
        finally:
            # closed between a step's end and its calls' results: every call still gets its answer, or the
            # stored conversation is one no server takes again
            self._answer_open_calls()

    async def _steps(self) -> AsyncGenerator[LoopEvent, None]:
        schemas = self.registry.schemas()
        choice = self._choice if schemas else None
        confirm = self._ask if self._confirm is not None else None
        while True:
            self.steps += 1
            step = self.steps
            parts: list[str] = []
            last: Chunk | None = None
            stream = self.hub.chat(
                self.spec, self.messages, self.options, tools=schemas or None, tool_choice=choice if schemas else None
            )
            try:
                async with contextlib.aclosing(stream) as chunks:
                    async for chunk in chunks:
                        if chunk.done:
                            last = chunk
                        if chunk.text:
                            parts.append(chunk.text)
                            yield TextChunk(chunk.text, step, chunk)
            except LLMSpellError as err:
                self._keep_partial(parts)
                yield LoopError(err, step)
                return
            except BaseException:
                # closed or cancelled mid-answer: what the model wrote so far is part of the conversation
                self._keep_partial(parts)
                raise
            calls = last.tool_calls if last is not None else ()
            message = Message("assistant", "".join(parts), tool_calls=calls)
            self.messages.append(message)
            end = StepEnd(step, message, last.stats if last is not None and last.stats else Stats())
            if self.on_step is not None:
                done = self.on_step(end)
                if inspect.isawaitable(done):
                    await done
            yield end
            if not calls:
                yield FinalAnswer(message, end.stats, step, tuple(self.messages))
                return
            if step >= self.max_steps:
                limit = StepLimitReached(self.max_steps, calls)
                for call in calls:
                    # every call needs its answer in the conversation, or the next request is refused
                    self.messages.append(
                        Message("tool", f"not run: {limit.text}", tool_call_id=call.id, name=call.name)
                    )
                yield limit
                return
            for call in calls:
                yield ToolCallEvent(call, step)
            repeats = {i: self._told[_call_key(c)] for i, c in enumerate(calls) if _call_key(c) in self._told}
            # closed: so that leaving the loop at a result cancels the calls still running at once
            async with contextlib.aclosing(self._call_all(calls, step, confirm, repeats)) as results:
                async for event in results:
                    yield event
            # only the step just before counts: the same call later in a turn (a listing after a write, the time
            # again) may well have another answer, and runs again
            self._told = {_call_key(c): self.result_of[c.id] for c in calls if c.id in self.result_of}
            if choice not in (None, "none"):
                # a forced choice holds for the first step only: forced on, the model could never stop calling
                choice = "auto"
            if len(repeats) == len(calls):
                # the model only asked again for what it was already told (small models do, until the step
                # limit): the next step answers without tools, from the results it has
                choice = "none"
            elif self._choice != "none" and schemas and choice == "none":
                choice = "auto"

    async def _call_all(
        self,
        calls: tuple[ToolCall, ...],
        step: int,
        confirm: ConfirmCallback | None,
        repeats: dict[int, ToolResult] | None = None,
    ) -> AsyncGenerator[ToolResultEvent, None]:
        """Run the calls of one step at once; yield their results in call order; record every one, even cut. A
        call in ``repeats`` (by index) is not run again: the model is told what it came to before."""
        got: dict[int, ToolResult] = {}
        repeats = repeats or {}

        def keep(index: int) -> Callable[[ToolResult], None]:
            return lambda result: got.__setitem__(index, result)

        async def told_again(index: int, call: ToolCall, before: ToolResult) -> ToolResult:
            result = _repeated(call, before)
            got[index] = result
            return result

        tasks = [
            asyncio.create_task(
                told_again(index, call, repeats[index])
                if index in repeats
                else self.registry.call(call.name, call.raw or call.arguments, confirm=confirm, on_result=keep(index)),
                name=f"tool {call.name}",
            )
            for index, call in enumerate(calls)
        ]
        try:
            for call, task in zip(calls, tasks, strict=True):
                # registry.call turns every failure into a result; only cancellation comes out of it
                yield ToolResultEvent(call, await task, step)
        finally:
            running = [t for t in tasks if not t.done()]
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            for index, call in enumerate(calls):
                result = got.get(index) or _never_started(call)
                self.results.append(result)
                self.result_of[call.id] = result
                self.messages.append(Message("tool", result.content, tool_call_id=call.id, name=call.name))

    def _answer_open_calls(self) -> None:
        """Record as cancelled each call of the last assistant step that has no tool message yet."""
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if message.role != "assistant":
                continue
            answered = {m.tool_call_id for m in self.messages[index + 1 :] if m.role == "tool"}
            for call in message.tool_calls:
                if call.id not in answered:
                    result = _never_started(call)
                    self.results.append(result)
                    self.result_of[call.id] = result
                    self.messages.append(Message("tool", result.content, tool_call_id=call.id, name=call.name))
            return

    def _keep_partial(self, parts: list[str]) -> None:
        if parts:
            self.messages.append(Message("assistant", "".join(parts)))


def _call_key(call: ToolCall) -> tuple[str, str]:
    """A call's name and arguments, the same for the same call whatever order its arguments came in."""
    return call.name, call.raw or json.dumps(call.arguments, sort_keys=True, ensure_ascii=False, default=str)


def _repeated(call: ToolCall, before: ToolResult) -> ToolResult:
    """The result of a call the model already made in this turn: not run again, the earlier outcome told."""
    content = (
        f"not run again: {call.name} was already called with these arguments in this turn, and its result was: "
        f"{before.content}\nAnswer the user with it."
    )
    return ToolResult(
        name=call.name,
        arguments=call.raw or call.arguments,
        content=content,
        ok=before.ok,
        error=before.error,
        refused=before.refused,
        repeated=True,
    )


def _never_started(call: ToolCall) -> ToolResult:
    """The result of a call cancelled before the registry started it."""
    error = f"{call.name} was cancelled before it started"
    return ToolResult(
        name=call.name,
        arguments=call.raw or call.arguments,
        content=f"error: {error}",
        ok=False,
        error=error,
        cancelled=True,
    )


def run_tools(
    hub: Hub,
    spec: str | ModelSpec | None,
    messages: Sequence[Message | dict[str, Any]],
    registry: ToolRegistry,
    *,
    options: Options | None = None,
    tool_choice: str | dict[str, Any] | None = "auto",
    max_steps: int = 8,
    confirm: ConfirmCallback | None = None,
    on_step: StepCallback | None = None,
) -> ToolLoop:
    """Answer ``messages`` with ``registry``'s tools: model, tool calls, results, model again, until it answers.

    ``tool_choice`` ("auto", "none", "required", a tool's name or the API's dict) holds for the first step; later
    steps are "auto". ``max_steps`` bounds the model steps; ``confirm`` is asked before a side-effect tool runs
    (never two questions at once); ``on_step`` hears of each finished step. Iterate the result for the events
    (:data:`LoopEvent`); its ``messages`` is the conversation afterwards. Use it in ``contextlib.aclosing`` so
    leaving early stops what is running.
    """
    return ToolLoop(
        hub,
        spec,
        messages,
        registry,
        options=options,
        tool_choice=tool_choice,
        max_steps=max_steps,
        confirm=confirm,
        on_step=on_step,
    )
