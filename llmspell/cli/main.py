"""The ``llmspell`` command: model management, one-shot runs and config; errors print, never trace back."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from llmspell import __version__
from llmspell.cli.flags import add_option_flags, add_tool_flags, open_tools, options_from_args
from llmspell.cli.formatting import format_stats
from llmspell.errors import LLMSpellError, ToolError
from llmspell.spec import parse_spec
from llmspell.types import PullProgress, human_bytes


def _table(rows: list[list[str]], headers: list[str], out: TextIO) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _hub() -> Any:
    from llmspell.api import get_hub

    return get_hub()


# ----- model list / available / status / info / pull / rm ---------------------------------------


async def cmd_list(args: argparse.Namespace) -> int:
    hub = _hub()
    # an alias (candle, gguf) or an unknown name is settled here: the error names the enabled backends
    models, failed = await hub.list_all(hub.backend(args.backend).name if args.backend else None)
    if args.json:
        print(
            json.dumps(
                {"models": [m.to_dict() for m in models], "unavailable": [s.to_dict() for s in failed]},
                indent=2,
                default=str,
            )
        )
        return 0
    rows = [
        [
            f"{m.name}@{m.backend}",
            human_bytes(m.size_bytes),
            m.quantization or "-",
            m.source,
            "yes" if m.loaded else "",
            # a base model continues text: say so where the user picks a model to chat with
            "base (--raw)" if m.base_model else "",
            m.location or "-",
        ]
        for m in models
    ]
    if rows:
        _table(rows, ["NAME", "SIZE", "QUANT", "SOURCE", "LOADED", "KIND", "WHERE"], sys.stdout)
    else:
        print("no models found; try: llmspell model available --recommended")
    for st in failed:
        print(f"note: {st.backend} not listed: {st.error}", file=sys.stderr)
    return 0


async def cmd_available(args: argparse.Namespace) -> int:
    from llmspell.catalog import load_catalog
    from llmspell.machine import GIB, check_fit, machine_info

    catalog = load_catalog()
    hub = _hub()
    machine = await asyncio.to_thread(machine_info)
    llama = hub.backends.get("llamacpp")
    rows, records = [], []
    for entry in catalog.entries.values():
        if args.recommended and not entry.recommended:
            continue
        for variant in entry.variants.values():
            quants = variant.quants.values() if args.all_quants else [variant.quants[variant.default_quant]]
            for q in quants:
                tag = f"{entry.name}:{variant.name}" + ("" if q.name == variant.default_quant else f"-{q.name}")
                resolved = catalog.resolve(entry.name, f"{variant.name}-{q.name}")
                on_disk = llama is not None and await llama.has_model(parse_spec(f"{tag}@{llama.name}"))
                fit = check_fit(int(q.ram_gb * GIB), q.size_bytes, machine, on_disk=on_disk)
                records.append(
                    {
                        "name": tag,
                        "family": entry.family,
                        "parameters": variant.parameters,
                        "quantization": q.name,
                        "size_bytes": q.size_bytes,
                        "ram_gb": q.ram_gb,
                        "context": variant.context,
                        "license": entry.license,
                        "on_disk": on_disk,
                        "fits": fit.fits,
                        "reason": fit.reason,
                        "ollama": variant.ollama,
                        "hf_repo": resolved.hf_repo,
                        "file": q.file,
                    }
                )
                rows.append(
                    [
                        tag,
                        variant.parameters,
                        q.name,
                        human_bytes(q.size_bytes),
                        f"{q.ram_gb:.1f} GB",
                        "yes" if on_disk else "",
                        fit.reason,
                    ]
                )
    if args.json:
        print(
            json.dumps(
                {
                    "machine": machine.to_dict(),
                    "models": records,
                },
                indent=2,
            )
        )
        return 0
    vram = ", ".join(f"{g.name} {human_bytes(g.free_bytes)} free" for g in machine.gpus) or "no GPU"
    print(
        f"this machine: {human_bytes(machine.ram_total)} RAM ({human_bytes(machine.ram_available)} available), "
        f"{vram}, {human_bytes(machine.disk_free)} free disk, {machine.cores} cores\n"
    )
    _table(rows, ["NAME", "PARAMS", "QUANT", "DOWNLOAD", "RAM/VRAM", "ON DISK", "FITS"], sys.stdout)
    print("\npull one with: llmspell model pull NAME@llamacpp")
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    from llmspell.machine import machine_info

    hub = _hub()
    if args.backend:
        statuses = [await hub._status(hub.backend(args.backend), 10.0)]
    else:
        statuses = await hub.status_all()
    machine = await asyncio.to_thread(machine_info)
    if args.json:
        print(
            json.dumps(
                {
                    "backends": [s.to_dict() for s in statuses],
                    "machine": machine.to_dict(),
                },
                indent=2,
            )
        )
        return 0
    for s in statuses:
        state = "ready" if s.ready else "not ready"
        print(f"{s.backend}: {state}")
        if s.error:
            print(f"  why:     {s.error}")
        if s.hint:
            print(f"  fix:     {s.hint}")
        for label, value in (("version", s.version), ("device", s.device), ("address", s.address)):
            if value:
                print(f"  {label + ':':8} {value}")
        if s.latency is not None:
            print(f"  latency: {s.latency * 1000:.0f} ms")
        if s.ready:
            print(f"  models:  {s.model_count}")
            print(f"  loaded:  {', '.join(s.loaded) or 'none'}")
        for note in s.notes:
            print(f"  note:    {note}")
    gpus = (
        ", ".join(f"{g.name} ({human_bytes(g.free_bytes)} of {human_bytes(g.total_bytes)} free)" for g in machine.gpus)
        or "none visible"
    )
    print(
        f"machine: {human_bytes(machine.ram_available)} of {human_bytes(machine.ram_total)} RAM available, "
        f"GPU: {gpus}, {human_bytes(machine.disk_free)} free disk at {machine.disk_path}"
    )
    return 0


async def cmd_info(args: argparse.Namespace) -> int:
    info = await _hub().info(args.model)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2, default=str))
        return 0
    for label, value in info.facts():
        print(f"{label + ':':15} {value}")
    if info.source == "not downloaded":
        print(f"{'status:':15} not downloaded; pull it with: llmspell model pull {info.name}@{info.backend}")
    if info.chat_template:
        print("\nchat template:")
        text = info.chat_template if args.template else _shorten(info.chat_template, 400)
        print("  " + text.replace("\n", "\n  "))
    return 0


def _shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters; --template shows all)"


class _Progress:
    """A one-line progress bar on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.status = ""

    def __call__(self, p: PullProgress) -> None:
        now = time.monotonic()
        if p.total and not p.done:
            if now - self.last < (0.1 if self.tty else 2.0) and p.completed < p.total:
                return
            self.last = now
            rate = p.completed / max(now - self.start, 1e-6)
            eta = (p.total - p.completed) / rate if rate > 0 else 0
            bar = "█" * int(p.fraction * 30)
            line = (
                f"{p.status} {p.fraction:4.0%} ▕{bar:<30}▏ {human_bytes(p.completed)}/{human_bytes(p.total)} "
                f"{human_bytes(rate)}/s {eta:4.0f}s"
            )
            self.out.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        else:
            if self.tty and self.last:
                self.out.write("\n")
                self.last = 0.0
            self.out.write(p.status + "\n")
        self.out.flush()


async def cmd_pull(args: argparse.Namespace) -> int:
    bar = _Progress(sys.stderr)
    path = None
    model = args.model
    if args.quantization:
        from llmspell.catalog import with_quantization

        model = with_quantization(parse_spec(model), args.quantization)
    async for p in _hub().pull(model):
        bar(p)
        path = p.path or path
    if path:
        print(path)
    return 0


async def cmd_import(args: argparse.Namespace) -> int:
    """Copy or link a GGUF file into the models folder, under the name it then runs by."""
    from llmspell.importing import import_model

    hub = _hub()
    backend = hub.backend("llamacpp")

    def taken(name: str) -> bool:
        # a catalog name or a named model would hide the file: the import must not be shadowed silently
        return backend.catalog.get(name) is not None or hub.aliases.get(name) is not None

    path = await asyncio.to_thread(
        import_model, args.file, args.name, link=args.link, replace=args.replace, taken=taken
    )
    name = path.name[: -len(".gguf")]
    name = re.sub(r"-00001-of-\d{5}$", "", name)
    how = f"a link to {args.file.expanduser().resolve()}" if args.link else "a copy"
    print(f'imported {name}: {path} ({how})\nrun it with: llmspell run {name} "hello"')
    return 0


async def cmd_rm(args: argparse.Namespace) -> int:
    await _hub().delete(args.model)
    print(f"deleted {args.model}")
    return 0


# ----- run -----------------------------------------------------------------------------------------


async def cmd_run(args: argparse.Namespace) -> int:
    prompt = " ".join(args.prompt) if args.prompt else ""
    if not prompt and not sys.stdin.isatty():
        prompt = sys.stdin.read()
    if not prompt.strip():
        print("error: no prompt given\n  pass it as an argument or on standard input", file=sys.stderr)
        return 2
    opts = options_from_args(args)
    hub = _hub()
    try:
        toolset = await open_tools(args, hub.config, lambda line: print(line, file=sys.stderr))
    except ToolError as exc:
        print(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 2
    if toolset is not None:
        try:
            if args.raw:
                print("error: --raw continues text and cannot call tools; leave out --raw or --tools", file=sys.stderr)
                return 2
            return await _run_with_tools(args, hub, prompt, opts, toolset)
        finally:
            await toolset.close()  # MCP servers stop on every way out, Ctrl-C included
    if args.raw:
        stream = hub.complete(args.model, prompt, opts)
    else:
        # a base model takes the chat but only continues it: say so on stderr, the answer still goes to stdout
        warning = await hub.chat_warning(args.model)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        messages = [{"role": "system", "content": args.system}] if args.system else []
        messages.append({"role": "user", "content": prompt})
        stream = hub.chat(args.model, messages, opts)
    stats = None
    wrote = ""
    try:
        async for chunk in stream:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            wrote = chunk.text or wrote
            if chunk.done:
                stats = chunk.stats
    finally:
        await stream.aclose()
        if wrote and not wrote.endswith("\n") and stats is None:
            # cut short: the partial answer's line ends before the error is written below it
            sys.stdout.write("\n")
            sys.stdout.flush()
    sys.stdout.write("\n")
    if args.verbose and stats:
        print("\n" + format_stats(stats), file=sys.stderr)
    return 0


class _ToolLines:
    """Shows a tool turn on stderr as it happens (each call, what it came to, the step limit); stdout keeps the
    model's text alone."""

    def __init__(self) -> None:
        self.calls = 0
        #: the model's text so far ends a line (a call line on stderr must not be glued to it on a shared terminal)
        self.text_ended = True

    def text(self, piece: str) -> None:
        if piece:
            sys.stdout.write(piece)
            sys.stdout.flush()
            self.text_ended = piece.endswith("\n")

    def __call__(self, event: Any) -> None:
        from llmspell.tools.loop import StepLimitReached, ToolCallEvent, ToolResultEvent
        from llmspell.tools.toolset import call_line, result_line

        if isinstance(event, ToolCallEvent):
            if not self.text_ended:
                self.text("\n")
            self.calls += 1
            print(f"→ {call_line(event.call)}", file=sys.stderr, flush=True)
        elif isinstance(event, ToolResultEvent):
            print(f"  {result_line(event.result)}", file=sys.stderr, flush=True)
        elif isinstance(event, StepLimitReached):
            print(event.text, file=sys.stderr, flush=True)


async def _read_line() -> str:
    """One line from the terminal, waited for on the event loop (a Ctrl-C meanwhile cancels it at once)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(sys.stdin.fileno(), readable)
    except (NotImplementedError, ValueError, OSError):
        return await asyncio.to_thread(sys.stdin.readline)  # no reader for this stdin here: a thread waits
    try:
        await ready
    finally:
        loop.remove_reader(sys.stdin.fileno())
    return sys.stdin.readline()


def _confirmer(terminal: bool) -> Any:
    """How ``run`` asks before a tool changes something: y/N on the terminal, or (piped) a refusal with a note."""
    from llmspell.tools.toolset import confirm_question, is_yes, not_asked_note

    async def confirm(tool: Any, arguments: dict[str, Any]) -> bool:
        if not terminal:
            note = not_asked_note(tool.name, "standard input is not a terminal")
            print(f"  {note}", file=sys.stderr, flush=True)
            return False
        sys.stderr.write(confirm_question(tool.name, arguments))
        sys.stderr.flush()
        answer = await _read_line()
        if not answer.endswith("\n"):
            sys.stderr.write("\n")  # end of input: the question's line still ends
        return is_yes(answer)

    return confirm


async def _run_with_tools(args: argparse.Namespace, hub: Any, prompt: str, opts: Any, toolset: Any) -> int:
    """``run --tools``: the tool loop on one prompt; calls and results on stderr, the model's text on stdout;
    exit 1 when the step limit stopped it before an answer."""
    from llmspell.chat import Conversation
    from llmspell.session import Session

    warning = await hub.chat_warning(args.model)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    session = Session(hub, None, Conversation(args.model, system=args.system, options=opts))
    lines = _ToolLines()
    session.use_tools(
        toolset.registry,
        confirm=_confirmer(sys.stdin.isatty()),
        on_event=lines,
        tool_choice=args.tool_choice or "auto",
        max_steps=args.max_steps,
    )
    turn = session.send(prompt)
    try:
        async for chunk in turn:
            lines.text(chunk.text)
    finally:
        await turn.aclose()
        if not lines.text_ended:
            lines.text("\n")
    result = session.result(turn)
    if args.verbose and result.stats:
        print("\n" + format_stats(result.stats), file=sys.stderr)
        print(f"{lines.calls} tool calls in {turn.steps} model steps", file=sys.stderr)  # type: ignore[attr-defined]
    return 1 if getattr(turn, "limit", None) is not None else 0


async def cmd_init_config(args: argparse.Namespace) -> int:
    from llmspell.config import write_config_template

    path = write_config_template(force=args.force)
    print(f"wrote {path}")
    return 0


# ----- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by tests and docs to check the README's commands)."""
    p = argparse.ArgumentParser(
        prog="llmspell",
        description="Local LLMs: Ollama and embedded llama.cpp models.",
        epilog="Model syntax: local/NAME:VARIANT@BACKEND or BACKEND/NAME:VARIANT (e.g. smollm2:135m, "
        "tinyllama:Q4_K_M@llamacpp, ollama/qwen2.5:0.5b) or a path to a .gguf file.",
    )
    p.add_argument("--version", action="version", version=f"llmspell {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model = sub.add_parser("model", help="list, pull, inspect and remove models")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    m = msub.add_parser("list", help="every model of every backend: where it is, size, quantization")
    m.add_argument("--backend", help="only this backend (llamacpp, ollama; aliases such as candle work too)")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=cmd_list)
    m = msub.add_parser("available", help="the catalog, with what each model needs and whether it fits here")
    m.add_argument("--recommended", action="store_true", help="only the recommended models")
    m.add_argument("--all-quants", action="store_true", help="every quantization, not just the default")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=cmd_available)
    m = msub.add_parser("pull", help="download a model (Hugging Face for @llamacpp, the server for @ollama)")
    m.add_argument("model", help="e.g. tinyllama:Q4_K_M@llamacpp or llamacpp/tinyllama")
    m.add_argument(
        "--quantization", metavar="QUANT", help="which quantization to pull (Q4_K_M, Q8_0, ...): NAME:QUANT said apart"
    )
    m.set_defaults(func=cmd_pull)
    m = msub.add_parser("info", help="family, parameters, quantization, context, chat template, file, sha256")
    m.add_argument("model")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.add_argument("--template", action="store_true", help="print the whole chat template")
    m.set_defaults(func=cmd_info)
    m = msub.add_parser("status", help="each backend: ready or not and why, version, device, models")
    m.add_argument("--backend", help="only this backend (llamacpp, ollama; aliases such as candle work too)")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=cmd_status)
    m = msub.add_parser("import", help="copy (or link) a .gguf file into the models folder, to run it by name")
    m.add_argument("file", type=Path, help="the .gguf file (the first part of a split model)")
    m.add_argument("--name", help="the name it runs by (default: the file name without .gguf)")
    m.add_argument("--link", action="store_true", help="link to the file where it is instead of copying it")
    m.add_argument("--replace", action="store_true", help="replace a model imported under that name before")
    m.set_defaults(func=cmd_import)
    m = msub.add_parser("rm", help="delete a model (name the backend: NAME@llamacpp)")
    m.add_argument("model")
    m.set_defaults(func=cmd_rm)

    r = sub.add_parser("run", help="answer one prompt, streaming")
    r.add_argument("model", help="model spec, e.g. smollm2:135m")
    r.add_argument("prompt", nargs="*", help="the prompt (or standard input)")
    r.add_argument("--verbose", "-v", action="store_true", help="print timing statistics after the answer")
    r.add_argument("--raw", action="store_true", help="plain completion of the prompt, no chat template")
    r.add_argument("--system", help="system prompt")
    add_option_flags(r)
    add_tool_flags(r)
    r.set_defaults(func=cmd_run)

    from llmspell.cli.embed import add_embed_parser

    add_embed_parser(sub)

    from llmspell.cli.repl import add_chat_parser

    add_chat_parser(sub)

    c = sub.add_parser("init-config", help="write a commented ~/.llmspell/config.toml")
    c.add_argument("--force", action="store_true", help="overwrite an existing file")
    c.set_defaults(func=cmd_init_config)

    from llmspell.cli.kernel import add_kernel_parser

    add_kernel_parser(sub)

    from llmspell.cli.serve import add_serve_parser

    add_serve_parser(sub)

    from llmspell.cli.arena import add_arena_parser

    add_arena_parser(sub)

    from llmspell.cli.endpoint import add_endpoint_parser

    add_endpoint_parser(sub)
    return p


#: the commands whose trailing words may come after options, and where those words go
_TRAILING_WORDS = {"run": "prompt", "embed": "texts"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; words of a prompt (or texts to embed) may come after options
    (``run M --raw Once upon a time``, ``embed M --json first second``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        dest = _TRAILING_WORDS.get(args.command)
        if dest is None or any(word.startswith("-") for word in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, dest, [*getattr(args, dest), *extra])
    return args


async def _main(args: argparse.Namespace) -> int:
    try:
        return int(await args.func(args))
    finally:
        from llmspell import api

        if api._hub is not None:
            await api._hub.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmspell`` script; returns the exit code."""
    args = parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except LLMSpellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncancelled", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # an unexpected failure still gets one readable line, not a traceback
        if os.environ.get("LLMSPELL_DEBUG"):
            raise
        print(
            f"internal error: {type(exc).__name__}: {exc}\n  set LLMSPELL_DEBUG=1 to see the traceback "
            "and please report it",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
