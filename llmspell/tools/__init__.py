"""Tools a model may call: the tool model and registry (base), the built-in file and shell tools (builtin)."""

from __future__ import annotations

from llmspell.tools.base import ConfirmCallback, Tool, ToolRegistry, ToolResult, parse_docstring, tool_from_function
from llmspell.tools.builtin import BUILTIN_NAMES, READ_ONLY_NAMES, SIDE_EFFECT_NAMES, Sandbox, builtin_tools

__all__ = [
    "BUILTIN_NAMES",
    "READ_ONLY_NAMES",
    "SIDE_EFFECT_NAMES",
    "ConfirmCallback",
    "Sandbox",
    "Tool",
    "ToolRegistry",
    "ToolResult",
    "builtin_tools",
    "parse_docstring",
    "tool_from_function",
]
