"""``[mcp.servers.NAME]`` tables of config.toml: the MCP servers whose tools llmspell offers to models.

Parsing only (no SDK import): config.py calls :func:`parse_mcp` for every load, so this stays cheap.
Secrets never sit in the file: an ``env`` value names an environment variable (``"$GITHUB_TOKEN"``), read
when the server starts.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmspell.errors import ConfigError

#: keys a ``[mcp.servers.NAME]`` table may have
KEYS = frozenset({"command", "args", "env", "cwd", "enabled", "timeout", "side_effects", "allow"})
#: a server's name: it prefixes its tools' names (``NAME__tool``), so it must fit OpenAI's function-name
#: pattern, and holds no ``__`` and no edge ``_`` so the prefix always splits off at the first ``__``
NAME = re.compile(r"^(?!.*__)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,22}[A-Za-z0-9-])?$")
DEFAULT_TIMEOUT = 30.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: ``$VAR``, ``${VAR}`` and ``$$`` (a literal dollar) in an env value
_REFERENCE = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")
#: env names whose value is a credential: such a value must come from the environment, not the file
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|(^|_)KEY$|(^|_)PAT$", re.I)
_EXAMPLE = (
    '[mcp.servers.time]\ncommand = "uvx"\nargs = ["mcp-server-time", "--local-timezone", "UTC"]\n'
    'env = { GITHUB_TOKEN = "$GITHUB_TOKEN" }   # values may name variables, read when it starts\n'
    "timeout = 30          # seconds for starting and for each call\n"
    "side_effects = false  # read-only: its tools run without asking\n"
    'allow = ["get_current_time"]  # or: these tools run without asking'
)


@dataclass(frozen=True)
class McpServerConfig:
    """One MCP server as config.toml describes it: a stdio command and how far its tools are trusted."""

    name: str
    command: str
    args: tuple[str, ...] = ()
    #: extra environment for the server; values may hold ``$VAR`` / ``${VAR}`` references (``$$`` is a ``$``)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    enabled: bool = True
    #: seconds allowed for starting (spawn + initialize + listing tools) and for each tool call
    timeout: float = DEFAULT_TIMEOUT
    #: whether its tools may change things (then each call asks first); false marks the server read-only
    side_effects: bool = True
    #: tools (by the server's own names) that run without asking even when the server has side effects
    allow: tuple[str, ...] = ()

    def resolved_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """``env`` with its references filled from ``environ`` (default: this process's); an unset variable
        is a ConfigError naming it, the key and the server."""
        source = os.environ if environ is None else environ
        out: dict[str, str] = {}
        for key, value in self.env.items():

            def fill(match: re.Match[str], key: str = key) -> str:
                if match.group("dollar"):
                    return "$"
                var = match.group("braced") or match.group("bare")
                if var not in source:
                    raise ConfigError(
                        f"env.{key} of [mcp.servers.{self.name}] names ${var}, which is not set in this environment",
                        hint=f"export {var}=... in the shell that runs llmspell, or set enabled = false there",
                    )
                return source[var]

            out[key] = _REFERENCE.sub(fill, value)
        return out


def _fail(path: Path, where: str, problem: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"{path}: {where}: {problem}", hint=hint or f"an MCP server looks like:\n{_EXAMPLE}")


def _strings(value: Any, key: str, path: Path, where: str, example: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(path, where, f"{key} = {value!r} must be a list of strings", f"e.g. {key} = {example}")
    return tuple(value)


def _check_env_value(key: str, value: str, path: Path, where: str) -> None:
    for match in _REFERENCE.finditer(value):
        braced = match.group("braced")
        if braced is not None and not _ENV_NAME.match(braced):
            raise _fail(path, where, f"env.{key} = {value!r}: ${{{braced}}} is not a variable name")
    if "$" in _REFERENCE.sub("", value):
        raise _fail(
            path,
            where,
            f"env.{key} = {value!r} has a '$' that names no variable",
            'write $NAME or ${NAME} to read a variable, $$ for a literal "$"',
        )
    if _SECRET_NAME.search(key) and not _REFERENCE.search(value.replace("$$", "")) and value:
        raise _fail(
            path,
            where,
            f"env.{key} looks like a credential written into the file, which must never hold one",
            f'write env.{key} = "${key}" and export {key}=... in the shell that runs llmspell',
        )


def parse_server(name: str, table: Any, path: Path) -> McpServerConfig:
    """One ``[mcp.servers.NAME]`` table checked key by key; every problem names the file, the table and the key."""
    where = f"[mcp.servers.{name}]"
    if not isinstance(table, dict):
        raise _fail(path, where, f"must be a table, not {type(table).__name__}")
    if not NAME.match(name):
        raise _fail(
            path,
            where,
            f"the name {name!r} must be 1-24 letters, digits, '-' or '_' (no '__', not starting or ending in '_'): "
            "it prefixes the names of the server's tools",
            "e.g. [mcp.servers.time] or [mcp.servers.git-hub]",
        )
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise _fail(path, where, f"unknown key(s) {', '.join(unknown)}", f"valid keys: {', '.join(sorted(KEYS))}")
    command = table.get("command")
    if not isinstance(command, str) or not command.strip():
        raise _fail(path, where, f"command = {command!r} must be the program that starts the server")
    args = _strings(table.get("args", []), "args", path, where, '["mcp-server-time", "--local-timezone", "UTC"]')
    env = table.get("env", {})
    if not isinstance(env, dict):
        raise _fail(path, where, f"env must be a table of strings, not {env!r}", 'e.g. env = { TOKEN = "$TOKEN" }')
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise _fail(path, where, f"env key {key!r} is not an environment variable name")
        if not isinstance(value, str):
            raise _fail(path, where, f"env.{key} = {value!r} must be a string", f'e.g. env.{key} = "${key}"')
        _check_env_value(key, value, path, where)
    cwd = table.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise _fail(path, where, f"cwd = {cwd!r} must be a folder path", 'e.g. cwd = "~/projects/site"')
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _fail(path, where, f"enabled = {enabled!r} must be true or false")
    timeout = table.get("timeout", DEFAULT_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or not 0.1 <= timeout <= 3600
    ):
        raise _fail(path, where, f"timeout = {timeout!r} must be seconds from 0.1 to 3600", "e.g. timeout = 30")
    side_effects = table.get("side_effects", True)
    if not isinstance(side_effects, bool):
        raise _fail(
            path,
            where,
            f"side_effects = {side_effects!r} must be true or false",
            "false marks the server read-only: its tools then run without asking",
        )
    allow = _strings(table.get("allow", []), "allow", path, where, '["get_current_time"]')
    return McpServerConfig(
        name=name,
        command=command,
        args=args,
        env=dict(env),
        cwd=Path(cwd).expanduser() if cwd else None,
        enabled=enabled,
        timeout=float(timeout),
        side_effects=side_effects,
        allow=allow,
    )


def parse_mcp(value: Any, path: Path) -> tuple[McpServerConfig, ...]:
    """The ``[mcp]`` table: its ``servers`` subtables, in the file's order."""
    if not isinstance(value, dict):
        raise _fail(path, "mcp", f"must be a table ([mcp.servers.NAME] entries), not {type(value).__name__}")
    unknown = sorted(set(value) - {"servers"})
    if unknown:
        raise _fail(path, "[mcp]", f"unknown key(s) {', '.join(unknown)}", "valid keys there: servers")
    servers = value.get("servers", {})
    if not isinstance(servers, dict):
        raise _fail(path, "[mcp]", f"servers must be tables ([mcp.servers.NAME]), not {type(servers).__name__}")
    # TOML itself refuses a name twice, so the names are unique here
    return tuple(parse_server(name, table, path) for name, table in servers.items())
