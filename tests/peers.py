"""Real servers that are not llmspell, on 127.0.0.1, for the OpenAI backend's and the endpoints' tests.

``LlamaCppServer`` is llama-cpp-python's own OpenAI server (``python -m llama_cpp.server``, the ``[server]`` extra
of the same pinned wheel) on the bundled SmolLM2 file: a peer written by someone else, which is the point.
``write_endpoints`` writes the ``[[endpoints]]`` of a test's config.toml.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from helpers import smollm2_file

if TYPE_CHECKING:
    from llmspell.hub import Hub


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: the model id llama_cpp.server serves the SmolLM2 file under (without it the id is the file's full path)
PEER_MODEL = "smollm2"


class LlamaCppServer:
    """One ``python -m llama_cpp.server`` subprocess on a free port; start it, stop it (SIGTERM, then SIGKILL)."""

    def __init__(self, root: Path, *, api_key: str | None = None, model: Path | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.api_key = api_key
        self.model = model or smollm2_file()
        self.log = root / "llama_cpp_server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's root; the OpenAI API is under /v1."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LlamaCppServer:
        """Start it and wait until /v1/models answers (loading the model takes a second or two)."""
        args = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--model_alias",
            PEER_MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",
            "--verbose",
            "false",
        ]
        if self.api_key:
            args += ["--api_key", self.api_key]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLMSPELL_"))}
        out = self.log.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            for _ in range(1200):
                if self.proc.poll() is not None:
                    raise AssertionError(f"llama_cpp.server exited with {self.proc.returncode}:\n{self.output()}")
                try:
                    if httpx.get(self.url + "/v1/models", headers=headers, timeout=5).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            raise AssertionError(f"llama_cpp.server did not answer within 60 s:\n{self.output()}")
        except BaseException:
            self.stop()
            raise

    def output(self) -> str:
        """Everything the server printed."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 20 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def llama_cpp_server(root: Path, **kwargs: Any) -> Iterator[LlamaCppServer]:
    """Start a llama_cpp.server for a fixture and stop it afterwards."""
    server = LlamaCppServer(root, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def write_endpoints(home: Path, endpoints: Sequence[dict[str, Any]], extra: str = "") -> Path:
    """config.toml in ``home`` with these ``[[endpoints]]`` entries (and the default Ollama turned off, so no test
    waits on a server that is not there)."""
    import json

    # top-level keys first: after a table header they would belong to that table
    lines = [extra, "[providers.ollama]", "enabled = false"]
    for entry in endpoints:
        lines.append("[[endpoints]]")
        for key, value in entry.items():
            if isinstance(value, dict):
                inner = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def hub_on(server: LlamaCppServer) -> Hub:
    """A hub whose config (in this test's LLMSPELL_HOME) names ``server`` as the OpenAI endpoint ``peer``; the
    embedded backend is there too."""
    from llmspell.config import load_config
    from llmspell.hub import Hub

    write_endpoints(Path(os.environ["LLMSPELL_HOME"]), [{"name": "peer", "kind": "openai", "url": server.url}])
    return Hub(load_config())
