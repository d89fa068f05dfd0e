"""``llmspell endpoint add/list/rm/test``: named servers elsewhere (``MODEL@NAME``), kept in config.toml."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from llmspell import config as cfgmod
from llmspell.endpoints import KINDS, Endpoint
from llmspell.errors import BackendUnavailable, GenerationError
from llmspell.types import printable

if TYPE_CHECKING:
    from llmspell.backends.base import Backend

#: how many model ids `endpoint test` prints
SHOWN_MODELS = 10
#: what `endpoint test --model` asks, and how long the answer may be
TEST_PROMPT = "Say hello."
TEST_MAX_TOKENS = 8


def add_endpoint_parser(sub: Any) -> None:
    """Add ``endpoint add|list|rm|test`` to the ``llmspell`` command."""
    e = sub.add_parser(
        "endpoint",
        help="add, list, remove and test servers elsewhere (vLLM, llama-server, another Ollama, ...)",
        description="Named endpoints: servers speaking the OpenAI or the Ollama API, each a backend under its own "
        "name (run a model there as MODEL@NAME). They are kept in config.toml, whose comments and layout are left "
        "as they are; an API key is never written there, only the name of the variable holding it.",
    )
    esub = e.add_subparsers(dest="endpoint_command", required=True, metavar="ACTION")

    a = esub.add_parser("add", help="add a server to config.toml")
    a.add_argument("name", help="its name, written after '@' (lowercase letters, digits, '-', '_')")
    a.add_argument("url", help="its address, e.g. http://gpubox:8000/v1 (an OpenAI server without a path gets /v1)")
    a.add_argument(
        "--kind", choices=KINDS, help="the API it speaks (default: openai, or ollama for an address on port 11434)"
    )
    a.add_argument(
        "--key-env", metavar="VAR", help="the environment variable holding its API key (never the key itself)"
    )
    a.add_argument(
        "--header", action="append", default=[], metavar="K=V", help="a header sent with every request (repeatable)"
    )
    a.add_argument(
        "--models", nargs="+", action="extend", default=[], metavar="GLOB", help="offer only these model ids (globs)"
    )
    a.add_argument("--connect-timeout", type=float, metavar="S", help="seconds to wait for a connection")
    a.add_argument("--read-timeout", type=float, metavar="S", help="seconds to wait for the next bytes of an answer")
    a.add_argument("--replace", action="store_true", help="replace an endpoint of that name")
    a.set_defaults(func=cmd_add)

    ls = esub.add_parser("list", help="the endpoints in config.toml")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)

    rm = esub.add_parser("rm", help="remove an endpoint from config.toml")
    rm.add_argument("name")
    rm.set_defaults(func=cmd_rm)

    t = esub.add_parser("test", help="reach an endpoint: latency, server, models; --model also asks for an answer")
    t.add_argument("name")
    t.add_argument("--model", metavar="M", help=f"stream a short answer ({TEST_MAX_TOKENS} tokens) from this model")
    t.set_defaults(func=cmd_test)


def _key_state(endpoint: Endpoint) -> str:
    """The key's variable and whether it is set (never its value)."""
    if not endpoint.api_key_env:
        return "-"
    return f"{endpoint.api_key_env} ({'set' if endpoint.has_key() else 'not set'})"


async def cmd_add(args: argparse.Namespace) -> int:
    """Write an ``[[endpoints]]`` entry."""
    from llmspell import endpoint_edit  # tomlkit is read only when the config is edited

    path = cfgmod.config_path()
    kind, why = (args.kind, None) if args.kind else endpoint_edit.guess_kind(args.url)
    entry = endpoint_edit.make_entry(
        args.name,
        args.url,
        kind=kind,
        key_env=args.key_env,
        headers=dict(endpoint_edit.parse_header(h) for h in args.header),
        models=args.models,
        connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout,
        path=path,
    )
    endpoint, replaced = endpoint_edit.add_endpoint(entry, replace=args.replace, path=path)
    print(f"{'replaced' if replaced else 'added'} endpoint {endpoint.name} ({endpoint.kind}, {endpoint.url}) in {path}")
    if why:
        print(why)
    print(f'use it: llmspell run MODEL@{endpoint.name} "..."   (check it: llmspell endpoint test {endpoint.name})')
    if endpoint.api_key_env and not endpoint.has_key():
        print(
            f"{endpoint.api_key_env} is not set: export {endpoint.api_key_env}=... (the server's key) before using it"
        )
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    """Print the endpoints of the config."""
    from llmspell import endpoint_edit  # tomlkit is read only when the config is edited

    path = cfgmod.config_path()
    endpoints = endpoint_edit.list_endpoints(path)
    if args.json:
        records = [
            {
                "name": e.name,
                "kind": e.kind,
                "url": e.url,
                "api_key_env": e.api_key_env,
                "api_key_set": e.has_key() if e.api_key_env else None,
                "headers": sorted(e.headers),
                "models": list(e.models),
                "connect_timeout": e.connect_timeout,
                "read_timeout": e.read_timeout,
                "enabled": e.enabled,
            }
            for e in endpoints
        ]
        print(json.dumps({"config": str(path), "endpoints": records}, indent=2))
        return 0
    if not endpoints:
        print(f"no endpoints in {path}; add one with: llmspell endpoint add NAME URL")
        return 0
    rows = [
        [e.name, e.kind, e.url, _key_state(e), ", ".join(e.models) or "all", "yes" if e.enabled else "no"]
        for e in endpoints
    ]
    headers = ["NAME", "KIND", "URL", "KEY", "MODELS", "ENABLED"]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def cmd_rm(args: argparse.Namespace) -> int:
    """Take an entry out of the config."""
    from llmspell import endpoint_edit  # tomlkit is read only when the config is edited

    path = cfgmod.config_path()
    endpoint_edit.remove_endpoint(args.name, path)
    print(f"removed endpoint {args.name} from {path}")
    return 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


async def cmd_test(args: argparse.Namespace) -> int:
    """Reach one endpoint and report what it says; exit 1 when it cannot be used."""
    from llmspell import endpoint_edit
    from llmspell.backends.registry import backend_class

    config, endpoint = endpoint_edit.find_endpoint(args.name)
    backend = backend_class(endpoint.kind).from_endpoint(config, endpoint)
    try:
        return await _test(backend, endpoint, args.model)
    finally:
        await backend.close()


async def _test(backend: Backend, endpoint: Endpoint, model: str | None) -> int:
    started = time.perf_counter()
    status = await backend.status()
    latency = status.latency if status.latency is not None else time.perf_counter() - started
    if not status.ready:
        # the status keeps the message only; a listing raises the same failure with its hint (the key's variable)
        await backend.list_models()
        raise BackendUnavailable(status.error or f"endpoint {endpoint.name} ({endpoint.url}) is not usable")
    off = "" if endpoint.enabled else " (enabled = false in the config: not offered until turned on)"
    print(f"endpoint {endpoint.name}: reachable ({endpoint.kind}, {endpoint.url}){off}")
    print(f"  round trip:  {_ms(latency)}")
    print(f"  server:      {printable(status.version) if status.version else 'did not say'}")
    if endpoint.api_key_env:
        sent = "sent" if endpoint.has_key() else "not set, so no key was sent"
        print(f"  key:         {endpoint.api_key_env} ({sent})")
    models = [m.name for m in await backend.list_models()]
    where = f" (models filter: {', '.join(endpoint.models)})" if endpoint.models else ""
    print(f"  models:      {len(models)}{where}")
    for name in models[:SHOWN_MODELS]:
        print(f"    {printable(name)}")
    if len(models) > SHOWN_MODELS:
        print(f"    ... and {len(models) - SHOWN_MODELS} more (llmspell model list --backend {endpoint.name})")
    if model:
        if model not in models:
            # some servers answer under any name (or an alias); the user should know which happened
            print(f"  note: {endpoint.name} does not list {printable(model)}; asking it anyway")
        await _ask(backend, endpoint, model)
    return 0


async def _ask(backend: Backend, endpoint: Endpoint, model: str) -> None:
    """Stream a short answer from ``model`` and print it with its first-token time and speed."""
    from llmspell.spec import parse_spec
    from llmspell.types import Message, Options

    spec = parse_spec(f"{model}@{endpoint.name}")
    text, stats = "", None
    stream = backend.chat(spec, [Message("user", TEST_PROMPT)], Options(max_tokens=TEST_MAX_TOKENS, temperature=0.0))
    async with contextlib.aclosing(stream):
        async for chunk in stream:
            text += chunk.text
            if chunk.stats is not None:
                stats = chunk.stats
    if stats is None:
        raise GenerationError(f"endpoint {endpoint.name} ({endpoint.url}): {model} sent no end to its answer")
    answer = " ".join(printable(text).split())
    print(f"  answer ({model}): {answer!r}")
    speed = f"{stats.generation_tokens_per_s:.1f} tok/s" if stats.generation_tokens_per_s else "tok/s n/a"
    counted = ", counted here (the server sent no usage)" if stats.estimated else ""
    print(f"  TTFT {_ms(stats.time_to_first_token)} · {speed} · {stats.generated_tokens} tokens{counted}")
