"""`llmspell serve`'s OpenAI API driven by the official openai client over the real model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from server.serveproc import FaultAfterChunksBackend, ServeProcess, inprocess_server, serve

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.hub import Hub

MSGS = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[ServeProcess]:
    yield from serve(tmp_path_factory, shared_models, None)


@pytest.fixture
def client(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="anything", timeout=120, max_retries=0)


def test_models_lists_what_the_core_can_run(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"smollm2:135m", "gemma3:270m"} <= ids


def test_chat_completion_whole_and_streamed_agree(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model="smollm2:135m",
        messages=MSGS,
        max_tokens=8,
        temperature=0,
        seed=3,  # type: ignore[arg-type]
    )
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content and choice.finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 8 and whole.usage.prompt_tokens > 5
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 8
    stream = client.chat.completions.create(
        model="smollm2:135m",
        messages=MSGS,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_stop_and_top_p_are_honoured(client: openai.OpenAI) -> None:
    base = client.chat.completions.create(model="smollm2:135m", messages=MSGS, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    text = base.choices[0].message.content or ""
    words = text.split()
    assert len(words) >= 3, text
    cut = client.chat.completions.create(
        model="smollm2:135m",
        messages=MSGS,  # type: ignore[arg-type]
        max_tokens=12,
        temperature=0,
        top_p=0.9,
        stop=[words[2]],
    )
    short = cut.choices[0].message.content or ""
    assert words[2] not in short and text.startswith(short) and cut.choices[0].finish_reason == "stop"


def test_seed_repeats_a_sampled_completion(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        # unloaded first, every draw starts from the same engine state: a prompt read in one batch and one replayed
        # from the KV cache give slightly different logits, which a draw at this temperature can tell apart
        unload = {"model": "smollm2:135m", "keep_alive": 0}
        assert httpx.post(str(client.base_url.join("/api/generate")), json=unload, timeout=60).status_code == 200
        r = client.chat.completions.create(
            model="smollm2:135m",
            messages=MSGS,  # type: ignore[arg-type]
            max_tokens=24,
            temperature=1.5,
            top_p=1.0,
            seed=seed,
        )
        return r.choices[0].message.content or ""

    first = sample(42)
    assert sample(42) == first
    # at this temperature the answer is a draw: another seed draws another one, so the seed was what repeated it
    assert sample(43) != first


def test_response_format_json_schema_is_enforced(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model="smollm2:135m",
        messages=[{"role": "user", "content": "Name a city and its population."}],
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), schema)
    r2 = client.chat.completions.create(
        model="smollm2:135m",
        messages=MSGS,  # type: ignore[arg-type]
        max_tokens=10,
        response_format={"type": "json_object"},
    )
    assert (r2.choices[0].message.content or "").lstrip()[:1] in ("{", "[")


def test_completions_plain_and_streamed(client: openai.OpenAI) -> None:
    r = client.completions.create(model="gemma3:270m", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert r.choices[0].text and r.usage is not None and r.usage.completion_tokens == 5
    parts = list(
        client.completions.create(
            model="gemma3:270m", prompt="Once upon a time", max_tokens=5, temperature=0, stream=True
        )
    )
    assert "".join(p.choices[0].text for p in parts if p.choices) == r.choices[0].text


def test_errors_reach_the_openai_client_typed(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="ghost:1b", messages=MSGS)  # type: ignore[arg-type]
    assert "ghost" in nf.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smollm2:135m", messages=MSGS, temperature=42)  # type: ignore[arg-type]
    assert "temperature" in bad.value.message
    # a field the server does not know is ignored with a warning in its log (a 400 under --strict)
    # greedy: a sampled answer may end before its fourth token
    ok = client.chat.completions.create(
        model="smollm2:135m", messages=MSGS, max_tokens=4, temperature=0, extra_body={"bogus": 1}
    )  # type: ignore[arg-type]
    assert ok.usage is not None and ok.usage.completion_tokens == 4 and ok.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as rf:
        client.chat.completions.create(
            model="smollm2:135m",
            messages=MSGS,  # type: ignore[arg-type]
            response_format={"type": "json_schema", "json_schema": {"name": "x"}},
        )
    assert "schema" in rf.value.message
    with pytest.raises(openai.NotFoundError):
        list(client.chat.completions.create(model="ghost:1b", messages=MSGS, stream=True))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/v1/chat/completions", b"{oops", "json"),
        ("/v1/chat/completions", b'{"model": "smollm2:135m"}', "messages"),
        ("/v1/chat/completions", b'{"model": "smollm2:135m", "messages": []}', "messages"),
        ("/v1/chat/completions", b'{"model": "smollm2:135m", "messages": [{"role": "user"}], "n": 99}', "n must be 1"),
        ("/v1/completions", b'{"model": "gemma3:270m", "prompt": ["a", ""]}', "a prompt is empty"),
        ("/v1/completions", b'{"model": "gemma3:270m"}', "prompt"),
    ],
)
def test_malformed_bodies_get_400_in_openai_form(server: ServeProcess, path: str, body: bytes, needle: str) -> None:
    r = httpx.post(server.url + path, content=body, timeout=60)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"].lower()


def test_disconnect_from_an_sse_stream_cancels(server: ServeProcess) -> None:
    body = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Tell a long story."}]}
    body.update(max_tokens=2000, temperature=0, stream=True)
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
        events = [line for _, line in zip(range(6), r.iter_lines(), strict=False) if line.startswith("data:")]
        assert events and "chat.completion.chunk" in events[0]
    doc = server.wait_idle()
    assert any(
        w["last_stop_reason"] == "cancelled" and w["last_generated_tokens"] < 2000
        for w in doc["workers"]
        if w["model"] == "smollm2:135m"
    ), doc


def test_an_error_after_streaming_began_is_the_last_event_or_line(backend: LlamaCppBackend) -> None:
    hub = Hub(Config(), backends=[FaultAfterChunksBackend(backend, after=3)])
    with inprocess_server(hub) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", timeout=120, max_retries=0)
        got: list[str] = []
        with pytest.raises(openai.APIError) as err:
            for chunk in client.chat.completions.create(
                model="smollm2:135m",
                messages=MSGS,
                max_tokens=50,
                stream=True,  # type: ignore[arg-type]
            ):
                got.extend(c.delta.content or "" for c in chunk.choices)
        assert "injected fault" in err.value.message and "".join(got).strip()
        body = {"model": "smollm2:135m", "messages": MSGS, "options": {"num_predict": 50}}
        with httpx.stream("POST", url + "/api/chat", json=body, timeout=120) as r:
            assert r.status_code == 200
            lines = [json.loads(line) for line in r.iter_lines() if line]
        assert [line.get("done") for line in lines[:-1]] == [False, False, False]
        assert lines[-1] == {"error": "injected fault: the engine failed mid-answer"}
