"""Named endpoints in the real app under App.run_test(): the status bar names each one, the model table lists their
models and hides what such a backend cannot do, and a compare runs a local model beside a remote one.

The remote side is llama-cpp-python's own OpenAI server (``python -m llama_cpp.server``, not ours) on 127.0.0.1,
serving the bundled SmolLM2 file as ``smollm2``; the local side is the embedded engine on the same file. Each
test writes its endpoints into its own LLMSPELL_HOME before the hub reads the config.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SMOL, notes, press_now, until, wait_until
from peers import PEER_MODEL, LlamaCppServer, free_port, write_endpoints
from textual.pilot import Pilot
from textual.widgets import Static
from textual.widgets._footer import FooterKey

from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.types import Options
from llmspell_tui.app import LLMSpellApp, create_app
from llmspell_tui.screens.chat import ChatScreen
from llmspell_tui.screens.models import ModelsScreen
from llmspell_tui.widgets.chat_answer import AnswerView
from llmspell_tui.widgets.modals import ConfirmScreen
from llmspell_tui.widgets.models_modals import PullScreen
from llmspell_tui.widgets.pane import ChatPane
from llmspell_tui.widgets.status import BackendStatusBar

REMOTE = f"{PEER_MODEL}@peer"
#: short, greedy answers: the point is where they ran, not what they say
QUICK = Options(temperature=0, max_tokens=16)


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    """One llama_cpp.server for the module's tests."""
    server = LlamaCppServer(tmp_path_factory.mktemp("peer")).start()
    try:
        yield server
    finally:
        server.stop()


def home() -> Path:
    """This test's LLMSPELL_HOME (a fresh folder, set by the autouse fixture in conftest)."""
    return Path(os.environ["LLMSPELL_HOME"])


def endpoint(name: str, url: str) -> dict[str, Any]:
    """An ``[[endpoints]]`` entry for an OpenAI-compatible server at ``url`` (its root; /v1 is added)."""
    return {"name": name, "kind": "openai", "url": url}


@pytest.fixture
def local_models(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded backend reads the session's shared models folder."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    return shared_models


def app_on_config(mode: str = "chat") -> LLMSpellApp:
    """The app over a hub read from this test's config.toml (written before this is called)."""
    return create_app(Hub(), Store(), mode=mode)


def status_text(app: LLMSpellApp) -> str:
    """What the current screen's status bar shows."""
    return app.screen.query_one(BackendStatusBar).text


def line_of(text: str, name: str) -> str:
    """The status bar's line about one backend."""
    return next(line for line in text.splitlines() if line.startswith(f"● {name} "))


def footer_keys(app: LLMSpellApp) -> list[str]:
    """The descriptions the footer shows now."""
    return [key.description for key in app.screen.query(FooterKey)]


def chat(pilot: Pilot[None]) -> ChatScreen:
    """The chat screen shown now."""
    screen = pilot.app.screen
    assert isinstance(screen, ChatScreen)
    return screen


async def choose_model(pilot: Pilot[None], pane: ChatPane, model: str) -> None:
    """Type a model in a pane's picker, press Enter and wait until the pane talks to it (the hub checks it)."""
    pane.model_input.focus()
    pane.model_input.value = model
    await pilot.press("enter")
    await until(pilot, lambda: pane.conv.model == model, f"the pane switched to {model}", limit=60)


async def local_and_remote_panes(pilot: Pilot[None], remote: str) -> tuple[ChatPane, ChatPane]:
    """Two panes in compare mode: the default local model, and ``remote``; short greedy answers in both."""
    screen = chat(pilot)
    await pilot.press("ctrl+n")
    local, far = screen.panes
    await choose_model(pilot, far, remote)
    for pane in (local, far):
        pane.conv.options = QUICK
    await pilot.press("ctrl+t")
    assert screen.compare_mode
    assert local.conv.model == SMOL and far.conv.model == remote
    return local, far


async def send(pilot: Pilot[None], text: str) -> None:
    """Type a prompt, press Enter and wait for every pane's answer."""
    screen = chat(pilot)
    screen.prompt.focus()
    await until(pilot, lambda: screen.focused is screen.prompt, "the prompt's focus")
    screen.prompt.text = text
    before = screen._generation
    press_now(pilot.app, "enter")
    await until(pilot, lambda: screen._generation is not before, "the prompt taken")
    await until(pilot, lambda: not screen.generating, "the answers")
    await pilot.pause(0.01)


def answer(pane: ChatPane) -> str:
    """The text of the pane's last answer, as the Markdown view shows it."""
    views = pane.log_view.query(AnswerView)
    return views.last().text if views else ""


def errors(pane: ChatPane) -> list[str]:
    """The error lines shown in a pane."""
    return [str(w.render()) for w in pane.log_view.query("Static.error").results(Static)]


# ----- the status bar ------------------------------------------------------------------------------------------


async def test_the_status_bar_names_each_endpoint_ready_or_not(peer: LlamaCppServer, local_models: Path) -> None:
    gone_port = free_port()  # nothing listens there: an endpoint whose server is down
    write_endpoints(home(), [endpoint("peer", peer.url), endpoint("gone", f"http://127.0.0.1:{gone_port}")])
    app = app_on_config()
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(pilot, lambda: app.backend_statuses is not None, "the first status check")
        text = status_text(app)
        assert line_of(text, "llamacpp").startswith("● llamacpp ready")

        ready = line_of(text, "peer")
        assert ready.startswith("● peer ready · ") and "remote (OpenAI API) · 1 model · " in ready, ready
        assert ready.endswith(" ms round trip"), "a remote server's round trip is shown"
        assert "loaded" not in ready, "an OpenAI server does not say what it has loaded, so nothing is claimed"

        down = line_of(text, "gone")
        assert down == f"● gone (http://127.0.0.1:{gone_port}/v1) is not reachable (listing models)"
        # what to do about it is on the bar's tooltip, so the bar keeps one line per backend
        assert "gone: check the server is up and the url in [[endpoints]] gone" in str(
            app.screen.query_one(BackendStatusBar).tooltip
        )
        assert "ollama" not in text, "the config turned the default Ollama off"


# ----- the model table -----------------------------------------------------------------------------------------


async def test_the_model_table_lists_endpoint_models_and_refuses_pull_and_delete_on_them(
    peer: LlamaCppServer, local_models: Path
) -> None:
    write_endpoints(home(), [endpoint("peer", peer.url)])
    app = app_on_config(mode="models")
    async with app.run_test(size=(160, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await wait_until(pilot, lambda: REMOTE in {f"{m.name}@{m.backend}" for m in screen.models}, "peer's models")
        await wait_until(pilot, lambda: SMOL in screen.row_names(), "the local models")
        names = screen.row_names()
        row = screen.table.get_row_at(names.index(PEER_MODEL))
        assert [str(c) for c in row[:2]] == [PEER_MODEL, "peer"], "the remote model is listed under its endpoint"

        # on the remote row, the footer offers neither pull nor delete
        screen.table.focus()
        screen.table.move_cursor(row=names.index(PEER_MODEL))
        await wait_until(pilot, lambda: screen.selected_key() == REMOTE, "the remote row selected")
        await wait_until(pilot, lambda: "Info" in footer_keys(app) and "Pull" not in footer_keys(app), "footer")
        assert "Delete" not in footer_keys(app)

        # the keys pressed anyway say why, and nothing else happens
        await pilot.press("p")
        await wait_until(pilot, lambda: any("does not pull" in n for n in notes(app)), "the pull note")
        assert notes(app)[-1].startswith("peer does not pull models: it serves the models its server was started")
        assert app.screen is screen, "no pull dialog opened"
        await pilot.press("d")
        await wait_until(pilot, lambda: any("does not delete" in n for n in notes(app)), "the delete note")
        assert notes(app)[-1].startswith("peer does not delete models: they belong to its server")
        assert app.screen is screen and not isinstance(app.screen, ConfirmScreen), "no confirmation asked"
        assert PEER_MODEL in screen.row_names(), "the remote model is still listed"

        # on a local row both are back, and pull opens its dialog
        screen.table.move_cursor(row=screen.row_names().index(SMOL))
        await wait_until(pilot, lambda: "Pull" in footer_keys(app) and "Delete" in footer_keys(app), "footer back")
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, PullScreen), "the pull dialog")
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, "the dialog closed")


# ----- compare across machines ---------------------------------------------------------------------------------


async def test_a_compare_runs_a_local_and_a_remote_model_side_by_side(peer: LlamaCppServer, local_models: Path) -> None:
    write_endpoints(home(), [endpoint("peer", peer.url)])
    app = app_on_config()
    async with app.run_test(size=(160, 40)) as pilot:
        local, far = await local_and_remote_panes(pilot, REMOTE)
        await send(pilot, "Name one colour of the rainbow.")
        screen = chat(pilot)
        assert [m.status for m in screen.last_metrics] == ["done", "done"], [m.error for m in screen.last_metrics]
        for pane in (local, far):
            assert answer(pane).strip(), f"{pane.conv.model} answered"
            stored = app.store.load(pane.conv.id).entries[-1]
            assert stored.state == "done" and stored.content == answer(pane)

        # each pane says where it ran, with its first-token time and speed
        here, there = str(local.stats_line.render()), str(far.stats_line.render())
        assert here.startswith("@llamacpp · TTFT ") and "tok/s" in here, here
        assert there.startswith("@peer · TTFT ") and "tok/s" in there, there
        assert far.border_subtitle == f"peer · {peer.url}/v1", "the remote pane shows the server's address"
        assert not local.border_subtitle
        # llama_cpp.server sends no token counts in a stream: the remote pane says its counts were made here
        remote_stats = screen.last_metrics[1].stats
        assert remote_stats is not None and remote_stats.estimated
        assert "counted here: the server sent no usage" in there
        assert "counted here" not in here and "prompt + " in here, "the local engine's own counts"


async def test_the_status_checks_leave_a_remote_answer_alone_while_it_streams(
    peer: LlamaCppServer, local_models: Path
) -> None:
    """llama_cpp.server ends the answer it streams when any other request reaches it (a model listing too): the
    app's status checks wait while an endpoint answers, so the answer is whole, then the check runs."""
    write_endpoints(home(), [endpoint("peer", peer.url)])
    app = app_on_config()
    app.status_interval = 0.05  # many checks fall due while the answer streams
    async with app.run_test(size=(160, 40)) as pilot:
        screen = chat(pilot)
        pane = screen.active_pane
        await choose_model(pilot, pane, REMOTE)
        pane.conv.options = Options(temperature=0, max_tokens=48)
        await wait_until(pilot, lambda: app.backend_statuses is not None, "the first status check")
        before = app.backend_statuses
        await send(pilot, "Write a short story about a dragon.")
        [metrics] = screen.last_metrics
        assert metrics.status == "done", metrics.error
        assert metrics.stats is not None and metrics.stats.stop_reason == "length", "it ran to max_tokens"
        assert str(pane.stats_line.render()).endswith(" · stopped at max tokens")
        # the check that waited runs once the answer is in
        await wait_until(pilot, lambda: app.backend_statuses is not before, "a status check after the answer")
        assert line_of(status_text(app), "peer").startswith("● peer ready")


async def test_a_stopped_remote_server_fails_in_its_pane_while_the_local_one_answers(
    tmp_path: Path, local_models: Path
) -> None:
    late = LlamaCppServer(tmp_path).start()  # this test stops it: not the module's server
    try:
        write_endpoints(home(), [endpoint("late", late.url)])
        app = app_on_config()
        async with app.run_test(size=(160, 40)) as pilot:
            local, far = await local_and_remote_panes(pilot, f"{PEER_MODEL}@late")
            late.stop()
            await send(pilot, "Name one colour of the rainbow.")
            screen = chat(pilot)
            assert [m.status for m in screen.last_metrics] == ["done", "error"]

            assert answer(local).strip() and not errors(local), "the local pane answered"
            assert str(local.stats_line.render()).startswith("@llamacpp · TTFT ")
            [error] = errors(far)
            assert error.startswith(f"endpoint late ({late.url}/v1) is not reachable"), error
            assert "\n" not in error and "Traceback" not in error, "one readable line"
            assert "check the server is up" in error, "and what to do"
            assert str(far.stats_line.render()) == "@late · error: the prompt is kept in the input"
            assert screen.prompt.text == "Name one colour of the rainbow.", "the prompt is back in the input"

            # the next status check shows the endpoint down, by name
            app.refresh_status()
            await wait_until(pilot, lambda: "● late (" in status_text(app), "the status bar noticed")
            assert line_of(status_text(app), "late").endswith("is not reachable (listing models)")
    finally:
        late.stop()
