"""The hub: status of all backends, listing with a dead backend, routing of specs, and the Python API."""

from __future__ import annotations

from pathlib import Path

import pytest

import llmspell
from llmspell.api import set_hub
from llmspell.config import Config
from llmspell.errors import BackendUnavailable, InvalidSpec, ModelNotFound
from llmspell.hub import Hub


@pytest.fixture
def hub(shared_models: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    h = Hub(Config())
    set_hub(h)
    yield h
    h.backends["llamacpp"].close_sync()  # type: ignore[attr-defined]
    set_hub(None)


async def test_status_of_all_with_ollama_down(hub: Hub) -> None:
    statuses = {s.backend: s for s in await hub.status_all()}
    assert statuses["llamacpp"].ready and statuses["llamacpp"].model_count >= 2
    down = statuses["ollama"]
    assert not down.ready and "not reachable at http://127.0.0.1:9" in (down.error or "")
    assert down.address == "http://127.0.0.1:9"


async def test_a_dead_backend_never_breaks_the_listing(hub: Hub) -> None:
    models, failed = await hub.list_all()
    assert {"smollm2:135m", "gemma3:270m"} <= {m.name for m in models}
    assert [f.backend for f in failed] == ["ollama"]


async def test_routing_without_backend_falls_back_to_embedded(hub: Hub) -> None:
    backend, spec = await hub.resolve("smollm2:135m")
    assert backend.name == "llamacpp" and spec.backend == "llamacpp"
    backend, spec = await hub.resolve(None)
    assert str(spec) == "smollm2:135m@llamacpp", "no spec means the configured default model"
    backend, _ = await hub.resolve("smollm2:135m@ollama")
    assert backend.name == "ollama"
    with pytest.raises(InvalidSpec):
        await hub.delete("smollm2:135m")
    with pytest.raises(BackendUnavailable, match="not enabled"):
        Hub(Config(ollama_enabled=False)).backend("ollama")


async def test_ollama_unreachable_gives_a_clear_error_when_chatting(hub: Hub) -> None:
    with pytest.raises(BackendUnavailable) as err:
        async for _ in hub.chat("smollm2:135m@ollama", [{"role": "user", "content": "hi"}]):
            pass
    assert "not reachable" in str(err.value) and "OLLAMA_HOST" in str(err.value)


async def test_stream_api_and_sync_complete(hub: Hub) -> None:
    chunks = [
        c
        async for c in llmspell.stream(
            "smollm2:135m",
            [{"role": "user", "content": "Name the capital of France."}],
            temperature=0,
            max_tokens=20,
        )
    ]
    assert chunks[-1].done and chunks[-1].stats.generated_tokens > 0
    assert "Paris" in "".join(c.text for c in chunks)
    with pytest.raises(ModelNotFound):
        [c async for c in llmspell.stream("nope:1b", "hi")]


def test_sync_complete_and_local_llm(hub: Hub) -> None:
    text = llmspell.complete("smollm2:135m", "Name the capital of France.", temperature=0, max_tokens=20)
    assert "Paris" in text
    assert "Paris" in llmspell.complete(
        "gemma3:270m", "The capital of France is the city of", raw=True, temperature=0, max_tokens=6
    )
    names = {m.name for m in llmspell.LocalLLM.list()}
    assert {"smollm2:135m", "gemma3:270m"} <= names
    info = llmspell.LocalLLM.info("smollm2:135m")
    assert info.quantization == "Q4_1"
    assert {s.backend for s in llmspell.LocalLLM.status()} == {"llamacpp", "ollama"}
    assert "Paris" in llmspell.LocalLLM("smollm2:135m", temperature=0, max_tokens=20).complete(
        "Name the capital of France."
    )


async def test_sync_complete_works_inside_a_running_loop(hub: Hub) -> None:
    # Jupyter calls sync helpers from inside its loop; they must not fail with "loop already running"
    assert "Paris" in llmspell.complete("smollm2:135m", "Name the capital of France.", temperature=0, max_tokens=20)


def test_sync_embed_and_local_llm_embed(hub: Hub) -> None:
    one = llmspell.embed("smollm2:135m", "a red apple")
    two = llmspell.LocalLLM("smollm2:135m").embed(["a red apple", "a green pear"])
    assert len(one) == 1 and len(two) == 2 and len(one[0]) == 576
    assert one[0] == pytest.approx(two[0], abs=1e-5)  # alone or beside another text in one decode


async def test_a_named_model_runs_on_its_model_with_its_system_prompt_and_options(hub: Hub) -> None:
    from llmspell.aliases import Alias
    from llmspell.types import Message, Options

    hub.aliases.put(Alias("terse", "smollm2:135m", "Answer in one word.", {"max_tokens": 3, "temperature": 0}))
    backend, spec = await hub.resolve("terse")
    assert spec.tag == "smollm2:135m" and backend.name == "llamacpp"
    named = [c async for c in hub.chat("terse", [Message("user", "Capital of France?")])]
    assert named[-1].stats is not None and named[-1].stats.generated_tokens <= 3
    plain = [
        c
        async for c in hub.chat(
            "smollm2:135m",
            [Message("system", "Answer in one word."), Message("user", "Capital of France?")],
            Options(max_tokens=3, temperature=0),
        )
    ]
    assert "".join(c.text for c in named) == "".join(c.text for c in plain)
    listed = {m.name: m for m in (await hub.list_all())[0]}
    assert listed["terse"].source == "alias" and listed["terse"].extra["alias_of"] == "smollm2:135m"
    assert (await hub.info("terse")).name == "terse"
    await hub.delete("terse")  # the name goes; the model stays
    assert "terse" not in {m.name for m in (await hub.list_all())[0]}
    assert await backend.has_model(spec)


def test_status_by_backend_name_and_listing_says_what_it_could_not_ask(hub: Hub) -> None:
    statuses = llmspell.LocalLLM.status()
    assert statuses.llamacpp.ready and statuses["llamacpp"] is statuses.llamacpp
    assert not statuses.ollama.ready and statuses[0].backend == statuses[0].backend
    with pytest.raises(AttributeError, match="no backend named 'candlestick'; backends here: llamacpp, ollama"):
        _ = statuses.candlestick
    models = llmspell.LocalLLM.list()
    assert {"smollm2:135m", "gemma3:270m"} <= {m.name for m in models}
    # Ollama is down: its models are not silently missing, the listing says why
    assert [s.backend for s in models.unreachable] == ["ollama"] and "not reachable" in (
        models.unreachable[0].error or ""
    )
    with pytest.raises(BackendUnavailable, match="cannot list the models of ollama"):
        llmspell.LocalLLM.list("ollama")


def test_an_agent_carries_the_conversation_from_turn_to_turn(hub: Hub) -> None:
    agent = llmspell.Agent.create(model="smollm2:135m", system_prompt="You are terse.", temperature=0, max_tokens=8)
    first = agent.complete("Name a fruit.")
    one = agent.session.last
    second = agent.complete("And its colour?")
    two = agent.session.last
    assert first and second and one is not None and two is not None and one.stats and two.stats
    # the second prompt carried the first turn: the model read it again before this one
    assert two.stats.prompt_tokens > one.stats.prompt_tokens + one.stats.generated_tokens
    assert [m.role for m in agent.history] == ["system", "user", "assistant", "user", "assistant"]
    assert agent.history[2].content == first
    agent.reset()
    assert [m.role for m in agent.history] == ["system"]


async def test_an_agent_streams_and_a_bad_model_is_its_error(hub: Hub) -> None:
    agent = llmspell.Agent("smollm2:135m", max_tokens=4)
    chunks = [c async for c in agent.stream("Hi")]
    assert chunks[-1].done and agent.history[-1].content == "".join(c.text for c in chunks)
    ghost = llmspell.Agent("ghost:1b")
    with pytest.raises(ModelNotFound):
        await ghost.acomplete("Hi")
