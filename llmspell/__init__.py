"""llmspell: local LLMs (Ollama and embedded llama.cpp) behind one streaming contract.

``import llmspell`` stays light: the engine, the HTTP clients and every face load only when used.
"""

from __future__ import annotations

from llmspell.errors import (
    BackendUnavailable,
    Cancelled,
    CatalogError,
    ConfigError,
    DownloadError,
    GenerationError,
    InsufficientResources,
    IntegrityError,
    InvalidOptions,
    InvalidSpec,
    LLMSpellError,
    ModelFileCorrupt,
    ModelFileMissing,
    ModelNotFound,
    NoChatTemplate,
)
from llmspell.spec import ModelSpec, parse_spec
from llmspell.types import BackendStatus, Chunk, Embeddings, Message, ModelInfo, Options, PullProgress, Stats

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "BackendStatus",
    "BackendUnavailable",
    "Cancelled",
    "CatalogError",
    "Chunk",
    "ConfigError",
    "DownloadError",
    "Embeddings",
    "GenerationError",
    "InsufficientResources",
    "IntegrityError",
    "InvalidOptions",
    "InvalidSpec",
    "LLMSpellError",
    "LocalLLM",
    "Message",
    "ModelFileCorrupt",
    "ModelFileMissing",
    "ModelInfo",
    "ModelNotFound",
    "ModelSpec",
    "NoChatTemplate",
    "Options",
    "PullProgress",
    "Stats",
    "__version__",
    "acomplete",
    "complete",
    "embed",
    "get_hub",
    "parse_spec",
    "stream",
]

_LAZY = {"stream", "complete", "acomplete", "embed", "Agent", "LocalLLM", "get_hub", "set_hub"}


def __getattr__(name: str) -> object:
    # the API module pulls in the hub and backends; load it only when a caller reaches for it
    if name in _LAZY:
        from llmspell import api

        return getattr(api, name)
    raise AttributeError(f"module 'llmspell' has no attribute {name!r}")
