"""The app shell under App.run_test(): backend status (down, up, back down), modes, theme, palette, startup."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import wait_until
from hfserver import silent_endpoint
from textual.command import CommandList, CommandPalette
from textual.widgets import Footer

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.backends.ollama import OllamaBackend
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell_tui.app import DARK_THEME, LIGHT_THEME, LLMSpellApp, create_app, main
from llmspell_tui.screens.arena import ArenaScreen
from llmspell_tui.screens.history import HistoryScreen
from llmspell_tui.screens.models import ModelsScreen
from llmspell_tui.widgets.status import BackendStatusBar


def status_text(app: LLMSpellApp) -> str:
    """What the current screen's status bar shows."""
    return app.screen.query_one(BackendStatusBar).text


@pytest.fixture
def models_env(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real embedded backend reads the session's shared models folder."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    return shared_models


async def test_status_shows_the_embedded_backend_ready_and_ollama_down(models_env: Path) -> None:
    app = create_app(Hub(Config()), mode="models")
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.backend_statuses is not None, "first status")
        text = status_text(app)
        import llama_cpp

        assert f"llamacpp ready · {llama_cpp.__version__} · CPU" in text
        assert "ollama not reachable at http://127.0.0.1:9 (checking its status)" in text
        assert text.count("not reachable") == 1
        ready = next(s for s in app.backend_statuses or () if s.backend == "llamacpp")
        assert f"{ready.model_count} models" in text and ready.model_count >= 2


# ----- an Ollama-API server that comes and goes ------------------------------------------------------------------


class _FakeOllama(BaseHTTPRequestHandler):
    """Answers /api/version, /api/tags and /api/ps the way an Ollama server does."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/api/version":
            body: object = {"version": "0.9.9"}
        elif self.path == "/api/tags":
            details = {"format": "gguf", "family": "qwen2", "parameter_size": "494M", "quantization_level": "Q4_0"}
            body = {
                "models": [
                    {
                        "name": "qwen2.5:0.5b",
                        "model": "qwen2.5:0.5b",
                        "modified_at": "2026-11-01T10:00:00Z",
                        "size": 397_000_000,
                        "digest": "a" * 64,
                        "details": details,
                    }
                ]
            }
        elif self.path == "/api/ps":
            body = {"models": []}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class OllamaLike:
    """A real HTTP server on a fixed 127.0.0.1 port that can be started and stopped again."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen and answer."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _FakeOllama)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (connections are refused again)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


@pytest.fixture
def ollama_like() -> Iterator[OllamaLike]:
    server = OllamaLike()
    try:
        yield server
    finally:
        server.stop()


async def test_a_backend_that_comes_and_goes_is_shown_so(models_env: Path, ollama_like: OllamaLike) -> None:
    config = Config()
    hub = Hub(config, backends=[LlamaCppBackend(config), OllamaBackend(config, url=ollama_like.url)])
    app = create_app(hub, mode="models")
    app.status_interval = 0.2
    async with app.run_test(size=(120, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await wait_until(pilot, lambda: "ollama not reachable" in status_text(app), "ollama shown down")
        assert f"ollama not reachable at {ollama_like.url}" in status_text(app)

        ollama_like.start()
        await wait_until(pilot, lambda: "ollama ready · 0.9.9 · server · 1 model" in status_text(app), "ollama up")
        # its models join the table without a key press
        await wait_until(pilot, lambda: "qwen2.5:0.5b" in screen.row_names(), "ollama's model listed")
        # the screen still answers keys while the status refreshes around it
        await pilot.press("slash", "q", "w", "e", "n")
        assert screen.filter_input.value == "qwen"
        await wait_until(pilot, lambda: screen.row_names() == ["qwen2.5:0.5b"], "filter applied")

        ollama_like.stop()
        await wait_until(pilot, lambda: "ollama not reachable" in status_text(app), "ollama down again")
        await wait_until(pilot, lambda: screen.row_names() == [], "its model gone")
        assert "llamacpp ready" in status_text(app)


async def test_a_backend_that_never_answers_does_not_freeze_the_screen(models_env: Path) -> None:
    with silent_endpoint() as url:  # a real socket that accepts and then says nothing
        config = Config()
        hub = Hub(config, backends=[LlamaCppBackend(config), OllamaBackend(config, url=url)])
        app = create_app(hub, mode="models")
        app.status_interval, app.status_timeout = 0.2, 1.0
        async with app.run_test(size=(120, 30)) as pilot:
            screen = app.screen
            assert isinstance(screen, ModelsScreen)
            # while the status check waits on the silent server, keys are handled and the table works
            await wait_until(pilot, lambda: screen.table.row_count >= 2, "embedded models listed")
            await pilot.press("slash", "s", "m", "o")
            assert screen.filter_input.value == "smo"
            await wait_until(pilot, lambda: screen.row_names() == ["smollm2:135m"], "filter applied")
            await wait_until(pilot, lambda: "ollama not reachable: no answer within 1 s" in status_text(app), "timeout")
            assert "llamacpp ready" in status_text(app)


# ----- modes, theme, palette ---------------------------------------------------------------------------------------


async def test_function_keys_switch_screens_and_every_screen_shows_the_status(models_env: Path) -> None:
    app = create_app(Hub(Config()))
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.current_mode == "chat"
        await wait_until(pilot, lambda: "llamacpp ready" in status_text(app), "status on the chat screen")
        await pilot.press("f2")
        assert app.current_mode == "models" and isinstance(app.screen, ModelsScreen)
        assert "ollama not reachable" in status_text(app)
        await pilot.press("f3")
        assert app.current_mode == "history" and isinstance(app.screen, HistoryScreen)
        assert "llamacpp ready" in status_text(app)
        await pilot.press("f5")
        assert app.current_mode == "arena" and isinstance(app.screen, ArenaScreen)
        assert "llamacpp ready" in status_text(app)
        await pilot.press("f1")
        assert app.current_mode == "chat"
        # F4 flips the theme both ways
        assert app.theme == DARK_THEME
        await pilot.press("f4")
        assert app.theme == LIGHT_THEME
        await pilot.press("f4")
        assert app.theme == DARK_THEME


async def test_the_command_palette_reaches_the_screens_and_their_actions(models_env: Path) -> None:
    app = create_app(Hub(Config()), mode="models")
    async with app.run_test(size=(100, 30)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for want in ("Chat screen (F1)", "History screen (F3)", "Pull a model (p)", "Delete model (d)"):
            assert want in titles
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
        for key in "history screen":
            await pilot.press("space" if key == " " else key)
        # the matches are searched in the background: Enter before they arrive would pick nothing
        commands = app.screen.query_one(CommandList)

        def first_match() -> str:
            option = commands.highlighted_option
            return str(option.prompt) if option is not None else ""

        await wait_until(pilot, lambda: first_match().startswith("History screen (F3)"), "the match highlighted")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "history", "palette switched to history")


@pytest.mark.parametrize("mode", ["chat", "models", "history", "arena"])
async def test_the_footer_fits_in_80_columns(models_env: Path, mode: str) -> None:
    app = create_app(Hub(Config()), mode=mode)
    async with app.run_test(size=(80, 24)) as pilot:
        footer = app.screen.query_one(Footer)
        await wait_until(pilot, lambda: bool(footer.query(".-command-palette")), "the footer's keys")
        palette = footer.query_one(".-command-palette")
        keys = [w for w in footer.children if w is not palette]
        assert {type(w).__name__ for w in keys} >= {"FooterKey", "KeyGroup"}, "own keys and the F1-F3 group"
        assert all(w.region.right <= palette.region.x for w in keys), "no key is cut or hidden under ^p palette"
        assert palette.region.right <= 80


def test_a_bad_model_argument_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no such model!"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmspell-tui: ") and "Traceback" not in err


def test_help_and_version_answer_instead_of_being_taken_for_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--help", "--version"):
        with pytest.raises(SystemExit) as done:
            main([flag])
        assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: llmspell-tui [-h] [--version] [--tools NAMES]" in out and "[model]" in out
    assert "llmspell-tui 0." in out
    with pytest.raises(SystemExit) as done:  # an unknown flag is argparse's one-line error, not a model name
        main(["--frobnicate"])
    assert done.value.code == 2 and "unrecognized arguments: --frobnicate" in capsys.readouterr().err
