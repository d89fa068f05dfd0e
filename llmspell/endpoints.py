"""Named endpoints: servers elsewhere (vLLM, SGLang, TGI, llama-server, LM Studio, another Ollama) that the
config lists as ``[[endpoints]]`` and a spec names with ``MODEL@ENDPOINT``.

Each endpoint becomes one backend instance of its kind, under its own name. The API key is never in the file:
the config names the environment variable that holds it (``api_key_env``), read when a request is made.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmspell.errors import ConfigError

#: the kinds of server an endpoint can be
KINDS = ("openai", "ollama")
#: keys an ``[[endpoints]]`` entry may have
KEYS = frozenset(
    {"name", "kind", "url", "api_key_env", "headers", "connect_timeout", "read_timeout", "models", "enabled"}
)
#: an endpoint's name, as written after '@' (lowercase, so ``@GPUBox`` and ``@gpubox`` are one endpoint)
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: how API keys of the usual services begin
_KEY_PREFIXES = ("sk-", "sk_", "hf_", "gsk_", "xai-", "pk-", "ghp_", "github_pat_", "aiza", "bearer ", "nvapi-")
#: an HTTP header name (RFC 9110 token) and a value that can be sent as it is (printable ASCII, no CR/LF)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
#: headers that carry credentials: they belong in an environment variable, never in the file
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"})
_EXAMPLE = (
    '[[endpoints]]\nname = "gpubox"\nkind = "openai"\nurl = "http://gpubox:8000/v1"\napi_key_env = "GPUBOX_API_KEY"'
)


@dataclass(frozen=True)
class Endpoint:
    """One server elsewhere, as config.toml describes it."""

    name: str
    kind: str
    #: the address requests go to: for ``openai`` the API root (``…/v1``), for ``ollama`` the server itself
    url: str
    #: the environment variable holding the API key (sent as ``Authorization: Bearer KEY``); None: no key
    api_key_env: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 5.0
    #: seconds to wait for the next bytes of an answer (and for the first token)
    read_timeout: float = 300.0
    #: glob patterns of the model ids offered through llmspell (empty: every model the server lists)
    models: tuple[str, ...] = ()
    enabled: bool = True

    def api_key(self) -> str | None:
        """The key from the environment variable the config names, read now (so a key set later is used); the
        spaces and line ends a key file leaves around it are dropped. A key that still holds a control character
        is refused without showing it (an HTTP library would print it in its error)."""
        if not self.api_key_env:
            return None
        key = (os.environ.get(self.api_key_env) or "").strip()
        if key and not _HEADER_VALUE.match(key):
            from llmspell.errors import BackendUnavailable

            raise BackendUnavailable(
                f"the key in {self.api_key_env} holds a control character or a non-ASCII one, so it cannot be sent",
                hint=f"set {self.api_key_env} to the key alone (check the file it was read from)",
            )
        return key or None

    def has_key(self) -> bool:
        """Whether the key's variable is set to something (never raises, never shows it)."""
        return bool(self.api_key_env and (os.environ.get(self.api_key_env) or "").strip())

    def request_headers(self) -> dict[str, str]:
        """The configured headers plus the key's Authorization header."""
        out = dict(self.headers)
        key = self.api_key()
        if key:
            out["Authorization"] = f"Bearer {key}"
        return out

    def allows(self, model: str) -> bool:
        """Whether the model filter offers ``model`` (every model when there is no filter)."""
        return not self.models or any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)

    def key_hint(self) -> str:
        """What to do about a refused key, naming the variable (never its value)."""
        if not self.api_key_env:
            return (
                "the server wants a key: put it in an environment variable and add "
                f'api_key_env = "VAR" to [[endpoints]] {self.name}'
            )
        if not self.has_key():
            return f"{self.api_key_env} is not set in this environment: export it with the server's API key"
        return f"the key in {self.api_key_env} was refused: check it is the server's key and has access"


def looks_like_key(value: str) -> bool:
    """Whether ``value`` looks like an API key itself rather than the name of a variable holding one."""
    text = value.strip()
    if text.lower().startswith(_KEY_PREFIXES) and len(text) >= 12:
        return True
    if len(text) >= 20 and not _ENV_VAR.match(text):
        return True
    # variable names are words in capitals; a long run of mixed case and digits is a token
    has_lower = any(c.islower() for c in text)
    has_digit = any(c.isdigit() for c in text)
    return len(text) >= 24 and has_lower and has_digit


def normalize_url(kind: str, url: str) -> str:
    """The address requests are made to: a scheme is required; an OpenAI server given without a path gets
    ``/v1`` (every engine named in the README serves the API there); no trailing slash."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    if kind == "openai" and not path:
        path = "/v1"
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, parts.query, ""))


def _fail(path: Path, where: str, problem: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"{path}: {where}: {problem}", hint=hint or f"an endpoint looks like:\n{_EXAMPLE}")


def _number(value: Any, key: str, path: Path, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low <= value <= high):
        raise _fail(path, where, f"{key} = {value!r} must be seconds from {low:g} to {high:g}")
    return float(value)


def reserved_names() -> set[str]:
    """Names an endpoint may not take: the backends' kinds and their aliases (``@gguf`` must stay the engine).
    A kind that is only ever an endpoint (openai) is free: ``@openai`` is the natural name of api.openai.com."""
    from llmspell.backends.registry import ENDPOINT_ONLY, kinds
    from llmspell.spec import BACKEND_ALIASES

    return (set(kinds()) | set(BACKEND_ALIASES) | {"ollama"}) - ENDPOINT_ONLY


def parse_endpoint(entry: Any, path: Path, index: int) -> Endpoint:
    """One ``[[endpoints]]`` table checked field by field; every problem names the file, the entry and the key."""
    where = f"[[endpoints]] #{index + 1}"
    if not isinstance(entry, dict):
        raise _fail(path, where, f"must be a table, not {type(entry).__name__}")
    name = entry.get("name")
    if isinstance(name, str):
        where = f"[[endpoints]] {name!r}"
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise _fail(path, where, f"unknown key(s) {', '.join(unknown)}", f"valid keys: {', '.join(sorted(KEYS))}")
    if not isinstance(name, str) or not NAME.match(name):
        raise _fail(
            path,
            where,
            f"name = {name!r} must be 1-40 lowercase letters, digits, '-' or '_' (it is written after '@')",
        )
    if name in reserved_names():
        raise _fail(path, where, f"name {name!r} is a backend's name", "pick another name, e.g. gpubox or lab-ollama")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise _fail(path, where, f"kind = {kind!r} must be one of {', '.join(KINDS)}")
    url = entry.get("url")
    if not isinstance(url, str):
        raise _fail(path, where, f"url = {url!r} must be an http(s) address")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _fail(
            path, where, f"url = {url!r} is not an http(s) address with a host", 'e.g. url = "http://gpubox:8000/v1"'
        )
    try:
        parts.port  # noqa: B018 - reading it is the check: a port that is not a number from 0 to 65535 raises
    except ValueError:
        raise _fail(path, where, f"url = {url!r} has a port that is not a number from 1 to 65535") from None
    if parts.username or parts.password:
        raise _fail(
            path, where, "url carries a user or password", "put the key in an environment variable: api_key_env"
        )
    key_env = entry.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not _ENV_VAR.match(key_env) or looks_like_key(key_env)):
        a_key = isinstance(key_env, str) and looks_like_key(key_env)
        raise _fail(
            path,
            where,
            "api_key_env must name an environment variable"
            + (" (this looks like the key itself, which must never be in the file)" if a_key else ""),
            'e.g. api_key_env = "GPUBOX_API_KEY", then export GPUBOX_API_KEY=... in the shell that runs llmspell',
        )
    headers = entry.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise _fail(path, where, "headers must be a table of strings", 'e.g. headers = { "X-Team" = "ml" }')
    bad = next((k for k, v in headers.items() if not _HEADER_NAME.match(k) or not _HEADER_VALUE.match(v)), None)
    if bad is not None:
        raise _fail(
            path,
            where,
            f"header {bad!r} has a name that is not one word, or a value with a line break or a non-ASCII character",
            'headers are sent as they are: e.g. headers = { "X-Team" = "ml" }',
        )
    secret = sorted(k for k in headers if k.lower() in _SECRET_HEADERS)
    if secret:
        raise _fail(
            path,
            where,
            f"header {secret[0]!r} carries a credential, which must not be written in the file",
            "put the key in an environment variable and name it with api_key_env",
        )
    models = entry.get("models", [])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise _fail(path, where, "models must be a list of model ids or glob patterns", 'e.g. models = ["llama3*"]')
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _fail(path, where, f"enabled = {enabled!r} must be true or false")
    return Endpoint(
        name=name,
        kind=kind,
        url=normalize_url(kind, url),
        api_key_env=key_env,
        headers=dict(headers),
        connect_timeout=_number(entry.get("connect_timeout", 5.0), "connect_timeout", path, where, 0.01, 3600),
        read_timeout=_number(entry.get("read_timeout", 300.0), "read_timeout", path, where, 0.01, 86_400),
        models=tuple(models),
        enabled=enabled,
    )


def parse_endpoints(value: Any, path: Path) -> tuple[Endpoint, ...]:
    """Every ``[[endpoints]]`` entry; two with one name are refused (a spec could not say which it means)."""
    if not isinstance(value, list):
        raise ConfigError(
            f"{path}: endpoints must be a list of tables ([[endpoints]] entries), not {type(value).__name__}",
            hint=f"an endpoint looks like:\n{_EXAMPLE}",
        )
    out: list[Endpoint] = []
    for index, entry in enumerate(value):
        endpoint = parse_endpoint(entry, path, index)
        if any(e.name == endpoint.name for e in out):
            raise ConfigError(f"{path}: two [[endpoints]] are called {endpoint.name!r}", hint="give each its own name")
        out.append(endpoint)
    return tuple(out)


def tls_problem(exc: BaseException) -> str | None:
    """The TLS failure somewhere under ``exc`` (wrong scheme, an untrusted certificate, a hostname mismatch)."""
    import ssl

    seen: BaseException | None = exc
    depth = 0
    while seen is not None and depth < 8:
        if isinstance(seen, ssl.SSLError):
            return getattr(seen, "verify_message", None) or seen.reason or str(seen)
        text = str(seen)
        if "SSL" in text or "CERTIFICATE" in text.upper():
            return text
        seen = seen.__cause__ or seen.__context__
        depth += 1
    return None
