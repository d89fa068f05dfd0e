"""The GGUF header check: real files parse; damaged and crafted files get a clear error and stay unchanged."""

from __future__ import annotations

import functools
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import smollm2_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmspell.errors import ModelFileCorrupt, ModelFileMissing
from llmspell.ggufcheck import ArraySummary, looks_like_gguf, read_gguf


def tiny_gguf(path: Path, *, template: str | None = "{{ messages }}", tensors: int = 2) -> Path:
    """A small valid GGUF written by the reference writer (the `gguf` package)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(256)
    w.add_file_type(0)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a", "b"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    if template:
        w.add_chat_template(template)
    for i in range(tensors):
        w.add_tensor(f"t{i}", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_real_smollm2_file_reports_its_facts() -> None:
    info = read_gguf(smollm2_file())
    assert info.architecture == "llama" and info.quantization == "Q4_1"
    assert info.context_length == 8192 and info.parameters_label() == "135M"
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert isinstance(info.metadata["tokenizer.ggml.tokens"], ArraySummary)
    assert info.metadata["tokenizer.ggml.tokens"].length == 49152
    assert info.tensor_count == 272 and info.version == 3


def test_tiny_file_written_by_the_reference_writer(tmp_path: Path) -> None:
    info = read_gguf(tiny_gguf(tmp_path / "t.gguf"))
    assert info.name == "tiny" and info.context_length == 256 and info.quantization == "F32"
    assert info.parameter_count == 128 and info.bos_token == "<s>" and info.eos_token == "</s>"
    assert info.metadata["tokenizer.ggml.tokens"] == ["<s>", "</s>", "a", "b"]
    assert looks_like_gguf(tmp_path / "t.gguf")
    no_template = read_gguf(tiny_gguf(tmp_path / "n.gguf", template=None))
    assert no_template.chat_template is None


def _expect_corrupt(path: Path, fragment: str) -> None:
    before = path.read_bytes()
    with pytest.raises(ModelFileCorrupt) as err:
        read_gguf(path)
    assert str(path) in str(err.value) and fragment in str(err.value)
    assert "re-download" in str(err.value)
    assert path.read_bytes() == before, "the check never writes"


def test_missing_empty_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFileMissing, match="does not exist"):
        read_gguf(tmp_path / "none.gguf")
    with pytest.raises(ModelFileMissing, match="folder"):
        read_gguf(tmp_path)
    (tmp_path / "e.gguf").write_bytes(b"")
    _expect_corrupt(tmp_path / "e.gguf", "empty")
    assert not looks_like_gguf(tmp_path / "e.gguf")


def test_wrong_magic_and_versions(tmp_path: Path) -> None:
    good = tiny_gguf(tmp_path / "g.gguf").read_bytes()
    (tmp_path / "zip.gguf").write_bytes(b"PK\x03\x04" + good[4:])
    _expect_corrupt(tmp_path / "zip.gguf", "not a GGUF file")
    (tmp_path / "v1.gguf").write_bytes(good[:4] + struct.pack("<I", 1) + good[8:])
    _expect_corrupt(tmp_path / "v1.gguf", "version 1")
    (tmp_path / "v99.gguf").write_bytes(good[:4] + struct.pack("<I", 99) + good[8:])
    _expect_corrupt(tmp_path / "v99.gguf", "unsupported GGUF version 99")


def test_every_truncation_of_a_small_file_is_caught(tmp_path: Path) -> None:
    good = tiny_gguf(tmp_path / "g.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    for n in [*range(1, 200, 7), *range(200, len(good), max(1, len(good) // 40)), len(good) - 1]:
        cut.write_bytes(good[:n])
        with pytest.raises(ModelFileCorrupt) as err:
            read_gguf(cut)
        assert str(cut) in str(err.value)


def test_truncated_real_model_names_the_tensor(tmp_path: Path) -> None:
    cut = tmp_path / "smol.gguf"
    with smollm2_file().open("rb") as f:
        cut.write_bytes(f.read(40_000_000))
    _expect_corrupt(cut, "is truncated: tensor 'blk.")


@functools.cache
def _seed_bytes() -> bytes:
    """One valid file for the fuzz test to damage, written once."""
    return tiny_gguf(Path(tempfile.mkdtemp()) / "seed.gguf").read_bytes()


def _header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv_u32(key: str, value: int) -> bytes:
    return _s(key) + struct.pack("<II", 4, value)


def _tensor(name: str, dims: list[int], ggml_type: int, offset: int) -> bytes:
    return (
        _s(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def _file(tmp_path: Path, name: str, body: bytes, pad: int = 4096) -> Path:
    path = tmp_path / name
    path.write_bytes(body + b"\0" * pad)
    return path


@pytest.mark.parametrize(
    ("name", "body", "fragment"),
    [
        ("tensors.gguf", _header(10**12, 0), "tensors (at most"),
        ("kvs.gguf", _header(0, 10**9), "metadata entries (at most"),
        ("string.gguf", _header(0, 1) + struct.pack("<Q", 2**40), "claims a length"),
        ("array.gguf", _header(0, 1) + _s("k") + struct.pack("<IIQ", 9, 4, 2**50), "claims"),
        ("vtype.gguf", _header(0, 1) + _s("k") + struct.pack("<I", 77), "unknown value type 77"),
        ("etype.gguf", _header(0, 1) + _s("k") + struct.pack("<IIQ", 9, 55, 1), "unknown element type 55"),
        ("utf8.gguf", _header(0, 1) + _s(b"\xff\xfe") + struct.pack("<II", 4, 1), "not valid UTF-8"),
        ("dup.gguf", _header(0, 2) + _kv_u32("a", 1) + _kv_u32("a", 2), "appears twice"),
        ("align.gguf", _header(0, 1) + _kv_u32("general.alignment", 24), "not a power of two"),
        ("dims0.gguf", _header(1, 0) + _tensor("w", [], 0, 0), "has 0 dimensions"),
        ("dims5.gguf", _header(1, 0) + _tensor("w", [1, 1, 1, 1, 1], 0, 0), "has 5 dimensions"),
        ("dimzero.gguf", _header(1, 0) + _tensor("w", [0], 0, 0), "invalid dimension"),
        ("gtype.gguf", _header(1, 0) + _tensor("w", [32], 99, 0), "unknown ggml type 99"),
        ("unaligned.gguf", _header(1, 0) + _tensor("w", [32], 0, 3), "not a multiple of the alignment"),
        ("past.gguf", _header(1, 0) + _tensor("w", [32], 0, 10**9), "is truncated: tensor 'w'"),
        ("twice.gguf", _header(2, 0) + _tensor("w", [8], 0, 0) + _tensor("w", [8], 0, 32), "appears twice"),
        ("block.gguf", _header(1, 0) + _tensor("w", [33], 2, 0), "not a multiple of 32"),
    ],
)
def test_crafted_headers_are_refused(tmp_path: Path, name: str, body: bytes, fragment: str) -> None:
    _expect_corrupt(_file(tmp_path, name, body), fragment)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_never_escapes_as_another_exception(tmp_path: Path, data: st.DataObject) -> None:
    good = bytearray(_seed_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, min(len(good) - 1, 600)))
        good[pos] = data.draw(st.integers(0, 255))
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(good))
    try:
        read_gguf(path)
    except ModelFileCorrupt:
        pass  # the only failure allowed: anything else (IndexError, MemoryError, struct.error) fails the test
