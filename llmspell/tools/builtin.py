"""The built-in tools: files confined to one root folder, and a shell; each off until it is enabled by name.

Every path a model gives is resolved (symbolic links and ``..`` included) and must land inside the root, or the
call is refused with a message saying so. Reads and writes have size limits (a file over the read limit is
refused, not truncated; a part of it can still be read by lines), writes are atomic, listings and searches skip
whatever leads outside the root and stop at stated bounds. run_shell runs in the root with a timeout that kills
everything the command started, and an output cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import shlex
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from llmspell.errors import ToolError
from llmspell.tools.base import Tool, tool_from_function

__all__ = ["BUILTIN_NAMES", "READ_ONLY_NAMES", "SIDE_EFFECT_NAMES", "Sandbox", "builtin_tools"]

#: every built-in tool, in the order they are listed
BUILTIN_NAMES = (
    "read_file",
    "write_file",
    "list_directory",
    "search_files",
    "search_in_files",
    "file_info",
    "make_directory",
    "run_shell",
)
#: the built-ins that change something, so each call needs the user's confirmation unless allowed
SIDE_EFFECT_NAMES = frozenset({"write_file", "make_directory", "run_shell"})
#: the built-ins that only look
READ_ONLY_NAMES = tuple(n for n in BUILTIN_NAMES if n not in SIDE_EFFECT_NAMES)

#: folders that searches do not descend into: version control and caches, noise to a model
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".tox"}
)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value, unit = float(n), "bytes"
    for unit in ("KB", "MB", "GB"):  # noqa: B007 - the unit the loop stops at is the one to show
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def _looks_binary(head: bytes) -> bool:
    return b"\x00" in head


class Sandbox:
    """The built-in tools' shared state: the root they are confined to and their limits."""

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        max_read_bytes: int = 64 * 1024,
        max_write_bytes: int = 1024 * 1024,
        shell_timeout: float = 30.0,
        shell_output_cap: int = 16 * 1024,
        max_results: int = 200,
        search_max_files: int = 5000,
        search_max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        given = Path(root) if root is not None else Path.cwd()
        real = Path(os.path.realpath(given))
        if not real.is_dir():
            raise ToolError(f"the tools' root {given} is not a folder", hint="Pass an existing folder as the root.")
        self.root = real
        self.max_read_bytes = max_read_bytes
        self.max_write_bytes = max_write_bytes
        self.shell_timeout = shell_timeout
        self.shell_output_cap = shell_output_cap
        self.max_results = max_results
        self.search_max_files = search_max_files
        self.search_max_bytes = search_max_bytes

    # -- paths -----------------------------------------------------------------------------------------------

    def inside(self, real: Path) -> bool:
        """Whether a resolved path is the root or under it."""
        return real == self.root or self.root in real.parents

    def resolve(self, path: str) -> Path:
        """The real path a model's path names, or a ToolError if it leads outside the root."""
        if not isinstance(path, str) or not path.strip():
            raise ToolError("the path is empty; give a path relative to the root, such as '.' or 'notes/a.txt'")
        if "\x00" in path:
            raise ToolError(f"path {path!r} contains a NUL character")
        given = Path(path)
        candidate = given if given.is_absolute() else self.root / given
        # realpath resolves each symbolic link as it goes, so "link/.." means the link target's parent, as the OS
        # would read it
        real = Path(os.path.realpath(candidate))
        if not self.inside(real):
            lexical = Path(os.path.normpath(candidate))
            if self.inside(lexical):
                raise ToolError(
                    f"path {path} leads outside the root {self.root} through a symbolic link (to {real}): "
                    f"tools may only touch files under it"
                )
            raise ToolError(f"path {path} is outside the root {self.root}: tools may only touch files under it")
        return real

    def shown(self, real: Path) -> str:
        """A resolved path as the model should see it: relative to the root."""
        rel = real.relative_to(self.root).as_posix()
        return rel or "."

    def _existing(self, path: str) -> Path:
        real = self.resolve(path)
        if not real.exists():
            raise ToolError(f"{path} does not exist (under the root {self.root})")
        return real

    # -- read ------------------------------------------------------------------------------------------------

    def read_file(self, path: str, start_line: int = 1, max_lines: int | None = None) -> str:
        """Read a text file under the root.

        Args:
            path: the file, relative to the root.
            start_line: the first line to return (1 is the first line of the file).
            max_lines: how many lines to return at most (all by default); use it with start_line for big files.
        """
        real = self._existing(path)
        if real.is_dir():
            raise ToolError(f"{path} is a folder, not a file; use list_directory to see what it holds")
        if not real.is_file():
            raise ToolError(f"{path} is not a regular file (a device, socket or pipe); read_file reads text files")
        if start_line < 1:
            raise ToolError(f"start_line must be 1 or more, got {start_line}")
        if max_lines is not None and max_lines < 1:
            raise ToolError(f"max_lines must be 1 or more, got {max_lines}")
        size = real.stat().st_size
        whole = start_line == 1 and max_lines is None
        if whole and size > self.max_read_bytes:
            raise ToolError(
                f"{path} is {_size(size)}, over the read limit of {_size(self.max_read_bytes)}; "
                f"read a part of it with start_line and max_lines, or find what you need with search_in_files"
            )
        with real.open("rb") as f:
            if _looks_binary(f.read(8192)):
                raise ToolError(f"{path} looks like a binary file (it contains NUL bytes); read_file reads text")
            f.seek(0)
            if whole:
                # bounded even if the file grew since it was measured
                data = f.read(self.max_read_bytes + 1)
                text = data[: self.max_read_bytes].decode("utf-8", errors="replace")
                if len(data) > self.max_read_bytes:
                    text += (
                        f"\n[cut at the read limit of {_size(self.max_read_bytes)}; the file grew while it was read]"
                    )
                return text
            out: list[bytes] = []
            taken = 0
            cut = False
            for number, line in enumerate(f, start=1):
                if number < start_line:
                    continue
                if max_lines is not None and len(out) >= max_lines:
                    break
                if taken + len(line) > self.max_read_bytes:
                    cut = True
                    break
                out.append(line)
                taken += len(line)
        text = b"".join(out).decode("utf-8", errors="replace")
        if not out and not cut:
            return f"[{path} has fewer than {start_line} lines]"
        if cut:
            shown = f"lines {start_line}-{start_line + len(out) - 1}" if out else "nothing"
            text += f"\n[cut at the read limit of {_size(self.max_read_bytes)}: {shown} shown]"
        return text

    def list_directory(self, path: str = ".") -> str:
        """List what a folder under the root holds: sub-folders end with '/', files show their size.

        Args:
            path: the folder, relative to the root ('.' is the root itself).
        """
        real = self._existing(path)
        if not real.is_dir():
            raise ToolError(f"{path} is a file, not a folder; use read_file or file_info")
        lines: list[str] = []
        hidden_out = 0
        entries = sorted(os.scandir(real), key=lambda e: e.name)
        for entry in entries:
            if len(lines) >= self.max_results:
                break
            target = Path(os.path.realpath(entry.path))
            if not self.inside(target):
                hidden_out += 1
                continue
            arrow = f" -> {self.shown(target)}" if entry.is_symlink() else ""
            if target.is_dir():
                lines.append(f"{entry.name}/{arrow}")
            elif target.exists():
                lines.append(f"{entry.name}{arrow} ({_size(target.stat().st_size)})")
            else:
                lines.append(f"{entry.name}{arrow} (broken link)")
        shown = self.shown(real)
        head = f"{shown} is empty" if not lines else f"{shown} holds {len(entries) - hidden_out} entries:"
        notes = []
        if len(entries) - hidden_out > len(lines):
            notes.append(f"[only the first {len(lines)} are listed]")
        if hidden_out:
            notes.append(f"[{hidden_out} symbolic links leading outside the root are not shown]")
        return "\n".join([head, *lines, *notes])

    def _walk(self, start: Path) -> Iterator[Path]:
        """The files under start (links followed only when they stay in the root), skipping SKIP_DIRS."""
        for folder, dirs, files in os.walk(start, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            base = Path(folder)
            for name in sorted(files):
                candidate = base / name
                real = Path(os.path.realpath(candidate))
                if self.inside(real) and real.is_file():
                    yield candidate

    def search_files(self, pattern: str, path: str = ".") -> str:
        """Find files under a folder whose name matches a glob pattern, such as '*.py' or 'test_*'.

        Args:
            pattern: a glob on the file name ('*.md'); with a '/' it matches the path relative to the root.
            path: the folder to search, relative to the root.
        """
        start = self._existing(path)
        if not start.is_dir():
            raise ToolError(f"{path} is a file, not a folder; give the folder to search in")
        on_path = "/" in pattern
        found: list[str] = []
        more = False
        for file in self._walk(start):
            rel = file.relative_to(self.root).as_posix()
            if fnmatch.fnmatch(rel if on_path else file.name, pattern):
                if len(found) >= self.max_results:
                    more = True
                    break
                found.append(rel)
        if not found:
            return f"no file under {self.shown(start)} matches {pattern}"
        note = [f"[stopped at {self.max_results} matches; narrow the pattern or the folder]"] if more else []
        return "\n".join([*found, *note])

    def search_in_files(
        self,
        query: str,
        path: str = ".",
        pattern: str | None = None,
        regex: bool = False,
        case_sensitive: bool = False,
    ) -> str:
        """Find lines containing some text in the files under a folder; answers 'file:line: text'.

        Args:
            query: the text to look for (a regular expression if regex is true).
            path: the folder (or one file) to search, relative to the root.
            pattern: only search files whose name matches this glob, such as '*.py'.
            regex: treat query as a regular expression.
            case_sensitive: match upper and lower case exactly.
        """
        if not query:
            raise ToolError("query is empty; give the text to look for")
        flags = 0 if case_sensitive else re.IGNORECASE
        try:
            matcher = re.compile(query if regex else re.escape(query), flags)
        except re.error as err:
            raise ToolError(f"query {query!r} is not a valid regular expression: {err}") from None
        start = self._existing(path)
        files: Iterable[Path] = [start] if start.is_file() else self._walk(start)
        matches: list[str] = []
        scanned_files = scanned_bytes = skipped_big = 0
        stop: str | None = None
        per_file_limit = max(self.max_read_bytes, 1024 * 1024)
        for file in files:
            if pattern and not fnmatch.fnmatch(file.name, pattern):
                continue
            if scanned_files >= self.search_max_files:
                stop = f"stopped after {scanned_files} files; narrow the folder or the pattern"
                break
            if scanned_bytes >= self.search_max_bytes:
                stop = f"stopped after scanning {_size(scanned_bytes)}; narrow the folder or the pattern"
                break
            try:
                size = file.stat().st_size
                if size > per_file_limit:
                    skipped_big += 1
                    continue
                data = file.read_bytes()
            except OSError:
                continue
            scanned_files += 1
            scanned_bytes += len(data)
            if _looks_binary(data[:8192]):
                continue
            rel = file.relative_to(self.root).as_posix() if file != self.root else file.name
            for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
                if matcher.search(line):
                    text = line.strip()
                    text = text if len(text) <= 200 else text[:197] + "..."
                    matches.append(f"{rel}:{number}: {text}")
                    if len(matches) >= self.max_results:
                        stop = f"stopped at {self.max_results} matches; make the query more specific"
                        break
            if len(matches) >= self.max_results:
                break
        notes = []
        if stop:
            notes.append(f"[{stop}]")
        if skipped_big:
            notes.append(f"[{skipped_big} files over {_size(per_file_limit)} were not searched]")
        if not matches:
            return "\n".join([f"no line matches {query!r} in {scanned_files} files under {path}", *notes])
        return "\n".join([*matches, *notes])

    def file_info(self, path: str) -> str:
        """Tell what a path under the root is: file or folder, size, last change, permissions.

        Args:
            path: the file or folder, relative to the root.
        """
        real = self._existing(path)
        st = real.stat()
        kind = "folder" if real.is_dir() else "file" if real.is_file() else "special file"
        lines = [
            f"path: {self.shown(real)}",
            f"kind: {kind}",
            f"size: {_size(st.st_size)}" if kind == "file" else f"entries: {len(os.listdir(real))}",
            f"modified: {datetime.fromtimestamp(st.st_mtime).astimezone().isoformat(timespec='seconds')}",
            f"permissions: {stat.filemode(st.st_mode)}",
        ]
        link = self.root / path if not Path(path).is_absolute() else Path(path)
        if link.is_symlink():
            lines.insert(1, f"a symbolic link to: {self.shown(real)}")
        return "\n".join(lines)

    # -- write -----------------------------------------------------------------------------------------------

    def write_file(self, path: str, content: str) -> str:
        """Write text to a file under the root, replacing it if it exists (folders are created as needed).

        Args:
            path: the file, relative to the root.
            content: the whole new text of the file.
        """
        real = self.resolve(path)
        data = content.encode("utf-8")
        if len(data) > self.max_write_bytes:
            raise ToolError(
                f"the content is {_size(len(data))}, over the write limit of {_size(self.max_write_bytes)}; "
                f"nothing was written"
            )
        if real == self.root or real.is_dir():
            raise ToolError(f"{path} is a folder; give a file name to write")
        before = real.stat() if real.exists() else None
        real.parent.mkdir(parents=True, exist_ok=True)
        # a temporary file in the same folder, then an atomic rename: a reader never sees half a file, and the
        # rename replaces the resolved path (already checked to be inside the root), so no link is followed out
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if before is not None:
                os.chmod(tmp, stat.S_IMODE(before.st_mode))
            os.replace(tmp, real)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        what = f"replaced the previous {_size(before.st_size)}" if before is not None else "a new file"
        return f"wrote {_size(len(data))} to {self.shown(real)} ({what})"

    def make_directory(self, path: str) -> str:
        """Create a folder under the root (and any missing folders above it).

        Args:
            path: the folder, relative to the root.
        """
        real = self.resolve(path)
        if real.is_dir():
            return f"{self.shown(real)} already exists"
        if real.exists():
            raise ToolError(f"{path} exists and is a file, so it cannot become a folder")
        real.mkdir(parents=True)
        return f"created the folder {self.shown(real)}"

    # -- shell -----------------------------------------------------------------------------------------------

    async def run_shell(self, command: str) -> str:
        """Run a shell command in the root folder; answers its exit code and its output (stdout and stderr).

        Args:
            command: the command line, run by bash.
        """
        if not command.strip():
            raise ToolError("command is empty; give the command line to run")
        bash = shutil.which("bash")
        if bash:
            argv = [bash, "-c", command]
        else:
            try:
                argv = shlex.split(command)
            except ValueError as err:
                raise ToolError(f"cannot split the command ({err}); there is no bash here to run it") from None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.root,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                # its own process group, so a timeout or a cancel can kill everything the command started
                start_new_session=True,
            )
        except OSError as err:
            raise ToolError(f"cannot start {argv[0]}: {err.strerror or err}") from None
        kept = bytearray()
        dropped = 0

        async def drain() -> None:
            nonlocal dropped
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                room = self.shell_output_cap - len(kept)
                kept.extend(chunk[: max(room, 0)])
                dropped += max(len(chunk) - max(room, 0), 0)

        reader = asyncio.ensure_future(drain())
        timed_out = False
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.shell_timeout
            # proc.wait() also waits for the pipe to close, which a background child (`cmd &`) holds open; so watch
            # the exit code and the output separately: done when the output ends, or soon after the shell exits
            while not reader.done() and proc.returncode is None:
                left = deadline - loop.time()
                if left <= 0:
                    timed_out = True
                    break
                await asyncio.wait({reader}, timeout=min(left, 0.05))
            if not timed_out and not reader.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), 1.0)
            if not timed_out:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), max(deadline - loop.time(), 0.1))
                timed_out = proc.returncode is None
        finally:
            # nothing the command started outlives the call: not on timeout, not on cancel, not left in the background
            _kill_group(proc.pid)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
            # the pipe closes once the group is gone; what was still in it is kept
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 2)
            if not reader.done():
                reader.cancel()
        output = kept.decode("utf-8", errors="replace")
        if dropped:
            output += f"\n[output cut at {_size(self.shell_output_cap)}: {_size(dropped)} more not shown]"
        if timed_out:
            head = f"timed out after {self.shell_timeout:g} s; the command and everything it started were killed"
        else:
            head = f"exit code: {proc.returncode}"
        return f"{head}\noutput:\n{output}" if output else f"{head}\n(no output)"


def _kill_group(pgid: int) -> None:
    """Kill a whole process group (the command and its children), if any of it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def builtin_tools(
    root: Path | str | None = None,
    *,
    enabled: Iterable[str],
    max_read_bytes: int = 64 * 1024,
    max_write_bytes: int = 1024 * 1024,
    shell_timeout: float = 30.0,
    shell_output_cap: int = 16 * 1024,
    max_results: int = 200,
    search_max_files: int = 5000,
    search_max_bytes: int = 32 * 1024 * 1024,
) -> list[Tool]:
    """The built-in tools named in ``enabled`` (none by default), confined to ``root`` (default: the current folder).

    Limits: a file over ``max_read_bytes`` is refused whole (a part can be read by lines); content over
    ``max_write_bytes`` is not written; run_shell is killed after ``shell_timeout`` seconds and its output cut at
    ``shell_output_cap`` bytes; listings and searches return at most ``max_results`` lines and scan at most
    ``search_max_files`` files and ``search_max_bytes`` bytes.
    """
    wanted = set(enabled)
    unknown = sorted(wanted - set(BUILTIN_NAMES))
    if unknown:
        raise ToolError(
            f"no built-in tool named {', '.join(map(repr, unknown))}; the built-ins are: {', '.join(BUILTIN_NAMES)}"
        )
    box = Sandbox(
        root,
        max_read_bytes=max_read_bytes,
        max_write_bytes=max_write_bytes,
        shell_timeout=shell_timeout,
        shell_output_cap=shell_output_cap,
        max_results=max_results,
        search_max_files=search_max_files,
        search_max_bytes=search_max_bytes,
    )
    tools = []
    for name in BUILTIN_NAMES:
        if name in wanted:
            tool = tool_from_function(getattr(box, name), name=name, side_effects=name in SIDE_EFFECT_NAMES)
            tool.source = "builtin"
            tools.append(tool)
    return tools
