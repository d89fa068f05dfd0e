"""``llmspell model import``: put a GGUF file from anywhere into the models folder, by copy or by link, under
the name it will run by."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from llmspell import config as cfgmod
from llmspell.discovery import SPLIT_PART as _SPLIT
from llmspell.errors import InsufficientResources, InvalidOptions, InvalidSpec, ModelFileMissing
from llmspell.types import human_bytes

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: bytes copied between two progress reports
_BLOCK = 8 * 1024 * 1024


def import_model(
    source: Path,
    name: str | None = None,
    *,
    link: bool = False,
    replace: bool = False,
    taken: Callable[[str], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Copy (or link) a GGUF into the models folder as ``NAME.gguf``, checked first and never half-written; a
    split model brings all its parts. ``taken(name)`` says whether a name already means another model."""
    source = source.expanduser()
    if not source.is_file():
        raise ModelFileMissing(f"{source} does not exist or is not a file", hint="check the path")
    from llmspell.backends._llama_files import gguf_info

    gguf_info(source)  # a damaged, foreign or hostile file is refused before anything is written
    split = _SPLIT.search(source.name)
    if split and split.group(1) != "00001":
        raise InvalidOptions(
            f"{source.name} is part {int(split.group(1))} of a split model",
            hint=f"import its first part, {_SPLIT.sub(f'-00001-of-{split.group(2)}.gguf', source.name)}",
        )
    stem = _SPLIT.sub("", source.name) if split else source.name
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
    name = name or stem
    if not _NAME.match(name):
        raise InvalidSpec(
            f"{name!r} cannot name a model", hint="use letters, digits, '.', '_' and '-' (no spaces, ':' or '@')"
        )
    if taken is not None and taken(name):
        raise InvalidOptions(f"{name!r} already names a model", hint="choose another with --name")
    folder = cfgmod.writable_folder(cfgmod.models_dir(), "imported models")
    parts = _parts(source, split)
    targets = [folder / (f"{name}{_split_suffix(p)}" if split else f"{name}.gguf") for p in parts]
    for part, target in zip(parts, targets, strict=True):
        if target.exists() and target.resolve() == part.resolve():
            # replacing a file by a link to (or a copy of) itself would leave a link to nothing
            raise InvalidOptions(f"{part} is already in the models folder as {target.name}", hint="nothing to do")
    existing = [t for t in targets if t.exists() or t.is_symlink()]
    if existing and not replace:
        raise InvalidOptions(f"{existing[0]} exists already", hint="choose another --name, or pass --replace")
    if not link:
        need = sum(p.stat().st_size for p in parts)
        free = shutil.disk_usage(folder).free
        if need + 64 * 1024**2 > free:
            raise InsufficientResources(
                f"copying {source.name} needs {human_bytes(need)} in {folder}, only {human_bytes(free)} free",
                hint="free some space, or pass --link to use the file where it is",
            )
    total = sum(p.stat().st_size for p in parts)
    done = 0
    for part, target in zip(parts, targets, strict=True):
        temp = target.with_name(f".{target.name}.partial")
        try:
            if link:
                temp.unlink(missing_ok=True)
                temp.symlink_to(part.resolve())
            else:
                done = _copy(part, temp, done, total, progress)
            os.replace(temp, target)  # whole or not at all under the name that lists and runs
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise InsufficientResources(
                f"could not write {target}: {exc.strerror or exc}", hint="check the free space and permissions"
            ) from None
    return targets[0]


def _split_suffix(part: Path) -> str:
    match = _SPLIT.search(part.name)
    return match.group(0) if match else ".gguf"


def _parts(first: Path, split: re.Match[str] | None) -> list[Path]:
    if split is None:
        return [first]
    count = int(split.group(2))
    parts = [first.with_name(_SPLIT.sub(f"-{i:05d}-of-{count:05d}.gguf", first.name)) for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise ModelFileMissing(f"parts of the split model are missing: {', '.join(missing)}", hint="keep them together")
    return parts


def _copy(source: Path, temp: Path, done: int, total: int, progress: Callable[[int, int], None] | None) -> int:
    with source.open("rb") as src, temp.open("wb") as out:
        while block := src.read(_BLOCK):
            out.write(block)
            done += len(block)
            if progress is not None:
                progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    return done
