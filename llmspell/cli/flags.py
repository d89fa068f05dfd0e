"""The flags ``run`` and ``chat`` share: generation options (made from the option table) and tools."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmspell.options import OPTIONS
from llmspell.types import Options, read_format

if TYPE_CHECKING:
    from llmspell.config import Config
    from llmspell.tools.toolset import ToolSet

_TYPES: dict[str, Any] = {"float": float, "int": int}


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option of the table that has one (``--temperature``, ``--stop`` repeatable, ...)."""
    for o in OPTIONS:
        if o.flag is None:
            continue
        help_text = f"{o.help} ({', '.join(x for x in (o.range_text, f'default {o.default}') if x)})"
        if o.kind == "stop":
            parser.add_argument(o.flag, dest=o.name, action="append", help=f"{o.help} (repeatable)")
        elif o.kind == "format":
            parser.add_argument(o.flag, dest=o.name, help=f"{o.help}, or @file.json")
        else:
            parser.add_argument(o.flag, dest=o.name, type=_TYPES[o.kind], help=help_text)


def options_from_args(args: argparse.Namespace) -> Options:
    """The options given as flags; checked as every face checks them (range, type, a readable @file)."""
    raw: dict[str, Any] = {}
    for o in OPTIONS:
        value = getattr(args, o.name, None) if o.flag else None
        if value is None or value == []:
            continue
        if o.kind == "stop":
            value = tuple(value)
        elif o.kind == "format":
            value = read_format(value)
        raw[o.name] = value
    return Options.from_dict(raw)


#: what --tool-choice takes besides a tool's name
TOOL_CHOICES = ("auto", "none", "required")


def add_tool_flags(parser: argparse.ArgumentParser) -> None:
    """The tool flags ``run`` and ``chat`` share: which tools, where file tools may reach, asking, the choice."""
    parser.add_argument(
        "--tools",
        action="append",
        metavar="NAMES",
        help="tools the model may call: built-in names (read_file, write_file, list_directory, search_files, "
        "search_in_files, file_info, make_directory, run_shell) and MCP server names, comma or space separated "
        "(default: the config's [tools] enabled)",
    )
    parser.add_argument(
        "--root", metavar="DIR", help="the folder file and shell tools are confined to (default: tools.root or here)"
    )
    parser.add_argument("--yes", action="store_true", help="tools that change things run without asking")
    parser.add_argument(
        "--tool-choice",
        metavar="CHOICE",
        help="auto (default), none, required, or a tool's name: the first step must call that tool",
    )
    parser.add_argument(
        "--max-steps", type=_positive, metavar="N", help="model steps one turn may take (default: tools.max_steps)"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def tool_names_from_args(args: argparse.Namespace, config: Config) -> list[str]:
    """The tools asked for: ``--tools`` (``--tools off`` or ``none``: no tools), else the config's enabled ones."""
    from llmspell.tools.toolset import chosen_tool_names

    given = getattr(args, "tools", None)
    if given is None and (getattr(args, "raw", False) or getattr(args, "format", None) is not None):
        return []  # the config's tools are for chats: a plain completion or an answer held to a format takes none
    return chosen_tool_names(given, config)


async def open_tools(args: argparse.Namespace, config: Config, warn: Callable[[str], None]) -> ToolSet | None:
    """The ToolSet the flags ask for (None without tools); each MCP server that failed is told to ``warn``.
    An unknown name, or a --tool-choice naming a tool not there, is a ToolError (one line)."""
    from llmspell.errors import ToolError

    names = tool_names_from_args(args, config)
    choice = getattr(args, "tool_choice", None)
    if not names:
        if choice not in (None, "auto", "none"):
            raise ToolError(
                f"--tool-choice {choice} needs tools", hint="name them with --tools, e.g. --tools read_file"
            )
        return None
    from llmspell.tools.toolset import ToolSet

    toolset = await ToolSet.open(names, config=config, root=getattr(args, "root", None), yes=bool(args.yes))
    for status in toolset.statuses():
        if not status.ok:
            warn(f"MCP {status}")
    if choice is not None and choice not in TOOL_CHOICES and choice not in toolset.registry:
        there = ", ".join(toolset.registry.names()) or "none"
        await toolset.close()
        raise ToolError(f"--tool-choice names {choice!r}, which is not a tool here", hint=f"the tools are: {there}")
    return toolset
