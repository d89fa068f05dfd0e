"""The ``llmspell chat`` session: a prompt_toolkit prompt, slash commands, and answers streamed through the core.

Everything the session touches comes in through its constructor (hub, store, consoles, prompt input
and output, history file), so tests drive it in-process with a pipe input and a dummy output, and the
command line drives it on a real terminal. It uses only the core's contract: ``Hub``, ``chat.ask``,
``Conversation``, ``Store`` and the types.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import signal
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application, run_in_terminal
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import has_focus
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import FormattedTextControl, Layout, Window
from prompt_toolkit.output import Output
from rich.console import Console
from rich.text import Text

from llmspell import config as cfgmod
from llmspell.arena import Arena, Round
from llmspell.chat import Conversation, Turn, tool_line
from llmspell.cli.repl_arena import VOTE_PROMPT
from llmspell.cli.repl_arena import play as arena_play
from llmspell.cli.repl_arena import vote as arena_vote
from llmspell.cli.repl_arena import waiting as arena_waiting
from llmspell.cli.repl_commands import _COMMANDS, DISPLAY_SETTINGS, Command
from llmspell.cli.repl_render import AnswerView, make_view
from llmspell.errors import LLMSpellError
from llmspell.hub import Hub
from llmspell.session import Session, error_text, model_names, state_note, where_it_runs
from llmspell.store import Store
from llmspell.tools.loop import LoopEvent, StepLimitReached, ToolCallEvent, ToolResultEvent
from llmspell.tools.toolset import call_line, confirm_question, not_asked_note, result_line
from llmspell.types import Options, Stats

if TYPE_CHECKING:
    from llmspell.tools.base import Tool
    from llmspell.tools.toolset import ToolSet

T = TypeVar("T")

PROMPT = ">>> "
CONTINUATION = "... "
FENCE = '"""'
#: seconds spent finding out which backend answered, for the stats line (see Repl.ran_on)
_RAN_ON_WAIT = 1.0


def _is_open_block(text: str) -> bool:
    """True while a ``\"\"\"`` block typed at the prompt has not been closed yet."""
    stripped = text.strip()
    return stripped.startswith(FENCE) and (len(stripped) < 6 or not stripped.endswith(FENCE))


def prompt_text(line: str) -> str:
    """What a line typed at the prompt sends: ``\"\"\"`` fences removed, outer blank lines trimmed."""
    text = line.strip("\n")
    stripped = text.strip()
    if stripped.startswith(FENCE):
        stripped = stripped[len(FENCE) :]
        if stripped.endswith(FENCE):
            stripped = stripped[: -len(FENCE)]
        return stripped.strip("\n")
    return text.strip()


class SafeFileHistory(FileHistory):
    """Input history in a file that goes on in memory, with one warning, when the file cannot be used."""

    # prompt_toolkit opens the file lazily (on the first prompt and on each Enter), so a bad path cannot be
    # caught when the history is created: the failure has to be caught here, or it ends the session

    def __init__(self, path: Path, on_error: Callable[[OSError], None]) -> None:
        super().__init__(str(path))
        self.on_error = on_error
        self.failed = False

    def _failed(self, exc: OSError) -> None:
        if not self.failed:
            self.failed = True
            self.on_error(exc)

    def load_history_strings(self) -> Iterable[str]:
        """The saved entries, newest first; none when the file cannot be read."""
        try:
            return list(super().load_history_strings())
        except OSError as exc:
            self._failed(exc)
            return []

    def store_string(self, string: str) -> None:
        """Append one entry to the file; the in-memory history keeps it either way."""
        try:
            super().store_string(string)
        except OSError as exc:
            self._failed(exc)


class ReplCompleter(Completer):
    """Completes slash commands, model names (/model, /compare), option names (/set) and saved titles (/load)."""

    def __init__(self, repl: Repl) -> None:
        self.repl = repl

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        """The completions for the text before the cursor."""
        text = document.text_before_cursor
        if not text.startswith("/") or "\n" in text:
            return
        if " " not in text:
            for each in self.repl.commands.values():
                if each.name.startswith(text):
                    yield Completion(each.name, -len(text), display_meta=each.help)
            return
        name, _, arg = text.partition(" ")
        word = arg.rsplit(" ", 1)[-1]
        choices: Iterable[str] = ()
        cmd = self.repl.lookup(name)
        if cmd is None:
            return
        if cmd.name in ("/model", "/compare", "/arena"):
            choices = self.repl.model_names
        elif cmd.name == "/set" and " " not in arg:
            choices = [*Options.names(), *DISPLAY_SETTINGS]
        elif cmd.name == "/load" and " " not in arg:
            choices = self.repl.saved_titles()
        elif cmd.name == "/json" and " " not in arg:
            choices = ["off"]
        elif cmd.name == "/tools":
            from llmspell.tools.builtin import BUILTIN_NAMES

            choices = ["off", *BUILTIN_NAMES, *(s.name for s in self.repl.hub.config.mcp_servers)]
        for choice in choices:
            if choice.startswith(word) and choice != word:
                yield Completion(choice, -len(word))


class Repl:
    """One chat session: a conversation, the prompt that feeds it, and the commands that steer it."""

    def __init__(
        self,
        hub: Hub,
        store: Store,
        *,
        console: Console | None = None,
        err_console: Console | None = None,
        input: Input | None = None,
        output: Output | None = None,
        history: History | None = None,
        quiet: bool = False,
        raw: bool = False,
        interactive: bool = True,
    ) -> None:
        self.hub = hub
        self.store = store
        self.interactive = interactive
        self.console = console or Console(highlight=False)
        # piped use keeps standard output for the answer alone
        self.err = err_console or (self.console if interactive else Console(stderr=True, highlight=False))
        self.input = input
        self.output = output
        self.history = history
        self.quiet = quiet
        self.markdown = not raw
        #: the conversation and everything that happens to it; this class only reads keys and prints
        self.chat = Session(hub, store)
        #: why the current model cannot be used, or None when it can
        self.model_error: str | None = None
        #: models the next prompt goes to, set by /compare
        self.compare_next: list[str] | None = None
        #: the blind arena, when /arena is on (each prompt is a round), and the round waiting for its vote
        self.arena: Arena | None = None
        self.arena_round: Round | None = None
        self.model_names: list[str] = []
        self.commands: dict[str, Command] = {}
        self._aliases: dict[str, str] = {}
        for cmd in _COMMANDS:
            self.commands[cmd.name] = cmd
            for alias in cmd.aliases:
                self._aliases[alias] = cmd.name
        self._names_task: asyncio.Task[None] | None = None
        #: set when Ctrl-C cancelled the running action (as opposed to the session being cancelled)
        self.interrupted = False
        #: how many times Ctrl-C was pressed while an action ran (tells a second Ctrl-C from other cancels)
        self.interrupts = 0
        self.session: PromptSession[str] | None = None
        self._warning: Awaitable[None] | None = None
        #: the tools the model may call (None: none), and how /tools opens new ones: root, --yes, first choice, steps
        self.toolset: ToolSet | None = None
        self.tool_root: str | None = None
        self.tool_yes = False
        self.tool_choice = "auto"
        self.max_steps: int | None = None
        #: the y/N question before a side effect, while it is on the screen
        self.asking: Application[str] | None = None
        #: the action ``guarded`` runs now (a Ctrl-C typed at a question cancels it, as the signal would)
        self._action: asyncio.Future[Any] | None = None
        #: where the model step being streamed is shown (made at its first text; a tool call ends it)
        self._view: AnswerView | None = None

    @property
    def conv(self) -> Conversation:
        """The conversation being had."""
        return self.chat.conv

    @conv.setter
    def conv(self, conv: Conversation) -> None:
        self.chat.conv = conv

    # ----- output ----------------------------------------------------------------------------------

    def say(self, text: str, style: str = "") -> None:
        """Print one line of the face's own (not the model's) text."""
        self.console.print(Text(text, style=style), soft_wrap=True)

    def error(self, exc: BaseException | str) -> None:
        """One readable line naming the cause and the fix; never a traceback."""
        message = exc if isinstance(exc, str) else error_text(exc)
        self.err.print(Text(f"error: {message}", style="red"), soft_wrap=True)

    def dim(self, text: str) -> None:
        """A secondary line (stats, hints); piped, it goes to stderr so stdout holds only the answer."""
        (self.console if self.interactive else self.err).print(Text(text, style="dim"), soft_wrap=True)

    # ----- setting up --------------------------------------------------------------------------------

    async def open(
        self,
        spec: str | None = None,
        *,
        system: str | None = None,
        options: Options | None = None,
        resume: str | None = None,
    ) -> bool:
        """Start a new conversation (or reopen one); False when the session cannot go on."""
        if resume:
            try:
                self.chat.open(resume)
            except LLMSpellError as exc:
                self.error(exc)
                return False
            if spec:
                self.conv.model = spec
        else:
            self.conv = Conversation(spec or self.hub.config.default_model)
        if system is not None:
            self.conv.system = system or None
        if options is not None:
            self.conv.options = self.conv.options.merged(options)
        if resume and self.interactive:
            self._replay(self.conv)
        await self._check_current_model()
        return not (self.model_error and not self.interactive)

    # ----- tools ---------------------------------------------------------------------------------------

    def use_toolset(self, toolset: ToolSet | None) -> None:
        """Let the next turns call ``toolset``'s tools (None: no tools); the caller closes the one it replaces."""
        self.toolset = toolset
        if toolset is None:
            self.chat.use_tools(None)
            return
        self.chat.use_tools(
            toolset.registry,
            confirm=self._confirm,
            on_event=self._tool_event,
            tool_choice=self.tool_choice,
            max_steps=self.max_steps,
        )

    async def close_tools(self) -> None:
        """Turn tools off and stop the MCP servers they started."""
        toolset, self.toolset = self.toolset, None
        self.chat.use_tools(None)
        if toolset is not None:
            await toolset.close()

    async def ask_key(self, question: str) -> str:
        """Ask a y/N question and wait for one key: "y", "n" (n, Enter, Ctrl-D) or "interrupt" (Ctrl-C)."""
        kb = KeyBindings()
        answers = {"y": "y", "Y": "y", "n": "n", "N": "n", "enter": "n", "c-d": "n", "c-c": "interrupt"}
        for key, answer in answers.items():
            kb.add(key)(lambda event, answer=answer: event.app.exit(result=answer))
        kb.add("<any>")(lambda event: None)  # other keys do nothing: the question waits for an answer
        app: Application[str] = Application(
            layout=Layout(Window(FormattedTextControl(question), height=1)),
            key_bindings=kb,
            erase_when_done=True,
            input=self.input,
            output=self.output,
        )
        self.asking = app
        try:
            # Ctrl-C is a key while the question is up (raw mode); the turn's own SIGINT handler must stay
            return await app.run_async(handle_sigint=False)
        finally:
            self.asking = None

    async def _confirm(self, tool: Tool, arguments: dict[str, Any]) -> bool:
        """Before a tool changes something: the user's y/N; piped, a refusal with a note (--yes allows it).
        Ctrl-C at the question refuses and stops the turn, as it does while an answer streams."""
        if not self.interactive:
            self.dim(f"  {not_asked_note(tool.name, 'no terminal to ask on')}")
            return False
        self._end_view()
        question = confirm_question(tool.name, arguments)
        answer = await self.ask_key(question)
        self.say(question + {"y": "yes", "n": "no"}.get(answer, "no (Ctrl-C)"), "yellow")
        if answer == "interrupt" and self._action is not None:
            self.interrupted = True
            self.interrupts += 1
            self._action.cancel()
        return answer == "y"

    def _tool_event(self, event: LoopEvent) -> None:
        """Draw a tool turn's events as they happen: each call, then what it came to, dim; the step limit."""
        if isinstance(event, ToolCallEvent):
            self._end_view()
            self.dim(f"→ {call_line(event.call)}")
        elif isinstance(event, ToolResultEvent):
            self.dim(f"  {result_line(event.result)}")
        elif isinstance(event, StepLimitReached):
            self._end_view()
            self.dim(event.text)

    def _feed(self, text: str) -> None:
        if not text:
            return
        if self._view is None:
            self._view = make_view(self.console, markdown=self.markdown and self.conv.options.format is None)
        self._view.feed(text)

    def _end_view(self) -> None:
        """The step being shown is over (a call comes next, or the turn ended): leave it on the screen."""
        if self._view is not None:
            self._view.close()
            self._view = None

    async def _check_current_model(self) -> None:
        try:
            await self.chat.check_model()
            self.model_error = None
        except LLMSpellError as exc:
            self.model_error = error_text(exc)
            self.error(exc)
            if self.interactive:
                self.dim("pick another model with /model SPEC (/models lists them)")

    def saved_titles(self) -> list[str]:
        """Titles of saved conversations, most recent first (for /load completion)."""
        try:
            return [row.title for row in self.store.list(200)]
        except LLMSpellError:
            return []

    async def _load_names(self) -> None:
        """Fill model-name completion from every backend and the catalog, off the startup path."""
        self.model_names = await model_names(self.hub)

    # ----- the loop ------------------------------------------------------------------------------------

    def _key_bindings(self) -> KeyBindings:
        kb = KeyBindings()
        focused = has_focus(DEFAULT_BUFFER)

        @kb.add("escape", "enter", filter=focused)
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        @kb.add("enter", filter=focused)
        def _enter(event: KeyPressEvent) -> None:
            buf = event.current_buffer
            if _is_open_block(buf.text):
                buf.insert_text("\n")
            else:
                buf.validate_and_handle()

        return kb

    def make_session(self) -> PromptSession[str]:
        """The prompt: history file, completion, multiline keys, on the injected input and output."""
        history = self.history
        if history is None:
            path = cfgmod.repl_history_path()
            with contextlib.suppress(OSError):  # a folder that cannot be made shows up as a failed write below
                path.parent.mkdir(parents=True, exist_ok=True)
            history = SafeFileHistory(path, self._history_failed)
        return PromptSession(
            history=history,
            completer=ReplCompleter(self),
            complete_while_typing=True,
            reserve_space_for_menu=4,
            key_bindings=self._key_bindings(),
            multiline=True,
            prompt_continuation=CONTINUATION,
            placeholder=FormattedText([("class:placeholder", "Send a message (/help for help)")]),
            input=self.input,
            output=self.output,
        )

    def _history_failed(self, exc: OSError) -> None:
        message = (
            f"the input history cannot be kept in {cfgmod.repl_history_path()} ({exc.strerror or exc}); "
            "this session keeps it in memory"
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.dim(message)
            return
        # the prompt is on the screen while history is read or written: print above it, not through it
        self._warning = run_in_terminal(lambda: self.dim(message))  # kept: a task nobody holds may be collected

    def banner(self) -> None:
        """The first lines of a session: the model, and how to get help and leave."""
        self.dim(f"llmspell chat · {self.conv.model} · /help for commands, Ctrl-D or /bye to leave")
        if self.toolset is not None:
            self.dim(f"tools: {', '.join(self.toolset.registry.names())} (/tools lists them, /tools off stops them)")

    async def run(self) -> int:
        """The interactive loop, until Ctrl-D or /bye."""
        self.session = self.make_session()
        self._names_task = asyncio.create_task(self._load_names())
        self.banner()
        try:
            while True:
                try:
                    line = await self.session.prompt_async(VOTE_PROMPT if arena_waiting(self) else PROMPT)
                except KeyboardInterrupt:
                    continue  # Ctrl-C at the prompt clears the line
                except EOFError:
                    break
                keep_going = await self.guarded(self.handle(line), default=True)
                if not keep_going:
                    break
        finally:
            if self._names_task is not None:
                self._names_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._names_task
        return 0

    async def run_piped(self, text: str) -> int:
        """Answer standard input once (no prompt UI); exit code 1 on an error, 130 when interrupted."""
        text = text.strip()
        if not text:
            self.error("no prompt on standard input; pipe one in, e.g. echo hi | llmspell chat MODEL")
            return 2
        if self.model_error:
            return 1
        outcome = await self.guarded(self.stream_turn(text), default="interrupted")
        return {"done": 0, "interrupted": 130}.get(outcome, 1)

    @contextlib.contextmanager
    def _sigint_cancels(self, task: asyncio.Task[Any]) -> Iterator[None]:
        """While ``task`` runs, Ctrl-C (SIGINT) cancels it instead of ending the program."""
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            self.interrupted = True
            self.interrupts += 1
            task.cancel()

        try:
            loop.add_signal_handler(signal.SIGINT, interrupt)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no signals here
            yield
            return
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    async def guarded(self, coro: Coroutine[Any, Any, T], default: T) -> T:
        """Run one action so that Ctrl-C cancels it (not the session) and no failure shows a traceback."""
        self.interrupted = False
        task = asyncio.ensure_future(coro)
        self._action = task
        with self._sigint_cancels(task):
            try:
                return await task
            except asyncio.CancelledError:
                if not self.interrupted:
                    raise  # the session itself is being cancelled, not by Ctrl-C
                self.dim("interrupted")
            except LLMSpellError as exc:
                self.error(exc)
            except Exception as exc:  # a bug must not end the session: one line, and the debug switch
                if os.environ.get("LLMSPELL_DEBUG"):
                    raise
                self.error(f"internal error: {type(exc).__name__}: {exc} (set LLMSPELL_DEBUG=1 for the traceback)")
        return default

    async def handle(self, line: str) -> bool:
        """One line typed at the prompt; False ends the session."""
        stripped = line.strip()
        if not stripped:
            return True
        if stripped.startswith("/") and not stripped.startswith("//"):
            return await self.command(stripped)
        if arena_waiting(self):
            await arena_vote(self, stripped)
            return True
        text = prompt_text(line)
        if text.startswith("//"):
            text = text[1:]  # "//" sends a message that starts with a slash
        if text:
            await self.answer(text)
        return True

    def lookup(self, name: str) -> Command | None:
        """The command called ``name`` (or one of its aliases)."""
        return self.commands.get(self._aliases.get(name, name))

    async def command(self, line: str) -> bool:
        """Run a slash command; unknown ones get one line saying what exists."""
        name, _, arg = line.partition(" ")
        if "\n" in name:
            name, _, rest = name.partition("\n")
            arg = rest + (" " + arg if arg else "")
        cmd = self.lookup(name.lower())
        if cmd is None:
            names = [*self.commands, *self._aliases]
            close = difflib.get_close_matches(name.lower(), names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            self.error(f"unknown command {name}; {hint}/help lists the commands")
            return True
        return await cmd.handler(self, arg.strip())

    # ----- answers -------------------------------------------------------------------------------------

    async def answer(self, text: str) -> None:
        """Send ``text`` to the model (or, after /compare, to several models in turn; in /arena, to a blind round)."""
        if self.arena is not None:
            await arena_play(self, text)
            return
        if self.compare_next:
            specs, self.compare_next = self.compare_next, None
            await self.compare(specs, text)
            return
        # sent even when the model could not be used at start: the backend may be back, and if not the prompt
        # is kept with its failed answer, as in every face
        await self.stream_turn(text)

    async def stream_turn(self, text: str) -> str:
        """Stream one answer of this conversation to the screen and record it; 'done', 'interrupted' or 'error'."""
        self._view = None
        turn = self.chat.send(text)
        try:
            async for chunk in turn:
                self._feed(chunk.text)
                # a stream with tokens already queued never suspends, so a Ctrl-C would wait for the whole
                # backlog to be printed (a slow terminal falls behind the engine): let it in after each token
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            if not self._take_back_interrupt():
                raise
        except LLMSpellError:
            pass  # recorded by the turn; reported below, once, after the partial answer
        finally:
            await self._close_stream(turn)
            self._end_view()
        result = self.chat.result(turn)
        if result.context_note:
            self.dim(f"[{result.context_note}]")
        shown = result.stats is not None and result.state == "done" and not self.quiet
        where = await self.ran_on(result.model) if shown else ""
        steps = getattr(turn, "steps", 0)
        calls = len(getattr(turn, "results", ()))
        tools = f"{calls} tool call{'s' * (calls != 1)} in {steps} steps" if calls or steps > 1 else ""
        return self._report(result.state, result.stats, result.error, where, tools)

    def _take_back_interrupt(self) -> bool:
        """After a cancellation: True, with the cancel undone, when it was Ctrl-C ending only the running answer
        (the session goes on); False when the session itself is being cancelled."""
        if not self.interrupted:
            return False
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return True

    async def ran_on(self, spec: str) -> str:
        """The backend or endpoint that answers ``spec``; "" when it cannot be told."""
        return (await where_it_runs(self.hub, spec, _RAN_ON_WAIT))[0]

    def _report(self, state: str, stats: Stats | None, error: str | None, where: str = "", tools: str = "") -> str:
        """The line under an answer: its error, its state note, or its numbers and where it ran; the outcome as a
        word."""
        if error is not None:
            self.error(error)
            return "error"
        if state != "done":
            self.dim(f"[{state_note(state)}: the partial answer is kept]")
            return "interrupted"
        if not self.quiet and stats is not None:
            # Stats.summary says when the counts were made here (a server that sent no usage)
            line = f"{stats.summary()} · ran on {where}" if where else stats.summary()
            self.dim(f"{line} · {tools}" if tools else line)
        return "done"

    async def _close_stream(self, stream: Turn | AsyncGenerator[Any, None]) -> None:
        """Close an answer's stream and wait for the close to finish, even through another Ctrl-C."""
        # closing is what records the answer as finished: a second Ctrl-C that cut it short would leave the
        # stored answer "streaming" for good (a network backend's close takes a while)
        closing = asyncio.ensure_future(stream.aclose())
        cancelled_from_outside = False
        while not closing.done():
            before = self.interrupts
            try:
                await asyncio.shield(closing)
            except asyncio.CancelledError:
                if closing.cancelled():
                    raise
                current = asyncio.current_task()
                if self.interrupts > before and current is not None:
                    current.uncancel()  # another Ctrl-C: this answer is already stopping
                else:
                    cancelled_from_outside = True
        closing.result()
        if cancelled_from_outside:
            raise asyncio.CancelledError

    async def compare(self, specs: list[str], text: str) -> None:
        """Send one prompt to several models, one after the other (Session.compare: each answers its own copy of
        this conversation, saved as its own conversation)."""
        rows: list[tuple[str, Stats | None, str]] = []
        view = None
        stream = self.chat.compare(specs, text, parallel=False)
        try:
            async for event in stream:
                m = event.metrics
                if event.kind == "start":
                    self.console.rule(Text(specs[event.index], style="bold"))
                    view = make_view(self.console, markdown=self.markdown and self.conv.options.format is None)
                    continue
                if view is not None:
                    view.feed(event.text)
                if event.kind in ("done", "error"):
                    if view is not None:
                        view.close()
                        view = None
                    where = await self.ran_on(specs[event.index]) if m.stats is not None and not self.quiet else ""
                    outcome = self._report(m.status if m.status != "error" else "failed", m.stats, m.error, where)
                    note = self.chat.forks[event.index].id[:8] if outcome == "done" else outcome
                    rows.append((specs[event.index], m.stats if outcome == "done" else None, note))
                await asyncio.sleep(0)  # let a Ctrl-C in between tokens, as in stream_turn
        except asyncio.CancelledError:
            if not self._take_back_interrupt():
                raise
        finally:
            await self._close_stream(stream)
            if view is not None:
                view.close()
        if len(rows) < len(specs):
            self.dim("[interrupted: the partial answer is kept]")
            done = {r[0] for r in rows}
            rows += [(spec, None, "interrupted") for spec in specs if spec not in done][:1]
        self.console.rule(Text("compare", style="bold"))
        width = max(len(r[0]) for r in rows)
        for spec, stats, note in rows:
            if stats is None:
                self.say(f"{spec:<{width}}  {note}")
            else:
                # "≈": the server sent no usage, so the tokens were counted here
                tokens = f"{'≈' if stats.estimated else ''}{stats.generated_tokens}"
                self.say(
                    f"{spec:<{width}}  TTFT {stats.time_to_first_token * 1000:6.0f} ms  "
                    f"{stats.generation_tokens_per_s:6.1f} tok/s  {tokens:>5} tokens  "
                    f"/load {note}"
                )
        self.dim("each answer is saved as a conversation: /load ID continues with that model")

    # ----- showing conversations --------------------------------------------------------------------

    def _replay(self, conv: Conversation) -> None:
        self.dim(f"conversation {conv.id[:8]} · {conv.title or 'untitled'} · {conv.model}")
        if conv.system:
            self.dim(f"system: {conv.system}")
        for e in conv.entries:
            if e.role == "user":
                self.console.print(Text(PROMPT + e.content, style="bold"), soft_wrap=True)
            elif e.role == "assistant":
                if e.content or e.state != "done":
                    view = make_view(self.console, markdown=self.markdown)
                    view.feed(e.content)
                    view.close()
                    if e.state != "done":
                        self.dim(f"[{state_note(e.state)}]")  # a failed answer is not an interrupted one
                for call in e.tool_calls:
                    self.dim(f"→ {call_line(call)}")
            elif e.role == "tool":
                self.dim(f"  {tool_line(e)}")
