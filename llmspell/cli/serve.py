"""``llmspell serve``: the Ollama and OpenAI APIs over the core, on uvicorn; Ctrl-C stops it and unloads models."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmspell.errors import LLMSpellError

DEFAULT_PORT = 11435


def add_serve_parser(sub: Any) -> None:
    """Add the ``serve`` command to the CLI's subparsers."""
    s = sub.add_parser(
        "serve",
        help="serve the models over the Ollama API (/api) and the OpenAI API (/v1)",
        description="Serve every model llmspell can run over HTTP: the Ollama REST API under /api, the OpenAI "
        "API under /v1, plus /health and /generate. Binds 127.0.0.1 unless told otherwise.",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    s.add_argument("--config", type=Path, help="read this config.toml instead of ~/.llmspell/config.toml")
    s.add_argument(
        "--api-key",
        default=os.environ.get("LLMSPELL_API_KEY"),
        help="require 'Authorization: Bearer KEY' on every request (default: $LLMSPELL_API_KEY, else none)",
    )
    s.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin allowed besides this machine's own (repeatable; '*' is a wildcard: chrome-extension://*)",
    )
    s.add_argument(
        "--model-folder",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="let clients name .gguf files inside DIR by path (repeatable; default: no paths over HTTP)",
    )
    s.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection that sends no complete request within this time (default 10)",
    )
    s.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="answer 408 and close a connection whose request body is not complete this long after its headers "
        "(default 60)",
    )
    s.add_argument(
        "--max-connections",
        type=int,
        default=500,
        help="connections open at once; more are closed at once (default 500)",
    )
    s.add_argument(
        "--max-queue",
        type=int,
        default=16,
        help="requests that may wait per model behind the one generating; more get 503 (default 16)",
    )
    s.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="copies of one model answering at once; more requests for it wait their turn (default 1: each "
        "copy costs the model's context memory again, and on a CPU the copies share the same cores)",
    )
    s.add_argument(
        "--strict",
        action="store_true",
        help="refuse unknown fields and options with 400 (default: ignore them with a warning, as Ollama does)",
    )
    s.add_argument("--quiet", action="store_true", help="no access log line per request")
    s.set_defaults(func=cmd_serve)


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise LLMSpellError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="another server (Ollama?) may use that port; choose another with --port",
            ) from None


def _drop_self_loop(hub: Any, host: str, port: int) -> None:
    """A backend pointed at this very server (the Ollama backend, or an endpoint) would call itself for every
    request; leave it out."""
    import httpx

    from llmspell.server.security import is_local_host

    for name, backend in list(hub.backends.items()):
        address = backend.address
        if not address:
            continue
        url = httpx.URL(address)
        if url.port == port and (is_local_host(url.host) and (host in ("0.0.0.0", "::") or is_local_host(host))):
            del hub.backends[name]
            what = "the Ollama backend" if name == "ollama" else f"the endpoint {name}"
            print(f"note: not using {what} at {address}: that is this server", file=sys.stderr)


async def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server until Ctrl-C or SIGTERM."""
    import uvicorn

    from llmspell.config import load_config
    from llmspell.hub import Hub
    from llmspell.server.app import create_app
    from llmspell.server.limits import limited_protocol
    from llmspell.server.security import is_loopback_bind
    from llmspell.server.state import ServerSettings

    if args.max_queue < 0:
        raise LLMSpellError(f"--max-queue must be 0 or more, not {args.max_queue}")
    if not 0.1 <= args.header_timeout <= 3600:  # also False for NaN
        raise LLMSpellError(f"--header-timeout must be 0.1 to 3600 seconds, not {args.header_timeout}")
    if not 0.1 <= args.body_timeout <= 3600:  # also False for NaN
        raise LLMSpellError(f"--body-timeout must be 0.1 to 3600 seconds, not {args.body_timeout}")
    if not 1 <= args.max_connections <= 100_000:
        raise LLMSpellError(f"--max-connections must be 1 to 100000, not {args.max_connections}")
    if not 1 <= args.parallel <= 16:
        raise LLMSpellError(f"--parallel must be 1 to 16, not {args.parallel}")
    if args.config is not None and not args.config.is_file():
        raise LLMSpellError(
            f"the config file {args.config} does not exist",
            hint="write one with `llmspell init-config`, or leave --config out",
        )
    config = load_config(args.config) if args.config else load_config()
    hub = Hub(config)
    _drop_self_loop(hub, args.host, args.port)
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        cors_origins=list(args.cors_origin),
        max_queue=args.max_queue,
        model_folders=list(args.model_folder),
        strict=args.strict,
        quiet=args.quiet,
        parallel=args.parallel,
    )
    _check_port(args.host, args.port)
    app = create_app(hub, settings)
    if not is_loopback_bind(args.host):
        print(
            f"warning: listening on {args.host}: other machines on the network can use these models"
            + ("" if settings.api_key else " without a key (consider --api-key)"),
            file=sys.stderr,
        )
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}"
    print(f"llmspell serve: {url}  (Ollama API at {url}/api, OpenAI API at {url}/v1; Ctrl-C stops)", flush=True)
    server = _Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=5,
            http=limited_protocol(args.header_timeout, args.max_connections, args.body_timeout),
        ),
        on_exit=app.state.stop,
    )
    await server.serve()
    print("llmspell serve: stopped", file=sys.stderr, flush=True)
    return 0


class _Server:
    """uvicorn's server, except that a signal ends it with exit code 0 after the clean shutdown."""

    def __new__(cls, config: Any, on_exit: Callable[[], None]) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                on_exit()  # streams still answering end with a last line that says why
                super().handle_exit(sig, frame)
                # uvicorn re-raises the signal after shutting down; the shutdown was already clean
                self._captured_signals.clear()

        return Server(config)
