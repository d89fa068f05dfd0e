"""The REPL's slash commands: each one a small function over the session, with its usage and help."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text

from llmspell.cli.formatting import format_stats
from llmspell.cli.repl_arena import cmd_arena, cmd_vote
from llmspell.errors import InvalidOptions, LLMSpellError
from llmspell.options import help_lines
from llmspell.types import BASE_MODEL_KIND, Options, parse_option_value, parse_option_words, read_format

if TYPE_CHECKING:
    from llmspell.cli.repl_session import Repl

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
    # a base model takes the chat but only continues it: say so now, not after a puzzling answer
    warning = await repl.hub.chat_warning(spec)
    if warning:
        repl.say(f"warning: {warning}", "yellow")
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


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _reports_loaded(repl: Repl, name: str) -> bool:
    """Whether the backend called ``name`` can say which models it has loaded."""
    backend = repl.hub.backends.get(name)
    # the OpenAI API has no way to ask what a server holds in memory: "loaded: none" would be a guess
    return backend is None or backend.kind != "openai"


async def _cmd_status(repl: Repl, arg: str) -> bool:
    for st in await repl.hub.status_all(timeout=5.0):
        if st.ready:
            facts = [f for f in (st.version, st.device, f"{st.model_count} models") if f]
            if st.latency is not None:
                facts.append(f"latency {_ms(st.latency)}")
            if st.loaded or _reports_loaded(repl, st.backend):
                facts.append(f"loaded: {', '.join(st.loaded) or 'none'}")
            if st.address:
                facts.append(st.address)
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
            # a server's model has an address, not a file
            ("address" if "://" in (info.location or "") else "file", info.location),
            ("kind", BASE_MODEL_KIND if info.base_model else None),
            ("chat template", info.template_note()),
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

    answers = [e for e in repl.conv.entries if e.role == "assistant" and e.stats is not None]
    if not answers:
        repl.say("no answer yet in this conversation")
        return True
    last = answers[-1]
    model = last.model or repl.conv.model
    where = await repl.ran_on(model)
    repl.say(f"last answer ({model}{f', ran on {where}' if where else ''}):")
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


async def _cmd_tools(repl: Repl, arg: str) -> bool:
    from llmspell.tools.builtin import BUILTIN_NAMES
    from llmspell.tools.toolset import ToolSet, parse_tool_names

    names = parse_tool_names(arg)
    if not names:
        if repl.toolset is None or not len(repl.toolset.registry):
            repl.say("no tools on")
            repl.dim(f"turn some on with /tools NAMES (built-ins: {', '.join(BUILTIN_NAMES)}; MCP server names too)")
            return True
        for line in repl.toolset.lines():
            repl.say(f"  {line}")
        repl.dim("/tools NAMES turns on those instead · /tools off turns them off")
        return True
    if names in (["off"], ["none"]):
        await repl.close_tools()
        repl.say("tools off")
        return True
    # opened before the old set closes: an unknown name leaves the tools as they were
    toolset = await ToolSet.open(names, config=repl.hub.config, root=repl.tool_root, yes=repl.tool_yes)
    await repl.close_tools()
    repl.use_toolset(toolset)
    repl.say(f"tools on: {', '.join(toolset.registry.names()) or 'none'}")
    for status in toolset.statuses():
        if not status.ok:
            repl.error(f"MCP {status}")
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
    Command(
        "/arena",
        "/arena [SPEC...|off|board|tag T]",
        "blind rounds: each prompt to two models shown as A and B, then your vote",
        cmd_arena,
    ),
    Command(
        "/vote", "/vote a|b|tie|bad", "vote the waiting arena round (typing the choice alone does it too)", cmd_vote
    ),
    Command("/tools", "/tools [NAMES|off]", "list the tools the model may call, turn on NAMES, or off", _cmd_tools),
    Command("/json", "/json [SCHEMA|off]", "make answers JSON (matching SCHEMA, or @file.json)", _cmd_json),
    Command("/help", "/help", "this list", _cmd_help, ("/?",)),
    Command("/bye", "/bye", "leave", _cmd_bye, ("/exit", "/quit")),
)
