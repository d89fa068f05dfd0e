"""``llmspell chat``: the command-line side of the REPL (flags, piped or interactive), kept light to import.

The session itself (prompt_toolkit and rich) lives in ``repl_session`` and is imported only when
``chat`` runs, so other ``llmspell`` commands start without loading either.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from llmspell.cli.flags import add_option_flags, add_tool_flags, open_tools, options_from_args
from llmspell.types import Options


def add_chat_parser(sub: Any) -> None:
    """Register the ``chat`` subcommand on the top-level subparsers."""
    c = sub.add_parser(
        "chat",
        help="talk to a model in a REPL (streaming, history, slash commands; /help inside)",
        description="Talk to a model. Piped input (echo hi | llmspell chat MODEL) answers once and exits.",
    )
    c.add_argument("model", nargs="?", default=None, help="model spec (default: the configured default model)")
    c.add_argument("--system", help="system prompt")
    c.add_argument("--quiet", "-q", action="store_true", help="no stats line after each answer")
    c.add_argument("--raw", action="store_true", help="print answers as plain text, not rendered Markdown")
    c.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="ID",
        help="continue the latest conversation, or the one with this id (or title)",
    )
    add_option_flags(c)
    add_tool_flags(c)
    c.set_defaults(func=cmd_chat)


def chat_options(args: argparse.Namespace) -> Options:
    """The generation options given as flags, read exactly as ``llmspell run`` reads them."""
    return options_from_args(args)


async def cmd_chat(args: argparse.Namespace) -> int:
    """Open the REPL on a terminal, or answer standard input once when it is piped."""
    from llmspell.api import get_hub
    from llmspell.cli.repl_session import Repl
    from llmspell.errors import ToolError
    from llmspell.store import Store

    options = chat_options(args)
    interactive = sys.stdin.isatty()
    hub = get_hub()
    try:
        toolset = await open_tools(args, hub.config, lambda line: print(line, file=sys.stderr))
    except ToolError as exc:
        print(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 2
    try:
        store = Store()
        repl = Repl(hub, store, quiet=args.quiet, raw=args.raw, interactive=interactive)
    except BaseException:
        if toolset is not None:
            await toolset.close()  # its MCP servers were started: they stop with this error too
        raise
    try:
        repl.tool_root, repl.tool_yes = args.root, args.yes
        repl.tool_choice, repl.max_steps = args.tool_choice or "auto", args.max_steps
        repl.use_toolset(toolset)
        if not await repl.open(args.model, system=args.system, options=options, resume=args.resume):
            return 1
        if interactive:
            return await repl.run()
        return await repl.run_piped(sys.stdin.read())
    finally:
        await repl.close_tools()  # MCP servers stop however the session ends
        store.close()
