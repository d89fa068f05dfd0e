"""A bounded pure-Python GGUF header check, run before any file reaches llama.cpp's C parser.

A truncated, corrupt or crafted file gets a ModelFileCorrupt naming the file and the problem, and the
process never crashes. The same pass reads the metadata users see (architecture, context, template).

Every loop is bounded by the file's size and every allocation by a cap below, so a crafted header can
neither exhaust memory nor spin. The file is read through a small sliding buffer, never mapped: a file cut
short while it is mapped kills the process with SIGBUS instead of raising.
"""

from __future__ import annotations

import bisect
import math
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmspell.errors import ModelFileCorrupt, ModelFileMissing

MAGIC = b"GGUF"
#: caps on what a header may claim; real models stay far below them
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_STRING = 64 * 1024**2
#: all metadata text kept in GGUFInfo.metadata together (chat templates are ~10 KB)
MAX_KEPT_TEXT = 64 * 1024**2
#: arrays inside arrays: GGUF allows them, llama.cpp itself refuses them
MAX_DEPTH = 3
#: arrays longer than this are summarised in ``metadata`` instead of kept whole
KEEP_ARRAY = 64
#: llama.cpp's compile-time limits (GGML_MAX_DIMS, GGML_MAX_NAME, LLAMA_MAX_LAYERS, LLAMA_MAX_EXPERTS)
MAX_DIMS = 4
MAX_NAME = 64
MAX_LAYERS = 512
MAX_EXPERTS = 512

#: the longest training context accepted (2**27 tokens, ten times today's longest); 2**32 - 1 made the binding fail
#: with "Array length must be >= 0"
MAX_CONTEXT = 2**27

#: What llama.cpp (0.3.36's build) does with each hyperparameter a crafted file can change, measured by loading a
#: copy of smollm2 with one field changed and asking it one question in a child process. The header check refuses
#: every value marked "refused" before llama.cpp sees the file; the others fail cleanly in llama.cpp itself.
LOAD_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("block_count = 0", "SIGABRT: GGML_ASSERT(hparams.n_layer_all > 0) in llama-model.cpp", "refused"),
    ("block_count > 512", "heap overflow of the per-layer tables (LLAMA_MAX_LAYERS)", "refused"),
    ("layer_norm(_rms)_epsilon NaN or < 0", "SIGABRT: GGML_ASSERT(eps >= 0.0f) in ggml's ops.cpp", "refused"),
    ("layer_norm(_rms)_epsilon infinite or 0", "loads, answers nothing (inf) or divides by zero (0)", "refused"),
    ("rope.freq_base(_swa) 0, < 0, inf or NaN", "loads, answers nothing or garbage", "refused"),
    ("rope.scaling.factor, rope.scale_linear < 0, inf or NaN (0 means unset)", "nonsense positions", "refused"),
    ("context_length 0 or > 2**27", "0: warns and runs untrained; 2**32 - 1: 'Array length must be >= 0'", "refused"),
    ("embedding_length = 0", "llama.cpp refuses to load ('Failed to load model')", "refused, with the field named"),
    ("expert counts", "GGML_ASSERTs on n_expert, n_expert_used, groups (llama-model.cpp)", "refused"),
    ("feed_forward_length, head_count, head_count_kv, rope.dimension_count = 0 or odd", "load fails", "llama.cpp"),
    ("vocab_size, bos/eos/unk/pad token ids out of range", "ignored: loads and answers normally", "llama.cpp"),
)

_HINT = "the file was not changed; re-download it or pull the model again"
_MISSING_HINT = "check the path, or pull the model again (`llmspell model pull ...`)"
_CHUNK = 1 << 20
# the tokens array remembers where every _TOKEN_MARK-th token starts, so BOS/EOS lookups walk few strings
_TOKEN_MARK = 1024
_DEFAULT_ALIGNMENT = 32

# GGUF value types: name, struct code (empty for string and array), smallest encoded size
_VALUE_TYPES: dict[int, tuple[str, str, int]] = {
    0: ("uint8", "B", 1),
    1: ("int8", "b", 1),
    2: ("uint16", "H", 2),
    3: ("int16", "h", 2),
    4: ("uint32", "I", 4),
    5: ("int32", "i", 4),
    6: ("float32", "f", 4),
    7: ("bool", "?", 1),
    8: ("string", "", 8),
    9: ("array", "", 12),
    10: ("uint64", "Q", 8),
    11: ("int64", "q", 8),
    12: ("float64", "d", 8),
}
_UINT32, _INT32, _FLOAT32, _STRING, _ARRAY = 4, 5, 6, 8, 9
_INT_TYPES = frozenset({0, 1, 2, 3, 4, 5, 10, 11})
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from

#: ggml tensor types: name, elements per block, bytes per block (as ggml defines them)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# ggml types that old files may carry but llama.cpp no longer reads; named so the error can say which
_REMOVED_GGML_TYPES = {
    4: "Q4_2",
    5: "Q4_3",
    31: "Q4_0_4_4",
    32: "Q4_0_4_8",
    33: "Q4_0_8_8",
    36: "IQ4_NL_4_4",
    37: "IQ4_NL_4_8",
    38: "IQ4_NL_8_8",
}

#: llama.cpp's general.file_type values (LLAMA_FTYPE_*) as quantization names
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

# file types llama.cpp has retired; kept apart from FILE_TYPES, which discovery matches file names against
_REMOVED_FILE_TYPES = {4: "Q4_1_SOME_F16", 5: "Q4_2", 6: "Q4_3", 33: "Q4_0_4_4", 34: "Q4_0_4_8", 35: "Q4_0_8_8"}


@dataclass(frozen=True)
class ArraySummary:
    """A long metadata array, kept as its element type and length only."""

    type_name: str
    length: int


@dataclass(frozen=True)
class GGUFInfo:
    """What the header of a valid GGUF file says."""

    path: Path
    size_bytes: int
    version: int
    tensor_count: int
    kv_count: int
    alignment: int
    data_offset: int
    metadata: dict[str, Any] = field(repr=False)
    architecture: str | None
    name: str | None
    context_length: int | None
    chat_template: str | None = field(repr=False)
    file_type: int | None
    quantization: str | None
    parameter_count: int
    bos_token: str | None
    eos_token: str | None

    def parameters_label(self) -> str:
        """The parameter count as model cards write it: 135M, 1.1B, 70B."""
        n = self.parameter_count
        if n >= 10**10:
            return f"{n / 1e9:.0f}B"
        if n >= 10**9:
            return f"{n / 1e9:.1f}B".replace(".0B", "B")
        if n >= 10**6:
            return f"{n / 1e6:.0f}M"
        if n >= 10**3:
            return f"{n / 1e3:.0f}K"
        return str(n)


class _Reader:
    """Bounds-checked reads at a file position through a sliding buffer; every overrun is a ModelFileCorrupt."""

    __slots__ = ("base", "buf", "fd", "kept", "path", "pos", "size")

    def __init__(self, fd: int, path: Path, size: int) -> None:
        self.fd = fd
        self.path = path
        self.size = size
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.pos = 0
        self.kept = 0  # bytes of metadata text kept so far

    def corrupt(self, problem: str) -> ModelFileCorrupt:
        return ModelFileCorrupt(f"{self.path} is not a valid GGUF file: {problem}", hint=_HINT)

    def short(self, problem: str) -> ModelFileCorrupt:
        """A claim the rest of the file cannot hold: a cut file and a damaged count look the same."""
        return ModelFileCorrupt(f"{self.path} is truncated or corrupt: {problem}", hint=_HINT)

    def truncated(self, what: str) -> ModelFileCorrupt:
        return ModelFileCorrupt(
            f"{self.path} is truncated: {what} at byte {self.pos:,} runs past the end of the file "
            f"({self.size:,} bytes)",
            hint=_HINT,
        )

    def need(self, n: int, what: str) -> int:
        """Make ``n`` bytes at the position available; return where they start in ``buf``."""
        p = self.pos - self.base
        if 0 <= p and p + n <= len(self.buf):
            return p
        if self.pos + n > self.size:
            raise self.truncated(what)
        want = min(max(n, _CHUNK), self.size - self.pos)
        parts, got = [], 0
        while got < want:
            part = os.pread(self.fd, want - got, self.pos + got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        if got < n:
            raise ModelFileCorrupt(
                f"{self.path} is truncated: it shrank to {self.pos + got:,} bytes while it was checked", hint=_HINT
            )
        self.buf = b"".join(parts)
        self.base = self.pos
        return 0

    def seek(self, pos: int) -> None:
        self.pos = pos

    def u32(self, what: str) -> int:
        p = self.need(4, what)
        self.pos += 4
        return int(_U32(self.buf, p)[0])

    def u64(self, what: str) -> int:
        p = self.need(8, what)
        self.pos += 8
        return int(_U64(self.buf, p)[0])

    def skip(self, n: int, what: str) -> None:
        if self.pos + n > self.size:
            raise self.truncated(what)
        self.pos += n

    def string_length(self, what: str) -> int:
        n = self.u64(f"the length of {what}")
        if n > MAX_STRING:
            raise self.corrupt(f"{what} claims a length of {n:,} bytes (at most {MAX_STRING:,} are accepted)")
        if self.pos + n > self.size:
            raise self.truncated(what)
        return n

    def raw_string(self, what: str) -> bytes:
        n = self.string_length(what)
        p = self.need(n, what)
        self.pos += n
        return self.buf[p : p + n]

    def name(self, what: str) -> str:
        """A key or tensor name: llama.cpp compares them byte for byte, and ours must be valid UTF-8 to show."""
        start = self.pos + 8
        raw = self.raw_string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.corrupt(f"{what} at byte {start:,} is not valid UTF-8 ({raw[:32]!r})") from None

    def keep(self, n: int) -> None:
        """Count ``n`` more bytes of text held in memory against MAX_KEPT_TEXT."""
        self.kept += n
        if self.kept > MAX_KEPT_TEXT:
            raise self.corrupt(f"its metadata strings add up to more than {MAX_KEPT_TEXT:,} bytes")

    def text(self, what: str) -> str:
        """A string value; invalid UTF-8 is replaced, not refused, since llama.cpp reads such values as bytes."""
        raw = self.raw_string(what)
        self.keep(len(raw))
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` strings; the hot loop of the check (vocabularies and merges hold ~50k each)."""
        done = 0
        while done < count:
            buf = self.buf
            blen = len(buf)
            p = self.pos - self.base
            if 0 <= p:
                last = blen - 8
                left = count - done
                walked = 0
                # no MAX_STRING test needed here: a string wholly inside the buffer is shorter than the buffer,
                # and need() never grows the buffer past max(_CHUNK, MAX_STRING)
                while walked < left and p <= last:
                    q = p + 8 + _U64(buf, p)[0]
                    if q > blen:
                        break
                    p = q
                    walked += 1
                done += walked
                self.pos = self.base + p
            if done < count:
                # a string crossing the buffer's end, or one far past it: the checked path refills or skips it
                self.skip(self.string_length(f"{what} element {done:,}"), f"{what} element {done:,}")
                done += 1


def _type_desc(vtype: int, shape: tuple[int, int] | None) -> str:
    if shape is not None:
        return f"an array of {_VALUE_TYPES[shape[0]][0]}"
    return f"a single {_VALUE_TYPES[vtype][0]}"


def _array(r: _Reader, key: str, etype: int, count: int, depth: int, marks: list[int] | None) -> Any:
    """The body of an array whose element type and length were just read."""
    if etype not in _VALUE_TYPES:
        raise r.corrupt(f"array {key!r} has unknown element type {etype}")
    tname, code, size = _VALUE_TYPES[etype]
    if etype == _ARRAY and depth >= MAX_DEPTH:
        raise r.corrupt(f"array {key!r} nests arrays more than {MAX_DEPTH} deep")
    if count * size > r.size - r.pos:
        raise r.short(
            f"array {key!r} claims {count:,} {tname} elements, more than the {r.size - r.pos:,} bytes left can hold"
        )
    keep = count <= KEEP_ARRAY
    if code:
        if not keep:
            r.skip(count * size, f"the elements of {key!r}")
            return ArraySummary(tname, count)
        p = r.need(count * size, f"the elements of {key!r}")
        r.pos += count * size
        return list(struct.unpack_from(f"<{count}{code}", r.buf, p))
    if etype == _STRING:
        if keep:
            return [r.text(f"element {i} of {key!r}") for i in range(count)]
        if marks is None:
            r.skip_strings(count, f"array {key!r}")
        else:
            for start in range(0, count, _TOKEN_MARK):
                marks.append(r.pos)
                r.skip_strings(min(_TOKEN_MARK, count - start), f"array {key!r}")
        return ArraySummary(tname, count)
    items = []
    for i in range(count):
        sub = f"{key}[{i}]"
        inner = _array(r, sub, r.u32(f"the element type of {sub!r}"), r.u64(f"the length of {sub!r}"), depth + 1, None)
        if keep:
            items.append(inner)
    return items if keep else ArraySummary(tname, count)


def _token(r: _Reader, metadata: dict[str, Any], types: dict[str, int], marks: list[int], key: str) -> str | None:
    """The text of the token whose id ``key`` holds, or None when there is no such token."""
    tid = metadata.get(key)
    tokens = metadata.get("tokenizer.ggml.tokens")
    if types.get(key) not in _INT_TYPES or not isinstance(tid, int) or tokens is None:
        return None
    if isinstance(tokens, list):
        return tokens[tid] if 0 <= tid < len(tokens) and isinstance(tokens[tid], str) else None
    if not (isinstance(tokens, ArraySummary) and 0 <= tid < tokens.length and marks):
        return None
    r.seek(marks[tid // _TOKEN_MARK])
    r.skip_strings(tid % _TOKEN_MARK, "array 'tokenizer.ggml.tokens'")
    return r.text(f"token {tid}")


def _check_llama_limits(r: _Reader, metadata: dict[str, Any], types: dict[str, int], shapes: dict[str, Any]) -> None:
    """Refuse values that are valid GGUF but make llama.cpp's loader abort or read and write out of bounds."""
    tokens = shapes.get("tokenizer.ggml.tokens")
    if "tokenizer.ggml.tokens" in types and (tokens is None or tokens[0] != _STRING):
        desc = _type_desc(types["tokenizer.ggml.tokens"], tokens)
        raise r.corrupt(f"tokenizer.ggml.tokens is {desc}, not an array of strings")
    # older llama.cpp builds index scores and token types by token id with no check of length or type
    for key, etype in (("tokenizer.ggml.scores", _FLOAT32), ("tokenizer.ggml.token_type", _INT32)):
        if key not in types:
            continue
        shape = shapes.get(key)
        if shape is None or shape[0] != etype:
            raise r.corrupt(f"{key} is {_type_desc(types[key], shape)}, not an array of {_VALUE_TYPES[etype][0]}")
        if tokens is not None and shape[1] < tokens[1]:
            raise r.corrupt(f"{key} has {shape[1]:,} entries for {tokens[1]:,} tokens")
    for key, allowed in (("tokenizer.ggml.merges", {_STRING}), ("tokenizer.ggml.precompiled_charsmap", {0, 1})):
        shape = shapes.get(key)
        if key in types and (shape is None or shape[0] not in allowed):
            want = " or ".join(_VALUE_TYPES[t][0] for t in sorted(allowed))
            raise r.corrupt(f"{key} is {_type_desc(types[key], shape)}, not an array of {want}")

    arch = metadata.get("general.architecture")
    if types.get("general.architecture") != _STRING or not arch:
        return

    def count(suffix: str) -> int:
        key = f"{arch}.{suffix}"
        return int(metadata[key]) if types.get(key) in _INT_TYPES else 0

    layers = count("block_count")
    if f"{arch}.block_count" in metadata and layers < 1:
        # llama.cpp asserts on it and the whole process aborts
        raise r.corrupt(f"{arch}.block_count is {layers}: a model needs at least one layer")
    if layers > MAX_LAYERS:
        # a larger count overruns llama.cpp's fixed per-layer tables (a known heap overflow)
        raise r.corrupt(f"{arch}.block_count is {layers:,}, more than the {MAX_LAYERS} layers llama.cpp supports")
    if types.get(f"{arch}.embedding_length") in _INT_TYPES and count("embedding_length") < 1:
        raise r.corrupt(f"{arch}.embedding_length is {count('embedding_length')}: a model needs embeddings")
    context_key = f"{arch}.context_length"
    if types.get(context_key) in _INT_TYPES and not 1 <= count("context_length") <= MAX_CONTEXT:
        raise r.corrupt(
            f"{context_key} is {count('context_length'):,}; a model's context is 1 to {MAX_CONTEXT:,} tokens"
        )
    for key in sorted(k for k in metadata if k.startswith(f"{arch}.") and types.get(k) == _FLOAT32):
        value = metadata[key]
        # epsilons and rope frequencies divide and exponentiate: NaN and negatives abort ggml, zero and infinity
        # load and answer nothing or nonsense
        if key.endswith("epsilon") or ".rope.freq_base" in key:
            if not (math.isfinite(value) and value > 0):
                raise r.corrupt(f"{key} is {value}; it must be a finite number above 0")
        # llama.cpp reads a scaling factor of 0 as "not set" (and falls back to the old rope.scale_linear)
        elif key.endswith((".rope.scaling.factor", ".rope.scale_linear")) and not (math.isfinite(value) and value >= 0):
            raise r.corrupt(f"{key} is {value}; it must be a finite number, 0 or above")
    experts, used = count("expert_count"), count("expert_used_count")
    groups, groups_used = count("expert_group_count"), count("expert_group_used_count")
    if experts > MAX_EXPERTS:
        raise r.corrupt(f"{arch}.expert_count is {experts:,}, more than the {MAX_EXPERTS} experts llama.cpp supports")
    # the same conditions llama.cpp asserts on, where a failed assert aborts the whole process
    if used > experts or (experts > 0) != (used > 0):
        raise r.corrupt(f"{arch}.expert_used_count is {used:,} for {experts:,} experts")
    if (experts == 0 and groups != 0) or (experts > 0 and groups >= experts):
        raise r.corrupt(f"{arch}.expert_group_count is {groups:,} for {experts:,} experts")
    if groups > 1 and (experts % groups or not 0 < groups_used < groups):
        raise r.corrupt(
            f"{arch}.expert_group_count is {groups:,} and expert_group_used_count {groups_used:,} "
            f"for {experts:,} experts"
        )


def looks_like_gguf(path: str | Path) -> bool:
    """Cheap test: an existing regular file of at least 24 bytes starting with the GGUF magic."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):
        return False
    try:
        st = os.fstat(fd)
        return stat.S_ISREG(st.st_mode) and st.st_size >= 24 and os.pread(fd, 4, 0) == MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def read_gguf(path: str | Path) -> GGUFInfo:
    """Validate a GGUF file's header, metadata and tensor table against its size; return what it says."""
    path = Path(path)
    try:
        # O_NONBLOCK so that a FIFO given as a model path cannot hang the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ModelFileMissing(f"{path} does not exist", hint=_MISSING_HINT) from None
    except IsADirectoryError:
        raise ModelFileMissing(f"{path} is a folder, not a GGUF file", hint="name the .gguf file inside it") from None
    except PermissionError:
        raise ModelFileMissing(
            f"{path} cannot be read (permission denied)", hint="check the file's permissions"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelFileMissing(f"{path} cannot be opened ({_reason(exc)})", hint=_MISSING_HINT) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ModelFileMissing(f"{path} is a folder, not a GGUF file", hint="name the .gguf file inside it")
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileMissing(f"{path} is not a regular file", hint=_MISSING_HINT)
        return _parse(_Reader(fd, path, st.st_size))
    except OSError as exc:
        raise ModelFileMissing(f"{path} cannot be read ({_reason(exc)})", hint=_MISSING_HINT) from None
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _parse(r: _Reader) -> GGUFInfo:
    path, size = r.path, r.size
    if size == 0:
        raise ModelFileCorrupt(f"{path} is empty (0 bytes), not a GGUF file", hint=_HINT)
    if size < 4:
        raise ModelFileCorrupt(f"{path} is not a GGUF file (it has only {size} bytes)", hint=_HINT)
    p = r.need(4, "the magic number")
    head = r.buf[p : p + 4]
    if head != MAGIC:
        raise ModelFileCorrupt(f"{path} is not a GGUF file (bad magic {head!r})", hint=_HINT)
    r.pos = 4
    version = r.u32("the version")
    if version == 1:
        raise r.corrupt("it is GGUF version 1, too old and unsupported (llama.cpp reads versions 2 and 3)")
    if version not in (2, 3):
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (2, 3):
            raise r.corrupt(f"it is a big-endian GGUF (version {swapped}), and llama.cpp here reads little-endian")
        raise r.corrupt(f"unsupported GGUF version {version} (llama.cpp reads versions 2 and 3)")
    n_tensors = r.u64("the tensor count")
    n_kv = r.u64("the metadata count")
    if n_tensors > MAX_TENSORS:
        raise r.corrupt(f"it claims {n_tensors:,} tensors (at most {MAX_TENSORS:,} are accepted)")
    if n_kv > MAX_KV:
        raise r.corrupt(f"it claims {n_kv:,} metadata entries (at most {MAX_KV:,} are accepted)")
    # smallest encodings: a one-byte key and value (8 + 1 + 4 + 1); a 1-D tensor with an empty name (8 + 4 + 8 + 4 + 8)
    if n_kv * 14 + n_tensors * 32 > size - r.pos:
        raise r.short(
            f"it claims {n_kv:,} metadata entries and {n_tensors:,} tensors, more than its {size:,} bytes can hold"
        )

    metadata: dict[str, Any] = {}
    types: dict[str, int] = {}
    shapes: dict[str, tuple[int, int]] = {}  # element type and length of every array value
    marks: list[int] = []
    for i in range(n_kv):
        key = r.name(f"metadata key {i:,}")
        r.keep(len(key))
        if not key:
            raise r.corrupt(f"metadata key {i:,} is empty")  # llama.cpp asserts on an empty key
        if key in types:
            raise r.corrupt(f"metadata key {key!r} appears twice")
        vtype = r.u32(f"the type of {key!r}")
        if vtype not in _VALUE_TYPES:
            raise r.corrupt(f"metadata key {key!r} has unknown value type {vtype}")
        types[key] = vtype
        if vtype == _STRING:
            metadata[key] = r.text(f"the value of {key!r}")
        elif vtype == _ARRAY:
            etype = r.u32(f"the element type of {key!r}")
            length = r.u64(f"the length of {key!r}")
            shapes[key] = (etype, length)
            want = marks if key == "tokenizer.ggml.tokens" and etype == _STRING else None
            metadata[key] = _array(r, key, etype, length, 1, want)
        else:
            _, code, vsize = _VALUE_TYPES[vtype]
            p = r.need(vsize, f"the value of {key!r}")
            r.pos += vsize
            metadata[key] = struct.unpack_from("<" + code, r.buf, p)[0]

    alignment = _DEFAULT_ALIGNMENT
    if "general.alignment" in types:
        # llama.cpp reads it as a uint32 only; builds without a type check abort the process on anything else
        if types["general.alignment"] != _UINT32:
            desc = _type_desc(types["general.alignment"], shapes.get("general.alignment"))
            raise r.corrupt(f"general.alignment is {desc}, not a uint32")
        alignment = metadata["general.alignment"]
        if alignment == 0 or alignment & (alignment - 1):
            raise r.corrupt(f"general.alignment is {alignment:,}, not a power of two")
    _check_llama_limits(r, metadata, types, shapes)

    names: list[str] = []
    seen: set[str] = set()
    ends: list[int] = []  # where each tensor's data ends, relative to the data section
    expected = 0
    params = 0
    elements_by_type: dict[int, int] = {}
    for i in range(n_tensors):
        name = r.name(f"the name of tensor {i:,}")
        if len(name.encode()) >= MAX_NAME:
            raise r.corrupt(f"tensor {i:,} has a name of {len(name.encode())} bytes (llama.cpp takes at most 63)")
        if name in seen:
            raise r.corrupt(f"tensor {name!r} appears twice")
        n_dims = r.u32(f"the dimension count of tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.corrupt(f"tensor {name!r} has {n_dims:,} dimensions (1 to {MAX_DIMS} are valid)")
        p = r.need(8 * n_dims, f"the shape of tensor {name!r}")
        r.pos += 8 * n_dims
        dims = struct.unpack_from(f"<{n_dims}Q", r.buf, p)
        elements = 1
        for d in dims:
            if d == 0 or d >= 2**63:
                raise r.corrupt(f"tensor {name!r} has an invalid dimension {d:,}")
            elements *= d
        if elements >= 2**63:
            raise r.corrupt(f"tensor {name!r} claims {elements:,} elements, more than llama.cpp can count")
        ttype = r.u32(f"the type of tensor {name!r}")
        if ttype not in GGML_TYPES:
            if ttype in _REMOVED_GGML_TYPES:
                raise r.corrupt(
                    f"tensor {name!r} has ggml type {ttype} ({_REMOVED_GGML_TYPES[ttype]}), which llama.cpp no "
                    "longer reads"
                )
            raise r.corrupt(f"tensor {name!r} has unknown ggml type {ttype}")
        tname, block, bsize = GGML_TYPES[ttype]
        if dims[0] % block:
            raise r.corrupt(
                f"tensor {name!r} of type {tname} has rows of {dims[0]:,} elements, not a multiple of {block}"
            )
        offset = r.u64(f"the data offset of tensor {name!r}")
        if offset % alignment:
            raise r.corrupt(
                f"tensor {name!r} starts at data offset {offset:,}, not a multiple of the alignment {alignment}"
            )
        if offset != expected:
            # llama.cpp requires the tensors packed in order, each padded to the alignment
            raise r.corrupt(
                f"tensor {name!r} starts at data offset {offset:,}, but the tensors before it end at {expected:,}"
            )
        nbytes = elements // block * bsize
        expected = offset + -(-nbytes // alignment) * alignment
        seen.add(name)
        names.append(name)
        ends.append(offset + nbytes)
        params += elements
        elements_by_type[ttype] = elements_by_type.get(ttype, 0) + elements

    data_offset = -(-r.pos // alignment) * alignment
    if ends and data_offset + ends[-1] > size:
        # ends only grow, since the tensors are packed in order: the first one past the end is where the cut is
        first = bisect.bisect_right(ends, size - data_offset)
        raise ModelFileCorrupt(
            f"{path} is truncated: tensor {names[first]!r} data ends at byte {data_offset + ends[first]:,} "
            f"but the file has {size:,} bytes",
            hint=_HINT,
        )

    arch = metadata.get("general.architecture") if types.get("general.architecture") == _STRING else None
    ctx_key = f"{arch}.context_length"
    ftype = metadata.get("general.file_type") if types.get("general.file_type") in _INT_TYPES else None
    quant = None
    if ftype is not None:
        quant = FILE_TYPES.get(ftype) or _REMOVED_FILE_TYPES.get(ftype)
    if quant is None and elements_by_type:
        quant = GGML_TYPES[max(elements_by_type, key=lambda t: elements_by_type[t])][0]
    template = metadata.get("tokenizer.chat_template") if types.get("tokenizer.chat_template") == _STRING else None
    name_value = metadata.get("general.name") if types.get("general.name") == _STRING else None
    return GGUFInfo(
        path=path,
        size_bytes=size,
        version=version,
        tensor_count=n_tensors,
        kv_count=n_kv,
        alignment=alignment,
        data_offset=data_offset,
        metadata=metadata,
        architecture=arch or None,
        name=name_value,
        context_length=metadata[ctx_key] if arch and types.get(ctx_key) in _INT_TYPES else None,
        chat_template=template if template and template.strip() else None,
        file_type=ftype,
        quantization=quant,
        parameter_count=params,
        bos_token=_token(r, metadata, types, marks, "tokenizer.ggml.bos_token_id"),
        eos_token=_token(r, metadata, types, marks, "tokenizer.ggml.eos_token_id"),
    )
