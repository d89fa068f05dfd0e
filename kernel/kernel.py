"""The llmspell Jupyter kernel: a cell is a prompt; the answer streams in and ends as Markdown with its stats."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import time
import uuid
from typing import TYPE_CHECKING, Any

from ipykernel.kernelbase import Kernel

from llmspell import __version__ as core_version
from llmspell.chat import Conversation, Turn, tool_line
from llmspell.errors import InvalidOptions, LLMSpellError
from llmspell.session import (
    Session,
    context_note,
    error_text,
    export_conversation,
    model_names,
    state_note,
    where_it_runs,
)
from llmspell.types import BASE_MODEL_KIND, Options, Stats
from llmspell_kernel import DEFAULT_MODEL_ENV, __version__
from llmspell_kernel.magics import (
    MAGICS,
    Cell,
    MagicError,
    completion_context,
    expand_answers,
    help_markdown,
    is_complete,
    parse_cell,
    parse_tools,
)
from llmspell_kernel.output import CellOutput

if TYPE_CHECKING:
    from llmspell.arena import Arena, Round
    from llmspell.compare import StreamMetrics
    from llmspell.tools.base import Tool
    from llmspell.tools.loop import LoopEvent
    from llmspell.tools.toolset import ToolSet

#: the environment variable that sets the milliseconds between display updates (tests set 0: every token)
UPDATE_MS_ENV = "LLMSPELL_KERNEL_UPDATE_MS"
#: milliseconds between display updates while an answer streams, unless the environment says otherwise
DEFAULT_UPDATE_MS = 50
#: seconds the list of model names used for completion is trusted
_NAMES_TTL = 30.0
#: the cursor shown at the end of an answer still being written
_CURSOR = " ▌"
#: seconds spent finding out which backend answered, for the stats line (see _ran_on)
_RAN_ON_WAIT = 1.0
#: lines of a tool's result shown under its call in the cell
_RESULT_LINES = 5
#: how to take part in the arena, for a leaderboard that has no votes yet
_HOW_TO_VOTE = (
    "run a round (%arena on the first line of a cell, the prompt below it), then %arena vote a, b, tie or bad"
)


class Interrupted(Exception):
    """The user pressed the stop button while this cell ran (the message, if any, says what that left)."""


class CompareFailed(LLMSpellError):
    """Every model of a %compare failed, so the cell has no answer at all."""

    kind = "compare_failed"


class RoundNotVotable(LLMSpellError):
    """An answer of an arena round failed or was cut short, so the round cannot be voted."""

    kind = "round_not_votable"


def update_every() -> float:
    """Seconds between display updates: LLMSPELL_KERNEL_UPDATE_MS, else 50 ms (a bad value falls back too)."""
    raw = os.environ.get(UPDATE_MS_ENV, "").strip()
    try:
        ms = float(raw) if raw else DEFAULT_UPDATE_MS
    except ValueError:
        ms = DEFAULT_UPDATE_MS
    return max(ms, 0.0) / 1000


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[str]]) -> tuple[str, str]:
    """A Markdown table and its plain-text twin."""
    md = "| " + " | ".join(headers) + " |\n|" + "---|" * len(headers) + "\n"
    md += "".join("| " + " | ".join(_md_escape(c) for c in r) + " |\n" for r in rows)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    plain = "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]
    )
    return md, plain


def _latency(seconds: float | None) -> str:
    """A status's round trip as shown in %status ("" when it was not measured)."""
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _human_bytes(n: int | None) -> str:
    from llmspell.machine import human_bytes

    return human_bytes(n)


class LLMSpellKernel(CellOutput, Kernel):
    """A Jupyter kernel whose cells are prompts to a local LLM, with %magics for models and options."""

    implementation = "llmspell_kernel"
    implementation_version = __version__
    language = "markdown"
    language_version = core_version
    # ipykernel's Kernel declares these as instance attributes, so a ClassVar here would not type-check
    language_info: dict[str, Any] = {  # noqa: RUF012
        "name": "markdown",
        "mimetype": "text/markdown",
        "file_extension": ".md",
        "pygments_lexer": "markdown",
        "codemirror_mode": "markdown",
    }
    banner = (
        f"llmspell {core_version}: a cell is a prompt to a local LLM; the conversation carries across cells. "
        "%help lists the magics."
    )
    help_links: list[dict[str, str]] = []  # noqa: RUF012

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hub: Any = None
        self._store: Any = None
        self.conversation = Conversation(model=os.environ.get(DEFAULT_MODEL_ENV, ""))
        self._cell_task: asyncio.Task[dict[str, Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._names: tuple[float, list[str]] = (0.0, [])
        #: outputs of the running cell that stay when the streamed answer is replaced by its final form
        self._kept: list[tuple[str, dict[str, Any]]] = []
        self._silent = False
        self._update_every = update_every()
        #: the answer text of each cell that had one, by execution count (what _, __ and _N stand for)
        self.answers: dict[int, str] = {}
        #: the blind-vote arena (created by the first %arena that needs it), its last round and that round's
        #: answer displays, which the vote fills in with the models' names
        self._arena: Arena | None = None
        self._round: Round | None = None
        self._round_displays: list[str] = []
        #: the tools %tools turned on (None: none), the %tools line that did it, and its choice and step bound
        self._toolset: ToolSet | None = None
        self._tools_line = ""
        self._tool_choice = "auto"
        self._max_steps: int | None = None
        #: each shown call's block (its display content, grown in place when the result comes), by call id
        self._tool_blocks: dict[str, tuple[dict[str, Any], str]] = {}
        #: whether the tools were chosen yet (the config's [tools] enabled at the first prompt, or %tools)
        self._tools_chosen = False
        #: a model step that called tools just ended: the next step's text starts a new paragraph
        self._step_break = False

    # ----- the core, created on first use so a bad config.toml is an error in a cell, not a dead kernel ------

    @property
    def hub(self) -> Any:
        """The core's Hub (backends), created on first use."""
        if self._hub is None:
            from llmspell.hub import Hub

            self._hub = Hub()
            if not self.conversation.model:
                self.conversation.model = self._hub.config.default_model
        return self._hub

    @property
    def store(self) -> Any:
        """The conversation store shared with the TUI and the REPL."""
        if self._store is None:
            from llmspell.store import Store

            self._store = Store()
        return self._store

    def _session(self) -> Session:
        """The core's Session over this kernel's conversation (the kernel keeps only cells and displays)."""
        return Session(self.hub, self.store, self.conversation)

    def _saved(self) -> bool:
        return bool(self.conversation.entries)

    def _persist(self) -> None:
        if self._saved():
            self.store.save(self.conversation)

    # ----- execute -------------------------------------------------------------------------------------------

    async def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: dict[str, Any] | None = None,
        cell_id: str | None = None,
    ) -> dict[str, Any]:
        """Run one cell: its magics in order, then its prompt; the stop button cancels it within a token."""
        self._loop = asyncio.get_running_loop()
        self._silent = silent
        self._kept = []
        # whether the frontend takes input_requests in this cell (a side effect is asked about there)
        self._allow_stdin = allow_stdin
        task = self._loop.create_task(self._execute(code))
        self._cell_task = task
        # ipykernel turns SIGINT into KeyboardInterrupt wherever the main thread is; cancelling the cell's task
        # instead lets the stream close cleanly (aclose in finally) and keeps the message loop intact
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return await task
        finally:
            signal.signal(signal.SIGINT, previous)
            self._cell_task = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        task, loop = self._cell_task, self._loop
        if task is not None and loop is not None and not task.done():
            loop.call_soon_threadsafe(task.cancel)

    async def _execute(self, code: str) -> dict[str, Any]:
        ok = {"status": "ok", "execution_count": self.execution_count, "payload": [], "user_expressions": {}}
        try:
            cell = parse_cell(code)
            await self._run_cell(cell)
            return ok
        except (asyncio.CancelledError, Interrupted) as exc:
            said = str(exc) if isinstance(exc, Interrupted) else ""
            return self._error_reply(
                "Interrupted", said or "stopped by the user; what arrived until then is kept above"
            )
        except LLMSpellError as exc:
            return self._error_reply(type(exc).__name__, error_text(exc))
        except Exception as exc:  # one readable line in the cell, the traceback only in the kernel's log
            self.log.exception("llmspell kernel: unexpected error")
            return self._error_reply("InternalError", f"{type(exc).__name__}: {exc} (see the kernel log)")

    async def _run_cell(self, cell: Cell) -> None:
        prompt_used = False
        # every _, __ and _N is looked up before the first magic runs, so an unknown one changes nothing
        args = [expand_answers(magic.arg, self.answers) for magic in cell.magics]
        for magic, arg in zip(cell.magics, args, strict=True):
            handler = getattr(self, f"_magic_{magic.name}")
            if magic.spec.uses_prompt:
                prompt_used = True
                await handler(arg, cell.prompt)
            else:
                await handler(arg)
        if cell.prompt and not prompt_used:
            await self._prompt(cell.prompt)

    # ----- streaming an answer -------------------------------------------------------------------------------

    async def _stream_into_display(self, stream: Turn, title: str = "") -> tuple[str, Stats | None, str, bool]:
        """Show a turn as one growing display; returns (text, stats, display id, interrupted)."""
        display_id = uuid.uuid4().hex
        head = f"**{title}**\n\n" if title else ""
        self._markdown(head + "*…*", "…", display_id, keep=False)
        parts: list[str] = []
        stats: Stats | None = None
        last = 0.0
        interrupted = False
        try:
            async for chunk in stream:
                if chunk.text:
                    if self._step_break and parts:
                        # the model wrote, called tools, and writes again: its next words start a paragraph
                        parts.append("\n\n")
                    self._step_break = False
                    parts.append(chunk.text)
                    now = time.monotonic()
                    if now - last >= self._update_every:
                        last = now
                        text = "".join(parts)
                        self._markdown(head + text + _CURSOR, text, display_id, update=True)
                if chunk.done:
                    stats = chunk.stats
        except asyncio.CancelledError:
            interrupted = True
        except LLMSpellError:
            self._drop_stream()  # the placeholder goes; the error takes its place
            raise
        finally:
            await stream.aclose()
        text = "".join(parts)
        if interrupted or stream.state != "done":
            word = state_note(stream.state if stream.state != "done" else "cancelled")
            note = f"*{word}* · {stats.summary()}" if stats else f"*{word}*"
            self._markdown(f"{head}{text}\n\n---\n{note}", f"{text}\n[{word}]", display_id, update=True)
            raise Interrupted
        return text, stats, display_id, False

    async def _ran_on(self, spec: str) -> str:
        """The backend or endpoint that answers ``spec``; "" when it cannot be told."""
        return (await where_it_runs(self.hub, spec, _RAN_ON_WAIT))[0]

    @staticmethod
    def _stats_line(stats: Stats, where: str) -> str:
        """An answer's numbers and where it ran (Stats.summary says when the server sent no token counts)."""
        return f"{stats.summary()} · ran on {where}" if where else stats.summary()

    def _footer(self, stats: Stats | None, where: str = "") -> str:
        if stats is None:
            return ""
        return f"\n\n---\n<small>{self.conversation.model} · {self._stats_line(stats, where)}</small>"

    async def _prompt(self, text: str, options: Options | None = None) -> tuple[str, Stats | None, str]:
        conv = self.conversation
        _ = self.hub  # fills in the default model before the turn is recorded
        session = self._session()
        if not self._tools_chosen:
            # the config's [tools] enabled, opened at the first prompt (as every face turns them on at start)
            self._tools_chosen = True
            if self.hub.config.tool_enabled:
                await self._magic_tools(" ".join(self.hub.config.tool_enabled))
        self._tool_blocks = {}
        if self._toolset is not None and options is None:
            session.use_tools(
                self._toolset.registry,
                confirm=self._confirm_tool,
                on_event=self._tool_event,
                tool_choice=self._tool_choice,
                max_steps=self._max_steps,
            )
        stream = session.send(text, options)
        try:
            answer, stats, display_id, _i = await self._stream_into_display(stream)
        finally:
            # a call cut by an interrupt has no result event: its block says so, not "running…" for good
            for block, line in self._tool_blocks.values():
                self._regrow(block, f"`{line}` · cancelled", f"{line}\n  cancelled")
            self._tool_blocks = {}
        if stream.left_out:
            self._print(context_note(stream.left_out, conv.model))
        if options is None or options.format is None:
            where = await self._ran_on(conv.model)
            meta = {
                "llmspell": {
                    "conversation": conv.id,
                    "model": conv.model,
                    "backend": where or None,
                    "stats": stats.to_dict() if stats else None,
                }
            }
            self._finish(answer + self._footer(stats, where), answer, meta)
            self._keep_answer(answer)
        return answer, stats, display_id

    def _keep_answer(self, text: str) -> None:
        """Remember the cell's answer as Out[n], for _, __ and _N in later magics."""
        if not self._silent:
            self.answers[self.execution_count] = text

    # ----- magics --------------------------------------------------------------------------------------------

    async def _magic_help(self, arg: str) -> None:
        self._markdown(help_markdown(arg or None))

    # ----- tools -----------------------------------------------------------------------------------------------

    async def _magic_tools(self, arg: str) -> None:
        from llmspell.tools.toolset import ToolSet

        self._tools_chosen = True
        hub = self.hub
        wanted = parse_tools(arg)
        if not wanted.names:
            if self._toolset is None or not len(self._toolset.registry):
                self._print("no tools on; turn some on with %tools NAMES (e.g. %tools read_file,list_directory)")
                return
            self._print("\n".join(self._toolset.lines()))
            return
        if wanted.names in (("off",), ("none",)):
            await self._close_tools()
            self._print("tools off")
            return
        # opened before the old set closes: an unknown name leaves the tools as they were
        toolset = await ToolSet.open(wanted.names, config=hub.config, root=wanted.root, yes=wanted.yes)
        choice = wanted.tool_choice
        if choice not in ("auto", "none", "required") and choice not in toolset.registry:
            await toolset.close()
            there = ", ".join(toolset.registry.names()) or "none"
            raise MagicError(
                f"--tool-choice names {choice!r}, which is not a tool here", hint=f"the tools are: {there}"
            )
        await self._close_tools()
        self._toolset, self._tools_line = toolset, arg
        self._tool_choice, self._max_steps = choice, wanted.max_steps
        self._print(f"tools on: {', '.join(toolset.registry.names()) or 'none'}")
        for status in toolset.statuses():
            if not status.ok:
                self._warn(f"MCP {status}")

    async def _close_tools(self) -> None:
        toolset, self._toolset = self._toolset, None
        if toolset is not None:
            await toolset.close()

    def _tool_event(self, event: LoopEvent) -> None:
        """Show each call in the cell as it happens: a block with the call, grown with its outcome and the first
        lines of what it returned; the step limit as a note."""
        from llmspell.tools.loop import StepEnd, StepLimitReached, ToolCallEvent, ToolResultEvent
        from llmspell.tools.toolset import call_line, result_line

        if isinstance(event, StepEnd):
            self._step_break = bool(event.message.tool_calls)
        elif isinstance(event, ToolCallEvent):
            line = f"→ {call_line(event.call)}"
            self._tool_blocks[event.call.id] = (self._block(f"`{line}` · *running…*", f"{line}\n  running…"), line)
        elif isinstance(event, ToolResultEvent):
            line = f"→ {call_line(event.call)}"
            outcome = result_line(event.result)
            lines = event.result.content.splitlines()
            shown = "\n".join(lines[:_RESULT_LINES]) + (
                f"\n… ({len(lines)} lines)" if len(lines) > _RESULT_LINES else ""
            )
            md = f"`{line}` · {outcome}" + (f"\n\n```\n{shown}\n```" if shown.strip() else "")
            plain = f"{line}\n  {outcome}" + ("\n" + "\n".join("    " + x for x in shown.splitlines()) if shown else "")
            held = self._tool_blocks.pop(event.call.id, None)
            if held is None:
                self._block(md, plain)
            else:
                self._regrow(held[0], md, plain)
        elif isinstance(event, StepLimitReached):
            self._warn(event.text)

    async def _confirm_tool(self, tool: Tool, arguments: dict[str, Any]) -> bool:
        """Before a tool changes something: the user's y/N through the frontend's input box; a frontend without
        one refuses, with a note saying how to allow it."""
        from llmspell.tools.toolset import confirm_question, is_yes, not_asked_note

        if not self._allow_stdin:
            why = "this frontend has no input box to ask in"
            self._warn(not_asked_note(tool.name, why, f"%tools {self._tools_line} --yes"))
            return False
        return is_yes(await self._ask(confirm_question(tool.name, arguments)))

    async def _ask(self, prompt: str) -> str:
        """One input_request to the frontend, its reply awaited without blocking the loop (the stop button still
        cancels the cell)."""
        import zmq

        socket, session = self.stdin_socket, self.session
        assert session is not None  # set once the kernel runs
        while True:  # replies left from an earlier question would answer this one
            try:
                socket.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EAGAIN:
                    break
                raise
        if hasattr(self, "_get_shell_context_var"):
            ident = self._get_shell_context_var(self._shell_parent_ident)
        else:  # ipykernel 6
            ident = self._parent_ident["shell"]
        session.send(
            socket, "input_request", {"prompt": prompt, "password": False}, self.get_parent("shell"), ident=ident
        )
        while True:
            readable, _, _ = zmq.select([socket], [], [], 0)
            if readable:
                _ident, reply = session.recv(socket)
                if reply is not None:
                    value = reply.get("content", {}).get("value", "")
                    return value if isinstance(value, str) else ""
            await asyncio.sleep(0.02)

    async def _magic_echo(self, arg: str) -> None:
        self._print(arg)

    async def _magic_model(self, arg: str) -> None:
        hub = self.hub
        if not arg:
            self._result({"text/plain": self.conversation.model})
            return
        # the one check every face makes: an unknown or not downloaded model is refused, the old one stays
        await self._session().switch_model(arg)
        info = await hub.info(arg)
        details = ", ".join(x for x in (info.family, info.parameters, info.quantization) if x)
        line = f"model: {arg} ({info.name}@{info.backend}{', ' + details if details else ''})"
        self._print(line)
        warning = info.chat_warning()
        if warning:
            self._warn(f"warning: {warning}")

    async def _model_names(self) -> list[str]:
        stamp, names = self._names
        if names and time.monotonic() - stamp < _NAMES_TTL:
            return names
        names = await model_names(self.hub)
        self._names = (time.monotonic(), names)
        return names

    def _pullable(self, names: list[str]) -> list[str]:
        """The names %pull can take: those of a backend that says it cannot pull (an endpoint's server) left out."""
        refuse = {name for name, b in self.hub.backends.items() if not b.IMPLEMENTS_PULL}
        return [n for n in names if "@" not in n or n.rpartition("@")[2] not in refuse]

    async def _magic_models(self, arg: str) -> None:
        models, failed = await self.hub.list_all()
        rows = [
            [
                f"{m.name}@{m.backend}",
                _human_bytes(m.size_bytes),
                m.quantization or "-",
                m.family or "-",
                m.source,
                "yes" if m.loaded else "",
            ]
            for m in models
        ]
        md, plain = _table(["model", "size", "quantization", "family", "source", "loaded"], rows)
        for st in failed:
            note = (st.error or "not available").splitlines()[0]
            md += f"\n*{st.backend}: {note}*\n"
            plain += f"\n{st.backend}: {note}"
        self._markdown(md, plain)

    async def _magic_status(self, arg: str) -> None:
        statuses = await self.hub.status_all()
        rows = []
        for s in statuses:
            why = (s.error or "").replace("\n", " ")
            backend = self.hub.backends.get(s.backend)
            # the OpenAI API cannot say what a server holds in memory: an empty cell there would read as "nothing"
            loaded = ", ".join(s.loaded) or ("unknown" if backend is not None and backend.kind == "openai" else "")
            rows.append(
                [
                    s.backend,
                    "ready" if s.ready else "not ready",
                    s.version or "",
                    s.device or "",
                    s.address or "",
                    _latency(s.latency),
                    str(s.model_count),
                    loaded,
                    "; ".join(x for x in (why, *s.notes) if x),
                ]
            )
        headers = ["backend", "state", "version", "device", "address", "latency", "models", "loaded", "notes"]
        md, plain = _table(headers, rows)
        self._markdown(md, plain)

    async def _magic_system(self, arg: str) -> None:
        _ = self.hub
        self.conversation.system = arg or None
        self._persist()
        self._print(f"system prompt: {arg}" if arg else "system prompt cleared")

    async def _magic_set(self, arg: str) -> None:
        _ = self.hub
        if arg:
            self.conversation.options = self.conversation.options.with_text(arg)
            self._persist()
        shown = " ".join(f"{k}={v}" for k, v in self.conversation.options.to_dict().items())
        self._print(f"options: {shown or '(the defaults)'}")

    async def _magic_reset(self, arg: str) -> None:
        _ = self.hub
        session = self._session()
        old = session.restart()
        self.conversation = session.conv
        self._print(f"new conversation {self.conversation.id} (model {old.model})")

    async def _magic_history(self, arg: str) -> None:
        _ = self.hub
        words = arg.split()
        if words and words[0] == "list":
            rows = [
                [
                    c.id,
                    c.title,
                    c.model,
                    str(c.messages),
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(c.updated)),
                ]
                for c in self.store.list(20)
            ]
            md, plain = _table(["id", "title", "model", "messages", "updated"], rows)
            self._markdown(md, plain)
            return
        if words and words[0] == "open":
            if len(words) != 2:
                raise MagicError("%history open needs one conversation id", hint="%history list shows them")
            session = self._session()
            self.conversation = session.open(words[1])
            self._print(
                f"continuing conversation {self.conversation.id} ({len(self.conversation.entries)} "
                f"messages, model {self.conversation.model})"
            )
            try:
                await session.check_model()
            except LLMSpellError as exc:  # the conversation is open; only its model needs changing
                self._warn(f"warning: {error_text(exc)}; switch with %model SPEC")
            return
        if words:
            raise MagicError(f"%history does not know {words[0]!r}", hint=f"usage: {MAGICS['history'].usage}")
        conv = self.conversation
        stored = "stored" if self._saved() else "not stored yet (no prompt so far)"
        md = f"conversation `{conv.id}` · model `{conv.model}` · {stored}"
        if conv.system:
            md += f"\n\n**system:** {conv.system}"
        for e in conv.entries:
            if e.role == "tool":
                md += f"\n\n*{tool_line(e)}*"
                continue
            who = "you" if e.role == "user" else (e.model or conv.model)
            mark = f" *({state_note(e.state)})*" if e.state != "done" else ""
            if e.content or not e.tool_calls:
                md += f"\n\n**{who}:** {e.content}{mark}"
            if e.tool_calls:
                from llmspell.tools.toolset import call_line

                md += "".join(f"\n\n`→ {call_line(call)}`" for call in e.tool_calls)
        plain = f"conversation {conv.id} ({conv.model}, {len(conv.entries)} messages)"
        self._markdown(md, plain)

    async def _magic_save(self, arg: str) -> None:
        conv = self.conversation
        try:
            path = export_conversation(conv, arg)
        except InvalidOptions as exc:
            raise MagicError(exc.message, hint=exc.hint) from None
        self._print(f"saved {len(conv.entries)} messages to {path}")

    async def _magic_pull(self, arg: str) -> None:
        hub = self.hub  # a bad config.toml fails here, before a progress line is shown
        display_id = uuid.uuid4().hex
        index = len(self._kept)
        self._markdown(f"pulling `{arg}`…", f"pulling {arg}", display_id)
        last = 0.0
        final = None
        line = f"pulling {arg}"
        stream = hub.pull(arg)
        try:
            async for p in stream:
                now = time.monotonic()
                if p.total and not p.done:
                    if now - last < 0.2 and p.completed < p.total:
                        continue
                    bar = "█" * int(p.fraction * 30)
                    done = f"{_human_bytes(p.completed)}/{_human_bytes(p.total)}"
                    line = f"{p.status} {p.fraction:4.0%} `{bar:<30}` {done}"
                else:
                    line = p.status
                last = now
                final = p
                self._markdown(line, line, display_id, update=True)
        except asyncio.CancelledError:
            # the progress line stays where it stopped, marked, so the cell does not look like a pull still running
            note = f"interrupted; %pull {arg} again resumes it"
            self._markdown(f"{line}\n\n*{note}*", f"{line}\n[{note}]", display_id, update=True)
            raise Interrupted from None
        except LLMSpellError:
            # the error takes the progress line's place, as a failed answer's does
            del self._kept[index:]
            self._drop_stream()
            raise
        finally:
            await stream.aclose()
        where = f" ({final.path})" if final is not None and final.path else ""
        line = f"pulled {arg}{where}"
        self._markdown(line, line, display_id, update=True)
        if len(self._kept) > index:  # nothing was kept when the cell is silent
            # the cell's other outputs keep the finished line, should a later step clear and send them again
            self._kept[index] = (
                "display_data",
                {
                    "data": {"text/plain": line, "text/markdown": line},
                    "metadata": {},
                    "transient": {"display_id": display_id},
                },
            )
        self._names = (0.0, [])

    async def _magic_compare(self, arg: str, prompt: str) -> None:
        try:
            specs = shlex.split(arg)
        except ValueError as exc:
            raise MagicError(
                f"%compare cannot read its models: {exc}", hint=f"usage: {MAGICS['compare'].usage}"
            ) from None
        hub = self.hub
        for spec in specs:
            hub.spec(spec)  # every spec is checked before the first model runs
        # Session.compare: each model answers its own stored copy of this conversation; this one is unchanged
        failures: list[tuple[str, str]] = []
        # the contents of the per-model error notes shown so far (a clear re-sends them, as new entries of _kept)
        notes: list[dict[str, Any]] = []
        display_id, last = "", 0.0
        stream = self._session().compare(specs, prompt, parallel=False)
        try:
            async for event in stream:
                spec, m = specs[event.index], event.metrics
                head = f"**{spec}**\n\n"
                if event.kind == "start":
                    display_id = uuid.uuid4().hex
                    self._markdown(head + "*…*", "…", display_id, keep=False)
                    continue
                if event.kind == "chunk":
                    now = time.monotonic()
                    if now - last >= self._update_every:
                        last = now
                        self._markdown(head + m.text + _CURSOR, m.text, display_id, update=True)
                    continue
                if event.kind == "error":
                    error = m.error or "failed"
                    md, plain = f"{head}*{error}*", f"{spec}: {error}"
                    failures.append((spec, error))
                else:
                    summary = self._stats_line(m.stats, await self._ran_on(spec)) if m.stats else ""
                    md, plain = f"{head}{m.text}\n\n---\n<small>{summary}</small>", f"{spec}: {m.text}"
                self._markdown(md, plain, display_id, update=True)
                content = {
                    "data": {"text/markdown": md, "text/plain": plain},
                    "metadata": {},
                    "transient": {"display_id": display_id},
                }
                self._kept.append(("display_data", content))
                display_id = ""  # this model's display is final
                if event.kind == "error":
                    notes.append(content)
        except asyncio.CancelledError:
            if display_id:  # a model was answering: its display keeps what arrived, marked
                text, word = m.text, state_note("cancelled")
                self._markdown(f"{head}{text}\n\n---\n*{word}*", f"{text}\n[{word}]", display_id, update=True)
            raise Interrupted from None
        finally:
            await stream.aclose()
        if specs and len(failures) == len(specs):
            # no answer at all is a failed cell (so "Run all" stops): one error naming each model's reason replaces
            # the per-model notes
            self._kept = [k for k in self._kept if not any(k[1] is note for note in notes)]
            self._drop_stream()
            reasons = "".join(f"\n{spec}: {error.split('; ')[0]}" for spec, error in failures)
            raise CompareFailed(f"no model answered the comparison:{reasons}")

    async def _magic_json(self, arg: str, prompt: str) -> None:
        _ = self.hub
        try:
            options = Options(format=arg if arg else "json")
        except InvalidOptions as exc:
            raise MagicError(
                f"%json needs a JSON schema: {exc.message.split('; ', 1)[-1]}",
                hint='e.g. %json {"type": "object", "properties": {"x": {"type": "integer"}}}',
            ) from None
        answer, stats, display_id = await self._prompt(prompt, options)
        try:
            value = json.loads(answer)
        except json.JSONDecodeError as exc:
            # what the model wrote stays above the error, without the cursor of an answer still being written
            self._markdown(f"```\n{answer}\n```", answer, display_id, update=True)
            why = (
                " (it stopped at max_tokens; raise it with %set max_tokens=...)"
                if stats and stats.stop_reason == "length"
                else ""
            )
            raise MagicError(f"the answer is not valid JSON{why}: {exc}") from None
        meta = {
            "llmspell": {
                "conversation": self.conversation.id,
                "model": self.conversation.model,
                "stats": stats.to_dict() if stats else None,
            }
        }
        self._drop_stream()
        pretty = json.dumps(value, indent=2, ensure_ascii=False)
        # one line, so `%json _` or `%echo _` in a later cell gets the value back whole
        self._keep_answer(json.dumps(value, ensure_ascii=False))
        self._result(
            {
                "application/json": value if isinstance(value, (dict, list)) else {"value": value},
                "text/plain": pretty,
                "text/markdown": f"```json\n{pretty}\n```{self._footer(stats)}",
            },
            meta,
        )

    # ----- embeddings ---------------------------------------------------------------------------------------

    async def _magic_embed(self, arg: str, prompt: str) -> None:
        from llmspell_kernel.embed_view import embed_html, embed_text, summary

        # the text of the line, or each line below it (check_embed made sure there is one of them, not both)
        texts = [arg] if arg else [line.strip() for line in prompt.splitlines() if line.strip()]
        hub = self.hub  # fills in the default model
        conv = self.conversation
        # a line that says what is being done (loading a large model takes a while), replaced by the view
        display_id = uuid.uuid4().hex
        count = f"{len(texts)} text{'s' if len(texts) != 1 else ''}"
        self._markdown(f"*embedding {count} with `{conv.model}`…*", f"embedding {count}…", display_id, keep=False)
        try:
            result = await hub.embed(conv.model or None, texts, options=conv.options)
        except asyncio.CancelledError:
            note = state_note("cancelled")
            self._markdown(f"*embedding {count}: {note}*", f"embedding {count}: {note}", display_id, update=True)
            raise Interrupted("stopped by the user before the embeddings were done") from None
        except LLMSpellError:
            self._drop_stream()  # the placeholder goes; the error takes its place
            raise
        html, plain = embed_html(texts, result), embed_text(texts, result)
        self._send(
            "update_display_data",
            {"data": {"text/html": html, "text/plain": plain}, "metadata": {}, "transient": {"display_id": display_id}},
            keep=False,
        )
        dims = len(result.vectors[0]) if result.vectors else 0
        # Out[n] is the vectors, in the shape of `llmspell embed --json` (a notebook file keeps them)
        self._result(
            {
                "application/json": {
                    "model": result.model,
                    "embeddings": result.vectors,
                    "prompt_tokens": result.prompt_tokens,
                },
                "text/plain": f"{summary(result)} (the vectors are this result's application/json)",
            },
            {
                "application/json": {"expanded": False},
                "llmspell": {"model": result.model, "texts": len(texts), "dimensions": dims},
            },
        )

    # ----- the arena: blind rounds, votes, the leaderboard ----------------------------------------------------

    def _the_arena(self) -> Arena:
        """The kernel's arena (created on first use), with this notebook's current %set options and %system."""
        from llmspell.arena import Arena

        if self._arena is None:
            self._arena = Arena(self.hub, self.store)
        # read at every use, so a %set between rounds applies to the next one (a round keeps the options it began with)
        self._arena.options = self.conversation.options
        self._arena.system = self.conversation.system
        return self._arena

    async def _magic_arena(self, arg: str, prompt: str) -> None:
        # the words were checked when the cell was parsed (check_arena)
        words = arg.split()
        word = words[0].lower() if words else ""
        rest = arg.strip()[len(words[0]) :].strip() if words else ""
        if word == "vote":
            self._arena_vote(rest)
            return
        if word == "leaderboard" or not (word or prompt):
            self._arena_leaderboard(rest or None)
            return
        if word == "pool":
            await self._arena_pool(rest)
        elif word in ("tag", "category"):
            self._arena_tag(rest)
        if prompt:
            await self._arena_round(prompt)

    def _show_pool(self, arena: Arena, where: str) -> None:
        self._print(f"arena pool: {len(arena.pool)} models{where}")
        for spec, why in arena.skipped:
            self._warn(f"skipped {spec}: {why}")

    async def _arena_pool(self, arg: str) -> None:
        try:
            specs = shlex.split(arg)
        except ValueError as exc:
            raise MagicError(
                f"%arena pool cannot read its models: {exc}", hint="e.g. %arena pool smollm2:135m gemma3:270m"
            ) from None
        arena = self._the_arena()
        if specs:
            await arena.set_pool(specs)  # refused (the old pool stays) when fewer than two usable models remain
            self._show_pool(arena, ": " + ", ".join(c.label for c in arena.pool))
        elif arena.pool:
            self._print(f"arena pool: {len(arena.pool)} models: " + ", ".join(c.label for c in arena.pool))
        else:
            self._print(
                "arena pool: not set; the first round takes the config's [arena] pool, else every model on this machine"
            )

    def _arena_tag(self, category: str) -> None:
        self._the_arena().category = category or None
        self._print(
            f"arena category: {category} (the next rounds' votes carry it)" if category else "arena category cleared"
        )

    def _arena_answer(self, letter: str, m: StreamMetrics, hide_stats: bool) -> tuple[str, str]:
        """The final form of one blind answer: its letter, its text and (unless the stats are hidden) its stats."""
        head = f"**{letter}**\n\n"
        if m.status == "error":
            error = m.error or "failed"
            return f"{head}*{error}*", f"{letter}: {error}"
        note = ""
        if m.status != "done":
            note = f"\n\n---\n*{state_note('cancelled')}*"
        elif m.stats is not None and not hide_stats:
            note = f"\n\n---\n<small>{m.stats.summary()}</small>"
        return f"{head}{m.text}{note}", f"{letter}: {m.text}"

    async def _arena_round(self, prompt: str) -> None:
        arena = self._the_arena()
        if not arena.pool:
            await arena.set_pool(None)
            source = "the config's [arena] pool" if self.hub.config.arena_pool else "every model on this machine"
            self._show_pool(arena, f" ({source})")
        round_ = arena.start(prompt)
        # a round is one prompt of its own, never a turn of self.conversation: the history would name the models
        self._round, self._round_displays = round_, []
        hide_stats = bool(self.hub.config.arena_hide_stats)
        display_id, letter, last = "", "", 0.0
        metrics: StreamMetrics | None = None
        stopped = False
        stream = round_.stream(self.hub, parallel=False)
        try:
            async for event in stream:
                letter, metrics = round_.letters[event.index], event.metrics
                head = f"**{letter}**\n\n"
                if event.kind == "start":
                    display_id = uuid.uuid4().hex
                    self._round_displays.append(display_id)
                    self._markdown(head + "*…*", f"{letter}: …", display_id, keep=False)
                    continue
                if event.kind == "chunk":
                    now = time.monotonic()
                    if now - last >= self._update_every:
                        last = now
                        text = metrics.text
                        self._markdown(head + text + _CURSOR, f"{letter}: {text}", display_id, update=True)
                    continue
                md, plain = self._arena_answer(letter, metrics, hide_stats)
                self._markdown(md, plain, display_id, update=True)
                self._kept.append(
                    (
                        "display_data",
                        {
                            "data": {"text/markdown": md, "text/plain": plain},
                            "metadata": {},
                            "transient": {"display_id": display_id},
                        },
                    )
                )
                display_id = ""  # this answer's display is final
        except asyncio.CancelledError:
            stopped = True
            if display_id and metrics is not None:  # an answer was being written: it keeps what arrived, marked
                text, word = metrics.text, state_note("cancelled")
                self._markdown(
                    f"**{letter}**\n\n{text}\n\n---\n*{word}*", f"{letter}: {text}\n[{word}]", display_id, update=True
                )
        finally:
            await stream.aclose()
        if stopped:
            if not round_.metrics:  # nothing began: there is no round to speak of
                self._round = None
            raise Interrupted("stopped by the user, so this round cannot be voted; send the prompt again")
        for label, why in arena.take_dropped():
            self._warn(f"{label} {why}")
        problem = round_.problem()
        if problem is not None:
            raise RoundNotVotable(problem)
        first, *others = [x.lower() for x in round_.letters]
        choices = ", ".join([*others, "tie"])
        self._markdown(
            f"*Which answer is better? `%arena vote {first}` ({choices} or bad: all bad)*",
            f"Which answer is better? %arena vote {first} ({choices} or bad: all bad)",
        )

    def _arena_vote(self, choice: str) -> None:
        from llmspell.arena import ttft_text

        round_ = self._round
        if round_ is None:
            raise MagicError(
                "no arena round is waiting for a vote",
                hint="run one first: %arena on the first line of a cell, the prompt below it",
            )
        vote = self._the_arena().vote(round_, choice)  # the core refuses a voted, failed or stopped round
        reveal = round_.reveal()
        rows = []
        for n, (letter, label, m) in enumerate(reveal):
            chosen = ("✓" if vote.winner == n else "") if isinstance(vote.winner, int) else vote.winner_text
            speed = f"{m.tokens_per_s:.1f}" if m is not None and m.generated_tokens > 1 else "-"
            rows.append([letter, label, speed, ttft_text(m.ttft if m is not None else None), chosen])
        md, plain = _table(["answer", "model", "tokens/s", "TTFT", "chosen"], rows)
        tagged = f" (category {round_.category})" if round_.category else ""
        self._markdown(
            f"You voted **{vote.winner_text}**{tagged}. The answers were:\n\n{md}",
            f"You voted {vote.winner_text}{tagged}. The answers were:\n{plain}",
        )
        # the round's own cell now names each answer's model and shows its stats, where the blind answer was
        for display_id, (letter, label, m) in zip(self._round_displays, reveal, strict=False):
            if m is None:
                continue
            footer = f"\n\n---\n<small>{m.stats.summary()}</small>" if m.stats is not None else ""
            self._markdown(
                f"**{letter}: {label}**\n\n{m.text}{footer}", f"{letter} ({label}): {m.text}", display_id, update=True
            )

    def _arena_leaderboard(self, category: str | None) -> None:
        from llmspell.arena import load_board
        from llmspell_kernel.arena_view import leaderboard_html, leaderboard_text

        count, standings = load_board(self.store, category)
        if not count:
            if category:
                known = ", ".join(self.store.categories()) or "none yet"
                self._print(f"no arena votes in category {category!r} yet (categories: {known}); {_HOW_TO_VOTE}")
            else:
                self._print(f"no arena votes yet: {_HOW_TO_VOTE}")
            return
        heading = f"arena leaderboard{f' ({category})' if category else ''}: {count} vote{'s' if count != 1 else ''}"
        self._display(
            {
                "text/html": leaderboard_html(standings, heading),
                "text/plain": f"{heading}\n{leaderboard_text(standings)}",
            }
        )
        waiting = self._round
        if waiting is not None and waiting.problem() is None:
            self._print("a round is waiting for your vote: %arena vote a, b, tie or bad")

    # ----- completion, inspection, is_complete, shutdown -----------------------------------------------------

    async def do_complete(self, code: str, cursor_pos: int | None) -> dict[str, Any]:  # type: ignore[override]
        """Magic names after ``%``, model names after ``%model`` (and %pull, %compare, %arena pool), option names
        after %set."""
        cursor = len(code) if cursor_pos is None else cursor_pos
        kind, word, start = completion_context(code, cursor)
        matches: list[str] = []
        if kind == "magic":
            matches = ["%" + m for m in MAGICS if ("%" + m).startswith(word)]
        elif kind == "model":
            try:
                names = await self._model_names()
            except LLMSpellError:
                names = []
            if code[code.rfind("\n", 0, cursor) + 1 : cursor].lstrip().startswith("%pull "):
                names = self._pullable(names)
            matches = [n for n in names if n.startswith(word)]
        elif kind == "option":
            matches = [f"{name}=" for name in Options.names() if name.startswith(word)]
        return {"status": "ok", "matches": matches, "cursor_start": start, "cursor_end": cursor, "metadata": {}}

    async def do_inspect(  # type: ignore[override]
        self, code: str, cursor_pos: int, detail_level: int = 0, omit_sections: Any = ()
    ) -> dict[str, Any]:
        """Help for a magic, or the details of a model name under the cursor."""
        from llmspell_kernel.magics import word_at

        word = word_at(code, cursor_pos)
        data: dict[str, str] = {}
        if word.startswith("%") and word[1:] in MAGICS:
            text = help_markdown(word)
            data = {"text/markdown": text, "text/plain": text}
        elif word and not word.startswith("%"):
            try:
                info = await self.hub.info(word)
            except LLMSpellError:
                info = None
            if info is not None:
                fields = [
                    ("model", f"{info.name}@{info.backend}"),
                    ("family", info.family),
                    ("parameters", info.parameters),
                    ("quantization", info.quantization),
                    ("context", info.context_length),
                    ("size", _human_bytes(info.size_bytes) if info.size_bytes else None),
                    ("source", info.source),
                    # a server's model has an address, not a file
                    ("address" if "://" in (info.location or "") else "file", info.location),
                    ("license", info.license),
                    ("kind", BASE_MODEL_KIND if info.base_model else None),
                    ("chat template", info.template_note()),
                ]
                rows = [(k, str(v)) for k, v in fields if v not in (None, "")]
                plain = "\n".join(f"{k + ':':15} {v}" for k, v in rows)
                data = {"text/plain": plain, "text/markdown": "\n".join(f"- **{k}**: {v}" for k, v in rows)}
        return {"status": "ok", "found": bool(data), "data": data, "metadata": {}}

    async def do_is_complete(self, code: str) -> dict[str, Any]:  # type: ignore[override]
        """'invalid' for an unknown magic, 'incomplete' while a prompt is clearly unfinished, else 'complete'."""
        status = is_complete(code)
        return {"status": status, "indent": ""} if status == "incomplete" else {"status": status}

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        """Stop the tools' MCP servers, unload models and close the store."""
        await self._close_tools()
        if self._hub is not None:
            await self._hub.close()
        if self._store is not None:
            self._store.close()
        return {"status": "ok", "restart": restart}
