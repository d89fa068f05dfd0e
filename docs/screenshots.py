"""Make the README's screenshots: the app over the scripted backend (fixed models and answers), saved as SVG.

Run from the repository root: ``.venv/bin/python docs/screenshots.py``. The scripted backend is used so that
the pictures repeat; the app itself is the real one.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from scripted import SCRIPTED_MODELS, ScriptedBackend  # noqa: E402

from llmspell.backends.ollama import OllamaBackend  # noqa: E402
from llmspell.config import Config  # noqa: E402
from llmspell.hub import Hub  # noqa: E402
from llmspell.store import Store  # noqa: E402
from llmspell.types import ModelInfo  # noqa: E402
from llmspell_tui.app import LLMSpellApp, create_app  # noqa: E402

#: a few pulled models next to the two packaged ones, so the table looks like a working machine's
PULLED = tuple(
    ModelInfo(name, "llamacpp", source="pulled", size_bytes=size, quantization=quant, family=family, parameters=params)
    for name, size, quant, family, params in (
        ("qwen2.5:0.5b", 491_400_000, "Q4_K_M", "qwen2", "0.5B"),
        ("tinyllama:1.1b", 668_800_000, "Q4_K_M", "llama", "1.1B"),
        ("llama3.2:1b-Q8_0", 1_320_000_000, "Q8_0", "llama", "1.2B"),
    )
)


def _app(home: Path, mode: str, *, more: bool = False) -> LLMSpellApp:
    config = Config()
    scripted = ScriptedBackend(models=SCRIPTED_MODELS + PULLED if more else SCRIPTED_MODELS)
    if more:
        scripted.loaded_names.append("smollm2:135m")
    hub = Hub(config, backends=[scripted, OllamaBackend(config, url="http://127.0.0.1:9")])
    return create_app(hub, Store(home / "history.db"), mode=mode)


async def models(home: Path, out: Path) -> None:
    """The model screen with the pull dialog closed."""
    app = _app(home, "models", more=True)
    async with app.run_test(size=(110, 22)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.save_screenshot(str(out))


async def chat(home: Path, out: Path) -> None:
    """Two panes (smollm2 and gemma3) in compare mode after one prompt."""
    app = _app(home, "chat")
    async with app.run_test(size=(110, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("ctrl+n", "ctrl+l")  # a second pane, then its model picker
        app.screen.active_pane.model_input.value = ""  # type: ignore[attr-defined]
        for key in "gemma3:270m":
            await pilot.press(key)
        await pilot.press("enter", "ctrl+t")  # compare mode: the prompt goes to both panes
        await pilot.pause()
        for key in "Show me hello world in Python":
            await pilot.press("space" if key == " " else key)
        await pilot.press("enter")
        for _ in range(100):
            await pilot.pause(0.05)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        app.save_screenshot(str(out))


async def main() -> None:
    """Write both screenshots into docs/."""
    with tempfile.TemporaryDirectory() as tmp:
        await models(Path(tmp), ROOT / "docs" / "llmspell-tui-models.svg")
    with tempfile.TemporaryDirectory() as tmp:
        await chat(Path(tmp), ROOT / "docs" / "llmspell-tui-chat.svg")


if __name__ == "__main__":
    asyncio.run(main())
