"""The server's guards on a real subprocess: Host header, CORS, API key, the per-model queue bound, clean shutdown."""

from __future__ import annotations

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
from server.serveproc import ServeProcess, free_port, serve

from llmspell.server.security import host_name, is_local_host, is_loopback_bind, origin_allowed

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
    body = {**LONG, "options": {"num_predict": 4000, "temperature": 0}}
    second_open = threading.Event()
    release = threading.Event()

    def second() -> None:
        # waits behind the first, or runs beside it on a second instance of the model: admitted either way
        with httpx.stream("POST", server.url + "/api/chat", json=body, headers=AUTH, timeout=120):
            second_open.set()
            release.wait(120)

    with httpx.Client(timeout=120, headers=AUTH) as http:
        with http.stream("POST", server.url + "/api/chat", json=body) as running:
            lines = running.iter_lines()  # kept referenced: a dropped line iterator closes the response
            next(lines)  # generating now
            waiting = threading.Thread(target=second)
            waiting.start()
            try:
                deadline = time.monotonic() + 60
                while (doc := http.get(server.url + "/health").json())["queues"].get("smollm2:135m@llamacpp", 0) < 2:
                    assert time.monotonic() < deadline, f"the second request was never admitted: {doc}"
                    time.sleep(0.05)
                full = http.post(server.url + "/api/chat", json=body)
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
    assert f"http://0.0.0.0:{wide.port}" in out and "stopped, models unloaded" in out


def test_sigterm_shuts_down_cleanly_with_a_model_loaded(tmp_path: Path, shared_models: Path) -> None:
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
        code = proc.stop()
    assert code == 0
    assert "Traceback" not in proc.output() and "stopped, models unloaded" in proc.output()


def test_host_and_origin_rules() -> None:
    assert host_name("localhost:11435") == "localhost" and host_name("[::1]:80") == "::1"
    assert all(is_local_host(h) for h in ("localhost", "127.0.0.1", "::1", "10.0.0.5", "box.local", "a.localhost"))
    assert not any(is_local_host(h) for h in ("example.com", "8.8.8.8", "localhost.evil.com"))
    assert is_loopback_bind("127.0.0.1") and is_loopback_bind("::1") and not is_loopback_bind("0.0.0.0")
    assert origin_allowed("http://localhost:5173", []) and origin_allowed("app://obsidian.md", [])
    assert not origin_allowed("http://localhost.evil.com", []) and origin_allowed("https://x.org", ["https://x.org"])
