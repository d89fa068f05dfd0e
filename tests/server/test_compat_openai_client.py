"""The official openai client against `llmspell serve`, through what its users send beyond one plain chat:
embeddings (base64 by default), models.retrieve, n choices, logprobs, penalties, default bookkeeping fields,
and errors whose param and code say what was wrong."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from server.serveproc import ServeProcess, inprocess_server, serve

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.hub import Hub

MSGS = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[ServeProcess]:
    yield from serve(tmp_path_factory, shared_models, None)


@pytest.fixture
def client(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="anything", timeout=120, max_retries=0)


def dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_as_the_client_asks_by_default_and_as_floats(client: openai.OpenAI, server: ServeProcess) -> None:
    # the client asks for base64 unless told otherwise, and decodes it
    default = client.embeddings.create(model="smollm2:135m", input=["a red apple", "a green pear"])
    assert [d.index for d in default.data] == [0, 1]
    vectors = [d.embedding for d in default.data]
    assert {len(v) for v in vectors} == {576} and all(abs(dot(v, v) - 1) < 1e-5 for v in vectors)
    assert default.usage.prompt_tokens > 4 and default.usage.total_tokens == default.usage.prompt_tokens
    floats = client.embeddings.create(model="smollm2:135m", input="a red apple", encoding_format="float")
    assert dot(floats.data[0].embedding, vectors[0]) > 0.99999  # float32 on the wire for base64
    short = client.embeddings.create(model="smollm2:135m", input="a red apple", dimensions=32)
    assert len(short.data[0].embedding) == 32
    assert abs(dot(short.data[0].embedding, short.data[0].embedding) - 1) < 1e-5


def test_embeddings_refuse_token_ids_naming_the_parameter(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="smollm2:135m", input=[[1, 2, 3]])
    assert err.value.body["param"] == "input" and "token ids" in err.value.message  # type: ignore[index]


def test_models_retrieve_finds_a_model_and_404s_an_unknown_one(client: openai.OpenAI) -> None:
    assert client.models.retrieve("smollm2:135m").id == "smollm2:135m"
    assert client.models.retrieve("smollm2").id == "smollm2"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model:1b")
    assert err.value.code == "model_not_found"


def test_an_unknown_route_says_the_route_is_unknown(server: ServeProcess) -> None:
    r = httpx.post(server.url + "/v1/responses", json={"model": "smollm2:135m", "input": "hi"})
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "unknown_route" and "no such route" in error["message"]


def test_n_choices_with_seeds_that_count_up(client: openai.OpenAI) -> None:
    def ask(n: int, seed: int, stream: bool = False) -> list[str]:
        if stream:
            texts: dict[int, str] = {}
            for chunk in client.chat.completions.create(
                model="smollm2:135m",
                messages=MSGS,
                max_tokens=6,
                n=n,
                seed=seed,
                temperature=1.0,
                stream=True,  # type: ignore[arg-type]
            ):
                for c in chunk.choices:
                    texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            return [texts[i] for i in sorted(texts)]
        r = client.chat.completions.create(
            model="smollm2:135m",
            messages=MSGS,
            max_tokens=6,
            n=n,
            seed=seed,
            temperature=1.0,  # type: ignore[arg-type]
        )
        assert [c.index for c in r.choices] == list(range(n))
        assert (r.usage is not None and r.usage.completion_tokens == sum(6 for _ in range(n))) or r.usage
        return [c.message.content or "" for c in r.choices]

    three = ask(3, seed=40)
    assert len(three) == 3 and all(three)
    # choice i is the answer the seed + i gives alone
    assert ask(1, seed=41) == [three[1]]
    assert ask(3, seed=40, stream=True) == three


def test_chat_logprobs_and_top_logprobs(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2:135m",
        messages=MSGS,  # type: ignore[arg-type]
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = r.choices[0].logprobs and r.choices[0].logprobs.content
    assert content and len(content) == 5
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token
        assert t.bytes == list(t.token.encode())


def test_completion_logprobs_in_the_older_shape(client: openai.OpenAI) -> None:
    r = client.completions.create(model="gemma3:270m", prompt="The sky is", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens and len(lp.tokens) == 4
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(4)]
    assert lp.top_logprobs and all(len(top) == 2 for top in lp.top_logprobs)


def test_fields_clients_send_by_default_are_taken(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="smollm2:135m",
        messages=MSGS,  # type: ignore[arg-type]
        max_tokens=3,
        temperature=0,
        frequency_penalty=0.5,
        presence_penalty=0.5,
        parallel_tool_calls=False,
        tool_choice="none",
        user="someone",
        store=False,
        metadata={"k": "v"},
        service_tier="auto",
    )
    assert r.choices[0].message.content


@pytest.mark.parametrize(
    ("extra", "param", "code", "needle"),
    [
        ({"logit_bias": {"1": 5}}, "logit_bias", "unsupported_parameter", "token ids differ"),
        (
            {"tools": [{"type": "function", "function": {"name": "f g"}}]},
            "tools[0].function.name",
            "invalid_value",
            "f g",
        ),
        ({"tool_choice": "required"}, "tool_choice", "invalid_value", "needs tools"),
        ({"top_logprobs": 2}, "top_logprobs", "invalid_value", "logprobs: true"),
        ({"temperature": "hot"}, "temperature", "invalid_value", "temperature"),
    ],
)
def test_what_cannot_be_done_is_a_400_naming_the_parameter(
    server: ServeProcess, extra: dict[str, object], param: str, code: str, needle: str
) -> None:
    body = {"model": "smollm2:135m", "messages": MSGS, "max_tokens": 2, **extra}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["code"] == code
    assert needle in error["message"]


def test_unknown_fields_are_ignored_with_a_warning_and_engine_extensions_are_used(
    client: openai.OpenAI, server: ServeProcess
) -> None:
    def greedy(**extra: object) -> str:
        r = client.chat.completions.create(
            model="smollm2:135m",
            messages=MSGS,  # type: ignore[arg-type]
            max_tokens=6,
            temperature=0.9,
            seed=5,
            extra_body=extra,
        )
        return r.choices[0].message.content or ""

    # top_k=1 is greedy whatever the temperature: the extension reached the sampler
    assert greedy(top_k=1) == greedy(top_k=1, min_p=0.0, repeat_penalty=1.0, frobnicate=1, verbosity="low")
    server.wait_output(
        lambda lines: any("/v1/chat/completions: ignored unknown field(s) frobnicate, verbosity" in ln for ln in lines),
        "the warning naming the ignored fields",
    )


def test_several_prompts_in_one_completion_request(client: openai.OpenAI, server: ServeProcess) -> None:
    r = client.completions.create(model="gemma3:270m", prompt=["Paris is", "Rome is"], max_tokens=3, n=2, seed=1)
    assert [c.index for c in r.choices] == [0, 1, 2, 3] and all(c.text for c in r.choices)
    one = client.completions.create(model="gemma3:270m", prompt="Rome is", max_tokens=3, seed=1)
    assert r.choices[2].text == one.choices[0].text  # prompt 1's first choice: the same seed, the same answer
    assert r.usage is not None and r.usage.completion_tokens == 12
    # the access log counts every answer of the request
    server.wait_output(
        lambda lines: any(" POST /v1/completions 200 gemma3:270m@llamacpp " in ln and "/12 out" in ln for ln in lines),
        "the request's line with the tokens of its four answers",
    )


def test_a_model_that_is_not_here_is_model_not_found_on_param_model(server: ServeProcess) -> None:
    body = {"model": "no-such-model:1b", "messages": MSGS}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "model" and r.json()["error"]["code"] == "model_not_found"


def test_strict_refuses_what_is_otherwise_ignored(backend: LlamaCppBackend) -> None:
    with inprocess_server(Hub(Config(), backends=[backend]), strict=True) as url:
        body = {"model": "smollm2:135m", "messages": MSGS, "max_tokens": 2, "frobnicate": 1}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["param"] == "frobnicate" and error["code"] == "unknown_parameter"
        assert "unknown field(s) frobnicate" in error["message"] and "--strict" in error["message"]
        body = {"model": "smollm2:135m", "messages": MSGS, "options": {"no_such_option": 1}, "stream": False}
        r = httpx.post(url + "/api/chat", json=body, timeout=60)
        assert r.status_code == 400 and "unknown option(s) no_such_option" in r.json()["error"]
        # Ollama's own options that mean nothing here are still taken
        body["options"] = {"num_gpu": 0, "num_predict": 2}
        assert httpx.post(url + "/api/chat", json=body, timeout=60).status_code == 200


def test_the_clients_own_answer_sent_back_keeps_the_conversation_going(client: openai.OpenAI) -> None:
    history: list = [{"role": "user", "content": "Name a colour."}]
    first = client.chat.completions.create(model="smollm2:135m", messages=history, max_tokens=4, temperature=0)
    # the SDK's message object as it came (refusal, annotations...), the way its docs append it
    history += [first.choices[0].message, {"role": "user", "content": "And another?"}]
    second = client.chat.completions.create(model="smollm2:135m", messages=history, max_tokens=4, temperature=0)
    assert second.choices[0].message.content
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the first turn was read again
    # a call sent back keeps OpenAI's shape: its arguments are JSON text, not an object
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smollm2:135m",
            messages=[*history[:1], {"role": "assistant", "content": None, "tool_calls": calls}],
        )
    param = "messages[1].tool_calls[0].function.arguments"
    assert err.value.body["param"] == param and "JSON text" in err.value.message  # type: ignore[index]
