"""Find GGUF files already on disk (Hugging Face cache, Ollama's store) so they load in place, never copied.

Discovery never raises and reads at most four bytes per file: odd folders, broken links and malformed
manifests are skipped (``scan_*(..., skipped=[])`` collects why).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from llmspell import config
from llmspell.ggufcheck import FILE_TYPES, GGML_TYPES

#: known quantization names, longest first so Q4_K_M wins over Q4_K
_QUANTS = sorted({*FILE_TYPES.values(), *(t[0] for t in GGML_TYPES.values())}, key=len, reverse=True)
#: the end of a split model's part name: ``-00001-of-00003.gguf`` (part, count)
SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_SPLIT = SPLIT_PART
_MODEL_LAYER = "application/vnd.ollama.image.model"
_TEXT_LAYERS = {
    "application/vnd.ollama.image.template": "template",
    "application/vnd.ollama.image.system": "system",
    "application/vnd.ollama.image.params": "params",
    "application/vnd.ollama.image.license": "license",
}
_DEFAULT_REGISTRY = "registry.ollama.ai"


@dataclass(frozen=True)
class DiscoveredModel:
    """A GGUF found on disk, with the name a user types to run it in place."""

    name: str
    path: Path
    source: str
    size_bytes: int
    quantization: str | None
    repo: str | None = None
    revision: str | None = None
    digest: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def quant_from_filename(name: str) -> str | None:
    """The quantization a GGUF file name carries (``Q4_K_M``, ``IQ4_XS``, ``F16``), upper-cased."""
    stem = _SPLIT.sub("", name).upper().removesuffix(".GGUF")
    for quant in _QUANTS:
        if re.search(rf"(?<![A-Z0-9]){quant}(?![A-Z0-9])", stem):
            return quant
    return None


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def scan_hf_cache(root: Path | None = None, skipped: list[tuple[Path, str]] | None = None) -> list[DiscoveredModel]:
    """GGUF files in the Hugging Face hub cache, named ``hf.co/ORG/REPO:QUANT``, at the revision of refs/main."""
    root = root or config.hf_cache_dir()
    skip = skipped if skipped is not None else []
    out: list[DiscoveredModel] = []
    try:
        repos = sorted(p for p in root.iterdir() if p.name.startswith("models--"))
    except OSError:
        return []
    for repo_dir in repos:
        parts = repo_dir.name.split("--")[1:]
        if len(parts) < 2:
            skip.append((repo_dir, "not an org/repo folder"))
            continue
        repo = f"{parts[0]}/{'--'.join(parts[1:])}"
        snapshots = repo_dir / "snapshots"
        try:
            main = (repo_dir / "refs" / "main").read_text().strip()
        except OSError:
            main = ""
        try:
            revisions = sorted(snapshots.iterdir(), key=lambda p: (p.name != main, p.name))
        except OSError:
            continue
        files: dict[str, tuple[Path, str]] = {}
        for rev in revisions:
            for f in sorted(rev.rglob("*.gguf")):
                rel = str(f.relative_to(rev))
                if rel in files:
                    continue  # the revision refs/main points at was seen first and wins
                split = _SPLIT.search(f.name)
                if split and split.group(1) != "00001":
                    continue
                if not f.exists():
                    skip.append((f, "broken link"))
                    continue
                if not _is_gguf(f):
                    skip.append((f, "not a GGUF file"))
                    continue
                files[rel] = (f, rev.name)
        quants = [quant_from_filename(Path(rel).name) for rel in files]
        for (rel, (f, revision)), quant in zip(files.items(), quants, strict=True):
            unique = quant is not None and quants.count(quant) == 1
            tag = quant if unique else Path(rel).name[: -len(".gguf")]
            try:
                size = f.stat().st_size
                target = f.resolve()
            except OSError:
                skip.append((f, "unreadable"))
                continue
            digest = target.name if re.fullmatch(r"[0-9a-f]{64}", target.name) else None
            out.append(
                DiscoveredModel(
                    f"hf.co/{repo}:{tag}",
                    f,
                    "hf-cache",
                    size,
                    quant,
                    repo,
                    revision,
                    f"sha256:{digest}" if digest else None,
                )
            )
    return out


def _ollama_name(rel: Path) -> str | None:
    parts = rel.parts
    if len(parts) != 4:
        return None
    host, namespace, model, tag = parts
    if host == _DEFAULT_REGISTRY:
        return f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
    return f"{host}/{namespace}/{model}:{tag}"


def scan_ollama_store(
    root: Path | None = None,
    skipped: list[tuple[Path, str]] | None = None,
) -> list[DiscoveredModel]:
    """Models in Ollama's store: each manifest's model layer is a GGUF blob, named as Ollama names it."""
    root = root or config.ollama_models_dir()
    skip = skipped if skipped is not None else []
    manifests = root / "manifests"
    out: list[DiscoveredModel] = []
    try:
        files = sorted(p for p in manifests.rglob("*") if p.is_file())
    except OSError:
        return []
    for mf in files:
        name = _ollama_name(mf.relative_to(manifests))
        if name is None:
            skip.append((mf, "not at manifests/HOST/NAMESPACE/MODEL/TAG"))
            continue
        try:
            layers = json.loads(mf.read_text(encoding="utf-8")).get("layers") or []
        except (OSError, ValueError, AttributeError) as exc:
            skip.append((mf, f"unreadable manifest: {exc}"))
            continue
        model_layer, extra = None, {}
        for layer in layers if isinstance(layers, list) else []:
            if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
                continue
            blob = root / "blobs" / layer["digest"].replace(":", "-")
            kind = layer.get("mediaType")
            if kind == _MODEL_LAYER and model_layer is None:
                model_layer = (blob, layer["digest"])
            elif kind in _TEXT_LAYERS:
                try:
                    extra[_TEXT_LAYERS[kind]] = blob.read_text(encoding="utf-8", errors="replace")[:4096]
                except OSError:
                    pass
        if model_layer is None:
            skip.append((mf, "no model layer"))
            continue
        blob, digest = model_layer
        if not _is_gguf(blob):
            skip.append((blob, "model blob missing or not GGUF"))
            continue
        try:
            size = blob.stat().st_size
        except OSError:
            continue
        out.append(DiscoveredModel(name, blob, "ollama-store", size, None, digest=digest, extra=extra))
    return out


#: folders of the models folder that llmspell fills itself (pulled and assembled files, listed by the catalog)
_OWN_FOLDERS = ("hf", "pypi")
#: how deep a model folder is searched (a folder of folders of models, not a whole disk)
_FOLDER_DEPTH = 3


def scan_folders(folders: list[Path], skipped: list[tuple[Path, str]] | None = None) -> list[DiscoveredModel]:
    """GGUF files dropped into the models folder or a configured folder, named by their file name without
    ``.gguf`` (a split model by its first part's name); the first of two files with one name wins."""
    skip = skipped if skipped is not None else []
    own = config.models_dir()
    out: list[DiscoveredModel] = []
    names: set[str] = set()
    for folder in folders:
        try:
            root = folder.expanduser().resolve()
            files = sorted(_ggufs(root, own_root=root == own.expanduser().resolve()))
        except OSError:
            continue
        for path in files:
            split = _SPLIT.search(path.name)
            if split and split.group(1) != "00001":
                continue  # the other parts load with the first
            name = _SPLIT.sub("", path.name) if split else path.name
            name = name[: -len(".gguf")] if name.lower().endswith(".gguf") else name
            if name.lower() in names:
                skip.append((path, f"another file is already named {name}"))
                continue
            if not _is_gguf(path):
                skip.append((path, "not a GGUF file"))
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            names.add(name.lower())
            out.append(DiscoveredModel(name, path, "folder", size, quant_from_filename(path.name)))
    return out


def _ggufs(root: Path, *, own_root: bool, depth: int = 0) -> list[Path]:
    out: list[Path] = []
    for entry in root.iterdir():
        if entry.name.startswith("."):
            continue  # partial downloads and hidden files
        if entry.is_dir():
            if depth + 1 < _FOLDER_DEPTH and not (own_root and depth == 0 and entry.name in _OWN_FOLDERS):
                out += _ggufs(entry, own_root=own_root, depth=depth + 1)
        elif entry.suffix.lower() == ".gguf" and entry.is_file():
            out.append(entry)
    return out


def discover(hf: bool = True, ollama: bool = True, folders: list[Path] | None = None) -> list[DiscoveredModel]:
    """Every source, sorted by name; never raises."""
    found = (scan_hf_cache() if hf else []) + (scan_ollama_store() if ollama else [])
    found += scan_folders(folders or [])
    return sorted(found, key=lambda m: m.name)


def find(name: str, models: list[DiscoveredModel] | None = None) -> DiscoveredModel | None:
    """The discovered model a user named (case-insensitive); ``NAME`` means ``NAME:latest``."""
    want = name if ":" in name else f"{name}:latest"
    want_lower = want.lower()
    candidates = discover() if models is None else models
    for m in candidates:
        if m.name == want or m.name.lower() == want_lower:
            return m
    # a file in a model folder is named by its file name, tag or not
    return next((m for m in candidates if m.source == "folder" and m.name.lower() == name.lower()), None)
