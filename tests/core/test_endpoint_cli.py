"""`llmspell endpoint add/list/rm/test` as a user runs them: the real command in a subprocess, editing the real
config.toml of the test's LLMSPELL_HOME, and testing real servers on 127.0.0.1 (`llmspell serve`, and
llama-cpp-python's own OpenAI server with an API key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from peers import PEER_MODEL, LlamaCppServer, llama_cpp_server
from server.serveproc import ServeProcess, free_port, serve

Cli = Callable[..., subprocess.CompletedProcess[str]]

#: a config a user wrote by hand: comments, odd spacing and tables that have nothing to do with endpoints
HAND_WRITTEN = """\
# my settings -- keep this comment
default_model = "smollm2:135m"   # the small one

[llamacpp]
threads    = 2  # two cores here
# gpu_layers = 0   (no GPU on this box)

[arena]
size = 2
"""
LLAMACPP_TABLE = """\
[llamacpp]
threads    = 2  # two cores here
# gpu_layers = 0   (no GPU on this box)
"""
#: a key as a user might paste it by mistake where the variable's name belongs
PASTED_KEY = "sk-proj-4f9Qz8XbT2mLw7RkV1nD3hJc"


@pytest.fixture
def cli() -> Cli:
    """Run ``llmspell ARGS`` in a subprocess with the test's environment (as tests/core/test_cli.py does)."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "llmspell", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, **(env or {})},
        )
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
        return proc

    return run


@pytest.fixture
def config() -> Path:
    """The test's config.toml (not written yet)."""
    home = Path(os.environ["LLMSPELL_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    return home / "config.toml"


def _error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_add_list_rm_round_trip_keeps_the_hand_written_file(cli: Cli, config: Path) -> None:
    config.write_text(HAND_WRITTEN)
    key_env = {"GPUBOX_API_KEY": "sk-the-real-secret-key-0123456789"}
    added = cli(
        "endpoint",
        "add",
        "gpubox",
        "http://gpubox:8000",
        "--key-env",
        "GPUBOX_API_KEY",
        "--header",
        "X-Team=ml",
        "--models",
        "llama3*",
        "qwen*",
        "--read-timeout",
        "120",
        env=key_env,
    )
    assert added.returncode == 0, added.stderr
    assert "kind: openai" in added.stdout  # which kind was picked, said
    assert "llmspell run MODEL@gpubox" in added.stdout
    text = config.read_text()
    assert text.startswith(HAND_WRITTEN)  # every byte the user wrote, where it was
    assert 'api_key_env = "GPUBOX_API_KEY"' in text and 'url = "http://gpubox:8000/v1"' in text
    assert "sk-the-real-secret" not in text

    # a second one, this time Ollama's port: taken for an Ollama server, and said so
    lab = cli("endpoint", "add", "lab", "http://lab.local:11434")
    assert lab.returncode == 0, lab.stderr
    assert "kind: ollama" in lab.stdout

    listed = cli("endpoint", "list", env=key_env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"gpubox", "lab"}
    assert "openai" in rows["gpubox"] and "http://gpubox:8000/v1" in rows["gpubox"]
    assert "GPUBOX_API_KEY (set)" in rows["gpubox"] and "llama3*, qwen*" in rows["gpubox"]
    assert "ollama" in rows["lab"] and "http://lab.local:11434" in rows["lab"]
    assert "sk-the-real-secret" not in listed.stdout

    as_json = json.loads(cli("endpoint", "list", "--json").stdout)
    gpubox = next(e for e in as_json["endpoints"] if e["name"] == "gpubox")
    assert gpubox["api_key_env"] == "GPUBOX_API_KEY" and gpubox["api_key_set"] is False  # not exported here
    assert gpubox["models"] == ["llama3*", "qwen*"] and gpubox["read_timeout"] == 120 and gpubox["enabled"]

    removed = cli("endpoint", "rm", "gpubox")
    assert removed.returncode == 0, removed.stderr
    text = config.read_text()
    assert "gpubox" not in text and 'name = "lab"' in text
    assert "# my settings -- keep this comment" in text and LLAMACPP_TABLE in text
    assert cli("endpoint", "rm", "lab").returncode == 0
    assert config.read_text() == HAND_WRITTEN


def test_comments_between_entries_stay_when_one_is_removed(cli: Cli, config: Path) -> None:
    config.write_text(
        HAND_WRITTEN
        + '\n[[endpoints]]\nname = "one"\nkind = "openai"\nurl = "http://one:8000/v1"\n'
        + "\n# the lab's box; ask Sam for a key\n"
        + '[[endpoints]]\nname = "two"\nkind = "openai"\nurl = "http://two:8000/v1"\n'
    )
    assert cli("endpoint", "rm", "one").returncode == 0
    text = config.read_text()
    assert text == HAND_WRITTEN + "\n# the lab's box; ask Sam for a key\n" + (
        '[[endpoints]]\nname = "two"\nkind = "openai"\nurl = "http://two:8000/v1"\n'
    )


def test_a_name_that_exists_is_refused_unless_replace(cli: Cli, config: Path) -> None:
    config.write_text(HAND_WRITTEN)
    assert cli("endpoint", "add", "gpubox", "http://gpubox:8000/v1").returncode == 0
    before = config.read_bytes()

    again = cli("endpoint", "add", "gpubox", "http://elsewhere:9000/v1")
    assert again.returncode == 1
    assert "already an endpoint 'gpubox'" in again.stderr and "--replace" in again.stderr
    assert config.read_bytes() == before

    replaced = cli("endpoint", "add", "gpubox", "http://elsewhere:9000/v1", "--replace", "--kind", "openai")
    assert replaced.returncode == 0, replaced.stderr
    assert "replaced endpoint gpubox" in replaced.stdout
    text = config.read_text()
    assert text.count("[[endpoints]]") == 1 and "http://elsewhere:9000/v1" in text and "gpubox:8000" not in text
    assert text.startswith(HAND_WRITTEN)


def test_a_reserved_name_is_refused(cli: Cli, config: Path) -> None:
    proc = cli("endpoint", "add", "llamacpp", "http://gpubox:8000/v1")
    assert proc.returncode == 1
    assert _error_lines(proc)[0].startswith("error: 'llamacpp' is a backend's name")
    assert not config.exists()


def test_a_key_where_the_variable_name_belongs_is_refused_and_nothing_written(cli: Cli, config: Path) -> None:
    config.write_text(HAND_WRITTEN)
    proc = cli("endpoint", "add", "gpubox", "http://gpubox:8000/v1", "--key-env", PASTED_KEY)
    assert proc.returncode == 1
    assert "must never be in the config file" in proc.stderr
    assert PASTED_KEY not in proc.stderr + proc.stdout  # not even echoed back
    assert config.read_text() == HAND_WRITTEN


def test_invalid_toml_is_a_clear_error_and_left_untouched(cli: Cli, config: Path) -> None:
    broken = HAND_WRITTEN + "\n[[endpoints]\nname = 'half written\n"
    config.write_text(broken)
    for args in (("add", "gpubox", "http://gpubox:8000/v1"), ("rm", "gpubox"), ("list",)):
        proc = cli("endpoint", *args)
        assert proc.returncode == 1, args
        lines = _error_lines(proc)
        assert lines[0].startswith(f"error: {config} is not valid TOML"), proc.stderr
        assert len(lines) <= 2
        assert config.read_text() == broken
    assert [p.name for p in config.parent.iterdir()] == ["config.toml"]  # no temporary file left behind


def test_rm_of_an_unknown_name_lists_the_names(cli: Cli, config: Path) -> None:
    config.write_text(HAND_WRITTEN)
    assert cli("endpoint", "add", "gpubox", "http://gpubox:8000/v1").returncode == 0
    proc = cli("endpoint", "rm", "gpubxo")
    assert proc.returncode == 1
    assert _error_lines(proc) == [f"error: there is no endpoint 'gpubxo' in {config}", "  endpoints there: gpubox"]


def test_entries_written_as_an_inline_list_are_edited_too(cli: Cli, config: Path) -> None:
    inline = 'endpoints = [{ name = "a", kind = "openai", url = "http://a:1/v1" }]\n\n'
    config.write_text(HAND_WRITTEN.replace("[llamacpp]", inline + "[llamacpp]"))
    assert cli("endpoint", "add", "b", "http://b:2/v1").returncode == 0
    assert cli("endpoint", "rm", "a").returncode == 0
    listed = json.loads(cli("endpoint", "list", "--json").stdout)
    assert [(e["name"], e["url"]) for e in listed["endpoints"]] == [("b", "http://b:2/v1")]
    assert LLAMACPP_TABLE in config.read_text()


# ----- endpoint test, against real servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def llmspell_server(tmp_path_factory: pytest.TempPathFactory, shared_models: Path) -> Iterator[ServeProcess]:
    """`llmspell serve`: the OpenAI API at /v1 and the Ollama API at /."""
    yield from serve(tmp_path_factory, shared_models, None)


@pytest.fixture(scope="module")
def keyed_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    """llama-cpp-python's own OpenAI server, which wants the key "secret"."""
    yield from llama_cpp_server(tmp_path_factory.mktemp("peer"), api_key="secret")


def test_endpoint_test_reaches_llmspell_serve_and_gets_an_answer(
    cli: Cli, config: Path, llmspell_server: ServeProcess
) -> None:
    assert cli("endpoint", "add", "local", llmspell_server.url, "--kind", "openai").returncode == 0
    proc = cli("endpoint", "test", "local", "--model", "smollm2:135m")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"endpoint local: reachable (openai, {llmspell_server.url}/v1)" in out
    assert "round trip:" in out and "server:      llmspell serve" in out
    model_lines = [line.strip() for line in out.splitlines() if line.startswith("    ")]
    assert "smollm2:135m" in model_lines
    answer = next(line for line in out.splitlines() if line.strip().startswith("answer (smollm2:135m):"))
    assert answer.split(":", 1)[1].strip() not in ("''", '""')
    assert "TTFT" in out and "tok/s" in out

    # the same server through its Ollama API, as another endpoint of kind ollama
    assert cli("endpoint", "add", "local-ollama", llmspell_server.url, "--kind", "ollama").returncode == 0
    proc = cli("endpoint", "test", "local-ollama")
    assert proc.returncode == 0, proc.stderr
    assert "endpoint local-ollama: reachable (ollama" in proc.stdout and "smollm2:135m" in proc.stdout


def test_endpoint_test_of_a_closed_port_is_one_line_naming_it(cli: Cli, config: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert cli("endpoint", "add", "nowhere", url).returncode == 0
    proc = cli("endpoint", "test", "nowhere")
    assert proc.returncode == 1
    lines = _error_lines(proc)
    assert lines[0] == f"error: endpoint nowhere ({url}) is not reachable (listing models)"
    assert len(lines) == 2 and "[[endpoints]] nowhere" in lines[1]
    assert "reachable (" not in proc.stdout


def test_endpoint_test_with_an_unset_key_variable_names_it(
    cli: Cli, config: Path, keyed_peer: LlamaCppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PEER_TEST_KEY", raising=False)
    assert cli("endpoint", "add", "peer", keyed_peer.url, "--key-env", "PEER_TEST_KEY").returncode == 0
    proc = cli("endpoint", "test", "peer")
    assert proc.returncode == 1
    lines = _error_lines(proc)
    assert lines[0].startswith(f"error: endpoint peer ({keyed_peer.url}/v1) refused access (401)"), proc.stderr
    assert "PEER_TEST_KEY is not set" in lines[1]

    # with the key exported, the same endpoint works; the key itself is never printed
    ok = cli("endpoint", "test", "peer", env={"PEER_TEST_KEY": "secret"})
    assert ok.returncode == 0, ok.stderr
    assert "key:         PEER_TEST_KEY (sent)" in ok.stdout and PEER_MODEL in ok.stdout
    assert "secret" not in ok.stdout + ok.stderr
