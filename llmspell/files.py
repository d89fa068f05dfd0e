"""Files that appear whole or not at all: written beside their place, synced, then renamed over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from llmspell.errors import InvalidOptions

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_whole(path: Path | str, write: Callable[[IO[str]], T]) -> T:
    """Run ``write`` on a temporary file beside ``path`` and rename it over ``path`` once it is complete, so a full
    disk or a crash never leaves half a file under the name asked for; returns what ``write`` returned. The file
    gets the usual permissions (the umask's), not the temporary file's owner-only ones. A folder that does not
    exist, or cannot be written, is an error naming the file."""
    target = Path(path).expanduser()
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
        tmp = None
        return result
    except OSError as exc:
        raise InvalidOptions(
            f"cannot write {target}: {exc.strerror or exc}", hint="check that the folder exists and is writable"
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
