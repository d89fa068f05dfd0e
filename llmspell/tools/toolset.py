"""The tools one face offers, from the names a user types: built-ins, MCP servers, plain functions.

Every face turns tools on the same way (``--tools read_file,time --root DIR``, ``/tools``, ``%tools``, the config's
``[tools] enabled``): :meth:`ToolSet.open` makes the registry, confined to the root, with the allow-list the
config and the user gave, and starts the MCP servers named; :meth:`ToolSet.close` stops them. What a face lists
(:meth:`ToolSet.lines`) and how a call reads on screen (:func:`call_line`, :func:`result_line`) are here too, so
the faces cannot disagree.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmspell.errors import ToolError
from llmspell.tools.base import Tool, ToolRegistry, ToolResult, tool_from_function
from llmspell.tools.builtin import BUILTIN_NAMES, SIDE_EFFECT_NAMES, builtin_tools
from llmspell.types import ToolCall

if TYPE_CHECKING:
    from llmspell.config import Config
    from llmspell.tools.mcp import McpStatus, McpTools

__all__ = [
    "ToolSet",
    "call_line",
    "chosen_tool_names",
    "confirm_question",
    "is_yes",
    "not_asked_note",
    "parse_tool_names",
    "result_line",
]


def parse_tool_names(text: str | Iterable[str]) -> list[str]:
    """Tool names as a user types them: separated by commas or spaces, once each, in order."""
    parts = [text] if isinstance(text, str) else list(text)
    names = [n for part in parts for n in re.split(r"[,\s]+", part) if n]
    return list(dict.fromkeys(names))


def chosen_tool_names(given: str | Sequence[str] | None, config: Config) -> list[str]:
    """The tools a face starts with: those given (``off`` or ``none``: no tools at all), else the config's
    ``[tools] enabled``."""
    if given is None or (not isinstance(given, str) and not given):
        return list(config.tool_enabled)
    names = parse_tool_names(given)
    return [] if names in (["off"], ["none"]) else names


def call_line(call: ToolCall, limit: int = 160) -> str:
    """A call as every face shows it: ``name(arguments)``, the arguments cut to ``limit`` characters."""
    args = call.raw or json.dumps(call.arguments, ensure_ascii=False)
    if len(args) > limit:
        args = args[: limit - 1] + "…"
    return f"{call.name}({args})"


def confirm_question(name: str, arguments: dict[str, Any]) -> str:
    """The question every face asks before a side-effect call runs."""
    return f"Allow {call_line(ToolCall('', name, arguments))}? [y/N] "


def not_asked_note(name: str, why: str, allow: str = "--yes") -> str:
    """What a face says when a side-effect call is refused because nobody can be asked (``why``), and how to allow
    it."""
    return f"not asked: {why}, so {name} does not run ({allow} allows it)"


def is_yes(answer: str) -> bool:
    """Whether a typed answer to :func:`confirm_question` allows the call (anything else refuses)."""
    return answer.strip().lower() in ("y", "yes")


def result_line(result: ToolResult) -> str:
    """What a call came to, in a few words every face shows (the same words a reopened conversation shows)."""
    from llmspell.chat import tool_outcome
    from llmspell.tools.turn import result_record

    return tool_outcome(result_record(result))


class ToolSet:
    """A registry made from names, the MCP servers it started, and the root the built-ins are confined to."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        root: Path | None = None,
        mcp: McpTools | None = None,
        names: Sequence[str] = (),
    ) -> None:
        self.registry = registry
        self.root = root
        self.mcp = mcp
        #: what the user asked for, as given
        self.names = tuple(names)

    @classmethod
    async def open(
        cls,
        names: Iterable[str],
        *,
        config: Config,
        root: Path | str | None = None,
        allow: Iterable[str] = (),
        yes: bool = False,
        functions: Sequence[Tool | Callable[..., Any]] = (),
    ) -> ToolSet:
        """The tools ``names`` asks for (built-in names, MCP server names); ``root`` confines the built-ins (default:
        the config's, else the current folder); ``allow`` and ``yes`` let side-effect tools run without asking,
        beside the config's allow-list. An unknown name is a ToolError naming what there is; an MCP server that
        fails to start is a status line (see :meth:`lines`), never a raise."""
        wanted = parse_tool_names(names)
        servers = {s.name for s in config.mcp_servers}
        unknown = [n for n in wanted if n not in BUILTIN_NAMES and n not in servers]
        if unknown:
            there = ", ".join(BUILTIN_NAMES)
            configured = f"; MCP servers: {', '.join(sorted(servers))}" if servers else ""
            raise ToolError(
                f"no tool or MCP server named {', '.join(map(repr, unknown))} (built-ins: {there}{configured})",
                hint="MCP servers are [mcp.servers.NAME] tables in config.toml",
            )
        permitted = {*config.tool_allow, *allow, *(("*",) if yes else ())}
        registry, box_root = _with_builtins([n for n in wanted if n in BUILTIN_NAMES], root, config, permitted)
        for fn in functions:
            registry.add(fn)
        mcp: McpTools | None = None
        mcp_names = [n for n in wanted if n in servers]
        if mcp_names:
            from llmspell.tools.mcp import McpTools

            mcp = McpTools([s for s in config.mcp_servers if s.name in mcp_names])
            await mcp.start_all(mcp_names)
            mcp.sync(registry)
        return cls(registry, root=box_root, mcp=mcp, names=wanted)

    @classmethod
    def from_functions(cls, functions: Sequence[Tool | Callable[..., Any]], *, allow_all: bool = True) -> ToolSet:
        """Tools from a script's own functions (they run without asking: the script chose them)."""
        registry = ToolRegistry(allow=("*",) if allow_all else ())
        for fn in functions:
            registry.add(fn if isinstance(fn, Tool) else tool_from_function(fn))
        return cls(registry)

    def statuses(self) -> list[McpStatus]:
        """How each MCP server of this set stands."""
        return self.mcp.status() if self.mcp is not None else []

    def refresh(self) -> None:
        """Drop the tools of MCP servers that died since (their status says why)."""
        if self.mcp is not None:
            self.mcp.sync(self.registry)

    def lines(self) -> list[str]:
        """What a face lists: one line per tool (name, kind, whether it asks first, what it is for), then one per
        MCP server that is not running, and the root."""
        self.refresh()
        out = []
        for tool in self.registry:
            asks = "asks first" if not self.registry.is_allowed(tool) else "runs without asking"
            kind = "built-in" if tool.source == "builtin" else tool.source
            summary = tool.description.strip().splitlines()[0] if tool.description.strip() else ""
            out.append(f"{tool.name} ({kind}, {asks}){': ' + summary if summary else ''}")
        for status in self.statuses():
            if not status.ok:
                out.append(f"MCP {status}")
        if self.root is not None:
            out.append(f"file tools confined to {self.root}")
        return out

    @property
    def side_effect_tools(self) -> list[str]:
        """The tools here that change something."""
        return [t.name for t in self.registry if t.side_effects or t.name in SIDE_EFFECT_NAMES]

    async def close(self) -> None:
        """Stop the MCP servers this set started."""
        if self.mcp is not None:
            await self.mcp.stop_all()
            self.mcp = None

    async def __aenter__(self) -> ToolSet:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _with_builtins(
    names: list[str], root: Path | str | None, config: Config, allow: set[str]
) -> tuple[ToolRegistry, Path | None]:
    """A registry with the built-ins ``names`` (confined to ``root``, else the config's, else the current folder) and
    the root they are confined to (None without built-ins)."""
    registry = ToolRegistry(allow=allow)
    if not names:
        return registry, None
    chosen = Path(root).expanduser() if root is not None else config.tool_root
    tools = builtin_tools(chosen, enabled=names)
    for tool in tools:
        registry.add(tool)
    return registry, Path(os.path.realpath(chosen if chosen is not None else Path.cwd()))
