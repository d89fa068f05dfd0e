"""Shared fixtures: every test runs with LLMSPELL_HOME, the HF cache and the Ollama store in temporary folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from llmspell.config import Config

if TYPE_CHECKING:
    from llmspell.backends.llamacpp import LlamaCppBackend

pytest_plugins = ["hfserver"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point every path the core reads at fresh temporary folders, so no test touches the real home."""
    root = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LLMSPELL_HOME", str(root / "llmspell"))
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(root / "hf-home"))
    monkeypatch.setenv("OLLAMA_MODELS", str(root / "ollama-models"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # Ollama's default port; nothing listens there in tests, which is the "unreachable" case
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    return root


@pytest.fixture(scope="session")
def shared_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models folder for the session, so gemma3's chunks are assembled once, not per test."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def backend(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LlamaCppBackend]:
    """A fresh embedded backend (models stay loaded for the test, then are unloaded)."""
    from llmspell.backends.llamacpp import LlamaCppBackend

    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    b = LlamaCppBackend(Config(keep_alive=300, num_ctx=2048))
    yield b
    b.close_sync()


#: fixtures that run the real engine (or a face on it): a test using any of them is marked "engine", so
#: ``./dev test -m "not engine"`` is a quick loop over everything else; ``./dev test`` still runs all
ENGINE_FIXTURES = frozenset({"shared_models", "backend"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that need the engine (see ENGINE_FIXTURES)."""
    for item in items:
        if ENGINE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)
