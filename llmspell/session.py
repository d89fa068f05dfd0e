"""The one object every face drives: a conversation, the store it is kept in, and what can happen to it.

The REPL, the Jupyter kernel and each TUI pane hold a :class:`Session` and only read input and draw; what a
turn is, how it ended, which models may be switched to, what compare means, how a conversation is exported
and how an error reads are decided here, once, so the faces cannot disagree.

Compare has one meaning everywhere: the prompt goes to each model as the next turn of a copy of this
conversation (same history, system prompt and options); each copy is stored as its own conversation, and
this one is left as it was. ``parallel`` only says whether the answers run at once or one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmspell.chat import STATE_NOTES, Conversation, Entry, Turn, state_note
from llmspell.compare import CompareEvent, Target, compare, error_text
from llmspell.errors import InvalidOptions, LLMSpellError, ModelNotFound
from llmspell.files import write_whole
from llmspell.types import ModelInfo, Options, Stats

if TYPE_CHECKING:
    from llmspell.hub import Hub
    from llmspell.store import Store
    from llmspell.tools.base import ConfirmCallback, ToolRegistry
    from llmspell.tools.turn import EventCallback, ToolSettings

__all__ = [
    "STATE_NOTES",
    "Session",
    "TurnResult",
    "context_note",
    "error_text",
    "export_conversation",
    "model_names",
    "state_note",
]

#: the export formats, by file suffix; anything else is Markdown
EXPORT_FORMATS = {".md": "markdown", ".markdown": "markdown", ".json": "json"}


@dataclass(frozen=True)
class TurnResult:
    """How one answer ended: done, cancelled or failed, with its text, the engine's stats and the error line."""

    state: str
    text: str
    stats: Stats | None
    error: str | None
    model: str
    conversation: str
    #: messages this turn left out at the head of the conversation to fit the model's context
    left_out: int = 0

    @property
    def note(self) -> str:
        """The words a face shows beside the answer ("" when it finished normally)."""
        return state_note(self.state)

    @property
    def context_note(self) -> str:
        """What a face says when this turn left earlier messages out ("" when it left none)."""
        return context_note(self.left_out, self.model)

    @classmethod
    def of(cls, turn: Turn) -> TurnResult:
        """The result of a turn whose stream has been closed."""
        answer = turn.answer or Entry("assistant", "", turn.conv.model, state="cancelled")
        error = error_text(turn.error) if turn.error is not None else None
        model = answer.model or turn.conv.model
        # a tool turn's state is the turn's, not its last step's (cancelled while a tool ran, say)
        state = turn.state if turn.answer is not None else answer.state
        return cls(state, answer.content, answer.stats, error, model, turn.conv.id, turn.left_out)


def context_note(left_out: int, model: str) -> str:
    """The line every face shows when a turn left the oldest messages out of the model's context."""
    if left_out <= 0:
        return ""
    what = "message" if left_out == 1 else "messages"
    return (
        f"{left_out} earlier {what} left out: the conversation is longer than {model}'s context "
        '(the system prompt and the newest turns were sent; context_overflow = "fail" stops instead)'
    )


async def check_model(hub: Hub, spec: str) -> ModelInfo | None:
    """Whether ``spec`` can be talked to now: the model's info when it was looked up, None when the backend
    simply has it; raises the core's error (unknown name, backend down, not downloaded) otherwise."""
    backend, parsed = await hub.resolve(spec)
    if await backend.has_model(parsed):
        return None
    # info() raises the precise reason: unknown model, server down; a known one may still be missing
    info = await backend.info(parsed)
    if info.source == "not downloaded":
        raise ModelNotFound(f"{parsed} is not downloaded", hint=f"pull it with: llmspell model pull {parsed}")
    return info


async def where_it_runs(hub: Hub, spec: str, wait: float = 1.0) -> tuple[str, str | None]:
    """The backend or endpoint that answers ``spec`` (the one after '@', else the one the hub picks) and, for a
    named endpoint, its address; ("", None) when that cannot be told within ``wait`` seconds (the answer's own
    error then says what is wrong). Every face labels an answer's stats with it."""
    try:
        # named after '@': no request is made; otherwise the hub's choice, which may ask Ollama again (its status
        # is trusted a few seconds): bounded, so a slow server never holds up a stats line
        backend, _ = await asyncio.wait_for(hub.resolve(spec), wait)
    except (LLMSpellError, TimeoutError):
        return "", None
    # an alias's wrapper stands for the backend it wraps, which is the one that knows its endpoint
    backend = hub.backends.get(backend.name, backend)
    return backend.name, backend.endpoint.url if backend.endpoint is not None else None


async def model_names(hub: Hub) -> list[str]:
    """Every model name a face offers while typing: each backend's models (bare and with @backend) and the
    catalog's names; a backend that cannot be reached leaves only its names out."""
    names: set[str] = set()
    with contextlib.suppress(LLMSpellError):
        models, _failed = await hub.list_all()
        for m in models:
            names.update((m.name, f"{m.name}@{m.backend}"))
    with contextlib.suppress(LLMSpellError):
        from llmspell.catalog import load_catalog

        names.update(await asyncio.to_thread(lambda: load_catalog().tags()))
    return sorted(names)


def conversation_json(conv: Conversation) -> dict[str, Any]:
    """The conversation as the JSON export writes it."""
    return {
        "id": conv.id,
        "title": conv.title,
        "model": conv.model,
        "system": conv.system,
        "options": conv.options.to_dict(),
        "created": conv.created,
        "updated": conv.updated,
        "messages": [
            {
                "role": e.role,
                "content": e.content,
                "model": e.model,
                "state": e.state,
                "stats": e.stats.to_dict() if e.stats else None,
                "created": e.created,
                **({"tool_calls": [c.to_dict() for c in e.tool_calls]} if e.tool_calls else {}),
                **({"tool_call_id": e.tool_call_id, "tool": e.tool} if e.role == "tool" else {}),
            }
            for e in conv.entries
        ],
    }


def export_conversation(conv: Conversation, path: Path | str, fmt: str | None = None) -> Path:
    """Write ``conv`` to ``path`` as Markdown or JSON (by ``fmt``, else by the suffix; no suffix means .md).

    The file appears whole or not at all: it is written beside its place and renamed over it, so a full disk or
    a crash never leaves half an export under the name asked for.
    """
    target = Path(path).expanduser()
    if not target.suffix and fmt is None:
        target = target.with_suffix(".md")
    kind = fmt or EXPORT_FORMATS.get(target.suffix.lower(), "markdown")
    if kind not in ("markdown", "json"):
        raise InvalidOptions(f"cannot export as {kind!r}", hint="use a .md or .json file name")
    text = (
        json.dumps(conversation_json(conv), indent=2, ensure_ascii=False) + "\n"
        if kind == "json"
        else conv.to_markdown()
    )
    write_whole(target, lambda f: f.write(text))
    return target


class Session:
    """A conversation being had through one face: send turns, switch model, fork, compare, export."""

    def __init__(self, hub: Hub, store: Store | None = None, conv: Conversation | None = None) -> None:
        self.hub = hub
        self.store = store
        self.conv = conv or Conversation(hub.config.default_model)
        #: how the last turn sent through this session ended
        self.last: TurnResult | None = None
        #: the conversations the last compare made, one per model in its order
        self.forks: list[Conversation] = []
        #: the tools this session's turns may call (None: plain turns); set with ``use_tools``
        self.tools: ToolSettings | None = None

    @property
    def model(self) -> str:
        """The model this conversation talks to."""
        return self.conv.model

    # ----- turns -----------------------------------------------------------------------------------------

    def send(self, text: str, options: Options | None = None) -> Turn:
        """Start the next turn: iterate the result for its chunks, close it to cancel, then read ``result``.

        With tools in use (and at least one tool), the turn is a ToolTurn: the same chunks, every step's text
        in order, and the tool events told to the face's ``on_event`` as they happen; a turn with a ``format``
        is a plain one."""
        # an answer held to a format (JSON, a schema) is one answer, not calls: its turn takes no tools (no engine
        # here holds an answer to a format and to the tools' grammar at once)
        held = self.conv.options.merged(options).format is not None
        if self.tools is not None and len(self.tools.registry) and not held:
            from llmspell.tools.turn import ToolTurn

            return ToolTurn(self.hub, self.conv, text, self.tools, self.store, options)
        return Turn(self.hub, self.conv, text, self.store, options)

    def use_tools(
        self,
        registry: ToolRegistry | None,
        *,
        confirm: ConfirmCallback | None = None,
        on_event: EventCallback | None = None,
        tool_choice: str | dict[str, Any] | None = "auto",
        max_steps: int | None = None,
    ) -> ToolSettings | None:
        """Let the next turns call ``registry``'s tools (None: no tools). ``confirm`` asks the user before a side
        effect (without it, such a call is refused unless allowed); ``on_event`` draws each call, result and step;
        ``tool_choice`` holds for each turn's first step; ``max_steps`` bounds a turn's model steps."""
        if registry is None:
            self.tools = None
            return None
        from llmspell.tools.turn import ToolSettings

        steps = max_steps if max_steps is not None else self.hub.config.tool_max_steps
        self.tools = ToolSettings(registry, tool_choice, steps, confirm, on_event)
        return self.tools

    def result(self, turn: Turn) -> TurnResult:
        """How ``turn`` ended (call once its stream is closed); remembered as ``last``."""
        self.last = TurnResult.of(turn)
        return self.last

    # ----- models ----------------------------------------------------------------------------------------

    async def check_model(self, spec: str | None = None) -> ModelInfo | None:
        """Whether ``spec`` (default: the current model) can be used now; raises the reason when not."""
        return await check_model(self.hub, spec or self.conv.model)

    async def switch_model(self, spec: str) -> ModelInfo | None:
        """Talk to ``spec`` from the next turn on, after the one check every face makes; on an error the model
        stays as it was."""
        spec = spec.strip()
        if not spec:
            raise InvalidOptions("no model named", hint="e.g. smollm2:135m (the model list shows the others)")
        info = await self.check_model(spec)
        if spec != self.conv.model:
            # another model has another context: the whole history is offered again, and cut to its size
            self.conv.context_from = 0
        self.conv.model = spec
        self.save()
        return info

    # ----- conversations ---------------------------------------------------------------------------------

    def save(self) -> None:
        """Store the conversation's own fields (model, system prompt, options) once it has messages."""
        if self.store is not None and self.conv.entries:
            self.store.save(self.conv)

    def fork(self, model: str | None = None, *, history: bool = False, title: str = "") -> Conversation:
        """A new conversation with the same settings (the model may differ) and, with ``history``, a copy of
        this one's messages; the copy is stored with its first turn. This session keeps its own."""
        conv = Conversation(model or self.conv.model, self.conv.system, self.conv.options, title=title)
        if history:
            conv.entries = [e.copy() for e in self.conv.entries]
            conv.context_from = self.conv.context_from if conv.model == self.conv.model else 0
        return conv

    def restart(self) -> Conversation:
        """Start a new conversation in this session with the same model and settings; returns the old one."""
        old = self.conv
        self.conv = self.fork()
        return old

    def open(self, conv_id: str) -> Conversation:
        """Continue a stored conversation (an id, an id prefix, a title, or "latest")."""
        if self.store is None:
            raise LLMSpellError("there is no history here to open a conversation from")
        self.conv = self.store.find(conv_id)
        return self.conv

    def export(self, path: Path | str, fmt: str | None = None) -> Path:
        """Write this conversation to ``path`` (Markdown or JSON), whole or not at all."""
        return export_conversation(self.conv, path, fmt)

    # ----- compare ---------------------------------------------------------------------------------------

    async def compare(
        self, models: Sequence[str], text: str, *, parallel: bool = True, options: Options | None = None
    ) -> AsyncGenerator[CompareEvent, None]:
        """Send ``text`` to each model as the next turn of its own copy of this conversation (stored as its own
        conversation); yields each answer's events. A model that cannot be used gets one error event in its
        place and the others go on; closing the stream cancels every answer still running."""
        if not models:
            raise InvalidOptions("compare needs at least one model", hint="e.g. smollm2:135m gemma3:270m")
        self.forks = [self.fork(spec, history=True, title=f"{text[:48]} [{spec}]") for spec in models]
        targets = [
            Target(fork, options, prepare=functools.partial(check_model, self.hub, spec))
            for fork, spec in zip(self.forks, models, strict=True)
        ]
        stream = compare(self.hub, targets, text, store=self.store, parallel=parallel)
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()
