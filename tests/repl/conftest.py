"""Fixtures that drive the chat REPL in-process: a real hub on the real models, a prompt_toolkit pipe
input for the keyboard and a dummy output for the prompt, and a captured console for what it prints."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.input.base import PipeInput
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from llmspell.cli.repl_session import Repl
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.types import Options

#: repeatable, short answers: what the tests assert must not depend on sampling
QUICK = Options(temperature=0, seed=1, max_tokens=24)


class RecordingFile(io.StringIO):
    """A console file that remembers each write, and can run a hook on it (to look at the REPL mid-answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.hooks: list[Callable[[str], None]] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        for hook in self.hooks:
            hook(s)
        return super().write(s)


class Driver:
    """One running REPL: type into it, wait for what it prints, read the conversation it keeps."""

    def __init__(self, repl: Repl, pipe: PipeInput, file: RecordingFile) -> None:
        self.repl = repl
        self.pipe = pipe
        self.file = file
        self.task: asyncio.Task[int] = asyncio.create_task(repl.run())

    @property
    def out(self) -> str:
        """Everything the REPL printed so far."""
        return self.file.getvalue()

    def type(self, keys: str) -> None:
        """Send keys as a terminal would (\\r is Enter, \\x1b\\r is Alt-Enter, \\x03 Ctrl-C, \\x04 Ctrl-D)."""
        self.pipe.send_text(keys)

    async def until(self, check: str | Callable[[], bool], *, after: int = 0, limit: float = 240.0) -> None:
        """Wait until ``check`` (text printed after offset ``after``, or a predicate) holds; a bound, not a timing."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        while not (check in self.out[after:] if isinstance(check, str) else check()):
            if self.task.done():
                raise AssertionError(f"the REPL ended early waiting for {check!r}:\n{self.out[-2000:]}")
            if loop.time() > end:
                raise AssertionError(f"never saw {check!r}:\n{self.out[-2000:]}")
            await asyncio.sleep(0.02)

    def at_prompt(self) -> bool:
        """True while the prompt is waiting for input."""
        session = self.repl.session
        return session is not None and session.app.is_running

    async def command(self, line: str, expect: str) -> str:
        """Type one line, wait for ``expect`` in what follows and for the next prompt; return what it printed."""
        start = len(self.out)
        self.type(line + "\r")
        await self.until(expect, after=start)
        await self.until(self.at_prompt)
        return self.out[start:]

    async def ended(self) -> int:
        """The exit code once the REPL has left."""
        return await asyncio.wait_for(self.task, 240)


@pytest.fixture
def terminal_console() -> Callable[[], Console]:
    """Make consoles that are terminals (so Markdown is drawn live), without colours, printing to a RecordingFile."""

    def make() -> Console:
        file = RecordingFile()
        return Console(file=file, width=100, height=30, force_terminal=True, color_system=None, highlight=False)

    return make


@pytest.fixture
async def hub(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hub]:
    """The real hub: embedded llama.cpp on the PyPI models, and Ollama at the dead address of the tests."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    h = Hub(Config(keep_alive=300, num_ctx=2048))
    yield h
    await h.close()


@pytest.fixture
async def start_repl(hub: Hub) -> AsyncIterator[Callable[..., Awaitable[Driver]]]:
    """Start REPLs on the real hub; each is stopped and its pipe and store closed when the test ends."""
    stack = contextlib.ExitStack()
    drivers: list[Driver] = []

    async def start(
        spec: str | None = "smollm2:135m",
        *,
        options: Options | None = QUICK,
        console: Console | None = None,
        raw: bool = False,
        quiet: bool = False,
        **kwargs: Any,
    ) -> Driver:
        """A REPL on ``spec``; ``console`` (on a RecordingFile) replaces the default, a non-terminal one."""
        pipe = stack.enter_context(create_pipe_input())
        if console is None:
            console = Console(file=RecordingFile(), width=100, color_system=None, force_terminal=False, highlight=False)
        file = console.file
        assert isinstance(file, RecordingFile), "the driver reads what the REPL printed from a RecordingFile"
        store = Store()
        stack.callback(store.close)
        repl = Repl(
            hub,
            store,
            console=console,
            input=pipe,
            output=DummyOutput(),
            history=kwargs.pop("history", None),
            raw=raw,
            quiet=quiet,
        )
        await repl.open(spec, options=options, **kwargs)
        driver = Driver(repl, pipe, file)
        drivers.append(driver)
        await driver.until(driver.at_prompt, limit=60)
        return driver

    yield start
    for d in drivers:
        if not d.task.done():
            d.task.cancel()
        with contextlib.suppress(BaseException):
            await d.task
    stack.close()
