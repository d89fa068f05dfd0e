"""Pinning the catalog's file hashes: each quant of models.toml gets the sha256 the Hugging Face hub advertises for
its file, so a later pull is checked against the pin even from a hub, mirror or proxy that advertises none.

A maintainer command (it needs the network, and edits the catalog in place keeping every comment and the layout)::

    python -m llmspell.catalog_pin                  # pin every quant of llmspell/models.toml that has no sha256
    python -m llmspell.catalog_pin --verify         # the same, and check the pins already there against the hub
    python -m llmspell.catalog_pin --only gemma3    # one model only (repeat --only for more)
    python -m llmspell.catalog_pin --catalog PATH   # another catalog file, e.g. a user's ~/.llmspell/models.toml
    python -m llmspell.catalog_pin --check          # no network, no change: list the quants without a pin

Each quant asked about gets one line: ``pinned`` (the sha256 written, and ``size_bytes`` corrected where the hub's
size differs: the "approximate" mark of a corrected size goes with it), ``already pinned``, ``missing`` (the hub
has no such file, the repo is gated or gone, or it advertises no sha256 for the file) or ``conflict`` (the catalog
pins another hash than the hub's: never overwritten, fix it by hand once you know which is right); then the summary
``pinned N, already pinned M, missing K, conflicts C``. The file is written only when something changed, whole and
atomically, after the new text has been checked to differ from the old by the pinned lines alone and to load as a
catalog. HF_ENDPOINT, HF_TOKEN (or HFHUB_API_KEY) and HF_HUB_OFFLINE count as for ``llmspell model pull``.
Exit status: 0 when every quant asked about is pinned, 1 when some are left missing or in conflict (``--check``:
when some have no pin), 2 when the run failed (one error line; nothing written).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit
from tomlkit.container import Container
from tomlkit.items import InlineTable, Item, Table

from llmspell.catalog import PACKAGED_PATH, load_catalog
from llmspell.errors import CatalogError, DownloadError, LLMSpellError
from llmspell.files import write_whole

#: the revision pinned: the one ``llmspell model pull`` downloads
REVISION = "main"

Status = Literal["pinned", "already pinned", "missing", "conflict"]
STATUSES: tuple[Status, ...] = ("pinned", "already pinned", "missing", "conflict")

_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
# the lines an edit may add or replace; anything else changed means the layout was not kept
_PIN_LINE = re.compile(r"\s*(sha256|size_bytes)\s*=")
_SIZE_LINE = re.compile(r"\s*size_bytes\s*=")


class RepoUnavailable(LLMSpellError):
    """The hub will not list a repository's files: it is gated, private, missing, or has no such revision."""

    kind = "repo_unavailable"


@dataclass(frozen=True)
class CatalogQuant:
    """One ``[models.NAME.variants.VARIANT.quants.QUANT]`` table of a catalog file and what it says of its file."""

    model: str
    variant: str
    quant: str
    #: the repository the file is pulled from (the quant's own hf_repo, else the variant's)
    repo: str
    file: str
    size_bytes: int
    sha256: str | None

    @property
    def tag(self) -> str:
        """The spec that pulls this file: ``NAME:VARIANT-QUANT``."""
        return f"{self.model}:{self.variant}-{self.quant}"

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys leading to its table in the TOML document."""
        return ("models", self.model, "variants", self.variant, "quants", self.quant)


@dataclass(frozen=True)
class HubFile:
    """What the hub says of one file: its size and the LFS sha256 it advertises (None when it gives none)."""

    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class Outcome:
    """What became of one quant: its status, a short explanation and what was written for it."""

    quant: CatalogQuant
    status: Status
    detail: str
    #: the hash written into the catalog (status "pinned" only)
    sha256: str | None = None
    #: the size written in place of size_bytes; None when it stays as it was
    size_bytes: int | None = None

    def line(self) -> str:
        """The one line a maintainer reads for this quant."""
        q = self.quant
        return f"{self.status}: {q.tag} ({q.repo}/{q.file}): {self.detail}"


@dataclass(frozen=True)
class PinReport:
    """The result of a pinning run: one outcome per quant asked about, and whether the catalog was rewritten."""

    path: Path
    outcomes: tuple[Outcome, ...]
    written: bool

    def count(self, status: Status) -> int:
        """How many quants ended with ``status``."""
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def sizes_corrected(self) -> int:
        """How many size_bytes values were rewritten."""
        return sum(1 for o in self.outcomes if o.size_bytes is not None)

    @property
    def complete(self) -> bool:
        """True when every quant asked about is pinned now (none missing, none in conflict)."""
        return self.count("missing") == 0 and self.count("conflict") == 0

    def summary(self) -> str:
        """``pinned N, already pinned M, missing K, conflicts C``, then what happened to the file."""
        counts = (
            f"pinned {self.count('pinned')}, already pinned {self.count('already pinned')}, "
            f"missing {self.count('missing')}, conflicts {self.count('conflict')}"
        )
        sizes = f" ({self.sizes_corrected} size_bytes corrected)" if self.sizes_corrected else ""
        where = f"wrote {self.path}" if self.written else f"{self.path} unchanged"
        return f"{counts}{sizes}; {where}"


# ----- reading the catalog -----------------------------------------------------------------------------------------


def catalog_quants(path: Path = PACKAGED_PATH, only: Iterable[str] = ()) -> list[CatalogQuant]:
    """Every quant of the catalog file at ``path`` (read strictly, without the user's file), in file order;
    ``only`` narrows it to the models named (or known by an alias)."""
    catalog = load_catalog(Path(path), user_file=False)
    wanted: set[str] = set()
    for name in only:
        entry = catalog.get(name)
        if entry is None:
            close = difflib.get_close_matches(name.strip().lower(), list(catalog.entries), n=3, cutoff=0.6)
            guess = f"; did you mean {' or '.join(close)}?" if close else ""
            raise CatalogError(f"{path} has no model named {name!r}{guess}", hint="--only takes a model's name")
        wanted.add(entry.name)
    out = []
    for entry in catalog.entries.values():
        if wanted and entry.name not in wanted:
            continue
        for variant in entry.variants.values():
            for quant in variant.quants.values():
                out.append(
                    CatalogQuant(
                        model=entry.name,
                        variant=variant.name,
                        quant=quant.name,
                        repo=quant.hf_repo or variant.hf_repo,
                        file=quant.file,
                        size_bytes=quant.size_bytes,
                        sha256=quant.sha256,
                    )
                )
    return out


def unpinned(path: Path = PACKAGED_PATH, only: Iterable[str] = ()) -> list[CatalogQuant]:
    """The quants of the catalog file that pin no sha256 (no network needed)."""
    return [q for q in catalog_quants(path, only) if q.sha256 is None]


# ----- asking the hub ----------------------------------------------------------------------------------------------


def hub_files(repo: str, filenames: Sequence[str], revision: str = REVISION) -> dict[str, HubFile]:
    """Size and LFS sha256 of each of ``filenames`` that ``repo`` has at ``revision`` (one paths-info request);
    a file the hub does not have is absent from the answer. Raises RepoUnavailable for a gated, private or missing
    repo or revision, and DownloadError when the hub cannot be asked at all."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.hf_api import RepoFile

    from llmspell import __version__
    from llmspell.pull import _raise_clear, hf_endpoint, hf_token, offline_mode

    endpoint = hf_endpoint()
    if offline_mode():
        raise DownloadError(
            "offline mode is on (HF_HUB_OFFLINE=1), so the hub cannot be asked for the files' hashes",
            hint="unset HF_HUB_OFFLINE and run again with the network",
        )
    api = HfApi(endpoint=endpoint, token=hf_token(), library_name="llmspell", library_version=__version__)
    try:
        entries = api.get_paths_info(repo, list(filenames), revision=revision, expand=False)
    except GatedRepoError:
        raise RepoUnavailable(
            f"{repo} is gated: accept its license at {endpoint}/{repo} and set HF_TOKEN (or HFHUB_API_KEY)"
        ) from None
    except RevisionNotFoundError:
        raise RepoUnavailable(f"{repo} has no revision {revision!r} on {endpoint}") from None
    except RepositoryNotFoundError:
        raise RepoUnavailable(f"there is no repo {repo} on {endpoint} (or it is private)") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise RepoUnavailable(f"{endpoint} refused to list {repo} (HTTP {status})") from None
        _raise_clear(exc, repo, "(the hashes of its files)", revision, endpoint)
    except Exception as exc:
        _raise_clear(exc, repo, "(the hashes of its files)", revision, endpoint)
    out: dict[str, HubFile] = {}
    for e in entries:
        if not isinstance(e, RepoFile):
            continue
        sha = (e.lfs.sha256 if e.lfs is not None else "").lower()
        size = e.lfs.size if e.lfs is not None else e.size
        out[e.path] = HubFile(size=size if isinstance(size, int) else None, sha256=sha if _SHA256.match(sha) else None)
    return out


# ----- pinning -----------------------------------------------------------------------------------------------------


def pin_catalog(
    path: Path = PACKAGED_PATH,
    *,
    only: Iterable[str] = (),
    verify: bool = False,
    report: Callable[[Outcome], None] | None = None,
) -> PinReport:
    """Pin the sha256 of every quant of the catalog file at ``path`` that has none (``verify``: also check those
    that have one) from the hub, and write the file once if anything changed; ``report`` gets each outcome as it
    is decided. A hash the hub does not give is reported missing; a pin that differs from the hub's is reported as
    a conflict and left as it is."""
    path = Path(path)
    text = _read(path)
    quants = catalog_quants(path, only)
    asked = [q for q in quants if verify or q.sha256 is None]
    outcomes: list[Outcome] = []

    def decided(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if report is not None:
            report(outcome)

    for q in quants:
        if not (verify or q.sha256 is None):
            decided(Outcome(q, "already pinned", "not checked (--verify checks it against the hub)"))
    by_repo: dict[str, list[CatalogQuant]] = {}
    for q in asked:
        by_repo.setdefault(q.repo, []).append(q)
    for repo, repo_quants in by_repo.items():
        try:
            files = hub_files(repo, sorted({q.file for q in repo_quants}))
        except RepoUnavailable as exc:
            for q in repo_quants:
                decided(Outcome(q, "missing", exc.message))
            continue
        for q in repo_quants:
            decided(_judge(q, files.get(q.file)))

    changes = {o.quant.keys: o for o in outcomes if o.sha256 is not None or o.size_bytes is not None}
    written = False
    if changes:
        new_text = _edited(text, changes)
        _check_edit(path, text, new_text, changes)
        _check_loads(path, new_text)
        if _read(path) != text:
            raise CatalogError(f"{path} changed while the hub was being asked; nothing written", hint="run it again")
        write_whole(path, lambda f: f.write(new_text))
        written = True
    order = {q.keys: i for i, q in enumerate(quants)}
    ordered = tuple(sorted(outcomes, key=lambda o: order[o.quant.keys]))
    return PinReport(path=path, outcomes=ordered, written=written)


def _judge(q: CatalogQuant, hub: HubFile | None) -> Outcome:
    """The outcome for one quant, given what the hub says of its file."""
    if hub is None:
        return Outcome(q, "missing", f"{q.repo} has no file {q.file} at {REVISION}")
    if hub.sha256 is None:
        return Outcome(q, "missing", "the hub advertises no sha256 for it (not an LFS file)")
    if q.sha256 is not None and q.sha256 != hub.sha256:
        return Outcome(
            q,
            "conflict",
            f"the catalog pins sha256 {q.sha256}, the hub serves {hub.sha256}; left as it is (fix it by hand once "
            "you know which is right)",
        )
    size = hub.size if hub.size is not None and hub.size != q.size_bytes else None
    said = f"; size_bytes {q.size_bytes} -> {size}" if size is not None else ""
    if q.sha256 is not None:
        return Outcome(q, "already pinned", f"sha256 matches the hub{said}", size_bytes=size)
    return Outcome(q, "pinned", f"sha256 {hub.sha256}{said}", sha256=hub.sha256, size_bytes=size)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CatalogError(f"{path} cannot be read: {reason}") from None


def _table(doc: Container, keys: tuple[str, ...]) -> Table | InlineTable:
    """The quant table at ``keys`` in a tomlkit document."""
    node: Any = doc
    for key in keys:
        node = node[key]
    if not isinstance(node, Table | InlineTable):
        raise CatalogError(f"{'.'.join(keys)} is not a table tomlkit can edit")
    return node


def _is_approximate(item: Item) -> bool:
    return item.trivia.comment.lstrip("#").strip().lower() == "approximate"


def _edited(text: str, changes: dict[tuple[str, ...], Outcome]) -> str:
    """``text`` with each change made through tomlkit: sha256 added after the table's last key, size_bytes replaced
    (its "approximate" mark dropped, the size now being the hub's own)."""
    doc = tomlkit.parse(text)
    for keys, outcome in changes.items():
        table = _table(doc, keys)
        if outcome.size_bytes is not None:
            table["size_bytes"] = tomlkit.integer(outcome.size_bytes)
            if isinstance(table, Table):
                sized = table.value.item("size_bytes")
                if isinstance(sized, Item) and _is_approximate(sized):
                    sized.trivia.comment, sized.trivia.comment_ws = "", ""
        if outcome.sha256 is not None:
            _add_key(table, "sha256", outcome.sha256)
    return tomlkit.dumps(doc)


def _add_key(table: Table | InlineTable, key: str, value: str) -> None:
    """Add ``key`` right after the table's last key, not after the comments and blank lines that tomlkit counts as
    the end of the table but that introduce the next one."""
    item = tomlkit.string(value)
    if isinstance(table, InlineTable):
        table[key] = item
        return
    body = table.value.body
    last = max((i for i, (k, _) in enumerate(body) if k is not None), default=-1)
    if last >= 0:
        item.trivia.indent = body[last][1].trivia.indent
    if last + 1 >= len(body):
        table[key] = item
    else:
        table.value._insert_at(last + 1, key, item)


def _check_edit(path: Path, old: str, new: str, changes: dict[tuple[str, ...], Outcome]) -> None:
    """Refuse an edit that means more than the changes asked for, or that touches a line other than the pinned
    ones (a comment moved or lost, a blank line gone)."""
    expected = tomllib.loads(old)
    for keys, outcome in changes.items():
        table: Any = expected
        for key in keys:
            table = table[key]
        if outcome.sha256 is not None:
            table["sha256"] = outcome.sha256
        if outcome.size_bytes is not None:
            table["size_bytes"] = outcome.size_bytes
    hint = "nothing was written; add the pins by hand (the lines above say which)"
    if tomllib.loads(new) != expected:
        raise CatalogError(f"editing {path} would change more than the pins", hint=hint)
    old_lines, new_lines = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        removed, added = old_lines[i1:i2], new_lines[j1:j2]
        if not all(_SIZE_LINE.match(line) for line in removed) or not all(_PIN_LINE.match(line) for line in added):
            raise CatalogError(f"editing {path} would change its layout near line {i1 + 1}", hint=hint)


def _check_loads(path: Path, text: str) -> None:
    """Load ``text`` as a catalog from a temporary file beside ``path`` (the same folder, so nothing differs)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check.toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            load_catalog(Path(tmp), user_file=False)
        except CatalogError as exc:
            raise CatalogError(
                f"the pinned {path} would not load: {exc.message}", hint="nothing was written; please report it"
            ) from None
    finally:
        os.unlink(tmp)


# ----- the maintainer command --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llmspell.catalog_pin``: pin, verify or check the catalog's hashes; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m llmspell.catalog_pin",
        description="Pin the sha256 of every quant of a model catalog from the Hugging Face hub.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="change nothing: list quants without a pin, exit 1 if any")
    mode.add_argument("--verify", action="store_true", help="also check the pins already there against the hub")
    parser.add_argument("--catalog", type=Path, default=PACKAGED_PATH, metavar="PATH", help="the catalog file")
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="only this model (repeatable)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            quants = catalog_quants(args.catalog, args.only)
            missing = [q for q in quants if q.sha256 is None]
            for q in missing:
                print(f"unpinned: {q.tag} ({q.repo}/{q.file})")
            print(f"{len(missing)} of {len(quants)} quants pin no sha256 in {args.catalog}")
            return 1 if missing else 0
        result = pin_catalog(args.catalog, only=args.only, verify=args.verify, report=lambda o: print(o.line()))
    except LLMSpellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cancelled; nothing written", file=sys.stderr)
        return 130
    print(result.summary())
    return 0 if result.complete else 1


if __name__ == "__main__":
    sys.exit(main())
