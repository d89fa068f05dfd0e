"""The chat screen under App.run_test(): panes, compare mode, cancel, errors, settings, save and reopen.

Behaviour is tested on the real embedded engine (smollm2:135m, gemma3:270m); the scripted backend is used
only where a test needs exact text (the options a backend received, the exact stats line). While the engine
generates, keys are delivered with ``press_now`` (Pilot's ``press`` waits for an idle process, which a
generating engine never is), and a test that needs an answer to last holds it at ``GatedHub``'s gate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import pytest
from helpers import GEMMA, SMOL, GatedHub, notes, option_sample, press_now, until, wait_until
from scripted import SCRIPTED_ANSWER, SCRIPTED_STATS, ScriptedBackend
from textual import events
from textual.binding import Binding
from textual.pilot import Pilot
from textual.widgets import Input, Markdown, Static, Switch

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.backends.ollama import OllamaBackend
from llmspell.chat import Conversation, Entry
from llmspell.compare import StreamMetrics
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.types import Message, Options
from llmspell_tui.app import create_app
from llmspell_tui.screens.chat import ChatScreen, PromptArea
from llmspell_tui.widgets.chat_answer import AnswerView
from llmspell_tui.widgets.pane import ChatPane
from llmspell_tui.widgets.settings import SettingsScreen

STORY = "Write a very long story about a dragon who learns to paint, in many paragraphs."


@pytest.fixture
def real_hub(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> Hub:
    """The real hub: the embedded engine (answers bounded to 32 greedy tokens unless a test asks for more)."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    return Hub(Config(keep_alive=300, num_ctx=2048, options=Options(temperature=0, max_tokens=32)))


@pytest.fixture
def gated_hub(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> GatedHub:
    """The real hub and engine behind a closed gate: answers last until the test lets their chunks through."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    return GatedHub(Config(keep_alive=300, num_ctx=2048, options=Options(temperature=0, max_tokens=400)))


def scripted_hub(**kwargs: object) -> tuple[Hub, ScriptedBackend]:
    """A hub over the scripted stand-in backend, for exact-text checks only."""
    backend = ScriptedBackend(**kwargs)  # type: ignore[arg-type]
    return Hub(Config(), backends=[backend]), backend


def chat(pilot: Pilot) -> ChatScreen:
    """The chat screen shown now."""
    screen = pilot.app.screen
    assert isinstance(screen, ChatScreen)
    return screen


async def send(pilot: Pilot, text: str, *, wait: bool = True) -> None:
    """Put a prompt in the input and press Enter; wait until it was taken (and, by default, answered)."""
    screen = chat(pilot)
    screen.prompt.focus()
    await until(pilot, lambda: screen.focused is screen.prompt, "the prompt's focus")
    screen.prompt.text = text
    before = screen._generation  # each accepted prompt starts a new run
    press_now(pilot.app, "enter")
    await until(pilot, lambda: screen._generation is not before, "the prompt taken")
    if wait:
        await until(pilot, lambda: not screen.generating, "the answers")
        await pilot.pause(0.01)


async def choose_model(pilot: Pilot, pane: ChatPane, model: str) -> None:
    """Type a model name in a pane's picker and press Enter."""
    pane.model_input.focus()
    pane.model_input.value = model
    await pilot.press("enter")
    await pilot.pause()


async def apply_settings(pilot: Pilot, *, switches: dict[str, bool] | None = None, **values: str) -> None:
    """Open the focused pane's settings form, fill it in and apply it."""
    await pilot.press("ctrl+o")
    await pilot.pause()
    form = pilot.app.screen
    assert isinstance(form, SettingsScreen)
    for name, value in values.items():
        form.query_one("#system" if name == "system" else f"#opt-{name}", Input).value = value
    for name, on in (switches or {}).items():
        form.query_one(f"#{name}", Switch).value = on
    await pilot.press("ctrl+s")
    await pilot.pause()
    assert isinstance(pilot.app.screen, ChatScreen), "the form closed"


def texts(pane: ChatPane, cls: str) -> list[str]:
    """The plain text of the pane's messages of one kind (user, error, note)."""
    return [str(w.render()) for w in pane.log_view.query(f"Static.{cls}")]


def answers(pane: ChatPane) -> list[str]:
    """The Markdown source of every answer shown in the pane (an answer may be several Markdown segments)."""
    shown = []
    for view in pane.log_view.query(AnswerView):
        assert "".join(view.sources) == view.text, "what the Markdown widgets show is the whole answer"
        shown.append(view.text)
    return shown


# ----- real engine ----------------------------------------------------------------------------


async def test_prompt_goes_to_the_focused_pane_only(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        await pilot.press("ctrl+n")
        first, second = screen.panes
        assert screen.active_pane is second, "a new pane takes the focus"
        await pilot.press("alt+left")
        assert screen.active_pane is first and first.has_class("-active") and not second.has_class("-active")
        await send(pilot, "Name a colour.")
        assert texts(first, "user") == ["Name a colour."]
        assert answers(first)[0].strip() and "generated tokens" in str(first.stats_line.render())
        assert answers(second) == [] and second.conv.entries == []
        assert [e.role for e in app.store.load(first.conv.id).entries] == ["user", "assistant"]


async def test_compare_mode_on_two_real_models(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = chat(pilot)
        await pilot.press("ctrl+n")
        smol, gemma = screen.panes
        await choose_model(pilot, gemma, GEMMA)
        assert gemma.conv.model == GEMMA and smol.conv.model == SMOL
        await pilot.press("ctrl+t")
        assert screen.compare_mode and "compare: every pane (2), at once" in str(screen.query_one("#mode").render())
        await send(pilot, "What is the capital of France?")
        for pane, model in ((smol, SMOL), (gemma, GEMMA)):
            assert texts(pane, "user") == ["What is the capital of France?"]
            assert answers(pane)[0].strip(), f"{model} answered"
            line = str(pane.stats_line.render())
            assert line.startswith("TTFT ") and "tok/s" in line and "generated tokens" in line
            stored = app.store.load(pane.conv.id)
            assert stored.model == model and stored.entries[-1].content == answers(pane)[0]
        assert [m.status for m in screen.last_metrics] == ["done", "done"]


async def test_a_new_pane_continues_a_copy_and_compare_gives_each_model_the_same_history(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = chat(pilot)
        await send(pilot, "Name the capital of France.")
        first = screen.panes[0]
        history = [(e.role, e.content) for e in first.conv.entries]
        await pilot.press("ctrl+n")
        await pilot.pause()
        second = screen.panes[1]
        assert second.conv.id != first.conv.id and [(e.role, e.content) for e in second.conv.entries] == history
        assert texts(second, "user") == texts(first, "user") and answers(second) == answers(first)
        assert second.conv.id not in {r.id for r in app.store.list()}, "an unused copy is not stored"
        # switching the copy's model keeps its history, as /model and %model keep theirs
        await choose_model(pilot, second, GEMMA)
        assert second.conv.model == GEMMA and [(e.role, e.content) for e in second.conv.entries] == history
        await pilot.press("ctrl+t")
        await send(pilot, "And of Italy?")
        for pane, model in ((first, SMOL), (second, GEMMA)):
            stored = app.store.load(pane.conv.id)
            assert stored.model == model
            assert [(e.role, e.content) for e in stored.entries[:2]] == history, f"{model} saw the same history"
            assert stored.entries[2].content == "And of Italy?" and stored.entries[3].state == "done"


async def test_two_panes_of_one_model_stream_at_the_same_time(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = chat(pilot)
        await pilot.press("ctrl+n", "ctrl+t")
        await apply_settings(pilot, max_tokens="48", switches={"same": True})
        await send(pilot, "Hi")  # both copies of the model are loaded now
        await send(pilot, STORY)
        a, b = screen.last_metrics
        assert a.status == b.status == "done" and a.stats and b.stats
        # each pane had its own copy of the model (no queueing behind the other pane)
        copies = real_hub.backends["llamacpp"].instances(SMOL)  # type: ignore[attr-defined]
        assert len(copies) == 2
        assert sorted(w.report.generated_tokens for w in copies) == sorted([a.generated_tokens, b.generated_tokens])
        for pane in screen.panes:
            assert "generated tokens" in str(pane.stats_line.render())


async def test_one_after_another_when_parallel_is_off(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = chat(pilot)
        await pilot.press("ctrl+n")
        await choose_model(pilot, screen.panes[1], GEMMA)
        await apply_settings(pilot, switches={"compare": True, "parallel": False})
        assert "one after another" in str(screen.query_one("#mode").render())
        await send(pilot, "Name a fruit.")
        a, b = screen.last_metrics
        assert a.stats and b.stats and a.last_token_at and b.started
        assert b.started >= a.last_token_at, "the second pane started after the first had finished"


async def test_a_key_is_handled_while_a_pane_streams(gated_hub: GatedHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UI thread never blocks: keys take effect while the real engine is still generating an answer."""
    handled: list[tuple[str, bool, str]] = []  # (what, the pane streaming?, its stream's status) when it ran

    def record(what: str, screen: ChatScreen) -> None:
        if screen.last_metrics:  # from the first answer on
            handled.append((what, screen.panes[0].streaming, screen.last_metrics[0].status))

    add_pane, cancel, prompt_key = ChatScreen.action_add_pane, ChatScreen.action_cancel, PromptArea._on_key

    async def recording_add_pane(self: ChatScreen) -> None:
        record("add pane", self)
        await add_pane(self)

    def recording_cancel(self: ChatScreen) -> None:
        record("cancel", self)
        cancel(self)

    async def recording_prompt_key(self: PromptArea, event: events.Key) -> None:
        screen = self.screen
        assert isinstance(screen, ChatScreen)
        if event.is_printable:  # the prompt sees every key first; bindings are recorded by their actions
            record(f"type {event.key}", screen)
        await prompt_key(self, event)

    monkeypatch.setattr(ChatScreen, "action_add_pane", recording_add_pane)
    monkeypatch.setattr(ChatScreen, "action_cancel", recording_cancel)
    monkeypatch.setattr(PromptArea, "_on_key", recording_prompt_key)
    gated_hub.allow(3)
    app = create_app(gated_hub, Store())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        await send(pilot, STORY, wait=False)
        await until(pilot, lambda: gated_hub.waiting and screen.last_metrics[0].chunks == 3, "the first tokens")
        press_now(app, "ctrl+n")
        await until(pilot, lambda: len(screen.panes) == 2, "the new pane")
        screen.prompt.focus()
        await until(pilot, lambda: screen.focused is screen.prompt, "the prompt's focus")
        press_now(app, "o", "k")
        await until(pilot, lambda: screen.prompt.text == "ok", "the typed text")
        press_now(app, "escape")
        await until(pilot, lambda: not screen.generating, "the cancel")
        streaming = (True, "streaming")
        assert handled == [
            ("add pane", *streaming),
            ("type o", *streaming),
            ("type k", *streaming),
            ("cancel", *streaming),
        ], "each key took effect while the answer was streaming"
        assert screen.last_metrics[0].status == "cancelled" and texts(screen.panes[0], "note") == ["(interrupted)"]


async def test_escape_cancels_and_the_next_prompt_works(gated_hub: GatedHub, monkeypatch: pytest.MonkeyPatch) -> None:
    cancelled_while: list[bool] = []
    cancel = ChatScreen.action_cancel

    def recording_cancel(self: ChatScreen) -> None:
        cancelled_while.append(self.panes[0].streaming)
        cancel(self)

    monkeypatch.setattr(ChatScreen, "action_cancel", recording_cancel)
    gated_hub.allow(5)
    app = create_app(gated_hub, Store())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        pane = screen.panes[0]
        await send(pilot, STORY, wait=False)
        await until(pilot, lambda: gated_hub.waiting and pane.answer_text, "some tokens")
        assert not screen.prompt.cursor_blink, "the prompt's cursor holds still (no repaints) while answers stream"
        press_now(app, "escape")
        await until(pilot, lambda: not screen.generating, "the cancel")
        assert cancelled_while == [True], "Escape was handled while the answer streamed"
        assert screen.prompt.cursor_blink, "the cursor blinks again once the answer stopped"
        await pilot.pause(0.01)
        partial = answers(pane)[0]
        assert partial.strip() and partial == pane.answer_text and texts(pane, "note") == ["(interrupted)"]
        assert str(pane.stats_line.render()).startswith("interrupted · ")
        stored = app.store.load(pane.conv.id).entries[-1]
        assert stored.state == "cancelled" and stored.content == partial, "the partial answer is kept"
        gated_hub.open()
        await apply_settings(pilot, max_tokens="16")
        await send(pilot, "Say hello.")
        assert len(answers(pane)) == 2 and answers(pane)[1].strip()
        assert "generated tokens" in str(pane.stats_line.render())
        assert app.store.load(pane.conv.id).entries[-1].state == "done"


async def test_escape_before_the_run_has_started_gives_the_prompt_back(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        pane = screen.panes[0]
        # in one step of the event loop: the run's worker exists but its body has not begun
        assert screen.send("Name a colour.") and screen.generating and screen.prompt.text == ""
        screen.action_cancel()
        assert not screen.generating and screen.prompt.text == "Name a colour.", "nothing sent, prompt back"
        await pilot.pause(0.05)
        assert texts(pane, "user") == [] and pane.conv.entries == [] and not pane.streaming
        await send(pilot, screen.prompt.text)
        assert texts(pane, "user") == ["Name a colour."] and answers(pane)[0].strip()


async def test_a_burst_of_characters_and_enter_sends_the_whole_text(gated_hub: GatedHub) -> None:
    """Keys are handled in the order they arrive: a prompt typed ahead (a fast typist, an SSH connection) and its
    Enter in one burst send all of it, and what follows the Enter stays in the prompt for the next turn."""
    app = create_app(gated_hub, Store())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        pane = screen.panes[0]
        await until(pilot, lambda: screen.focused is screen.prompt, "the prompt's focus")
        text = "Why is the sky blue? Answer in one short sentence please."
        press_now(app, *text, "enter", *"and then")
        await until(pilot, lambda: texts(pane, "user") and screen.prompt.text == "and then", "the burst handled")
        assert texts(pane, "user") == [text], "the whole prompt was sent, not the part typed before Enter arrived"
        press_now(app, "escape")
        await until(pilot, lambda: not screen.generating, "the cancel")
        assert screen.prompt.text == "and then", "Escape stopped the answer and left the next prompt alone"


async def test_escape_right_after_enter_stops_that_prompt(gated_hub: GatedHub, monkeypatch: pytest.MonkeyPatch) -> None:
    cancelled_while: list[bool] = []
    cancel = ChatScreen.action_cancel

    def recording_cancel(self: ChatScreen) -> None:
        cancelled_while.append(self.generating)
        cancel(self)

    monkeypatch.setattr(ChatScreen, "action_cancel", recording_cancel)
    app = create_app(gated_hub, Store())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        pane = screen.panes[0]
        await until(pilot, lambda: screen.focused is screen.prompt, "the prompt's focus")
        screen.prompt.text = STORY
        press_now(app, "enter", "escape")  # in one burst, as fast as a terminal delivers them
        await until(pilot, lambda: cancelled_while and not screen.generating, "the cancel")
        assert cancelled_while == [True], "the Escape was handled after the Enter, and stopped its run"
        await pilot.pause(0.01)
        assert not pane.streaming
        if screen.prompt.text != STORY:  # the run had begun: its prompt is shown, the answer marked interrupted
            assert texts(pane, "user") == [STORY] and texts(pane, "note") == ["(interrupted)"]
            assert app.store.load(pane.conv.id).entries[-1].state == "cancelled"
        gated_hub.open()
        await apply_settings(pilot, max_tokens="8")
        await send(pilot, "Say hello.")
        assert answers(pane)[-1].strip() and app.store.load(pane.conv.id).entries[-1].state == "done"


async def test_a_second_enter_while_an_answer_streams_starts_nothing(
    gated_hub: GatedHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[bool] = []
    submit = ChatScreen.submit

    def recording_submit(self: ChatScreen, text: str) -> bool:
        sent.append(submit(self, text))
        return sent[-1]

    monkeypatch.setattr(ChatScreen, "submit", recording_submit)
    app = create_app(gated_hub, Store())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        pane = screen.panes[0]
        await until(pilot, lambda: screen.focused is screen.prompt, "the prompt's focus")
        screen.prompt.text = STORY
        press_now(app, "enter")
        await until(pilot, lambda: sent == [True], "the first Enter")
        screen.prompt.text = "And another one."  # before the first answer has come (the gate holds it)
        press_now(app, "enter")
        await until(pilot, lambda: len(sent) == 2, "the second Enter")
        assert sent == [True, False] and screen.prompt.text == "And another one.", "refused, the text kept"
        assert any("still streaming" in str(n.message) for n in app._notifications)
        press_now(app, "escape")
        await until(pilot, lambda: not screen.generating, "the cancel")
        await pilot.pause(0.01)
        assert [e.content for e in pane.conv.entries if e.role == "user"] == [STORY], "one run, one prompt"
        assert len(app.store.list()) == 1


async def test_one_to_four_panes(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = chat(pilot)
        await pilot.press("ctrl+w")
        assert len(screen.panes) == 1, "the last pane stays"
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n", "ctrl+n")
        assert len(screen.panes) == 4
        assert any("at most 4 panes" in str(n.message) for n in app._notifications)
        await pilot.press("ctrl+t")
        await send(pilot, "Name a colour.")
        assert [m.status for m in screen.last_metrics] == ["done"] * 4
        assert all(answers(p)[0].strip() and texts(p, "user") == ["Name a colour."] for p in screen.panes)
        closed = screen.active_pane
        closed_answer = answers(closed)[0]
        await pilot.press("ctrl+w")
        assert len(screen.panes) == 3 and closed not in screen.panes
        assert app.store.load(closed.conv.id).entries[-1].content == closed_answer, "its history is kept"


async def test_an_unreachable_backend_is_one_readable_line_and_the_prompt_comes_back(
    shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    config = Config(keep_alive=300, num_ctx=2048, options=Options(temperature=0, max_tokens=16))
    # nothing listens on port 9: the connection is refused, as when Ollama is not running
    hub = Hub(config, backends=[LlamaCppBackend(config), OllamaBackend(config, url="http://127.0.0.1:9")])
    store = Store()
    # a conversation kept from when Ollama ran (choosing the model now is refused: see the wrong-name test)
    kept = Conversation(f"{SMOL}@ollama")
    store.add(kept, Entry("user", "Hi"))
    store.add(kept, Entry("assistant", "Hello!", f"{SMOL}@ollama"))
    app = create_app(hub, store)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat(pilot)
        pane = screen.panes[0]
        await screen.open_conversation(kept.id)
        await send(pilot, "Are you there?")
        errors = texts(pane, "error")
        assert len(errors) == 1 and "Traceback" not in errors[0] and answers(pane) == ["Hello!"]
        # one message: what failed and where, then what to do about it
        assert errors[0].splitlines()[0].startswith("Ollama is not reachable at http://127.0.0.1:9")
        assert "ollama serve" in errors[0]
        assert screen.prompt.text == "Are you there?", "the prompt is back in the input"
        assert str(pane.stats_line.render()) == "error: the prompt is kept in the input"
        await choose_model(pilot, pane, SMOL)
        await send(pilot, screen.prompt.text)
        assert answers(pane)[-1].strip() and screen.prompt.text == ""


async def test_the_stop_reason_is_shown(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        await apply_settings(pilot, max_tokens="6")
        await send(pilot, STORY)
        pane = screen.panes[0]
        stats = app.store.load(pane.conv.id).entries[-1].stats
        assert stats is not None and stats.stop_reason == "length" and stats.generated_tokens == 6
        assert str(pane.stats_line.render()).endswith(" · stopped at max tokens")


async def test_shift_enter_and_ctrl_j_start_a_new_line_and_enter_sends_it_all(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat(pilot)
        await until(pilot, lambda: screen.focused is screen.prompt, "the prompt's focus")
        await pilot.press(*"one", "shift+enter", *"two", "ctrl+j", *"three")
        assert screen.prompt.text == "one\ntwo\nthree" and not screen.generating
        await send(pilot, screen.prompt.text)
        assert texts(screen.panes[0], "user") == ["one\ntwo\nthree"] and answers(screen.panes[0])[0].strip()


def test_the_readme_lists_every_chat_key() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## llmspell-tui\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| chat |")]
    names = {"left": "←", "right": "→"}

    def shown(key: str) -> str:
        return "+".join(names.get(part, part.capitalize()) for part in key.split("+"))

    keys = [b.key for b in ChatScreen.BINDINGS if isinstance(b, Binding)] + ["shift+enter", "ctrl+j"]
    assert len(keys) > 10
    for key in keys:
        assert any(f"`{shown(key)}`" in row for row in rows), f"{shown(key)} is in the README's key table"


async def test_a_wrong_model_name_shows_one_message_and_keeps_the_prompt(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat(pilot)
        pane = screen.panes[0]
        before = pane.conv
        for wrong, reason in (
            ("nosuchmodel:7b", "no model named 'nosuchmodel'"),
            ("qwen2.5:0.5b", "qwen2.5:0.5b@llamacpp is not downloaded; pull it with: llmspell model pull"),
            (f"{SMOL}@ollama", "Ollama is not reachable at http://127.0.0.1:9"),
        ):
            await choose_model(pilot, pane, wrong)
            await wait_until(pilot, lambda r=reason: any(r in n for n in notes(app)), f"refused: {wrong}")
            assert pane.conv is before and pane.conv.model == before.model, "the pane keeps its model"
            assert pane.model_input.value == before.model
        assert all("Traceback" not in n for n in notes(app)) and texts(pane, "error") == []
        await send(pilot, "hello there")
        assert answers(pane)[0].strip() and texts(pane, "error") == []


async def test_same_seed_and_settings_give_the_same_answer_in_two_panes(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(160, 48)) as pilot:
        screen = chat(pilot)
        await pilot.press("ctrl+n")
        await apply_settings(
            pilot,
            temperature="0",
            seed="42",
            max_tokens="24",
            system="You answer in one sentence.",
            switches={"same": True, "compare": True},
        )
        left, right = screen.panes
        assert left.conv.options == right.conv.options == Options(temperature=0.0, seed=42, max_tokens=24)
        assert left.conv.system == right.conv.system == "You answer in one sentence."
        await send(pilot, "Tell me about cats.")
        assert answers(left)[0].strip() and answers(left) == answers(right)


async def test_save_and_reopen_a_conversation(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        await apply_settings(pilot, temperature="0", max_tokens="20", system="Be brief.")
        await send(pilot, "Name a fruit.")
        pane = screen.active_pane
        conv_id, first_answer = pane.conv.id, answers(pane)[0]
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert pane.conv.id != conv_id and answers(pane) == [] and texts(pane, "user") == []
        await choose_model(pilot, pane, GEMMA)
        await screen.open_conversation(conv_id)
        await pilot.pause()
        assert pane.conv.id == conv_id and pane.conv.model == SMOL and pane.model_input.value == SMOL
        assert pane.conv.system == "Be brief." and pane.conv.options.max_tokens == 20
        assert texts(pane, "user") == ["Name a fruit."] and answers(pane) == [first_answer]
        assert "generated tokens" in str(pane.stats_line.render())
        await send(pilot, "And a vegetable?")
        stored = app.store.load(conv_id)
        assert [e.role for e in stored.entries] == ["user", "assistant", "user", "assistant"]
        assert stored.entries[1].content == first_answer and stored.entries[3].content == answers(pane)[1]


async def test_reopening_an_unknown_conversation_says_so(real_hub: Hub) -> None:
    app = create_app(real_hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat(pilot)
        before = screen.active_pane.conv
        await screen.open_conversation("doesnotexist")
        await pilot.pause()
        assert screen.active_pane.conv is before
        assert any("no conversation 'doesnotexist'" in str(n.message) for n in app._notifications)


async def test_finishing_waits_for_a_flush_in_flight(real_hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer's end never cuts into a flush: no segment is lost or sealed twice, whatever the timing."""
    reached, release = asyncio.Event(), asyncio.Event()
    held: list[str] = []
    update = Markdown.update

    def held_update(self: Markdown, markdown: str) -> Awaitable[None]:
        """Markdown.update, except that the first call made by a flush waits until the test releases it."""
        if held or not markdown.startswith("the rest"):
            return update(self, markdown)
        held.append(markdown)

        async def wait_then_update() -> None:
            reached.set()
            await release.wait()
            await update(self, markdown)

        return wait_then_update()

    monkeypatch.setattr(Markdown, "update", held_update)
    head, tail = "The dragon paints. " * 100 + "\n\n", "the rest of the answer"
    app = create_app(real_hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        pane = chat(pilot).panes[0]
        await pane.begin("a long answer, please")
        pane.feed(head + tail)
        # the flush timer writes the text: it seals the head as one segment, then sets the open one to the tail
        await until(pilot, reached.is_set, "a flush in the middle of sealing a segment")
        finishing = asyncio.create_task(pane.finish(StreamMetrics(0, SMOL, status="cancelled")))
        await until(pilot, lambda: not pane.streaming, "the finish begun")
        release.set()
        await finishing
        view = pane.log_view.query_one(AnswerView)
        assert view.sources == [head, tail] and view.text == head + tail == pane.answer_text


async def test_a_first_batch_longer_than_a_segment_streams_on(real_hub: Hub) -> None:
    """One flush that already holds a whole segment (a stalled screen, a burst) seals it and keeps streaming."""
    head, tail = "The dragon paints. " * 100 + "\n\n", "the rest"
    app = create_app(real_hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        pane = chat(pilot).panes[0]
        await pane.begin("a long answer, please")
        pane.feed(head + tail)
        view = pane.log_view.query_one(AnswerView)
        await until(pilot, lambda: view.sources == [head, tail], "the head sealed, the tail streaming")
        pane.feed(" arrives.")
        await until(pilot, lambda: view.sources == [head, tail + " arrives."], "the next flush")
        assert pane.streaming
        await pane.finish(StreamMetrics(0, SMOL, status="cancelled"))
        assert view.sources == [head, tail + " arrives."] and texts(pane, "note") == ["(interrupted)"]


# ----- scripted backend: exact text -------------------------------------------------------------


async def test_settings_form_options_reach_the_backend() -> None:
    hub, backend = scripted_hub()
    app = create_app(hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        await pilot.press(*"Be brief.")
        for name, value in (("temperature", "0.3"), ("top_k", "20"), ("top_p", "0.9"), ("seed", "7")):
            app.screen.query_one(f"#opt-{name}", Input).focus()
            await pilot.press(*value)
        app.screen.query_one("#opt-max_tokens", Input).focus()
        await pilot.press(*"50", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)
        assert "temperature=0.3" in str(screen.active_pane.stats_line.render())
        await send(pilot, "hi")
        spec, messages, options = backend.requests[-1]
        assert spec.tag == SMOL
        assert messages == [Message("system", "Be brief."), Message("user", "hi")]
        assert options == Options(temperature=0.3, top_k=20, top_p=0.9, seed=7, max_tokens=50)


async def test_the_form_offers_every_option_of_the_table_and_applies_each(real_hub: Hub) -> None:
    from llmspell.options import OPTIONS

    app = create_app(real_hub, Store())
    async with app.run_test(size=(100, 40)) as pilot:
        screen = chat(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, SettingsScreen)
        shown = [i.id for i in form.query(Input) if i.id and i.id.startswith("opt-")]
        assert shown == [f"opt-{o.name}" for o in OPTIONS if o.form]
        # format is the REPL's /json and %json; logprobs are asked for by API clients, no face shows them
        assert [o.name for o in OPTIONS if not o.form] == ["format", "logprobs"]
        for o in OPTIONS:
            if o.form:
                form.query_one(f"#opt-{o.name}", Input).value = option_sample(o)[0]
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        options = screen.active_pane.conv.options
        assert {o.name: getattr(options, o.name) for o in OPTIONS if o.form} == {
            o.name: option_sample(o)[1] for o in OPTIONS if o.form
        }


async def test_a_bad_option_is_named_and_the_form_stays_open() -> None:
    hub, backend = scripted_hub()
    app = create_app(hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()
        form = app.screen
        form.query_one("#opt-temperature", Input).value = "hot"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is form
        assert "option temperature must be a number, not 'hot'" in str(form.query_one("#error", Static).render())
        form.query_one("#opt-temperature", Input).value = "9"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "out of range" in str(form.query_one("#error", Static).render())
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is screen and screen.active_pane.conv.options == Options()
        await send(pilot, "hi")
        assert backend.requests[-1][2] == Options()


async def test_scripted_answer_is_shown_whole_with_its_stats() -> None:
    hub, _ = scripted_hub(pieces=40)
    app = create_app(hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat(pilot)
        await send(pilot, "hi")
        pane = screen.active_pane
        assert answers(pane) == [SCRIPTED_ANSWER], "no token lost, the whole text ends in the Markdown"
        assert str(pane.stats_line.render()) == SCRIPTED_STATS.summary()
        assert pane.border_title == "hi", "the pane is titled after the conversation"


async def test_deltas_are_batched_into_the_markdown_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets._markdown import MarkdownStream

    writes: list[str] = []
    original = MarkdownStream.write

    async def counting(self: MarkdownStream, fragment: str) -> None:
        writes.append(fragment)
        await original(self, fragment)

    monkeypatch.setattr(MarkdownStream, "write", counting)
    flushes: list[int] = []
    original_flush = ChatPane._flush

    async def counting_flush(self: ChatPane) -> None:
        flushes.append(1)
        await original_flush(self)

    monkeypatch.setattr(ChatPane, "_flush", counting_flush)
    hub, _ = scripted_hub(pieces=len(SCRIPTED_ANSWER), delay=0.002)
    app = create_app(hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat(pilot)
        await send(pilot, "hi")
        assert answers(screen.active_pane) == [SCRIPTED_ANSWER]
        assert 0 < len(writes) < len(SCRIPTED_ANSWER), "several deltas per write, not one write per token"
        assert len(writes) <= len(flushes), "text reaches the Markdown only on the flush timer"
        # what was streamed is a prefix of the answer; the final full update() brings the rest
        assert SCRIPTED_ANSWER.startswith("".join(writes))


async def test_a_long_answer_streams_in_segments_and_arrives_whole() -> None:
    from llmspell_tui.widgets.chat_answer import SEGMENT_CHARS, segments

    para = "The dragon paints the sky with **bright** colours over the `hills` and the sea. " * 4
    fence = "```python\n" + "\n\n".join(f"print({i})" for i in range(40)) + "\n```\n\n"
    long = "\n\n".join([para] * 12) + "\n\n" + fence + "\n\n".join([para] * 12)
    hub, _ = scripted_hub(answer=long, pieces=300)
    app = create_app(hub, Store())
    async with app.run_test(size=(100, 30)) as pilot:
        screen = chat(pilot)
        await send(pilot, "tell me a long story")
        view = screen.active_pane.log_view.query_one(AnswerView)
        assert view.text == long and "".join(view.sources) == long, "nothing lost across the segments"
        assert len(view.sources) == len(segments(long)) > 2
        assert all(src.count("```") % 2 == 0 for src in view.sources), "no code fence is cut in two"
        assert all(len(src) < SEGMENT_CHARS + len(fence) + len(para) + 4 for src in view.sources)
        # reopened from the store, the answer is shown in the same segments
        shown, conv_id = view.sources, screen.active_pane.conv.id
        await pilot.press("ctrl+r")
        await screen.open_conversation(conv_id)
        await pilot.pause()
        assert screen.active_pane.log_view.query_one(AnswerView).sources == shown


async def test_a_conversation_past_the_context_says_what_it_left_out(
    shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    hub = Hub(Config(keep_alive=300, options=Options(temperature=0, max_tokens=8, num_ctx=192)))
    app = create_app(hub, Store())
    question = "Tell me about the long history of the river valley and its farmers, please. " * 2
    async with app.run_test(size=(120, 36)) as pilot:
        screen = chat(pilot)
        pane = screen.panes[0]
        for _ in range(5):
            await send(pilot, question)
        notes = [n for n in texts(pane, "note") if "earlier messages left out" in n]
        # every answer came, and the pane said where the conversation was cut to fit the model's context
        assert notes and "smollm2:135m's context" in notes[0]
        assert len(answers(pane)) == 5 and not texts(pane, "error")
        assert pane.conv.context_from > 0
