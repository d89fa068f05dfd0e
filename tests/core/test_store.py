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
    assert store.list()[0].id == conv.id and store.list()[0].messages == 2
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


#: a history written by the release before schema versions existed (llmspell at commit 8f7a80a, user_version 0):
#: a finished and an interrupted answer with stats, options and non-ASCII text; an answer whose writer died
#: mid-stream; a failed one
FIXTURE_V0 = Path(__file__).parent / "fixtures" / "history-0.sqlite"


def test_a_history_from_the_release_before_versions_opens_with_every_conversation(tmp_path: Path) -> None:
    import shutil
    import sqlite3

    from llmspell.store import SCHEMA_VERSION

    path = tmp_path / "history.sqlite3"
    shutil.copy(FIXTURE_V0, path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 0
    store = Store(path)
    assert store.version == SCHEMA_VERSION >= 2
    rows = store.list()
    assert [(r.title, r.model, r.messages) for r in rows] == [
        ("hello", "llama3.2@ollama", 2),
        ("saved by name", "gemma3:270m", 2),
        ("Name the capital of France.", "smollm2:135m@llamacpp", 4),
    ]
    first = store.load(rows[2].id)
    assert first.system == "You are terse." and first.options == Options(temperature=0.2, seed=7, max_tokens=64)
    assert [(e.role, e.content, e.state) for e in first.entries] == [
        ("user", "Name the capital of France.", "done"),
        ("assistant", "Paris.", "done"),
        ("user", "And of Italy? Écris « Rome » 🇮🇹", "done"),
        ("assistant", "Rome, the capital", "cancelled"),
    ]
    assert first.entries[1].stats is not None and first.entries[1].stats.generated_tokens == 3
    assert [e.state for e in store.load(rows[1].id).entries] == ["done", "streaming"]
    assert store.load(rows[1].id).options.format == {"type": "object"}
    assert [e.state for e in store.load(rows[0].id).entries] == ["done", "failed"]
    # the new schema is in place and the file goes on being written
    indexes = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "conversations_by_updated" in indexes
    store.add(first, Entry("user", "Thanks."))
    store.close()
    again = Store(path)  # a second open migrates nothing and loses nothing
    assert again.version == SCHEMA_VERSION and len(again.load(first.id).entries) == 5


def test_a_history_from_a_newer_llmspell_is_refused_untouched(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "history.sqlite3"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 999")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError) as err:
        Store(path)
    assert "written by a newer llmspell (schema 999" in str(err.value) and "upgrade llmspell" in str(err.value)
    assert path.read_bytes() == before


def test_conversations_are_found_by_title_id_prefix_or_latest_and_wildcards_match_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    with pytest.raises(StoreError, match="no saved conversation to resume"):
        store.find("latest")
    older = Conversation("smollm2:135m", title="Rust Questions")
    store.add(older, Entry("user", "a"))
    newer = Conversation("smollm2:135m")
    store.add(newer, Entry("user", "b"))
    assert store.find("latest").id == newer.id
    assert store.find("rust questions").id == older.id
    assert store.find(older.id[:7]).id == older.id
    for typed in ("%%%%%%", "______", "%" + older.id[1:8]):
        with pytest.raises(StoreError, match="no conversation"):
            store.find(typed)


def _damaged_history(path: Path) -> None:
    """A history with enough conversations to span many pages, then pages past the header overwritten."""
    store = Store(path)
    for n in range(60):
        conv = Conversation("smollm2:135m", title=f"talk {n}")
        store.add(conv, Entry("user", f"question {n} " + "words " * 200))
    store.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 20 * 4096
    data[4096 * 2 : 4096 * 12] = b"\xde\xad\xbe\xef" * (4096 * 10 // 4)
    path.write_bytes(bytes(data))


def test_a_history_damaged_past_its_header_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    _damaged_history(path)
    store = Store(path)  # the header and schema page are intact: it opens
    for read in (lambda: store.list(), lambda: store.find("talk 3"), lambda: store.votes()):
        with pytest.raises(StoreError) as err:
            read()
        assert "cannot be read" in err.value.message and "move it aside" in (err.value.hint or "")


def test_chat_resume_on_a_damaged_history_says_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _damaged_history(home / "history.sqlite3")
    env = {**os.environ, "LLMSPELL_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "llmspell", "chat", "--resume"],
        input="hi\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode != 0 and "cannot be read" in proc.stderr, proc.stderr[-800:]
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
