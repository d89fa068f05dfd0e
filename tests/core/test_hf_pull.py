"""Any GGUF of a Hugging Face repo, pulled by repo name against the local hub: the file chosen by quantization or
named, split models, the clear errors, and the model then listed, run, shown and deleted like any other."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest
from helpers import collect, smollm2_file
from hfserver import LocalHub, unused_endpoint

from llmspell import pull
from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.errors import DownloadError, ModelNotFound
from llmspell.hfrepo import RepoFile, choose, group_ggufs, hf_repo_of
from llmspell.spec import parse_spec
from llmspell.types import Options, PullProgress

REPO = "test-org/Foo-GGUF"


@pytest.fixture(scope="session")
def smol() -> bytes:
    """The real SmolLM2 GGUF (about 100 MB): served under other names, it loads and answers."""
    return smollm2_file().read_bytes()


@pytest.fixture(scope="session")
def smol_split(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """SmolLM2 re-written by the gguf package as a real split model of three parts (llama.cpp loads it from the
    first), keyed by part name."""
    src = gguf.GGUFReader(smollm2_file())
    out = tmp_path_factory.mktemp("split") / "Smol-Q4_K_M.gguf"
    writer = gguf.GGUFWriter(out, str(src.fields["general.architecture"].contents()), split_max_tensors=100)
    for field in src.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for t in src.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in src.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=src.endianess)
    writer.close()
    parts = {p.name: p.read_bytes() for p in sorted(out.parent.glob("Smol-Q4_K_M-*-of-*.gguf"))}
    assert len(parts) == 3
    return parts


def fake(tag: str, size: int = 200_000) -> bytes:
    """Bytes that look like a GGUF to a listing (never loaded): for tests of choosing and failing only."""
    return (b"GGUF" + hashlib.sha256(tag.encode()).digest() * (size // 32 + 1))[:size]


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LlamaCppBackend]:
    """An embedded backend with an empty models folder of its own."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "models"))
    b = LlamaCppBackend(Config(keep_alive=300, num_ctx=512))
    yield b
    b.close_sync()


def folder(b: LlamaCppBackend, repo: str = REPO) -> Path:
    """Where the files of a repo land."""
    return b.pulled_path(repo, "x").parent


async def pull_all(b: LlamaCppBackend, spec: str) -> list[PullProgress]:
    """Every progress report of a pull, to its end."""
    return [p async for p in b.pull(parse_spec(spec))]


def gets(hub: LocalHub, name: str) -> int:
    """How many times a file's bytes were asked for."""
    return hub.count("GET", f"/resolve/main/{name}")


# ---- spelling ------------------------------------------------------------------------------------------------------


def test_repo_specs_parse_as_repos_never_as_paths() -> None:
    assert hf_repo_of("hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF") == "bartowski/Llama-3.2-3B-Instruct-GGUF"
    assert hf_repo_of("bartowski/Llama-3.2-3B-Instruct-GGUF") == "bartowski/Llama-3.2-3B-Instruct-GGUF"
    assert hf_repo_of("smollm2") is None and hf_repo_of("a/b/c") is None
    spec = parse_spec("hf.co/o/r:model-q8_0.gguf")
    assert (spec.name, spec.variant, spec.path) == ("hf.co/o/r", "model-q8_0.gguf", None)
    spec = parse_spec("o/r:Foo-Q8_0.gguf@llamacpp")
    assert (spec.name, spec.variant, spec.backend, spec.path) == ("o/r", "Foo-Q8_0.gguf", "llamacpp", None)
    assert parse_spec("models/o/r.gguf").path == Path("models/o/r.gguf")


def test_choosing_groups_split_parts_and_ignores_projectors() -> None:
    files = [
        RepoFile("Foo-Q8_0.gguf"),
        RepoFile("mmproj-Foo-F16.gguf"),
        RepoFile("Q4_K_M/Foo-Q4_K_M-00002-of-00002.gguf"),
        RepoFile("Q4_K_M/Foo-Q4_K_M-00001-of-00002.gguf"),
        RepoFile("Bar-Q2_K-00001-of-00002.gguf"),  # its second part is missing: not a model
        RepoFile("README.md"),
    ]
    models = group_ggufs(files)
    assert [m.label for m in models] == ["Foo-Q8_0", "mmproj-Foo-F16", "Foo-Q4_K_M"]
    chosen = choose(REPO, models, None)
    assert [p.name for p in chosen.parts] == ["Foo-Q4_K_M-00001-of-00002.gguf", "Foo-Q4_K_M-00002-of-00002.gguf"]
    assert choose(REPO, models, "q8_0").label == "Foo-Q8_0"
    assert choose(REPO, models, "Foo-Q4_K_M-00002-of-00002.gguf") is chosen


# ---- pulls that work -----------------------------------------------------------------------------------------------


@pytest.mark.engine
async def test_default_pull_takes_q4_k_m_and_the_model_lists_runs_shows_and_deletes(
    fresh: LlamaCppBackend, local_hub: LocalHub, smol: bytes
) -> None:
    local_hub.add_file(REPO, "Foo-Q4_K_M.gguf", smol)
    local_hub.add_file(REPO, "Foo-Q8_0.gguf", fake("q8"))
    local_hub.add_file(REPO, "README.md", b"# Foo\n")
    steps = await pull_all(fresh, f"hf.co/{REPO}")
    target = folder(fresh) / "Foo-Q4_K_M.gguf"
    assert steps[0].status.startswith(f"pulling hf.co/{REPO}:Q4_K_M")
    assert any(p.status == "downloading Foo-Q4_K_M.gguf" for p in steps)
    assert steps[-1].done and steps[-1].path == target and target.read_bytes() == smol
    assert steps[-1].total == len(smol)
    assert gets(local_hub, "Foo-Q8_0.gguf") == 0, "only the chosen file is downloaded"
    digest = hashlib.sha256(smol).hexdigest()
    assert target.with_name("Foo-Q4_K_M.gguf.sha256").read_text().split()[0] == digest

    listed = {m.name: m for m in await fresh.list_models()}
    assert f"hf.co/{REPO}:Q4_K_M" in listed and listed[f"hf.co/{REPO}:Q4_K_M"].source == "pulled"
    # the name listed runs, and so does the spelling without hf.co (any case of the quantization)
    for spelling in (f"hf.co/{REPO}:Q4_K_M", f"{REPO}:q4_k_m", REPO):
        assert await fresh.has_model(parse_spec(spelling)), spelling
    text, last = await collect(
        fresh.chat(
            parse_spec(f"{REPO}:Q4_K_M"),
            [{"role": "user", "content": "Name the capital of France."}],
            Options(temperature=0, max_tokens=16, seed=1),
        )
    )
    assert "Paris" in text and last.stats is not None and last.stats.generated_tokens > 0
    info = await fresh.info(parse_spec(f"hf.co/{REPO}:Q4_K_M"))
    assert info.name == f"hf.co/{REPO}:Q4_K_M" and info.source == "pulled" and info.location == str(target)
    assert info.sha256 == digest and info.size_bytes == len(smol) and info.has_chat_template
    assert info.quantization == "Q4_1", "the header says what the file really holds"

    again = await pull_all(fresh, f"{REPO}:Q4_K_M")
    assert again[-1].done and any(p.status == "already up to date" for p in again)

    await fresh.delete(parse_spec(f"hf.co/{REPO}:Q4_K_M"))
    assert not target.exists() and not folder(fresh).exists(), "the model and its emptied folders are gone"
    assert f"hf.co/{REPO}:Q4_K_M" not in {m.name for m in await fresh.list_models()}
    with pytest.raises(ModelNotFound, match=f"not downloaded yet.*\n.*model pull hf.co/{REPO}:Q4_K_M"):
        await fresh.info(parse_spec(f"hf.co/{REPO}:Q4_K_M"))


async def test_a_quantization_or_a_file_picks_one_and_each_lists_under_a_name_that_runs(
    fresh: LlamaCppBackend, local_hub: LocalHub
) -> None:
    for name in ("Foo-Q4_K_M.gguf", "Foo-Q8_0.gguf", "Foo-abliterated-Q8_0.gguf", "Foo-F16.gguf"):
        local_hub.add_file(REPO, name, fake(name))
    # Q8_0 names two files: the message says which specs to type instead
    with pytest.raises(ModelNotFound, match="has 2 Q8_0 files on the hub") as err:
        await pull_all(fresh, f"hf.co/{REPO}:Q8_0")
    assert f"hf.co/{REPO}:Foo-Q8_0 (Foo-Q8_0.gguf" in str(err.value)
    assert f"hf.co/{REPO}:Foo-abliterated-Q8_0 (" in str(err.value)
    assert not folder(fresh).exists(), "nothing is downloaded when the choice is not clear"

    await pull_all(fresh, f"hf.co/{REPO}:Foo-abliterated-Q8_0.gguf")
    await pull_all(fresh, f"{REPO}:f16")
    assert sorted(p.name for p in folder(fresh).glob("*.gguf")) == ["Foo-F16.gguf", "Foo-abliterated-Q8_0.gguf"]
    assert gets(local_hub, "Foo-Q8_0.gguf") == gets(local_hub, "Foo-Q4_K_M.gguf") == 0
    names = {m.name for m in await fresh.list_models() if m.source == "pulled"}
    # on disk each quantization is now unique, so the short name is shown, and it resolves back to its file
    assert names == {f"hf.co/{REPO}:Q8_0", f"hf.co/{REPO}:F16"}
    for name in names:
        model = fresh.resolve(parse_spec(name))
        assert model.name == name and model.path.parent == folder(fresh)
    assert fresh.resolve(parse_spec(f"{REPO}:Foo-abliterated-Q8_0")).path.name == "Foo-abliterated-Q8_0.gguf"
    # two files on disk and neither is Q4_K_M: the bare repo name lists them
    with pytest.raises(ModelNotFound, match="no Q4_K_M file on disk") as err:
        fresh.resolve(parse_spec(f"hf.co/{REPO}"))
    assert f"hf.co/{REPO}:F16" in str(err.value) and f"hf.co/{REPO}:Q8_0" in str(err.value)
    # a quantization pulled from nowhere is not on disk, and says how to get it
    with pytest.raises(ModelNotFound, match="Q4_K_M is not downloaded yet"):
        fresh.resolve(parse_spec(f"{REPO}:Q4_K_M"))


async def test_a_repo_with_one_gguf_needs_no_quantization(fresh: LlamaCppBackend, local_hub: LocalHub) -> None:
    local_hub.add_file("o/One-GGUF", "model.gguf", fake("one"))
    local_hub.add_file("o/One-GGUF", "config.json", b"{}")
    steps = await pull_all(fresh, "o/One-GGUF")
    assert steps[-1].path == folder(fresh, "o/One-GGUF") / "model.gguf"
    assert [m.name for m in await fresh.list_models() if m.source == "pulled"] == ["hf.co/o/One-GGUF:model"]
    assert fresh.resolve(parse_spec("o/One-GGUF")).path == steps[-1].path


@pytest.mark.engine
async def test_a_split_model_downloads_every_part_loads_from_the_first_and_deletes_whole(
    fresh: LlamaCppBackend, local_hub: LocalHub, smol_split: dict[str, bytes]
) -> None:
    for name, data in smol_split.items():
        local_hub.add_file("o/Smol-GGUF", f"Q4_K_M/{name}", data)
    local_hub.add_file("o/Smol-GGUF", "Smol-Q8_0.gguf", fake("q8"))
    steps = await pull_all(fresh, "hf.co/o/Smol-GGUF:Q4_K_M")
    where = folder(fresh, "o/Smol-GGUF")
    first = where / "Smol-Q4_K_M-00001-of-00003.gguf"
    assert "3 files" in steps[0].status
    assert steps[-1].path == first and steps[-1].total == sum(len(d) for d in smol_split.values())
    for name, data in smol_split.items():
        assert (where / name).read_bytes() == data and (where / f"{name}.sha256").is_file()
    listed = [m for m in await fresh.list_models() if m.source == "pulled"]
    assert [(m.name, m.size_bytes) for m in listed] == [("hf.co/o/Smol-GGUF:Q4_K_M", steps[-1].total)]
    text, _ = await collect(
        fresh.chat(
            parse_spec("o/Smol-GGUF"),
            [{"role": "user", "content": "Name the capital of France."}],
            Options(temperature=0, max_tokens=16, seed=1),
        )
    )
    assert "Paris" in text
    await fresh.delete(parse_spec("o/Smol-GGUF:Q4_K_M"))
    assert not where.exists(), "every part and every sidecar is gone"


async def test_a_split_part_named_alone_still_pulls_every_part(fresh: LlamaCppBackend, local_hub: LocalHub) -> None:
    parts = [f"Big-Q4_K_M-0000{i}-of-00002.gguf" for i in (1, 2)]
    for name in parts:
        local_hub.add_file("o/Big-GGUF", name, fake(name))
    await pull_all(fresh, f"hf.co/o/Big-GGUF:{parts[1]}")
    assert sorted(p.name for p in folder(fresh, "o/Big-GGUF").glob("*.gguf")) == parts
    # a part missing on disk: the model is listed by its first part, and rm takes what is there
    (folder(fresh, "o/Big-GGUF") / parts[1]).unlink()
    await fresh.delete(parse_spec("o/Big-GGUF:Q4_K_M"))
    assert not folder(fresh, "o/Big-GGUF").exists()


# ---- pulls that fail, each with one message --------------------------------------------------------------------------


async def test_no_such_quantization_lists_what_there_is(fresh: LlamaCppBackend, local_hub: LocalHub) -> None:
    local_hub.add_file(REPO, "Foo-Q8_0.gguf", fake("q8"))
    local_hub.add_file(REPO, "Foo-F16.gguf", fake("f16"))
    with pytest.raises(
        ModelNotFound, match="no quantization or file 'Q5_K_M' on the hub; its quantizations are F16, Q8_0"
    ):
        await pull_all(fresh, f"hf.co/{REPO}:Q5_K_M")
    with pytest.raises(ModelNotFound, match="no Q4_K_M file on the hub, and 2 others") as err:
        await pull_all(fresh, REPO)
    assert f"pull one of: hf.co/{REPO}:F16 (Foo-F16.gguf" in str(err.value)
    with pytest.raises(ModelNotFound, match=r"no GGUF file named Foo-Q2_K.gguf"):
        await pull_all(fresh, f"{REPO}:Foo-Q2_K.gguf")
    assert local_hub.count("GET", "/resolve/") == 0


async def test_unknown_repo_and_repo_without_gguf(fresh: LlamaCppBackend, local_hub: LocalHub) -> None:
    with pytest.raises(ModelNotFound, match=f"there is no repo nobody/Nothing-GGUF on {local_hub.url}"):
        await pull_all(fresh, "hf.co/nobody/Nothing-GGUF:Q4_K_M")
    local_hub.add_file("o/safetensors-only", "model.safetensors", b"\0" * 64)
    with pytest.raises(ModelNotFound, match=r"hf.co/o/safetensors-only has no GGUF file on the hub"):
        await pull_all(fresh, "o/safetensors-only")


async def test_gated_repo_asks_for_a_token_and_pulls_with_one(
    fresh: LlamaCppBackend, local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_hub.add_file(REPO, "Foo-Q4_K_M.gguf", fake("gated"))
    local_hub.gate(REPO, "hf_secret")
    with pytest.raises(DownloadError, match="gated") as err:
        await pull_all(fresh, f"hf.co/{REPO}")
    assert "HF_TOKEN" in str(err.value)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(DownloadError, match="gated"):
        await pull_all(fresh, f"hf.co/{REPO}")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    steps = await pull_all(fresh, f"hf.co/{REPO}")
    assert steps[-1].path is not None and steps[-1].path.read_bytes() == fake("gated")


async def test_a_cut_download_keeps_its_part_and_the_next_pull_resumes(
    fresh: LlamaCppBackend, local_hub: LocalHub
) -> None:
    data = fake("cut", 3_000_000)
    local_hub.add_file(REPO, "Foo-Q4_K_M.gguf", data)
    local_hub.cut_after_bytes = 1_000_000
    with pytest.raises(DownloadError, match=r"interrupted after .* run the same pull again to resume"):
        await pull_all(fresh, f"{REPO}:Q4_K_M")
    target = folder(fresh) / "Foo-Q4_K_M.gguf"
    assert not target.exists() and pull.partial_path(target).stat().st_size > 0
    assert REPO not in {m.name.split(":")[0] for m in await fresh.list_models()}
    steps = await pull_all(fresh, f"{REPO}:Q4_K_M")
    assert steps[-1].path == target and target.read_bytes() == data
    assert any(h != "bytes=0-" for h in local_hub.range_headers), "the second pull asked for the rest only"
    assert not pull.partial_path(target).exists()


async def test_a_stalled_or_unreachable_hub_is_one_clear_error(
    fresh: LlamaCppBackend, local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_hub.add_file(REPO, "Foo-Q4_K_M.gguf", fake("stall", 2_000_000))
    monkeypatch.setattr(pull, "READ_TIMEOUT", 0.5)
    local_hub.stall_after_bytes = 500_000
    with pytest.raises(DownloadError, match="interrupted after 500000 of 2000000 bytes"):
        await pull_all(fresh, REPO)
    steps = await pull_all(fresh, REPO)
    assert steps[-1].path is not None and steps[-1].path.stat().st_size == 2_000_000
    monkeypatch.setattr(pull.constants, "ENDPOINT", unused_endpoint())
    monkeypatch.setenv("HF_ENDPOINT", pull.constants.ENDPOINT)
    with pytest.raises(DownloadError, match="cannot reach"):
        await pull_all(fresh, "o/Other-GGUF")


async def test_offline_mode_refuses_to_list_but_a_pulled_model_is_already_there(
    fresh: LlamaCppBackend, local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_hub.add_file(REPO, "Foo-Q4_K_M.gguf", fake("offline"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="offline mode is on"):
        await pull_all(fresh, REPO)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    await pull_all(fresh, REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local_hub.reset_counters()
    steps = await pull_all(fresh, f"hf.co/{REPO}:Q4_K_M")
    assert steps[-1].done and "already on disk" in steps[-1].status and local_hub.count() == 0


# ---- the command -----------------------------------------------------------------------------------------------------


@pytest.mark.engine
def test_the_command_pulls_lists_runs_shows_and_removes_a_repo_model(
    local_hub: LocalHub, tmp_path: Path, smol: bytes
) -> None:
    local_hub.add_file(REPO, "Foo-Q8_0.gguf", smol)
    local_hub.add_file(REPO, "Foo-Q4_K_M.gguf", fake("q4"))
    env = {**os.environ, "LLMSPELL_MODELS": str(tmp_path / "models")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "llmspell", *args], capture_output=True, text=True, env=env, timeout=600
        )
        assert "Traceback" not in done.stderr
        return done

    wrong = cli("model", "pull", f"hf.co/{REPO}:Q6_K")
    assert wrong.returncode == 1 and f"hf.co/{REPO}:Q8_0 (Foo-Q8_0.gguf" in wrong.stderr
    pulled = cli("model", "pull", REPO, "--quantization", "q8_0")
    assert pulled.returncode == 0, pulled.stderr
    path = Path(pulled.stdout.strip())
    assert path.name == "Foo-Q8_0.gguf" and path.read_bytes() == smol
    listed = json.loads(cli("model", "list", "--backend", "llamacpp", "--json").stdout)["models"]
    assert any(m["name"] == f"hf.co/{REPO}:Q8_0" and m["location"] == str(path) for m in listed)
    ran = cli("run", f"hf.co/{REPO}:Q8_0", "Name the capital of France.", "--temperature", "0", "--max-tokens", "16")
    assert ran.returncode == 0 and "Paris" in ran.stdout, ran.stderr
    info = cli("model", "info", f"{REPO}:Q8_0@llamacpp")
    assert info.returncode == 0 and str(path) in info.stdout and hashlib.sha256(smol).hexdigest() in info.stdout
    removed = cli("model", "rm", f"{REPO}:Q8_0@llamacpp")
    assert removed.returncode == 0 and not path.exists()
