"""The kernel and named endpoints: a real kernel process whose config.toml (in its LLMSPELL_HOME) names a real
llama_cpp.server on 127.0.0.1 as ``peer`` and a closed port as ``gone``, beside the embedded engine."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_session import KernelSession, Ran, kernel_env, start_kernel
from peers import PEER_MODEL, LlamaCppServer, free_port, llama_cpp_server, write_endpoints

from llmspell.chat import Conversation, Entry
from llmspell.store import Store

REMOTE = f"{PEER_MODEL}@peer"
LOCAL = "smollm2:135m@llamacpp"


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    """llama-cpp-python's own OpenAI server on the bundled SmolLM2, one for the module."""
    yield from llama_cpp_server(tmp_path_factory.mktemp("peer"))


@pytest.fixture(scope="module")
def session(spec_prefix: Path, kernel_home: Path, shared_models: Path, peer: LlamaCppServer) -> Iterator[KernelSession]:
    """One kernel for the module, started after its config.toml names the endpoints (it reads the config from the
    LLMSPELL_HOME its environment gives it)."""
    write_endpoints(
        kernel_home / "llmspell",
        [
            {"name": "peer", "kind": "openai", "url": peer.url},
            # nothing listens there: the server is down
            {"name": "gone", "kind": "openai", "url": f"http://127.0.0.1:{free_port()}", "connect_timeout": 2},
        ],
    )
    ks = start_kernel(spec_prefix, kernel_env(kernel_home, shared_models))
    try:
        ks.run("%set temperature=0 seed=1 max_tokens=16")
        yield ks
    finally:
        ks.close()


def _row(md: str, first: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is ``first``."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{md}")


def _one_line(ran: Ran) -> str:
    assert ran.status == "error", ran.outputs
    shown = ran.error
    assert "Traceback" not in shown and len(shown.splitlines()) == 1, shown
    return str(ran.reply["evalue"])


def _history(session: KernelSession) -> str:
    return session.run("%history").of("display_data")[0]["data"]["text/markdown"]


def test_models_and_status_name_every_endpoint(session: KernelSession) -> None:
    md = session.run("%models").markdown
    assert f"| {REMOTE} |" in md and f"| {LOCAL} |" in md
    assert re.search(r"\*gone: endpoint gone \(http://127\.0\.0\.1:\d+/v1\) is not reachable", md), md

    md = session.run("%status").markdown
    header = _row(md, "backend")
    peer_row = dict(zip(header, _row(md, "peer"), strict=True))
    assert peer_row["state"] == "ready" and peer_row["models"] == "1"
    assert re.fullmatch(r"\d+ ms|\d+\.\d\d s", peer_row["latency"]), peer_row
    assert peer_row["address"].endswith("/v1") and peer_row["loaded"] == "unknown"
    gone_row = dict(zip(header, _row(md, "gone"), strict=True))
    assert gone_row["state"] == "not ready" and "is not reachable" in gone_row["notes"]
    assert dict(zip(header, _row(md, "llamacpp"), strict=True))["state"] == "ready"


def test_pull_from_an_endpoint_is_refused_and_not_offered(session: KernelSession) -> None:
    error = _one_line(session.run(f"%pull {REMOTE}"))
    assert "peer does not pull models: it serves the models its server was started with" in error
    assert "llmspell model list --backend peer" in error

    code = "%pull smollm2"
    pulls = session.kc.complete(code, len(code), reply=True, timeout=60)["content"]["matches"]
    assert pulls and REMOTE not in pulls, "%pull does not offer what an endpoint cannot pull"
    code = "%model smollm2"
    models = session.kc.complete(code, len(code), reply=True, timeout=60)["content"]["matches"]
    assert REMOTE in models
    details = session.kc.inspect(REMOTE, 3, reply=True, timeout=60)["content"]["data"]["text/plain"]
    assert f"model:          {REMOTE}" in details and "address:        http://127.0.0.1:" in details, details


def test_chat_with_a_remote_model_over_two_turns(session: KernelSession) -> None:
    session.run("%reset")
    assert session.run(f"%model {REMOTE}").stdout.startswith(f"model: {REMOTE} ({REMOTE}")
    first = session.run("Name one colour of the rainbow.")
    assert first.status == "ok", first.outputs
    md = first.result["text/markdown"]
    assert re.search(r"<small>smollm2@peer · TTFT .+ · ran on peer</small>$", md), md
    # llama_cpp.server sends no usage in a stream: the footer says the counts were made here
    assert "counted here" in md
    assert first.of("execute_result")[0]["metadata"]["llmspell"]["backend"] == "peer"

    second = session.run("Name another one.")
    assert second.status == "ok" and second.result["text/plain"].strip(), second.outputs
    history = _history(session)
    assert history.count(f"**{REMOTE}:**") == 2 and "Name one colour" in history and "Name another one" in history


def test_compare_a_local_and_a_remote_model(session: KernelSession) -> None:
    ran = session.run(f"%compare {LOCAL} {REMOTE}\nWhat is the capital of France?")
    assert ran.status == "ok", ran.outputs
    finals: dict[str, str] = {}
    for content in ran.of("display_data") + ran.of("update_display_data"):
        md = content["data"]["text/markdown"]
        for spec in (LOCAL, REMOTE):
            if md.startswith(f"**{spec}**") and "tok/s" in md:
                finals[spec] = md
    assert set(finals) == {LOCAL, REMOTE}, ran.outputs
    assert finals[LOCAL].endswith("· ran on llamacpp</small>") and "counted here" not in finals[LOCAL]
    assert finals[REMOTE].endswith("· ran on peer</small>") and "counted here" in finals[REMOTE]
    for spec, md in finals.items():
        answer = md.removeprefix(f"**{spec}**").split("\n\n---\n")[0]
        assert answer.strip(), f"{spec} gave no answer"


def test_an_unreachable_endpoint_is_one_line_and_the_conversation_goes_on(
    session: KernelSession, kernel_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session.run(f"%model {REMOTE}")
    error = _one_line(session.run("%model smollm2@gone"))
    assert re.match(r"endpoint gone \(http://127\.0\.0\.1:\d+/v1\) is not reachable .*check the server is up", error)
    assert session.run("%model").result["text/plain"] == REMOTE, "the model stays as it was"

    # a compare with the dead endpoint: its one note, and the other's answer
    ran = session.run(f"%compare {REMOTE} smollm2@gone\nSay hi.")
    assert ran.status == "ok", ran.outputs
    finals = [c["data"] for c in ran.of("display_data") + ran.of("update_display_data")]
    assert any(d["text/plain"].startswith("smollm2@gone: endpoint gone (") for d in finals), finals
    assert any(d["text/markdown"].endswith("· ran on peer</small>") for d in finals), finals

    # a conversation kept from when that server was up: it opens, and its first prompt fails in one line
    monkeypatch.setenv("LLMSPELL_HOME", str(kernel_home / "llmspell"))
    store = Store()
    conv = Conversation("smollm2@gone")
    store.add(conv, Entry("user", "Remember the word Zorblax."))
    store.add(conv, Entry("assistant", "I will remember Zorblax.", "smollm2@gone"))
    store.close()
    opened = session.run(f"%history open {conv.id}")
    warned = "".join(c["text"] for c in opened.of("stream") if c["name"] == "stderr")
    assert opened.status == "ok" and "endpoint gone (" in warned and "switch with %model SPEC" in warned
    error = _one_line(session.run("Are you there?"))
    assert error.startswith("endpoint gone (") and "not reachable (starting the answer)" in error

    # the conversation goes on with a server that answers, the failed turn kept
    session.run(f"%model {REMOTE}")
    ran = session.run("Which word did I ask you to remember?")
    assert ran.status == "ok" and ran.result["text/plain"].strip(), ran.outputs
    history = _history(session)
    turns = re.findall(r"\*\*(you|[\w:.@-]+):\*\* (.*?)(?=\n\n\*\*|$)", history, re.S)
    assert [who for who, _ in turns] == ["you", "smollm2@gone", "you", "smollm2@gone", "you", REMOTE], history
    assert turns[2][1] == "Are you there?" and turns[3][1].strip() == "*(failed)*", "the failed turn is kept, marked"
    assert turns[5][1].strip(), "the next prompt was answered"
