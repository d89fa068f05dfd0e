"""ModelSpec: parse and format ``local/NAME:VARIANT@BACKEND`` and bare ``.gguf`` paths."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llmspell.errors import InvalidSpec

#: the backend kinds llmspell ships (installed plugins add theirs: llmspell.backends.registry), and the aliases
#: users may type for them
BACKENDS = ("llamacpp", "ollama")
BACKEND_ALIASES = {
    "gguf": "llamacpp",
    "embedded": "llamacpp",
    "llama.cpp": "llamacpp",
    "llama-cpp": "llamacpp",
    # the name the documents llmspell grew from give the embedded engine
    "candle": "llamacpp",
}

_EXAMPLE = (
    "a valid spec looks like smollm2:135m, local/qwen2.5:0.5b@ollama, tinyllama:Q4_K_M@llamacpp, "
    "ollama/qwen2.5:0.5b or ./model.gguf"
)
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VARIANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model reference: a catalog/backend name with optional variant and backend, or a GGUF path."""

    name: str
    variant: str | None = None
    backend: str | None = None
    path: Path | None = None

    @property
    def is_path(self) -> bool:
        """True for a bare ``.gguf`` file spec."""
        return self.path is not None

    @property
    def tag(self) -> str:
        """``NAME:VARIANT`` (or ``NAME`` / the path), without the backend."""
        if self.path is not None:
            return str(self.path)
        return f"{self.name}:{self.variant}" if self.variant else self.name

    def with_backend(self, backend: str | None) -> ModelSpec:
        """The same spec bound to another backend."""
        return ModelSpec(self.name, self.variant, backend, self.path)

    def __str__(self) -> str:
        return f"{self.tag}@{self.backend}" if self.backend else self.tag


def known_backend(name: str) -> str | None:
    """The backend kind ``name`` stands for (a kind or an alias such as candle, gguf, embedded); None if none."""
    key = name.strip().lower()
    key = BACKEND_ALIASES.get(key, key)
    if key in BACKENDS:
        return key
    from llmspell.backends.registry import kinds

    return key if key in kinds() else None


def canonical_backend(name: str) -> str:
    """Map an alias (gguf, embedded, candle) to its backend kind; reject unknown names."""
    key = known_backend(name)
    if key is None:
        from llmspell.backends.registry import kinds

        known = kinds()
        raise InvalidSpec(
            f"unknown backend {name!r}",
            hint=f"backends are {', '.join(known)} (aliases: {', '.join(BACKEND_ALIASES)}); {_EXAMPLE}",
        )
    return key


def _endpoint_only(kind: str) -> bool:
    """A kind that is only ever a named endpoint (openai): its name is an endpoint's or a repo owner's."""
    from llmspell.backends.registry import ENDPOINT_ONLY

    return kind in ENDPOINT_ONLY


def _backend_prefix(text: str, body: str, backend: str | None) -> tuple[str, str | None]:
    """``BACKEND/NAME`` (``ollama/phi3:3.8b``, ``candle/smollm2:135m``) as ``NAME@BACKEND``: only when the part
    before the first '/' is a backend or an alias, so ``ORG/REPO`` ids and Ollama's ``user/model`` keep their
    meaning."""
    head, sep, rest = body.partition("/")
    kind = known_backend(head) if sep else None
    if kind is None or _endpoint_only(kind):
        return body, backend  # openai/gpt-oss-20b is a repo: no server is reached by its kind alone
    if not rest:
        raise InvalidSpec(f"model spec {text!r} names the backend {head!r} but no model after '/'", hint=_EXAMPLE)
    if backend is not None and backend != kind:
        raise InvalidSpec(
            f"model spec {text!r} names two backends, {kind!r} before '/' and {backend!r} after '@'",
            hint=f"name one: {kind}/{rest} or {rest}@{backend}; {_EXAMPLE}",
        )
    return rest, kind


#: ``ORG/REPO:FILE.gguf``: a file of a Hugging Face repo, not a path (a path does not put a ':' after its folder)
_REPO_FILE = re.compile(
    r"^(?:(?:hf|huggingface)\.co/)?[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*:[\w.-]+\.gguf$", re.IGNORECASE
)


def _looks_like_path(text: str) -> bool:
    if _REPO_FILE.match(text):
        return False
    return text.lower().endswith(".gguf") or text.startswith(("/", "./", "../", "~/", "~\\")) or "\\" in text


def _endpoint_spec(text: str, body: str, name: str) -> ModelSpec:
    """``MODEL@ENDPOINT``: the model is whatever id that server gives it (``meta-llama/Llama-3.1-8B-Instruct``,
    ``llama3.1:70b``, even a file name ending in .gguf), so only what would make it unreadable is refused; the
    hub says whether an endpoint of that name is configured."""
    from llmspell.endpoints import NAME

    endpoint = name.strip().lower()
    if not NAME.match(endpoint):
        raise InvalidSpec(
            f"unknown backend {name!r} in {text!r}: not a backend, and not a valid endpoint name",
            hint="endpoint names are lowercase letters, digits, '-' and '_' (see `llmspell endpoint list`); "
            + _EXAMPLE,
        )
    if any(c.isspace() for c in body):
        raise InvalidSpec(f"model spec {text!r} contains whitespace", hint=_EXAMPLE)
    head, sep, tail = body.rpartition(":")
    if sep and head and _VARIANT.match(tail):
        return ModelSpec(name=head, variant=tail, backend=endpoint)
    return ModelSpec(name=body, backend=endpoint)


def parse_spec(text: str) -> ModelSpec:
    """Parse a spec string; every malformed input raises InvalidSpec saying what is wrong and what is valid."""
    if not isinstance(text, str):
        raise InvalidSpec(f"a model spec must be a string, not {type(text).__name__}", hint=_EXAMPLE)
    raw = text.strip()
    if not raw:
        raise InvalidSpec("the model spec is empty", hint=_EXAMPLE)
    body, backend = raw, None
    if "@" in raw:
        body, _, backend_text = raw.rpartition("@")
        if not backend_text:
            raise InvalidSpec(f"model spec {text!r} ends with '@' but names no backend", hint=_EXAMPLE)
        if not body:
            raise InvalidSpec(f"model spec {text!r} names a backend but no model", hint=_EXAMPLE)
        backend = known_backend(backend_text)
        if backend is None or _endpoint_only(backend):
            # a server's model id may hold an '@' itself (LM Studio's name@q4_k_m): only the last one names where
            return _endpoint_spec(text, body, backend_text)
        if "@" in body:
            raise InvalidSpec(f"model spec {text!r} has more than one '@'", hint=_EXAMPLE)

    if not _looks_like_path(body):
        body, backend = _backend_prefix(text, body, backend)

    if _looks_like_path(body):
        if not body.lower().endswith(".gguf"):
            raise InvalidSpec(f"{body!r} looks like a path but is not a .gguf file", hint=_EXAMPLE)
        if backend not in (None, "llamacpp"):
            raise InvalidSpec(f"a .gguf file runs on the llamacpp backend, not {backend!r}", hint=_EXAMPLE)
        return ModelSpec(name=Path(body).stem, backend="llamacpp", path=Path(body).expanduser())

    if any(c.isspace() for c in raw):
        raise InvalidSpec(f"model spec {text!r} contains whitespace", hint=_EXAMPLE)
    if body.lower().startswith("local/"):
        body = body[len("local/") :]
        if not body:
            raise InvalidSpec(f"model spec {text!r} has the local/ prefix but no model name", hint=_EXAMPLE)
        body, backend = _backend_prefix(text, body, backend)

    name, variant = body, None
    if ":" in body:
        name, _, variant = body.partition(":")
        if ":" in variant:
            raise InvalidSpec(f"model spec {text!r} has more than one ':'", hint=_EXAMPLE)
        if not variant:
            raise InvalidSpec(f"model spec {text!r} ends with ':' but names no variant", hint=_EXAMPLE)
        if not _VARIANT.match(variant):
            raise InvalidSpec(
                f"variant {variant!r} in {text!r} may contain only letters, digits, '.', '_' and '-'", hint=_EXAMPLE
            )
    if not name:
        raise InvalidSpec(f"model spec {text!r} has no model name before ':'", hint=_EXAMPLE)
    for segment in name.split("/"):
        if not segment:
            raise InvalidSpec(f"model name {name!r} in {text!r} has an empty path segment", hint=_EXAMPLE)
        if not _SEGMENT.match(segment):
            raise InvalidSpec(
                f"model name {name!r} in {text!r} may contain only letters, digits, '.', '_', '-' and '/'",
                hint=_EXAMPLE,
            )
    return ModelSpec(name=name, variant=variant, backend=backend)


def format_spec(spec: ModelSpec) -> str:
    """The canonical text form of a spec (``parse_spec(format_spec(s)) == s``)."""
    return str(spec)
