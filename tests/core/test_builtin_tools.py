"""The built-in tools on real files and real processes: each does its job inside the root, nothing reaches outside
it (``..``, absolute paths, symbolic links), limits hold, and run_shell leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import psutil
import pytest

from llmspell.errors import ToolError
from llmspell.tools import BUILTIN_NAMES, ToolRegistry, ToolResult, builtin_tools

SECRET = "TOP SECRET outside the root"
LIMIT = 1024  # the read limit the tests run with


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root folder with a few files, a sibling folder outside it, and links of every kind."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    r = tmp_path / "root"
    (r / "notes").mkdir(parents=True)
    (r / "notes" / "a.txt").write_text("alpha\nbeta\ngamma\n")
    (r / "notes" / "b.md").write_text("# Beta\n")
    (r / "src").mkdir()
    (r / "src" / "main.py").write_text("print('hello')\n")
    (r / ".git").mkdir()
    (r / ".git" / "config").write_text("beta in version control\n")
    (r / "big.log").write_text("line of a big log\n" * 400)  # 7,200 bytes, over LIMIT
    (r / "out_link.txt").symlink_to(outside / "secret.txt")
    (r / "out_dir").symlink_to(outside, target_is_directory=True)
    (r / "in_link.txt").symlink_to(Path("notes") / "a.txt")
    return r


def _registry(root: Path, **limits: Any) -> ToolRegistry:
    limits.setdefault("max_read_bytes", LIMIT)
    return ToolRegistry(builtin_tools(root, enabled=BUILTIN_NAMES, **limits), allow={"*"})


async def _ok(registry: ToolRegistry, name: str, **arguments: Any) -> str:
    result = await registry.call(name, arguments)
    assert result.ok, result.error
    return result.content


def _snapshot(folder: Path) -> dict[str, Any]:
    """Everything under folder: files by content, folders, and links by target (links not followed)."""
    out: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return out


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _gone(pid: int) -> bool:
    """Whether the process goes away within a bounded wait."""
    for _ in range(200):
        if not _alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def _file_appears(path: Path) -> str:
    for _ in range(200):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


# --- enabling ------------------------------------------------------------------------------------------------


def test_nothing_is_on_until_enabled_and_a_disabled_tool_is_absent(root: Path) -> None:
    assert builtin_tools(root, enabled=()) == []
    tools = builtin_tools(root, enabled=["list_directory", "read_file"])
    assert [t.name for t in tools] == ["read_file", "list_directory"]
    assert all(t.source == "builtin" and not t.side_effects for t in tools)
    everything = {t.name: t for t in builtin_tools(root, enabled=BUILTIN_NAMES)}
    assert {n for n, t in everything.items() if t.side_effects} == {"write_file", "make_directory", "run_shell"}
    with pytest.raises(ToolError, match="no built-in tool named 'delete_everything'; the built-ins are: read_file"):
        builtin_tools(root, enabled=["delete_everything"])


def test_a_root_that_is_not_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="is not a folder"):
        builtin_tools(tmp_path / "missing", enabled=["read_file"])


def test_the_root_defaults_to_the_current_folder(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root / "notes")
    [tool] = builtin_tools(enabled=["read_file"])
    assert tool.handler(path="a.txt") == "alpha\nbeta\ngamma\n"


async def test_side_effect_tools_do_nothing_without_the_users_yes(root: Path) -> None:
    registry = ToolRegistry(builtin_tools(root, enabled=BUILTIN_NAMES))
    before = _snapshot(root.parent)
    for name, args in [
        ("write_file", {"path": "new.txt", "content": "x"}),
        ("make_directory", {"path": "newdir"}),
        ("run_shell", {"command": "touch made-by-shell"}),
    ]:
        result = await registry.call(name, args)
        assert result.refused and not result.ok
    assert _snapshot(root.parent) == before


# --- the file tools, each doing its job ---------------------------------------------------------------------


async def test_read_file_reads_text_and_parts_of_it(root: Path) -> None:
    registry = _registry(root)
    assert await _ok(registry, "read_file", path="notes/a.txt") == "alpha\nbeta\ngamma\n"
    assert await _ok(registry, "read_file", path=str(root / "notes" / "a.txt")) == "alpha\nbeta\ngamma\n"
    assert await _ok(registry, "read_file", path="in_link.txt") == "alpha\nbeta\ngamma\n"
    assert await _ok(registry, "read_file", path="notes/a.txt", start_line=2, max_lines=1) == "beta\n"
    assert "fewer than 9 lines" in await _ok(registry, "read_file", path="notes/a.txt", start_line=9)


async def test_read_file_explains_what_it_cannot_read(root: Path) -> None:
    (root / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    registry = _registry(root)
    cases = {
        "missing.txt": "missing.txt does not exist",
        "notes": "notes is a folder, not a file",
        "blob.bin": "looks like a binary file",
        "pipe": "pipe is not a regular file",
    }
    os.mkfifo(root / "pipe")
    for path, words in cases.items():
        result = await registry.call("read_file", {"path": path})
        assert not result.ok and words in (result.error or ""), result.error


async def test_a_file_over_the_read_limit_is_refused_but_can_be_read_in_parts(root: Path) -> None:
    registry = _registry(root)
    result = await registry.call("read_file", {"path": "big.log"})
    assert not result.ok
    assert "big.log is 7.0 KB, over the read limit of 1.0 KB" in (result.error or "")
    assert "line of a big log" not in result.content
    assert await _ok(registry, "read_file", path="big.log", start_line=400, max_lines=5) == "line of a big log\n"
    part = await _ok(registry, "read_file", path="big.log", start_line=1, max_lines=1000)
    assert part.count("line of a big log") == LIMIT // len("line of a big log\n")
    assert "[cut at the read limit of 1.0 KB: lines 1-56 shown]" in part


async def test_write_file_writes_atomically_and_keeps_the_mode(root: Path) -> None:
    registry = _registry(root)
    assert await _ok(registry, "write_file", path="drafts/today/plan.md", content="# Plan\n") == (
        "wrote 7 bytes to drafts/today/plan.md (a new file)"
    )
    assert (root / "drafts" / "today" / "plan.md").read_text() == "# Plan\n"
    script = root / "src" / "main.py"
    script.chmod(0o750)
    said = await _ok(registry, "write_file", path="src/main.py", content="print('bye')\n")
    assert said == "wrote 13 bytes to src/main.py (replaced the previous 15 bytes)"
    assert script.read_text() == "print('bye')\n" and stat.S_IMODE(script.stat().st_mode) == 0o750
    assert sorted(p.name for p in script.parent.iterdir()) == ["main.py"], "a temporary file was left behind"


async def test_writing_through_a_link_inside_the_root_changes_its_target(root: Path) -> None:
    await _ok(_registry(root), "write_file", path="in_link.txt", content="rewritten\n")
    assert (root / "in_link.txt").is_symlink() and (root / "notes" / "a.txt").read_text() == "rewritten\n"


async def test_content_over_the_write_limit_is_not_written(root: Path) -> None:
    registry = _registry(root, max_write_bytes=100)
    before = _snapshot(root.parent)
    result = await registry.call("write_file", {"path": "notes/a.txt", "content": "x" * 101})
    assert not result.ok and "the content is 101 bytes, over the write limit of 100 bytes" in (result.error or "")
    assert _snapshot(root.parent) == before


async def test_list_directory_shows_entries_and_hides_links_out_of_the_root(root: Path) -> None:
    listing = await _ok(_registry(root), "list_directory", path=".")
    lines = listing.splitlines()
    assert lines[0] == ". holds 5 entries:"
    assert ".git/" in lines and "notes/" in lines and "src/" in lines
    assert "big.log (7.0 KB)" in lines and "in_link.txt -> notes/a.txt (17 bytes)" in lines
    assert "out_link.txt" not in listing and "out_dir" not in listing
    assert lines[-1] == "[2 symbolic links leading outside the root are not shown]"
    assert (await _ok(_registry(root), "list_directory", path="notes")).splitlines() == [
        "notes holds 2 entries:",
        "a.txt (17 bytes)",
        "b.md (7 bytes)",
    ]


async def test_search_files_finds_names_inside_the_root_only(root: Path) -> None:
    registry = _registry(root)
    assert await _ok(registry, "search_files", pattern="*.md") == "notes/b.md"
    assert await _ok(registry, "search_files", pattern="notes/*.txt") == "notes/a.txt"
    everything = (await _ok(registry, "search_files", pattern="*")).splitlines()
    assert everything == ["big.log", "in_link.txt", "notes/a.txt", "notes/b.md", "src/main.py"]
    assert "no file under src matches *.md" in await _ok(registry, "search_files", pattern="*.md", path="src")
    capped = await _ok(_registry(root, max_results=2), "search_files", pattern="*")
    assert capped.splitlines()[-1] == "[stopped at 2 matches; narrow the pattern or the folder]"


async def test_search_in_files_finds_lines_and_stays_inside_its_bounds(root: Path) -> None:
    registry = _registry(root)
    found = (await _ok(registry, "search_in_files", query="beta")).splitlines()
    assert found == ["in_link.txt:2: beta", "notes/a.txt:2: beta", "notes/b.md:1: # Beta"]
    assert await _ok(registry, "search_in_files", query="^be", regex=True, path="notes") == "notes/a.txt:2: beta"
    assert await _ok(registry, "search_in_files", query="beta", case_sensitive=True, pattern="*.md") == (
        "no line matches 'beta' in 1 files under ."
    )
    assert "no line matches 'SECRET'" in await _ok(registry, "search_in_files", query="SECRET")
    capped = await _ok(_registry(root, max_results=2), "search_in_files", query="a")
    assert len(capped.splitlines()) == 3 and capped.endswith("[stopped at 2 matches; make the query more specific]")
    few = await _ok(_registry(root, search_max_files=1), "search_in_files", query="zzz")
    assert "[stopped after 1 files; narrow the folder or the pattern]" in few
    bad = await registry.call("search_in_files", {"query": "(", "regex": True})
    assert not bad.ok and "not a valid regular expression" in (bad.error or "")


async def test_file_info_describes_files_folders_and_links(root: Path) -> None:
    registry = _registry(root)
    info = (await _ok(registry, "file_info", path="notes/a.txt")).splitlines()
    assert info[:3] == ["path: notes/a.txt", "kind: file", "size: 17 bytes"]
    assert info[-1] == "permissions: " + stat.filemode((root / "notes" / "a.txt").stat().st_mode)
    assert "kind: folder" in await _ok(registry, "file_info", path="notes")
    assert "a symbolic link to: notes/a.txt" in await _ok(registry, "file_info", path="in_link.txt")


async def test_make_directory_creates_folders_once(root: Path) -> None:
    registry = _registry(root)
    assert await _ok(registry, "make_directory", path="a/b/c") == "created the folder a/b/c"
    assert (root / "a" / "b" / "c").is_dir()
    assert await _ok(registry, "make_directory", path="a/b") == "a/b already exists"
    result = await registry.call("make_directory", {"path": "notes/a.txt"})
    assert not result.ok and "exists and is a file" in (result.error or "")


# --- escapes ------------------------------------------------------------------------------------------------


def _escapes(root: Path) -> dict[str, str]:
    outside = root.parent / "outside"
    return {
        "dotdot": "../outside/secret.txt",
        "dotdot_inside_path": "notes/../../outside/secret.txt",
        "absolute": str(outside / "secret.txt"),
        "absolute_root_parent": str(root.parent),
        "link_to_file": "out_link.txt",
        "link_to_dir": "out_dir/secret.txt",
        "the_linked_dir": "out_dir",
    }


def _arguments(tool: str, path: str) -> dict[str, Any]:
    return {
        "read_file": {"path": path},
        "write_file": {"path": path, "content": "overwritten by a model"},
        "list_directory": {"path": path},
        "search_files": {"pattern": "*", "path": path},
        "search_in_files": {"query": "SECRET", "path": path},
        "file_info": {"path": path},
        "make_directory": {"path": f"{path}/sub"},
    }[tool]


@pytest.mark.parametrize(
    "tool",
    ["read_file", "write_file", "list_directory", "search_files", "search_in_files", "file_info", "make_directory"],
)
@pytest.mark.parametrize("escape", list(_escapes(Path("/r"))))
async def test_every_way_out_of_the_root_is_refused_and_changes_nothing(root: Path, tool: str, escape: str) -> None:
    path = _escapes(root)[escape]
    before = _snapshot(root.parent)
    result = await _registry(root).call(tool, _arguments(tool, path))
    assert not result.ok and result.error is not None
    assert "outside the root" in result.error and "tools may only touch files under it" in result.error
    if escape.startswith("link"):
        assert "through a symbolic link" in result.error
    assert "\n" not in result.error and SECRET not in result.content
    assert _snapshot(root.parent) == before


async def test_the_refusal_names_the_path_and_the_root(root: Path) -> None:
    result = await _registry(root).call("read_file", {"path": "../x"})
    assert (
        result.error == f"read_file failed: path ../x is outside the root {root}: tools may only touch files under it"
    )


# --- run_shell ----------------------------------------------------------------------------------------------


async def test_run_shell_runs_in_the_root_and_reports_exit_code_and_output(root: Path) -> None:
    registry = _registry(root)
    out = await _ok(registry, "run_shell", command="pwd; echo to-stderr >&2; exit 3")
    assert out == f"exit code: 3\noutput:\n{root}\nto-stderr\n"
    assert await _ok(registry, "run_shell", command="true") == "exit code: 0\n(no output)"


async def test_run_shell_timeout_kills_the_command_and_its_children(root: Path) -> None:
    registry = _registry(root, shell_timeout=1)
    out = await _ok(registry, "run_shell", command="sleep 300 & echo $! > child.pid; echo started; wait")
    assert out.startswith("timed out after 1 s; the command and everything it started were killed")
    assert "started" in out
    child = int((root / "child.pid").read_text())
    assert await _gone(child), "the sleep child outlived the timeout"


async def test_run_shell_leaves_no_background_process_behind(root: Path) -> None:
    out = await _ok(_registry(root), "run_shell", command="sleep 300 & echo $! > child.pid")
    assert out.startswith("exit code: 0")
    assert await _gone(int((root / "child.pid").read_text()))


async def test_cancelling_run_shell_kills_the_command(root: Path) -> None:
    registry = _registry(root)
    delivered: list[ToolResult] = []
    task = asyncio.create_task(
        registry.call("run_shell", {"command": "sleep 300 & echo $! > child.pid; wait"}, on_result=delivered.append)
    )
    child = int(await _file_appears(root / "child.pid"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _gone(child)
    assert delivered[0].cancelled and delivered[0].error == "run_shell cancelled; the handler was stopped"


async def test_run_shell_output_over_the_cap_is_cut_with_a_note(root: Path) -> None:
    registry = _registry(root, shell_output_cap=1000)
    out = await _ok(registry, "run_shell", command="head -c 50000 /dev/zero | tr '\\0' x")
    assert out.split("output:\n", 1)[1].count("x") == 1000
    assert out.endswith("[output cut at 1000 bytes: 47.9 KB more not shown]")


def test_a_sync_handler_can_be_called_directly_for_scripts(root: Path) -> None:
    # the handlers are plain methods, usable without a registry (the confinement still holds)
    [tool] = builtin_tools(root, enabled=["file_info"])
    with pytest.raises(ToolError, match="outside the root"):
        tool.handler(path="/")
    assert tool.handler(path=".").startswith("path: .")
