"""MCP servers as tools: real servers (mcp-server-time from PyPI, a small server on the official SDK) started
by the tests, their tools listed and called, and every way a server can fail shown as one status line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from llmspell.config import load_config
from llmspell.errors import ConfigError
from llmspell.tools.base import ToolRegistry
from llmspell.tools.mcp import McpTools, mcp_tool_name
from llmspell.tools.mcpconfig import McpServerConfig

PYTHON = sys.executable
TIME_SERVER = (PYTHON, "-m", "mcp_server_time", "--local-timezone", "UTC")
#: a small server on the official SDK: a tool with a dot in its name that reads its environment, and a tool
#: that answers with a picture besides text
PROBE_SERVER = '''
import base64, os
try:
    from mcp.server.mcpserver import MCPServer
except ImportError:  # SDK 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer
from mcp.types import ImageContent, TextContent

server = MCPServer("probe")


@server.tool(name="env.read")
def env_read(name: str) -> str:
    """The value of one of this server's environment variables."""
    return os.environ.get(name, "<unset>")


@server.tool()
def picture() -> list:
    """A caption and a tiny picture."""
    data = base64.b64encode(b"not really a png").decode()
    return [TextContent(type="text", text="a red dot"), ImageContent(type="image", data=data, mimeType="image/png")]


server.run()
'''


def _toml(value: object) -> str:
    # a JSON string or list of strings is valid TOML as it is (paths with backslashes included)
    return json.dumps(value)


def _write_config(text: str) -> Path:
    path = Path(os.environ["LLMSPELL_HOME"]) / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def _until(predicate: Callable[[], bool], what: str, seconds: float = 15.0) -> None:
    """Poll until ``predicate`` holds, failing with ``what`` after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.02)


def _children_running(marker: str) -> list[psutil.Process]:
    """Our live child processes whose command line mentions ``marker``."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any(marker in part for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


async def test_time_server_tools_are_listed_called_and_gone_after_stop() -> None:
    path = _write_config(
        f"[mcp.servers.time]\ncommand = {_toml(PYTHON)}\nargs = {_toml(list(TIME_SERVER[1:]))}\ntimeout = 20\n"
        'allow = ["get_current_time"]\n'
    )
    config = load_config(path)
    mcp = McpTools.from_config(config)
    try:
        (status,) = await mcp.start_all()
        assert status.state == "running", status.line
        assert status.tools == ("time__get_current_time", "time__convert_time")
        assert status.pid is not None and psutil.pid_exists(status.pid)

        tools = {tool.name: tool for tool in mcp.tools()}
        current = tools["time__get_current_time"]
        assert current.source == "mcp:time"
        assert current.parameters["required"] == ["timezone"]
        assert current.parameters["properties"]["timezone"]["type"] == "string"
        assert "timezone" in current.description.lower()
        # the server has side effects (the default) unless a tool is allowed by name
        assert current.side_effects is False and tools["time__convert_time"].side_effects is True
        assert current.openai_schema()["function"]["name"] == "time__get_current_time"

        registry = ToolRegistry()
        mcp.sync(registry)
        result = await registry.call("time__get_current_time", {"timezone": "UTC"})
        assert result.ok, result.content
        assert json.loads(result.content)["timezone"] == "UTC"

        wrong = await registry.call("time__get_current_time", {"timezone": "Mars/Olympus_Mons"})
        assert not wrong.ok
        assert "Invalid timezone" in wrong.content and "Mars/Olympus_Mons" in wrong.content

        # a tool with side effects asks first: refused without anyone to ask, run once the user says yes
        refused = await registry.call(
            "time__convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
        )
        assert refused.refused and not refused.ok
        converted = await registry.call(
            "time__convert_time",
            {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
            confirm=lambda tool, args: True,
        )
        assert converted.ok and "21:00" in converted.content
    finally:
        await mcp.stop_all()
    assert not psutil.pid_exists(status.pid), "stop() left the server's process behind"
    assert not _children_running("mcp_server_time")
    assert mcp.status()[0].state == "stopped" and mcp.tools() == []
    after = await registry.call("time__get_current_time", {"timezone": "UTC"})
    assert not after.ok and "not running" in after.content


async def test_a_server_killed_while_running_is_a_clear_error_and_says_it_died() -> None:
    mcp = McpTools(
        [
            McpServerConfig("first", TIME_SERVER[0], TIME_SERVER[1:], timeout=20, side_effects=False),
            McpServerConfig("second", TIME_SERVER[0], TIME_SERVER[1:], timeout=20, side_effects=False),
        ]
    )
    try:
        statuses = await mcp.start_all()
        assert [s.state for s in statuses] == ["running", "running"], [s.line for s in statuses]
        registry = ToolRegistry()
        mcp.sync(registry)
        first_pid, second_pid = (s.pid for s in statuses)
        assert first_pid and second_pid and first_pid != second_pid

        # called straight after the kill, before anything noticed: an error naming the death, not a hang
        os.kill(first_pid, signal.SIGKILL)
        result = await registry.call("first__get_current_time", {"timezone": "UTC"}, timeout=15)
        assert not result.ok
        assert "died" in result.content and "SIGKILL" in result.content, result.content
        assert mcp.servers["first"].status().state == "died"

        # left alone after the kill: the status says it died without any call
        os.kill(second_pid, signal.SIGKILL)
        await _until(lambda: mcp.servers["second"].status().state == "died", "the second server's death")
        line = mcp.servers["second"].status().line
        assert line.startswith("died") and "killed by signal 9" in line
        later = await registry.call("second__get_current_time", {"timezone": "UTC"}, timeout=15)
        assert not later.ok and "died" in later.content

        # their tools leave the list, and sync takes them out of a registry
        assert mcp.tools() == []
        mcp.sync(registry)
        assert registry.names() == []
    finally:
        await mcp.stop_all()


async def test_servers_that_cannot_start_are_status_lines_not_exceptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMSPELL_TEST_UNSET_TOKEN", raising=False)
    mcp = McpTools(
        [
            McpServerConfig("ghost", "llmspell-no-such-mcp-server"),
            McpServerConfig("ghostpath", "/nonexistent/folder/mcp-server"),
            McpServerConfig(
                "quits", PYTHON, ("-c", "import sys; print('no config found', file=sys.stderr); sys.exit(3)")
            ),
            McpServerConfig("badarg", PYTHON, ("-m", "mcp_server_time", "--local-timezone", "Mars/Base"), timeout=20),
            McpServerConfig(
                "mute", PYTHON, ("-c", "import sys; sys.stdin.read()  # llmspell-mute-server"), timeout=0.5
            ),
            McpServerConfig("needskey", PYTHON, ("-m", "mcp_server_time"), env={"TOKEN": "$LLMSPELL_TEST_UNSET_TOKEN"}),
            McpServerConfig("nowhere", PYTHON, ("-m", "mcp_server_time"), cwd=Path("/nonexistent/folder")),
            McpServerConfig("off", "llmspell-no-such-mcp-server", enabled=False),
        ]
    )
    try:
        statuses = {s.name: s for s in await mcp.start_all()}
    finally:
        await mcp.stop_all()
    for name, status in statuses.items():
        assert "\n" not in status.line and "Traceback" not in status.line, status.line
        assert status.tools == () and status.pid is None
        assert status.state == ("disabled" if name == "off" else "failed"), status.line
    assert "command 'llmspell-no-such-mcp-server' not found" in statuses["ghost"].line
    assert "[mcp.servers.ghost]" in statuses["ghost"].line
    assert "/nonexistent/folder/mcp-server" in statuses["ghostpath"].line
    assert "exited with code 3" in statuses["quits"].line and "no config found" in statuses["quits"].line
    # a real server refusing its arguments: its own last words are the reason
    assert "exited with code 1" in statuses["badarg"].line and "Mars/Base" in statuses["badarg"].line
    assert "timed out after 0.5 s during initialize" in statuses["mute"].line
    assert "LLMSPELL_TEST_UNSET_TOKEN" in statuses["needskey"].line and "not set" in statuses["needskey"].line
    assert "/nonexistent/folder" in statuses["nowhere"].line and "cwd" in statuses["nowhere"].line
    assert "enabled = false" in statuses["off"].line
    assert mcp.tools() == []
    # the server that never answered was ended, not left running
    await _until(lambda: not _children_running("llmspell-mute-server"), "the silent server to be gone")


async def test_env_references_reach_the_server_and_only_text_reaches_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "probe_server.py"
    script.write_text(PROBE_SERVER, encoding="utf-8")
    monkeypatch.setenv("LLMSPELL_TEST_PROBE_TOKEN", "s3cret-from-the-shell")
    path = _write_config(
        f"[mcp.servers.probe]\ncommand = {_toml(PYTHON)}\nargs = {_toml([str(script)])}\n"
        f"cwd = {_toml(str(tmp_path))}\ntimeout = 20\nside_effects = false\n"
        "[mcp.servers.probe.env]\n"
        'PROBE_TOKEN = "$LLMSPELL_TEST_PROBE_TOKEN"\nPRICE = "5$$ or ${LLMSPELL_TEST_PROBE_TOKEN}"\n'
    )
    mcp = McpTools.from_config(load_config(path))
    try:
        (status,) = await mcp.start_all()
        assert status.state == "running", status.line
        # "env.read" is no valid function name for OpenAI: the dot becomes "_"
        assert status.tools == ("probe__env_read", "probe__picture")
        registry = ToolRegistry(mcp.tools())

        async def env_of_server(name: str) -> str:
            result = await registry.call("probe__env_read", {"name": name})
            assert result.ok, result.content
            return result.content

        assert await env_of_server("PROBE_TOKEN") == "s3cret-from-the-shell"
        assert await env_of_server("PRICE") == "5$ or s3cret-from-the-shell"
        # llmspell's own environment is not handed to servers, only what env names
        assert await env_of_server("LLMSPELL_TEST_PROBE_TOKEN") == "<unset>"

        picture = await registry.call("probe__picture", {})
        assert picture.ok
        assert picture.content.startswith("a red dot\n")
        assert "image/png" in picture.content and "not shown" in picture.content
    finally:
        await mcp.stop_all()


async def test_start_all_by_name_starts_a_disabled_server_and_refuses_unknown_names() -> None:
    mcp = McpTools([McpServerConfig("quits", PYTHON, ("-c", "raise SystemExit(4)"), enabled=False)])
    with pytest.raises(Exception, match="no MCP server named 'nope'") as err:
        await mcp.start_all(["nope"])
    assert "quits" in str(err.value)
    (status,) = await mcp.start_all(["quits"])
    assert status.state == "failed" and "exited with code 4" in status.line


def test_tool_names_fit_the_openai_pattern() -> None:
    assert mcp_tool_name("time", "get_current_time") == "time__get_current_time"
    assert mcp_tool_name("fs", "files/read.v2") == "fs__files_read_v2"
    long = mcp_tool_name("server", "x" * 100)
    assert len(long) == 64 and long != mcp_tool_name("server", "x" * 99)
    # two tools that clean up to one name stay apart
    first = mcp_tool_name("fs", "a.b")
    assert mcp_tool_name("fs", "a_b", taken=[first]) != first


def test_mcp_servers_parse_from_config() -> None:
    path = _write_config(
        "[mcp.servers.time]\n"
        'command = "uvx"\nargs = ["mcp-server-time", "--local-timezone", "UTC"]\n'
        "[mcp.servers.github]\n"
        'command = "github-mcp-server"\nargs = ["stdio"]\nenv = { GITHUB_TOKEN = "$GITHUB_TOKEN" }\n'
        'cwd = "~/src"\nenabled = false\ntimeout = 5\nside_effects = false\nallow = ["search_code"]\n'
    )
    time, github = load_config(path).mcp_servers
    assert time == McpServerConfig(name="time", command="uvx", args=("mcp-server-time", "--local-timezone", "UTC"))
    assert time.enabled and time.side_effects and time.timeout == 30.0
    assert github.env == {"GITHUB_TOKEN": "$GITHUB_TOKEN"}
    assert github.cwd == Path("~/src").expanduser()
    assert (github.enabled, github.timeout, github.side_effects, github.allow) == (False, 5.0, False, ("search_code",))
    assert github.resolved_env({"GITHUB_TOKEN": "ghp_abc"}) == {"GITHUB_TOKEN": "ghp_abc"}
    with pytest.raises(ConfigError, match=r"env\.GITHUB_TOKEN of \[mcp\.servers\.github\] names \$GITHUB_TOKEN"):
        github.resolved_env({})
    assert load_config(_write_config("")).mcp_servers == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mcp = 3\n", "mcp: must be a table"),
        ("[mcp]\nserver = {}\n", "[mcp]: unknown key(s) server"),
        ('[mcp.servers]\ntime = "uvx"\n', "[mcp.servers.time]: must be a table"),
        ('[mcp.servers.time]\nargs = ["x"]\n', "[mcp.servers.time]: command = None must be"),
        ('[mcp.servers.time]\ncommand = ""\n', "command = '' must be"),
        ('[mcp.servers.time]\ncommand = "x"\ncolour = 1\n', "[mcp.servers.time]: unknown key(s) colour"),
        ('[mcp.servers.time]\ncommand = "x"\nargs = "--utc"\n', "args = '--utc' must be a list of strings"),
        ('[mcp.servers.time]\ncommand = "x"\nargs = [1]\n', "args = [1] must be a list of strings"),
        ('[mcp.servers.time]\ncommand = "x"\nenv = ["A"]\n', "env must be a table of strings"),
        ('[mcp.servers.time]\ncommand = "x"\nenv = { A = 1 }\n', "env.A = 1 must be a string"),
        ('[mcp.servers.time]\ncommand = "x"\nenv = { "A-B" = "1" }\n', "env key 'A-B' is not an environment"),
        ('[mcp.servers.time]\ncommand = "x"\nenv = { A = "${}" }\n', "is not a variable name"),
        ('[mcp.servers.time]\ncommand = "x"\nenv = { A = "5$" }\n', "has a '$' that names no variable"),
        ('[mcp.servers.gh]\ncommand = "x"\nenv = { GITHUB_TOKEN = "ghp_1234" }\n', "env.GITHUB_TOKEN looks like a"),
        ('[mcp.servers.ai]\ncommand = "x"\nenv = { OPENAI_API_KEY = "sk-12" }\n', "credential written into the file"),
        ('[mcp.servers.time]\ncommand = "x"\ncwd = 5\n', "cwd = 5 must be a folder path"),
        ('[mcp.servers.time]\ncommand = "x"\nenabled = "yes"\n', "enabled = 'yes' must be true or false"),
        ('[mcp.servers.time]\ncommand = "x"\ntimeout = 0\n', "timeout = 0 must be seconds from 0.1 to 3600"),
        ('[mcp.servers.time]\ncommand = "x"\ntimeout = nan\n', "timeout = nan must be seconds"),
        ('[mcp.servers.time]\ncommand = "x"\ntimeout = true\n', "timeout = True must be seconds"),
        ('[mcp.servers.time]\ncommand = "x"\nside_effects = 0\n', "side_effects = 0 must be true or false"),
        ('[mcp.servers.time]\ncommand = "x"\nallow = "all"\n', "allow = 'all' must be a list of strings"),
        ('[mcp.servers."my server"]\ncommand = "x"\n', "the name 'my server' must be 1-24 letters"),
        ('[mcp.servers.a__b]\ncommand = "x"\n', "no '__'"),
        ('[mcp.servers.time_]\ncommand = "x"\n', "not starting or ending in '_'"),
    ],
)
def test_bad_mcp_config_names_the_file_the_table_and_the_key(text: str, expected: str) -> None:
    path = _write_config(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert expected in message
