"""The core stays headless: importing it loads no UI, kernel or web framework, and no engine."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

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
        "llmspell.backends.openai",
        "llmspell.endpoints",
        "llmspell.tools",
        "llmspell.tools.mcp",
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


SOURCES = Path(__file__).resolve().parents[2]
#: the modules that implement one kind of backend: only the registry (by name) and their own package may use them
CONCRETE = ("llmspell.backends.llamacpp", "llmspell.backends.ollama", "llmspell.backends._llama_worker")


def _python_files() -> list[Path]:
    return [p for top in ("llmspell", "tui", "kernel") for p in (SOURCES / top).rglob("*.py")]


def test_nothing_outside_the_backends_package_imports_a_concrete_backend() -> None:
    offenders = []
    for path in _python_files():
        if path.is_relative_to(SOURCES / "llmspell" / "backends"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.relative_to(SOURCES)}:{node.lineno} {n}" for n in names if n.startswith(CONCRETE)]
    assert not offenders, "go through the Backend contract (hub.backends, registry) instead: " + ", ".join(offenders)


def test_nothing_reaches_into_a_backend_with_getattr_or_hasattr() -> None:
    offenders = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and node.args
                and "backend" in ast.unparse(node.args[0]).lower()
            ):
                offenders.append(f"{path.relative_to(SOURCES)}:{node.lineno} {ast.unparse(node)}")
    assert not offenders, "add what is needed to the Backend contract instead: " + ", ".join(offenders)


PLUGIN = '''
from llmspell.backends.base import Backend
from llmspell.types import BackendStatus, Chunk, ModelInfo, Stats


class EchoBackend(Backend):
    """A third kind, shipped by another package: it answers with the last message, reversed."""

    kind = "echo"

    @classmethod
    def from_config(cls, config):
        return cls()

    async def status(self):
        return BackendStatus(self.name, True, version="echo 1")

    async def list_models(self):
        return [ModelInfo(name="mirror", backend=self.name)]

    async def has_model(self, spec):
        return spec.name == "mirror"

    async def info(self, spec):
        return ModelInfo(name=spec.name, backend=self.name)

    async def pull(self, spec):
        return
        yield

    async def delete(self, spec):
        pass

    async def loaded(self):
        return []

    async def unload(self, spec):
        return False

    async def chat(self, spec, messages, options=None):
        yield Chunk(messages[-1].content[::-1])
        yield Chunk("", done=True, stats=Stats(generated_tokens=1))

    async def complete(self, spec, prompt, options=None):
        yield Chunk(prompt[::-1], done=True, stats=Stats())
'''


def test_a_third_backend_kind_drops_in_through_an_entry_point(tmp_path: Path) -> None:
    """A package declaring an ``llmspell.backends`` entry point adds a kind: listed, used by spec, no hub edit."""
    (tmp_path / "llmspell_echo.py").write_text(PLUGIN, encoding="utf-8")
    info = tmp_path / "llmspell_echo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llmspell-echo\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[llmspell.backends]\necho = llmspell_echo:EchoBackend\n", encoding="utf-8")
    code = (
        "import asyncio, llmspell\n"
        "from llmspell.hub import Hub\n"
        "from llmspell.config import Config\n"
        "async def main():\n"
        "    hub = Hub(Config(ollama_enabled=False))\n"
        "    models, _ = await hub.list_all()\n"
        "    print(sorted(hub.backends), [f'{m.name}@{m.backend}' for m in models if m.backend == 'echo'])\n"
        "    print(''.join([c.text async for c in hub.chat('mirror@echo', [{'role': 'user', 'content': 'abc'}])]))\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['echo', 'llamacpp'] ['mirror@echo']", "cba"]
