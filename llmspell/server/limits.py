"""Connection limits uvicorn does not have: deadlines for a request's headers and body, and a cap on open
connections.

uvicorn closes a connection that stays idle after a response, but not one that never completes a request: a
client sending a byte a second, or ten thousand sockets opened and left silent, held the server's file
descriptors for good (11 -> 19,279 in one test). This protocol closes a connection whose request headers are
not complete within ``header_timeout`` seconds, answers 408 and closes one whose body is not complete within
``body_timeout`` seconds of its headers (a trickled body held a request, and its handler, open for good), and
refuses a connection past ``max_connections`` at once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: seconds a client has to send a complete request line and headers
HEADER_TIMEOUT = 10.0
#: seconds a client has, once its headers are in, to send the whole body (a few MB on a slow link)
BODY_TIMEOUT = 60.0
#: connections open at once; one more is closed as soon as it is made
MAX_CONNECTIONS = 500
#: what a client whose body came too late is told before the connection closes
_TOO_SLOW = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
#: at most one line in the server's output per kind of refusal in this many seconds
_LOG_EVERY = 5.0
_last_logged: dict[str, float] = {}


def _log(kind: str, line: str) -> None:
    now = time.monotonic()
    if now - _last_logged.get(kind, -_LOG_EVERY) >= _LOG_EVERY:
        _last_logged[kind] = now
        print(f"llmspell serve: {line}", file=sys.stderr, flush=True)


def limited_protocol(
    header_timeout: float = HEADER_TIMEOUT, max_connections: int = MAX_CONNECTIONS, body_timeout: float = BODY_TIMEOUT
) -> type[Any]:
    """uvicorn's h11 protocol with header and body deadlines and a connection cap (pass it as ``http=``)."""

    class LimitedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _body_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                _log("cap", f"refused a connection: {max_connections} are open already (--max-connections)")
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                where = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
                _log("slow", f"closed the connection of {where}: no complete request in {header_timeout:g} s")
                self.transport.close()

        def _body_late(self) -> None:
            self._body_deadline = None
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                where = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
                _log("body", f"closed the connection of {where}: no complete request body in {body_timeout:g} s")
                if self.cycle is None or not self.cycle.response_started:
                    detail = f'{{"error": "the request body did not arrive within {body_timeout:g} s"}}'.encode()
                    self.transport.write(_TOO_SLOW + b"Content-Length: %d\r\n\r\n" % len(detail) + detail)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            state = self.conn.their_state
            if state is not h11.IDLE:
                self._disarm()  # the headers are in: the request runs as long as it needs, once its body is in
            if state is h11.SEND_BODY and self._body_deadline is None:
                self._body_deadline = self.loop.call_later(body_timeout, self._body_late)
            elif state is not h11.SEND_BODY and self._body_deadline is not None:
                self._body_deadline.cancel()
                self._body_deadline = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection has the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._body_deadline is not None:
                self._body_deadline.cancel()
                self._body_deadline = None
            super().connection_lost(exc)

    return LimitedH11Protocol
