"""A bounded pure-Python GGUF header check, run before any file reaches llama.cpp's C parser.

A truncated, corrupt or crafted file gets a ModelFileCorrupt naming the file and the problem, and the
process never crashes. The same pass reads the metadata users see (architecture, context, template).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmspell.errors import ModelFileCorrupt, ModelFileMissing

MAGIC = b"GGUF"
_HINT = "the file was not changed; re-download it or pull the model again"
MAX_TENSORS = 1_000_000
MAX_KV = 100_000
MAX_STRING = 64 * 1024**2
MAX_DIMS = 4
MAX_DEPTH = 4
#: arrays longer than this are summarised in ``metadata`` instead of kept whole
KEEP_ARRAY = 64

# GGUF value types: struct format (None for string/array) and size
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9
_TYPE_NAMES = {
    0: "uint8",
    1: "int8",
    2: "uint16",
    3: "int16",
    4: "uint32",
    5: "int32",
    6: "float32",
    7: "bool",
    8: "string",
    9: "array",
    10: "uint64",
    11: "int64",
    12: "float64",
}

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
        """The parameter count as model cards write it: 135M, 1.1B."""
        n = self.parameter_count
        if n >= 1e9:
            return f"{n / 1e9:.1f}B".replace(".0B", "B")
        if n >= 1e6:
            return f"{n / 1e6:.0f}M"
        return f"{n / 1e3:.0f}K"


class _Reader:
    """Bounds-checked reads over the mapped file; every overrun is a ModelFileCorrupt."""

    def __init__(self, buf: Any, size: int, path: Path) -> None:
        self.buf = buf
        self.size = size
        self.path = path
        self.pos = 0

    def fail(self, problem: str) -> ModelFileCorrupt:
        return ModelFileCorrupt(f"{self.path} is not a valid GGUF file: {problem}", hint=_HINT)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise ModelFileCorrupt(
                f"{self.path} is truncated or corrupt: {what} needs {n:,} bytes at offset {self.pos:,} "
                f"but the file has {self.size:,} bytes",
                hint=_HINT,
            )

    def scalar(self, fmt: str, size: int, what: str) -> Any:
        self.need(size, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar("<I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.scalar("<Q", 8, what))

    def string(self, what: str, keep: bool = True) -> str | None:
        n = self.u64(f"the length of {what}")
        if n > MAX_STRING:
            raise self.fail(f"{what} claims a length of {n:,} bytes (more than {MAX_STRING:,})")
        self.need(n, what)
        start = self.pos
        self.pos += n
        if not keep:
            return None
        try:
            return bytes(self.buf[start : start + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at offset {start:,} is not valid UTF-8") from None


def _value(r: _Reader, vtype: int, key: str, depth: int) -> Any:
    if vtype in _SCALARS:
        fmt, size = _SCALARS[vtype]
        return r.scalar(fmt, size, f"the value of {key!r}")
    if vtype == _STRING:
        return r.string(f"the value of {key!r}")
    if vtype != _ARRAY:
        raise r.fail(f"key {key!r} has unknown value type {vtype}")
    if depth >= MAX_DEPTH:
        raise r.fail(f"key {key!r} nests arrays deeper than {MAX_DEPTH}")
    etype = r.u32(f"the element type of {key!r}")
    count = r.u64(f"the length of {key!r}")
    if etype not in _SCALARS and etype not in (_STRING, _ARRAY):
        raise r.fail(f"array {key!r} has unknown element type {etype}")
    min_size = _SCALARS[etype][1] if etype in _SCALARS else (8 if etype == _STRING else 12)
    if count * min_size > r.size - r.pos:
        raise r.fail(f"array {key!r} claims {count:,} elements, more than the rest of the file can hold")
    if etype in _SCALARS:
        fmt, size = _SCALARS[etype]
        if count <= KEEP_ARRAY:
            return [r.scalar(fmt, size, f"an element of {key!r}") for _ in range(count)]
        r.need(count * size, f"the elements of {key!r}")
        r.pos += count * size
        return ArraySummary(_TYPE_NAMES[etype], count)
    keep = count <= KEEP_ARRAY
    items = []
    for i in range(count):
        if etype == _STRING:
            s = r.string(f"element {i} of {key!r}", keep=keep)
            if keep:
                items.append(s)
        else:
            items.append(_value(r, _ARRAY, f"{key}[{i}]", depth + 1))
    return items if keep else ArraySummary(_TYPE_NAMES[etype], count)


def looks_like_gguf(path: str | Path) -> bool:
    """Cheap test: an existing file of at least 24 bytes starting with the GGUF magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return False
    return len(head) == 24 and head[:4] == MAGIC


def read_gguf(path: str | Path) -> GGUFInfo:
    """Validate a GGUF file's header, metadata and tensor table against its size; return what it says."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise ModelFileCorrupt(f"{path} is empty (0 bytes), not a GGUF file", hint=_HINT)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _parse(mm, size, path)
    except FileNotFoundError:
        raise ModelFileMissing(f"{path} does not exist", hint="check the path, or pull the model again") from None
    except IsADirectoryError:
        raise ModelFileMissing(f"{path} is a folder, not a GGUF file", hint="name the .gguf file inside it") from None
    except PermissionError:
        raise ModelFileMissing(
            f"{path} cannot be read (permission denied)", hint="check the file's permissions"
        ) from None


def _parse(buf: Any, size: int, path: Path) -> GGUFInfo:
    r = _Reader(buf, size, path)
    r.need(4, "the magic number")
    magic = bytes(buf[0:4])
    if magic != MAGIC:
        raise ModelFileCorrupt(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')", hint=_HINT)
    r.pos = 4
    version = r.u32("the version")
    if version == 1:
        raise ModelFileCorrupt(
            f"{path} is GGUF version 1, too old for llama.cpp",
            hint="the file was not changed; re-download a current GGUF of this model or convert it again",
        )
    if version not in (2, 3):
        raise r.fail(f"unsupported GGUF version {version} (llama.cpp reads versions 2 and 3)")
    n_tensors = r.u64("the tensor count")
    n_kv = r.u64("the metadata count")
    if n_tensors > MAX_TENSORS:
        raise r.fail(f"it claims {n_tensors:,} tensors (at most {MAX_TENSORS:,} are accepted)")
    if n_kv > MAX_KV:
        raise r.fail(f"it claims {n_kv:,} metadata entries (at most {MAX_KV:,} are accepted)")
    if n_kv * 13 + n_tensors * 24 > size:
        raise r.fail(f"it claims {n_kv:,} metadata entries and {n_tensors:,} tensors, more than {size:,} bytes hold")

    metadata: dict[str, Any] = {}
    tokens_at = -1  # where the vocabulary array starts, to look up the BOS/EOS strings afterwards
    for i in range(n_kv):
        key = r.string(f"metadata key {i}")
        assert key is not None
        if key in metadata:
            raise r.fail(f"metadata key {key!r} appears twice")
        vtype = r.u32(f"the type of {key!r}")
        if key == "tokenizer.ggml.tokens" and vtype == _ARRAY:
            tokens_at = r.pos
        metadata[key] = _value(r, vtype, key, 0)

    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise r.fail(f"general.alignment is {alignment!r}, not a power of two")

    tensors: list[tuple[str, int, int]] = []
    names: set[str] = set()
    params = 0
    type_bytes: dict[int, int] = {}
    for i in range(n_tensors):
        name = r.string(f"the name of tensor {i}")
        assert name is not None
        if name in names:
            raise r.fail(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims = r.u32(f"the dimension count of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} are valid)")
        elements = 1
        dims = []
        for _ in range(n_dims):
            d = r.u64(f"a dimension of {name!r}")
            if d == 0 or d > 2**40:
                raise r.fail(f"tensor {name!r} has an invalid dimension {d:,}")
            dims.append(d)
            elements *= d
        if elements > 2**48:
            raise r.fail(f"tensor {name!r} claims {elements:,} elements")
        ttype = r.u32(f"the type of {name!r}")
        if ttype not in GGML_TYPES:
            raise r.fail(f"tensor {name!r} has unknown ggml type {ttype}")
        tname, block, bsize = GGML_TYPES[ttype]
        if dims[0] % block:
            raise r.fail(f"tensor {name!r} of type {tname} has a row of {dims[0]} elements, not a multiple of {block}")
        offset = r.u64(f"the data offset of {name!r}")
        if offset % alignment:
            raise r.fail(f"tensor {name!r} starts at offset {offset:,}, not a multiple of the alignment {alignment}")
        nbytes = elements // block * bsize
        tensors.append((name, offset, nbytes))
        params += elements
        type_bytes[ttype] = type_bytes.get(ttype, 0) + nbytes

    data_offset = -(-r.pos // alignment) * alignment
    for name, offset, nbytes in tensors:
        end = data_offset + offset + nbytes
        if end > size:
            raise ModelFileCorrupt(
                f"{path} is truncated: tensor {name!r} ends at byte {end:,} but the file has {size:,} bytes",
                hint=_HINT,
            )
    if not tensors and data_offset > size:
        raise r.fail("the header runs past the end of the file")

    arch = metadata.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    ctx = metadata.get(f"{arch}.context_length") if arch else None
    ftype = metadata.get("general.file_type")
    quant = FILE_TYPES.get(ftype) if isinstance(ftype, int) else None
    if quant is None and type_bytes:
        quant = GGML_TYPES[max(type_bytes, key=lambda t: type_bytes[t])][0]
    template = metadata.get("tokenizer.chat_template")

    def token(key: str) -> str | None:
        tid = metadata.get(key)
        if not isinstance(tid, int):
            return None
        tokens = metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, list):
            return tokens[tid] if 0 <= tid < len(tokens) else None
        if isinstance(tokens, ArraySummary) and tokens.type_name == "string" and 0 <= tid < tokens.length:
            # the array was validated above, so walking it again to the id cannot overrun
            r.pos = tokens_at + 12
            for _ in range(tid):
                r.pos += 8 + struct.unpack_from("<Q", buf, r.pos)[0]
            return r.string("a token")
        return None

    name_value = metadata.get("general.name")
    return GGUFInfo(
        path=path,
        size_bytes=size,
        version=version,
        tensor_count=n_tensors,
        kv_count=n_kv,
        alignment=alignment,
        data_offset=data_offset,
        metadata=metadata,
        architecture=arch,
        name=name_value if isinstance(name_value, str) else None,
        context_length=ctx if isinstance(ctx, int) else None,
        chat_template=template if isinstance(template, str) and template.strip() else None,
        file_type=ftype if isinstance(ftype, int) else None,
        quantization=quant,
        parameter_count=params,
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
    )
