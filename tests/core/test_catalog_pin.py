"""Pinning the catalog's hashes from a (local, real-socket) Hugging Face hub: the pins written with comments and
layout kept, missing files and conflicts reported, nothing changed twice, the --check gate, and a pinned file
refused when its bytes are wrong although the hub advertises no hash."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hfserver import LocalHub, point_hf_at, unused_endpoint

from llmspell.catalog_pin import main, pin_catalog
from llmspell.pull import remote_file_info

PROBE_REPO = "pin-org/Probe-GGUF"
OTHER_REPO = "pin-org/Other-GGUF"
MIRROR_REPO = "pin-mirror/Other-GGUF"
WRONG = "0123456789abcdef" * 4


def blob(tag: str, size: int) -> bytes:
    """Deterministic bytes standing for a GGUF file (never loaded: only sizes and hashes matter here)."""
    return (b"GGUF" + hashlib.sha256(tag.encode()).digest() * (size // 32 + 1))[:size]


def sha(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


PROBE_Q8 = blob("probe-q8", 150_000)  # the catalog says 100000, "approximate"
OTHER_Q5 = blob("other-q5", 120_000)
OTHER_Q8 = blob("other-q8", 130_000)  # the catalog pins WRONG for it
DECOY_Q5 = blob("decoy-q5", 120_000)  # same name in the variant's repo: the quant's own hf_repo must win

CATALOG = f"""\
# A catalog for the pinning tests: two models, four files.
# Comments here, between the tables and after values must all come through a pinning run byte for byte.

[models.pinprobe]
family = "llama"
description = "first probe"  # a comment after a value
default = "1b"

# the first variant: one file on the hub, one not
[models.pinprobe.variants.1b]
parameters = "1B"
context = 2048
hf_repo = "{PROBE_REPO}"
default_quant = "Q8_0"

[models.pinprobe.variants.1b.quants.Q8_0]
file = "probe-Q8_0.gguf"
size_bytes = 100000  # approximate
ram_gb = 0.5

# this one is not on the hub
[models.pinprobe.variants.1b.quants.Q4_K_M]
file = "probe-Q4_K_M.gguf"
size_bytes = 90000
ram_gb = 0.4

[models.otherprobe]
family = "qwen2"
description = "second probe"
default = "2b"

[models.otherprobe.variants.2b]
parameters = "2B"
context = 4096
hf_repo = "{OTHER_REPO}"
default_quant = "Q5_K_M"

[models.otherprobe.variants.2b.quants.Q5_K_M]
file = "other-Q5_K_M.gguf"
hf_repo = "{MIRROR_REPO}"  # the quant's own repo wins over the variant's
size_bytes = {len(OTHER_Q5)}
ram_gb = 1.0

# pinned by hand, wrongly
[models.otherprobe.variants.2b.quants.Q8_0]
file = "other-Q8_0.gguf"
size_bytes = {len(OTHER_Q8)}
ram_gb = 1.5
sha256 = "{WRONG}"
"""

#: the catalog after a pinning run: two lines added, one size corrected (its "approximate" mark gone), nothing else
PINNED = CATALOG.replace(
    "size_bytes = 100000  # approximate\nram_gb = 0.5\n",
    f'size_bytes = {len(PROBE_Q8)}\nram_gb = 0.5\nsha256 = "{sha(PROBE_Q8)}"\n',
).replace(
    f"size_bytes = {len(OTHER_Q5)}\nram_gb = 1.0\n",
    f'size_bytes = {len(OTHER_Q5)}\nram_gb = 1.0\nsha256 = "{sha(OTHER_Q5)}"\n',
)


@pytest.fixture
def hub(local_hub: LocalHub) -> LocalHub:
    """The local hub serving three of the catalog's four files (and a decoy)."""
    local_hub.add_file(PROBE_REPO, "probe-Q8_0.gguf", PROBE_Q8)
    local_hub.add_file(MIRROR_REPO, "other-Q5_K_M.gguf", OTHER_Q5)
    local_hub.add_file(OTHER_REPO, "other-Q5_K_M.gguf", DECOY_Q5)
    local_hub.add_file(OTHER_REPO, "other-Q8_0.gguf", OTHER_Q8)
    return local_hub


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A copy of the test catalog the tool may edit."""
    path = tmp_path / "catalog" / "models.toml"
    path.parent.mkdir()
    path.write_text(CATALOG, encoding="utf-8")
    return path


def command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the maintainer command as a maintainer would."""
    done = subprocess.run(
        [sys.executable, "-m", "llmspell.catalog_pin", *args], capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_a_run_pins_what_the_hub_has_reports_the_rest_and_a_second_run_changes_nothing(
    hub: LocalHub, catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = command("--verify", "--catalog", str(catalog))
    assert done.returncode == 1, done.stderr
    assert catalog.read_text(encoding="utf-8") == PINNED
    assert sha(DECOY_Q5) not in PINNED
    lines = done.stdout.splitlines()
    assert (
        f"pinned: pinprobe:1b-Q8_0 ({PROBE_REPO}/probe-Q8_0.gguf): sha256 {sha(PROBE_Q8)}; "
        f"size_bytes 100000 -> {len(PROBE_Q8)}"
    ) in lines
    assert f"pinned: otherprobe:2b-Q5_K_M ({MIRROR_REPO}/other-Q5_K_M.gguf): sha256 {sha(OTHER_Q5)}" in lines
    missing = [line for line in lines if line.startswith("missing:")]
    assert missing == [
        f"missing: pinprobe:1b-Q4_K_M ({PROBE_REPO}/probe-Q4_K_M.gguf): {PROBE_REPO} has no file probe-Q4_K_M.gguf "
        "at main"
    ]
    conflict = [line for line in lines if line.startswith("conflict:")]
    assert len(conflict) == 1 and conflict[0].startswith(f"conflict: otherprobe:2b-Q8_0 ({OTHER_REPO}/other-Q8_0.gguf)")
    assert f"the catalog pins sha256 {WRONG}, the hub serves {sha(OTHER_Q8)}; left as it is" in conflict[0]
    assert lines[-1] == f"pinned 2, already pinned 0, missing 1, conflicts 1 (1 size_bytes corrected); wrote {catalog}"
    assert sorted(p.name for p in catalog.parent.iterdir()) == ["models.toml"], "no temporary file is left behind"

    before = catalog.stat().st_mtime_ns
    assert main(["--verify", "--catalog", str(catalog)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"pinned 0, already pinned 2, missing 1, conflicts 1; {catalog} unchanged"
    assert catalog.read_text(encoding="utf-8") == PINNED and catalog.stat().st_mtime_ns == before

    # without --verify the pins are trusted as they are: only the one left unpinned is asked about
    hub.reset_counters()
    assert main(["--catalog", str(catalog)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"pinned 0, already pinned 3, missing 1, conflicts 0; {catalog} unchanged"
    )
    assert hub.count("POST", "paths-info") == 1 and hub.count("POST", MIRROR_REPO) == 0


def test_check_lists_the_quants_without_a_pin_and_asks_nothing(hub: LocalHub, catalog: Path) -> None:
    before = command("--check", "--catalog", str(catalog))
    assert before.returncode == 1
    assert before.stdout.splitlines() == [
        f"unpinned: pinprobe:1b-Q8_0 ({PROBE_REPO}/probe-Q8_0.gguf)",
        f"unpinned: pinprobe:1b-Q4_K_M ({PROBE_REPO}/probe-Q4_K_M.gguf)",
        f"unpinned: otherprobe:2b-Q5_K_M ({MIRROR_REPO}/other-Q5_K_M.gguf)",
        f"3 of 4 quants pin no sha256 in {catalog}",
    ]
    assert pin_catalog(catalog).count("pinned") == 2
    hub.reset_counters()
    after = command("--check", "--catalog", str(catalog))
    assert after.returncode == 1
    assert after.stdout.splitlines() == [
        f"unpinned: pinprobe:1b-Q4_K_M ({PROBE_REPO}/probe-Q4_K_M.gguf)",
        f"1 of 4 quants pin no sha256 in {catalog}",
    ]
    assert hub.count() == 0, "--check works without the network"
    only = command("--check", "--catalog", str(catalog), "--only", "otherprobe")
    assert only.returncode == 0 and only.stdout.splitlines() == [f"0 of 2 quants pin no sha256 in {catalog}"]
    unknown = command("--check", "--catalog", str(catalog), "--only", "otherprobes")
    assert unknown.returncode == 2 and unknown.stdout == ""
    said = unknown.stderr.splitlines()
    assert said[0] == f"error: {catalog} has no model named 'otherprobes'; did you mean otherprobe?"
    assert said[1:] == ["  --only takes a model's name"]


def test_gated_and_missing_repos_are_reported_one_line_each_and_nothing_is_written(
    hub: LocalHub, catalog: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub.gate(PROBE_REPO, "secret-token")
    text = CATALOG.replace(f'hf_repo = "{MIRROR_REPO}"', 'hf_repo = "pin-org/Gone-GGUF"')
    catalog.write_text(text, encoding="utf-8")
    assert main(["--catalog", str(catalog), "--only", "pinprobe", "--only", "otherprobe"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines if line.startswith("missing:")] == [
        "missing: pinprobe:1b-Q8_0",
        "missing: pinprobe:1b-Q4_K_M",
        "missing: otherprobe:2b-Q5_K_M",
    ]
    assert all(f"{PROBE_REPO} is gated" in line for line in lines if "pinprobe" in line)
    assert f"there is no repo pin-org/Gone-GGUF on {hub.url}" in next(line for line in lines if "Q5_K_M" in line)
    assert lines[-1] == f"pinned 0, already pinned 1, missing 3, conflicts 0; {catalog} unchanged"
    assert catalog.read_text(encoding="utf-8") == text


def test_an_unreachable_hub_is_one_error_line_and_nothing_is_written(
    local_hub: LocalHub, catalog: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = unused_endpoint()
    point_hf_at(monkeypatch, endpoint)
    assert main(["--catalog", str(catalog)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: cannot reach {endpoint}") and len(err) == 2 and "HF_ENDPOINT" in err[1]
    assert catalog.read_text(encoding="utf-8") == CATALOG


def test_a_pinned_file_is_verified_when_the_hub_advertises_no_hash(
    hub: LocalHub, catalog: Path, tmp_path: Path
) -> None:
    pin_catalog(catalog)
    user_catalog = Path(os.environ["LLMSPELL_HOME"]) / "models.toml"
    user_catalog.parent.mkdir(parents=True, exist_ok=True)
    user_catalog.write_text(catalog.read_text(encoding="utf-8"), encoding="utf-8")
    # a mirror that keeps no LFS metadata: no X-Linked-Etag on HEAD, no lfs entry in paths-info
    hub.hide_linked_etag = True
    hub.hide_lfs = True
    assert remote_file_info(PROBE_REPO, "probe-Q8_0.gguf").sha256 is None
    models = tmp_path / "models"
    env = {**os.environ, "LLMSPELL_MODELS": str(models)}
    target = models / "hf" / PROBE_REPO / "probe-Q8_0.gguf"

    def pull() -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "llmspell", "model", "pull", "pinprobe:1b-Q8_0"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    hub.corrupt = True
    refused = pull()
    assert refused.returncode == 1
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: probe-Q8_0.gguf is corrupt: ")
    assert f"expected sha256 {sha(PROBE_Q8)}, got " in errors[0]
    assert not target.exists() and not list(target.parent.glob(".*.partial"))

    hub.corrupt = False
    pulled = pull()
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == str(target) and target.read_bytes() == PROBE_Q8
