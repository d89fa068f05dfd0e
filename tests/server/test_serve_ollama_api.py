"""`llmspell serve` driven by the official ollama client (and raw HTTP for what a client never sends), real model."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import ollama
import pytest
from helpers import smollm2_file
from hfserver import LocalHub
from server.serveproc import COUNTING, PULL_TAG, ServeProcess, pull_hub, serve  # noqa: F401 - pull_hub is a fixture

OPTS = {"temperature": 0, "seed": 7, "num_predict": 8}
HELLO = [{"role": "user", "content": "Say hello."}]
ONE_MSG = b'{"model": "smollm2:135m", "messages": [{"role": "user", "content": "x"}], '


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    shared_models: Path,
    pull_hub: LocalHub,  # noqa: F811
) -> Iterator[ServeProcess]:
    yield from serve(tmp_path_factory, shared_models, pull_hub)


@pytest.fixture
def client(server: ServeProcess) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=120)


def test_probe_version_and_tags(server: ServeProcess, client: ollama.Client) -> None:
    assert httpx.get(server.url + "/").text == "Ollama is running"
    assert httpx.head(server.url + "/").status_code == 200
    assert httpx.get(server.url + "/api/version").json()["version"]
    models = {m.model: m for m in client.list().models}
    smol = models["smollm2:135m"]
    assert smol.details is not None and smol.details.quantization_level == "Q4_1" and smol.details.format == "gguf"
    assert smol.size and smol.size > 50_000_000 and smol.digest
    assert "gemma3:270m" in models


def test_show_reports_template_details_and_context(client: ollama.Client) -> None:
    shown = client.show("smollm2:135m")
    assert "<|im_start|>" in (shown.template or "")
    assert shown.details is not None and shown.details.family == "smollm2"
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 8192
    assert shown.license == "apache-2.0"


def test_chat_streams_ndjson_with_stats_in_nanoseconds(client: ollama.Client) -> None:
    parts = list(client.chat("smollm2:135m", messages=HELLO, stream=True, options=OPTS))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    final = parts[-1]
    assert final.done_reason == "length" and final.eval_count == 8
    assert final.prompt_eval_count and final.prompt_eval_count > 5
    # nanoseconds: a real generation of 8 tokens takes well over a microsecond and total covers the parts
    assert final.eval_duration and final.eval_duration > 1000
    assert final.total_duration and final.total_duration >= final.eval_duration + (final.prompt_eval_duration or 0)
    text = "".join(p.message.content or "" for p in parts)
    whole = client.chat("smollm2:135m", messages=HELLO, stream=False, options=OPTS)
    assert whole.message.content == text and text.strip()
    assert whole.done and whole.eval_count == 8


def test_generate_with_system_raw_and_a_base_model(client: ollama.Client) -> None:
    r = client.generate("smollm2:135m", "What is 2+2?", system="Answer with a number.", options=OPTS)
    assert r.done and r.response and r.eval_count and r.eval_count <= 8
    raw = client.generate("smollm2:135m", "The capital of France is", raw=True, options=OPTS)
    assert raw.response and raw.done_reason in ("length", "stop")
    # gemma3:270m has no chat template: like Ollama's default template, the prompt goes in as it is
    base = list(client.generate("gemma3:270m", "Once upon a time", stream=True, options={"num_predict": 4}))
    assert base[-1].done and base[-1].eval_count == 4


def test_format_json_schema_and_json(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    r = client.chat(
        "smollm2:135m",
        messages=[{"role": "user", "content": "Invent a person. Reply in JSON."}],
        format=schema,
        options={"temperature": 0, "num_predict": 60},
    )
    jsonschema.validate(json.loads(r.message.content or ""), schema)
    r2 = client.generate("smollm2:135m", "Name a colour.", format="json", options={"num_predict": 12})
    # the grammar forces JSON from the first token (the answer may be cut off by num_predict)
    assert (r2.response or "").lstrip()[:1] in ("{", "[")


def test_ps_and_keep_alive_zero_unloads(client: ollama.Client) -> None:
    client.chat("smollm2:135m", messages=HELLO, options={"num_predict": 2})
    running = {m.model: m for m in client.ps().models}
    assert "smollm2:135m" in running
    assert running["smollm2:135m"].expires_at is not None and running["smollm2:135m"].size
    client.chat("smollm2:135m", messages=HELLO, options={"num_predict": 2}, keep_alive=0)
    assert "smollm2:135m" not in {m.model for m in client.ps().models}
    # an empty request loads; with keep_alive 0 it unloads (how `ollama stop` works)
    client.chat("smollm2:135m", messages=HELLO, options={"num_predict": 1})
    r = client.generate("smollm2:135m", prompt="", keep_alive=0)
    assert r.done and r.done_reason == "unload"
    assert "smollm2:135m" not in {m.model for m in client.ps().models}


def test_pull_streams_progress_then_delete(client: ollama.Client, pull_hub: LocalHub) -> None:  # noqa: F811
    pull_hub.throttle = 30_000_000
    steps = list(client.pull(PULL_TAG, stream=True))
    pull_hub.throttle = None
    try:
        sized = [s for s in steps if s.total]
        assert sized, f"no progress with sizes: {steps}"
        # Ollama names the layer being fetched by its digest: here, the sha256 of the bytes the hub served
        want = "sha256:" + hashlib.sha256(smollm2_file().read_bytes()).hexdigest()
        assert {s.digest for s in sized if (s.status or "").startswith("downloading")} == {want}
        assert [s.completed for s in sized] == sorted(s.completed or 0 for s in sized)
        assert sized[-1].completed == sized[-1].total and sized[-1].total > 50_000_000
        assert steps[-1].status == "success"
        assert PULL_TAG in {m.model for m in client.list().models}
        # a second pull finds it on disk: no download, still success
        assert client.pull(PULL_TAG).status == "success"
    finally:
        client.delete(PULL_TAG)
    assert PULL_TAG not in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as err:
        client.delete(PULL_TAG)
    assert err.value.status_code == 404 and "not on disk" in err.value.error


def test_errors_come_as_ollama_sends_them(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat("no-such-model:1b", messages=HELLO)
    assert err.value.status_code == 404 and "no-such-model" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        list(client.chat("no-such-model:1b", messages=HELLO, stream=True))
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.show("no-such-model:1b")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.chat("smollm2:135m", messages=HELLO, options={"temperature": 99})
    assert err.value.status_code == 400 and "temperature" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("no-such-model:1b")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("smollm2:135m")
    assert err.value.status_code == 409 and "package" in err.value.error


async def test_async_client_streams_and_lists(server: ServeProcess) -> None:
    client = ollama.AsyncClient(host=server.url, timeout=120)
    stream = await client.chat("smollm2:135m", messages=HELLO, stream=True, options=OPTS)
    parts = [p async for p in stream]
    assert parts[-1].done and parts[-1].eval_count == 8
    assert "smollm2:135m" in {m.model for m in (await client.list()).models}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "json"),
        (b'["a list"]', "dictionary"),
        (b'{"model": "smollm2:135m", "messages": "hi"}', "messages"),
        (b'{"model": "smollm2:135m", "messages": [{"role": "wizard", "content": "x"}]}', "role"),
        (ONE_MSG + b'"options": {"top_k": "many"}}', "top_k"),
        (ONE_MSG + b'"keep_alive": "a while"}', "keep_alive"),
        # values the timers cannot hold wedged the model for every client until a restart
        (ONE_MSG + b'"keep_alive": 1e300}', "keep_alive 1e+300 is out of range"),
        (ONE_MSG + b'"keep_alive": "inf"}', "keep_alive inf is out of range"),
        (ONE_MSG + b'"keep_alive": "99999999h"}', "is out of range"),
        (ONE_MSG + b'"format": "xml"}', "format"),
        (b'{"model": "bad model name", "messages": [{"role": "user", "content": "x"}]}', "whitespace"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
    ],
)
def test_malformed_chat_bodies_get_400_with_a_message(server: ServeProcess, body: bytes, needle: str) -> None:
    r = httpx.post(server.url + "/api/chat", content=body, timeout=60)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"].lower()


def test_unknown_model_and_route_over_raw_http(server: ServeProcess) -> None:
    r = httpx.post(server.url + "/api/generate", json={"model": "ghost", "prompt": "hi"}, timeout=60)
    assert r.status_code == 404 and "ghost" in r.json()["error"]
    r = httpx.get(server.url + "/api/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    # a pull must name what it fetches (the default model is for requests that generate, not for downloads)
    r = httpx.post(server.url + "/api/pull", json={}, timeout=60)
    assert r.status_code == 400 and "names no model" in r.json()["error"]


def test_disconnect_cancels_the_generation(server: ServeProcess, client: ollama.Client) -> None:
    body = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Write a very long story."}]}
    body["options"] = {"num_predict": 2000, "temperature": 0}
    with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=120) as r:
        lines = r.iter_lines()
        first, second = json.loads(next(lines)), json.loads(next(lines))
        assert not first["done"] and not second["done"]
    # the response is closed: the engine stops within a token and the queue slot is free again
    doc = server.wait_idle()
    assert any(
        w["last_stop_reason"] == "cancelled" and w["last_generated_tokens"] < 2000
        for w in doc["workers"]
        if w["model"] == "smollm2:135m"
    ), doc
    r2 = client.chat("smollm2:135m", messages=HELLO, options={"num_predict": 3})
    assert r2.done and r2.eval_count == 3


def test_disconnect_cancels_a_non_streaming_request(server: ServeProcess) -> None:
    body = {"model": "smollm2:135m", "stream": False, "messages": [{"role": "user", "content": "Count."}]}
    body.update(format=COUNTING, options={"num_predict": 2000, "temperature": 0})
    client = server.post_raw("/api/chat", body)
    try:
        server.wait_for(
            lambda d: "smollm2:135m@llamacpp" in d["queues"] and any(w["busy"] for w in d["workers"]),
            "the answer being generated",
        )
    finally:
        client.close()
    doc = server.wait_idle()
    assert any(
        w["last_stop_reason"] == "cancelled" and w["last_generated_tokens"] < 2000
        for w in doc["workers"]
        if w["model"] == "smollm2:135m"
    ), doc


def test_seed_repeats_a_sampled_answer(client: ollama.Client) -> None:
    def sample(seed: int) -> str:
        opts = {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "seed": seed, "num_predict": 24}
        # unloaded first (as `ollama stop` does), every draw starts from the same engine state: a prompt read in one
        # batch and one replayed from the KV cache give slightly different logits, which a draw at this temperature
        # can tell apart (llama.cpp behaves so; the seed is what this test is about)
        client.generate("smollm2:135m", prompt="", keep_alive=0)
        return client.chat("smollm2:135m", messages=HELLO, options=opts).message.content or ""

    first = sample(42)
    assert sample(42) == first
    # at this temperature the answer is a draw: another seed draws another one, so the seed was what repeated it
    assert sample(43) != first


async def test_two_models_stream_side_by_side(server: ServeProcess) -> None:
    client = ollama.AsyncClient(host=server.url, timeout=300)
    # 40 numbers take 80+ tokens, so neither answer can end before num_predict: both run their full length (a
    # short minItems keeps the grammar cheap on gemma's 262k-token vocabulary)
    counting = {**COUNTING, "minItems": 40}
    opts = {"temperature": 0, "num_predict": 60}
    gemma = await client.generate("gemma3:270m", "Count.", stream=True, format=counting, options=opts)
    smol = await client.generate("smollm2:135m", "Count.", stream=True, format=counting, options=opts)
    parts = {"gemma": [await anext(gemma)], "smol": [await anext(smol)]}
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        queues = (await http.get("/health")).json()["queues"]
    # both admitted at once, each under its own model's bound: neither waits for the other
    assert queues == {"smollm2:135m@llamacpp": 1, "gemma3:270m@llamacpp": 1}, queues

    async def rest(name: str, stream: Any) -> None:
        parts[name].extend([p async for p in stream])

    await asyncio.gather(rest("smol", smol), rest("gemma", gemma))
    for name, got in parts.items():
        assert got[-1].done and got[-1].eval_count == 60 and got[-1].done_reason == "length", name
        assert "".join(p.response for p in got).startswith("["), name


def test_generate_endpoint_and_health(server: ServeProcess) -> None:
    doc = server.health()
    assert doc["status"] == "ok" and {b["backend"]: b["ready"] for b in doc["backends"]}["llamacpp"]
    r = httpx.post(
        server.url + "/generate",
        json={"prompt": "Say hi.", "options": {"max_tokens": 4, "temperature": 0}},
        timeout=60,
    )
    assert r.status_code == 200
    doc = r.json()
    assert doc["text"] and doc["model"] == "smollm2:135m@llamacpp" and doc["stats"]["generated_tokens"] == 4
    with httpx.stream(
        "POST", server.url + "/generate", json={"prompt": "Say hi.", "stream": True, "options": {"max_tokens": 4}}
    ) as s:
        lines = [json.loads(line) for line in s.iter_lines() if line]
    assert lines[-1]["done"] and lines[-1]["stats"]["generated_tokens"] == 4
    bad = httpx.post(server.url + "/generate", json={"prompt": "x", "options": {"max_tokens": 0}}, timeout=60)
    assert bad.status_code == 400 and "max_tokens" in bad.json()["error"]


def test_a_prompt_longer_than_its_context_is_the_clients_error(server: ServeProcess, client: ollama.Client) -> None:
    long_prompt = "Tell me about the sea. " * 200
    for stream in (False, True):
        r = httpx.post(
            server.url + "/api/generate",
            json={"model": "smollm2:135m", "prompt": long_prompt, "stream": stream, "options": {"num_ctx": 128}},
            timeout=60,
        )
        assert r.status_code == 400, (stream, r.status_code, r.text[:300])
        assert "context window is 128" in r.json()["error"] and "num_ctx" in r.json()["error"]
    # the OpenAI route, with the server's own context size (no num_ctx there): a prompt of some 6,000 tokens
    messages = [{"role": "user", "content": "Tell me about the sea. " * 1200}]
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "smollm2:135m", "messages": messages, "max_tokens": 4},
        timeout=120,
    )
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"]["type"] == "invalid_request_error" and "context window" in r.json()["error"]["message"]
