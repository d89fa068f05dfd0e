"""llmspell-tui: the full-screen face. Four modes (chat, models, history, arena) over one hub and one store."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.screen import Screen

from llmspell import __version__ as core_version
from llmspell.compare import error_text
from llmspell.errors import LLMSpellError
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.types import BackendStatus
from llmspell_tui.screens.history import HistoryScreen
from llmspell_tui.screens.models import ModelsScreen

if TYPE_CHECKING:
    from textual.timer import Timer
    from textual.worker import Worker

    from llmspell.tools.base import Tool
    from llmspell.tools.toolset import ToolSet

#: the themes the theme key switches between
DARK_THEME = "textual-dark"
LIGHT_THEME = "textual-light"


#: the screen keys, shown together in the footer as "f1 f2 f3 Screens"
_SCREENS = Binding.Group("Screens")


def _arena_screen() -> Screen[None]:
    # imported when the arena is first shown, like the chat screen it shares the prompt with
    from llmspell_tui.screens.arena import ArenaScreen

    return ArenaScreen()


def _chat_screen() -> Screen[None]:
    # imported when the chat mode is first shown, so the other screens never depend on it
    from llmspell_tui.screens.chat import ChatScreen

    return ChatScreen()


@dataclasses.dataclass(frozen=True)
class ToolOptions:
    """The tools the chat panes may call, as ``--tools``, ``--root``, ``--allow``, ``--yes``, ``--tool-choice`` and
    ``--max-steps`` give them (the config's [tools] fills in what is not given)."""

    #: built-in and MCP server names (empty: none at all); None: the config's [tools] enabled
    names: tuple[str, ...] | None = None
    root: Path | None = None
    #: side-effect tools that run without asking (beside the config's allow-list)
    allow: tuple[str, ...] = ()
    #: every side-effect tool runs without asking
    yes: bool = False
    #: the first step's tool_choice: auto, none, required or a tool's name
    tool_choice: str = "auto"
    #: model steps one answer may take (None: the config's)
    max_steps: int | None = None
    #: plain functions (or Tools) offered beside the named tools, for a script that embeds the app
    functions: Sequence[Tool | Callable[..., Any]] = ()


class LLMSpellApp(App[None]):
    """Chat, models and history screens; the backends' status is refreshed here, once, for every screen."""

    TITLE = "llmspell"
    CSS_PATH = "app.tcss"
    MODES: ClassVar[dict[str, str | object]] = {  # type: ignore[assignment]
        "chat": _chat_screen,
        "models": ModelsScreen,
        "history": HistoryScreen,
        "arena": _arena_screen,
    }
    DEFAULT_MODE = "chat"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "show_mode('chat')", "Chat", priority=True, group=_SCREENS),
        Binding("f2", "show_mode('models')", "Models", priority=True, group=_SCREENS),
        Binding("f3", "show_mode('history')", "History", priority=True, group=_SCREENS),
        Binding("f5", "show_mode('arena')", "Arena", priority=True, group=_SCREENS),
        Binding("f4", "toggle_theme", "Theme", priority=True, show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True, show=False),
    ]

    #: the latest status of every backend; None until the first check answers
    backend_statuses: reactive[tuple[BackendStatus, ...] | None] = reactive(None, init=False)

    def __init__(
        self,
        hub: Hub | None = None,
        store: Store | None = None,
        *,
        mode: str = "chat",
        tools: ToolOptions | None = None,
    ) -> None:
        # the first screen shown; tests of one screen start there directly
        self.DEFAULT_MODE = mode  # type: ignore[misc]
        super().__init__()
        self.hub = hub or Hub()
        self.store = store or Store()
        self.tool_options = tools or ToolOptions()
        #: the tools the panes may call (opened at start; None without any)
        self.toolset: ToolSet | None = None
        #: whether the panes use the tools now (the tools screen switches it)
        self.tools_on = False
        self._tools_ready = asyncio.Event()
        #: seconds between two status checks
        self.status_interval = 5.0
        #: seconds a backend has to answer a status check before it is shown as not answering
        self.status_timeout = 5.0
        self._status_timer: Timer | None = None
        self._status_worker: Worker[None] | None = None
        #: runs streaming from a named endpoint now, and whether a status check waits for them to end
        self._remote_answers = 0
        self._status_deferred = False

    def on_mount(self) -> None:
        self.theme = DARK_THEME
        self.sub_title = f"default model: {self.hub.config.default_model}"
        self.refresh_status()
        self._status_timer = self.set_interval(self.status_interval, self.refresh_status)
        self._open_tools()

    @work(group="tools", exit_on_error=False)
    async def _open_tools(self) -> None:
        # a worker: MCP servers may take a moment to start, and the screen shows meanwhile
        opts = self.tool_options
        names = opts.names if opts.names is not None else self.hub.config.tool_enabled
        try:
            if names or opts.functions:
                from llmspell.tools.toolset import ToolSet

                toolset = await ToolSet.open(
                    names,
                    config=self.hub.config,
                    root=opts.root,
                    allow=opts.allow,
                    yes=opts.yes,
                    functions=opts.functions,
                )
                self.toolset = toolset
                self.tools_on = len(toolset.registry) > 0
                failed = [line for line in toolset.lines() if line.startswith("MCP ")]
                for line in failed:
                    self.notify(line, severity="warning", title="tools")
        except LLMSpellError as exc:
            self.notify(error_text(exc), severity="error", title="tools are off")
        finally:
            self._tools_ready.set()

    async def tools_ready(self) -> ToolSet | None:
        """The tools, once opened (at once when they are): what the panes may call, or None."""
        await self._tools_ready.wait()
        return self.toolset

    def refresh_status(self) -> None:
        """Check every backend now, unless a check is still running (a slow backend is never asked twice at once)
        or an endpoint is streaming an answer (then the check runs when the answers end)."""
        if self._remote_answers:
            self._status_deferred = True
            return
        if self._status_worker is None or self._status_worker.is_finished:
            self._status_worker = self._check_status()

    @property
    def answering_remotely(self) -> bool:
        """Whether a named endpoint is streaming an answer to one of the screens now."""
        return self._remote_answers > 0

    @contextlib.contextmanager
    def remote_answers(self, remote: bool = True) -> Iterator[None]:
        """Hold the status checks while answers stream from a named endpoint (``remote``): llama-cpp-python's
        server ends the answer it is streaming when any other request reaches it, a model listing included, and
        the stream says well enough that the server is up. The held check runs when the last such run ends."""
        if not remote:
            yield
            return
        self._remote_answers += 1
        worker = self._status_worker
        if worker is not None and not worker.is_finished:
            # a check already on its way would reach the server just after the answer started
            worker.cancel()
            self._status_deferred = True
        try:
            yield
        finally:
            self._remote_answers -= 1
            if not self._remote_answers and self._status_deferred:
                self._status_deferred = False
                self.refresh_status()

    @work(group="status", exit_on_error=False)
    async def _check_status(self) -> None:
        # a worker, so a backend that is slow to answer never freezes the screen; each answers within the timeout
        statuses = await self.hub.status_all(timeout=self.status_timeout)
        self.backend_statuses = tuple(statuses)

    # ----- modes, theme, commands -----------------------------------------------------------------

    async def action_show_mode(self, mode: str) -> None:
        """Show one of the app's screens (chat, models, history)."""
        if self.current_mode == mode:
            return
        await self.switch_mode(mode)

    def action_toggle_theme(self) -> None:
        """Switch between the dark and the light theme."""
        self.theme = LIGHT_THEME if self.theme == DARK_THEME else DARK_THEME

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """The command palette: the screens, the theme, a status check, then the current screen's actions."""
        yield SystemCommand("Chat screen (F1)", "Side-by-side chats with one or more models", self._go("chat"))
        yield SystemCommand("Models screen (F2)", "Every model: pull, info, delete, unload", self._go("models"))
        yield SystemCommand("History screen (F3)", "Saved conversations: reopen, export, delete", self._go("history"))
        yield SystemCommand("Arena screen (F5)", "Blind votes between models, and their ratings", self._go("arena"))
        yield SystemCommand("Toggle light/dark theme (F4)", "Switch between light and dark", self.action_toggle_theme)
        yield SystemCommand("Check backends now", "Refresh every backend's status", self.refresh_status)
        commands = getattr(screen, "system_commands", None)
        if callable(commands):
            yield from commands()
        yield from super().get_system_commands(screen)

    def _go(self, mode: str) -> Callable[[], Awaitable[None]]:
        async def go() -> None:
            await self.action_show_mode(mode)

        return go

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Show a notification, always as plain text: messages carry specs, names and paths users typed or files
        hold, and markup in one ("foo[/]bar" typed as a pull spec) made the whole app exit."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    async def on_unmount(self) -> None:
        if self.toolset is not None:
            # the MCP servers this app started stop with it
            await self.toolset.close()
        await self.hub.close()
        self.store.close()


def create_app(
    hub: Hub | None = None, store: Store | None = None, *, mode: str = "chat", tools: ToolOptions | None = None
) -> LLMSpellApp:
    """The app factory shared by the script and the tests; ``mode`` is the first screen shown, ``tools`` what the
    panes may call (default: the config's [tools] enabled)."""
    return LLMSpellApp(hub, store, mode=mode, tools=tools)


def _check_tools(hub: Hub, tools: ToolOptions) -> None:
    """Refuse unknown tool names and a bad root before the screen opens (the MCP servers start in the app)."""
    from llmspell.tools.toolset import ToolSet, parse_tool_names

    servers = {s.name for s in hub.config.mcp_servers}
    given = tools.names if tools.names is not None else hub.config.tool_enabled
    builtins = [n for n in parse_tool_names(given) if n not in servers]
    # built-ins only: nothing is started, so nothing needs stopping
    asyncio.run(ToolSet.open(builtins, config=hub.config, root=tools.root))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``llmspell-tui [MODEL]``: the optional model is the first chat pane's."""
    parser = argparse.ArgumentParser(
        prog="llmspell-tui",
        description="The full-screen llmspell workbench: backends, models, side-by-side chats, the arena.",
    )
    parser.add_argument("model", nargs="?", help="the first chat pane's model (default: the config's default_model)")
    parser.add_argument("--version", action="version", version=f"llmspell-tui {core_version}")
    parser.add_argument(
        "--tools",
        metavar="NAMES",
        action="append",
        default=[],
        help="tools the models may call: built-in names "
        "and MCP server names, comma-separated (default: the config's [tools] enabled)",
    )
    parser.add_argument("--root", metavar="DIR", type=Path, help="the folder the file tools are confined to")
    parser.add_argument(
        "--allow", metavar="NAMES", action="append", default=[], help="side-effect tools that run without asking"
    )
    parser.add_argument("--yes", action="store_true", help="let every side-effect tool run without asking")
    parser.add_argument(
        "--tool-choice", default="auto", metavar="CHOICE", help="auto (default), none, required, or a tool's name"
    )
    parser.add_argument("--max-steps", type=int, metavar="N", help="model steps one answer may take with tools")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be 1 or more (one model step answers without running any tool)")
    model = args.model
    try:
        from llmspell.tools.toolset import chosen_tool_names, parse_tool_names

        hub = Hub()
        tools = ToolOptions(
            # --tools off (or none) turns the config's tools off too
            names=tuple(chosen_tool_names(args.tools, hub.config)) if args.tools else None,
            root=args.root,
            allow=tuple(parse_tool_names(args.allow)),
            yes=args.yes,
            tool_choice=args.tool_choice,
            max_steps=args.max_steps,
        )
        if model:
            spec = hub.spec(model)  # a bad spec is refused here, with its message, before the screen opens
            hub.config = dataclasses.replace(hub.config, default_model=str(spec))
        if tools.names if tools.names is not None else hub.config.tool_enabled:
            _check_tools(hub, tools)
        app = create_app(hub, tools=tools)
    except LLMSpellError as exc:
        print(f"llmspell-tui: {exc}", file=sys.stderr)
        return 2
    app.run()
    return 0
