"""Shared fixtures: every test runs with LLMSPELL_HOME, the HF cache and the Ollama store in temporary folders."""

from __future__ import annotations

import pytest


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
