"""The core stays headless: importing it loads no UI, kernel or web framework, and no engine."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("textual", "prompt_toolkit", "ipykernel", "jupyter_client", "fastapi", "starlette", "uvicorn")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_modules_import_no_face_framework() -> None:
    core = [
        "llmspell",
        "llmspell.api",
        "llmspell.hub",
        "llmspell.catalog",
        "llmspell.config",
        "llmspell.spec",
        "llmspell.chat",
        "llmspell.store",
        "llmspell.types",
        "llmspell.pull",
        "llmspell.ggufcheck",
        "llmspell.discovery",
        "llmspell.machine",
        "llmspell.backends.llamacpp",
        "llmspell.backends.ollama",
    ]
    loaded = _modules_after("\n".join(f"import {m}" for m in core))
    leaked = {m for m in loaded for f in FORBIDDEN if m == f or m.startswith(f + ".")}
    assert not leaked, f"the core pulled in {sorted(leaked)}"


def test_import_llmspell_is_light() -> None:
    loaded = _modules_after("import llmspell")
    assert "llama_cpp" not in loaded and "huggingface_hub" not in loaded and "ollama" not in loaded
    assert "llmspell.api" not in loaded, "the API loads lazily on first use"


def test_faces_have_distinctive_import_names() -> None:
    loaded = _modules_after("import llmspell_tui, llmspell_kernel")
    assert "llmspell_tui" in loaded and "llmspell_kernel" in loaded
    assert "tui" not in loaded and "kernel" not in loaded
