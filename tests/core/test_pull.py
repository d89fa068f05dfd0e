"""Pulling a file from a (local, real-socket) Hugging Face hub: progress, resume, verification, cancel, clear errors."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from hfserver import LocalHub, local_hub, silent_endpoint, unused_endpoint  # noqa: F401 - local_hub is a fixture

from llmspell import pull
from llmspell.errors import Cancelled, DownloadError, InsufficientResources, IntegrityError, ModelNotFound
from llmspell.pull import download_file, partial_path, remote_file_info, sidecar_path
from llmspell.types import PullProgress

REPO = "test-org/tiny-GGUF"
FILE = "tiny-Q8_0.gguf"


@pytest.fixture(scope="session")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real GGUF of about 3 MB: a little metadata and one random F32 tensor as padding."""
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny test model")
    writer.add_context_length(128)
    writer.add_tensor("padding", np.random.default_rng(7).standard_normal(768 * 1024, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def hub(local_hub: LocalHub, gguf_bytes: bytes) -> LocalHub:  # noqa: F811 - the fixture, not the import
    """The local hub serving the tiny GGUF as REPO/FILE."""
    local_hub.add_file(REPO, FILE, gguf_bytes)
    return local_hub


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """Where the model should land."""
    return tmp_path / "models" / FILE


def sha(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def collect() -> tuple[list[PullProgress], Callable[[PullProgress], None]]:
    """A progress callback that records every report."""
    seen: list[PullProgress] = []
    return seen, seen.append


def make_partial(hub: LocalHub, dest: Path, cut: int) -> int:
    """Run a pull that the server cuts after ``cut`` bytes; returns the size of the partial it leaves."""
    hub.cut_after_bytes = cut
    with pytest.raises(DownloadError):
        download_file(REPO, FILE, dest)
    return partial_path(dest).stat().st_size


# ---- the happy path --------------------------------------------------------------------------------------------------


def test_remote_file_info_reports_size_sha_and_commit(hub: LocalHub, gguf_bytes: bytes) -> None:
    info = remote_file_info(REPO, FILE)
    assert info.size == len(gguf_bytes)
    assert info.sha256 == sha(gguf_bytes)
    assert info.commit == hub.commit(REPO)
    assert info.url.startswith(hub.url) and info.url.endswith(f"/resolve/main/{FILE}")
    assert hub.methods("/resolve/") == {"HEAD": 1}


def test_full_download_reports_progress_and_writes_the_exact_file(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    seen, callback = collect()
    assert download_file(REPO, FILE, dest, progress=callback) == dest

    assert dest.read_bytes() == gguf_bytes
    assert gguf.GGUFReader(dest).fields["general.name"].contents() == "tiny test model"
    downloading = [p for p in seen if p.status == f"downloading {FILE}"]
    assert downloading, "no progress while downloading"
    completed = [p.completed for p in downloading]
    assert completed == sorted(completed)
    assert all(p.total == len(gguf_bytes) and p.digest == f"sha256:{sha(gguf_bytes)}" for p in downloading)
    final = seen[-1]
    assert final.done and final.path == dest
    assert final.completed == final.total == len(gguf_bytes)
    assert final.digest == f"sha256:{sha(gguf_bytes)}"
    # nothing half-done is left beside the model; the digest is cached for the next pull
    assert sorted(p.name for p in dest.parent.iterdir()) == [FILE, f"{FILE}.sha256"]
    assert sidecar_path(dest).read_text() == f"{sha(gguf_bytes)}  {FILE}\n"


def test_progress_is_reported_at_most_about_ten_times_a_second(hub: LocalHub, dest: Path) -> None:
    hub.throttle = 2 * 1024 * 1024
    stamps: list[tuple[float, PullProgress]] = []
    download_file(REPO, FILE, dest, progress=lambda p: stamps.append((time.monotonic(), p)))
    downloading = [t for t, p in stamps if p.status.startswith("downloading") and p.completed < p.total]
    # the throttle's own property: a slower machine only widens the gaps, so this cannot flake on load
    gaps = [b - a for a, b in itertools.pairwise(downloading)]
    assert len(downloading) >= 5
    assert min(gaps) >= 0.9 / pull.PROGRESS_RATE


def test_second_pull_is_instant_already_up_to_date(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    download_file(REPO, FILE, dest)
    hub.reset_counters()
    seen, callback = collect()

    assert download_file(REPO, FILE, dest, progress=callback) == dest

    assert [p.status for p in seen] == ["already up to date"]
    assert seen[0].done and seen[0].digest == f"sha256:{sha(gguf_bytes)}" and seen[0].path == dest
    # one HEAD for the metadata, no GET of the body
    assert hub.methods("/resolve/") == {"HEAD": 1}


def test_a_damaged_local_copy_is_replaced_on_pull(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    download_file(REPO, FILE, dest)
    with open(dest, "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 16)
    # stamp the damage a second later: file systems keep mtimes with a coarse clock, and damage comes later in life
    later = dest.stat().st_mtime_ns + 1_000_000_000
    os.utime(dest, ns=(later, later))
    hub.reset_counters()
    seen, callback = collect()

    download_file(REPO, FILE, dest, progress=callback)

    assert dest.read_bytes() == gguf_bytes
    assert seen[-1].status == f"downloaded {FILE}"
    assert hub.count("GET", "/resolve/") == 1


# ---- interruptions -------------------------------------------------------------------------------------------------


def test_a_cut_download_resumes_with_a_range_request(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    hub.cut_after_bytes = 1_000_000
    with pytest.raises(DownloadError) as err:
        download_file(REPO, FILE, dest)

    partial = partial_path(dest)
    kept = partial.stat().st_size
    assert 0 < kept <= 1_000_000
    assert f"interrupted after {kept} of {len(gguf_bytes)} bytes" in str(err.value)
    assert "run the same pull again to resume" in str(err.value)
    assert not dest.exists()
    assert gguf_bytes.startswith(partial.read_bytes())

    seen, callback = collect()
    download_file(REPO, FILE, dest, progress=callback)

    assert hub.range_headers == [f"bytes={kept}-"]
    assert dest.read_bytes() == gguf_bytes
    assert not partial.exists()
    downloading = [p for p in seen if p.status.startswith("downloading")]
    assert downloading[0].completed == kept
    assert seen[-1].digest == f"sha256:{sha(gguf_bytes)}"


def test_a_transfer_that_goes_silent_times_out_and_resumes(
    hub: LocalHub, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch, dest: Path
) -> None:
    monkeypatch.setattr(pull, "READ_TIMEOUT", 0.5)
    hub.stall_after_bytes = 500_000
    with pytest.raises(DownloadError) as err:
        download_file(REPO, FILE, dest)
    kept = partial_path(dest).stat().st_size
    assert f"interrupted after {kept} of {len(gguf_bytes)} bytes" in str(err.value)
    assert "timed out" in str(err.value)
    assert not dest.exists()

    download_file(REPO, FILE, dest)
    assert hub.range_headers == [f"bytes={kept}-"]
    assert dest.read_bytes() == gguf_bytes


def test_a_server_that_ignores_range_gets_a_clean_restart(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    kept = make_partial(hub, dest, 700_000)
    hub.ignore_range = True
    hub.reset_counters()

    download_file(REPO, FILE, dest)

    assert hub.range_headers == [f"bytes={kept}-"]
    assert dest.read_bytes() == gguf_bytes
    assert not partial_path(dest).exists()


def test_cancel_keeps_the_partial_and_a_later_pull_resumes(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    hub.throttle = 512 * 1024
    cancel = threading.Event()

    def stop_once_bytes_arrive(p: PullProgress) -> None:
        if p.completed > 0:
            cancel.set()

    with pytest.raises(Cancelled) as err:
        download_file(REPO, FILE, dest, progress=stop_once_bytes_arrive, cancel=cancel)
    assert "resume" in str(err.value)
    kept = partial_path(dest).stat().st_size
    assert 0 < kept < len(gguf_bytes)
    assert not dest.exists()

    hub.throttle = None
    hub.reset_counters()
    download_file(REPO, FILE, dest)

    assert hub.range_headers == [f"bytes={kept}-"]
    assert dest.read_bytes() == gguf_bytes


def test_a_second_pull_of_the_same_file_while_one_runs_is_refused(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    hub.throttle = 512 * 1024
    started, cancel = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def first() -> None:
        try:
            download_file(REPO, FILE, dest, progress=lambda p: p.completed and started.set(), cancel=cancel)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=first)
    worker.start()
    try:
        assert started.wait(10)
        with pytest.raises(DownloadError, match="already running"):
            download_file(REPO, FILE, dest)
    finally:
        cancel.set()
        worker.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], Cancelled)

    hub.throttle = None
    download_file(REPO, FILE, dest)
    assert dest.read_bytes() == gguf_bytes


# ---- verification --------------------------------------------------------------------------------------------------


def test_corrupt_bytes_are_an_integrity_error_and_leave_nothing(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    hub.corrupt = True
    with pytest.raises(IntegrityError) as err:
        download_file(REPO, FILE, dest)

    message = str(err.value)
    assert FILE in message and f"expected sha256 {sha(gguf_bytes)}" in message and "got " in message
    assert "pull again" in message
    assert not dest.exists()
    assert not partial_path(dest).exists()


def test_expected_sha256_that_differs_from_the_hub_is_refused(hub: LocalHub, dest: Path) -> None:
    wrong = sha(b"some other file")
    with pytest.raises(IntegrityError) as err:
        download_file(REPO, FILE, dest, expected_sha256=wrong)
    assert wrong in str(err.value) and FILE in str(err.value)
    assert not dest.exists() and not partial_path(dest).exists()


def test_expected_sha256_that_matches_is_accepted_with_prefix(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    download_file(REPO, FILE, dest, expected_sha256=f"sha256:{sha(gguf_bytes).upper()}")
    assert dest.read_bytes() == gguf_bytes


def test_sha256_comes_from_paths_info_when_head_lacks_lfs_headers(hub: LocalHub, gguf_bytes: bytes, dest: Path) -> None:
    hub.hide_linked_etag = True
    assert remote_file_info(REPO, FILE).sha256 == sha(gguf_bytes)
    assert hub.count("POST", f"/api/models/{REPO}/paths-info/") == 1

    hub.corrupt = True
    with pytest.raises(IntegrityError):
        download_file(REPO, FILE, dest)
    hub.corrupt = False
    download_file(REPO, FILE, dest)
    assert dest.read_bytes() == gguf_bytes


# ---- clear errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "filename", "revision", "words"),
    [
        ("nobody/no-such-repo", FILE, "main", ["nobody/no-such-repo"]),
        (REPO, "missing-Q4_K_M.gguf", "main", [REPO, "missing-Q4_K_M.gguf"]),
        (REPO, FILE, "no-such-branch", [REPO, "no-such-branch"]),
    ],
)
def test_unknown_repo_file_or_revision_is_model_not_found(
    hub: LocalHub, dest: Path, repo: str, filename: str, revision: str, words: list[str]
) -> None:
    with pytest.raises(ModelNotFound) as err:
        download_file(repo, filename, dest, revision=revision)
    assert all(w in str(err.value) for w in words)
    assert not dest.parent.exists() or not any(dest.parent.iterdir())


def test_nothing_listening_is_a_download_error_naming_the_endpoint(monkeypatch: pytest.MonkeyPatch, dest: Path) -> None:
    endpoint = unused_endpoint()
    # only the environment variable, set after huggingface_hub was imported: pull reads it at call time
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(DownloadError) as err:
        download_file(REPO, FILE, dest)
    assert f"cannot reach {endpoint}" in str(err.value)
    assert "HF_ENDPOINT" in str(err.value)
    assert not dest.exists()


def test_a_hub_that_never_answers_times_out_with_a_clear_error(monkeypatch: pytest.MonkeyPatch, dest: Path) -> None:
    monkeypatch.setattr(pull, "READ_TIMEOUT", 0.5)
    with silent_endpoint() as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(DownloadError) as err:
            download_file(REPO, FILE, dest)
    assert f"cannot reach {endpoint}: timed out" in str(err.value)


def test_offline_mode_is_a_clear_download_error(hub: LocalHub, monkeypatch: pytest.MonkeyPatch, dest: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline mode is on"):
        download_file(REPO, FILE, dest)
    assert hub.count() == 0


def test_gated_repo_needs_a_token(
    hub: LocalHub, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch, dest: Path
) -> None:
    hub.gate(REPO, "hf_local_test_token")
    with pytest.raises(DownloadError) as err:
        download_file(REPO, FILE, dest)
    assert "gated" in str(err.value) and "HF_TOKEN" in str(err.value)
    assert not dest.exists()

    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    download_file(REPO, FILE, dest)
    assert dest.read_bytes() == gguf_bytes


def test_disk_check_stand_in_full_disk(
    hub: LocalHub, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch, dest: Path
) -> None:
    """A stand-in: a full disk cannot be produced for real in a test, so disk_usage reports 10 MiB free."""
    free = 10 * 1024 * 1024
    monkeypatch.setattr(pull.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**12, 10**12 - free, free))
    with pytest.raises(InsufficientResources) as err:
        download_file(REPO, FILE, dest)
    message = str(err.value)
    assert FILE in message and "10.0 MiB free" in message and str(dest.parent) in message
    assert f"{(len(gguf_bytes) + pull.DISK_MARGIN) / 1024 / 1024:.1f} MiB needed" in message
    assert not dest.exists() and not partial_path(dest).exists()
    assert hub.count("GET") == 0


def test_a_hub_sending_more_than_it_announced_is_stopped_at_the_announced_size(
    hub: LocalHub, gguf_bytes: bytes, dest: Path
) -> None:
    hub.announced_size = 100_000  # HEAD says 100 kB; the body is the whole file
    with pytest.raises(IntegrityError) as err:
        download_file(REPO, FILE, dest)
    assert "sent more than the 100,000 bytes it announced" in err.value.message
    assert not dest.exists() and not partial_path(dest).exists(), "nothing past the announced size is kept"


def test_a_hub_that_trickles_is_stopped_and_the_part_resumes(
    hub: LocalHub, gguf_bytes: bytes, monkeypatch: pytest.MonkeyPatch, dest: Path
) -> None:
    # a byte rate that never trips the read timeout: only the rate over a window can end it
    monkeypatch.setattr(pull, "STALL_SECONDS", 0.5)
    monkeypatch.setattr(pull, "STALL_BYTES", 1024 * 1024)
    hub.throttle = 20_000
    with pytest.raises(DownloadError) as err:
        download_file(REPO, FILE, dest)
    kept = partial_path(dest).stat().st_size
    assert "bytes in 0.5 s" in (err.value.hint or "") and "run the same pull again to resume" in err.value.message
    assert 0 < kept < len(gguf_bytes)
    hub.throttle = None
    monkeypatch.setattr(pull, "STALL_SECONDS", 60.0)
    download_file(REPO, FILE, dest)
    assert dest.read_bytes() == gguf_bytes


def test_a_pull_refused_before_its_first_byte_leaves_no_empty_part(hub: LocalHub, dest: Path) -> None:
    hub.refuse_get = 403
    with pytest.raises(DownloadError):
        download_file(REPO, FILE, dest)
    assert not partial_path(dest).exists() and not dest.exists()
