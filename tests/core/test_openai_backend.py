"""The OpenAI backend against real servers on 127.0.0.1: `llmspell serve` (ours) and llama-cpp-python's own OpenAI
server (not ours, which is the point), both reached as named endpoints from config.toml."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from helpers import collect
from hfserver import LocalHub
from peers import PEER_MODEL, LlamaCppServer, llama_cpp_server, write_endpoints
from server.serveproc import ServeProcess, pull_hub, serve  # noqa: F401 - pull_hub is a fixture

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.backends.ollama import OllamaBackend
from llmspell.backends.openai import OpenAIBackend
from llmspell.compare import compare
from llmspell.config import load_config
from llmspell.errors import InvalidSpec
from llmspell.hub import Hub
from llmspell.session import Session
from llmspell.spec import parse_spec
from llmspell.types import Message, Options

CAPITAL = [Message("user", "Name the capital of France.")]
GREEDY = Options(temperature=0.0, max_tokens=24, seed=7)


@pytest.fixture(scope="module")
def box(
    tmp_path_factory: pytest.TempPathFactory,
    shared_models: Path,
    pull_hub: LocalHub,  # noqa: F811
) -> Iterator[ServeProcess]:
    yield from serve(tmp_path_factory, shared_models, pull_hub)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    yield from llama_cpp_server(tmp_path_factory.mktemp("peer"))


@pytest.fixture
def hub(box: ServeProcess, peer: LlamaCppServer) -> Iterator[Hub]:
    """A hub whose config names `llmspell serve` twice (its OpenAI and its Ollama API) and the peer server."""
    write_endpoints(
        Path(os.environ["LLMSPELL_HOME"]),
        [
            {"name": "box", "kind": "openai", "url": box.url},
            {"name": "boxo", "kind": "ollama", "url": box.url},
            {"name": "gemma-only", "kind": "openai", "url": box.url + "/v1", "models": ["gemma*"]},
            {"name": "boxo-gemma", "kind": "ollama", "url": box.url, "models": ["gemma*"]},
            {"name": "peer", "kind": "openai", "url": peer.url},
        ],
    )
    yield Hub(load_config())


async def test_status_names_the_server_measures_the_round_trip_and_counts_models(hub: Hub) -> None:
    statuses = {s.backend: s for s in await hub.status_all()}
    box, peer = statuses["box"], statuses["peer"]
    assert box.ready and box.version is not None and box.version.startswith("llmspell serve ")
    assert box.address is not None and box.address.endswith("/v1") and box.model_count >= 2
    assert box.latency is not None and box.latency > 0
    assert peer.ready and peer.model_count == 1
    assert statuses["gemma-only"].model_count == 1  # the filter lets only gemma3 through
    assert statuses["boxo"].ready  # a second Ollama server, by name


async def test_every_endpoint_lists_its_models_under_its_own_name(hub: Hub) -> None:
    models, failed = await hub.list_all()
    names = {f"{m.name}@{m.backend}" for m in models}
    assert not failed
    assert {"smollm2:135m@box", "smollm2:135m@boxo", f"{PEER_MODEL}@peer", "gemma3:270m@gemma-only"} <= names
    assert not any(n.startswith("smollm2") and n.endswith("@gemma-only") for n in names)
    only_peer, _ = await hub.list_all("peer")
    assert [m.name for m in only_peer] == [PEER_MODEL]
    info = await hub.info(f"{PEER_MODEL}@peer")
    assert info.backend == "peer" and info.location.endswith("/v1") and info.extra.get("owned_by")


async def test_a_remote_answer_equals_the_local_engine_on_the_same_file(hub: Hub, backend: LlamaCppBackend) -> None:
    local, local_last = await collect(backend.chat(parse_spec("smollm2:135m@llamacpp"), CAPITAL, GREEDY))
    remote, last = await collect(hub.chat("smollm2:135m@box", CAPITAL, GREEDY))
    assert "Paris" in local and remote == local
    assert last.stats is not None and local_last.stats is not None
    # `llmspell serve` sends usage: the counts are the server's, not estimated
    assert not last.stats.estimated and last.stats.generated_tokens == local_last.stats.generated_tokens
    assert last.stats.prompt_tokens > 0 and last.stats.time_to_first_token > 0
    through_ollama, _ = await collect(hub.chat("smollm2:135m@boxo", CAPITAL, GREEDY))
    assert through_ollama == local


async def test_a_server_that_sends_no_usage_gets_counts_made_here_and_marked(hub: Hub) -> None:
    text, last = await collect(hub.chat(f"{PEER_MODEL}@peer", CAPITAL, Options(temperature=0.0, max_tokens=6)))
    assert text.strip()
    stats = last.stats
    assert stats is not None and stats.estimated and 0 < stats.generated_tokens <= 6
    assert stats.stop_reason == "length"
    assert "counted here" in stats.summary()


async def test_options_reach_the_server(hub: Hub) -> None:
    spec = "smollm2:135m@box"
    # seed: two sampled answers with one seed are one answer; top_k = 1 (an extra body field) is greedy
    sampled = Options(temperature=0.9, seed=1234, max_tokens=16)
    a, _ = await collect(hub.chat(spec, CAPITAL, sampled))
    b, _ = await collect(hub.chat(spec, CAPITAL, sampled))
    assert a == b
    greedy, _ = await collect(hub.chat(spec, CAPITAL, GREEDY))
    top1, _ = await collect(hub.chat(spec, CAPITAL, Options(temperature=0.9, top_k=1, max_tokens=24, seed=99)))
    assert top1 == greedy
    _, last = await collect(hub.chat(spec, CAPITAL, Options(temperature=0.0, max_tokens=3)))
    assert last.stats is not None and last.stats.generated_tokens == 3 and last.stats.stop_reason == "length"
    stopped, _ = await collect(hub.chat(spec, CAPITAL, Options(temperature=0.0, max_tokens=24, stop=("Paris",))))
    assert "Paris" not in stopped and greedy.startswith(stopped.rstrip())


async def test_a_json_schema_format_comes_back_valid(hub: Hub) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    messages = [Message("user", "Give the capital of France as JSON.")]
    for spec in ("smollm2:135m@box", f"{PEER_MODEL}@peer"):
        # the peer refuses json_schema (it predates it) and is asked again with the schema in json_object
        text, _ = await collect(hub.chat(spec, messages, Options(temperature=0.0, max_tokens=64, format=schema)))
        jsonschema.validate(json.loads(text), schema)


async def test_a_completion_continues_the_text_as_the_local_engine_does(hub: Hub, backend: LlamaCppBackend) -> None:
    prompt = "The capital of France is"
    opts = Options(temperature=0.0, max_tokens=8)
    local, _ = await collect(backend.complete(parse_spec("smollm2:135m@llamacpp"), prompt, opts))
    remote, _ = await collect(hub.complete("smollm2:135m@box", prompt, opts))
    assert remote == local and remote.strip()
    peer_text, _ = await collect(hub.complete(f"{PEER_MODEL}@peer", prompt, opts))
    assert peer_text.strip()


async def test_embeddings_through_an_endpoint_are_unit_vectors(hub: Hub) -> None:
    result = await hub.embed("smollm2:135m@box", ["the cat sat", "the cat sat", "stock prices fell"])
    same, other = result.vectors[0], result.vectors[2]
    assert len(result.vectors) == 3 and abs(sum(x * x for x in same) - 1) < 1e-4
    assert sum(a * b for a, b in zip(same, result.vectors[1], strict=True)) > 0.999
    assert sum(a * b for a, b in zip(same, other, strict=True)) < 0.999


async def test_closing_the_stream_cancels_on_the_server_and_the_next_answer_works(hub: Hub, box: ServeProcess) -> None:
    story = [Message("user", "Write a long story about a lighthouse.")]
    stream = hub.chat("smollm2:135m@box", story, Options(temperature=0.0, max_tokens=2000))
    got = []
    async for chunk in stream:
        got.append(chunk)
        if len(got) == 3:
            break
    await stream.aclose()
    assert len(got) == 3 and not any(c.done for c in got)
    doc = box.wait_idle()  # the server saw the connection go and stopped generating
    assert any(
        w["last_stop_reason"] == "cancelled" and w["last_generated_tokens"] < 2000
        for w in doc["workers"]
        if w["model"] == "smollm2:135m"
    ), doc
    text, _ = await collect(hub.chat("smollm2:135m@box", CAPITAL, GREEDY))
    assert "Paris" in text


async def test_a_conversation_on_a_remote_model_and_a_compare_with_a_local_one(hub: Hub) -> None:
    session = Session(hub)
    await session.switch_model(f"{PEER_MODEL}@peer")
    for prompt in ("My name is Ada.", "What is my name?"):
        turn = session.send(prompt, Options(temperature=0.0, max_tokens=16))
        async for _ in turn:
            pass
        assert session.result(turn).error is None and turn.state == "done"
    assert [e.role for e in session.conv.entries] == ["user", "assistant"] * 2
    assert all(e.content for e in session.conv.entries)

    local = Session(hub).fork("smollm2:135m@llamacpp")
    remote = Session(hub).fork("smollm2:135m@box")
    local.options = remote.options = GREEDY
    finals = {}
    async for event in compare(hub, [local, remote], "Name the capital of France."):
        if event.kind == "done":
            finals[event.index] = "".join(event.metrics.parts)
        assert event.kind != "error", event.metrics.error
    assert finals[0] == finals[1] and "Paris" in finals[0]


async def test_pull_and_delete_are_refused_for_an_openai_endpoint_but_not_for_an_ollama_one(hub: Hub) -> None:
    assert not OpenAIBackend.IMPLEMENTS_PULL and not OpenAIBackend.IMPLEMENTS_DELETE
    with pytest.raises(InvalidSpec, match="box does not pull models"):
        async for _ in hub.pull("smollm2:135m@box"):
            pass
    with pytest.raises(InvalidSpec, match="box does not delete models"):
        await hub.delete("smollm2:135m@box")
    assert isinstance(hub.backend("boxo"), OllamaBackend) and OllamaBackend.IMPLEMENTS_PULL


async def test_an_arena_round_between_a_local_and_a_remote_model(hub: Hub) -> None:
    from llmspell.arena import Arena

    arena = Arena(hub, None, seed=3, options=Options(temperature=0, max_tokens=8))
    pool = await arena.set_pool(["gemma3:270m@llamacpp", f"{PEER_MODEL}@peer"])
    assert sorted(c.label for c in pool) == ["gemma3:270m@llamacpp", f"{PEER_MODEL}@peer"]
    round_ = arena.start("Say hello.")
    async for _ in round_.stream(hub, parallel=False):
        pass
    assert round_.problem() is None
    vote = arena.vote(round_, "a")
    remote = next(a for a in vote.answers if a.backend == "peer")
    assert remote.content and remote.stats is not None and remote.stats.generated_tokens > 0


def test_serve_leaves_out_an_endpoint_that_is_itself(tmp_path: Path, shared_models: Path) -> None:
    import httpx

    proc = ServeProcess(tmp_path, shared_models)
    write_endpoints(tmp_path / "home", [{"name": "me", "kind": "openai", "url": f"http://localhost:{proc.port}"}])
    proc.start()
    try:
        models = httpx.get(proc.url + "/v1/models", timeout=30).json()["data"]
        assert models and not any(m["id"].endswith("@me") for m in models)
        assert "not using the endpoint me" in proc.output() and "that is this server" in proc.output()
    finally:
        proc.stop()


async def test_status_and_listings_during_an_answer_do_not_cut_it(hub: Hub) -> None:
    # llama-cpp-python's server ends a running answer when any other request arrives; the faces check status and
    # list models while answers stream, so those are answered from memory meanwhile
    await hub.status_all()
    stream = hub.chat(
        f"{PEER_MODEL}@peer", [Message("user", "Count from one to fifty in words.")], Options(max_tokens=48)
    )
    text, last = "", None
    async for chunk in stream:
        if not text and chunk.text:
            statuses = {s.backend: s for s in await hub.status_all()}
            models, _ = await hub.list_all("peer")
            assert statuses["peer"].ready and [m.name for m in models] == [PEER_MODEL]
        text += chunk.text
        last = chunk
    assert last is not None and last.done and last.stats is not None and last.stats.generated_tokens > 1


async def test_an_ollama_endpoints_filter_keeps_its_other_models_out_of_reach(hub: Hub, box: ServeProcess) -> None:
    from llmspell.errors import ModelNotFound

    listed, _ = await hub.list_all("boxo-gemma")
    assert [m.name for m in listed] == ["gemma3:270m"]
    assert not await hub.backend("boxo-gemma").has_model(parse_spec("smollm2:135m@boxo-gemma"))
    with pytest.raises(ModelNotFound, match="does not offer smollm2:135m"):
        await collect(hub.chat("smollm2:135m@boxo-gemma", CAPITAL, GREEDY))
    with pytest.raises(ModelNotFound, match="does not offer smollm2:135m"):
        await hub.delete("smollm2:135m@boxo-gemma")
    with pytest.raises(ModelNotFound, match="does not offer"):
        async for _ in hub.pull("qwen2.5:0.5b@boxo-gemma"):
            pass
    # refused here: the shared server never saw a request to run, pull or delete them
    assert "/api/delete" not in box.output() and "/api/pull" not in box.output()
