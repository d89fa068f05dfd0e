"""Named models made from other models: a system prompt and options over a base model, as Ollama's Modelfile
(``/api/create``, ``/api/copy``) makes them. Kept in ``$LLMSPELL_HOME/aliases.json``; every face can use them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shlex
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmspell import config as cfgmod
from llmspell.backends.base import Backend, RunningModel
from llmspell.errors import ConfigError, InvalidOptions, InvalidSpec
from llmspell.files import write_whole
from llmspell.options import OLLAMA_OPTIONS
from llmspell.spec import ModelSpec, parse_spec
from llmspell.types import BackendStatus, Chunk, Embeddings, Message, ModelInfo, Options, PullProgress

#: Ollama PARAMETER names that mean nothing to these engines: accepted and left out, as Ollama lets models do
_IGNORED_PARAMETERS = frozenset(
    {"num_gpu", "num_batch", "num_keep", "mirostat", "mirostat_eta", "mirostat_tau", "repeat_last_n", "typical_p"}
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9._-]+)?$")


@dataclass(frozen=True)
class Alias:
    """A model by another name: the model it is made from, plus a system prompt and options of its own."""

    name: str
    #: the model it runs on, as a spec (``smollm2:135m``, ``llama3.2@ollama``)
    target: str
    system: str | None = None
    #: llmspell option names and values, under whatever the request sets itself
    options: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The form kept in aliases.json."""
        return dataclasses.asdict(self)

    @property
    def modelfile(self) -> str:
        """The alias written back as a Modelfile (what ``/api/show`` returns)."""
        lines = [f"FROM {self.target}"]
        if self.system:
            lines.append(f'SYSTEM """{self.system}"""')
        reverse = {v: k for k, v in OLLAMA_OPTIONS.items()}
        for name, value in self.options.items():
            values = value if isinstance(value, list) else [value]
            lines += [
                f"PARAMETER {reverse.get(name, name)} {json.dumps(v) if isinstance(v, str) else v}" for v in values
            ]
        return "\n".join(lines) + "\n"


def alias_name(text: str) -> str:
    """A name an alias may have (``:latest`` is dropped, as Ollama's default tag)."""
    name = text.strip().removesuffix(":latest")
    if not _NAME.match(name) or "@" in name:
        raise InvalidSpec(
            f"{text!r} cannot name a model", hint="use letters, digits, '.', '_' and '-', with an optional :TAG"
        )
    return name


def parameters(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Ollama's PARAMETER names and values as llmspell options (checked: a bad value is an error now, not later)."""
    out: dict[str, Any] = {}
    unknown = []
    for key, value in (raw or {}).items():
        if key in _IGNORED_PARAMETERS:
            continue
        name = OLLAMA_OPTIONS.get(key)
        if name is None:
            unknown.append(key)
            continue
        out[name] = value
    if unknown:
        raise InvalidOptions(
            f"unknown PARAMETER(s): {', '.join(sorted(unknown))}", hint=f"known: {', '.join(OLLAMA_OPTIONS)}"
        )
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    Options.from_dict({k: tuple(v) if k == "stop" else v for k, v in out.items()})
    return out


def parse_modelfile(text: str) -> dict[str, Any]:
    """A Modelfile's FROM, SYSTEM, TEMPLATE, PARAMETER (and LICENSE, MESSAGE, ADAPTER) as a dict of what was set;
    values may be quoted with \"\"\" across lines, as Ollama writes them."""
    out: dict[str, Any] = {"parameters": {}}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if rest.startswith('"""'):
            body = rest[3:]
            while '"""' not in body and i < len(lines):
                body += "\n" + lines[i]
                i += 1
            if '"""' not in body:
                raise InvalidOptions(f'the Modelfile\'s {word} opens """ and never closes it')
            rest = body[: body.index('"""')]
        if word == "FROM":
            out["from"] = rest
        elif word in ("SYSTEM", "TEMPLATE", "LICENSE", "ADAPTER"):
            out[word.lower()] = rest
        elif word == "PARAMETER":
            key, _, value = rest.partition(" ")
            parsed = _parameter_value(value.strip())
            if key == "stop":
                out["parameters"].setdefault("stop", []).append(parsed)
            else:
                out["parameters"][key] = parsed
        elif word == "MESSAGE":
            out.setdefault("messages", []).append(rest)
        else:
            raise InvalidOptions(
                f"the Modelfile has an unknown instruction {word!r}", hint="use FROM, SYSTEM, PARAMETER"
            )
    return out


def _parameter_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        words = shlex.split(text) if text else [""]
        return words[0] if len(words) == 1 else text


class AliasStore:
    """The aliases of this home, in one JSON file written whole."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cfgmod.home() / "aliases.json"

    def all(self) -> dict[str, Alias]:
        """Every alias by name (none when the file does not exist yet)."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ConfigError(f"cannot read the aliases in {self.path}: {exc.strerror or exc}") from None
        try:
            doc = json.loads(raw)
            return {name: Alias(**item) for name, item in doc.get("aliases", {}).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"the aliases file {self.path} is damaged: {exc}", hint="move it aside; llmspell starts a new one"
            ) from None

    def get(self, name: str) -> Alias | None:
        """The alias called ``name`` (``:latest`` is the name without a tag), if any."""
        return self.all().get(name.removesuffix(":latest"))

    def put(self, alias: Alias) -> Alias:
        """Add or replace an alias."""
        aliases = self.all()
        aliases[alias.name] = dataclasses.replace(alias, created=alias.created or _now())
        self._write(aliases)
        return aliases[alias.name]

    def remove(self, name: str) -> bool:
        """Remove an alias; False when there was none."""
        aliases = self.all()
        if aliases.pop(name.removesuffix(":latest"), None) is None:
            return False
        self._write(aliases)
        return True

    def _write(self, aliases: dict[str, Alias]) -> None:
        cfgmod.writable_folder(self.path.parent, "the aliases")
        doc = {"aliases": {n: a.to_dict() for n, a in sorted(aliases.items())}}
        write_whole(self.path, lambda f: f.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n"))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


class AliasedBackend(Backend):
    """The backend of an alias's model, with the alias's system prompt and options put under each request."""

    def __init__(self, inner: Backend, alias: Alias) -> None:
        self.kind = inner.kind  # type: ignore[misc]  # an instance of the inner backend's kind
        super().__init__(inner.name)
        self.inner, self.alias = inner, alias
        self.IN_PROCESS = inner.IN_PROCESS  # type: ignore[misc]
        self.IMPLEMENTS_EMBED = inner.IMPLEMENTS_EMBED  # type: ignore[misc]

    def _options(self, options: Options | None) -> Options:
        own = {k: tuple(v) if k == "stop" else v for k, v in self.alias.options.items()}
        return Options.from_dict(own).merged(options)

    def _messages(self, messages: Sequence[Message]) -> list[Message]:
        msgs = [Message.coerce(m) for m in messages]
        if self.alias.system and not any(m.role == "system" for m in msgs):
            msgs.insert(0, Message("system", self.alias.system))
        return msgs

    async def status(self) -> BackendStatus:
        """The inner backend's status."""
        return await self.inner.status()

    async def list_models(self) -> list[ModelInfo]:
        """The inner backend's models."""
        return await self.inner.list_models()

    async def has_model(self, spec: ModelSpec) -> bool:
        """Whether the alias's model is here."""
        return await self.inner.has_model(spec)

    async def info(self, spec: ModelSpec) -> ModelInfo:
        """The model's info under the alias's name."""
        info = await self.inner.info(spec)
        extra = {**info.extra, "alias_of": self.alias.target, "modified_at": self.alias.created}
        return dataclasses.replace(info, name=self.alias.name, extra=extra)

    def pull(self, spec: ModelSpec) -> AsyncGenerator[PullProgress, None]:
        """Pull the alias's model."""
        return self.inner.pull(spec)

    async def delete(self, spec: ModelSpec) -> None:
        """Aliases are removed by the hub; the model under one is never deleted through it."""
        raise InvalidOptions(f"{self.alias.name} is an alias; removing it leaves {self.alias.target} alone")

    async def loaded(self) -> list[str]:
        """The inner backend's loaded models."""
        return await self.inner.loaded()

    async def unload(self, spec: ModelSpec) -> bool:
        """Unload the alias's model."""
        return await self.inner.unload(spec)

    def chat(
        self, spec: ModelSpec, messages: Sequence[Message], options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """The model's answer with the alias's system prompt (unless the conversation has one) and options."""
        return self.inner.chat(spec, self._messages(messages), self._options(options))

    def complete(self, spec: ModelSpec, prompt: str, options: Options | None = None) -> AsyncGenerator[Chunk, None]:
        """A plain completion with the alias's options."""
        return self.inner.complete(spec, prompt, self._options(options))

    async def embed(
        self, spec: ModelSpec, texts: Sequence[str], *, truncate: bool = True, options: Options | None = None
    ) -> Embeddings:
        """The model's embeddings."""
        return await self.inner.embed(spec, texts, truncate=truncate, options=self._options(options))

    async def canonical_name(self, spec: ModelSpec) -> str:
        """The model's own name: an alias shares its model's queue."""
        return await self.inner.canonical_name(spec)

    async def running(self) -> list[RunningModel]:
        """The inner backend's loaded copies."""
        return await self.inner.running()

    async def set_keep_alive(self, spec: ModelSpec, seconds: float) -> None:
        """Set the model's keep-alive."""
        await self.inner.set_keep_alive(spec, seconds)


def target_spec(alias: Alias) -> ModelSpec:
    """The spec of the model under an alias."""
    return parse_spec(alias.target)
