"""ModelSpec parsing: every valid form, and a clear message for every malformed one."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmspell.errors import InvalidSpec
from llmspell.spec import ModelSpec, canonical_backend, parse_spec


@pytest.mark.parametrize(
    ("text", "name", "variant", "backend"),
    [
        ("smollm2:135m", "smollm2", "135m", None),
        ("local/smollm2:135m", "smollm2", "135m", None),
        ("LOCAL/smollm2", "smollm2", None, None),
        ("tinyllama:Q4_K_M@llamacpp", "tinyllama", "Q4_K_M", "llamacpp"),
        ("qwen2.5:0.5b@ollama", "qwen2.5", "0.5b", "ollama"),
        ("qwen2.5:0.5b@gguf", "qwen2.5", "0.5b", "llamacpp"),
        ("qwen2.5:0.5b@Embedded", "qwen2.5", "0.5b", "llamacpp"),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF",
            "Q4_K_M",
            None,
        ),
        ("user/model:latest@ollama", "user/model", "latest", "ollama"),
        ("  gemma3:270m  ", "gemma3", "270m", None),
    ],
)
def test_valid_specs_parse(text: str, name: str, variant: str | None, backend: str | None) -> None:
    spec = parse_spec(text)
    assert (spec.name, spec.variant, spec.backend, spec.path) == (name, variant, backend, None)


def test_spec_round_trips_through_its_text_form() -> None:
    for text in ["smollm2:135m", "tinyllama:Q4_K_M@llamacpp", "qwen2.5@ollama", "hf.co/a/b:Q8_0@llamacpp"]:
        spec = parse_spec(text)
        assert parse_spec(str(spec)) == spec
        assert str(spec) == text


def test_gguf_path_is_a_spec_for_the_embedded_backend(tmp_path: Path) -> None:
    spec = parse_spec(str(tmp_path / "My Model.Q4_K_M.gguf"))
    assert spec.is_path and spec.backend == "llamacpp"
    assert spec.path == tmp_path / "My Model.Q4_K_M.gguf"
    assert parse_spec("./m.gguf@llamacpp").path == Path("m.gguf")
    assert parse_spec("~/m.gguf").path == Path("~/m.gguf").expanduser()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("smollm2@", "names no backend"),
        ("@llamacpp", "no model"),
        ("a@b@llamacpp", "more than one '@'"),
        ("smollm2:135m@Not An Endpoint", "unknown backend"),
        ("smollm2:135m@gpu.box", "not a valid endpoint name"),
        ("smollm2:", "names no variant"),
        (":135m", "no model name"),
        ("a:b:c", "more than one ':'"),
        ("smol lm2", "whitespace"),
        ("smollm2:13$m", "variant '13$m'"),
        ("smo!lm", "may contain only"),
        ("a//b:1", "empty path segment"),
        ("local/", "no model name"),
        ("./model.bin", "not a .gguf file"),
        ("./model.gguf@ollama", "runs on the llamacpp backend"),
    ],
)
def test_malformed_specs_say_what_is_wrong_and_what_is_valid(text: str, problem: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_spec(text)
    message = str(err.value)
    assert problem in message
    assert "a valid spec looks like smollm2:135m" in message


def test_non_string_spec_is_rejected() -> None:
    with pytest.raises(InvalidSpec, match="must be a string"):
        parse_spec(42)  # type: ignore[arg-type]


def test_backend_aliases_and_with_backend() -> None:
    assert canonical_backend("GGUF") == "llamacpp"
    assert canonical_backend("llama.cpp") == "llamacpp"
    spec = ModelSpec("smollm2", "135m")
    assert str(spec.with_backend("ollama")) == "smollm2:135m@ollama"
    assert spec.tag == "smollm2:135m"
