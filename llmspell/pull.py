"""Download one file of a Hugging Face repo: resumable, sha256-verified, atomic, cancellable, with clear errors.

Synchronous on purpose: callers run it in a worker thread and pass a ``threading.Event`` to cancel.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn
from urllib.parse import quote, urlsplit

import filelock
import httpx2
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import (  # type: ignore[attr-defined]  # public names, not listed in __all__
    build_hf_headers,
    get_session,
    hf_raise_for_status,
)

from llmspell import __version__
from llmspell.config import writable_folder
from llmspell.errors import (
    Cancelled,
    DownloadError,
    InsufficientResources,
    IntegrityError,
    InvalidSpec,
    LLMSpellError,
    ModelNotFound,
)
from llmspell.types import PullProgress

CONNECT_TIMEOUT = 10.0
#: the longest silence tolerated from the server before a request counts as failed
READ_TIMEOUT = 60.0
#: a transfer that moves less than STALL_BYTES in STALL_SECONDS stops (its part kept for a resume): a hub
#: trickling a byte a second never trips the read timeout and would hold a pull for days
STALL_SECONDS = 60.0
STALL_BYTES = 64 * 1024
#: free space kept on top of the file, so a pull never fills a disk to the last byte
DISK_MARGIN = 64 * 1024 * 1024
#: progress reports per second at most (start and final reports come on top)
PROGRESS_RATE = 10.0
_HASH_BLOCK = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

ProgressCallback = Callable[[PullProgress], None]


@dataclass(frozen=True)
class RemoteFile:
    """What the hub says about one file at one revision."""

    repo_id: str
    filename: str
    revision: str
    #: bytes; None only if the server gave no size at all
    size: int | None
    #: the LFS sha256 the hub advertises; None for small files kept in git, which only have a git blob id
    sha256: str | None
    commit: str | None
    #: where the bytes come from: the hub itself, or the CDN it redirects to
    url: str
    etag: str | None = None


def hf_endpoint() -> str:
    """The hub address in force now: HF_ENDPOINT as set at call time, else huggingface_hub's own."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hf_token() -> str | None:
    """The token to send when huggingface_hub would find none of its own: ``HFHUB_API_KEY`` (the name the documents
    llmspell grew from use) stands for ``HF_TOKEN``, which wins when both are set; None lets huggingface_hub choose
    (HF_TOKEN, then the token saved by ``hf auth login``)."""
    if (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip():
        return None
    return (os.environ.get("HFHUB_API_KEY") or "").strip() or None


def offline_mode() -> bool:
    """Whether HF_HUB_OFFLINE is on, read at call time (huggingface_hub reads it once, at import)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def remote_file_info(repo_id: str, filename: str, revision: str = "main") -> RemoteFile:
    """Ask the hub for a file's size, LFS sha256, commit and download URL (a HEAD request, no body)."""
    endpoint = hf_endpoint()
    if offline_mode():
        raise _offline_error(repo_id, filename)
    try:
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
        meta = get_hf_file_metadata(
            url,
            token=hf_token(),
            timeout=_timeout(),  # type: ignore[arg-type]  # handed through to httpx2, which takes a Timeout
            library_name="llmspell",
            library_version=__version__,
            endpoint=endpoint,
        )
    except Exception as exc:
        _raise_clear(exc, repo_id, filename, revision, endpoint)
    etag = (meta.etag or "").lower()
    sha256 = etag if _SHA256.match(etag) else _lfs_sha256(repo_id, filename, meta.commit_hash or revision, endpoint)
    return RemoteFile(
        repo_id=repo_id,
        filename=filename,
        revision=revision,
        size=meta.size,
        sha256=sha256,
        commit=meta.commit_hash,
        url=meta.location,
        etag=meta.etag,
    )


def download_file(
    repo_id: str,
    filename: str,
    dest: Path,
    *,
    revision: str = "main",
    expected_sha256: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Download ``filename`` of ``repo_id`` to ``dest``: resume a partial, verify sha256, then replace atomically."""
    dest = Path(dest)
    expected = _normalize_sha256(expected_sha256)
    report = _Reporter(progress, filename)
    _check_cancel(cancel, filename)
    info = remote_file_info(repo_id, filename, revision)
    if expected and info.sha256 and expected != info.sha256:
        raise IntegrityError(
            f"{repo_id}/{filename}: expected sha256 {expected}, but the hub serves sha256 {info.sha256}",
            hint="the file changed upstream or the pinned hash is wrong; fix the hash, then pull again",
        )
    want = expected or info.sha256
    writable_folder(dest.parent, f"{filename}")
    with _exclusive(dest):
        if info.size is not None and dest.is_file() and dest.stat().st_size == info.size:
            digest = _local_digest(dest, report)
            if want is None or digest == want:
                report.final("already up to date", info.size, digest, dest)
                return dest
            # a damaged or outdated local copy: fetch a fresh one; the old file stays until the new one is verified
        return _fetch(info, dest, want, report, cancel)


# ---- transfer ------------------------------------------------------------------------------------------------------


def partial_path(dest: Path) -> Path:
    """Where the unfinished download of ``dest`` lives (hidden, so it is never taken for a model)."""
    return dest.parent / f".{dest.name}.partial"


def sidecar_path(dest: Path) -> Path:
    """Where the verified sha256 of ``dest`` is cached, in ``sha256sum`` format."""
    return dest.parent / f"{dest.name}.sha256"


class _Transfer:
    """One download into a partial file: the open file, the bytes it holds, their running sha256."""

    def __init__(self, out: BinaryIO, name: str, have: int, hasher: hashlib._Hash, total: int | None) -> None:
        self.out, self.name, self.have, self.hasher, self.total = out, name, have, hasher, total

    def restart(self) -> None:
        """Drop what the partial holds and start from byte 0."""
        self.out.seek(0)
        self.out.truncate()
        self.have, self.hasher = 0, hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        """Append a chunk and account for it."""
        try:
            self.out.write(chunk)
        except OSError as exc:
            _write_failed(exc, Path(self.out.name))
        self.hasher.update(chunk)
        self.have += len(chunk)

    def sync(self) -> None:
        """Make the bytes written so far durable, so a later resume can trust them."""
        try:
            self.out.flush()
            os.fsync(self.out.fileno())
        except OSError as exc:
            _write_failed(exc, Path(self.out.name))

    def of_total(self) -> str:
        """'N of M bytes' for messages."""
        return f"{self.have} of {self.total if self.total is not None else 'an unknown number of'} bytes"


def _fetch(info: RemoteFile, dest: Path, want: str | None, report: _Reporter, cancel: threading.Event | None) -> Path:
    partial = partial_path(dest)
    name = info.filename
    have = partial.stat().st_size if partial.is_file() else 0
    if info.size is not None and have > info.size:
        # longer than the file can be, so not a prefix of it
        partial.unlink()
        have = 0
    _check_disk(dest.parent, (info.size - have) if info.size is not None else 0, name)

    hasher = hashlib.sha256()
    if have:
        # the digest covers the whole file, so the bytes kept from the last attempt go in first
        _hash_into(partial, hasher, have, report, f"checking the partial download of {name}")
    try:
        out = open(partial, "ab")
    except OSError as exc:
        _write_failed(exc, partial)
    try:
        with out:
            transfer = _Transfer(out, name, have, hasher, info.size)
            if transfer.total is None or transfer.have < transfer.total:
                _stream(info, transfer, report, f"sha256:{want}" if want else None, cancel)
            transfer.sync()
    except BaseException:
        # a pull that failed before its first byte (a refused redirect, say) leaves no empty part behind
        with contextlib.suppress(OSError):
            if partial.stat().st_size == 0:
                partial.unlink()
        raise

    if transfer.total is not None and transfer.have != transfer.total:
        partial.unlink(missing_ok=True)
        raise IntegrityError(
            f"{name}: received {transfer.have} bytes, the hub announced {transfer.total}", hint="pull again"
        )
    got = transfer.hasher.hexdigest()
    if want and got != want:
        partial.unlink(missing_ok=True)
        raise IntegrityError(f"{name} is corrupt: expected sha256 {want}, got {got}", hint="pull again")

    try:
        os.replace(partial, dest)
    except OSError as exc:
        _write_failed(exc, dest)
    _fsync_dir(dest.parent)
    _write_sidecar(dest, got)
    report.final(f"downloaded {name}", transfer.have, got, dest)
    return dest


def _stream(
    info: RemoteFile, transfer: _Transfer, report: _Reporter, digest: str | None, cancel: threading.Event | None
) -> None:
    """GET the rest of the file into the transfer, resuming with Range when it already holds bytes."""
    where = _origin(info.url)
    headers = build_hf_headers(token=hf_token(), library_name="llmspell", library_version=__version__)
    # sizes and resume offsets only mean something for the identity encoding
    headers["Accept-Encoding"] = "identity"
    if not _same_origin(info.url, hf_endpoint()):
        # a signed CDN URL must not receive the hub token
        headers.pop("authorization", None)
    # a second attempt, without Range, when the server rejects or misplaces the range asked for
    for _attempt in range(2):
        _check_cancel(cancel, info.filename, transfer)
        request_headers = dict(headers)
        if transfer.have:
            request_headers["Range"] = f"bytes={transfer.have}-"
        try:
            with get_session().stream(
                "GET", info.url, headers=request_headers, timeout=_timeout(), follow_redirects=True
            ) as response:
                if response.status_code == 416 and transfer.have:
                    transfer.restart()
                    continue
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                if response.status_code == 206 and not _range_starts_at(response, transfer.have):
                    transfer.restart()
                    continue
                if response.status_code != 206 and transfer.have:
                    # the server ignored Range and sends it all: start over rather than append a second copy
                    transfer.restart()
                if transfer.total is None:
                    length = response.headers.get("Content-Length", "")
                    transfer.total = transfer.have + int(length) if length.isdigit() else None
                report.downloading(transfer.have, transfer.total, digest, force=True)
                window_start, window_bytes = time.monotonic(), 0
                for chunk in _body(response, transfer):
                    _check_cancel(cancel, info.filename, transfer)
                    if transfer.total is not None and transfer.have + len(chunk) > transfer.total:
                        # more than announced: not the file asked for, and it could fill the disk
                        transfer.restart()
                        raise IntegrityError(
                            f"{info.filename}: {where} sent more than the {transfer.total:,} bytes it announced",
                            hint="nothing was kept; pull again, or from another mirror (HF_ENDPOINT)",
                        )
                    transfer.write(chunk)
                    report.downloading(transfer.have, transfer.total, digest)
                    window_bytes += len(chunk)
                    if time.monotonic() - window_start >= STALL_SECONDS:
                        if window_bytes < STALL_BYTES:
                            _interrupted(
                                transfer,
                                None,
                                f"{where} sent only {window_bytes:,} bytes in {STALL_SECONDS:g} s",
                            )
                        window_start, window_bytes = time.monotonic(), 0
        except (HfHubHTTPError, OfflineModeIsEnabled, httpx2.HTTPError) as exc:
            _raise_clear(exc, info.repo_id, info.filename, info.revision, where)
        if transfer.total is not None and transfer.have < transfer.total:
            # the body ended early without a transport error: a server that closed cleanly
            _interrupted(transfer, None)
        return
    raise DownloadError(f"{where} answered the resume of {info.filename} with the wrong range twice", hint="pull again")


def _body(response: httpx2.Response, transfer: _Transfer) -> Iterator[bytes]:
    """The response's chunks as they arrive; a cut connection becomes the 'interrupted, resume' error."""
    chunks = response.iter_bytes()
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except (httpx2.TransportError, httpx2.StreamError) as exc:
            _interrupted(transfer, exc)
        if chunk:
            yield chunk


def _interrupted(transfer: _Transfer, exc: Exception | None, why: str | None = None) -> NoReturn:
    transfer.sync()
    reason = why or (_reason(exc) if exc is not None else "the server closed the connection early")
    raise DownloadError(
        f"download of {transfer.name} interrupted after {transfer.of_total()}; run the same pull again to resume",
        hint=f"cause: {reason}",
    )


def _check_cancel(cancel: threading.Event | None, name: str, transfer: _Transfer | None = None) -> None:
    if cancel is None or not cancel.is_set():
        return
    if transfer is None:
        raise Cancelled(f"pull of {name} cancelled")
    transfer.sync()
    raise Cancelled(f"pull of {name} cancelled after {transfer.of_total()}", hint="run the same pull again to resume")


def _range_starts_at(response: httpx2.Response, offset: int) -> bool:
    m = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    return m is not None and int(m[1]) == offset


# ---- local files ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """Hold a lock on ``dest`` so two pulls of one file (two threads or two processes) never share a partial."""
    lock_path = dest.parent / f".{dest.name}.lock"
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise DownloadError(f"another pull of {dest.name} is already running", hint="wait for it to finish") from None
    try:
        yield
    finally:
        # removed while still held, so the models folder keeps no litter and a waiter on the old inode starts over
        with contextlib.suppress(OSError):
            lock_path.unlink()
        lock.release()


def _local_digest(path: Path, report: _Reporter) -> str:
    """The sha256 of a local file, from the sidecar when it is still fresh, else computed and cached."""
    cached = _read_sidecar(path)
    if cached is not None:
        return cached
    hasher = hashlib.sha256()
    _hash_into(path, hasher, path.stat().st_size, report, f"verifying {path.name}")
    digest = hasher.hexdigest()
    _write_sidecar(path, digest)
    return digest


def _read_sidecar(path: Path) -> str | None:
    sidecar = sidecar_path(path)
    try:
        # the sidecar carries the file's mtime as its own, so any later change to the file makes it stale
        if sidecar.stat().st_mtime_ns != path.stat().st_mtime_ns:
            return None
        digest, _, name = sidecar.read_text(encoding="utf-8").strip().partition("  ")
    except (OSError, UnicodeDecodeError):
        return None
    return digest if _SHA256.match(digest) and name == path.name else None


def _write_sidecar(path: Path, digest: str) -> None:
    sidecar = sidecar_path(path)
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    try:
        tmp.write_text(f"{digest}  {path.name}\n", encoding="utf-8")
        st = path.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, sidecar)
    except OSError:
        # only a cache: without it the next pull hashes the file again
        tmp.unlink(missing_ok=True)


def _hash_into(path: Path, hasher: hashlib._Hash, length: int, report: _Reporter, status: str) -> None:
    """Feed the first ``length`` bytes of ``path`` to ``hasher``, reporting progress."""
    done = 0
    report.emit(status, 0, length, force=True)
    try:
        with open(path, "rb") as f:
            while done < length:
                block = f.read(min(_HASH_BLOCK, length - done))
                if not block:
                    break
                hasher.update(block)
                done += len(block)
                report.emit(status, done, length)
    except OSError as exc:
        raise DownloadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if done != length:
        raise DownloadError(f"{path} shrank while it was being read", hint="pull again")


def _check_disk(folder: Path, remaining: int, name: str) -> None:
    free = shutil.disk_usage(folder).free
    needed = remaining + DISK_MARGIN
    if free < needed:
        raise InsufficientResources(
            f"not enough disk space to pull {name}: {_size(needed)} needed ({_size(remaining)} to download plus a "
            f"{_size(DISK_MARGIN)} margin), {_size(free)} free in {folder}",
            hint="free some space, or set LLMSPELL_MODELS to a folder on a larger disk",
        )


def _write_failed(exc: OSError, path: Path) -> NoReturn:
    if exc.errno == errno.ENOSPC:
        raise InsufficientResources(
            f"the disk filled up while writing {path}", hint="free some space and run the same pull again to resume"
        ) from None
    raise DownloadError(f"cannot write {path}: {exc.strerror or exc}") from None


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; not possible on every platform, and only a safety net
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- the hub -------------------------------------------------------------------------------------------------------


def _timeout() -> httpx2.Timeout:
    return httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)


def _lfs_sha256(repo_id: str, filename: str, revision: str, endpoint: str) -> str | None:
    """The LFS sha256 from the paths-info API, for servers whose HEAD answer lacks X-Linked-Etag; None if unknown."""
    try:
        response = get_session().post(
            f"{endpoint}/api/models/{repo_id}/paths-info/{quote(revision, safe='')}",
            data={"paths": [filename], "expand": False},
            headers=build_hf_headers(token=hf_token(), library_name="llmspell", library_version=__version__),
            timeout=_timeout(),
        )
        hf_raise_for_status(response)
        entries = response.json()
    except (httpx2.HTTPError, ValueError, OSError):
        # best effort: without it the file is checked by size, and by expected_sha256 when the caller has one
        return None
    for entry in entries if isinstance(entries, list) else []:
        lfs = entry.get("lfs") if isinstance(entry, dict) else None
        if entry.get("path") == filename and isinstance(lfs, dict):
            oid = str(lfs.get("oid") or lfs.get("sha256") or "").lower()
            return oid if _SHA256.match(oid) else None
    return None


def _offline_error(repo_id: str, filename: str) -> DownloadError:
    return DownloadError(
        f"offline mode is on (HF_HUB_OFFLINE=1), so {repo_id}/{filename} cannot be downloaded",
        hint="unset HF_HUB_OFFLINE to pull; models already on disk still work",
    )


def _raise_clear(exc: BaseException, repo_id: str, filename: str, revision: str, where: str) -> NoReturn:
    """Turn what huggingface_hub or httpx2 raised into an error the user can act on."""
    what = f"{repo_id}/{filename}"
    if isinstance(exc, LLMSpellError):
        raise exc
    if isinstance(exc, OfflineModeIsEnabled):
        raise _offline_error(repo_id, filename) from None
    if isinstance(exc, HFValidationError):
        raise InvalidSpec(f"{repo_id!r} is not a valid Hugging Face repo id: {exc}") from None
    if isinstance(exc, GatedRepoError):
        raise DownloadError(
            f"{repo_id} is gated: you must be logged in and have accepted its license to download {filename}",
            hint=f"accept the license at {hf_endpoint()}/{repo_id}, then set HF_TOKEN (or HFHUB_API_KEY) to a token "
            "of that account",
        ) from None
    if isinstance(exc, RevisionNotFoundError):
        raise ModelNotFound(f"{repo_id} has no revision {revision!r}", hint="check the branch, tag or commit") from None
    if isinstance(exc, RepositoryNotFoundError):
        raise ModelNotFound(
            f"no repo {repo_id} on {where} (wanted {filename})",
            hint="check the spelling; a private repo also needs HF_TOKEN (or HFHUB_API_KEY)",
        ) from None
    if isinstance(exc, EntryNotFoundError):
        raise ModelNotFound(
            f"{repo_id} has no file {filename} at revision {revision}",
            hint=f"see the files at {hf_endpoint()}/{repo_id}/tree/{revision}",
        ) from None
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise DownloadError(
                f"{where} refused access to {what} (HTTP {status})",
                hint="set HF_TOKEN (or HFHUB_API_KEY) to a token that can read this repo, and accept its license if "
                "it is gated",
            ) from None
        if status == 404:
            raise ModelNotFound(f"{where} has no {what} at revision {revision}") from None
        raise DownloadError(
            f"{where} answered HTTP {status} for {what}", hint="the hub may be having trouble; try again later"
        ) from None
    if isinstance(exc, FileMetadataError):
        raise DownloadError(
            f"{where} does not answer like a Hugging Face hub for {what}", hint="check HF_ENDPOINT"
        ) from None
    if isinstance(exc, httpx2.HTTPError | ConnectionError | TimeoutError):
        raise DownloadError(
            f"cannot reach {where}: {_reason(exc)}",
            hint="check the network connection, or HF_ENDPOINT if you use a mirror",
        ) from None
    raise exc


# ---- small helpers -------------------------------------------------------------------------------------------------


class _Reporter:
    """Hands PullProgress to the caller's callback, at most PROGRESS_RATE times a second."""

    def __init__(self, callback: ProgressCallback | None, filename: str) -> None:
        self.callback, self.filename = callback, filename
        self.last = float("-inf")

    def emit(
        self, status: str, completed: int, total: int | None, digest: str | None = None, force: bool = False
    ) -> None:
        """Report a step unless one went out less than 1/PROGRESS_RATE s ago (``force`` sends it anyway)."""
        if self.callback is None:
            return
        now = time.monotonic()
        if not force and now - self.last < 1.0 / PROGRESS_RATE:
            return
        self.last = now
        self.callback(PullProgress(status=status, completed=completed, total=total or 0, digest=digest))

    def downloading(self, completed: int, total: int | None, digest: str | None, force: bool = False) -> None:
        """Report bytes received."""
        self.emit(f"downloading {self.filename}", completed, total, digest, force)

    def final(self, status: str, total: int, digest: str, path: Path) -> None:
        """The last report: done, with the file's path and verified digest."""
        if self.callback is not None:
            digest_label = f"sha256:{digest}"
            self.callback(PullProgress(status, completed=total, total=total, digest=digest_label, done=True, path=path))


def _normalize_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256.match(digest):
        raise DownloadError(f"{value!r} is not a sha256 digest", hint="give 64 hex digits, optionally after 'sha256:'")
    return digest


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, httpx2.TimeoutException):
        return f"timed out ({text})" if text else "timed out"
    return text or type(exc).__name__


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    default = {"http": 80, "https": 443}
    return (pa.scheme, pa.hostname, pa.port or default.get(pa.scheme)) == (
        pb.scheme,
        pb.hostname,
        pb.port or default.get(pb.scheme),
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
