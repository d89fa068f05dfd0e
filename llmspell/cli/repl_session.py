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
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import has_focus
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output
from rich.console import Console
from rich.text import Text

from llmspell import config as cfgmod
from llmspell.chat import Conversation, Turn
from llmspell.cli.repl_render import make_view
from llmspell.errors import InvalidOptions, LLMSpellError
from llmspell.hub import Hub
from llmspell.options import help_lines
from llmspell.session import Session, error_text, model_names, state_note
from llmspell.store import Store
from llmspell.types import Options, Stats, parse_option_value, parse_option_words, read_format

T = TypeVar("T")

PROMPT = ">>> "
CONTINUATION = "... "
FENCE = '"""'
#: settings of the face itself that /set accepts next to the core's options
DISPLAY_SETTINGS = {"quiet": "hide the stats line after answers", "markdown": "render answers as Markdown"}
_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}


@dataclass(frozen=True)
class Command:
    """One slash command: its handler, how to call it, and what it does."""

    name: str
    usage: str
    help: str
    handler: Callable[[Repl, str], Awaitable[bool]]
    aliases: tuple[str, ...] = ()


def _age(ts: float) -> str:
    seconds = max(time.time() - ts, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


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
        if cmd.name in ("/model", "/compare"):
            choices = self.repl.model_names
        elif cmd.name == "/set" and " " not in arg:
            choices = [*Options.names(), *DISPLAY_SETTINGS]
        elif cmd.name == "/load" and " " not in arg:
            choices = self.repl.saved_titles()
        elif cmd.name == "/json" and " " not in arg:
            choices = ["off"]
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

    async def run(self) -> int:
        """The interactive loop, until Ctrl-D or /bye."""
        self.session = self.make_session()
        self._names_task = asyncio.create_task(self._load_names())
        self.banner()
        try:
            while True:
                try:
                    line = await self.session.prompt_async(PROMPT)
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
        outcome = await self.guarded(self.stream_turn(self.conv, text), default="interrupted")
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
        """Send ``text`` to the model (or, after /compare, to several models in turn)."""
        if self.compare_next:
            specs, self.compare_next = self.compare_next, None
            await self.compare(specs, text)
            return
        # sent even when the model could not be used at start: the backend may be back, and if not the prompt
        # is kept with its failed answer, as in every face
        await self.stream_turn(self.conv, text)

    async def stream_turn(self, conv: Conversation, text: str) -> str:
        """Stream one answer to the screen and record it; 'done', 'interrupted' or 'error'."""
        self.chat.conv = conv
        view = make_view(self.console, markdown=self.markdown and conv.options.format is None)
        turn = self.chat.send(text)
        try:
            async for chunk in turn:
                view.feed(chunk.text)
                # a stream with tokens already queued never suspends, so a Ctrl-C would wait for the whole
                # backlog to be printed (a slow terminal falls behind the engine): let it in after each token
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            # Ctrl-C ends only this answer: the session goes on, so the cancellation is consumed here
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
        except LLMSpellError:
            pass  # recorded by the turn; reported below, once, after the partial answer
        finally:
            await self._close_stream(turn)
            view.close()
        result = self.chat.result(turn)
        return self._report(result.state, result.stats, result.error)

    def _report(self, state: str, stats: Stats | None, error: str | None) -> str:
        """The line under an answer: its error, its state note, or its numbers; the outcome as a word."""
        if error is not None:
            self.error(error)
            return "error"
        if state != "done":
            self.dim(f"[{state_note(state)}: the partial answer is kept]")
            return "interrupted"
        if not self.quiet and stats is not None:
            self.dim(stats.summary())
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
                    outcome = self._report(m.status if m.status != "error" else "failed", m.stats, m.error)
                    fork = self.chat.forks[event.index] if event.index < len(self.chat.forks) else None
                    note = fork.id[:8] if outcome == "done" and fork is not None else outcome
                    rows.append((specs[event.index], m.stats if outcome == "done" else None, note))
                await asyncio.sleep(0)  # let a Ctrl-C in between tokens, as in stream_turn
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
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
                self.say(
                    f"{spec:<{width}}  TTFT {stats.time_to_first_token * 1000:6.0f} ms  "
                    f"{stats.generation_tokens_per_s:6.1f} tok/s  {stats.generated_tokens:4d} tokens  "
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
            elif e.role == "assistant" and (e.content or e.state != "done"):
                view = make_view(self.console, markdown=self.markdown)
                view.feed(e.content)
                view.close()
                if e.state != "done":
                    self.dim(f"[{state_note(e.state)}]")  # a failed answer is not an interrupted one


async def _cmd_help(repl: Repl, arg: str) -> bool:
    width = max(len(c.usage) for c in repl.commands.values())
    for cmd in repl.commands.values():
        aliases = f" (or {', '.join(cmd.aliases)})" if cmd.aliases else ""
        repl.say(f"  {cmd.usage:<{width}}  {cmd.help}{aliases}")
    repl.dim(
        'Alt-Enter or a """ block for several lines · Up/Ctrl-R for history · Tab completes · '
        "Ctrl-C stops an answer · Ctrl-D leaves · //text sends a message starting with /"
    )
    return True


async def _cmd_bye(repl: Repl, arg: str) -> bool:
    return False


async def _cmd_model(repl: Repl, arg: str) -> bool:
    if not arg:
        state = f" (cannot be used: {repl.model_error})" if repl.model_error else ""
        repl.say(f"model: {repl.conv.model}{state}")
        repl.dim("change it with /model SPEC, e.g. /model smollm2:135m (/models lists them)")
        return True
    spec = arg.split()[0]
    try:
        await repl.chat.switch_model(spec)
    except LLMSpellError as exc:
        repl.error(exc)
        return True
    repl.model_error = None
    repl.say(f"now talking to {spec}")
    return True


async def _cmd_models(repl: Repl, arg: str) -> bool:
    models, failed = await repl.hub.list_all()
    if not models:
        repl.say("no models found; see llmspell model available")
    width = max((len(f"{m.name}@{m.backend}") for m in models), default=0)
    for m in models:
        name = f"{m.name}@{m.backend}"
        size = f"{m.size_bytes / 1e6:,.0f} MB" if m.size_bytes else "-"
        mark = "*" if repl.conv.model in (m.name, name) else " "
        repl.say(f"{mark} {name:<{width}}  {size:>9}  {m.quantization or '-':<7} {m.source}")
    for st in failed:
        repl.dim(f"{st.backend} not listed: {st.error}")
    names = {*repl.model_names, *(m.name for m in models), *(f"{m.name}@{m.backend}" for m in models)}
    repl.model_names = sorted(names)
    return True


async def _cmd_status(repl: Repl, arg: str) -> bool:
    for st in await repl.hub.status_all(timeout=5.0):
        if st.ready:
            facts = [f for f in (st.version, st.device, f"{st.model_count} models") if f]
            facts.append(f"loaded: {', '.join(st.loaded) or 'none'}")
            repl.say(f"{st.backend}: ready · {' · '.join(facts)}")
        else:
            repl.say(f"{st.backend}: not ready · {st.error or 'unknown reason'}")
        for note in st.notes:
            repl.dim(f"  note: {note}")
    return True


async def _cmd_show(repl: Repl, arg: str) -> bool:
    conv = repl.conv
    try:
        info = await repl.hub.info(conv.model)
    except LLMSpellError as exc:
        repl.say(f"model:        {conv.model}")
        repl.error(exc)
    else:
        rows = [
            ("model", f"{info.name}@{info.backend}"),
            ("family", info.family),
            ("parameters", info.parameters),
            ("quantization", info.quantization),
            ("context", info.context_length),
            ("size", f"{info.size_bytes / 1e6:,.0f} MB" if info.size_bytes else None),
            ("file", info.location),
            ("chat template", "yes" if info.has_chat_template else "no (base model: plain completion only)"),
        ]
        for label, value in rows:
            if value not in (None, ""):
                repl.say(f"{label + ':':15}{value}")
    repl.say(f"{'conversation:':15}{conv.id[:8]} · {conv.title or 'untitled'} · {len(conv.entries)} messages")
    repl.say(f"{'system:':15}{conv.system or '(none)'}")
    opts = conv.options.to_dict()
    shown = ", ".join(f"{k}={v}" for k, v in opts.items() if k != "format") or "backend defaults"
    repl.say(f"{'options:':15}{shown}")
    if conv.options.format is not None:
        repl.say(f"{'json:':15}{conv.options.format}")
    if repl.compare_next:
        repl.say(f"{'compare next:':15}{', '.join(repl.compare_next)}")
    repl.say(f"{'display:':15}quiet={'on' if repl.quiet else 'off'}, markdown={'on' if repl.markdown else 'off'}")
    return True


async def _cmd_stats(repl: Repl, arg: str) -> bool:
    from llmspell.cli.main import format_stats

    answers = [e for e in repl.conv.entries if e.role == "assistant" and e.stats is not None]
    if not answers:
        repl.say("no answer yet in this conversation")
        return True
    last = answers[-1]
    repl.say(f"last answer ({last.model or repl.conv.model}):")
    repl.say(format_stats(last.stats))  # type: ignore[arg-type]
    total = sum(e.stats.generated_tokens for e in answers if e.stats)
    repl.dim(f"{len(answers)} answers, {total} tokens generated in this conversation")
    return True


async def _cmd_system(repl: Repl, arg: str) -> bool:
    if not arg:
        repl.say(f"system: {repl.conv.system or '(none)'}")
        repl.dim("set it with /system TEXT; /system - removes it")
        return True
    repl.conv.system = None if arg == "-" else arg
    if repl.conv.entries:
        repl.store.save(repl.conv)
    repl.say("system prompt removed" if repl.conv.system is None else "system prompt set")
    return True


def _switch(value: str, name: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise InvalidOptions(f"{name} takes on or off, not {value!r}", hint=f"e.g. /set {name} on")


async def _cmd_set(repl: Repl, arg: str) -> bool:
    if not arg:
        current = repl.conv.options.to_dict()
        for name, help_text in help_lines():
            value = current.get(name)
            shown = "|".join(value) if isinstance(value, tuple) else value if value is not None else "(default)"
            line = Text(f"  {name:<15}{shown!s:<12} ")
            line.append(help_text, style="dim")
            repl.console.print(line, soft_wrap=True)
        repl.say(f"  {'quiet':<15}{'on' if repl.quiet else 'off'}")
        repl.say(f"  {'markdown':<15}{'on' if repl.markdown else 'off'}")
        repl.dim("change one with /set KEY VALUE (VALUE default = back to the backend's default)")
        return True
    key, _, value = arg.partition(" ")
    if "=" in key:
        # key=value words, as the other faces take them: /set temperature=0 seed=1
        values = parse_option_words(arg)
        repl.conv.options = repl.conv.options.with_values(values)
        repl.say(f"set {', '.join(values)}")
    else:
        name = key.strip().lower().replace("-", "_")
        if name in DISPLAY_SETTINGS:
            on = _switch(value, name)
            if name == "quiet":
                repl.quiet = on
            else:
                repl.markdown = on
            repl.say(f"{name} {'on' if on else 'off'}")
            return True
        if name not in Options.names():
            # checked before the value, so "/set foo" names the unknown option rather than asking for a value
            raise InvalidOptions(
                f"unknown option {name!r}", hint=f"valid options: {', '.join([*Options.names(), *DISPLAY_SETTINGS])}"
            )
        if not value.strip():
            raise InvalidOptions(f"/set {name} needs a value", hint=f"e.g. /set {name} default (or see /set)")
        parsed = parse_option_value(name, value)
        repl.conv.options = repl.conv.options.with_values({name: parsed})
        shown = getattr(repl.conv.options, name)
        repl.say(f"set {name} = {shown if shown not in (None, ()) else '(default)'}")
    if repl.conv.entries:
        repl.store.save(repl.conv)
    return True


async def _cmd_json(repl: Repl, arg: str) -> bool:
    if arg.lower() == "off":
        repl.conv.options = repl.conv.options.with_values({"format": None})
        repl.say("answers are free text again")
    else:
        schema = await asyncio.to_thread(read_format, arg or "json")
        repl.conv.options = repl.conv.options.with_values({"format": parse_option_value("format", schema)})
        what = "any JSON value" if repl.conv.options.format == "json" else "the JSON schema"
        repl.say(f"answers must now be {what} (/json off to stop)")
    if repl.conv.entries:
        repl.store.save(repl.conv)
    return True


async def _cmd_reset(repl: Repl, arg: str) -> bool:
    old = repl.chat.restart()
    if old.entries:
        repl.say(f"new conversation; the previous one is saved: /load {old.id[:8]}")
    else:
        repl.say("new conversation")
    return True


async def _cmd_save(repl: Repl, arg: str) -> bool:
    if not arg:
        raise InvalidOptions("/save needs a name", hint="e.g. /save rust questions")
    repl.conv.title = arg
    if not repl.conv.entries:
        # storing a row with no messages would fill /history with empty conversations
        repl.say(f"nothing to save yet; this conversation will be saved as {arg!r} with its first message")
        return True
    repl.store.save(repl.conv)
    repl.say(f"saved as {arg!r} (id {repl.conv.id[:8]}); reopen with /load {arg} or llmspell chat --resume {arg}")
    return True


async def _cmd_load(repl: Repl, arg: str) -> bool:
    if not arg:
        raise InvalidOptions("/load needs a title or an id", hint="/history lists the saved conversations")
    conv = repl.chat.open(arg)
    repl._replay(conv)
    await repl._check_current_model()
    return True


async def _cmd_history(repl: Repl, arg: str) -> bool:
    rows = repl.store.list(20)
    if not rows:
        repl.say("no saved conversations yet")
        return True
    for row in rows:
        mark = "*" if row.id == repl.conv.id else " "
        repl.say(f"{mark} {row.id[:8]}  {_age(row.updated):>11}  {row.messages:3d} msgs  {row.model:<18} {row.title}")
    repl.dim("reopen one with /load ID or /load TITLE")
    return True


async def _cmd_export(repl: Repl, arg: str) -> bool:
    if not arg:
        raise InvalidOptions("/export needs a file name", hint="e.g. /export chat.md")
    path = repl.chat.export(arg)
    repl.say(f"wrote {path} ({len(repl.conv.entries)} messages)")
    return True


async def _cmd_compare(repl: Repl, arg: str) -> bool:
    specs = arg.split()
    if not specs:
        raise InvalidOptions("/compare needs models", hint="e.g. /compare smollm2:135m gemma3:270m")
    if specs == ["off"]:
        repl.compare_next = None
        repl.say("compare cancelled")
        return True
    if len(specs) == 1:
        specs = [repl.conv.model, *specs]
    repl.compare_next = specs
    repl.say(f"the next prompt goes to {', '.join(specs)}, one after the other")
    return True


_COMMANDS = (
    Command("/model", "/model SPEC", "talk to another model", _cmd_model),
    Command("/models", "/models", "list the models of every backend", _cmd_models),
    Command("/status", "/status", "each backend: ready or not, and why", _cmd_status),
    Command("/system", "/system TEXT", "set the system prompt (- removes it)", _cmd_system),
    Command("/set", "/set KEY VALUE", "set an option (temperature, seed, max_tokens, ...; /set lists them)", _cmd_set),
    Command("/show", "/show", "model info and the current settings", _cmd_show),
    Command("/stats", "/stats", "the last answer's timings in detail", _cmd_stats),
    Command("/reset", "/reset", "start a new conversation", _cmd_reset, ("/clear",)),
    Command("/save", "/save NAME", "name this conversation", _cmd_save),
    Command("/load", "/load NAME|ID", "reopen a saved conversation", _cmd_load),
    Command("/history", "/history", "list saved conversations", _cmd_history),
    Command("/export", "/export FILE.md|FILE.json", "write this conversation as Markdown or JSON", _cmd_export),
    Command("/compare", "/compare SPEC...", "send the next prompt to several models", _cmd_compare),
    Command("/json", "/json [SCHEMA|off]", "make answers JSON (matching SCHEMA, or @file.json)", _cmd_json),
    Command("/help", "/help", "this list", _cmd_help, ("/?",)),
    Command("/bye", "/bye", "leave", _cmd_bye, ("/exit", "/quit")),
)
