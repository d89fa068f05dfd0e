"""`llmspell serve` against its own OpenAPI description.

/openapi.json lists every route the app serves, with its methods; and schemathesis, with all its checks and every
phase (explicit examples, coverage of each field's edges, random fuzzing, stateful sequences), finds no failure
over the real server on 127.0.0.1 within a fixed budget: deterministic generation, a bounded number of examples per
operation, one worker. The server runs with an API key (so the key check is fuzzed too), its own LLMSPELL_HOME and
models folder (the Ollama backend off: an Ollama that is not there is a 503, the environment's doing, not the
server's) and a local Hugging Face hub (a fuzzed /api/pull meets a hub that answers 404, not a network that is down).

This module is also the hooks module of that run (``hooks`` in its schemathesis.toml): the hooks at the end teach
the generator the keep-alive format, read NDJSON streams for the schema checks, and keep each generation small (a
few tokens, one small context, two threads), so the run's time goes to many requests rather than long answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hfserver import LocalHub
from hypothesis import strategies as st
from server.serveproc import ServeProcess

from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.server.app import create_app, served_routes
from llmspell.server.openapi import KEEP_ALIVE_FORMAT

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
#: the fixed budget: deterministic generation (the same requests every run), this many examples per operation
EXAMPLES = 20
#: each generation is at most this many tokens, with this context, on this many threads; vectors this short
TOKENS, CONTEXT, THREADS, DIMENSIONS = 4, 512, 2, 64
#: /api/push answers 501 Not Implemented on purpose (llmspell has no registry to push to), and its description says
#: so: the one 5xx the run expects
CONFIG = """
hooks = "test_openapi_fuzz"
# no state kept between runs (a crash replayed from an earlier run would make this one differ)
cache.enabled = false
generation.database = "none"

[[operations]]
include-path = "/api/push"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "501"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    mine = root / "mine"
    mine.mkdir()
    (mine / "bad-magic.gguf").write_bytes(b"NOPE" + bytes(60))
    hub = LocalHub().start()
    # its own models folder: a fuzzed /api/delete can only remove what the run itself made
    proc = ServeProcess(
        root, root / "models", hf_endpoint=hub.url, args=("--api-key", KEY, "--model-folder", str(mine))
    )
    (root / "home").mkdir()
    (root / "home" / "config.toml").write_text("[providers.ollama]\nenabled = false\n", encoding="utf-8")
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        hub.stop()


def _fastapi(app: Any) -> FastAPI:
    """The FastAPI app inside the guards and the access log that ``create_app`` wraps it in."""
    while not isinstance(app, FastAPI):
        app = app.app
    return app


def test_openapi_lists_every_route_with_its_methods(server: ServeProcess) -> None:
    served: dict[str, set[str]] = {}
    for route in served_routes(_fastapi(create_app(Hub(Config())))):
        if route.path != "/openapi.json":  # the description itself
            served.setdefault(route.path.replace(":path}", "}"), set()).update(m.lower() for m in route.methods)
    doc = httpx.get(server.url + "/openapi.json", headers=AUTH, timeout=30).json()
    documented = {path: set(ops) for path, ops in doc["paths"].items()}
    assert documented == served
    assert {"/api/chat", "/api/generate", "/v1/chat/completions", "/v1/embeddings", "/health"} <= set(documented)
    # a method a path does not take is a 405 naming every one it does (GET and HEAD are two routes, one Allow)
    for path, methods in documented.items():
        url = server.url + path.replace("{model_id}", "smollm2:135m")
        r = httpx.request("PATCH", url, headers=AUTH, timeout=30)
        assert r.status_code == 405, (path, r.text)
        assert set(r.headers["allow"].lower().split(", ")) == methods, path


def test_streams_and_errors_are_described_in_each_apis_dialect(server: ServeProcess) -> None:
    doc = httpx.get(server.url + "/openapi.json", headers=AUTH, timeout=30).json()
    chat = doc["paths"]["/api/chat"]["post"]["responses"]
    assert set(chat["200"]["content"]) == {"application/json", "application/x-ndjson"}
    assert chat["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/OllamaError")
    openai_chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert set(openai_chat["200"]["content"]) == {"application/json", "text/event-stream"}
    assert openai_chat["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIError")
    assert set(doc["paths"]["/"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    # a malformed body is a 400 naming the field, never FastAPI's 422, and the description says so
    assert not any("422" in op["responses"] for ops in doc["paths"].values() for op in ops.values())
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/"]["get"]["security"] == []  # the liveness probe needs no key


def test_what_the_run_found_stays_fixed(server: ServeProcess) -> None:
    chat = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Hi"}], "stream": False}
    # a format no answer can match made a grammar llama.cpp cannot parse, and the engine took the server down
    for fmt in ({"enum": []}, {"type": "object", "properties": {"a": {"anyOf": []}}}, {"type": []}):
        r = httpx.post(server.url + "/api/chat", json={**chat, "format": fmt}, headers=AUTH, timeout=60)
        assert r.status_code == 400 and "no answer can match" in r.json()["error"], fmt
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"oneOf": []}}}
    r = httpx.post(server.url + "/v1/chat/completions", json={**chat, "response_format": rf}, headers=AUTH, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    # a whole number written 4.0 (as Python's json writes a float) is a whole number; the server still answers
    r = httpx.post(server.url + "/api/chat", json={**chat, "options": {"num_predict": 4.0}}, headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["eval_count"] <= 4
    # a backend or endpoint after '@' that this server does not have: the model is not here (404), not a 503
    r = httpx.post(server.url + "/api/show", json={"model": "smollm2:135m@nowhere"}, headers=AUTH, timeout=60)
    assert r.status_code == 404 and "nowhere" in r.json()["error"]
    # a file with bad magic, named inside a --model-folder, is the client's mistake: 400 with the reason
    bad = str(server.root / "mine" / "bad-magic.gguf")
    r = httpx.post(server.url + "/api/show", json={"model": bad}, headers=AUTH, timeout=60)
    assert r.status_code == 400 and "bad magic" in r.json()["error"]
    r = httpx.post(server.url + "/v1/chat/completions", json={**chat, "model": bad}, headers=AUTH, timeout=60)
    assert r.status_code == 400 and "bad magic" in r.json()["error"]["message"]


@pytest.mark.timeout(460)  # about a minute on an idle 2-core machine; a busy one may take several
def test_schemathesis_finds_no_failure(server: ServeProcess, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)])}
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run"),
        server.url + "/openapi.json",
        *("--header", f"Authorization: Bearer {KEY}", "--checks", "all", "--workers", "1"),
        *("--generation-deterministic", "--max-examples", str(EXAMPLES), "--request-timeout", "60"),
    ]
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400, check=False)
    output = run.stdout + run.stderr
    server_log = "\n".join(server.output().splitlines()[-40:])
    assert run.returncode == 0, output[-12000:] + "\n--- the server's last lines ---\n" + server_log
    assert "No issues found" in output, output[-3000:]
    # every operation was tested, and the NDJSON streams were checked against their schema too
    doc = httpx.get(server.url + "/openapi.json", headers=AUTH, timeout=30).json()
    operations = sum(len(ops) for ops in doc["paths"].values())
    assert f"Tested: {operations}\n" in output and "cannot validate" not in output, output[-3000:]


# -- the hooks of the schemathesis run (its config names this module under `hooks`) -----------------------------------

#: keep-alive durations a server takes: text seconds or Go-style durations of at most a year
schemathesis.openapi.format(
    KEEP_ALIVE_FORMAT,
    st.one_of(
        st.just(""),
        st.integers(-(10**6), 365 * 24 * 3600).map(str),
        # at most 8760 of the largest unit: a year
        st.tuples(st.integers(-99, 8760), st.sampled_from(["h", "m", "s", "ms", "us", "ns"])).map(
            lambda p: f"{p[0]}{p[1]}"
        ),
    ),
)


@schemathesis.deserializer("application/x-ndjson")
def ndjson_lines(context: Any, response: Any) -> list[Any]:
    """An NDJSON stream as the list of its lines (the description's schema of a stream is that array)."""
    # lines end at \n only: a JSON string may hold U+0085 or U+2028 as they are, which str.splitlines() would cut
    return [json.loads(line) for line in response.content.split(b"\n") if line.strip()]


def _bounded(value: Any, low: float, high: float, to: int, *, fixed: bool = False) -> Any:
    """A whole number in ``low``..``high`` (a valid one) brought down to ``to`` (or set to it, ``fixed``); anything
    else as it was, so that a case meant to be invalid stays invalid."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON's 7.0 is a whole number; the server takes it as one
    elif not isinstance(value, int) or isinstance(value, bool):
        return value
    if low <= value <= high:
        return to if fixed else min(value, to)
    return value


#: the characters SmolLM2's tokenizer reads as no token at all: a raw prompt (or a text to embed) of only these is
#: empty to the model, a 400 that depends on the model, which no description can say
_UNREAD = "\x04\x06\x13\x14\x16\x1d"


def _readable(prompt: Any) -> Any:
    """A text (or each of a list) that the model would read as no tokens, with a space the model does read."""
    if isinstance(prompt, list):
        return [_readable(p) for p in prompt]
    if isinstance(prompt, str) and prompt and not prompt.strip(_UNREAD):
        return prompt + " "
    return prompt


#: the routes that read a text without a chat template around it
_RAW_TEXT = ("/v1/completions", "/api/generate", "/api/embed", "/api/embeddings", "/v1/embeddings")
#: the routes that generate, by where their token limit goes
_TOP_LEVEL_LIMIT = ("/generate", "/v1/chat/completions", "/v1/completions")
_OLLAMA_GENERATION = ("/api/chat", "/api/generate")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    """Keep every generation small: a few tokens, one small context, two threads, short vectors."""
    body, path = case.body, case.operation.path
    if not isinstance(body, dict):
        return
    for name in ("prompt", "input"):  # raw prompts, and texts to embed
        if name in body and path in _RAW_TEXT:
            body[name] = _readable(body[name])
    for name in ("max_tokens", "max_completion_tokens"):
        if name in body:
            body[name] = _bounded(body[name], 1, 10**6, TOKENS)
    if "dimensions" in body:
        body["dimensions"] = _bounded(body["dimensions"], 1, float("inf"), DIMENSIONS)
    if path in _TOP_LEVEL_LIMIT and body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = TOKENS
    if path in _OLLAMA_GENERATION and body.get("options") is None:
        body["options"] = {}
    options = body.get("options")
    if not isinstance(options, dict):
        return
    ollama = path.startswith("/api/")
    if ollama and path in _OLLAMA_GENERATION and options.get("num_predict") is None:
        options["num_predict"] = TOKENS
    elif ollama and "num_predict" in options:
        # Ollama's negative num_predict is "no limit": valid, and long
        predict = _bounded(options["num_predict"], -float("inf"), -1, TOKENS, fixed=True)
        options["num_predict"] = _bounded(predict, 1, 10**6, TOKENS)
    elif "max_tokens" in options:
        options["max_tokens"] = _bounded(options["max_tokens"], 1, 10**6, TOKENS)
    if "num_ctx" in options:
        options["num_ctx"] = _bounded(options["num_ctx"], 16, 2**20, CONTEXT, fixed=True)
    threads = "num_thread" if ollama else "num_threads"
    if threads in options:
        options[threads] = _bounded(options[threads], 1, 1024, THREADS)
