"""The conversation store and `ask`: recorded as it happens, reopened whole, partial answers kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llmspell.chat import Conversation, Entry, ask
from llmspell.config import Config
from llmspell.errors import LLMSpellError
from llmspell.hub import Hub
from llmspell.store import Store, StoreError
from llmspell.types import Options, Stats


def test_conversations_round_trip_and_list(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    conv = Conversation("smollm2:135m", system="Be brief.", options=Options(temperature=0.2, seed=3))
    store.add(conv, Entry("user", "Hello there\nsecond line"))
    answer = store.begin_answer(conv, "smollm2:135m")
    store.update_answer(answer, "Hi")
    store.finish_answer(answer, "Hi!", Stats(prompt_tokens=5, generated_tokens=2, stop_reason="stop"))
    again = Store(tmp_path / "h.sqlite3").load(conv.id[:8])
    assert again.title == "Hello there" and again.system == "Be brief." and again.options.seed == 3
    assert [(e.role, e.content, e.state) for e in again.entries] == [
        ("user", "Hello there\nsecond line", "done"),
        ("assistant", "Hi!", "done"),
    ]
    assert again.entries[1].stats is not None and again.entries[1].stats.generated_tokens == 2
    assert [m.role for m in again.messages()] == ["system", "user", "assistant"]
    assert store.list()[0]["id"] == conv.id and store.list()[0]["messages"] == 2
    md = again.to_markdown()
    assert md.startswith("# Hello there") and "## You" in md and "Hi!" in md
    store.delete(conv.id)
    with pytest.raises(StoreError, match="no conversation"):
        store.load(conv.id)


def test_a_damaged_history_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "h.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot be used"):
        Store(bad)


async def test_ask_records_the_turn_and_a_cancelled_answer_keeps_its_text(
    tmp_path: Path, shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    hub = Hub(Config())
    store = Store(tmp_path / "h.sqlite3")
    conv = Conversation("smollm2:135m", options=Options(temperature=0, max_tokens=24))
    text = "".join([c.text async for c in ask(hub, conv, "Name the capital of France.", store)])
    assert "Paris" in text
    stream = ask(hub, conv, "Write a very long story about it.", store, Options(max_tokens=300))
    got = 0
    async for chunk in stream:
        got += bool(chunk.text)
        if got == 4:
            break
    await stream.aclose()
    saved = store.load(conv.id)
    assert [e.role for e in saved.entries] == ["user", "assistant", "user", "assistant"]
    assert saved.entries[1].content == text and saved.entries[1].state == "done"
    assert saved.entries[3].state == "cancelled" and saved.entries[3].content
    assert "*(interrupted)*" in saved.to_markdown()
    hub.backends["llamacpp"].close_sync()  # type: ignore[attr-defined]


def test_a_process_killed_mid_answer_leaves_the_partial_text(tmp_path: Path, shared_models: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from llmspell.chat import Conversation, ask
        from llmspell.hub import Hub
        from llmspell.store import Store
        from llmspell.types import Options

        async def main():
            store = Store(Path({str(tmp_path / "h.sqlite3")!r}))
            conv = Conversation("smollm2:135m", options=Options(temperature=0, max_tokens=2000))
            print(conv.id, flush=True)
            async for chunk in ask(Hub(), conv, "Write a very long story about a dragon.", store):
                print("token", flush=True)

        asyncio.run(main())
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LLMSPELL_MODELS": str(shared_models)},
    )
    assert proc.stdout is not None
    conv_id = proc.stdout.readline().strip()
    tokens = 0
    deadline = time.monotonic() + 120
    while tokens < 60 and time.monotonic() < deadline:
        tokens += proc.stdout.readline().startswith("token")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    saved = Store(tmp_path / "h.sqlite3").load(conv_id)
    assert saved.entries[0].content == "Write a very long story about a dragon."
    partial = saved.entries[1]
    assert partial.state == "streaming" and len(partial.content) > 20, "text received before the kill survives"
    assert "*(unfinished)*" in saved.to_markdown()


async def test_a_failed_prompt_is_kept_marked_failed_and_not_sent_again(
    tmp_path: Path, shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend error before the first token leaves the prompt in the history, but out of the next context."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    hub = Hub(Config())
    store = Store(tmp_path / "h.sqlite3")
    conv = Conversation("qwen2.5:0.5b", options=Options(temperature=0, max_tokens=8))  # in the catalog, not pulled
    with pytest.raises(LLMSpellError, match="pull"):
        async for _ in ask(hub, conv, "Tell me about Paris.", store):
            pass
    saved = store.load(conv.id)
    assert [(e.role, e.state) for e in saved.entries] == [("user", "done"), ("assistant", "failed")]
    assert saved.entries[0].content == "Tell me about Paris.", "the typed prompt is not lost"
    assert "*(failed)*" in saved.to_markdown()
    conv.model = "smollm2:135m"
    chunks = [c async for c in ask(hub, conv, "Name the capital of France.", store)]
    fresh = Conversation("smollm2:135m", options=Options(temperature=0, max_tokens=8))
    alone = [c async for c in ask(hub, fresh, "Name the capital of France.")]
    assert chunks[-1].stats and alone[-1].stats
    assert chunks[-1].stats.prompt_tokens == alone[-1].stats.prompt_tokens, "the failed turn was not sent"
    assert [m.content for m in store.load(conv.id).messages()] == [
        "Name the capital of France.",
        "".join(c.text for c in chunks),
    ]
    hub.backends["llamacpp"].close_sync()  # type: ignore[attr-defined]
