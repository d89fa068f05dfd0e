"""A model file that aborts llama.cpp must not take llmspell down (issue 17): each file version is loaded once in a
child process first, and a crash there refuses the file, naming the signal and llama.cpp's assert."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import gguf
import pytest
from helpers import collect, smollm2_file

from llmspell import ggufcheck
from llmspell.backends import _probe
from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.errors import ModelFileCorrupt
from llmspell.spec import parse_spec
from llmspell.types import Message, Options


def _aborting_copy(folder: Path) -> Path:
    """The real smollm2 with an RMS-norm epsilon of NaN: llama.cpp aborts on it (GGML_ASSERT(eps >= 0.0f))."""
    path = folder / "aborts.gguf"
    path.write_bytes(smollm2_file().read_bytes())
    reader = gguf.GGUFReader(str(path), "r+")
    field = reader.fields["llama.attention.layer_norm_rms_epsilon"]
    field.parts[field.data[0]][0] = float("nan")
    del reader
    return path


@pytest.fixture(autouse=True)
def fresh_process_memory() -> None:
    """Each test starts as a new process would: the verdicts this pytest process already holds are forgotten."""
    _probe._known.clear()


def _verdicts() -> dict[str, str]:
    return json.loads((Path(os.environ["LLMSPELL_HOME"]) / "engine_checks.json").read_text())  # type: ignore[no-any-return]


def test_a_file_that_aborts_the_engine_is_refused_by_a_child_and_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _probe.check_loads(smollm2_file())  # a good file passes
    bad = _aborting_copy(tmp_path)
    with pytest.raises(ModelFileCorrupt) as err:
        _probe.check_loads(bad)
    message = str(err.value)
    assert "aborts.gguf crashed the engine" in message and "SIGABRT" in message and "GGML_ASSERT" in message
    verdicts = _verdicts()
    assert next(v for k, v in verdicts.items() if "aborts.gguf" in k).startswith("SIGABRT")
    assert any("SmolLM2" in k and v == "ok" for k, v in verdicts.items())

    # the verdict is kept: neither this process nor the next one starts a child for that file version again
    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("a child was started for a file already checked")

    monkeypatch.setattr(subprocess, "run", no_child)
    _probe._known.clear()  # as a new process would start: only the verdicts file remains
    with pytest.raises(ModelFileCorrupt, match="SIGABRT"):
        _probe.check_loads(bad)
    _probe.check_loads(smollm2_file())


def test_a_changed_file_is_checked_again(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(smollm2_file().read_bytes())
    _probe.check_loads(path)
    bad = _aborting_copy(tmp_path)
    os.replace(bad, path)  # the same name, other bytes: another version of the file
    with pytest.raises(ModelFileCorrupt, match="crashed the engine"):
        _probe.check_loads(path)


@pytest.fixture
def header_check_blind_to_epsilon(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in for an assert the header check does not know yet: it stops refusing a NaN epsilon, so the file
    reaches the engine as an unknown crash would (the crash itself is llama.cpp's own, in the child)."""
    real = ggufcheck._check_llama_limits

    def blind(r: object, metadata: dict[str, object], types: object, shapes: object) -> None:
        real(r, {k: v for k, v in metadata.items() if not k.endswith("layer_norm_rms_epsilon")}, types, shapes)  # type: ignore[arg-type]

    monkeypatch.setattr(ggufcheck, "_check_llama_limits", blind)


async def test_the_backend_refuses_the_crashing_file_and_keeps_answering(
    tmp_path: Path, backend: LlamaCppBackend, header_check_blind_to_epsilon: None
) -> None:
    bad = _aborting_copy(tmp_path)
    with pytest.raises(ModelFileCorrupt, match=r"crashed the engine.*SIGABRT"):
        await collect(backend.chat(parse_spec(str(bad)), [Message("user", "hi")], Options(max_tokens=4)))
    # this process is alive and the same backend answers with a good model
    text, _ = await collect(
        backend.chat(
            parse_spec("smollm2:135m"), [Message("user", "Name the capital of France.")], Options(temperature=0)
        )
    )
    assert "Paris" in text


@pytest.mark.parametrize("schema", [{"enum": []}, {"type": "object", "properties": {"a": {"anyOf": []}}}])
async def test_a_format_no_answer_can_match_is_refused_before_the_engine_sees_its_grammar(
    backend: LlamaCppBackend, schema: dict[str, object]
) -> None:
    # llama.cpp cannot parse the grammar of such a schema, and the engine died on it with SIGSEGV
    from llmspell.errors import InvalidOptions

    with pytest.raises(InvalidOptions, match="no answer can match"):
        await collect(backend.chat(parse_spec("smollm2:135m"), [Message("user", "hi")], Options(format=schema)))
    text, _ = await collect(
        backend.chat(parse_spec("smollm2:135m"), [Message("user", "Say hi.")], Options(max_tokens=4))
    )
    assert text
