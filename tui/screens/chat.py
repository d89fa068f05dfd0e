"""The chat screen: one to four panes side by side, one prompt, compare mode, live stats, Escape cancels."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events, on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import Worker

from llmspell.chat import Conversation
from llmspell.compare import StreamMetrics, Target, compare
from llmspell.errors import LLMSpellError
from llmspell.session import Session, error_text, model_names, where_it_runs
from llmspell_tui.widgets.pane import ChatPane
from llmspell_tui.widgets.prompt import PromptArea, SendsPrompts
from llmspell_tui.widgets.settings import PaneSettings, SettingsScreen
from llmspell_tui.widgets.status import BackendStatusBar, hold_status_checks
from llmspell_tui.widgets.tools_modals import ToolConfirmScreen, ToolsScreen

if TYPE_CHECKING:
    from llmspell.hub import Hub
    from llmspell.store import Store
    from llmspell.tools.base import Tool
    from llmspell.tools.loop import LoopEvent
    from llmspell.tools.toolset import ToolSet
    from llmspell.tools.turn import ToolSettings

MAX_PANES = 4


class ChatScreen(SendsPrompts, Screen[None]):
    """Side-by-side chats: type once, send to the focused pane or (compare mode) to every pane at once."""

    DEFAULT_CSS = """
    ChatScreen {
        layout: vertical;
    }
    ChatScreen > #panes {
        height: 1fr;
    }
    ChatScreen > #mode {
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    """

    # the footer shows what fits in 80 columns next to F1-F3 and the palette key; the rest is in the palette
    # (Ctrl+P) and the README's key table
    BINDINGS: ClassVar[list[BindingType]] = [
        # the prompt reads Enter and Escape itself (PromptArea); this binding is for the other widgets
        Binding("escape", "cancel", "Cancel", show=True, key_display="esc"),
        Binding("ctrl+n", "add_pane", "Add pane"),
        # priority: the prompt would take Ctrl+W as "delete word" (Ctrl+Backspace still does that)
        Binding("ctrl+w", "remove_pane", "Close pane", priority=True, show=False),
        Binding("ctrl+t", "toggle_compare", "Compare"),
        Binding("ctrl+o", "settings", "Settings"),
        Binding("ctrl+l", "pick_model", "Model", show=False),
        Binding("ctrl+r", "new_conversation", "New chat", show=False),
        # priority: the prompt's text area takes the function keys it does not know
        Binding("f6", "tools", "Tools", show=False, priority=True),
        Binding("alt+right", "focus_pane(1)", "Next pane", show=False),
        Binding("alt+left", "focus_pane(-1)", "Previous pane", show=False),
    ]

    #: send each prompt to every pane at once
    compare_mode: reactive[bool] = reactive(False)
    #: in compare mode, run the answers at once (True) or one after another
    parallel: reactive[bool] = reactive(True)
    #: every pane gets the same system prompt, options and seed
    same_settings: reactive[bool] = reactive(False)

    def __init__(self, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._active = 0
        self._suggestions: list[str] = []
        self._generation: Worker[None] | None = None
        #: the prompt of the run just started, until its worker's body begins (see action_cancel)
        self._unstarted_prompt: str | None = None
        self._pane_seq = 0
        #: the metrics of the last prompt's streams, in pane order (live while they run)
        self.last_metrics: list[StreamMetrics] = []
        #: one tool question on screen at a time, whichever pane asks
        self._asking = asyncio.Lock()

    # ----- wiring ------------------------------------------------------------------------

    @property
    def hub(self) -> Hub:
        """The app's hub (all backends)."""
        return self.app.hub  # type: ignore[attr-defined,no-any-return]

    @property
    def store(self) -> Store | None:
        """The app's conversation store."""
        return getattr(self.app, "store", None)

    def compose(self) -> ComposeResult:
        yield BackendStatusBar()
        yield Horizontal(id="panes")
        yield Static("", id="mode")
        yield PromptArea(id="prompt", soft_wrap=True, show_line_numbers=False)
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        await self.add_pane()
        self._show_mode()
        self.prompt.focus()
        self.load_models()

    @property
    def panes(self) -> list[ChatPane]:
        """The panes, left to right."""
        return list(self.query(ChatPane))

    @property
    def prompt(self) -> PromptArea:
        """The prompt input."""
        return self.query_one(PromptArea)

    @property
    def active_pane(self) -> ChatPane:
        """The pane the prompt goes to outside compare mode (the last one focused)."""
        panes = self.panes
        return panes[min(self._active, len(panes) - 1)]

    @property
    def generating(self) -> bool:
        """Whether answers are streaming now, or about to (a run whose worker has not started yet counts too)."""
        # not is_running: a worker is PENDING until it is started, and an Escape or a second Enter right after
        # the first one must see the run
        return self._generation is not None and not self._generation.is_finished

    def _set_active(self, pane: ChatPane) -> None:
        panes = self.panes
        if pane in panes:
            self._active = panes.index(pane)
        for p in panes:
            p.set_class(p is pane, "-active")

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        for node in event.widget.ancestors_with_self:
            if isinstance(node, ChatPane):
                self._set_active(node)
                break

    def on_click(self, event: events.Click) -> None:
        widget = event.widget
        while widget is not None and not isinstance(widget, ChatPane):
            widget = widget.parent  # type: ignore[assignment]
        if isinstance(widget, ChatPane):
            self._set_active(widget)

    @work(exclusive=True, group="models", exit_on_error=False)
    async def load_models(self) -> None:
        """Offer every model of every backend in the pickers (a dead backend only shortens the list)."""
        self._suggestions = await model_names(self.hub)
        for pane in self.panes:
            pane.set_suggestions(self._suggestions)

    def _show_mode(self) -> None:
        n = len(self.panes)
        if self.compare_mode:
            how = "at once" if self.parallel else "one after another"
            target = f"compare: every pane ({n}), {how}"
        else:
            target = "to the focused pane"
        same = " · same settings" if self.same_settings else ""
        self.query_one("#mode", Static).update(f"{target}{same}")

    def watch_compare_mode(self) -> None:
        if self.is_mounted:
            self._show_mode()

    def watch_parallel(self) -> None:
        if self.is_mounted:
            self._show_mode()

    def watch_same_settings(self) -> None:
        if self.is_mounted:
            self._show_mode()

    # ----- panes -------------------------------------------------------------------------

    async def add_pane(self, model: str | None = None) -> ChatPane | None:
        """Add a pane (up to four) with a fresh conversation on ``model`` or the focused pane's model."""
        panes = self.panes
        if len(panes) >= MAX_PANES:
            self.notify(f"at most {MAX_PANES} panes", severity="warning")
            return None
        if panes:
            # the new pane continues a copy of the focused pane's conversation (stored with its first answer),
            # so compare mode puts the same history to each model, as compare does in every face
            conv = Session(self.hub, self.store, self.active_pane.conv).fork(model, history=True)
        else:
            conv = Conversation(model or self.hub.config.default_model)
        self._pane_seq += 1
        pane = ChatPane(
            conv, suggestions=self._suggestions, id=f"pane-{self._pane_seq}", room_to_draw=self.hub.room_to_draw
        )
        await self.query_one("#panes").mount(pane)
        if conv.entries:
            await pane.load(conv)
        self._set_active(pane)
        self._show_mode()
        return pane

    async def action_add_pane(self) -> None:
        """Add a pane next to the others."""
        await self.add_pane()

    async def action_remove_pane(self) -> None:
        """Close the focused pane (its conversation stays in the history)."""
        panes = self.panes
        if len(panes) <= 1:
            self.notify("the last pane stays", severity="warning")
            return
        if self.generating:
            self.notify("press Escape to stop the answers first", severity="warning")
            return
        pane = self.active_pane
        await pane.remove()
        self._active = max(0, min(self._active, len(self.panes) - 1))
        self._set_active(self.active_pane)
        self._show_mode()

    def action_focus_pane(self, step: int) -> None:
        """Make the next or previous pane the focused one."""
        panes = self.panes
        pane = panes[(self._active + step) % len(panes)]
        self._set_active(pane)
        pane.log_view.focus()

    def action_pick_model(self) -> None:
        """Jump to the focused pane's model picker."""
        self.active_pane.model_input.focus()

    def action_toggle_compare(self) -> None:
        """Send to every pane at once, or to the focused pane only."""
        self.compare_mode = not self.compare_mode

    async def action_new_conversation(self) -> None:
        """Start over in the focused pane (the old conversation stays in the history)."""
        pane = self.active_pane
        if pane.streaming:
            return
        await pane.load(pane.new_conversation())

    @on(ChatPane.ModelChosen)
    async def _model_chosen(self, event: ChatPane.ModelChosen) -> None:
        pane = event.pane
        if pane.streaming:
            pane.model_input.value = pane.conv.model
            self.notify("press Escape to stop the answer first", severity="warning")
            return
        if event.model != pane.conv.model:
            # the one check every face makes: an unknown or not downloaded model is refused, the old one stays;
            # the conversation goes on with the new model, as /model and %model do
            try:
                await Session(self.hub, self.store, pane.conv).switch_model(event.model)
            except LLMSpellError as exc:
                pane.model_input.value = pane.conv.model
                self.notify(error_text(exc), severity="error", title="cannot switch model", markup=False)
                return
            pane.model_switched()
        self._set_active(pane)
        self.prompt.focus()

    async def open_conversation(self, conv_id: str) -> None:
        """Continue a stored conversation in the focused pane: its model, settings and messages."""
        if self.store is None:
            return
        try:
            conv = self.store.load(conv_id)
        except LLMSpellError as exc:
            self.notify(error_text(exc), severity="error", markup=False)
            return
        pane = self.active_pane
        if pane.streaming:
            self.notify("press Escape to stop the answer first", severity="warning")
            return
        await pane.load(conv)
        self.prompt.focus()

    # ----- settings ----------------------------------------------------------------------

    def action_settings(self) -> None:
        """Edit the focused pane's system prompt and options (and the screen's switches)."""
        pane = self.active_pane
        current = PaneSettings(
            system=pane.conv.system or "",
            options=pane.conv.options,
            same_for_all=self.same_settings,
            parallel=self.parallel,
            compare=self.compare_mode,
        )
        self.app.push_screen(SettingsScreen(current, title=f"Settings · {pane.conv.model}"), self._apply_settings)

    def _apply_settings(self, result: PaneSettings | None) -> None:
        if result is None:
            return
        self.same_settings = result.same_for_all
        self.parallel = result.parallel
        self.compare_mode = result.compare
        panes = self.panes if result.same_for_all else [self.active_pane]
        for pane in panes:
            pane.conv.system = result.system or None
            pane.conv.options = result.options
            if pane.conv.entries and self.store is not None:
                self.store.save(pane.conv)
            pane.stats_line.update(_describe(result))

    # ----- sending and cancelling --------------------------------------------------------

    def submit(self, text: str) -> bool:
        """Start answering ``text`` (taken from the prompt already); False, and a note why, when refused."""
        if not text.strip():
            return False
        if self.generating:
            self.notify("an answer is still streaming: press Escape to stop it", severity="warning")
            return False
        panes = self.panes if self.compare_mode else [self.active_pane]
        self._unstarted_prompt = text
        self._generation = self._run(panes, text)
        return True

    def _targets(self, panes: list[ChatPane]) -> list[Target]:
        if not self.same_settings:
            return [Target(p.conv) for p in panes]
        master = self.active_pane.conv.options
        if master.seed is None:
            # one seed for all panes, so the comparison is fair even when none was set
            master = dataclasses.replace(master, seed=random.getrandbits(31))
        return [Target(p.conv, master) for p in panes]

    # ----- tools -------------------------------------------------------------------------

    def _tool_settings(self, pane: ChatPane, toolset: ToolSet) -> ToolSettings:
        """How ``pane``'s answer uses the tools: the app's choice and step bound, this screen's question, the pane's
        blocks."""
        from llmspell.tools.turn import ToolSettings

        opts = getattr(self.app, "tool_options", None)
        max_steps = opts.max_steps if opts is not None and opts.max_steps else self.hub.config.tool_max_steps
        choice = opts.tool_choice if opts is not None else "auto"

        async def confirm(tool: Tool, arguments: dict[str, Any]) -> bool:
            return await self._confirm_tool(pane, tool, arguments, toolset)

        async def on_event(event: LoopEvent) -> None:
            # the text the model wrote before this event reaches the pane first, so the block lands where it
            # happened
            await pane.caught_up()
            await pane.tool_event(event)

        return ToolSettings(
            toolset.registry, tool_choice=choice, max_steps=max_steps, confirm=confirm, on_event=on_event
        )

    async def _confirm_tool(self, pane: ChatPane, tool: Tool, arguments: dict[str, Any], toolset: ToolSet) -> bool:
        """Ask whether a side-effect tool may run; the answer waits meanwhile. A cancelled answer closes the dialog."""
        async with self._asking:
            answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

            def answer(allowed: bool | None) -> None:
                if not answered.done():
                    answered.set_result(bool(allowed))

            dialog = ToolConfirmScreen(tool.name, arguments, toolset.root, model=pane.conv.model)
            await self.app.push_screen(dialog, answer)
            try:
                return await answered
            finally:
                if not answered.done() and dialog.is_current:
                    dialog.dismiss(False)

    async def action_tools(self) -> None:
        """See the tools the panes may call, and switch them on or off."""
        ready = getattr(self.app, "tools_ready", None)
        toolset: ToolSet | None = await ready() if ready is not None else None
        lines = toolset.lines() if toolset is not None else []
        available = toolset is not None and len(toolset.registry) > 0
        enabled = bool(getattr(self.app, "tools_on", False))
        self.app.push_screen(ToolsScreen(lines, enabled=enabled, available=available), self._apply_tools)

    def _apply_tools(self, on: bool | None) -> None:
        if on is None:
            return
        self.app.tools_on = on  # type: ignore[attr-defined]
        self.notify("the panes use tools" if on else "the panes answer without tools", title="tools")

    async def _with_tools(self, panes: list[ChatPane], targets: list[Target]) -> list[Target]:
        """The targets with the app's tools, when they are on."""
        ready = getattr(self.app, "tools_ready", None)
        toolset: ToolSet | None = await ready() if ready is not None else None
        if toolset is None or not getattr(self.app, "tools_on", False) or not len(toolset.registry):
            return targets
        return [
            dataclasses.replace(t, tools=self._tool_settings(p, toolset)) for p, t in zip(panes, targets, strict=True)
        ]

    @work(group="generation", exit_on_error=False)
    async def _run(self, panes: list[ChatPane], text: str) -> None:
        targets = await self._with_tools(panes, self._targets(panes))
        self._unstarted_prompt = None  # from here on, the finally below cleans up however the run ends
        self.last_metrics = [StreamMetrics(i, p.conv.model) for i, p in enumerate(panes)]
        stream = compare(self.hub, targets, text, store=self.store, parallel=self.parallel)
        failed = False
        finished: set[int] = set()
        held = contextlib.ExitStack()
        # a blinking cursor repaints the screen twice a second, on the cores the engine is using: it stays steady
        # while answers stream
        blink, self.prompt.cursor_blink = self.prompt.cursor_blink, False
        try:
            # inside the try: an Escape while the panes are being set up still ends them in the finally
            places = [
                (f"@{name}" if name else "", address)
                for name, address in await asyncio.gather(*(where_it_runs(self.hub, p.conv.model) for p in panes))
            ]
            # said where it tells something: a named endpoint (another machine, another server) is in the run, or
            # the panes run on different backends; answers that all run here on one backend say nothing extra
            told = any(address for _, address in places) or len({where for where, _ in places}) > 1
            held.enter_context(hold_status_checks(self.app, any(address for _, address in places)))
            for pane, (where, address) in zip(panes, places, strict=True):
                pane.runs_on(where if told else "", address)
                await pane.begin(text)
            async for event in stream:
                self.last_metrics[event.index] = event.metrics
                pane = panes[event.index]
                if event.kind == "start":
                    pane.feed("", event.metrics)
                elif event.kind == "chunk":
                    pane.feed(event.text, event.metrics)
                elif event.kind == "done":
                    pane.feed(event.text, event.metrics)
                    await pane.finish(event.metrics)
                    finished.add(event.index)
                elif event.kind == "error":
                    failed = True
                    await pane.finish(event.metrics, error=event.metrics.error)
                    finished.add(event.index)
        except Exception as exc:  # the runner itself failed: show it in every pane still open
            failed = True
            for pane in panes:
                await pane.finish(error=error_text(exc))
        finally:
            self.prompt.cursor_blink = blink
            try:
                await stream.aclose()
            finally:
                held.close()
            for i, pane in enumerate(panes):
                if i not in finished:
                    await pane.finish(StreamMetrics(i, pane.conv.model, status="cancelled"))
            if failed and not self.prompt.text:
                # the prompt is not lost: it goes back into the input, ready to send again
                self.prompt.text = text

    def action_cancel(self) -> None:
        """Stop every answer in flight; what arrived is kept, marked interrupted."""
        worker = self._generation
        if self.generating and worker is not None:
            if worker.cancelled_event.is_set():
                return  # cancelled already: a second cancel would break into the cleanup in _run's finally
            worker.cancel()
            if self._unstarted_prompt is not None:
                # cancelled before its first step: asyncio never enters the body (so no finally runs) and Textual
                # leaves such a worker RUNNING for good; nothing was sent, so the prompt goes back to the input
                self._generation = None
                if not self.prompt.text:
                    self.prompt.text = self._unstarted_prompt
                self._unstarted_prompt = None
        elif self.focused is not self.prompt:
            self.prompt.focus()

    def system_commands(self) -> Iterable[SystemCommand]:
        """This screen's actions for the command palette."""
        yield SystemCommand("Add a chat pane (Ctrl+N)", "Another model side by side", self.action_add_pane)
        yield SystemCommand(
            "Close the focused pane (Ctrl+W)", "Its conversation stays in the history", self.action_remove_pane
        )
        yield SystemCommand(
            "Toggle compare mode (Ctrl+T)", "Send each prompt to every pane at once", self.action_toggle_compare
        )
        yield SystemCommand(
            "Pane settings (Ctrl+O)", "System prompt, temperature, seed, max tokens…", self.action_settings
        )
        yield SystemCommand("New conversation in the focused pane (Ctrl+R)", "Start over", self.action_new_conversation)
        yield SystemCommand("Cancel the answers (Escape)", "Stop every answer in flight", self.action_cancel)
        yield SystemCommand("Tools (F6)", "The tools the models may call; switch them on or off", self.action_tools)


def _describe(s: PaneSettings) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in s.options.to_dict().items()) or "defaults"
    system = " · system prompt set" if s.system else ""
    return f"options: {opts}{system}"
