"""Make the README's screenshots from real runs: the app on the real embedded engine and the bundled models,
next to the same model served by a real `llmspell serve` over the Ollama API; saved as SVG.

Run from the repository root: ``.venv/bin/python docs/screenshots.py``. Greedy decoding, a fixed seed and a
fixed terminal size keep the answers the same from run to run; the speeds are this machine's, as measured.
(The tests' snapshots are another thing: they draw the scripted stand-in, so that they repeat exactly.)
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

from llmspell.backends.llamacpp import LlamaCppBackend  # noqa: E402
from llmspell.backends.ollama import OllamaBackend  # noqa: E402
from llmspell.config import Config  # noqa: E402
from llmspell.hub import Hub  # noqa: E402
from llmspell.store import Store  # noqa: E402
from llmspell.types import Options  # noqa: E402
from llmspell_tui.app import LLMSpellApp, create_app  # noqa: E402

PROMPT = "Name three uses of a river"


def serve() -> tuple[subprocess.Popen[bytes], str]:
    """A real `llmspell serve` on a free port (its Ollama API is the second backend of the pictures)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OLLAMA_HOST": "http://127.0.0.1:9"}
    cmd = [sys.executable, "-m", "llmspell", "serve", "--port", str(port), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(url + "/api/version", timeout=2)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("llmspell serve did not start")


def _app(home: Path, url: str, mode: str) -> LLMSpellApp:
    config = Config(keep_alive=300, options=Options(temperature=0, seed=7, max_tokens=60))
    hub = Hub(config, backends=[LlamaCppBackend(config), OllamaBackend(config, url=url)])
    return create_app(hub, Store(home / "history.db"), mode=mode)


async def _settle(app: LLMSpellApp) -> None:
    await app.workers.wait_for_complete()
    for _ in range(3):
        await asyncio.sleep(0.2)
        await app.workers.wait_for_complete()


async def models(home: Path, url: str, out: Path) -> None:
    """The model screen: the bundled models on the embedded engine and through the served Ollama API."""
    app = _app(home, url, "models")
    async with app.run_test(size=(110, 20)) as pilot:
        await _settle(app)
        await pilot.pause(0.5)
        await _settle(app)
        app.save_screenshot(str(out))


async def chat(home: Path, url: str, out: Path) -> None:
    """Two panes in compare mode: smollm2 in this process, and the same weights served over the Ollama API."""
    app = _app(home, url, "chat")
    async with app.run_test(size=(110, 30)) as pilot:
        await _settle(app)
        screen = app.screen
        await pilot.press("ctrl+n", "ctrl+l")  # a second pane, then its model picker
        screen.active_pane.model_input.value = ""  # type: ignore[attr-defined]
        for key in "smollm2:135m@ollama":
            await pilot.press(key)
        await pilot.press("enter", "ctrl+t")  # compare mode: the prompt goes to both panes
        await pilot.pause()
        for key in PROMPT:
            await pilot.press("space" if key == " " else key)
        await pilot.press("enter")
        await pilot.pause(0.5)
        for _ in range(1200):  # until both real answers are done (bounded: 2 minutes)
            if not screen.generating:  # type: ignore[attr-defined]
                break
            await pilot.pause(0.1)
        await pilot.pause(0.5)
        app.save_screenshot(str(out))


async def main() -> None:
    """Write both screenshots into docs/."""
    proc, url = serve()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            await models(Path(tmp), url, ROOT / "docs" / "llmspell-tui-models.svg")
        with tempfile.TemporaryDirectory() as tmp:
            await chat(Path(tmp), url, ROOT / "docs" / "llmspell-tui-chat.svg")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
