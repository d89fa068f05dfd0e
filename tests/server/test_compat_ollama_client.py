"""The official ollama client against `llmspell serve`, through every route beyond plain chat: embeddings,
logprobs, penalties, tolerated fields, named models (create, copy, delete), show, version, push, the access log."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from server.serveproc import COUNTING, ServeProcess, serve

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today.", "A kitten rested on the rug."]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[ServeProcess]:
    yield from serve(tmp_path_factory, shared_models, None)


@pytest.fixture
def client(server: ServeProcess) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=120)


def dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def test_embed_gives_one_unit_vector_per_text_the_same_alone_or_together(client: ollama.Client) -> None:
    together = client.embed(model="smollm2:135m", input=TEXTS)
    vectors = [list(v) for v in together.embeddings]
    assert len(vectors) == 3 and {len(v) for v in vectors} == {576}
    assert all(abs(dot(v, v) - 1) < 1e-6 for v in vectors)
    assert together.prompt_eval_count and together.prompt_eval_count > 10
    alone = [list(client.embed(model="smollm2:135m", input=t).embeddings[0]) for t in TEXTS]
    for a, b in zip(alone, vectors, strict=True):
        assert dot(a, b) > 0.9999
    again = list(client.embed(model="smollm2", input=TEXTS[0]).embeddings[0])
    assert again == alone[0]  # deterministic, under another spelling of the model too
    # each text is nearest to itself
    for i, v in enumerate(vectors):
        assert max(range(3), key=lambda j: dot(v, alone[j])) == i


def test_embed_dimensions_and_the_older_embeddings_route(client: ollama.Client) -> None:
    short = list(client.embed(model="smollm2:135m", input="hello there", dimensions=64).embeddings[0])
    assert len(short) == 64 and abs(dot(short, short) - 1) < 1e-6
    full = list(client.embed(model="smollm2:135m", input="hello there").embeddings[0])
    legacy = list(client.embeddings(model="smollm2:135m", prompt="hello there").embedding)
    assert len(legacy) == 576 and dot(legacy, full) > 0.9999
    # some clients send the newer route's field name to the older route
    r = httpx.post(
        str(client._client.base_url) + "/api/embeddings", json={"model": "smollm2:135m", "input": "hello there"}
    )
    assert dot(r.json()["embedding"], full) > 0.9999
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="smollm2:135m", input="hi", dimensions=10_000)
    assert err.value.status_code == 400 and "dimensions=10000" in str(err.value)


def test_embed_a_text_past_the_context_is_cut_or_refused_as_asked(client: ollama.Client) -> None:
    long_text = "word " * 10_000
    cut = client.embed(model="smollm2:135m", input=long_text, options={"num_ctx": 256})
    assert len(cut.embeddings[0]) == 576 and cut.prompt_eval_count == 256
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="smollm2:135m", input=long_text, truncate=False, options={"num_ctx": 256})
    assert err.value.status_code == 400 and "context window is 256" in str(err.value)


def test_embed_of_an_unknown_model_is_a_404_naming_it(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="no-such-model:1b", input="hi")
    assert err.value.status_code == 404 and "no-such-model" in str(err.value)


def test_chat_logprobs_name_each_token_and_its_likeliest_rivals(client: ollama.Client) -> None:
    r = client.chat(
        model="smollm2:135m",
        messages=[{"role": "user", "content": "Say hello."}],
        options={"temperature": 0, "num_predict": 6, "seed": 1},
        logprobs=True,
        top_logprobs=3,
    )
    assert r.logprobs and len(r.logprobs) == 6
    assert "".join(lp.token for lp in r.logprobs) == r.message.content
    for lp in r.logprobs:
        assert lp.logprob <= 0 and lp.top_logprobs and len(lp.top_logprobs) == 3
        # greedy decoding writes the likeliest token
        assert lp.top_logprobs[0].token == lp.token and abs(lp.top_logprobs[0].logprob - lp.logprob) < 1e-9


def test_penalties_reach_the_sampler(client: ollama.Client) -> None:
    def answer(**opts: float) -> str:
        r = client.generate(
            model="smollm2:135m",
            prompt="Write the word cat twenty times.",
            options={"temperature": 0, "num_predict": 24, "seed": 1, **opts},
        )
        return r.response

    plain = answer()
    assert plain.lower().count("cat") >= 5
    assert answer(presence_penalty=2.0) != plain
    assert answer(frequency_penalty=2.0) != plain


def test_fields_and_options_ollama_ignores_are_taken_with_a_line_in_the_log(server: ServeProcess) -> None:
    body = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "truncate": True,
        "shift": True,
        "options": {"num_predict": 2, "no_such_option": 1, "num_gpu": 0},
    }
    r = httpx.post(server.url + "/api/chat", json=body, timeout=120)
    assert r.status_code == 200 and r.json()["eval_count"] == 2
    lines = server.wait_output(
        lambda lines: any("ignored unknown option(s) no_such_option" in ln for ln in lines), "the ignored option"
    )
    assert any("/api/chat: ignored unknown field(s) shift, truncate" in ln for ln in lines)
    assert not any("num_gpu" in ln for ln in lines)  # Ollama's own option, meaningless here: ignored silently


def test_show_tells_the_capabilities_and_version_tells_both_versions(client: ollama.Client) -> None:
    shown = client.show("smollm2:135m")
    assert shown.capabilities == ["completion", "embedding"]
    doc = httpx.get(str(client._client.base_url) + "/api/version").json()
    assert doc["version"].count(".") == 2 and doc["llmspell_version"]


def test_create_copy_use_and_delete_a_named_model(client: ollama.Client, server: ServeProcess) -> None:
    client.create(
        model="pirate",
        from_="smollm2:135m",
        system="You are a pirate. Answer in one short sentence.",
        parameters={"num_predict": 3, "temperature": 0},
    )
    client.copy("pirate", "pirate-copy")
    try:
        listed = {m.model: m for m in client.list().models}
        assert {"pirate", "pirate-copy", "smollm2:135m"} <= set(listed)
        # a named model with its own system prompt is another model to clients that group by digest
        assert listed["pirate"].digest != listed["smollm2:135m"].digest
        assert listed["pirate-copy"].digest == listed["pirate"].digest  # a copy is the same model
        shown = client.show("pirate-copy")
        assert shown.modified_at == listed["pirate-copy"].modified_at  # when the name was made, both ways
        assert "FROM smollm2:135m" in (shown.modelfile or "") and "num_predict 3" in (shown.parameters or "")
        r = client.chat(model="pirate-copy", messages=[{"role": "user", "content": "Who are you?"}])
        assert r.eval_count == 3  # the named model's own PARAMETER
        # its system prompt is the named model's: the same answer as the base model given that system prompt
        base = client.chat(
            model="smollm2:135m",
            messages=[
                {"role": "system", "content": "You are a pirate. Answer in one short sentence."},
                {"role": "user", "content": "Who are you?"},
            ],
            options={"num_predict": 3, "temperature": 0},
        )
        assert r.message.content == base.message.content
    finally:
        client.delete("pirate-copy")
        client.delete("pirate")
    names = {m.model for m in client.list().models}
    assert "pirate" not in names and "pirate-copy" not in names and "smollm2:135m" in names


def test_a_named_model_of_a_bare_name_lists_runs_and_is_removed_by_its_own_name(client: ollama.Client) -> None:
    client.copy("smollm2", "bare")  # the model as users often type it, without its tag
    try:
        listed = {m.model: m for m in client.list().models}
        assert "bare" in listed and listed["bare"].digest == listed["smollm2:135m"].digest
        assert client.generate(model="bare", prompt="Hi", options={"num_predict": 2}).eval_count == 2
        with pytest.raises(ollama.ResponseError):
            client.delete("bare@llamacpp")  # NAME@BACKEND means a file, never the named model
    finally:
        client.delete("bare")
    assert "bare" not in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as err:
        client.copy("smollm2:135m", "tinyllama")  # a catalog name, even one not downloaded, is a model's
    assert err.value.status_code == 400 and "already the name of a model" in str(err.value)


def test_create_by_modelfile_and_what_it_refuses(client: ollama.Client, server: ServeProcess) -> None:
    # greedy: a sampled answer may end (or write the stop line) after one token, and then it did not show num_predict
    modelfile = (
        'FROM smollm2:135m\nSYSTEM """Be brief."""\nPARAMETER num_predict 2\nPARAMETER stop "\\n"\n'
        "PARAMETER temperature 0\n"
    )
    r = httpx.post(server.url + "/api/create", json={"model": "brief", "modelfile": modelfile}, timeout=60)
    assert r.status_code == 200 and r.text.strip().splitlines()[-1] == '{"status":"success"}'
    try:
        assert client.generate(model="brief", prompt="Hello").eval_count == 2
    finally:
        client.delete("brief")
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="x", from_="smollm2:135m", template="{{ .Prompt }}")
    assert err.value.status_code == 400 and "Go templates" in str(err.value)
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="x", from_="no-such-model:1b")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="gemma3:270m", from_="smollm2:135m")
    assert err.value.status_code == 400 and "already the name of a model" in str(err.value)


def test_push_is_refused_with_the_reason(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.push("smollm2:135m")
    assert err.value.status_code == 501 and "no registry" in str(err.value)


def test_deleting_a_packaged_model_is_refused_the_same_way_for_both(client: ollama.Client) -> None:
    for name in ("smollm2:135m", "gemma3:270m"):
        with pytest.raises(ollama.ResponseError) as err:
            client.delete(name)
        assert err.value.status_code == 409 and "Python package" in str(err.value), name
    assert {"smollm2:135m", "gemma3:270m"} <= {m.model for m in client.list().models}


def test_every_request_leaves_a_line_in_the_access_log(client: ollama.Client, server: ServeProcess) -> None:
    client.generate(model="smollm2:135m", prompt="Hi", options={"num_predict": 2})
    httpx.post(server.url + "/api/no-such-route", json={})
    with pytest.raises(ollama.ResponseError):
        client.generate(model="no-such-model:1b", prompt="Hi")
    server.wait_output(
        lambda lines: any(
            " POST /api/generate 200 smollm2:135m@llamacpp tokens " in ln and "/2 out" in ln for ln in lines
        ),
        "the generate request's line with its tokens",
    )
    server.wait_output(
        lambda lines: any(" POST /api/no-such-route 404 " in ln and "no such route" in ln for ln in lines),
        "the unknown route's line with its reason",
    )
    server.wait_output(
        lambda lines: any(" POST /api/generate 404 " in ln and "no-such-model" in ln for ln in lines),
        "the unknown model's line with its reason",
    )


def test_by_default_a_second_request_for_a_model_waits_for_the_first(server: ServeProcess) -> None:
    long_answer = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": "Count from one."}],
        "format": COUNTING,
        "options": {"temperature": 0, "num_predict": 4000},
    }
    running = []

    def smol(doc: dict[str, Any]) -> list[dict[str, Any]]:
        return [w for w in doc["workers"] if w["model"] == "smollm2:135m" and w["purpose"] == "chat"]

    try:
        running.append(server.post_raw("/api/chat", long_answer))
        server.wait_for(lambda d: any(w["busy"] for w in smol(d)), "the first answer running")
        running.append(server.post_raw("/api/chat", long_answer))
        # one copy of the model (--parallel 1): the second request waits in its queue instead of loading another
        doc = server.wait_for(lambda d: sum(w["pending"] for w in smol(d)) == 1, "the second request queued")
        assert len(smol(doc)) == 1 and doc["queues"]["smollm2:135m@llamacpp"] == 2, doc
    finally:
        for sock in running:
            sock.close()
    server.wait_idle()
