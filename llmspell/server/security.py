"""The server's guards, as Ollama has them: a DNS-rebinding check on the Host header, local-only CORS (and no
work at all for a page of another site), an API key."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: browser origins that are this machine (any port), which CORS lets in without configuration
LOCAL_ORIGIN_REGEX = (
    r"^(https?://(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(:\d+)?"
    r"|(app|file|tauri|vscode-webview|vscode-file)://.*)$"
)
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def is_loopback_bind(host: str) -> bool:
    """Whether the server listens only on this machine (the case the Host-header guard protects)."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a Host header: ``[::1]:80`` -> ``::1``, ``localhost:11435`` -> ``localhost``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header[1:]
    if header.count(":") == 1:
        return header.split(":", 1)[0]
    return header


def is_local_host(name: str) -> bool:
    """A name a local client would use: localhost, a loopback or private address, this machine's own name."""
    if name in ("", "localhost") or name.endswith(_LOCAL_SUFFIXES):
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return name == socket.gethostname().lower()
    return addr.is_loopback or addr.is_private or addr.is_unspecified


def _json_error(status: int, message: str, path: str) -> tuple[int, bytes]:
    if path.startswith("/v1/"):
        kind = {401: "authentication_error", 403: "permission_error"}.get(status, "invalid_request_error")
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    else:
        body = {"error": message}
    return status, json.dumps(body).encode()


async def _refuse(send: Send, status: int, message: str, path: str, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    status, body = _json_error(status, message, path)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HostGuard:
    """On a loopback bind, refuse requests whose Host header names another machine (DNS rebinding)."""

    def __init__(self, app: ASGIApp, *, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the Host header, then pass the request on."""
        if self.enabled and scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not is_local_host(host_name(host)):
                await _refuse(
                    send,
                    403,
                    f"host {host!r} is not a local name; this server only answers requests addressed to this machine",
                    scope["path"],
                )
                return
        await self.app(scope, receive, send)


class ApiKeyGuard:
    """With an API key set, every request but the liveness check ``/`` must carry ``Authorization: Bearer KEY``."""

    def __init__(self, app: ASGIApp, *, key: str | None) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the bearer token, then pass the request on."""
        if self.key and scope["type"] == "http" and scope["path"] != "/" and scope["method"] != "OPTIONS":
            auth = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key.encode()):
                why = "missing API key" if not auth else "wrong API key"
                await _refuse(
                    send,
                    401,
                    f"{why}: send the header 'Authorization: Bearer <key>' with the key given to llmspell serve",
                    scope["path"],
                    [(b"www-authenticate", b"Bearer")],
                )
                return
        await self.app(scope, receive, send)


class OriginGuard:
    """Refuse, before any work, a request a web page on another site sends.

    CORS only hides the answer from such a page: a "simple" cross-site POST (``Content-Type: text/plain``, no
    preflight) still ran a generation or started a pull. So a request whose ``Origin`` header is not this
    machine's or an allowed one gets 403 here. Programs (curl, the Python clients) send no Origin and pass.
    """

    def __init__(self, app: ASGIApp, *, allowed: list[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the Origin header, then pass the request on."""
        if scope["type"] == "http":
            origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
            if origin is not None and not origin_allowed(origin, self.allowed):
                await _refuse(
                    send,
                    403,
                    f"requests from web pages at {origin!r} are refused; start llmspell serve with "
                    f"--cors-origin {origin} to allow that site",
                    scope["path"],
                )
                return
        await self.app(scope, receive, send)


def origin_allowed(origin: str, extra: list[str]) -> bool:
    """Whether a browser page at ``origin`` may use the server: this machine's, or one of ``extra``, which may be a
    pattern (``chrome-extension://*``, as Ollama's OLLAMA_ORIGINS takes them)."""
    return re.match(origin_regex(extra), origin) is not None


def origin_regex(extra: list[str]) -> str:
    """The origins allowed, as one regular expression: this machine's and each of ``extra`` (``*`` a wildcard)."""
    patterns = [re.escape(o).replace(r"\*", ".*") for o in extra]
    return "|".join([LOCAL_ORIGIN_REGEX, *(f"^{p}$" for p in patterns)])
