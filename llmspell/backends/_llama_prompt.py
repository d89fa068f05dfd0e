"""Prompts for the embedded engine: compiled chat templates, shared prefixes, grammars, build facts."""

from __future__ import annotations

import functools
from typing import Any

from llmspell.errors import InvalidOptions


def _shared_prefix(a: str, b: str) -> int:
    """How many leading characters two prompts share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@functools.lru_cache(maxsize=16)
def _formatter(template: str, eos: str, bos: str) -> Any:
    """A compiled chat template (compiling Jinja costs milliseconds that would land on every first token)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)


@functools.lru_cache(maxsize=32)
def _grammar_for(fmt: str) -> Any:
    """A llama.cpp grammar for "json" or a JSON schema (cached: building one parses the schema)."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if fmt == "json":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    try:
        return LlamaGrammar.from_json_schema(fmt, verbose=False)
    except Exception as exc:  # the converter raises plain exceptions for unsupported schema features
        raise InvalidOptions(f"the JSON schema in format cannot be turned into a grammar: {exc}") from None


@functools.cache
def engine_uses_openmp() -> bool:
    """Whether llama.cpp was built with OpenMP (each thread driving a model then gets its own spinning pool)."""
    import llama_cpp

    return b"OPENMP = 1" in llama_cpp.llama_print_system_info()


@functools.cache
def _gpu_offload() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())
