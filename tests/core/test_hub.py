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
