"""Admission slots are released whenever a client leaves: while queued, and when the response fails to start."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server.serveproc import COUNTING, ServeProcess, serve

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.server.app import ServerSettings, create_app
from llmspell.spec import parse_spec

KEY = "smollm2:135m@llamacpp"
LONG = {
    "model": "smollm2:135m",
    "messages": [{"role": "user", "content": "Count from one."}],
    "format": COUNTING,
    "options": {"temperature": 0, "num_predict": 4000},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[ServeProcess]:
    # two copies of a model answer at once (--parallel 2), so a third request for it waits in a copy's queue
    config = tmp_path_factory.mktemp("config") / "config.toml"
    config.write_text("[llamacpp]\nthreads = 1\n")
    yield from serve(
        tmp_path_factory, shared_models, None, "--config", str(config), "--max-queue", "2", "--parallel", "2"
    )


def smol_workers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The engine workers of smollm2:135m in a /health document."""
    return [w for w in doc["workers"] if w["model"] == "smollm2:135m"]


def test_a_queued_client_that_leaves_frees_its_slot_before_its_prompt_runs(server: ServeProcess) -> None:
    running = []
    try:
        for n in (1, 2):
            # two forced-long answers occupy both copies of the model
            running.append(server.post_raw("/api/chat", LONG))
            server.wait_for(lambda d, n=n: sum(w["busy"] for w in smol_workers(d)) == n, f"{n} copies answering")
        queued = server.post_raw("/api/chat", LONG)
        server.wait_for(
            lambda d: d["queues"].get(KEY) == 3 and any(w["pending"] for w in smol_workers(d)),
            "the third request admitted and waiting in a copy's queue",
        )
        refused = httpx.post(server.url + "/api/chat", json=LONG, timeout=60)
        assert refused.status_code == 503 and "busy" in refused.json()["error"]
        queued.close()
        doc = server.wait_for(lambda d: d["queues"].get(KEY) == 2, "the slot of the client that left released")
        # released while its job still waited behind the two answers, so its prompt was never evaluated
        assert any(w["pending"] for w in smol_workers(doc)) and all(w["busy"] for w in smol_workers(doc)), doc
        running.append(server.post_raw("/api/chat", LONG))
        server.wait_for(lambda d: d["queues"].get(KEY) == 3, "a new request admitted in the freed slot")
    finally:
        for sock in running:
            sock.close()
    server.wait_idle()
    # the server still answers whole; greedy and bounded (sampled, the model sometimes ended after 2 tokens)
    small = {
        "model": "smollm2:135m",
        "messages": LONG["messages"],
        "stream": False,
        "options": {"num_predict": 3, "temperature": 0},
    }
    ok = httpx.post(server.url + "/api/chat", json=small, timeout=120)
    assert ok.status_code == 200 and ok.json()["done"] and 1 <= ok.json()["eval_count"] <= 3, ok.text


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_a_response_that_fails_at_its_status_line_releases_the_slot(
    backend: LlamaCppBackend, spec_version: str
) -> None:
    hub = Hub(Config(), backends=[backend])
    app = create_app(hub, ServerSettings())
    state = app.state
    body = json.dumps(LONG).encode()
    delivered = False
    started: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.append(message["status"])
            # the connection breaks as the status line goes out: Starlette never starts the body iterator
            raise OSError("connection reset by peer")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/chat",
        "raw_path": b"/api/chat",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:11435"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 11435),
    }
    try:
        await app(scope, receive, send)
    except Exception as exc:  # the broken connection surfaces from the app; what matters is what it left behind
        assert "connection reset" in str(exc) or type(exc).__name__ == "ClientDisconnect", exc
    # the generation had started (admitted, first token out) when the response failed
    assert started[0] == 200
    assert state.admission.counts == {}
    workers = backend.instances(parse_spec("smollm2:135m"))
    for _ in range(600):
        if not any(w.busy for w in workers):
            break
        await asyncio.sleep(0.05)
    assert [w.report.stop_reason for w in workers] == ["cancelled"]
