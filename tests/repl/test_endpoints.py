"""The REPL and named endpoints: a real llama_cpp.server (not ours) on 127.0.0.1 as the endpoint ``peer``, a closed
port as the endpoint ``gone``, and the embedded engine beside them, all from the config.toml the user would write."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from peers import PEER_MODEL, LlamaCppServer, free_port, llama_cpp_server, write_endpoints
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from llmspell.cli.repl_session import ReplCompleter
from llmspell.config import load_config
from llmspell.hub import Hub
from llmspell.store import Store

#: the fixture start_repl (tests/repl/conftest.py): starts a REPL on a spec and returns its Driver
StartRepl = Callable[..., Awaitable[Any]]

REMOTE = f"{PEER_MODEL}@peer"
LOCAL = "smollm2:135m@llamacpp"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    """llama-cpp-python's own OpenAI server on the bundled SmolLM2, one for the module."""
    yield from llama_cpp_server(tmp_path_factory.mktemp("peer"))


@pytest.fixture
async def hub(shared_models: Path, monkeypatch: pytest.MonkeyPatch, peer: LlamaCppServer) -> AsyncIterator[Hub]:
    """The hub the REPL gets from ``llmspell chat``: built from config.toml, with ``peer`` and ``gone`` in it."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    write_endpoints(
        Path(os.environ["LLMSPELL_HOME"]),
        [
            {"name": "peer", "kind": "openai", "url": peer.url},
            # nothing listens there: the server is down
            {"name": "gone", "kind": "openai", "url": f"http://127.0.0.1:{free_port()}", "connect_timeout": 2},
        ],
    )
    h = Hub(dataclasses.replace(load_config(), keep_alive=300, num_ctx=2048))
    yield h
    await h.close()


def _error_lines(out: str, needle: str) -> list[str]:
    return [line for line in out.splitlines() if needle in line and line.startswith("error:")]


async def test_models_and_status_name_every_endpoint(start_repl: StartRepl) -> None:
    d = await start_repl("smollm2:135m")
    out = await d.command("/models", "not listed")
    assert REMOTE in out and LOCAL in out, out
    assert "gone not listed: endpoint gone (http://127.0.0.1:" in out and "is not reachable" in out

    out = await d.command("/status", "gone: not ready")
    peer_line = next(line for line in out.splitlines() if line.startswith("peer: "))
    assert peer_line.startswith("peer: ready · ") and "1 models" in peer_line
    assert "latency " in peer_line and " ms" in peer_line and "/v1" in peer_line, peer_line
    assert "loaded:" not in peer_line, "an OpenAI server cannot say what it has loaded; none is not claimed"
    assert "llamacpp: ready" in out and "loaded: " in out
    gone_line = next(line for line in out.splitlines() if line.startswith("gone: "))
    assert "not reachable" in gone_line

    # the endpoint's models are offered while typing a model name
    completer = ReplCompleter(d.repl)
    text = "/model smollm2@"
    found = [c.text for c in completer.get_completions(Document(text, len(text)), CompleteEvent())]
    assert REMOTE in found


async def test_switching_to_a_remote_model_and_chatting_two_turns(
    start_repl: StartRepl,
) -> None:
    d = await start_repl("smollm2:135m")
    await d.command(f"/model {REMOTE}", f"now talking to {REMOTE}")
    first = await d.command("Name one colour of the rainbow.", "tok/s")
    stats_line = next(line for line in first.splitlines() if "tok/s" in line)
    assert stats_line.endswith("ran on peer"), stats_line
    # llama_cpp.server sends no usage in a stream: the counts were made here, and the line says so
    assert "counted here" in stats_line, stats_line

    await d.command("Name another one.", "tok/s")
    entries = d.repl.conv.entries
    assert [e.role for e in entries] == ["user", "assistant", "user", "assistant"]
    assert all(e.state == "done" and e.content.strip() for e in entries if e.role == "assistant")
    assert {e.model for e in entries if e.role == "assistant"} == {REMOTE}

    out = await d.command("/show", "conversation:")
    assert f"model:         {REMOTE}" in out and "address:       http://127.0.0.1:" in out, out

    out = await d.command("/stats", "eval count")
    assert f"last answer ({REMOTE}, ran on peer)" in out
    assert "counted here (the server sent no usage)" in out


async def test_compare_a_local_and_a_remote_model(start_repl: StartRepl) -> None:
    d = await start_repl("smollm2:135m")
    await d.command(f"/compare {LOCAL} {REMOTE}", f"the next prompt goes to {LOCAL}, {REMOTE}")
    before = {row.id for row in Store().list()}
    out = await d.command("What is the capital of France?", "/load ID continues")
    stats = [line for line in out.splitlines() if "tok/s" in line and "ran on" in line]
    assert len(stats) == 2, out
    assert stats[0].endswith("ran on llamacpp") and "counted here" not in stats[0]
    assert stats[1].endswith("ran on peer") and "counted here" in stats[1]
    # the summary rows: both answered, the remote's count marked as counted here
    rows = {line.split()[0]: line for line in out.splitlines() if "/load " in line and "TTFT" in line}
    assert set(rows) == {LOCAL, REMOTE} and "≈" in rows[REMOTE] and "≈" not in rows[LOCAL]
    forks = [Store().load(row.id) for row in Store().list() if row.id not in before]
    answers = {f.model: f.entries[-1] for f in forks}
    assert set(answers) == {LOCAL, REMOTE}
    assert all(a.role == "assistant" and a.state == "done" and a.content.strip() for a in answers.values())
    assert not d.repl.conv.entries, "a comparison leaves the current conversation as it was"


async def test_an_unreachable_endpoint_is_one_line_and_the_session_goes_on(
    start_repl: StartRepl,
) -> None:
    # a conversation started on a server that is down: said once at the start, and the prompt still comes
    d = await start_repl("smollm2@gone")
    assert len(_error_lines(d.out, "endpoint gone (http://127.0.0.1:")) == 1, d.out

    out = await d.command("Are you there?", "error:")
    lines = _error_lines(out, "endpoint gone (http://127.0.0.1:")
    assert len(lines) == 1 and "is not reachable" in lines[0] and "check the server is up" in lines[0], out
    assert "Traceback" not in d.out

    # refused: the model stays, with one line
    out = await d.command("/model smollm2@gone", "error:")
    assert len(_error_lines(out, "endpoint gone")) == 1 and "now talking" not in out

    # a comparison with the dead endpoint: its one line, and the other answers
    await d.command(f"/compare {REMOTE} smollm2@gone", "the next prompt goes to")
    out = await d.command("Say hi.", "/load ID continues")
    assert len(_error_lines(out, "endpoint gone")) == 1 and "ran on peer" in out

    # the same conversation goes on with a server that answers, its failed turn kept
    await d.command(f"/model {REMOTE}", f"now talking to {REMOTE}")
    out = await d.command("Hello again.", "tok/s")
    assert "ran on peer" in out
    entries = d.repl.conv.entries
    assert [(e.role, e.state) for e in entries] == [
        ("user", "done"),
        ("assistant", "failed"),
        ("user", "done"),
        ("assistant", "done"),
    ]
    assert entries[0].content == "Are you there?" and entries[-1].content.strip()
    d.type("/bye\r")
    assert await d.ended() == 0
