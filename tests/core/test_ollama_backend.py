"""The Ollama backend against a real Ollama-API server: `llmspell serve` in a subprocess over the real smollm2:135m."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from helpers import collect, smollm2_file
from hfserver import LocalHub, silent_endpoint, unused_endpoint
from server.serveproc import (  # noqa: F401 - pull_hub is a fixture
    PULL_TAG,
    FaultAfterChunksBackend,
    ServeProcess,
    inprocess_server,
    pull_hub,
    serve,
)

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.backends.ollama import OllamaBackend
from llmspell.chat import Conversation, ask
from llmspell.config import Config
from llmspell.errors import BackendUnavailable, GenerationError, InvalidOptions, LLMSpellError, ModelNotFound
from llmspell.hub import Hub
from llmspell.server.ollama_api import OLLAMA_API_VERSION
from llmspell.spec import parse_spec
from llmspell.types import Message, Options

SMOL = parse_spec("smollm2:135m@ollama")
HELLO = [Message("user", "Say hello.")]
LONG = [Message("user", "Write a very long story about a lighthouse.")]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    shared_models: Path,
    pull_hub: LocalHub,  # noqa: F811
) -> Iterator[ServeProcess]:
    yield from serve(tmp_path_factory, shared_models, pull_hub)


def ollama_at(url: str, read_timeout: float = 120.0) -> OllamaBackend:
    return OllamaBackend(Config(ollama_connect_timeout=2.0, ollama_read_timeout=read_timeout), url=url)


@pytest.fixture
def ollama_backend(server: ServeProcess) -> OllamaBackend:
    return ollama_at(server.url)


async def test_status_list_and_info_of_a_running_server(ollama_backend: OllamaBackend, server: ServeProcess) -> None:
    st = await ollama_backend.status()
    # the version of the Ollama API it follows, as an Ollama server reports its own
    assert st.ready and st.error is None and st.version == OLLAMA_API_VERSION
    assert st.model_count >= 2 and st.address == server.url
    models = {m.name: m for m in await ollama_backend.list_models()}
    smol = models["smollm2:135m"]
    assert smol.backend == "ollama" and smol.source == "server" and smol.location == server.url
    assert smol.quantization == "Q4_1" and smol.family == "smollm2" and smol.size_bytes and smol.size_bytes > 50e6
    assert await ollama_backend.has_model(SMOL) and not await ollama_backend.has_model(parse_spec("ghost:1b@ollama"))
    info = await ollama_backend.info(SMOL)
    assert info.has_chat_template and "<|im_start|>" in (info.chat_template or "")
    assert info.context_length == 8192 and info.license == "apache-2.0" and info.parameters == "135M"


async def test_chat_with_every_option_matches_the_embedded_engine(
    ollama_backend: OllamaBackend, backend: LlamaCppBackend
) -> None:
    opts = Options(
        temperature=0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, seed=11, max_tokens=8, num_ctx=2048
    )
    via_server, last = await collect(ollama_backend.chat(SMOL, HELLO, opts))
    direct, _ = await collect(backend.chat(parse_spec("smollm2:135m"), HELLO, opts))
    # the options reached the engine: same greedy answer, exactly max_tokens tokens, so num_predict was mapped
    assert via_server == direct and via_server.strip()
    st = last.stats
    assert st is not None and st.generated_tokens == 8 and st.stop_reason == "length"
    assert st.prompt_tokens > 5 and st.generation_time > 0 and st.total_time >= st.generation_time
    assert last.model == "smollm2:135m"
    words = via_server.split()
    assert len(words) >= 3
    cut, last = await collect(
        ollama_backend.chat(SMOL, HELLO, Options.from_dict({**opts.to_dict(), "stop": [words[2]]}))
    )
    assert words[2] not in cut and via_server.startswith(cut) and last.stats and last.stats.stop_reason == "stop"
    threads, _ = await collect(ollama_backend.chat(SMOL, HELLO, opts.with_values({"num_threads": 1})))
    assert threads == via_server


async def test_embeddings_logprobs_and_penalties_match_the_embedded_engine(
    ollama_backend: OllamaBackend, backend: LlamaCppBackend
) -> None:
    texts = ["a red apple", "a green pear"]
    remote = await ollama_backend.embed(SMOL, texts)
    local = await backend.embed(parse_spec("smollm2:135m"), texts)
    assert len(remote.vectors) == 2 and remote.prompt_tokens == local.prompt_tokens
    for a, b in zip(remote.vectors, local.vectors, strict=True):
        assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.9999
    opts = Options(temperature=0, seed=1, max_tokens=6, logprobs=2, presence_penalty=1.5, frequency_penalty=0.5)
    via_server = [c async for c in ollama_backend.chat(SMOL, HELLO, opts)]
    direct = [c async for c in backend.chat(parse_spec("smollm2:135m"), HELLO, opts)]
    assert "".join(c.text for c in via_server) == "".join(c.text for c in direct)
    remote_lp = [lp for c in via_server for lp in c.logprobs]
    local_lp = [lp for c in direct for lp in c.logprobs]
    assert [lp.token for lp in remote_lp] == [lp.token for lp in local_lp] and len(remote_lp) == 6
    assert all(
        len(lp.top) == 2 and abs(lp.logprob - mine.logprob) < 1e-6 for lp, mine in zip(remote_lp, local_lp, strict=True)
    )
    with pytest.raises(ModelNotFound):
        await ollama_backend.embed(parse_spec("ghost:1b@ollama"), ["hi"])


async def test_the_configs_options_reach_both_backends_alike(
    server: ServeProcess, shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    config = Config(ollama_connect_timeout=2.0, options=Options(max_tokens=4, temperature=0, seed=3))
    remote, local = OllamaBackend(config, url=server.url), LlamaCppBackend(config)
    try:
        over_http, last_remote = await collect(remote.chat(SMOL, HELLO))
        in_process, last_local = await collect(local.chat(parse_spec("smollm2:135m"), HELLO))
        # [options] max_tokens = 4 stopped the embedded engine at 4 and let the Ollama backend write on
        assert last_remote.stats and last_local.stats
        assert last_remote.stats.generated_tokens == last_local.stats.generated_tokens == 4
        assert over_http == in_process  # temperature and seed were sent too: the same greedy answer
        # a request's own option still wins over the config's, on both
        _, short_remote = await collect(remote.chat(SMOL, HELLO, Options(max_tokens=2)))
        _, short_local = await collect(local.chat(parse_spec("smollm2:135m"), HELLO, Options(max_tokens=2)))
        assert short_remote.stats and short_local.stats
        assert short_remote.stats.generated_tokens == short_local.stats.generated_tokens == 2
    finally:
        local.close_sync()


async def test_format_schema_and_plain_completion(ollama_backend: OllamaBackend) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
    text, _ = await collect(
        ollama_backend.chat(
            SMOL, [Message("user", "Name a colour in JSON.")], Options(temperature=0, max_tokens=40, format=schema)
        )
    )
    jsonschema.validate(json.loads(text), schema)
    text, last = await collect(
        ollama_backend.complete(parse_spec("gemma3:270m@ollama"), "Once upon a time", Options(max_tokens=4))
    )
    assert text and last.stats and last.stats.generated_tokens == 4


async def test_loaded_and_unload_with_keep_alive_zero(ollama_backend: OllamaBackend) -> None:
    await collect(ollama_backend.chat(SMOL, HELLO, Options(max_tokens=2)))
    assert "smollm2:135m" in await ollama_backend.loaded()
    # ps: what is loaded, how big it is and when the server will unload it
    running = {m.name: m for m in await ollama_backend.ps()}
    smol = running["smollm2:135m"]
    assert smol.loaded and smol.backend == "ollama" and smol.size_bytes and smol.size_bytes > 50e6
    assert smol.expires_at is not None
    assert dt.datetime.fromisoformat(smol.expires_at.replace("Z", "+00:00")) > dt.datetime.now(dt.UTC)
    [copy] = [r for r in await ollama_backend.running() if r.name == "smollm2:135m"]
    assert copy.backend == "ollama" and copy.expires_in is not None and copy.expires_in > 0
    assert "smollm2:135m" in (await ollama_backend.status()).loaded
    assert await ollama_backend.unload(SMOL) is True
    assert "smollm2:135m" not in await ollama_backend.loaded()
    assert await ollama_backend.unload(SMOL) is False


async def test_pull_with_progress_then_delete(ollama_backend: OllamaBackend, pull_hub: LocalHub) -> None:  # noqa: F811
    spec = parse_spec(PULL_TAG + "@ollama")
    pull_hub.throttle = 30_000_000
    try:
        steps = [p async for p in ollama_backend.pull(spec)]
    finally:
        pull_hub.throttle = None
    try:
        sized = [p for p in steps if p.total and not p.done]
        assert sized and [p.fraction for p in sized] == sorted(p.fraction for p in sized)
        # each progress line names the layer by the digest of the bytes the hub served
        want = "sha256:" + hashlib.sha256(smollm2_file().read_bytes()).hexdigest()
        assert {p.digest for p in sized if p.status.startswith("downloading")} == {want}
        assert steps[-1].done and steps[-1].status == "success" and steps[-1].completed == steps[-1].total
        assert sum(p.done for p in steps) == 1
        assert await ollama_backend.has_model(spec)
    finally:
        await ollama_backend.delete(spec)
    assert not await ollama_backend.has_model(spec)
    with pytest.raises(ModelNotFound, match="has no model"):
        await ollama_backend.delete(spec)
    with pytest.raises(ModelNotFound, match="llmspell model pull ghost:1b@ollama"):
        [p async for p in ollama_backend.pull(parse_spec("ghost:1b@ollama"))]


async def test_unknown_model_and_bad_option_are_clear_errors(ollama_backend: OllamaBackend) -> None:
    with pytest.raises(ModelNotFound) as err:
        await collect(ollama_backend.chat(parse_spec("ghost:1b@ollama"), HELLO))
    assert "has no model ghost:1b" in str(err.value) and "pull" in str(err.value)
    with pytest.raises(ModelNotFound):
        await ollama_backend.info(parse_spec("ghost:1b@ollama"))


async def test_closing_the_stream_cancels_on_the_server(ollama_backend: OllamaBackend, server: ServeProcess) -> None:
    stream = ollama_backend.chat(SMOL, LONG, Options(temperature=0, max_tokens=2000))
    got = []
    async for chunk in stream:
        got.append(chunk)
        if len(got) == 3:
            break
    await stream.aclose()
    assert all(not c.done for c in got)
    doc = server.wait_idle()
    assert any(
        w["last_stop_reason"] == "cancelled" and w["last_generated_tokens"] < 2000
        for w in doc["workers"]
        if w["model"] == "smollm2:135m"
    ), doc
    _, last = await collect(ollama_backend.chat(SMOL, HELLO, Options(max_tokens=3)))
    assert last.stats and last.stats.generated_tokens == 3


async def test_an_error_line_mid_stream_becomes_a_generation_error(backend: LlamaCppBackend) -> None:
    hub = Hub(Config(), backends=[FaultAfterChunksBackend(backend, after=3)])
    with inprocess_server(hub) as url:
        ob = ollama_at(url)
        got: list[str] = []
        with pytest.raises(GenerationError) as err:
            async for chunk in ob.chat(SMOL, LONG, Options(temperature=0, max_tokens=50)):
                got.append(chunk.text)
        assert "injected fault: the engine failed mid-answer" in str(err.value) and url in str(err.value)
        assert len(got) == 3 and "".join(got).strip()


async def test_unreachable_and_hung_servers_are_clear_and_bounded() -> None:
    dead = ollama_at(unused_endpoint())
    st = await dead.status()
    assert not st.ready and "not reachable" in (st.error or "")
    with pytest.raises(BackendUnavailable, match="not reachable") as err:
        await collect(dead.chat(SMOL, HELLO))
    assert "OLLAMA_HOST" in str(err.value)
    with pytest.raises(BackendUnavailable, match="not reachable"):
        await dead.list_models()
    with silent_endpoint() as url:
        hung = ollama_at(url, read_timeout=0.5)
        st = await hung.status()
        assert not st.ready and "did not answer in time" in (st.error or "")
        with pytest.raises(BackendUnavailable, match="did not answer in time") as err:
            await collect(hung.chat(SMOL, HELLO))
        assert "read_timeout" in str(err.value)
        with pytest.raises(BackendUnavailable, match="did not answer in time"):
            [p async for p in hung.pull(SMOL)]


async def test_server_down_up_killed_mid_answer_and_back(tmp_path: Path, shared_models: Path) -> None:
    proc = ServeProcess(tmp_path, shared_models)
    ob = ollama_at(proc.url)
    down = await ob.status()
    assert not down.ready and "not reachable" in (down.error or "") and proc.url in (down.error or "")
    try:
        proc.start()
        assert (await ob.status()).ready
        hub = Hub(Config(), backends=[ob])
        conv = Conversation("smollm2:135m@ollama")
        seen = 0
        with pytest.raises(LLMSpellError) as err:
            async for chunk in ask(
                hub, conv, "Write a very long story about a lighthouse.", options=Options(max_tokens=2000)
            ):
                seen += bool(chunk.text)
                if seen == 3:
                    proc.kill()
        assert isinstance(err.value, BackendUnavailable) and "was cut while generating" in str(err.value)
        answer = conv.entries[-1]
        assert answer.role == "assistant" and answer.content.strip() and answer.state == "failed"
        gone = await ob.status()
        assert not gone.ready and "not reachable" in (gone.error or "")
        proc.start()
        back = await ob.status()
        assert back.ready and back.model_count >= 2
    finally:
        proc.stop()


async def test_auto_detect_prefers_a_reachable_ollama_that_has_the_model(
    server: ServeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    hub = Hub(Config())
    backend, spec = await hub.resolve("smollm2:135m")
    assert backend.name == "ollama" and spec.backend == "ollama"
    backend, spec = await hub.resolve("tinyllama")  # a catalog model the server does not have
    assert backend.name == "llamacpp"
    backend, _ = await hub.resolve("smollm2:135m@llamacpp")
    assert backend.name == "llamacpp"
    _, last = await collect(hub.chat("smollm2:135m", HELLO, Options(max_tokens=3)))
    assert last.stats and last.stats.generated_tokens == 3
    monkeypatch.setenv("OLLAMA_HOST", unused_endpoint())
    backend, _ = await Hub(Config()).resolve("smollm2:135m")
    assert backend.name == "llamacpp"


def test_model_list_shows_the_servers_models_and_survives_without_it(server: ServeProcess, tmp_path: Path) -> None:
    env = {**server.env, "LLMSPELL_HOME": str(tmp_path / "cli"), "OLLAMA_HOST": server.url}
    run = subprocess.run(
        [sys.executable, "-m", "llmspell", "model", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert "smollm2:135m@ollama" in run.stdout and "smollm2:135m@llamacpp" in run.stdout
    assert "not listed" not in run.stderr
    as_json = subprocess.run(
        [sys.executable, "-m", "llmspell", "model", "list", "--json"],
        env={**env, "OLLAMA_HOST": unused_endpoint()},
        capture_output=True,
        text=True,
        timeout=120,
    )
    doc = json.loads(as_json.stdout)
    assert {m["backend"] for m in doc["models"]} == {"llamacpp"}
    assert [u["backend"] for u in doc["unavailable"]] == ["ollama"] and "not reachable" in doc["unavailable"][0][
        "error"
    ]
    with silent_endpoint() as hung_url:
        # a server that accepts and never answers: the listing gives up on it after its short limit, not the
        # 15 s it allowed before, and still lists the embedded models
        hung = subprocess.run(
            [sys.executable, "-m", "llmspell", "model", "list"],
            env={**env, "OLLAMA_HOST": hung_url},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert hung.returncode == 0 and "smollm2:135m@llamacpp" in hung.stdout and "@ollama" not in hung.stdout
    assert "note: ollama not listed" in hung.stderr and "did not answer within 3 s" in hung.stderr, hung.stderr


async def test_an_arena_round_puts_a_local_and_a_served_model_on_equal_terms(
    server: ServeProcess, shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmspell.arena import Arena

    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    monkeypatch.setenv("OLLAMA_HOST", server.url)
    hub = Hub(Config(num_ctx=2048, options=Options(temperature=0, max_tokens=8)))
    try:
        arena = Arena(hub, None, seed=3)
        # one file served two ways is one model: it is never drawn against itself
        with pytest.raises(InvalidOptions, match="the same file as smollm2:135m@llamacpp"):
            await arena.set_pool(["smollm2:135m@llamacpp", "smollm2:135m@ollama"])
        pool = await arena.set_pool(["gemma3:270m@llamacpp", "smollm2:135m@ollama"])
        assert sorted(c.label for c in pool) == ["gemma3:270m@llamacpp", "smollm2:135m@ollama"]
        round_ = arena.start("Say hello.")
        async for _ in round_.stream(hub, parallel=False):
            pass
        served = next(m for c, m in zip(round_.contenders, round_.metrics, strict=True) if c.backend == "ollama")
        # the round's options reach the server whole: the same seed, context and sampling give, on the embedded
        # engine, the answer the server gave
        direct, _ = await collect(hub.chat("smollm2:135m@llamacpp", [Message("user", "Say hello.")], round_.options))
        assert served.text == direct
        vote = arena.vote(round_, "tie")
        answer = next(a for a in vote.answers if a.backend == "ollama")
        digest = hashlib.sha256(smollm2_file().read_bytes()).hexdigest()
        assert answer.quantization == "Q4_1" and answer.digest == digest
        assert answer.stats is not None and answer.stats.generated_tokens > 0
    finally:
        await hub.close()
