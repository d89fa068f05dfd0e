"""Every error a remote engine really gives, as a user of a named endpoint meets it.

The servers are real (llama-cpp-python's own OpenAI server and ``llmspell serve`` on 127.0.0.1); the faults a
real server cannot be made to produce on demand (a 429, a 5xx, a cut or short stream, a slow first token, no
usage) come from ``FaultProxy``, a test-only stand-in between the client and the real server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import Fault, FaultProxy
from peers import PEER_MODEL, LlamaCppServer, free_port, llama_cpp_server, write_endpoints
from server.serveproc import ServeProcess, serve

from llmspell.chat import Conversation
from llmspell.errors import BackendUnavailable, LLMSpellError, ModelNotFound
from llmspell.hub import Hub
from llmspell.session import Session
from llmspell.types import Message, Options, Stats

pytestmark = pytest.mark.engine

#: the key both servers are started with, and the variable the endpoints read it from
KEY = "peer-secret-key"
KEY_ENV = "PEER_API_KEY"
#: a variable no test sets
UNSET_ENV = "LLMSPELL_TEST_UNSET_KEY"
WRONG_KEY = "wrong-key-4711"
SAY_HELLO = [Message("user", "Say hello.")]
SHORT = Options(max_tokens=8, temperature=0)
PEER = f"{PEER_MODEL}@peer"
SERVED = "smollm2:135m"

MakeHub = Callable[..., Hub]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    yield from llama_cpp_server(tmp_path_factory.mktemp("llama"), api_key=KEY)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[ServeProcess]:
    yield from serve(tmp_path_factory, shared_models, None, "--api-key", KEY)


@pytest.fixture
def proxy(llama: LlamaCppServer) -> Iterator[FaultProxy]:
    """A fresh fault proxy in front of the llama_cpp.server (cheap: a thread and a socket)."""
    with FaultProxy(llama.url) as p:
        yield p


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv(UNSET_ENV, raising=False)


@pytest.fixture
async def make_hub() -> AsyncIterator[MakeHub]:
    """A hub on a config.toml with these endpoints (kind openai and the right key unless an entry says
    otherwise); every hub made is closed after the test."""
    hubs: list[Hub] = []

    def make(*endpoints: dict[str, Any]) -> Hub:
        write_config(*endpoints)
        hubs.append(Hub())
        return hubs[-1]

    yield make
    for hub in hubs:
        await hub.close()


def write_config(*endpoints: dict[str, Any]) -> None:
    write_endpoints(
        Path(os.environ["LLMSPELL_HOME"]), [{"kind": "openai", "api_key_env": KEY_ENV, **e} for e in endpoints]
    )


async def answer(hub: Hub, spec: str, options: Options = SHORT) -> tuple[str, Stats]:
    """The whole answer to "Say hello." and its stats."""
    stream = hub.chat(spec, SAY_HELLO, options)
    text, stats = [], None
    try:
        async for chunk in stream:
            text.append(chunk.text)
            if chunk.done:
                stats = chunk.stats
    finally:
        await stream.aclose()
    assert stats is not None
    return "".join(text), stats


async def failure(hub: Hub, spec: str, options: Options = SHORT) -> tuple[LLMSpellError, str]:
    """The error a chat with ``spec`` ends in, and the text that came before it."""
    stream = hub.chat(spec, SAY_HELLO, options)
    text = []
    with pytest.raises(LLMSpellError) as info:
        try:
            async for chunk in stream:
                text.append(chunk.text)
        finally:
            await stream.aclose()
    return info.value, "".join(text)


def clear(err: LLMSpellError, endpoint: str) -> str:
    """The error's message, checked to be one line naming the endpoint (with at most one hint line)."""
    assert "\n" not in err.message, err.message
    assert f"endpoint {endpoint} " in err.message, err.message
    assert err.hint is None or "\n" not in err.hint, err.hint
    assert "Traceback" not in str(err)
    return err.message


# -- cannot get there ---------------------------------------------------------------------------------------------


async def test_an_unreachable_endpoint_is_one_line_naming_it(make_hub: MakeHub) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    hub = make_hub({"name": "gone", "url": url})
    err, _ = await failure(hub, f"{PEER_MODEL}@gone")
    assert isinstance(err, BackendUnavailable)
    assert clear(err, "gone").startswith(f"endpoint gone ({url}/v1) is not reachable")
    assert err.hint is not None and "[[endpoints]] gone" in err.hint
    [status] = [s for s in await hub.status_all() if s.backend == "gone"]
    assert not status.ready and status.error is not None and "is not reachable" in status.error


async def test_https_to_a_plain_http_server_is_a_tls_failure(make_hub: MakeHub, llama: LlamaCppServer) -> None:
    hub = make_hub({"name": "peer", "url": f"https://127.0.0.1:{llama.port}/v1"})
    err, _ = await failure(hub, PEER)
    assert isinstance(err, BackendUnavailable)
    assert "the TLS handshake failed" in clear(err, "peer")
    assert err.hint is not None and "scheme (http or https)" in err.hint


# -- keys -----------------------------------------------------------------------------------------------------------


async def test_a_key_variable_that_is_not_set_is_named(make_hub: MakeHub, llama: LlamaCppServer) -> None:
    hub = make_hub({"name": "peer", "url": llama.url, "api_key_env": UNSET_ENV})
    err, _ = await failure(hub, PEER)
    assert isinstance(err, BackendUnavailable)
    # the server's own reason (llama-cpp-python answers FastAPI's {"detail": ...}) reaches the user
    assert "refused access (401) while starting the answer: Invalid API key" in clear(err, "peer")
    assert err.hint is not None and f"{UNSET_ENV} is not set" in err.hint


async def test_a_refused_key_names_its_variable_and_the_right_key_answers(
    make_hub: MakeHub, llama: LlamaCppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_PEER_KEY", WRONG_KEY)
    hub = make_hub(
        {"name": "peer", "url": llama.url}, {"name": "wrongkey", "url": llama.url, "api_key_env": "WRONG_PEER_KEY"}
    )
    err, _ = await failure(hub, f"{PEER_MODEL}@wrongkey")
    assert "refused access (401)" in clear(err, "wrongkey")
    assert err.hint is not None and "the key in WRONG_PEER_KEY was refused" in err.hint
    assert WRONG_KEY not in str(err)  # the variable is named, its value never shown
    text, stats = await answer(hub, PEER)
    assert text.strip() and stats.generated_tokens > 0


# -- models ---------------------------------------------------------------------------------------------------------


async def test_a_model_the_server_lacks_is_model_not_found(make_hub: MakeHub, served: ServeProcess) -> None:
    hub = make_hub({"name": "lab", "url": served.url + "/v1"})
    err, _ = await failure(hub, "nosuch:1b@lab")
    assert isinstance(err, ModelNotFound)
    assert "has no model nosuch:1b" in clear(err, "lab")


async def test_a_model_outside_the_filter_is_refused_before_any_request(make_hub: MakeHub, proxy: FaultProxy) -> None:
    hub = make_hub({"name": "peer", "url": proxy.url, "models": ["llama3*"]})
    err, _ = await failure(hub, PEER)
    assert isinstance(err, ModelNotFound)
    assert f"does not offer {PEER_MODEL}: its models filter is llama3*" in clear(err, "peer")
    assert proxy.exchanges == []


# -- the server says no ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        (Fault.rate_limited(retry_after=7), "is rate-limiting requests (429) (the server asks to retry after 7 s)"),
        (Fault.server_error(500), "failed with a server error (500)"),
        (Fault.server_error(503), "failed with a server error (503)"),
    ],
    ids=["429", "500", "503"],
)
async def test_refusals_and_server_errors_are_reported_once_and_not_retried(
    make_hub: MakeHub, proxy: FaultProxy, fault: Fault, says: str
) -> None:
    hub = make_hub({"name": "peer", "url": proxy.url})
    proxy.inject(fault)
    err, text = await failure(hub, PEER)
    assert isinstance(err, BackendUnavailable) and text == ""
    assert says in clear(err, "peer")
    # the error is shown at once, not after retries behind the user's back
    assert [e.status for e in proxy.wait_over(1)] == [fault.status]
    # and it leaves nothing broken: the next request is answered
    text, _ = await answer(hub, PEER)
    assert text.strip()


# -- streams that go wrong ------------------------------------------------------------------------------------------


async def test_a_stream_cut_midway_keeps_the_partial_answer_marked_failed(make_hub: MakeHub, proxy: FaultProxy) -> None:
    hub = make_hub({"name": "peer", "url": proxy.url})
    whole, _ = await answer(hub, PEER)
    session = Session(hub, conv=Conversation(PEER))
    proxy.inject(Fault.cut(after=4))  # the role, then three pieces of text
    turn = session.send("Say hello.", SHORT)
    seen = []
    with pytest.raises(BackendUnavailable):
        async for chunk in turn:
            seen.append(chunk.text)
    await turn.aclose()
    result = session.result(turn)
    partial = "".join(seen)
    assert result.state == "failed" and result.note == "failed"
    assert result.text == partial and partial and whole.startswith(partial) and partial != whole
    assert result.stats is None
    assert result.error is not None and "endpoint peer " in result.error and "was cut" in result.error
    stored = session.conv.entries[-1]
    assert (stored.role, stored.content, stored.state) == ("assistant", partial, "failed")
    assert session.conv.messages()[-1] == Message("assistant", partial)
    # the same session goes on: the next turn is answered whole
    turn = session.send("Say it again.", SHORT)
    async for _chunk in turn:
        pass
    await turn.aclose()
    again = session.result(turn)
    assert again.state == "done" and again.text.strip() and again.stats is not None and again.error is None


async def test_a_stream_that_ends_without_a_finish_reason_is_not_presented_as_whole(
    make_hub: MakeHub, proxy: FaultProxy
) -> None:
    hub = make_hub({"name": "peer", "url": proxy.url})
    session = Session(hub, conv=Conversation(PEER))
    proxy.inject(Fault.end_early(after=4))
    turn = session.send("Say hello.", SHORT)
    seen = []
    with pytest.raises(BackendUnavailable):
        async for chunk in turn:
            seen.append(chunk.text)
    await turn.aclose()
    result = session.result(turn)
    [exchange] = proxy.wait_over(1)
    assert exchange.events == 4 and not exchange.client_left  # the proxy ended it cleanly
    assert result.state == "failed" and result.stats is None and result.text == "".join(seen) != ""
    assert result.error is not None and "endpoint peer " in result.error
    assert "ended before it was finished" in result.error
    assert "*(failed)*" in session.conv.to_markdown()


# -- counts ---------------------------------------------------------------------------------------------------------


async def test_llama_cpp_server_sends_no_usage_so_the_counts_are_estimated(
    make_hub: MakeHub, llama: LlamaCppServer
) -> None:
    hub = make_hub({"name": "peer", "url": llama.url})
    text, stats = await answer(hub, PEER)
    assert text.strip()
    assert stats.estimated and 0 < stats.generated_tokens <= 8


async def test_usage_left_out_by_the_way_is_estimated_too(make_hub: MakeHub, served: ServeProcess) -> None:
    with FaultProxy(served.url) as lab_proxy:
        hub = make_hub({"name": "lab", "url": served.url + "/v1"}, {"name": "labproxy", "url": lab_proxy.url + "/v1"})
        _, exact = await answer(hub, f"{SERVED}@lab")
        assert not exact.estimated and exact.generated_tokens == 8 and exact.prompt_tokens > 5
        lab_proxy.inject(Fault.no_usage())
        text, stats = await answer(hub, f"{SERVED}@labproxy")
        assert text.strip()
        assert stats.estimated and 0 < stats.generated_tokens <= 8 and stats.prompt_tokens == 0


# -- slow servers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "waiting_for"),
    [(Fault.slow_first_byte(3.0), "starting the answer"), (Fault.slow_first_event(3.0), "streaming the answer")],
    ids=["no-headers", "headers-but-no-token"],
)
async def test_a_first_token_slower_than_read_timeout_is_one_clear_line(
    make_hub: MakeHub, proxy: FaultProxy, fault: Fault, waiting_for: str
) -> None:
    hub = make_hub({"name": "peer", "url": proxy.url, "read_timeout": 0.5})
    proxy.inject(fault)
    err, text = await failure(hub, PEER)
    assert isinstance(err, BackendUnavailable) and text == ""
    assert f"sent nothing for 0.5 s ({waiting_for})" in clear(err, "peer")
    assert err.hint is not None and "read_timeout in [[endpoints]] peer" in err.hint
    [exchange] = proxy.wait_over(1)
    assert exchange.client_left and exchange.events == 0  # the client gave up; nothing was shown


async def test_a_first_token_within_read_timeout_works_and_its_wait_is_measured(
    make_hub: MakeHub, proxy: FaultProxy
) -> None:
    hub = make_hub({"name": "peer", "url": proxy.url, "read_timeout": 20})
    proxy.inject(Fault.slow_first_byte(1.0))
    text, stats = await answer(hub, PEER)
    assert text.strip()
    assert stats.time_to_first_token >= 1.0


# -- cancel ---------------------------------------------------------------------------------------------------------


async def test_closing_the_stream_midway_hangs_up_on_the_server_and_the_next_request_works(
    make_hub: MakeHub, proxy: FaultProxy
) -> None:
    hub = make_hub({"name": "peer", "url": proxy.url})
    long = Options(max_tokens=200, temperature=0)
    stream = hub.chat(PEER, [Message("user", "Write a long story about a dragon.")], long)
    try:
        async for chunk in stream:
            if chunk.text:
                break
    finally:
        await stream.aclose()
    [exchange] = proxy.wait_over(1)
    assert exchange.client_left and not exchange.finished and exchange.events < 200
    text, stats = await answer(hub, PEER)
    assert text.strip() and stats.generated_tokens > 0
    assert len(proxy.wait_over(2)) == 2


# -- an Ollama-kind endpoint ----------------------------------------------------------------------------------------


async def test_an_unreachable_ollama_endpoint_is_one_line_naming_it(make_hub: MakeHub) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    hub = make_hub({"name": "farollama", "kind": "ollama", "url": url})
    err, _ = await failure(hub, f"{SERVED}@farollama")
    assert isinstance(err, BackendUnavailable)
    assert clear(err, "farollama").startswith(f"endpoint farollama (Ollama at {url}) is not reachable")
    assert err.hint is not None and "[[endpoints]] farollama" in err.hint


async def test_an_ollama_endpoint_names_the_key_variable_and_the_right_key_answers(
    make_hub: MakeHub, served: ServeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_LAB_KEY", WRONG_KEY)
    hub = make_hub(
        {"name": "lab", "kind": "ollama", "url": served.url},
        {"name": "lab-nokey", "kind": "ollama", "url": served.url, "api_key_env": UNSET_ENV},
        {"name": "lab-wrong", "kind": "ollama", "url": served.url, "api_key_env": "WRONG_LAB_KEY"},
    )
    err, _ = await failure(hub, f"{SERVED}@lab-nokey")
    assert "refused access (401)" in clear(err, "lab-nokey")
    assert err.hint is not None and f"{UNSET_ENV} is not set" in err.hint
    err, _ = await failure(hub, f"{SERVED}@lab-wrong")
    assert "refused access (401)" in clear(err, "lab-wrong")
    assert err.hint is not None and "the key in WRONG_LAB_KEY was refused" in err.hint
    assert WRONG_KEY not in str(err)
    text, stats = await answer(hub, f"{SERVED}@lab")
    assert text.strip() and stats.generated_tokens > 0


# -- what the command line shows ------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``llmspell ARGS`` as a user runs it, with this test's environment (and its config.toml)."""
    return subprocess.run(
        [sys.executable, "-m", "llmspell", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )


def one_clear_line(proc: subprocess.CompletedProcess[str], endpoint: str) -> str:
    """The error line of a failed command, checked: non-zero exit, no traceback, the endpoint named."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, proc.stderr  # the error, then at most a hint
    assert lines[0].startswith("error: ") and f"endpoint {endpoint} " in lines[0], proc.stderr
    return lines[0]


def test_the_cli_says_an_endpoint_is_unreachable_in_one_line() -> None:
    write_config({"name": "gone", "url": f"http://127.0.0.1:{free_port()}"})
    proc = run_cli("run", f"{PEER_MODEL}@gone", "hi", "--max-tokens", "8")
    assert "is not reachable" in one_clear_line(proc, "gone")


def test_the_cli_names_the_key_variable_that_is_not_set(llama: LlamaCppServer) -> None:
    write_config({"name": "peer", "url": llama.url, "api_key_env": UNSET_ENV})
    proc = run_cli("run", PEER, "hi", "--max-tokens", "8")
    assert "refused access (401)" in one_clear_line(proc, "peer")
    assert f"{UNSET_ENV} is not set" in proc.stderr


def test_the_cli_reports_a_rate_limit_with_its_wait(proxy: FaultProxy) -> None:
    write_config({"name": "peer", "url": proxy.url})
    proxy.inject(Fault.rate_limited(retry_after=7))
    proc = run_cli("run", PEER, "hi", "--max-tokens", "8")
    assert "retry after 7 s" in one_clear_line(proc, "peer")


def test_the_cli_keeps_what_arrived_before_a_cut_and_says_so(proxy: FaultProxy) -> None:
    write_config({"name": "peer", "url": proxy.url})
    proxy.inject(Fault.cut(after=4))
    proc = run_cli("run", PEER, "Say hello.", "--max-tokens", "8", "--temperature", "0")
    assert "was cut" in one_clear_line(proc, "peer")
    assert proc.stdout.strip()  # the text that arrived was printed as it came


def test_the_cli_names_read_timeout_when_the_first_token_is_late(proxy: FaultProxy) -> None:
    write_config({"name": "peer", "url": proxy.url, "read_timeout": 0.5})
    proxy.inject(Fault.slow_first_byte(3.0))
    proc = run_cli("run", PEER, "hi", "--max-tokens", "8")
    assert "sent nothing for 0.5 s" in one_clear_line(proc, "peer")
    assert "read_timeout" in proc.stderr
