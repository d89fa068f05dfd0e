"""The same events through each face (the REPL, the Jupyter kernel, the TUI), on the real engine: each face
must store and show the same thing, because each only reads input and draws what its Session decided.

The events: switching to a model that is not downloaded, an answer, an answer stopped mid-stream, an export,
a compare that includes a model that cannot be used, and an answer that fails (a stored conversation whose
backend cannot be reached). Each face reports a record; the records must be the one expected for all.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import SMOL, press_now

from llmspell.chat import Conversation, Entry
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.types import Options

#: a catalog model no test downloads
ABSENT = "qwen2.5:0.5b"
REFUSAL = "qwen2.5:0.5b@llamacpp is not downloaded; pull it with: llmspell model pull qwen2.5:0.5b@llamacpp"
UNREACHABLE = "Ollama is not reachable at http://127.0.0.1:9"
QUICK = Options(temperature=0, seed=1, max_tokens=24)
LONG = "Write a very long story about a dragon, in many chapters."


class Face:
    """One face driven as a user would; each step returns what the face showed for it."""

    name = ""

    async def switch(self, model: str) -> str:
        raise NotImplementedError

    async def ask(self, text: str) -> str:
        raise NotImplementedError

    async def ask_and_stop(self, text: str) -> str:
        """Send a prompt with room for a long answer and stop it once text is arriving."""
        raise NotImplementedError

    async def export(self, path: Path) -> str:
        raise NotImplementedError

    async def compare(self, models: list[str], text: str) -> str:
        raise NotImplementedError

    async def open(self, conv_id: str) -> str:
        raise NotImplementedError

    def model(self) -> str:
        raise NotImplementedError

    def conv_id(self) -> str:
        raise NotImplementedError


# ----- the REPL: in this process, keys through a pipe, output captured ------------------------------------------


class _Recording(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[Callable[[str], None]] = []

    def write(self, s: str) -> int:
        for hook in self.hooks:
            hook(s)
        return super().write(s)


class ReplFace(Face):
    name = "repl"

    def __init__(self, hub: Hub, stack: contextlib.ExitStack) -> None:
        from prompt_toolkit.history import InMemoryHistory
        from prompt_toolkit.input import create_pipe_input
        from prompt_toolkit.output import DummyOutput
        from rich.console import Console

        from llmspell.cli.repl_session import Repl

        self.pipe = stack.enter_context(create_pipe_input())
        self.file = _Recording()
        console = Console(file=self.file, width=120, color_system=None, force_terminal=False, highlight=False)
        store = Store()
        stack.callback(store.close)
        self.repl = Repl(hub, store, console=console, input=self.pipe, output=DummyOutput(), history=InMemoryHistory())
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> None:
        await self.repl.open(SMOL, options=QUICK)
        self.task = asyncio.create_task(self.repl.run())
        await self._until(self._at_prompt)

    def _at_prompt(self) -> bool:
        session = self.repl.session
        return session is not None and session.app.is_running

    async def _until(self, cond: Callable[[], bool]) -> None:
        for _ in range(6_000):  # a bound of two minutes, polled
            if cond():
                return
            assert self.task is None or not self.task.done(), self.file.getvalue()[-2000:]
            await asyncio.sleep(0.02)
        raise AssertionError(f"the REPL never got there:\n{self.file.getvalue()[-2000:]}")

    async def line(self, text: str, *expect: str) -> str:
        """Type a line; wait for any of ``expect`` in what follows, then for the prompt."""
        start = len(self.file.getvalue())
        self.pipe.send_text(text + "\r")
        await self._until(lambda: any(e in self.file.getvalue()[start:] for e in expect))
        await self._until(self._at_prompt)
        return self.file.getvalue()[start:]

    async def switch(self, model: str) -> str:
        return await self.line(f"/model {model}", "\n")

    async def ask(self, text: str) -> str:
        return await self.line(text, "tok/s", "error:")

    async def ask_and_stop(self, text: str) -> str:
        await self.line("/set max_tokens 3000", "set max_tokens")
        start = len(self.file.getvalue())
        sent = False

        def stop(_s: str) -> None:
            nonlocal sent
            if not sent and len(self.file.getvalue()) - start > len(text) + 60:
                sent = True
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends while an answer streams

        self.file.hooks.append(stop)
        try:
            shown = await self.line(text, "[interrupted")
        finally:
            self.file.hooks.remove(stop)
        await self.line("/set max_tokens 24", "set max_tokens")
        return shown

    async def export(self, path: Path) -> str:
        return await self.line(f"/export {path}", "wrote")

    async def compare(self, models: list[str], text: str) -> str:
        await self.line(f"/compare {' '.join(models)}", "the next prompt goes to")
        return await self.line(text, "/load ID continues")

    async def open(self, conv_id: str) -> str:
        return await self.line(f"/load {conv_id}", "conversation ")

    def model(self) -> str:
        return self.repl.conv.model

    def conv_id(self) -> str:
        return self.repl.conv.id

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


# ----- the kernel: a real kernel process through jupyter_client --------------------------------------------------


class KernelFace(Face):
    name = "kernel"

    def __init__(self, session: Any) -> None:
        self.session = session

    async def run(self, code: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.session.run, code, **kwargs)

    @staticmethod
    def shown(ran: Any) -> str:
        parts = [ran.stdout]
        parts += [c["text"] for c in ran.of("stream") if c["name"] == "stderr"]
        for kind in ("display_data", "update_display_data", "execute_result"):
            parts += [c["data"].get("text/plain", "") for c in ran.of(kind)]
        parts += ["\n".join(c["traceback"]) for c in ran.of("error")]
        return "\n".join(parts)

    async def start(self) -> None:
        await self.run(f"%model {SMOL}\n%set temperature=0 seed=1 max_tokens=24")

    async def switch(self, model: str) -> str:
        return self.shown(await self.run(f"%model {model}"))

    async def ask(self, text: str) -> str:
        return self.shown(await self.run(text))

    async def ask_and_stop(self, text: str) -> str:
        updates = 0

        def on_output(msg: dict[str, Any]) -> None:
            nonlocal updates
            if msg["msg_type"] == "update_display_data":
                updates += 1
                if updates == 3:  # the stop button, from another thread than the one reading iopub
                    threading.Thread(target=self.session.km.interrupt_kernel).start()

        await self.run("%set max_tokens=3000")
        ran = await self.run(text, on_output=on_output)
        await self.run("%set max_tokens=24")
        return self.shown(ran)

    async def export(self, path: Path) -> str:
        return self.shown(await self.run(f"%save {path}"))

    async def compare(self, models: list[str], text: str) -> str:
        return self.shown(await self.run(f"%compare {' '.join(models)}\n{text}"))

    async def open(self, conv_id: str) -> str:
        return self.shown(await self.run(f"%history open {conv_id}"))

    def _history(self) -> tuple[str, str]:
        md = self.session.run("%history").of("display_data")[0]["data"]["text/markdown"]
        found = re.search(r"conversation `([0-9a-f]+)` · model `([^`]+)`", md)
        assert found, md
        return found.group(1), found.group(2)

    def model(self) -> str:
        return self._history()[1]

    def conv_id(self) -> str:
        return self._history()[0]


# ----- the TUI: the real app through App.run_test ---------------------------------------------------------------


class TuiFace(Face):
    name = "tui"

    def __init__(self, app: Any, pilot: Any) -> None:
        self.app, self.pilot = app, pilot

    @property
    def screen(self) -> Any:
        return self.app.screen

    async def until(self, cond: Callable[[], bool]) -> None:
        for _ in range(4000):
            if cond():
                return
            await self.pilot.pause(0.05)
        raise AssertionError("the TUI never got there")

    def shown_since(self, pane: Any, notes_before: int, widgets_before: int) -> str:
        notes = [str(n.message) for n in list(self.app._notifications)][notes_before:]
        widgets = [str(w.render()) for w in pane.log_view.query("Static")][widgets_before:]
        return "\n".join([*notes, *widgets, str(pane.stats_line.render())])

    def _marks(self, pane: Any) -> tuple[int, int]:
        return len(self.app._notifications), len(pane.log_view.query("Static"))

    async def start(self) -> None:
        self.screen.active_pane.conv.options = QUICK

    async def switch(self, model: str) -> str:
        pane = self.screen.active_pane
        marks = self._marks(pane)
        pane.model_input.focus()
        pane.model_input.value = model
        await self.pilot.press("enter")
        await self.until(lambda: len(self.app._notifications) > marks[0] or pane.conv.model == model)
        return self.shown_since(pane, *marks)

    async def _send(self, text: str, *, stop: bool = False) -> str:
        screen, pane = self.screen, self.screen.active_pane
        marks = self._marks(pane)
        screen.prompt.focus()
        screen.prompt.text = text
        before = screen._generation
        press_now(self.app, "enter")
        await self.until(lambda: screen._generation is not before)
        if stop:
            await self.until(lambda: len(pane.answer_text) > 60 or not screen.generating)
            press_now(self.app, "escape")
        await self.until(lambda: not screen.generating)
        await self.pilot.pause(0.01)
        return self.shown_since(pane, *marks)

    async def ask(self, text: str) -> str:
        return await self._send(text)

    async def ask_and_stop(self, text: str) -> str:
        pane = self.screen.active_pane
        pane.conv.options = pane.conv.options.with_values({"max_tokens": 3000})
        shown = await self._send(text, stop=True)
        pane.conv.options = pane.conv.options.with_values({"max_tokens": 24})
        return shown

    async def export(self, path: Path) -> str:
        from llmspell_tui.screens.history import HistoryScreen

        conv_id = self.conv_id()
        await self.pilot.press("f3")
        await self.until(lambda: isinstance(self.screen, HistoryScreen))
        before = len(self.app._notifications)
        self.screen.export_to(conv_id, str(path))
        await self.until(lambda: len(self.app._notifications) > before)
        shown = "\n".join(str(n.message) for n in list(self.app._notifications)[before:])
        await self.pilot.press("f1")
        await self.until(lambda: not isinstance(self.screen, HistoryScreen))
        return shown

    async def compare(self, models: list[str], text: str) -> str:
        """The TUI's way: a pane per model, each continuing a copy of the conversation (a model refused at the
        pane's picker leaves no pane), the conversation's own pane closed (it stays in the history), then
        compare mode."""
        shown = []
        first = self.screen.active_pane
        for model in models:
            self.screen._set_active(first)
            await self.pilot.press("ctrl+n")
            await self.until(lambda: self.screen.active_pane is not first)
            pane = self.screen.active_pane
            shown.append(await self.switch(model))
            if pane.conv.model != model:
                await self.pilot.press("ctrl+w")
                await self.until(lambda p=pane: p not in self.screen.panes)
        self.screen._set_active(first)
        await self.pilot.press("ctrl+w")
        await self.until(lambda: first not in self.screen.panes)
        await self.pilot.press("ctrl+t")
        shown.append(await self._send(text))
        return "\n".join(shown)

    async def open(self, conv_id: str) -> str:
        pane = self.screen.active_pane
        marks = self._marks(pane)
        await self.screen.open_conversation(conv_id)
        await self.until(lambda: pane.conv.id == conv_id)
        return self.shown_since(pane, *marks)

    def model(self) -> str:
        return str(self.screen.active_pane.conv.model)

    def conv_id(self) -> str:
        return str(self.screen.active_pane.conv.id)


@contextlib.asynccontextmanager
async def running(name: str, hub: Hub, home: Path, models: Path, tmp_path: Path) -> AsyncIterator[Face]:
    """Start one face on the real hub (the kernel in its own process, with the same LLMSPELL_HOME)."""
    if name == "repl":
        with contextlib.ExitStack() as stack:
            face = ReplFace(hub, stack)
            try:
                await face.start()
                yield face
            finally:
                await face.close()
    elif name == "kernel":
        sys.path.insert(0, str(Path(__file__).parent / "kernel"))
        from kernel_session import kernel_env, start_kernel

        from llmspell_kernel.install import install

        prefix = tmp_path / "jupyter-prefix"
        install(prefix=str(prefix))
        session = await asyncio.to_thread(start_kernel, prefix, kernel_env(home, models))
        try:
            face = KernelFace(session)
            await face.start()
            yield face
        finally:
            await asyncio.to_thread(session.close)
    else:
        from llmspell_tui.app import create_app

        app = create_app(hub, Store())
        async with app.run_test(size=(160, 48)) as pilot:
            face = TuiFace(app, pilot)
            await face.start()
            yield face


@pytest.mark.parametrize("face_name", ["repl", "kernel", "tui"])
async def test_every_face_stores_and_shows_the_same_on_the_same_events(
    face_name: str, shared_models: Path, isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    hub = Hub(Config(keep_alive=300, num_ctx=2048))
    # kept from a time when Ollama ran: its next answer fails, as a backend going away does
    kept = Conversation(f"{SMOL}@ollama")
    store = Store()
    store.add(kept, Entry("user", "Hi"))
    store.add(kept, Entry("assistant", "Hello!", f"{SMOL}@ollama"))
    record: dict[str, Any] = {}
    try:
        async with running(face_name, hub, isolated_home, shared_models, tmp_path) as face:
            shown = await face.switch(ABSENT)
            record["refused"] = (REFUSAL in shown, face.model())

            await face.ask("Name the capital of France.")
            stopped = await face.ask_and_stop(LONG)
            main = store.load(face.conv_id())
            record["states"] = [e.state for e in main.entries]
            record["stopped"] = "interrupted" in stopped

            path = tmp_path / "chat.md"
            await face.export(path)
            record["export"] = path.read_text(encoding="utf-8") == store.load(main.id).to_markdown()

            history = [(e.role, e.content) for e in store.load(main.id).entries]
            shown = await face.compare([SMOL, ABSENT], "And of Italy?")
            copies = [c for row in store.list() if row.id not in (main.id, kept.id) for c in [store.load(row.id)]]
            record["compare"] = (
                REFUSAL in shown,
                sorted(
                    (c.model, [(e.role, e.content) for e in c.entries[: len(history)]] == history, c.entries[-1].state)
                    for c in copies
                ),
            )

            await face.open(kept.id)
            shown = await face.ask("Are you there?")
            record["failed"] = (UNREACHABLE in shown, [e.state for e in store.load(kept.id).entries])
    finally:
        await hub.close()
        store.close()

    assert record == {
        "refused": (True, SMOL),
        "states": ["done", "done", "done", "cancelled"],
        "stopped": True,
        "export": True,
        "compare": (True, [(SMOL, True, "done")]),
        "failed": (True, ["done", "done", "done", "failed"]),
    }
