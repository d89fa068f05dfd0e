"""Discovery of GGUF files in the Hugging Face cache and Ollama's store, laid out as those tools write them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmspell.discovery import discover, find, quant_from_filename, scan_hf_cache, scan_ollama_store

GGUF = b"GGUF" + b"\3\0\0\0" + b"\0" * 64


def hf_file(root: Path, repo: str, filename: str, data: bytes = GGUF, rev: str = "a" * 40, main: bool = True) -> Path:
    """One file in the hub cache: a blob plus a relative symlink from the snapshot, like huggingface_hub."""
    base = root / ("models--" + repo.replace("/", "--"))
    blob = base / "blobs" / f"{abs(hash((filename, rev, data))):064x}"[:64]
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = base / "snapshots" / rev / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(Path("../../blobs") / blob.name)
    if main:
        (base / "refs").mkdir(exist_ok=True)
        (base / "refs" / "main").write_text(rev)
    return link


def ollama_model(
    root: Path,
    name: str,
    tag: str,
    data: bytes = GGUF,
    host: str = "registry.ollama.ai",
    namespace: str = "library",
    extra_layers: dict[str, str] | None = None,
) -> Path:
    """One model in Ollama's store: blobs named sha256-HEX and a v2 manifest naming them."""
    import hashlib

    def blob(content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / f"sha256-{digest}").write_bytes(content)
        return f"sha256:{digest}"

    layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": blob(data), "size": len(data)}]
    for media, text in (extra_layers or {}).items():
        layers.append({"mediaType": media, "digest": blob(text.encode()), "size": len(text)})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": blob(b"{}"), "size": 2},
        "layers": layers,
    }
    path = root / "manifests" / host / namespace / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(
    ("filename", "quant"),
    [
        ("tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", "Q4_K_M"),
        ("Llama-3.2-1B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("qwen2.5-0.5b-instruct-q8_0.gguf", "Q8_0"),
        ("model-f16.gguf", "F16"),
        ("model-BF16.gguf", "BF16"),
        ("big-Q5_K_M-00001-of-00003.gguf", "Q5_K_M"),
        ("plain.gguf", None),
    ],
)
def test_quantization_from_file_names(filename: str, quant: str | None) -> None:
    assert quant_from_filename(filename) == quant


def test_hf_cache_files_are_named_like_ollama_and_read_in_place(tmp_path: Path) -> None:
    link = hf_file(tmp_path, "bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf")
    hf_file(tmp_path, "bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q8_0.gguf")
    (link.parent / "README.md").write_text("not a model")
    (link.parent / "fake.gguf").write_bytes(b"not really")
    found = {m.name: m for m in scan_hf_cache(tmp_path)}
    assert set(found) == {
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
        "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0",
    }
    m = found["hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"]
    assert m.path == link and m.path.resolve().parent.name == "blobs", "the cache's own file, not a copy"
    assert m.source == "hf-cache" and m.quantization == "Q4_K_M" and m.size_bytes == len(GGUF)
    assert m.repo == "bartowski/Llama-3.2-1B-Instruct-GGUF" and m.revision == "a" * 40


def test_split_files_duplicate_quants_and_revisions(tmp_path: Path) -> None:
    repo = "org/Big-GGUF"
    hf_file(tmp_path, repo, "big-Q4_K_M-00001-of-00002.gguf")
    hf_file(tmp_path, repo, "big-Q4_K_M-00002-of-00002.gguf")
    hf_file(tmp_path, repo, "a-Q8_0.gguf")
    hf_file(tmp_path, repo, "b-Q8_0.gguf")
    hf_file(tmp_path, repo, "big-Q4_K_M-00001-of-00002.gguf", rev="b" * 40, main=False)
    names = sorted(m.name for m in scan_hf_cache(tmp_path))
    assert names == ["hf.co/org/Big-GGUF:Q4_K_M", "hf.co/org/Big-GGUF:a-Q8_0", "hf.co/org/Big-GGUF:b-Q8_0"]
    big = next(m for m in scan_hf_cache(tmp_path) if m.name.endswith("Q4_K_M"))
    assert big.revision == "a" * 40, "the revision refs/main points at wins"


def test_broken_links_and_odd_folders_are_skipped_with_a_reason(tmp_path: Path) -> None:
    link = hf_file(tmp_path, "org/R", "r-Q4_0.gguf")
    link.resolve().unlink()
    (tmp_path / "models--lonely").mkdir()
    (tmp_path / "not-a-repo").mkdir()
    skipped: list[tuple[Path, str]] = []
    assert scan_hf_cache(tmp_path, skipped) == []
    assert any(reason == "broken link" for _, reason in skipped)
    assert scan_hf_cache(tmp_path / "missing") == []


def test_ollama_store_names_blobs_and_text_layers(tmp_path: Path) -> None:
    ollama_model(tmp_path, "llama3.2", "1b", extra_layers={"application/vnd.ollama.image.template": "{{ .Prompt }}"})
    ollama_model(tmp_path, "mymodel", "latest", namespace="someone", data=GGUF + b"x")
    ollama_model(tmp_path, "other", "q4", host="hf.co", namespace="org", data=GGUF + b"y")
    found = {m.name: m for m in scan_ollama_store(tmp_path)}
    assert set(found) == {"llama3.2:1b", "someone/mymodel:latest", "hf.co/org/other:q4"}
    m = found["llama3.2:1b"]
    assert m.path.parent == tmp_path / "blobs" and m.path.name.startswith("sha256-")
    assert m.digest and m.digest.startswith("sha256:") and m.extra["template"] == "{{ .Prompt }}"
    assert m.source == "ollama-store"


def test_malformed_manifests_and_missing_blobs_are_skipped(tmp_path: Path) -> None:
    bad = ollama_model(tmp_path, "bad", "latest")
    bad.write_text("{not json")
    gone = ollama_model(tmp_path, "gone", "latest", data=GGUF + b"gone")
    blob = json.loads(gone.read_text())["layers"][0]["digest"].replace(":", "-")
    (tmp_path / "blobs" / blob).unlink()
    notgguf = ollama_model(tmp_path, "adapter", "latest", data=b"safetensors...")
    assert notgguf.exists()
    ok = ollama_model(tmp_path, "fine", "latest", data=GGUF + b"fine")
    assert ok.exists()
    skipped: list[tuple[Path, str]] = []
    assert [m.name for m in scan_ollama_store(tmp_path, skipped)] == ["fine:latest"]
    assert len(skipped) == 3


def test_env_vars_relocate_both_sources_and_find_is_case_insensitive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_file(tmp_path / "hf", "org/R-GGUF", "r-Q4_K_M.gguf")
    ollama_model(tmp_path / "ol", "tiny", "latest")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ol"))
    assert [m.name for m in discover()] == ["hf.co/org/R-GGUF:Q4_K_M", "tiny:latest"]
    assert find("hf.co/org/R-GGUF:q4_k_m") is not None
    assert find("tiny") is not None and find("tiny").name == "tiny:latest"  # type: ignore[union-attr]
    assert find("nothing:here") is None
    assert discover(hf=False) == [m for m in discover() if m.source == "ollama-store"]
