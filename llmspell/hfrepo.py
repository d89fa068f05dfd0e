"""GGUF models of a Hugging Face repo: the repo a spec names, the repo's GGUF files (split ones grouped), and the
one a quantization or a file name picks, with a list of the others when the choice is not clear.

The listing goes through the hub's tree API the way ``llmspell.pull`` downloads: HF_ENDPOINT, the token and
offline mode are read at call time. Choosing works the same on the hub's files and on the files already pulled.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from llmspell.discovery import quant_from_filename
from llmspell.errors import DownloadError, LLMSpellError, ModelNotFound
from llmspell.types import human_bytes

#: how a spec says "a repo of the Hugging Face hub"
HF_PREFIXES = ("hf.co/", "huggingface.co/")
#: the quantization taken when the spec names none (llama.cpp's and Ollama's default too)
DEFAULT_QUANT = "Q4_K_M"
_SPLIT = re.compile(r"^(?P<base>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def hf_repo_of(name: str) -> str | None:
    """The repo id ``ORG/REPO`` that a spec's name stands for (``hf.co/ORG/REPO``, ``huggingface.co/ORG/REPO`` or
    ``ORG/REPO``); None for a name of any other shape."""
    rest = name
    for prefix in HF_PREFIXES:
        if name.lower().startswith(prefix):
            rest = name[len(prefix) :]
            break
    parts = rest.split("/")
    return rest if len(parts) == 2 and all(parts) else None


def has_hf_prefix(name: str) -> bool:
    """Whether a name says ``hf.co/`` (or ``huggingface.co/``) in front of its repo."""
    return name.lower().startswith(HF_PREFIXES)


@dataclass(frozen=True)
class RepoFile:
    """One file of a repo: its path in the repo, size and LFS sha256 when the hub gave them."""

    path: str
    size: int | None = None
    sha256: str | None = None

    @property
    def name(self) -> str:
        """The file name without the folders of the repo."""
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class GGUFModel:
    """One model of a repo: a single GGUF file, or every part of a split one (first part first)."""

    parts: tuple[RepoFile, ...]

    @property
    def first(self) -> RepoFile:
        """The file llama.cpp opens (it finds the other parts beside it)."""
        return self.parts[0]

    @property
    def label(self) -> str:
        """The file name without ``.gguf`` and without a split suffix: ``Foo-Q4_K_M``."""
        m = _SPLIT.match(self.first.name)
        return m["base"] if m else self.first.name[: -len(".gguf")]

    @property
    def quant(self) -> str | None:
        """The quantization its file name carries (``Q4_K_M``), upper-cased; None if it names none."""
        return quant_from_filename(self.first.name)

    @property
    def size(self) -> int | None:
        """Bytes of all parts; None when the hub did not say."""
        sizes = [p.size for p in self.parts]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    @property
    def projector(self) -> bool:
        """A multimodal projector (``mmproj-*.gguf``) that goes with a model, not a model to chat with itself."""
        return self.first.name.lower().startswith("mmproj")

    def names(self) -> set[str]:
        """Every way a user may name it after the ':' of a spec, lower-cased."""
        out = {self.label.lower(), f"{self.label.lower()}.gguf"}
        for p in self.parts:
            out |= {p.name.lower(), p.name.lower()[: -len(".gguf")]}
        return out


def group_ggufs(files: Iterable[RepoFile], *, whole: bool = True) -> list[GGUFModel]:
    """The GGUF models among a repo's files: a split model is one model when every one of its parts is there
    (a split missing a part cannot load and is left out; with ``whole=False``, as on disk, where it must still be
    seen to be removed, it counts when its first part is there)."""
    singles: list[GGUFModel] = []
    splits: dict[tuple[str, str, int], dict[int, RepoFile]] = {}
    for f in files:
        if not f.path.lower().endswith(".gguf"):
            continue
        m = _SPLIT.match(f.name)
        if m is None:
            singles.append(GGUFModel((f,)))
            continue
        key = (str(PurePosixPath(f.path).parent), m["base"], int(m["count"]))
        splits.setdefault(key, {})[int(m["part"])] = f
    for (_, _, count), parts in splits.items():
        if sorted(parts) == list(range(1, count + 1)) or (not whole and 1 in parts):
            singles.append(GGUFModel(tuple(parts[i] for i in sorted(parts))))
    return sorted(singles, key=lambda g: g.first.path.lower())


def tag_for(model: GGUFModel, models: Sequence[GGUFModel]) -> str:
    """What follows the ':' in the shortest spec that picks ``model`` out of ``models``: its quantization when no
    other model of the repo has it, else its file name without ``.gguf``."""
    quant = model.quant
    if quant is not None and sum(1 for m in models if m.quant == quant and not m.projector) == 1:
        return quant
    return model.label


def spec_for(repo_id: str, model: GGUFModel, models: Sequence[GGUFModel]) -> str:
    """The spec a user types for ``model``: ``hf.co/ORG/REPO:TAG``."""
    return f"hf.co/{repo_id}:{tag_for(model, models)}"


def _listing(repo_id: str, models: Sequence[GGUFModel]) -> str:
    rows = []
    for m in models:
        size = f", {human_bytes(m.size)}" if m.size is not None else ""
        parts = f", {len(m.parts)} parts" if len(m.parts) > 1 else ""
        rows.append(f"{spec_for(repo_id, m, models)} ({m.first.name}{parts}{size})")
    return "; ".join(rows)


def choose(repo_id: str, models: Sequence[GGUFModel], want: str | None, *, where: str = "") -> GGUFModel:
    """The model a spec's ``:QUANT`` or ``:FILE`` picks (``want``; None: Q4_K_M, or the only model there is).
    Raises ModelNotFound naming the specs to type when none or several match. ``where`` ends the messages
    ("on disk", "on the hub")."""
    place = f" {where}" if where else ""
    shown = [m for m in models if not m.projector] or list(models)
    if not shown:
        raise ModelNotFound(
            f"hf.co/{repo_id} has no GGUF file{place}",
            hint="llmspell runs GGUF files; look for a repo of this model whose name ends in -GGUF",
        )
    if want is None:
        if len(shown) == 1:
            return shown[0]
        found = [m for m in shown if m.quant == DEFAULT_QUANT]
        if len(found) == 1:
            return found[0]
        if not found:
            raise ModelNotFound(
                f"hf.co/{repo_id} has no {DEFAULT_QUANT} file{place}, and {len(shown)} others: say which one",
                hint=f"pull one of: {_listing(repo_id, shown)}",
            )
        raise _ambiguous(repo_id, DEFAULT_QUANT, found, models, place)
    key = want.lower()
    if key.endswith(".gguf"):
        named = [m for m in models if key in m.names()]
        if named:
            return named[0]
        raise ModelNotFound(
            f"hf.co/{repo_id} has no GGUF file named {want}{place}", hint=f"its GGUF files: {_listing(repo_id, shown)}"
        )
    by_quant = [m for m in shown if m.quant is not None and m.quant.lower() == key]
    if len(by_quant) == 1:
        return by_quant[0]
    named = [m for m in models if key in m.names()]
    if len(named) == 1:
        return named[0]
    if by_quant:
        raise _ambiguous(repo_id, want.upper(), by_quant, models, place)
    quants = sorted({m.quant for m in shown if m.quant})
    have = f"its quantizations are {', '.join(quants)}" if quants else "its files name no quantization"
    raise ModelNotFound(
        f"hf.co/{repo_id} has no quantization or file {want!r}{place}; {have}",
        hint=f"pull one of: {_listing(repo_id, shown)}",
    )


def _ambiguous(
    repo_id: str, quant: str, found: Sequence[GGUFModel], models: Sequence[GGUFModel], place: str
) -> ModelNotFound:
    return ModelNotFound(
        f"hf.co/{repo_id} has {len(found)} {quant} files{place}: say which one",
        hint=f"pull one of: {_listing(repo_id, found)}",
    )


# ---- the hub -------------------------------------------------------------------------------------------------------


def list_repo_files(repo_id: str, revision: str = "main") -> list[RepoFile]:
    """Every file of a repo at ``revision`` (the tree API, recursive, every page), with sizes and LFS sha256."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import (  # type: ignore[attr-defined]  # public names, not listed in __all__
        build_hf_headers,
        get_session,
        hf_raise_for_status,
    )

    from llmspell import __version__
    from llmspell.pull import _raise_clear, _timeout, hf_endpoint, hf_token, offline_mode

    endpoint = hf_endpoint()
    if offline_mode():
        raise DownloadError(
            f"offline mode is on (HF_HUB_OFFLINE=1), so the files of {repo_id} cannot be listed",
            hint="unset HF_HUB_OFFLINE to pull; models already on disk still work",
        )
    headers = build_hf_headers(token=hf_token(), library_name="llmspell", library_version=__version__)
    url: str | None = f"{endpoint}/api/models/{repo_id}/tree/{quote(revision, safe='')}"
    params: dict[str, str] | None = {"recursive": "true"}
    out: list[RepoFile] = []
    try:
        while url is not None:
            response = get_session().get(url, params=params, headers=headers, timeout=_timeout())
            hf_raise_for_status(response)
            page = response.json()
            if not isinstance(page, list):
                raise DownloadError(f"{endpoint} does not answer like a Hugging Face hub", hint="check HF_ENDPOINT")
            out += [_repo_file(e) for e in page if isinstance(e, dict) and e.get("type") == "file"]
            url, params = response.links.get("next", {}).get("url"), None
    except LLMSpellError:
        raise
    except GatedRepoError:
        raise DownloadError(
            f"hf.co/{repo_id} is gated: you must be logged in and have accepted its license to download it",
            hint=f"accept the license at {endpoint}/{repo_id}, then set HF_TOKEN (or HFHUB_API_KEY) to a token of "
            "that account",
        ) from None
    except RepositoryNotFoundError:
        raise ModelNotFound(
            f"there is no repo {repo_id} on {endpoint}",
            hint="check the spelling (ORG/REPO as in the address of its page); a private repo also needs HF_TOKEN "
            "(or HFHUB_API_KEY)",
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise DownloadError(
                f"{endpoint} refused to list the files of {repo_id} (HTTP {status}): it is private or gated",
                hint="set HF_TOKEN (or HFHUB_API_KEY) to a token that can read this repo, and accept its license "
                "if it is gated",
            ) from None
        _raise_clear(exc, repo_id, "(the list of its files)", revision, endpoint)
    except ValueError:
        raise DownloadError(f"{endpoint} does not answer like a Hugging Face hub", hint="check HF_ENDPOINT") from None
    except Exception as exc:
        _raise_clear(exc, repo_id, "(the list of its files)", revision, endpoint)
    return out


def _repo_file(entry: dict[str, object]) -> RepoFile:
    size = entry.get("size")
    lfs = entry.get("lfs")
    sha = str(lfs.get("oid") or lfs.get("sha256") or "").lower() if isinstance(lfs, dict) else ""
    return RepoFile(
        str(entry.get("path", "")), size if isinstance(size, int) else None, sha if _SHA256.match(sha) else None
    )


# ---- files on disk -------------------------------------------------------------------------------------------------


def local_models(folder: Path, *, whole: bool = True) -> list[GGUFModel]:
    """The GGUF models pulled into ``folder`` (models/hf/ORG/REPO), paths relative to it; partials are hidden,
    and so is a split model missing a part (an interrupted pull) unless ``whole`` is False (to delete it)."""
    try:
        files = [f for f in folder.iterdir() if f.suffix.lower() == ".gguf" and not f.name.startswith(".")]
    except OSError:
        return []
    return group_ggufs((RepoFile(f.name, _size(f)) for f in files if f.is_file()), whole=whole)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def split_parts(path: Path, *, existing: bool = True) -> list[Path]:
    """Every part on disk (``existing=False``: every part's name) of the split model whose first part is ``path``,
    in order; ``[path]`` for one file."""
    m = _SPLIT.match(path.name)
    if m is None:
        return [path]
    count = int(m["count"])
    width = len(m["part"])
    parts = [path.with_name(f"{m['base']}-{i:0{width}d}-of-{m['count']}.gguf") for i in range(1, count + 1)]
    return [p for p in parts if not existing or p.is_file() or p == path]


def check_room(folder: Path, needed: int, what: str) -> None:
    """Refuse a pull of ``needed`` more bytes into ``folder`` (made later) when its disk lacks the room."""
    from llmspell.errors import InsufficientResources
    from llmspell.pull import DISK_MARGIN

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + DISK_MARGIN:
        raise InsufficientResources(
            f"not enough disk space to pull {what}: {human_bytes(needed)} to download, {human_bytes(free)} free in "
            f"{probe}",
            hint="free some space, or set LLMSPELL_MODELS to a folder on a larger disk",
        )
