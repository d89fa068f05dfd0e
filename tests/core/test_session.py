"""The Session every face drives, on the real embedded engine: turns end in one typed result, one model check,
compare with one meaning, exports that appear whole or not at all, one list of model names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import GEMMA, SMOL

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.chat import Conversation, Entry
from llmspell.config import Config
from llmspell.errors import InvalidOptions, LLMSpellError
from llmspell.hub import Hub
from llmspell.session import Session, error_text, export_conversation, model_names
from llmspell.store import Store
from llmspell.types import Options

SHORT = Options(temperature=0, seed=1, max_tokens=16)
#: a catalog model no test downloads
ABSENT = "qwen2.5:0.5b@llamacpp"


def _session(backend: LlamaCppBackend, tmp_path: Path, model: str = SMOL) -> Session:
    hub = Hub(Config(ollama_enabled=False), backends=[backend])
    return Session(hub, Store(tmp_path / "h.sqlite3"), Conversation(model, options=SHORT))


async def test_a_turn_ends_done_and_a_closed_one_cancelled_with_its_text_kept(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    s = _session(backend, tmp_path)
    turn = s.send("Name the capital of France.")
    text = "".join([c.text async for c in turn])
    done = s.result(turn)
    assert (done.state, done.note, done.error) == ("done", "", None)
    assert done.text == text and done.stats is not None and done.stats.generated_tokens > 0
    turn = s.send("Write a very long story about a dragon.", Options(max_tokens=300))
    async for chunk in turn:
        if chunk.text.strip():
            break
    await turn.aclose()
    cut = s.result(turn)
    assert (cut.state, cut.note) == ("cancelled", "interrupted") and cut.text.strip()
    stored = s.store.load(s.conv.id)  # type: ignore[union-attr]
    assert [e.state for e in stored.entries] == ["done", "done", "done", "cancelled"]
    assert stored.entries[-1].content == cut.text


async def test_a_failed_turn_is_failed_with_one_readable_line(backend: LlamaCppBackend, tmp_path: Path) -> None:
    s = _session(backend, tmp_path, model=ABSENT)
    turn = s.send("Hello?")
    with pytest.raises(LLMSpellError):
        async for _ in turn:
            pass
    await turn.aclose()
    failed = s.result(turn)
    assert failed.state == "failed" and failed.note == "failed"
    assert failed.error is not None and "not downloaded" in failed.error and "\n" not in failed.error


async def test_switching_model_is_checked_once_and_a_refusal_changes_nothing(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    s = _session(backend, tmp_path)
    for bad, reason in ((ABSENT, "is not downloaded; pull it with: llmspell model pull"), ("no-such-model:1b", "")):
        with pytest.raises(LLMSpellError) as err:
            await s.switch_model(bad)
        assert reason in error_text(err.value)
        assert s.model == SMOL
    with pytest.raises(InvalidOptions):
        await s.switch_model("  ")
    await s.switch_model(GEMMA)
    assert s.model == GEMMA


async def test_compare_answers_copies_of_the_conversation_and_leaves_it_as_it_was(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    s = _session(backend, tmp_path)
    s.conv.system = "Answer in one word."
    async for _ in s.send("Name the capital of France."):
        pass
    before = [(e.role, e.content) for e in s.conv.entries]
    events = [e async for e in s.compare([SMOL, ABSENT, GEMMA], "And of Italy?", parallel=False)]
    assert [(e.index, e.kind) for e in events if e.kind != "chunk"] == [
        (0, "start"), (0, "done"), (1, "start"), (1, "error"), (2, "start"), (2, "done"),
    ]  # fmt: skip
    assert [(e.role, e.content) for e in s.conv.entries] == before, "the compared conversation is unchanged"
    store = s.store
    assert store is not None
    smol, absent, gemma = s.forks
    for fork, model in ((smol, SMOL), (gemma, GEMMA)):
        saved = store.load(fork.id)
        assert saved.model == model and saved.system == "Answer in one word."
        assert [(e.role, e.content) for e in saved.entries[:2]] == before, "each model saw the same history"
        assert saved.entries[2].content == "And of Italy?" and saved.entries[3].state == "done"
    error = next(e for e in events if e.kind == "error").metrics.error
    assert error is not None and "not downloaded" in error
    assert absent.id not in {r.id for r in store.list()}, "a model that cannot answer leaves no copy behind"


async def test_a_closed_compare_cancels_every_answer_and_keeps_their_text(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    s = _session(backend, tmp_path)
    stream = s.compare([SMOL, GEMMA], "Write a very long story about a dragon.", options=Options(max_tokens=400))
    async for event in stream:
        if event.kind == "chunk" and event.text.strip():
            break
    await stream.aclose()
    states = [s.store.load(f.id).entries[-1].state for f in s.forks if f.entries]  # type: ignore[union-attr]
    assert states and set(states) == {"cancelled"}


def test_export_writes_markdown_or_json_whole_and_a_bad_place_is_one_clear_error(tmp_path: Path) -> None:
    conv = Conversation(SMOL, system="Be brief.", title="Capitals")
    conv.entries += [Entry("user", "Capital of France?"), Entry("assistant", "Paris", SMOL, state="cancelled")]
    md = export_conversation(conv, tmp_path / "chat")
    assert md.name == "chat.md" and "## You" in md.read_text() and "*(interrupted)*" in md.read_text()
    data = json.loads(export_conversation(conv, tmp_path / "chat.json").read_text())
    assert data["system"] == "Be brief." and [m["state"] for m in data["messages"]] == ["done", "cancelled"]
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(InvalidOptions) as err:
        export_conversation(conv, tmp_path / "a-file" / "chat.md")
    assert "cannot write" in str(err.value) and "a-file" in str(err.value)
    # an export over an existing file replaces it whole; nothing else is left in the folder
    export_conversation(conv, md)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "chat.json", "chat.md"]


async def test_model_names_offer_the_catalog_beside_what_is_on_disk(backend: LlamaCppBackend) -> None:
    names = await model_names(Hub(Config(ollama_enabled=False), backends=[backend]))
    assert f"{SMOL}@llamacpp" in names and SMOL in names
    assert "qwen2.5:0.5b" in names, "a catalog model not downloaded is offered too"


async def test_an_answer_stream_that_ends_without_a_chunk_is_not_a_failure() -> None:
    """A real HTTP server on loopback that answers /api/chat with 200 and no line at all (a proxy that cut the
    body): the turn ends as stopped with nothing written, never as the error 'StopAsyncIteration'."""
    import http.server
    import threading

    from llmspell.backends.ollama import OllamaBackend

    class Empty(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Empty)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = Config(ollama_connect_timeout=2.0, ollama_read_timeout=10.0)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        hub = Hub(config, backends=[OllamaBackend(config, url=url)])
        session = Session(hub, None, Conversation("m:1b@ollama"))
        turn = session.send("Hi")
        chunks = [c async for c in turn]
        result = session.result(turn)
        assert chunks == [] and result.error is None and result.state == "cancelled"
    finally:
        server.shutdown()
        server.server_close()
