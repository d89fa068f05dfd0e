"""FaultProxy: a test-only stand-in between a client and a real server, to inject faults on demand.

A real server cannot be made to rate-limit, fail with a 5xx, cut a stream in the middle, end one early, hold back
its first byte or leave out the usage when a test asks; this proxy does, one fault at a time, and forwards
everything else unchanged to the real upstream (a ``LlamaCppServer`` or a ``llmspell serve``). It streams: each
SSE event is passed on as it arrives, never a whole answer at once. It also records what it saw, so a test can
tell that a refused request never left the client or that a client hung up in the middle of an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

#: headers that describe one hop (or the body's framing, which the proxy sets itself), never forwarded
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "content-encoding",
        "host",
        "accept-encoding",
    }
)
#: the blank line that ends one SSE event (servers use either line ending)
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
_REASONS |= {502: "Bad Gateway", 503: "Service Unavailable"}
#: OpenAI-style error bodies for the statuses the proxy answers itself
_ERRORS = {
    429: ("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", "overloaded"),
}


@dataclass(frozen=True)
class Fault:
    """One fault, injected into the next request whose path contains ``path`` (then the proxy forwards again)."""

    #: answer this status with an OpenAI-style error body instead of asking the upstream
    status: int | None = None
    #: the Retry-After header sent with ``status``
    retry_after: str | None = None
    #: close the socket abruptly after this many SSE events (no end of the chunked body)
    cut_after: int | None = None
    #: end the body cleanly after this many SSE events, dropping the rest (finish reason and ``[DONE]`` included)
    end_after: int | None = None
    #: seconds before the first byte of the answer (its status line) goes back
    first_byte_delay: float = 0.0
    #: seconds between the answer's headers and its first SSE event
    first_event_delay: float = 0.0
    #: leave the ``usage`` out of every event (an event that only carries usage is dropped)
    strip_usage: bool = False
    #: the requests it applies to: those whose path contains this
    path: str = "completions"

    @classmethod
    def rate_limited(cls, retry_after: int = 7) -> Fault:
        """429 with ``Retry-After``."""
        return cls(status=429, retry_after=str(retry_after))

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx answer."""
        return cls(status=status)

    @classmethod
    def cut(cls, after: int) -> Fault:
        """The connection dropped in the middle of the answer."""
        return cls(cut_after=after)

    @classmethod
    def end_early(cls, after: int) -> Fault:
        """The answer ends cleanly but early: no finish reason, no ``[DONE]``."""
        return cls(end_after=after)

    @classmethod
    def slow_first_byte(cls, seconds: float) -> Fault:
        """Nothing at all comes back for ``seconds``."""
        return cls(first_byte_delay=seconds)

    @classmethod
    def slow_first_event(cls, seconds: float) -> Fault:
        """The headers come at once, the first token only after ``seconds``."""
        return cls(first_event_delay=seconds)

    @classmethod
    def no_usage(cls) -> Fault:
        """The answer without its ``usage``."""
        return cls(strip_usage=True)


@dataclass
class Exchange:
    """One request the proxy took and what became of it."""

    method: str
    path: str
    headers: dict[str, str]
    fault: Fault | None = None
    #: the status the client was answered with (None: it got no status line)
    status: int | None = None
    #: SSE events passed on to the client
    events: int = 0
    #: the whole answer, end of body included, went back
    finished: bool = False
    #: the client closed its connection before the answer was over
    client_left: bool = False
    #: the proxy is done with it (every field above is final)
    over: bool = False
    body: bytes = field(default=b"", repr=False)


class FaultProxy:
    """A real HTTP server on a free 127.0.0.1 port, in its own thread, forwarding to ``upstream`` (a server's
    root URL); ``inject`` a fault for the next request; ``exchanges`` is what it saw. Test-only."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self.exchanges: list[Exchange] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """The proxy's root (put ``/v1`` after it for the OpenAI API)."""
        return f"http://127.0.0.1:{self.port}"

    def inject(self, fault: Fault) -> None:
        """Apply ``fault`` to the next request it matches (faults are used once, in the order given)."""
        with self._lock:
            self._faults.append(fault)

    def reset(self) -> None:
        """Forget the faults not yet used and the exchanges seen (between tests on one module-wide proxy)."""
        with self._lock:
            self._faults.clear()
            self.exchanges.clear()

    def wait_over(self, count: int = 1, bound: float = 30.0) -> list[Exchange]:
        """The exchanges, once at least ``count`` of them are over (polled; fails after ``bound`` s)."""
        deadline = time.monotonic() + bound
        while True:
            with self._lock:
                seen = list(self.exchanges)
            if sum(e.over for e in seen) >= count:
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"the proxy saw {seen} within {bound:g} s, fewer than {count} over")
            time.sleep(0.01)

    # -- lifetime -----------------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen, and return once it accepts connections."""
        self._thread = threading.Thread(target=self._run, name="FaultProxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the fault proxy did not start within 30 s")
        if self._failure is not None:
            raise AssertionError(f"the fault proxy failed to start: {self._failure!r}")
        return self

    def stop(self) -> None:
        """Stop listening, end every exchange still running and join the thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(30)
        alive, self._thread = self._thread.is_alive(), None
        if alive:
            raise AssertionError("the fault proxy did not stop within 30 s")

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start(); the thread must not die silently
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()
        # no read timeout: a slow upstream is what some tests are about; the test's own bounds apply
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._serve(reader, writer)
            finally:
                tasks.discard(task)

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()
            await self._http.aclose()

    # -- one connection, one request ----------------------------------------------------------------------------

    def _take(self, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.path in path:
                    return self._faults.pop(i)
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        exchange: Exchange | None = None
        try:
            request = await _read_request(reader)
            if request is None:
                return
            method, path, headers, body = request
            exchange = Exchange(method, path, headers, self._take(path), body=body)
            with self._lock:
                self.exchanges.append(exchange)
            # the client sends nothing more on this connection (every answer says Connection: close), so the end
            # of its stream is the client hanging up
            gone = asyncio.Event()
            watch = asyncio.create_task(_watch_eof(reader, gone))
            try:
                await self._answer(exchange, writer, gone)
            finally:
                watch.cancel()
                with contextlib.suppress(BaseException):
                    await watch
        except (ConnectionError, asyncio.IncompleteReadError):
            if exchange is not None:
                exchange.client_left = True
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if exchange is not None:
                exchange.over = True

    async def _answer(self, ex: Exchange, writer: asyncio.StreamWriter, gone: asyncio.Event) -> None:
        fault = ex.fault or Fault()
        if fault.first_byte_delay and not await _pause(fault.first_byte_delay, gone):
            ex.client_left = True
            return
        if fault.status is not None:
            await self._error_answer(ex, writer, fault)
            return
        upstream = self._http.build_request(
            ex.method,
            self.upstream + ex.path,
            headers=[(k, v) for k, v in ex.headers.items() if k not in _HOP] + [("accept-encoding", "identity")],
            content=ex.body,
        )
        resp = await _unless_gone(self._http.send(upstream, stream=True), gone)
        if resp is None:
            ex.client_left = True
            return
        try:
            await self._relay(ex, resp, writer, gone, fault)
        finally:
            # closing the upstream response closes its connection: the real server sees the client go
            await resp.aclose()

    async def _error_answer(self, ex: Exchange, writer: asyncio.StreamWriter, fault: Fault) -> None:
        assert fault.status is not None
        message, kind, code = _ERRORS.get(fault.status, ("injected failure", "server_error", None))
        body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
        extra = [("retry-after", fault.retry_after)] if fault.retry_after else []
        head = _head(fault.status, [("content-type", "application/json"), *extra], len(body))
        ex.status = fault.status  # before it is sent: the client may look at the record as soon as it has it
        writer.write(head + body)
        await writer.drain()
        ex.finished = True

    async def _relay(
        self, ex: Exchange, resp: httpx.Response, writer: asyncio.StreamWriter, gone: asyncio.Event, fault: Fault
    ) -> None:
        """The upstream's answer passed on as it comes, with the fault applied to its SSE events."""
        headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in _HOP]
        ex.status = resp.status_code
        writer.write(_head(resp.status_code, headers, None))
        await writer.drain()
        sse = resp.headers.get("content-type", "").startswith("text/event-stream")
        delay = fault.first_event_delay
        pending = b""
        chunks = resp.aiter_raw()
        while True:
            piece = await _unless_gone(anext(chunks, None), gone)
            if gone.is_set():
                ex.client_left = True
                return
            if piece is None:
                break
            if not sse:
                await _send_chunk(writer, piece)
                continue
            pending += piece
            while (end := _EVENT_END.search(pending)) is not None:
                event, pending = pending[: end.end()], pending[end.end() :]
                if fault.strip_usage:
                    event = _without_usage(event)
                    if not event:
                        continue
                if delay:
                    if not await _pause(delay, gone):
                        ex.client_left = True
                        return
                    delay = 0.0
                await _send_chunk(writer, event)
                ex.events += 1
                if ex.events == fault.cut_after:
                    # abruptly: no end of the chunked body, as a dropped connection or a killed server leaves it
                    writer.transport.abort()
                    return
                if ex.events == fault.end_after:
                    await _end_body(writer)
                    return
        if pending:
            await _send_chunk(writer, pending)
        await _end_body(writer)
        ex.finished = True


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request: method, path, headers (lowercase names) and body; None when the client sent none."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, path, headers, body


def _head(status: int, headers: list[tuple[str, str]], length: int | None) -> bytes:
    """A status line and headers; without a length the body is chunked. Every answer closes the connection."""
    framing = [("content-length", str(length))] if length is not None else [("transfer-encoding", "chunked")]
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in [*headers, *framing, ("connection", "close")]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    if data:
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()


async def _end_body(writer: asyncio.StreamWriter) -> None:
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def _without_usage(event: bytes) -> bytes:
    """An SSE event with its ``usage`` taken out; b"" when usage was all it carried."""
    out = []
    for line in event.splitlines(keepends=True):
        if line.startswith(b"data:"):
            try:
                doc: Any = json.loads(line[5:])
            except ValueError:
                doc = None
            if isinstance(doc, dict) and "usage" in doc:
                doc.pop("usage")
                if not doc.get("choices"):
                    return b""
                line = b"data: " + json.dumps(doc).encode() + b"\n"
        out.append(line)
    return b"".join(out)


async def _watch_eof(reader: asyncio.StreamReader, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client closes its side of the connection."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass
    gone.set()


async def _pause(seconds: float, gone: asyncio.Event) -> bool:
    """Hold back for ``seconds`` (the fault itself); False when the client hung up meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(gone.wait(), seconds)
    return not gone.is_set()


async def _unless_gone(work: Awaitable[T], gone: asyncio.Event) -> T | None:
    """``work``'s result, or None (``work`` cancelled) when the client hangs up first."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    return None
