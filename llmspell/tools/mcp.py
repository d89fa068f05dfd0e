"""MCP servers as tools: each ``[mcp.servers.NAME]`` runs as a stdio subprocess through the official ``mcp`` SDK,
and its tools become :class:`~llmspell.tools.base.Tool` objects named ``NAME__tool``.

A server that cannot start, or dies, is a status line (:class:`McpStatus`), never an exception out of
:meth:`McpTools.start_all`; its tools leave :meth:`McpTools.tools`, and a call to one already handed out answers
with a ToolError (which :meth:`ToolRegistry.call <llmspell.tools.base.ToolRegistry.call>` turns into an error
result) instead of hanging. Everything here runs on one event loop: start, call and stop from the same loop.

Tool names: ``NAME__tool`` rather than ``NAME.tool`` (a dot breaks OpenAI's ``^[a-zA-Z0-9_-]{1,64}$``) or the
bare ``tool`` (two servers, or a server and a built-in, both offer ``read_file``; the prefix also tells the user
which server acts). A server name holds no ``__``, so the prefix always splits off at the first ``__``.

The SDK is imported when a server starts, not with this module: ``import mcp`` takes over a second and loads
starlette, which the headless core must not pull in just by being imported.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import math
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal

from llmspell.errors import ConfigError, ToolError
from llmspell.tools.base import Tool, ToolRegistry
from llmspell.tools.mcpconfig import McpServerConfig

if TYPE_CHECKING:
    from llmspell.config import Config

__all__ = ["McpServer", "McpStatus", "McpTools", "mcp_tool_name"]

#: where a configured server stands
McpState = Literal["disabled", "stopped", "starting", "running", "failed", "died"]

#: the processes stdio_client spawns in the current task, collected by the hook below (see _sdk)
_SPAWNED: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("llmspell_mcp_spawned", default=None)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
#: seconds the SDK may take to wind a server down (close stdin, wait, SIGTERM, wait, SIGKILL, reap), with margin
_SHUTDOWN_GRACE = 10.0


def _sdk() -> tuple[Any, Any, Any]:
    """The SDK's ``ClientSession``, ``StdioServerParameters`` and ``stdio_client``, imported on first use.

    Also wraps the SDK's process spawner once, so each server's runner task learns its process: the SDK hands
    out no process handle, and the exit code and pid are what make "exited with code 3" and a kill check
    possible. If a future SDK renames the spawner, servers still run; status lines then lack the exit code.
    """
    import mcp.client.stdio as stdio
    from mcp import ClientSession, StdioServerParameters

    original = getattr(stdio, "_create_platform_compatible_process", None)
    if original is not None and not getattr(original, "_llmspell_hook", False):

        async def spawn(*args: Any, **kwargs: Any) -> Any:
            process = await original(*args, **kwargs)
            sink = _SPAWNED.get()
            if sink is not None:
                sink.append(process)
            return process

        spawn._llmspell_hook = True  # type: ignore[attr-defined]
        stdio._create_platform_compatible_process = spawn
    return ClientSession, StdioServerParameters, stdio.stdio_client


def mcp_tool_name(server: str, tool: str, taken: Iterable[str] = ()) -> str:
    """The name a model sees for ``tool`` of ``server``: ``server__tool``, with characters OpenAI refuses made
    ``_``, cut to 64 with a short hash of the original when too long or when it clashes with one in ``taken``."""
    safe = _INVALID_NAME_CHARS.sub("_", tool) or "tool"
    name = f"{server}__{safe}"
    if len(name) > 64 or name in set(taken):
        digest = hashlib.sha1(tool.encode("utf-8")).hexdigest()[:8]
        name = f"{name[:55]}_{digest}"
    return name


@dataclass(frozen=True)
class McpStatus:
    """Where one configured MCP server stands, with one line a face can show as it is."""

    name: str
    state: McpState
    #: what happened, in words: "running: 2 tools (...)", "failed: command 'x' not found on PATH (...)", ...
    line: str
    #: the names its tools have (empty unless running)
    tools: tuple[str, ...] = ()
    #: the server's process id while it runs (None when unknown or not running)
    pid: int | None = None

    @property
    def ok(self) -> bool:
        """Whether its tools can be called now."""
        return self.state == "running"

    def __str__(self) -> str:
        return f"{self.name}: {self.line}"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, which the SDK's task groups wrap errors in."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a finished request's outcome, so a request abandoned on timeout or death logs no warning."""
    if not task.cancelled():
        task.exception()


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _result_text(server: str, tool: str, result: Any) -> str:
    """A ``CallToolResult`` as the text a model reads; an error result is a ToolError carrying the server's words.

    Only text reaches the model: images, audio and binary resources are named, not passed on.
    """
    data: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    parts: list[str] = []
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind in ("image", "audio"):
            size = len(block.get("data") or "") * 3 // 4
            parts.append(f"[{kind} {block.get('mimeType', '')} of {size} bytes not shown: only text reaches the model]")
        elif kind == "resource":
            resource = block.get("resource") or {}
            if "text" in resource:
                parts.append(str(resource["text"]))
            else:
                parts.append(f"[binary resource {resource.get('uri', '')} not shown: only text reaches the model]")
        elif kind == "resource_link":
            parts.append(f"[link to resource {block.get('uri', '')}]")
        else:
            parts.append(f"[{kind} content not shown: only text reaches the model]")
    if not parts and data.get("structuredContent") is not None:
        parts.append(json.dumps(data["structuredContent"], ensure_ascii=False))
    text = "\n".join(parts)
    if data.get("isError"):
        raise ToolError(f"MCP server {server!r} says: {text or f'{tool} failed (no details given)'}")
    return text or "(the tool returned no content)"


async def _list_tools(session: Any) -> list[dict[str, Any]]:
    """Every tool the server lists, all pages, as wire-shaped dicts (the same keys in SDK 1.x and 2.x)."""
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):  # a server paging forever is cut off rather than followed
        if cursor is None:
            result = await session.list_tools()
        else:
            try:
                from mcp.types import PaginatedRequestParams

                result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
            except (ImportError, TypeError):  # SDK 1.x before params= existed
                result = await session.list_tools(cursor=cursor)
        data = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        tools.extend(data.get("tools") or [])
        cursor = data.get("nextCursor")
        if not cursor:
            break
    return tools


class McpServer:
    """One configured MCP server: started and stopped explicitly, its tools offered while it runs."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self._state: McpState = "stopped" if config.enabled else "disabled"
        self._line = "not started" if config.enabled else f"disabled (enabled = false in [mcp.servers.{config.name}])"
        self._tools: dict[str, Tool] = {}
        self._skipped: list[str] = []
        self._session: Any = None
        self._process: Any = None
        self._task: asyncio.Task[None] | None = None
        self._scope: Any = None
        self._phase = "starting"
        self._stopping = False
        self._lost = False
        self._errlog: IO[bytes] | None = None

    @property
    def name(self) -> str:
        """The server's name in config (``[mcp.servers.NAME]``), which prefixes its tools' names."""
        return self.config.name

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs."""
        process = self._process
        if process is None or process.returncode is not None:
            return None
        return int(process.pid)

    def status(self) -> McpStatus:
        """Where the server stands now."""
        running = self._state == "running"
        return McpStatus(
            name=self.name,
            state=self._state,
            line=self._line,
            tools=tuple(self._tools) if running else (),
            pid=self.pid if running else None,
        )

    def tools(self) -> list[Tool]:
        """Its tools while it runs; none once it has failed, died or stopped."""
        return list(self._tools.values()) if self._state == "running" else []

    # ----------------------------------------------------------------------------------------------------------
    # start and stop

    async def start(self) -> McpStatus:
        """Start the server and list its tools, within its timeout; a problem is the returned status, not a raise."""
        if self._state in ("running", "starting"):
            return self.status()
        if not self.config.enabled:
            return self.status()
        self._reset()
        try:
            command, env = self._prepare()
        except ToolError as err:
            return self._fail(err.message)
        import anyio

        ClientSession, StdioServerParameters, stdio_client = _sdk()
        params = StdioServerParameters(
            command=command,
            args=list(self.config.args),
            env=env,
            cwd=str(self.config.cwd) if self.config.cwd else None,
        )
        self._state, self._line = "starting", "starting"
        self._scope = anyio.CancelScope(deadline=anyio.current_time() + self.config.timeout)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(
            self._run(params, stdio_client, ClientSession, ready), name=f"llmspell-mcp-{self.name}"
        )
        try:
            # the runner enforces the timeout itself; this bound only guards against an SDK that never returns
            await asyncio.wait(
                {ready, self._task},
                timeout=self.config.timeout + _SHUTDOWN_GRACE,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:
            await self.stop()
            raise
        if not ready.done() and not self._task.done():
            self._scope.cancel()
            self._fail(f"did not start within {self.config.timeout:g} s, and did not stop when told to")
        return self.status()

    async def stop(self) -> None:
        """Stop the server and wait until its process is gone (the SDK closes stdin, then terminates, then kills)."""
        task = self._task
        if task is None:
            return
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()
        if not task.done():
            await asyncio.wait({task}, timeout=_SHUTDOWN_GRACE)

    def _reset(self) -> None:
        self._tools, self._skipped = {}, []
        self._session = self._process = self._task = self._scope = None
        self._stopping = self._lost = False
        self._phase = "starting"

    def _fail(self, line: str) -> McpStatus:
        self._state, self._line = "failed", f"failed: {line}"
        self._tools = {}
        return self.status()

    def _prepare(self) -> tuple[str, dict[str, str]]:
        """The command to run and the extra environment, or a ToolError saying why the server cannot start."""
        where = f"[mcp.servers.{self.name}]"
        try:
            env = self.config.resolved_env()
        except ConfigError as err:
            raise ToolError(f"{err.message}; {err.hint}" if err.hint else err.message) from None
        cwd = self.config.cwd
        if cwd is not None and not cwd.is_dir():
            raise ToolError(f"cwd {str(cwd)!r} is not a folder; set cwd in {where} to one that exists")
        command = self.config.command
        if os.sep in command or (os.altsep and os.altsep in command):
            path = Path(command).expanduser()
            if not path.is_absolute():
                path = (cwd or Path.cwd()) / path
            if not path.is_file():
                raise ToolError(f"command {command!r} not found: {path} does not exist; fix command in {where}")
            if not os.access(path, os.X_OK):
                raise ToolError(f"command {command!r} is not executable: chmod +x {path}, or fix command in {where}")
            return str(path), env
        search = env.get("PATH", os.environ.get("PATH", os.defpath))
        if shutil.which(command, path=search) is None:
            raise ToolError(
                f"command {command!r} not found on PATH; install it, or give its full path in command of {where}"
            )
        return command, env

    async def _run(self, params: Any, stdio_client: Any, client_session: Any, ready: asyncio.Future[None]) -> None:
        """The task that owns the server: its process, pipes and session live exactly as long as this runs."""
        import anyio

        spawned: list[Any] = []
        _SPAWNED.set(spawned)  # this task's own context: concurrent starts never see each other's processes
        errlog = tempfile.TemporaryFile(prefix=f"llmspell-mcp-{self.name}-", suffix=".stderr")
        self._errlog = errlog
        error: BaseException | None = None
        was_running = False
        try:
            with self._scope:
                self._phase = "starting the process"
                async with stdio_client(params, errlog=errlog) as (read, write):
                    self._process = spawned[0] if spawned else None
                    async with client_session(read, write) as session:
                        self._phase = "initialize"
                        await session.initialize()
                        self._phase = "listing its tools"
                        listed = await _list_tools(session)
                        self._scope.deadline = math.inf  # the start timeout ends here; each call has its own
                        self._session = session
                        self._install(listed)
                        self._state, self._line = "running", self._running_line()
                        was_running = True
                        ready.set_result(None)
                        if self._process is not None:
                            await self._process.wait()
                        else:
                            await anyio.sleep_forever()  # until stop() or a lost connection cancels the scope
        except Exception as exc:
            error = _leaf(exc)
        except BaseException:
            errlog.close()  # cancelled from outside (the loop closing): nobody will read the status
            raise
        finally:
            self._session = None
            self._tools = {}
            if not ready.done():
                ready.set_result(None)
        self._settle(error, was_running)

    def _settle(self, error: BaseException | None, was_running: bool) -> None:
        """Say how the runner ended: stopped on request, timed out, failed to start, or died while running."""
        code = self._process.returncode if self._process is not None else None
        stderr = self._last_stderr()
        if self._errlog is not None:
            self._errlog.close()
            self._errlog = None
        if self._stopping and not was_running and self._state == "failed":
            return  # start() already said why it gave up
        if self._stopping:
            self._state, self._line = "stopped", "stopped"
            return
        said = f": {stderr}" if stderr else " (it wrote nothing to stderr)"
        if was_running:
            if code is not None:
                how = _describe_exit(code)
                if code < 0:
                    said = ""  # killed from outside: what it logged last is old news, not the cause
            elif self._lost:
                how = "closed its connection"
            else:
                how = f"stopped answering ({_one_line(str(error))})" if error else "ended"
            self._state, self._line = "died", f"died while running: {how}{said}"
            return
        if isinstance(error, FileNotFoundError):
            line = f"command {self.config.command!r} not found; fix command in [mcp.servers.{self.name}]"
        elif isinstance(error, PermissionError):
            line = f"command {self.config.command!r} cannot be run: {error.strerror or error}"
        elif self._scope is not None and self._scope.cancelled_caught:
            # checked before the exit code: the SDK ends a server that timed out, which gives it one
            command = " ".join([self.config.command, *self.config.args])
            line = (
                f"timed out after {self.config.timeout:g} s during {self._phase} "
                f"(is `{_one_line(command, 80)}` an MCP server speaking stdio? raise timeout if it starts slowly)"
            )
        elif code is not None:
            line = f"{_describe_exit(code)} during {self._phase}{said}"
        elif error is not None:
            text = _one_line(str(error)) or type(error).__name__
            line = f"could not start ({text}) during {self._phase}{said}"
        else:
            line = f"ended during {self._phase}{said}"
        self._state, self._line = "failed", f"failed: {line}"

    def _last_stderr(self) -> str:
        """The last non-blank line the server wrote to stderr, cleaned to one short line."""
        errlog = self._errlog
        if errlog is None:
            return ""
        try:
            fd = errlog.fileno()
            size = os.fstat(fd).st_size
            # pread leaves the file offset alone: the server shares it and may still be writing
            tail = os.pread(fd, 8192, max(0, size - 8192)).decode("utf-8", errors="replace")
        except (OSError, ValueError, AttributeError):  # AttributeError: no os.pread (Windows)
            return ""
        lines = [_one_line(line) for line in tail.splitlines()]
        lines = [line for line in lines if line]
        return lines[-1] if lines else ""

    def _running_line(self) -> str:
        names = ", ".join(self._tools) or "none"
        count = len(self._tools)
        line = f"running: {count} tool{'s' if count != 1 else ''} ({names})"
        if self._skipped:
            line += f"; skipped {'; '.join(self._skipped)}"
        return line

    # ----------------------------------------------------------------------------------------------------------
    # tools and calls

    def _install(self, listed: list[dict[str, Any]]) -> None:
        """Make a Tool of each listed MCP tool; one with an unusable schema is skipped and named in the status."""
        tools: dict[str, Tool] = {}
        for entry in listed:
            original = str(entry.get("name", ""))
            schema = entry.get("inputSchema")
            schema = dict(schema) if isinstance(schema, dict) else {}
            schema.setdefault("type", "object")  # some servers leave it out for tools without arguments
            schema.setdefault("properties", {})
            description = str(entry.get("description") or entry.get("title") or "")
            name = mcp_tool_name(self.name, original, tools)
            try:
                tools[name] = Tool(
                    name=name,
                    description=description,
                    parameters=schema,
                    handler=self._handler(original),
                    side_effects=self.config.side_effects and original not in self.config.allow,
                    source=f"mcp:{self.name}",
                )
            except ToolError as err:
                self._skipped.append(f"{original!r} ({_one_line(err.message, 120)})")
        self._tools = tools

    def _handler(self, original: str) -> Any:
        async def call_mcp_tool(**arguments: Any) -> str:
            return await self.call(original, arguments)

        call_mcp_tool.__doc__ = f"Calls {original!r} on the MCP server {self.name!r}."
        return call_mcp_tool

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        """Call ``tool`` (the server's own name for it) and return its text; every failure is a ToolError that
        says what happened, within the server's timeout."""
        session, runner = self._session, self._task
        if self._state != "running" or session is None or runner is None:
            raise ToolError(f"MCP server {self.name!r} is not running ({self._line}), so {tool} cannot be called")
        request = asyncio.ensure_future(session.call_tool(tool, arguments))
        request.add_done_callback(_consume)
        try:
            # the runner ends when the server's process does: some SDK releases leave a request to a dead
            # server waiting forever, so the call races the runner rather than trusting the SDK to fail it
            done, _ = await asyncio.wait(
                {request, runner}, timeout=self.config.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not request.done():
                request.cancel()
        if request not in done:
            if await self._gone():
                raise ToolError(f"MCP server {self.name!r} {self._line}")
            raise ToolError(
                f"MCP server {self.name!r} did not answer {tool} within {self.config.timeout:g} s",
                hint=f"raise timeout in [mcp.servers.{self.name}] if the tool is slow",
            )
        try:
            result = request.result()
        except Exception as exc:
            if await self._gone(exc):
                raise ToolError(f"MCP server {self.name!r} {self._line}") from None
            raise ToolError(f"MCP server {self.name!r} refused {tool}: {_one_line(str(_leaf(exc)))}") from None
        return _result_text(self.name, tool, result)

    async def _gone(self, exc: BaseException | None = None) -> bool:
        """Whether the server is dead or its connection lost; if so, wind it down so its status says why."""
        process = self._process
        dead = process is not None and process.returncode is not None
        closed = exc is not None and "connection closed" in str(_leaf(exc)).lower()
        ended = self._task is not None and self._task.done()
        if not (dead or closed or ended or self._state == "died"):
            return False
        self._lost = True
        if self._scope is not None:
            self._scope.cancel()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=_SHUTDOWN_GRACE)
        return True


class McpTools:
    """Every configured MCP server together: start them all at once, see how each stands, offer their tools."""

    def __init__(self, configs: Iterable[McpServerConfig]) -> None:
        self.servers: dict[str, McpServer] = {c.name: McpServer(c) for c in configs}

    @classmethod
    def from_config(cls, config: Config) -> McpTools:
        """The servers of a loaded config (``[mcp.servers.NAME]``)."""
        return cls(config.mcp_servers)

    async def start_all(self, names: Iterable[str] | None = None) -> list[McpStatus]:
        """Start the enabled servers (or just ``names``, enabled or not) concurrently, each within its timeout.

        A server that fails is a status in the answer, never a raise; only an unknown name is a ToolError.
        """
        if names is None:
            chosen = [s for s in self.servers.values() if s.config.enabled]
        else:
            wanted = list(dict.fromkeys(names))
            unknown = [n for n in wanted if n not in self.servers]
            if unknown:
                known = ", ".join(self.servers) or "none are configured"
                raise ToolError(
                    f"no MCP server named {', '.join(map(repr, unknown))} (the servers: {known})",
                    hint="MCP servers are [mcp.servers.NAME] tables in config.toml",
                )
            chosen = []
            for name in wanted:
                server = self.servers[name]
                if not server.config.enabled:
                    # naming a server asks for it, whatever the file's default says
                    server = McpServer(_enabled(server.config))
                    self.servers[name] = server
                chosen.append(server)
        await asyncio.gather(*(s.start() for s in chosen))
        return self.status()

    async def stop_all(self) -> None:
        """Stop every server and wait until their processes are gone."""
        await asyncio.gather(*(s.stop() for s in self.servers.values()))

    def status(self) -> list[McpStatus]:
        """One status per configured server, in config order."""
        return [s.status() for s in self.servers.values()]

    def tools(self) -> list[Tool]:
        """The tools of every running server."""
        return [tool for server in self.servers.values() for tool in server.tools()]

    def sync(self, registry: ToolRegistry) -> None:
        """Make ``registry`` hold exactly the running servers' tools: add new ones, drop those of dead servers."""
        current = {tool.name for tool in self.tools()}
        for tool in registry.tools():
            if tool.source.startswith("mcp:") and tool.source[4:] in self.servers and tool.name not in current:
                registry.remove(tool.name)
        for tool in self.tools():
            registry.add(tool, replace=True)

    async def __aenter__(self) -> McpTools:
        await self.start_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_all()


def _enabled(config: McpServerConfig) -> McpServerConfig:
    from dataclasses import replace

    return replace(config, enabled=True)
