"""[[endpoints]] in config.toml and MODEL@ENDPOINT specs: what is accepted, and a clear error for everything else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from peers import write_endpoints

from llmspell.backends.ollama import OllamaBackend
from llmspell.backends.openai import OpenAIBackend
from llmspell.config import load_config
from llmspell.errors import BackendUnavailable, ConfigError, InvalidSpec
from llmspell.hub import Hub
from llmspell.spec import parse_spec


def _home() -> Path:
    return Path(os.environ["LLMSPELL_HOME"])


def _config_error(text: str) -> str:
    path = _home() / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message  # the error names the file it read
    return message


def test_endpoints_become_named_backends_of_their_kind() -> None:
    write_endpoints(
        _home(),
        [
            {
                "name": "gpubox",
                "kind": "openai",
                "url": "http://gpubox:8000",
                "api_key_env": "GPUBOX_KEY",
                "headers": {"X-Team": "ml"},
                "models": ["llama3*"],
                "read_timeout": 60,
            },
            {"name": "lab-ollama", "kind": "ollama", "url": "http://lab:11434/"},
            {"name": "spare", "kind": "openai", "url": "https://spare.example/v1/", "enabled": False},
        ],
    )
    config = load_config()
    gpubox, lab, spare = config.endpoints
    # an OpenAI server given without a path is reached at /v1, as every engine serves it there
    assert gpubox.url == "http://gpubox:8000/v1" and spare.url == "https://spare.example/v1"
    assert lab.url == "http://lab:11434"
    assert gpubox.read_timeout == 60.0 and gpubox.models == ("llama3*",) and gpubox.headers == {"X-Team": "ml"}
    assert gpubox.allows("llama3.1:70b") and not gpubox.allows("qwen2.5:7b")

    hub = Hub(config)
    assert list(hub.backends) == ["llamacpp", "gpubox", "lab-ollama"]  # the default Ollama is off in this config
    assert isinstance(hub.backends["gpubox"], OpenAIBackend) and hub.backends["gpubox"].kind == "openai"
    assert isinstance(hub.backends["lab-ollama"], OllamaBackend) and hub.backends["lab-ollama"].url == lab.url
    with pytest.raises(BackendUnavailable, match="endpoint 'spare' is turned off"):
        hub.backend("spare")
    with pytest.raises(BackendUnavailable, match="no backend or endpoint called 'nowhere'") as err:
        hub.backend("nowhere")
    assert "llamacpp, gpubox, lab-ollama" in str(err.value) and "llmspell endpoint add" in str(err.value)
    with pytest.raises(BackendUnavailable, match="'openai' is a kind of endpoint"):
        hub.backend("openai")


def test_the_key_is_read_from_the_variable_named_and_only_sent_with_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    write_endpoints(_home(), [{"name": "gpubox", "kind": "openai", "url": "http://h", "api_key_env": "GPUBOX_KEY"}])
    (endpoint,) = load_config().endpoints
    monkeypatch.delenv("GPUBOX_KEY", raising=False)
    assert "Authorization" not in endpoint.request_headers()
    assert "GPUBOX_KEY is not set" in endpoint.key_hint()
    monkeypatch.setenv("GPUBOX_KEY", "s3cret")
    assert endpoint.request_headers()["Authorization"] == "Bearer s3cret"
    assert "GPUBOX_KEY was refused" in endpoint.key_hint() and "s3cret" not in endpoint.key_hint()


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ("endpoints = 5\n", "endpoints must be a list of tables"),
        ('[[endpoints]]\nname = "a"\nkind = "openai"\nurl = "http://h"\ncolour = 1\n', "unknown key(s) colour"),
        ('[[endpoints]]\nkind = "openai"\nurl = "http://h"\n', "name = None must be"),
        ('[[endpoints]]\nname = "GPU Box"\nkind = "openai"\nurl = "http://h"\n', "lowercase letters"),
        ('[[endpoints]]\nname = "ollama"\nkind = "ollama"\nurl = "http://h"\n', "is a backend's name"),
        ('[[endpoints]]\nname = "gguf"\nkind = "openai"\nurl = "http://h"\n', "is a backend's name"),
        ('[[endpoints]]\nname = "a"\nkind = "vllm"\nurl = "http://h"\n', "kind = 'vllm' must be one of openai, ollama"),
        ('[[endpoints]]\nname = "a"\nkind = "openai"\nurl = "ftp://h"\n', "not an http(s) address"),
        ('[[endpoints]]\nname = "a"\nkind = "openai"\nurl = "http://u:pw@h"\n', "carries a user or password"),
        (
            '[[endpoints]]\nname = "a"\nkind = "openai"\nurl = "http://h"\napi_key_env = "sk-proj-abcdef1234567890"\n',
            "looks like the key itself",
        ),
        (
            '[[endpoints]]\nname = "a"\nkind = "openai"\nurl = "http://h"\nheaders = { Authorization = "Bearer x" }\n',
            "carries a credential",
        ),
        ('[[endpoints]]\nname = "a"\nkind = "openai"\nurl = "http://h"\nread_timeout = -1\n', "read_timeout = -1"),
        ('[[endpoints]]\nname = "a"\nkind = "openai"\nurl = "http://h"\nconnect_timeout = nan\n', "connect_timeout"),
        (
            '[[endpoints]]\nname = "a"\nkind = "openai"\nurl = "http://h"\n'
            '[[endpoints]]\nname = "a"\nkind = "ollama"\nurl = "http://g"\n',
            "two [[endpoints]] are called 'a'",
        ),
    ],
)
def test_a_bad_endpoint_is_one_error_naming_the_file_the_entry_and_the_key(entries: str, fragment: str) -> None:
    assert fragment in _config_error(entries)


@pytest.mark.parametrize(
    ("text", "name", "variant", "backend", "tag"),
    [
        ("llama3.1:70b@gpubox", "llama3.1", "70b", "gpubox", "llama3.1:70b"),
        ("meta-llama/Llama-3.1-8B-Instruct@gpubox", "meta-llama/Llama-3.1-8B-Instruct", None, "gpubox", None),
        # llama-server names a model by its file: at an endpoint that is an id, not a path on this machine
        ("SmolLM2-135M-Instruct.Q4_1.gguf@lab", "SmolLM2-135M-Instruct.Q4_1.gguf", None, "lab", None),
        ("/models/x.gguf@lab", "/models/x.gguf", None, "lab", None),
        ("hf.co/org/repo:Q4_K_M@GPUBox", "hf.co/org/repo", "Q4_K_M", "gpubox", "hf.co/org/repo:Q4_K_M"),
        # the built-in kinds and their aliases keep their meaning
        ("smollm2:135m@candle", "smollm2", "135m", "llamacpp", "smollm2:135m"),
    ],
)
def test_model_at_endpoint_keeps_the_id_as_the_server_spells_it(
    text: str, name: str, variant: str | None, backend: str, tag: str | None
) -> None:
    spec = parse_spec(text)
    assert (spec.name, spec.variant, spec.backend, spec.path) == (name, variant, backend, None)
    assert spec.tag == (tag or name)
    assert parse_spec(str(spec)) == spec


def test_a_spec_naming_an_endpoint_that_cannot_exist_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="not a valid endpoint name"):
        parse_spec("smollm2@gpu.box")
    with pytest.raises(InvalidSpec, match="whitespace"):
        parse_spec("my model@gpubox")


async def test_no_key_of_another_server_is_sent_to_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", "the-default-servers-key")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-users-openai-key")
    monkeypatch.setenv("LAB_KEY", "lab-key")
    write_endpoints(
        _home(),
        [
            {"name": "lab", "kind": "ollama", "url": "http://lab:11434"},
            {"name": "lab-keyed", "kind": "ollama", "url": "http://lab:11434", "api_key_env": "LAB_KEY"},
            {"name": "gpubox", "kind": "openai", "url": "http://gpubox:8000"},
        ],
    )
    hub = Hub(load_config())

    def auth(name: str) -> str | None:
        client = hub.backends[name]._client()  # type: ignore[attr-defined]
        if name == "gpubox":
            return client.auth_headers.get("Authorization")  # type: ignore[no-any-return]
        return client._client.headers.get("authorization")  # type: ignore[no-any-return]

    assert auth("lab") is None
    assert auth("lab-keyed") == "Bearer lab-key"
    assert auth("gpubox") != "Bearer sk-the-users-openai-key"


def test_a_key_is_sent_without_the_line_end_of_its_file_and_a_broken_one_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_endpoints(_home(), [{"name": "gpubox", "kind": "openai", "url": "http://h", "api_key_env": "GPUBOX_KEY"}])
    (endpoint,) = load_config().endpoints
    monkeypatch.setenv("GPUBOX_KEY", "sk-SUPERSECRET123\r\n")
    assert endpoint.request_headers()["Authorization"] == "Bearer sk-SUPERSECRET123"
    monkeypatch.setenv("GPUBOX_KEY", "sk-SUPER\nSECRET123")
    with pytest.raises(BackendUnavailable) as err:
        endpoint.request_headers()
    assert "GPUBOX_KEY holds a control character" in str(err.value) and "SECRET" not in str(err.value)
    assert endpoint.has_key() and "SECRET" not in endpoint.key_hint()


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ('url = "http://127.0.0.1:abc/v1"', "has a port that is not a number"),
        ('url = "http://127.0.0.1:99999/v1"', "has a port that is not a number"),
        ('url = "http://h"\nheaders = { "X-Team" = "ml\\nInjected: 1" }', "header 'X-Team' has"),
        ('url = "http://h"\nheaders = { "X Team" = "ml" }', "header 'X Team' has"),
        ('url = "http://h"\nheaders = { "X-Team" = "équipe" }', "header 'X-Team' has"),
        ('url = "http://h"\napi_key_env = "gsk_9fA2kQ7xLm"', "looks like the key itself"),
    ],
)
def test_what_would_break_a_request_is_refused_when_the_config_is_read(entry: str, fragment: str) -> None:
    message = _config_error(f'[[endpoints]]\nname = "a"\nkind = "openai"\n{entry}\n')
    assert fragment in message


def test_openai_is_a_repo_owner_before_a_slash_and_a_free_endpoint_name() -> None:
    spec = parse_spec("openai/gpt-oss-20b")
    assert (spec.name, spec.backend) == ("openai/gpt-oss-20b", None)
    assert parse_spec("gpt-4o-mini@openai").backend == "openai"
    write_endpoints(_home(), [{"name": "openai", "kind": "openai", "url": "https://api.openai.com/v1"}])
    hub = Hub(load_config())
    assert isinstance(hub.backend("openai"), OpenAIBackend)
    # LM Studio names quantizations with '@': only the last '@' says where the model is
    lm = parse_spec("qwen2.5-7b-instruct@q4_k_m@lmstudio")
    assert (lm.tag, lm.backend) == ("qwen2.5-7b-instruct@q4_k_m", "lmstudio")
    with pytest.raises(InvalidSpec, match="more than one '@'"):
        parse_spec("smollm2@q4@llamacpp")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("lab:11434", "ollama"),
        ("http://lab:11434", "ollama"),
        # Ollama's own OpenAI-compatible address, as users copy it: the OpenAI API at /v1
        ("http://lab:11434/v1", "openai"),
        ("http://gpubox:8000/v1", "openai"),
        ("gpubox:8000", "openai"),
    ],
)
def test_endpoint_add_takes_the_kind_the_address_says(url: str, kind: str) -> None:
    from llmspell.endpoint_edit import guess_kind

    assert guess_kind(url)[0] == kind


class _RecordingServer:
    """A real HTTP server on 127.0.0.1 that answers /v1/models with no models and keeps each request's headers."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen: list[dict[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections are kept open, as a real server's are

            def do_GET(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                body = b'{"object": "list", "data": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.seen = seen
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def test_no_openai_setting_of_the_environment_reaches_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setenv("OPENAI_API_KEY", "sk-the-users-openai-key")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-secretcompany")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_abc")
    server = _RecordingServer()
    try:
        write_endpoints(_home(), [{"name": "box", "kind": "openai", "url": server.url}])
        backend = Hub(load_config()).backend("box")
        assert asyncio.run(backend.list_models()) == []
        (headers,) = server.seen
        assert "openai-organization" not in headers and "openai-project" not in headers
        assert "sk-the-users-openai-key" not in headers.get("authorization", "")
    finally:
        server.stop()


def test_one_event_loop_per_call_leaves_no_connections_open() -> None:
    # the scripting API runs each call in a loop of its own: a client kept for a finished loop held its sockets
    import asyncio
    import gc

    import psutil

    server = _RecordingServer()
    try:
        write_endpoints(_home(), [{"name": "box", "kind": "openai", "url": server.url}])
        backend = Hub(load_config()).backend("box")
        asyncio.run(backend.list_models())
        gc.collect()
        before = psutil.Process().num_fds()
        for _ in range(40):
            asyncio.run(backend.list_models())
        gc.collect()
        assert psutil.Process().num_fds() - before < 10
        assert len(server.seen) == 41
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("start", "end"),
    [("# [[endpoints]]", "# Tools from"), ("# [mcp.servers.time]", "# Tools a model"), ("[tools]", "# Blind")],
)
def test_the_commented_examples_of_init_config_load_when_uncommented(tmp_path: Path, start: str, end: str) -> None:
    from llmspell.config import CONFIG_TEMPLATE

    block = CONFIG_TEMPLATE[CONFIG_TEMPLATE.index(start) : CONFIG_TEMPLATE.index(end)]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(line[2:] if line.startswith("# ") else line for line in block.splitlines()))
    config = load_config(path)
    assert config.endpoints or config.mcp_servers or (config.tool_max_steps == 8 and config.tool_root is not None)


def test_a_client_left_by_a_finished_loop_troubles_no_later_loop() -> None:
    # the SDK's client closed itself when collected by scheduling that on the loop running then, where it failed
    # ("Event loop is closed"): the REPL's loop showed it and waited for Enter
    import asyncio
    import gc

    server = _RecordingServer()
    try:
        write_endpoints(_home(), [{"name": "box", "kind": "openai", "url": server.url}])
        hub = Hub(load_config())
        asyncio.run(hub.backend("box").list_models())
        del hub
        problems: list[object] = []

        async def later() -> None:
            asyncio.get_running_loop().set_exception_handler(lambda loop, context: problems.append(context))
            gc.collect()
            for _ in range(5):
                await asyncio.sleep(0)  # let anything the collection scheduled run (and fail) here

        asyncio.run(later())
        assert problems == []
    finally:
        server.stop()
