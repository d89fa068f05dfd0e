"""Adding, replacing and removing ``[[endpoints]]`` entries of config.toml without disturbing the rest of it.

The user's comments, blank lines and key order stay as they were: an entry's own lines are cut or inserted as text
(values rendered by tomlkit), the result is checked to mean exactly the old file plus or minus that entry (else the
edit is made through tomlkit's document instead), then validated as a whole config on a temporary file beside it,
and only then written, whole, over the old file. A file that is not valid TOML is never rewritten. No API key is
ever written: an entry names the environment variable that holds it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomlkit
from tomlkit.items import AoT

from llmspell import config as cfgmod
from llmspell.endpoints import KINDS, NAME, Endpoint, looks_like_key, normalize_url, parse_endpoint, reserved_names
from llmspell.errors import ConfigError
from llmspell.files import write_whole

#: Ollama's own port: an address on it is taken for an Ollama server unless the kind is given
OLLAMA_PORT = 11434
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: how the keys of well-known services begin (OpenAI, Anthropic, Hugging Face, Groq, xAI, GitHub, Google, ...)
_HEADER = re.compile(r"""^[ \t]*\[\[[ \t]*(?:endpoints|"endpoints"|'endpoints')[ \t]*\]\][ \t]*(?:#.*)?$""")
#: a sub-table of the entry above it (``[endpoints.headers]``): still part of that entry
_SUB_HEADER = re.compile(r"""^[ \t]*\[\[?[ \t]*(?:endpoints|"endpoints"|'endpoints')[ \t]*\.""")
_ANY_HEADER = re.compile(r"^[ \t]*\[")
_BLANK_OR_COMMENT = re.compile(r"^[ \t]*(?:#.*)?$")


# ----- checking what the user typed ------------------------------------------------------------------------------


def check_key_env(value: str) -> str:
    """The name of the environment variable that holds the key; a key given in its place is refused (and not
    repeated in the message, which may end up in a terminal's scrollback or a log)."""
    if looks_like_key(value):
        raise ConfigError(
            "--key-env takes the NAME of an environment variable, and this looks like an API key itself: "
            "the key must never be in the config file",
            hint="export it in your shell (export GPUBOX_API_KEY=...) and pass --key-env GPUBOX_API_KEY",
        )
    if not _ENV_VAR.match(value):
        raise ConfigError(
            f"--key-env {value!r} is not an environment variable's name (letters, digits and '_')",
            hint="e.g. --key-env GPUBOX_API_KEY, after export GPUBOX_API_KEY=... in the shell that runs llmspell",
        )
    return value


def check_name(name: str) -> str:
    """An endpoint name that can be written after '@' and is no backend's name."""
    if not NAME.match(name):
        lowered = name.lower()
        raise ConfigError(
            f"endpoint name {name!r} must be 1-40 lowercase letters, digits, '-' or '_' (it is written after '@')",
            hint=f"e.g. {lowered}" if NAME.match(lowered) else "e.g. gpubox or lab-ollama",
        )
    if name in reserved_names():
        raise ConfigError(
            f"{name!r} is a backend's name, so MODEL@{name} could not mean this endpoint",
            hint=f"pick another name, e.g. {name}-remote or gpubox",
        )
    return name


def parse_header(text: str) -> tuple[str, str]:
    """``K=V`` from ``--header`` as a header's name and value."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--header {text!r} must be NAME=VALUE", hint="e.g. --header X-Team=ml")
    return key.strip(), value.strip()


def guess_kind(url: str) -> tuple[str, str]:
    """The kind of server an address without ``--kind`` is taken for, and a line saying why."""
    url = url.strip()
    parts = urlsplit(url if "://" in url else "http://" + url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.path.rstrip("/").endswith("/v1"):
        # Ollama's own OpenAI-compatible address (http://host:11434/v1) is an OpenAI server at that path
        return "openai", "kind: openai (the url ends in /v1, the OpenAI API; pass --kind ollama for Ollama's own API)"
    if port == OLLAMA_PORT:
        return (
            "ollama",
            f"kind: ollama (port {OLLAMA_PORT} is Ollama's; pass --kind openai if it speaks the OpenAI API)",
        )
    return "openai", "kind: openai (the default; pass --kind ollama for an Ollama server)"


def make_entry(
    name: str,
    url: str,
    *,
    kind: str,
    key_env: str | None = None,
    headers: dict[str, str] | None = None,
    models: list[str] | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    path: Path | None = None,
) -> dict[str, Any]:
    """An ``[[endpoints]]`` entry as it will be written, checked as the config loader checks it (so what is
    written always loads); the url gets a scheme when it has none and ``/v1`` where an OpenAI server needs it."""
    check_name(name)
    if kind not in KINDS:
        raise ConfigError(f"kind {kind!r} must be one of {', '.join(KINDS)}")
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    entry: dict[str, Any] = {"name": name, "kind": kind, "url": normalize_url(kind, url)}
    if key_env:
        entry["api_key_env"] = check_key_env(key_env)
    if headers:
        entry["headers"] = dict(headers)
    for key, seconds in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
        if seconds is not None:
            entry[key] = int(seconds) if float(seconds).is_integer() else float(seconds)
    if models:
        entry["models"] = list(models)
    parse_endpoint(entry, path or cfgmod.config_path(), 0)
    return entry


# ----- reading ---------------------------------------------------------------------------------------------------


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and what it means; a file that is not TOML is an error that says it was left alone."""
    if not path.exists():
        return "", {}
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", hint="fix it by hand (it was left as it is), then run this again"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _entries(data: dict[str, Any]) -> list[Any]:
    value = data.get("endpoints", [])
    return value if isinstance(value, list) else []


def _names(data: dict[str, Any]) -> list[str]:
    return [e["name"] for e in _entries(data) if isinstance(e, dict) and isinstance(e.get("name"), str)]


def _index(data: dict[str, Any], name: str, path: Path) -> int:
    """Where the entry called ``name`` is; an unknown name is an error listing the names there are."""
    for i, entry in enumerate(_entries(data)):
        if isinstance(entry, dict) and entry.get("name") == name:
            return i
    raise _unknown(name, path, _names(data))


def _unknown(name: str, path: Path | None, names: list[str]) -> ConfigError:
    """No endpoint of that name: the error lists those there are."""
    there = f"endpoints there: {', '.join(names)}" if names else "there are none: add one with `llmspell endpoint add`"
    return ConfigError(f"there is no endpoint {name!r} in {path}", hint=there)


def list_endpoints(path: Path | None = None) -> tuple[Endpoint, ...]:
    """Every ``[[endpoints]]`` entry of the config, checked."""
    return cfgmod.load_config(path or cfgmod.config_path()).endpoints


def find_endpoint(name: str, path: Path | None = None) -> tuple[cfgmod.Config, Endpoint]:
    """The config and its endpoint called ``name`` (turned off or not); unknown names are an error listing them."""
    config = cfgmod.load_config(path or cfgmod.config_path())
    for endpoint in config.endpoints:
        if endpoint.name == name:
            return config, endpoint
    raise _unknown(name, config.path, [e.name for e in config.endpoints])


# ----- editing the text ------------------------------------------------------------------------------------------


def _spans(lines: list[str]) -> list[tuple[int, int]]:
    """Each ``[[endpoints]]`` entry's own lines, as (first, last + 1): its header to its last key. Comments and
    blank lines after that belong to what follows (they are usually about the next table)."""
    spans = []
    i = 0
    while i < len(lines):
        if not _HEADER.match(lines[i].rstrip("\r\n")):
            i += 1
            continue
        start = last = i
        i += 1
        while i < len(lines):
            line = lines[i].rstrip("\r\n")
            if _ANY_HEADER.match(line) and not _SUB_HEADER.match(line):
                break
            if not _BLANK_OR_COMMENT.match(line):
                last = i
            i += 1
        spans.append((start, last + 1))
    return spans


def _entry_lines(entry: dict[str, Any], newline: str) -> list[str]:
    """The entry as ``[[endpoints]]`` lines, its values written by tomlkit (quoting, escapes)."""
    aot = tomlkit.aot()
    aot.append(_item(entry, inline=False))
    doc = tomlkit.document()
    doc.add("endpoints", aot)
    return [line + newline for line in tomlkit.dumps(doc).splitlines()]


def _blank(line: str) -> bool:
    return not line.strip()


def _text_edit(text: str, op: str, index: int, entry: dict[str, Any] | None) -> str | None:
    """The edit made on the lines; None when the entries cannot be told apart by their headers."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += newline
    spans = _spans(lines)
    if op == "add":
        assert entry is not None
        new = _entry_lines(entry, newline)
        if spans:
            at = spans[-1][1]  # after the last entry's keys, before whatever comments follow it
            return "".join([*lines[:at], newline, *new, *lines[at:]])
        if not lines:
            return "".join(new)
        gap = [] if _blank(lines[-1]) else [newline]
        return "".join([*lines, *gap, *new])
    if index >= len(spans):
        return None
    start, end = spans[index]
    if op == "replace":
        assert entry is not None
        return "".join([*lines[:start], *_entry_lines(entry, newline), *lines[end:]])
    # remove: the blank line before the entry goes too when another would follow it (no doubled gap)
    if start > 0 and _blank(lines[start - 1]) and (end >= len(lines) or _blank(lines[end])):
        start -= 1
    return "".join([*lines[:start], *lines[end:]])


def _doc_edit(text: str, op: str, index: int, entry: dict[str, Any] | None) -> str:
    """The same edit made through tomlkit's document: for entries written another way (``endpoints = [{...}]``)."""
    doc = tomlkit.parse(text)
    container: Any = doc.get("endpoints")
    if op == "add":
        assert entry is not None
        if container is None:
            container = tomlkit.aot()
            doc.add("endpoints", container)
        container.append(_item(entry, inline=not isinstance(container, AoT)))
    elif op == "replace":
        assert entry is not None
        container[index] = _item(entry, inline=not isinstance(container, AoT))
    else:
        del container[index]
        if len(container) == 0:
            del doc["endpoints"]
    return tomlkit.dumps(doc)


def _item(entry: dict[str, Any], *, inline: bool) -> Any:
    """The entry as a tomlkit table (or inline table), its headers an inline table."""
    item: Any = tomlkit.inline_table() if inline else tomlkit.table()
    for key, value in entry.items():
        if isinstance(value, dict):
            sub = tomlkit.inline_table()
            sub.update(value)
            item.add(key, sub)
        else:
            item.add(key, value)
    return item


def _means(text: str, expected: dict[str, Any]) -> bool:
    try:
        return tomllib.loads(text) == expected
    except tomllib.TOMLDecodeError:
        return False


def _edited(text: str, data: dict[str, Any], op: str, index: int, entry: dict[str, Any] | None, path: Path) -> str:
    """The new text of the file: the old one with that one change, and no other in what it means."""
    expected = copy.deepcopy(data)
    entries = list(_entries(expected))
    if op == "add":
        assert entry is not None
        entries.append(entry)
    elif op == "replace":
        assert entry is not None
        entries[index] = entry
    else:
        del entries[index]
    if entries:
        expected["endpoints"] = entries
    else:
        expected.pop("endpoints", None)
    new = _text_edit(text, op, index, entry)
    if new is not None and _means(new, expected):
        return new
    new = _doc_edit(text, op, index, entry)
    if _means(new, expected):
        return new
    raise ConfigError(
        f"cannot edit the endpoints of {path} without changing something else in it; it was left as it is",
        hint="edit the [[endpoints]] entries by hand",
    )


def _save(path: Path, text: str) -> cfgmod.Config:
    """Check ``text`` as a whole config (on a temporary file beside ``path``), then write it over ``path``."""
    cfgmod.writable_folder(path.parent, "the config file")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check.toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        try:
            config = cfgmod.load_config(Path(tmp))
        except ConfigError as exc:
            raise ConfigError(
                f"{exc.message.replace(tmp, str(path))} (nothing was written)",
                hint=exc.hint.replace(tmp, str(path)) if exc.hint else None,
            ) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    write_whole(path, lambda f: f.write(text))
    if mode is not None:
        with contextlib.suppress(OSError):
            os.chmod(path, mode)  # a file the user made private stays private
    config.path = path
    return config


def add_endpoint(entry: dict[str, Any], *, replace: bool = False, path: Path | None = None) -> tuple[Endpoint, bool]:
    """Write ``entry`` (from :func:`make_entry`) into the config; an existing name is refused unless ``replace``,
    which rewrites that entry where it is. Returns the endpoint as the config now reads it, and whether one was
    replaced."""
    path = path or cfgmod.config_path()
    text, data = _read(path)
    if data:
        cfgmod.load_config(path)  # a config that does not load now is named as it is, before any edit
    name = entry["name"]
    replaced = name in _names(data)
    if replaced and not replace:
        raise ConfigError(
            f"there is already an endpoint {name!r} in {path}",
            hint="pass --replace to replace it, or pick another name",
        )
    new = _edited(
        text, data, "replace" if replaced else "add", _index(data, name, path) if replaced else -1, entry, path
    )
    config = _save(path, new)
    return next(e for e in config.endpoints if e.name == name), replaced


def remove_endpoint(name: str, path: Path | None = None) -> dict[str, Any]:
    """Take the entry called ``name`` out of the config, keeping everything else; returns what it said."""
    path = path or cfgmod.config_path()
    text, data = _read(path)
    index = _index(data, name, path)
    removed: dict[str, Any] = _entries(data)[index]
    _save(path, _edited(text, data, "remove", index, None, path))
    return removed
