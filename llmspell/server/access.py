"""The server's access log: one line per request (method, path, status, model, tokens, duration, and why a
request failed), written when its response has ended; ``--quiet`` turns it off."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

if TYPE_CHECKING:
    from llmspell.server.state import ServerState
    from llmspell.spec import ModelSpec

#: the bytes of an error body kept to show its message in the log
_ERROR_BODY_LIMIT = 4096


def note(request: Request, **fields: Any) -> None:
    """Add what a route learned (the model it ran, tokens read and written) to its access-log line."""
    request.state.access = {**getattr(request.state, "access", {}), **fields}


def model_shown(asked: str | None, spec: ModelSpec) -> str:
    """The model of a log line: the one run, and the name asked for when it was another (an alias, a spelling)."""
    name = (asked or "").removesuffix(":latest")
    run = str(spec)
    return run if name in ("", spec.tag, run) else f"{name} ({run})"


def add_tokens(request: Request, read: int, written: int) -> None:
    """Count one answer's tokens into its request's line (a request of several choices or prompts adds up)."""
    access = getattr(request.state, "access", {})
    note(
        request,
        prompt_tokens=access.get("prompt_tokens", 0) + read,
        tokens=access.get("tokens", 0) + written,
    )


def write_line(text: str) -> None:
    """One line to the server's output (stderr, where uvicorn and the server's own notes go)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # the output was closed: logging must never fail a request
        pass


class AccessLog:
    """ASGI middleware writing one line per HTTP request once its response has ended (or the client left)."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.server = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, watching its status and, for an error, the message in its body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        shared: dict[str, Any] = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 0
        error_body = bytearray()

        async def watch(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status >= 400 and len(error_body) < _ERROR_BODY_LIMIT:
                error_body.extend(message.get("body", b"")[: _ERROR_BODY_LIMIT - len(error_body)])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if not self.server.settings.quiet:
                access = shared.get("access", {})
                write_line(_line(scope, status, time.perf_counter() - started, access, bytes(error_body)))


def _line(scope: Any, status: int, seconds: float, access: dict[str, Any], body: bytes) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    client = scope.get("client") or ("-", 0)
    path = scope.get("path", "")
    parts = [when, str(client[0]), scope.get("method", "-"), path, str(status or "-")]
    if access.get("model"):
        parts.append(str(access["model"]))
    tokens = [f"{access[k]} {label}" for k, label in (("prompt_tokens", "in"), ("tokens", "out")) if k in access]
    if tokens:
        parts.append("tokens " + "/".join(tokens))
    parts.append(f"{seconds:.3f}s")
    if status >= 400 or status == 0:
        parts.append("- " + (_error_message(body) or ("client left" if status == 0 else "")))
    return " ".join(p for p in parts if p)


def _error_message(body: bytes) -> str:
    """The message of an error body in either API's dialect, on one line."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace").strip().splitlines()[0][:300] if body.strip() else ""
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        err = err.get("message")
    return " ".join(str(err or "").split())[:300]
