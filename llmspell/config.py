"""Every path and setting in one place: ~/.llmspell/config.toml, moved by LLMSPELL_HOME, env overrides."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmspell.endpoints import Endpoint, parse_endpoints
from llmspell.errors import ConfigError, InvalidOptions
from llmspell.types import Options, check_keep_alive

if TYPE_CHECKING:
    from llmspell.tools.mcpconfig import McpServerConfig


def home() -> Path:
    """The folder that holds config, models and history; ``LLMSPELL_HOME`` relocates it."""
    env = os.environ.get("LLMSPELL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".llmspell"


def writable_folder(path: Path, what: str) -> Path:
    """``path`` as a folder llmspell can write ``what`` into (made if missing); else one error that says which
    setting put it there (LLMSPELL_HOME, LLMSPELL_MODELS or the default ~/.llmspell) and what to do."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(20, "not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as exc:
        if isinstance(exc, FileExistsError) or (path.exists() and not path.is_dir()):
            reason = "it is a file, not a folder"
        elif isinstance(exc, NotADirectoryError):
            reason = "a folder on its way is a file"
        else:
            reason = exc.strerror or str(exc)
        for var in ("LLMSPELL_MODELS", "LLMSPELL_HOME"):
            value = os.environ.get(var)
            if value and (path == Path(value).expanduser() or Path(value).expanduser() in path.parents):
                raise ConfigError(
                    f"cannot keep {what} in {path}: {reason}",
                    hint=f"{var}={value} must be a folder you can write to; point it at one (or unset it)",
                ) from None
        raise ConfigError(
            f"cannot keep {what} in {path}: {reason}", hint="make it a folder you can write to, or set LLMSPELL_HOME"
        ) from None
    return path


def config_path() -> Path:
    """Where config.toml lives."""
    return home() / "config.toml"


def models_dir() -> Path:
    """Where pulled and assembled GGUF files live."""
    env = os.environ.get("LLMSPELL_MODELS")
    return Path(env).expanduser() if env else home() / "models"


def history_path() -> Path:
    """The SQLite conversation store."""
    return home() / "history.sqlite3"


def repl_history_path() -> Path:
    """The input history of ``llmspell chat`` (what was typed at its prompt, for up-arrow and Ctrl-R)."""
    return home() / "repl_history"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub itself resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def ollama_models_dir() -> Path:
    """Ollama's model store (manifests and blobs), as Ollama resolves it."""
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"


def ollama_url(config_value: str | None = None) -> str:
    """The Ollama server address: ``OLLAMA_HOST``, then config, then Ollama's default."""
    raw = os.environ.get("OLLAMA_HOST") or config_value or "http://127.0.0.1:11434"
    if "://" not in raw:
        raw = "http://" + raw
    scheme, rest = raw.split("://", 1)
    hostport = rest.rstrip("/")
    if hostport.startswith("0.0.0.0"):
        hostport = "127.0.0.1" + hostport[len("0.0.0.0") :]
    if ":" not in hostport.rsplit("]", 1)[-1]:
        hostport += ":11434"
    return f"{scheme}://{hostport}"


_KNOWN: dict[str, set[str]] = {
    "": {
        "default_model",
        "keep_alive",
        "options",
        "context_overflow",
        "llamacpp",
        "providers",
        "arena",
        "endpoints",
        "mcp",
        "tools",
    },
    "arena": {"pool", "hide_stats", "size"},
    "tools": {"enabled", "allow", "max_steps", "root"},
    "llamacpp": {
        "threads",
        "gpu_layers",
        "num_ctx",
        "state_cache_mb",
        "discover_hf_cache",
        "discover_ollama_store",
        "model_folders",
    },
    "providers": {"ollama"},
    "providers.ollama": {"url", "enabled", "connect_timeout", "read_timeout"},
}


@dataclass
class Config:
    """The parsed config file with defaults filled in."""

    default_model: str = "smollm2:135m"
    #: seconds an idle model stays loaded; 0 unloads after each request, negative keeps it forever
    keep_alive: float = 300.0
    options: Options = field(default_factory=Options)
    #: a conversation longer than the model's context: "drop_oldest" leaves its oldest turns out, "fail" stops
    context_overflow: str = "drop_oldest"
    threads: int | None = None
    gpu_layers: int = -1
    num_ctx: int = 4096
    state_cache_mb: int = 256
    discover_hf_cache: bool = True
    discover_ollama_store: bool = True
    #: folders whose .gguf files are listed and run by their file name, besides the models folder itself
    model_folders: tuple[Path, ...] = ()
    ollama_enabled: bool = True
    ollama_url: str | None = None
    ollama_connect_timeout: float = 2.0
    ollama_read_timeout: float = 300.0
    #: the models blind rounds draw from; empty = every model that is on this machine
    arena_pool: tuple[str, ...] = ()
    #: keep speed figures hidden until the vote (they give a model away)
    arena_hide_stats: bool = True
    #: answers per blind round
    arena_size: int = 2
    #: servers elsewhere, each a backend under its own name (``MODEL@NAME``)
    endpoints: tuple[Endpoint, ...] = ()
    #: MCP servers whose tools models may call (``[mcp.servers.NAME]``)
    mcp_servers: tuple[McpServerConfig, ...] = ()
    #: tools every face turns on at start (built-in names and MCP server names), as --tools does
    tool_enabled: tuple[str, ...] = ()
    #: side-effect tools that run without asking ("*": all of them); the others ask first
    tool_allow: tuple[str, ...] = ()
    #: model steps one turn may take with tools before it stops
    tool_max_steps: int = 8
    #: the folder the built-in file and shell tools are confined to (default: the current folder)
    tool_root: Path | None = None
    path: Path | None = None


def _check_keys(table: dict[str, Any], where: str, path: Path) -> None:
    unknown = sorted(set(table) - _KNOWN[where])
    if unknown:
        place = f"[{where}]" if where else "the top level"
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)} in {place}",
            hint=f"valid keys there: {', '.join(sorted(_KNOWN[where]))}",
        )


def _typed(value: Any, kind: type | tuple[type, ...], key: str, path: Path) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{path}: {key} must be {getattr(kind, '__name__', kind)}, not {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}: {key} must be {names}, not {value!r}")
    return value


def _ranged(value: Any, kind: type, key: str, path: Path, low: float, high: float, why: str = "") -> Any:
    """A number of the right type within [low, high] (NaN and infinity never are); the message names the file,
    the key, the value and the range."""
    number = _typed(value, (int, float) if kind is float else kind, key, path)
    if not (low <= number <= high):  # also False for NaN
        shown = f"{low:g} to {high:g}" if kind is float else f"{int(low)} to {int(high)}"
        raise ConfigError(
            f"{path}: {key} = {value!r} is out of range; use a value from {shown}{f' ({why})' if why else ''}"
        )
    return kind(number)


def _table(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    """A [section] of the file; any other shape (``llamacpp = 5``, ``[[llamacpp]]``) is named as the error."""
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"{path}: {key} must be a table ([{key}] with keys below it), not {type(table).__name__}",
            hint="see `llmspell init-config` for the shape of the file",
        )
    return table


def load_config(path: Path | None = None) -> Config:
    """Read config.toml (missing file -> defaults); every unknown key or wrong type is an error."""
    path = path or config_path()
    cfg = Config(path=path)
    if not path.exists():
        return cfg
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", hint="fix the file or run `llmspell init-config --force`"
        ) from None
    _check_keys(data, "", path)
    if "default_model" in data:
        cfg.default_model = _typed(data["default_model"], str, "default_model", path)
    if "keep_alive" in data:
        seconds = float(_typed(data["keep_alive"], (int, float), "keep_alive", path))
        try:
            cfg.keep_alive = check_keep_alive(seconds)
        except InvalidOptions as exc:
            raise ConfigError(f"{path}: {exc.message}", hint=exc.hint) from None
    if "options" in data:
        try:
            cfg.options = Options.from_dict(_typed(data["options"], dict, "options", path))
        except Exception as exc:
            raise ConfigError(f"{path}: [options]: {exc}") from None
    lc = _table(data, "llamacpp", path)
    _check_keys(lc, "llamacpp", path)
    cores = os.cpu_count() or 1
    if "threads" in lc:
        # more threads than a few per core only makes ggml's spinning barriers wait (100000 made 1,600 threads)
        cfg.threads = _ranged(lc["threads"], int, "llamacpp.threads", path, 1, 4 * cores, f"{cores} cores here")
    if "gpu_layers" in lc:
        cfg.gpu_layers = _ranged(lc["gpu_layers"], int, "llamacpp.gpu_layers", path, -1, 100_000, "-1 = all")
    if "num_ctx" in lc:
        cfg.num_ctx = _ranged(lc["num_ctx"], int, "llamacpp.num_ctx", path, 16, 1_048_576)
    if "state_cache_mb" in lc:
        import psutil

        memory_mb = psutil.virtual_memory().total // 2**20
        cfg.state_cache_mb = _ranged(
            lc["state_cache_mb"], int, "llamacpp.state_cache_mb", path, 0, memory_mb, "this machine's memory"
        )
    if "discover_hf_cache" in lc:
        cfg.discover_hf_cache = _typed(lc["discover_hf_cache"], bool, "llamacpp.discover_hf_cache", path)
    if "discover_ollama_store" in lc:
        cfg.discover_ollama_store = _typed(lc["discover_ollama_store"], bool, "llamacpp.discover_ollama_store", path)
    if "model_folders" in lc:
        folders = _typed(lc["model_folders"], list, "llamacpp.model_folders", path)
        if not all(isinstance(f, str) and f for f in folders):
            raise ConfigError(
                f"{path}: llamacpp.model_folders must be a list of folder paths",
                hint='e.g. model_folders = ["~/models", "/data/gguf"]',
            )
        cfg.model_folders = tuple(Path(f).expanduser() for f in folders)
    if "context_overflow" in data:
        overflow = _typed(data["context_overflow"], str, "context_overflow", path)
        if overflow not in ("drop_oldest", "fail"):
            raise ConfigError(
                f'{path}: context_overflow must be "drop_oldest" or "fail", not {overflow!r}',
                hint="drop_oldest leaves the oldest turns out of a long conversation; fail stops with an error",
            )
        cfg.context_overflow = overflow
    providers = _table(data, "providers", path)
    _check_keys(providers, "providers", path)
    ol = _table(providers, "ollama", path)
    _check_keys(ol, "providers.ollama", path)
    if "url" in ol:
        url = _typed(ol["url"], str, "providers.ollama.url", path)
        if urlsplit(url if "://" in url else f"http://{url}").scheme not in ("http", "https"):
            raise ConfigError(
                f"{path}: providers.ollama.url = {url!r} is not an http(s) address",
                hint='e.g. url = "http://127.0.0.1:11434"',
            )
        cfg.ollama_url = url
    if "enabled" in ol:
        cfg.ollama_enabled = _typed(ol["enabled"], bool, "providers.ollama.enabled", path)
    if "connect_timeout" in ol:
        cfg.ollama_connect_timeout = _ranged(
            ol["connect_timeout"], float, "providers.ollama.connect_timeout", path, 0.01, 3600, "seconds"
        )
    if "read_timeout" in ol:
        cfg.ollama_read_timeout = _ranged(
            ol["read_timeout"], float, "providers.ollama.read_timeout", path, 0.01, 86_400, "seconds"
        )
    arena = _table(data, "arena", path)
    _check_keys(arena, "arena", path)
    if "pool" in arena:
        pool = _typed(arena["pool"], list, "arena.pool", path)
        for item in pool:
            _typed(item, str, "arena.pool entries", path)
        cfg.arena_pool = tuple(pool)
    if "hide_stats" in arena:
        cfg.arena_hide_stats = _typed(arena["hide_stats"], bool, "arena.hide_stats", path)
    if "size" in arena:
        cfg.arena_size = _ranged(arena["size"], int, "arena.size", path, 2, 4, "answers per round")
    tools = _table(data, "tools", path)
    _check_keys(tools, "tools", path)
    for key, attr in (("enabled", "tool_enabled"), ("allow", "tool_allow")):
        if key in tools:
            names = _typed(tools[key], list, f"tools.{key}", path)
            if not all(isinstance(n, str) and n.strip() for n in names):
                raise ConfigError(
                    f"{path}: tools.{key} must be a list of tool names",
                    hint=f'e.g. {key} = ["read_file", "list_directory"]',
                )
            setattr(cfg, attr, tuple(n.strip() for n in names))
    if "max_steps" in tools:
        cfg.tool_max_steps = _ranged(tools["max_steps"], int, "tools.max_steps", path, 1, 100, "model steps")
    if "root" in tools:
        root = _typed(tools["root"], str, "tools.root", path)
        if not root.strip():
            raise ConfigError(f"{path}: tools.root is empty", hint='e.g. root = "~/projects/notes"')
        cfg.tool_root = Path(root).expanduser()
    if "endpoints" in data:
        cfg.endpoints = parse_endpoints(data["endpoints"], path)
    if "mcp" in data:
        from llmspell.tools.mcpconfig import parse_mcp  # only then: llmspell.tools loads jsonschema

        cfg.mcp_servers = parse_mcp(data["mcp"], path)
    return cfg


CONFIG_TEMPLATE = """\
# llmspell configuration. Every key is optional; the values shown are the defaults.
# LLMSPELL_HOME moves this file, the models folder and the history to another folder.

# The model used when none is named: local/NAME:VARIANT@BACKEND (see `llmspell model available`).
# default_model = "smollm2:135m"

# Seconds an idle model stays in memory; 0 unloads after each answer, -1 keeps it loaded.
# keep_alive = 300

# Default generation options, overridden per request.
[options]
# temperature = 0.8
# top_k = 40
# top_p = 0.95
# min_p = 0.05
# repeat_penalty = 1.1
# seed = -1            # -1 = random
# max_tokens = 512
# num_ctx = 4096
# stop = ["\\n\\nUser:"]

# A conversation longer than the model's context window: "drop_oldest" leaves its oldest turns out (the
# system prompt and the newest turns stay, with room for the answer; every face says so), "fail" stops with
# an error instead.
# context_overflow = "drop_oldest"

# The embedded llama.cpp engine.
[llamacpp]
# threads = 2          # default: one per physical core, fewer while other programs keep cores busy;
#                      # a number here is used as it is, whatever else runs
# gpu_layers = -1      # layers offloaded to the GPU when the build supports one; 0 = CPU only
# num_ctx = 4096       # context window when a request does not set num_ctx
# state_cache_mb = 256 # memory for saved conversation states (prefix reuse across conversations)
# discover_hf_cache = true      # list GGUF files already in the Hugging Face cache
# discover_ollama_store = true  # list models already in ~/.ollama/models
# model_folders = ["~/models"]  # .gguf files here (and in the models folder) run by their file name

# An Ollama server (or any server speaking the Ollama API). OLLAMA_HOST overrides url.
[providers.ollama]
# url = "http://127.0.0.1:11434"
# enabled = true
# connect_timeout = 2.0
# read_timeout = 300.0

# Servers elsewhere, each a backend under its own name: run a model there as MODEL@NAME
# (`llmspell endpoint add` writes these). kind is "openai" (vLLM, SGLang, TGI, llama-server, LM Studio, ...)
# or "ollama". The API key is never written here: api_key_env names the variable that holds it.
# [[endpoints]]
# name = "gpubox"
# kind = "openai"
# url = "http://gpubox:8000/v1"
# api_key_env = "GPUBOX_API_KEY"
# headers = { "X-Team" = "ml" }
# connect_timeout = 5.0
# read_timeout = 300.0   # also how long the first token may take
# models = ["llama3*"]   # offer only these model ids (globs); default: all the server lists

# Tools from Model Context Protocol servers (stdio), started through the official SDK. Their tools are named
# NAME__TOOL; each asks before it runs unless side_effects = false or it is in allow. $VAR in env is read from
# the environment when the server starts (a secret is never written here).
# [mcp.servers.time]
# command = "python"
# args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]
# env = { "TZ" = "UTC" }
# timeout = 30          # seconds to start, and for each call
# side_effects = false  # read-only: its tools run without asking
# allow = []            # tools (by the server's own names) that run without asking

# Tools a model may call (function calling): the built-ins read_file, write_file, list_directory,
# search_files, search_in_files, file_info, make_directory, run_shell, and MCP servers by name. Each is off
# until enabled here or with --tools; write_file, make_directory, run_shell and MCP tools with side effects
# ask before they run unless allowed.
[tools]
# enabled = []          # e.g. ["read_file", "list_directory", "time"]
# allow = []            # e.g. ["write_file"]; "*" lets every tool run without asking
# max_steps = 8         # model steps one turn may take (each step may call several tools)
# root = "."            # the folder the file and shell tools are confined to (default: the current folder)

# Blind rounds between models (the TUI's arena screen, /arena, %arena, `llmspell arena`).
[arena]
# pool = ["smollm2:135m", "gemma3:270m"]   # default: every model on this machine
# hide_stats = true    # speed figures stay hidden until the vote (they give a model away)
# size = 2             # answers per round, 2 to 4
"""


def write_config_template(path: Path | None = None, *, force: bool = False) -> Path:
    """Write the commented default config; refuse to overwrite unless ``force``."""
    path = path or config_path()
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="pass --force to overwrite it")
    writable_folder(path.parent, "the config file")
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(CONFIG_TEMPLATE, encoding="utf-8")
    tmp.replace(path)
    return path
