"""The server's guards on a real subprocess: Host header, CORS, API key, the per-model queue bound, clean shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from helpers import collect, smollm2_file
from server.serveproc import COUNTING, ServeProcess, free_port, serve

from llmspell.backends.ollama import OllamaBackend
from llmspell.config import Config
from llmspell.errors import BackendUnavailable, InvalidOptions
from llmspell.server.security import host_name, is_local_host, is_loopback_bind, origin_allowed
from llmspell.spec import parse_spec
from llmspell.types import Message, Options

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LONG = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "Tell a very long story."}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[ServeProcess]:
    yield from serve(
        tmp_path_factory,
        shared_models,
        None,
        "--api-key",
        KEY,
        "--cors-origin",
        "https://notebook.example.org",
        "--max-queue",
        "1",
    )


def test_a_request_for_another_host_name_is_refused(server: ServeProcess) -> None:
    r = httpx.get(server.url + "/api/tags", headers={**AUTH, "Host": "attacker.example.com"})
    assert r.status_code == 403 and "not a local name" in r.json()["error"]
    r = httpx.get(server.url + "/v1/models", headers={**AUTH, "Host": "attacker.example.com:80"})
    assert r.status_code == 403 and "not a local name" in r.json()["error"]["message"]
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]"):
        assert httpx.get(server.url + "/api/version", headers={**AUTH, "Host": host}).status_code == 200


def test_the_api_key_is_required_except_for_the_probe(server: ServeProcess) -> None:
    assert httpx.get(server.url + "/").status_code == 200
    r = httpx.get(server.url + "/api/tags")
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]
    assert httpx.get(server.url + "/api/tags", headers={"Authorization": "Bearer nope"}).status_code == 401
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=server.url).list()
    assert err.value.status_code == 401
    assert ollama.Client(host=server.url, headers=AUTH).list().models
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert list(openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0).models.list())


def test_cors_lets_in_local_and_configured_origins_only(server: ServeProcess) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            server.url + "/api/chat",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )

    for origin in ("http://localhost:3000", "http://127.0.0.1:8888", "https://notebook.example.org"):
        r = preflight(origin)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        got = httpx.get(server.url + "/api/version", headers={**AUTH, "Origin": origin})
        assert got.headers["access-control-allow-origin"] == origin
    r = preflight("https://evil.example.com")
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    got = httpx.get(server.url + "/api/version", headers={**AUTH, "Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in got.headers


def test_a_full_queue_answers_503_and_frees_up(server: ServeProcess) -> None:
    # answers forced to be long by their format, so neither can end (at an end-of-text token) while the test looks
    body = {**LONG, "format": COUNTING, "options": {"num_predict": 4000, "temperature": 0}}
    second_open = threading.Event()
    release = threading.Event()

    def second() -> None:
        # waits behind the first, or runs beside it on a second instance of the model: admitted either way; spelled
        # without its variant, it is still the same model and counts against the same bound
        with httpx.stream(
            "POST", server.url + "/api/chat", json={**body, "model": "smollm2"}, headers=AUTH, timeout=120
        ):
            second_open.set()
            release.wait(120)

    with httpx.Client(timeout=120, headers=AUTH) as http:
        with http.stream("POST", server.url + "/api/chat", json=body) as running:
            lines = running.iter_lines()  # kept referenced: a dropped line iterator closes the response
            next(lines)  # generating now
            waiting = threading.Thread(target=second)
            waiting.start()
            try:
                server.wait_for(lambda d: d["queues"].get("smollm2:135m@llamacpp", 0) == 2, "the second admitted")
                full = http.post(server.url + "/api/chat", json={**body, "model": "smollm2:latest"})
                assert full.status_code == 503 and "busy" in full.json()["error"]
                v1 = http.post(
                    server.url + "/v1/chat/completions", json={"model": "smollm2:135m", "messages": LONG["messages"]}
                )
                assert v1.status_code == 503 and "busy" in v1.json()["error"]["message"]
            finally:
                running.close()
                release.set()
                waiting.join(120)
        assert second_open.is_set()
        server.wait_idle()
        small = {**LONG, "stream": False, "options": {"num_predict": 2}}
        ok = http.post(server.url + "/api/chat", json=small)
        assert ok.status_code == 200 and ok.json()["eval_count"] == 2


async def test_the_ollama_backend_names_a_missing_key_and_a_refused_request(
    server: ServeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    ob = OllamaBackend(Config(ollama_connect_timeout=2.0, ollama_read_timeout=120.0), url=server.url)
    hello = [Message("user", "Say hello.")]
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    down = await ob.status()
    assert not down.ready and "refused access (401)" in (down.error or "")
    with pytest.raises(BackendUnavailable) as err:
        await ob.list_models()
    assert "refused access (401)" in str(err.value) and "no key was sent" in str(err.value)
    assert "set OLLAMA_API_KEY" in str(err.value)
    monkeypatch.setenv("OLLAMA_API_KEY", "not-the-key")
    with pytest.raises(BackendUnavailable) as err:
        await collect(ob.chat(parse_spec("smollm2:135m@ollama"), hello))
    assert "refused access (401)" in str(err.value) and "OLLAMA_API_KEY was not accepted" in str(err.value)
    monkeypatch.setenv("OLLAMA_API_KEY", KEY)
    assert (await ob.status()).ready
    # let in, the request itself is refused with 400 (a schema no grammar can express), and the reason reaches the user
    with pytest.raises(InvalidOptions) as bad:
        await collect(ob.chat(parse_spec("smollm2:135m@ollama"), hello, Options(format={"type": "nonsense"})))
    assert "refused the request" in str(bad.value) and "cannot be turned into a grammar" in str(bad.value)
    _, last = await collect(ob.chat(parse_spec("smollm2:135m@ollama"), hello, Options(max_tokens=4)))
    assert last.stats is not None and last.stats.generated_tokens == 4


def test_serve_refuses_a_port_in_use_and_warns_on_all_interfaces(server: ServeProcess, tmp_path: Path) -> None:
    env = {**server.env, "LLMSPELL_HOME": str(tmp_path)}
    busy = subprocess.run(
        [sys.executable, "-m", "llmspell", "serve", "--port", str(server.port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{server.port}" in busy.stderr
    assert "--port" in busy.stderr and "Traceback" not in busy.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "llmspell", "serve", "--config", str(tmp_path / "nope.toml"), "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "nope.toml does not exist" in missing.stderr and "init-config" in missing.stderr
    wide = ServeProcess(tmp_path, Path(env["LLMSPELL_MODELS"]), args=("--host", "0.0.0.0"))
    wide.port = free_port()
    try:
        wide.start()
        # bound to every interface, the Host guard is off (as Ollama's is) and anyone may connect
        r = httpx.get(wide.url + "/api/version", headers={"Host": "my-box.example.com"})
        assert r.status_code == 200
    finally:
        assert wide.stop() == 0
    out = wide.output()
    assert "warning: listening on 0.0.0.0" in out and "--api-key" in out
    assert f"http://0.0.0.0:{wide.port}" in out
    assert "llmspell serve: no model was loaded" in out and "llmspell serve: stopped" in out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_shuts_down_cleanly_unloading_the_loaded_model(
    tmp_path: Path, shared_models: Path, sig: signal.Signals
) -> None:
    proc = ServeProcess(tmp_path, shared_models)
    try:
        proc.start()
        r = httpx.post(
            proc.url + "/api/generate",
            json={"model": "smollm2:135m", "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
            timeout=120,
        )
        assert r.status_code == 200
        assert [m["model"] for m in httpx.get(proc.url + "/api/ps").json()["models"]] == ["smollm2:135m"]
    finally:
        code = proc.stop(sig)
    out = proc.output()
    assert code == 0 and "Traceback" not in out, out
    # printed by the server after its shutdown unloaded the engine's copies of the model
    assert "llmspell serve: unloaded smollm2:135m@llamacpp" in out and "llmspell serve: stopped" in out, out


def test_host_and_origin_rules() -> None:
    assert host_name("localhost:11435") == "localhost" and host_name("[::1]:80") == "::1"
    assert all(is_local_host(h) for h in ("localhost", "127.0.0.1", "::1", "10.0.0.5", "box.local", "a.localhost"))
    assert not any(is_local_host(h) for h in ("example.com", "8.8.8.8", "localhost.evil.com"))
    assert is_loopback_bind("127.0.0.1") and is_loopback_bind("::1") and not is_loopback_bind("0.0.0.0")
    assert origin_allowed("http://localhost:5173", []) and origin_allowed("app://obsidian.md", [])
    assert not origin_allowed("http://localhost.evil.com", []) and origin_allowed("https://x.org", ["https://x.org"])
    # a pattern, as OLLAMA_ORIGINS takes them: browser extensions of any id, and nothing that merely starts alike
    assert origin_allowed("chrome-extension://abcdef", ["chrome-extension://*"])
    assert not origin_allowed("chrome-extension://abcdef", []) and not origin_allowed(
        "https://x.org.evil", ["https://x.org"]
    )


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost.evil.example"])
def test_a_web_page_of_another_site_gets_no_work_done(server: ServeProcess, origin: str) -> None:
    # a "simple" cross-site request: text/plain, no preflight; CORS would only have hidden the answer
    headers = {**AUTH, "Origin": origin, "Content-Type": "text/plain"}
    before = {m["name"] for m in httpx.get(server.url + "/api/ps", headers=AUTH).json()["models"]}
    for path, body in (
        ("/api/generate", '{"model": "smollm2:135m", "prompt": "hi", "stream": false}'),
        ("/api/pull", '{"model": "tinyllama"}'),
        ("/api/show", '{"model": "smollm2:135m"}'),
    ):
        r = httpx.post(server.url + path, content=body, headers=headers, timeout=30)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
        assert "requests from web pages at" in r.json()["error"] and "--cors-origin" in r.json()["error"]
    r = httpx.post(server.url + "/v1/chat/completions", content="{}", headers=headers)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    after = {m["name"] for m in httpx.get(server.url + "/api/ps", headers=AUTH).json()["models"]}
    assert after == before, "nothing was loaded"
    assert not list((server.root / "home" / "models").glob("**/*.partial")), "no pull was started"
    # this machine's pages and the configured site still get in, and programs send no Origin at all
    for allowed in ("http://localhost:3000", "https://notebook.example.org"):
        r = httpx.post(server.url + "/api/show", json={"model": "smollm2:135m"}, headers={**AUTH, "Origin": allowed})
        assert r.status_code == 200, allowed


def test_a_model_file_is_not_opened_by_path_unless_its_folder_is_given(
    server: ServeProcess, tmp_path_factory: pytest.TempPathFactory, shared_models: Path
) -> None:
    gguf_file = smollm2_file()
    r = httpx.post(server.url + "/api/show", json={"model": str(gguf_file)}, headers=AUTH)
    assert r.status_code == 400 and "does not open files by path" in r.json()["error"]
    assert "--model-folder" in r.json()["error"]
    r = httpx.post(server.url + "/api/show", json={"model": "/etc/../" + str(gguf_file)}, headers=AUTH)
    assert r.status_code == 400
    r = httpx.post(server.url + "/api/show", json={"model": "/tmp/a\u0000b.gguf"}, headers=AUTH)
    assert r.status_code == 400 and "not a usable file path" in r.json()["error"], "a NUL byte is not a 500"
    allowed = tmp_path_factory.mktemp("allowed")
    inside = allowed / "mine.gguf"
    inside.write_bytes(gguf_file.read_bytes())
    (allowed / "escape.gguf").symlink_to(gguf_file)  # inside by name, outside in fact
    (allowed / "cut.gguf").write_bytes(gguf_file.read_bytes()[:5_000_000])
    opened = ServeProcess(tmp_path_factory.mktemp("folders"), shared_models, args=("--model-folder", str(allowed)))
    opened.start()
    try:
        r = httpx.post(opened.url + "/api/show", json={"model": str(inside)})
        assert r.status_code == 200 and r.json()["details"]["format"] == "gguf"
        # a damaged file the client named is the client's error, with the reason, not a 500
        r = httpx.post(opened.url + "/api/generate", json={"model": str(allowed / "cut.gguf"), "prompt": "hi"})
        assert r.status_code == 400 and "truncated" in r.json()["error"], r.text[:300]
        for outside in (allowed / "escape.gguf", allowed / ".." / "elsewhere.gguf", gguf_file):
            r = httpx.post(opened.url + "/api/show", json={"model": str(outside)})
            assert r.status_code == 400 and "does not open files by path" in r.json()["error"], outside
    finally:
        opened.stop()


def test_a_signal_mid_stream_ends_the_answer_with_a_line_that_says_why(tmp_path: Path, shared_models: Path) -> None:
    proc = ServeProcess(tmp_path, shared_models)
    try:
        proc.start()
        body = {
            "model": "smollm2:135m",
            "messages": [{"role": "user", "content": "Count."}],
            "format": COUNTING,  # an answer of 800+ tokens: still streaming when the signal comes
            "options": {"temperature": 0},
        }
        lines: list[dict[str, object]] = []
        with httpx.stream("POST", proc.url + "/api/chat", json=body, timeout=120) as r:
            assert r.status_code == 200
            for raw in r.iter_lines():
                lines.append(json.loads(raw))
                if len(lines) == 5:
                    assert proc.proc is not None
                    proc.proc.send_signal(signal.SIGTERM)
    finally:
        code = proc.stop()
    assert code == 0
    assert lines[-1] == {
        "error": "llmspell serve is shutting down: this answer was stopped; send the request again when the server "
        "is back"
    }, lines[-3:]
    assert all("message" in line for line in lines[:-1]), "every line before it was a whole answer line"


def _closed_by_server(s: socket.socket) -> bool:
    """True at EOF (the server closed it); the socket's own timeout bounds the wait."""
    try:
        return s.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        return False


def test_silent_and_slow_clients_are_closed(tmp_path: Path, shared_models: Path) -> None:
    proc = ServeProcess(tmp_path, shared_models, args=("--header-timeout", "0.5"))
    opened: list[socket.socket] = []
    try:
        proc.start()
        silent = socket.create_connection(("127.0.0.1", proc.port), timeout=20)
        slow = socket.create_connection(("127.0.0.1", proc.port), timeout=20)
        opened += [silent, slow]
        slow.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n")  # and never the end of the headers
        assert _closed_by_server(silent) and _closed_by_server(slow)
        # a request that started in time runs as long as it needs, and the next one on the connection works too
        assert httpx.get(proc.url + "/api/version").status_code == 200
    finally:
        for s in opened:
            s.close()
        proc.stop()
    assert "no complete request in 0.5 s" in proc.output(), proc.output()[-1500:]


def _request_on(s: socket.socket, port: int) -> bytes:
    """A whole GET /api/version on an open socket; the status line of the answer."""
    s.sendall(f"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return s.recv(4096).split(b"\r\n", 1)[0]


def test_connections_past_the_cap_are_closed_and_those_below_it_still_answer(
    tmp_path: Path, shared_models: Path
) -> None:
    # a long header deadline, so nothing but the cap can close these silent connections
    proc = ServeProcess(tmp_path, shared_models, args=("--header-timeout", "600", "--max-connections", "6"))
    opened: list[socket.socket] = []
    try:
        proc.start()
        opened = [socket.create_connection(("127.0.0.1", proc.port), timeout=20) for _ in range(8)]
        assert [_closed_by_server(s) for s in opened[6:]] == [True, True]
        # the six within the cap were kept open all along: each still takes a request and answers it
        assert [_request_on(s, proc.port) for s in opened[:6]] == [b"HTTP/1.1 200 OK"] * 6
        for s in opened:
            s.close()
        # once they are gone, new connections are welcome again (polled: the server sees the closes a moment later)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(proc.url + "/api/version", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)  # poll interval
            assert time.monotonic() < deadline, "the server never took a connection again"
    finally:
        for s in opened:
            s.close()
        proc.stop()
    assert "--max-connections" in proc.output(), proc.output()[-1500:]


def test_a_request_body_that_trickles_in_is_cut_off_with_a_408(tmp_path: Path, shared_models: Path) -> None:
    proc = ServeProcess(tmp_path, shared_models, args=("--body-timeout", "0.5"))
    body = json.dumps({"model": "smollm2:135m", "prompt": "hi", "stream": False}).encode()
    head = (
        f"POST /api/show HTTP/1.1\r\nHost: 127.0.0.1:{proc.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) + 1000}\r\n\r\n"
    ).encode()
    stop = threading.Event()

    def trickle(s: socket.socket) -> None:
        # the fault itself: a client that keeps sending, one byte at a time, and never finishes its body
        for byte in body + b" " * 1000:
            if stop.wait(0.05):
                return
            try:
                s.sendall(bytes([byte]))
            except OSError:
                return

    try:
        proc.start()
        s = socket.create_connection(("127.0.0.1", proc.port), timeout=20)
        s.sendall(head)
        sender = threading.Thread(target=trickle, args=(s,), daemon=True)
        sender.start()
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        stop.set()
        sender.join(10)
        s.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within 0.5 s" in answer
        # a body sent whole is still read, however small the deadline
        ok = httpx.post(proc.url + "/api/show", json={"model": "smollm2:135m"}, timeout=30)
        assert ok.status_code == 200, ok.text
    finally:
        stop.set()
        proc.stop()
    assert "no complete request body in 0.5 s" in proc.output(), proc.output()[-1500:]
