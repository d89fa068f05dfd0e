"""The bundled models are honest (issue 18): gemma3:270m is shown as the base model it is, list/info/rm agree on
whether its file exists yet, a model not downloaded has an unknown template (not "none"), and the seeds' model
names resolve to catalog entries."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmspell.catalog import load_catalog
from llmspell.errors import CatalogError
from llmspell.types import ASSEMBLED_ON_FIRST_USE, ModelInfo

GEMMA = "gemma3:270m"


def llmspell(*args: str, models: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LLMSPELL_HOME": str(home),
        "LLMSPELL_MODELS": str(models),
        "OLLAMA_HOST": "http://127.0.0.1:9",
    }
    return subprocess.run(
        [sys.executable, "-m", "llmspell", *args], capture_output=True, text=True, timeout=600, env=env
    )


# ----- the catalog ---------------------------------------------------------------------------------------------


def test_the_catalog_marks_the_pypi_gemma_as_a_base_model_and_only_it() -> None:
    catalog = load_catalog(user_file=False)
    assert catalog.resolve("gemma3", "270m").is_base  # Q4_K_M from PyPI: Google's pretrained model
    assert not catalog.resolve("gemma3", "270m-Q8_0").is_base  # the instruction-tuned file
    assert not catalog.resolve("smollm2", "135m").is_base


def test_base_must_be_true_or_false(tmp_path: Path) -> None:
    text = (load_catalog(user_file=False).sources[0]).read_text()
    bad = tmp_path / "models.toml"
    bad.write_text(text.replace("base = true", 'base = "yes"', 1))
    with pytest.raises(CatalogError, match="'base'"):
        load_catalog(bad, user_file=False)


def test_the_seeds_names_are_aliases_of_catalog_models() -> None:
    catalog = load_catalog(user_file=False)
    assert catalog.resolve("phi-2").full_tag == "phi:2.7b-Q4_K_M"
    assert catalog.resolve("Phi-2", "Q8_0").quant.name == "Q8_0"
    assert "phi-2" not in catalog.tags(), "a model is listed by its own name"


def test_an_alias_may_not_be_another_models_name(tmp_path: Path) -> None:
    text = (load_catalog(user_file=False).sources[0]).read_text()
    bad = tmp_path / "models.toml"
    bad.write_text(text.replace('aliases = ["phi-2"]', 'aliases = ["phi3"]', 1))
    with pytest.raises(CatalogError, match="alias 'phi3' is the name of another model"):
        load_catalog(bad, user_file=False)


# ----- what the faces print ------------------------------------------------------------------------------------


def test_template_note_says_unknown_until_the_file_is_read() -> None:
    assert ModelInfo("m", "llamacpp", has_chat_template=None).template_note().startswith("unknown until downloaded")
    assert ModelInfo("m", "llamacpp", has_chat_template=True).template_note() == "yes"
    assert "plain completion" in ModelInfo("m", "llamacpp", has_chat_template=False).template_note()
    base = ModelInfo("m", "llamacpp", has_chat_template=True, base_model=True)
    assert "base model" in base.template_note() and "--raw" in (base.chat_warning() or "")
    assert ModelInfo("m", "llamacpp", has_chat_template=True).chat_warning() is None
    assert dict(base.facts())["kind"].startswith("base model")


def test_list_info_and_rm_agree_before_gemma_is_assembled(tmp_path: Path) -> None:
    models, home = tmp_path / "models", tmp_path / "home"
    listed = llmspell("model", "list", "--backend", "llamacpp", "--json", models=models, home=home)
    assert listed.returncode == 0, listed.stderr
    by_name = {m["name"]: m for m in json.loads(listed.stdout)["models"]}
    gemma = by_name[GEMMA]
    # no path that does not exist: the file is joined from the package's chunks on first use
    assert gemma["location"] == "" and gemma["source"] == ASSEMBLED_ON_FIRST_USE and gemma["base_model"] is True
    assert by_name["smollm2:135m"]["base_model"] is False
    assert all(Path(m["location"]).is_file() for m in by_name.values() if m["location"]), by_name
    text = llmspell("model", "list", "--backend", "llamacpp", models=models, home=home)
    row = next(line for line in text.stdout.splitlines() if line.startswith(f"{GEMMA}@llamacpp"))
    assert ASSEMBLED_ON_FIRST_USE in row and "base (--raw)" in row and str(models) not in row, text.stdout
    # rm refuses the packaged model whether its copy exists yet or not, and assembles nothing
    rm = llmspell("model", "rm", f"{GEMMA}@llamacpp", models=models, home=home)
    assert rm.returncode != 0 and "installed Python package" in rm.stderr and "not on disk" not in rm.stderr
    assert not list(models.rglob("*.gguf"))


def test_model_info_of_a_model_not_downloaded_says_the_template_is_unknown(tmp_path: Path) -> None:
    proc = llmspell("model", "info", "qwen2.5:0.5b@llamacpp", models=tmp_path / "m", home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    assert "chat template:  unknown until downloaded" in proc.stdout and "plain completion" not in proc.stdout
    data = json.loads(
        llmspell("model", "info", "qwen2.5:0.5b@llamacpp", "--json", models=tmp_path / "m", home=tmp_path / "h").stdout
    )
    assert data["has_chat_template"] is None and data["source"] == "not downloaded"


@pytest.mark.engine
def test_model_info_of_gemma_says_base_model(shared_models: Path, tmp_path: Path) -> None:
    proc = llmspell("model", "info", GEMMA, models=shared_models, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    facts = dict(line.split(":", 1) for line in proc.stdout.split("\n\n")[0].splitlines())
    assert facts["kind"].strip().startswith("base model") and "completion" in facts["kind"]
    assert "base model" in facts["chat template"] and facts["chat template"].strip() != "yes"
    assert Path(facts["file"].strip()).is_file(), "info assembles the file first, then shows where it is"
    listed = llmspell("model", "list", "--backend", "llamacpp", "--json", models=shared_models, home=tmp_path)
    gemma = next(m for m in json.loads(listed.stdout)["models"] if m["name"] == GEMMA)
    assert Path(gemma["location"]).is_file() and gemma["source"] == "pypi-assembled"


@pytest.mark.engine
def test_a_chat_with_gemma_warns_and_a_completion_does_not(shared_models: Path, tmp_path: Path) -> None:
    chat = llmspell("run", GEMMA, "--max-tokens", "4", "--seed", "1", "Hi", models=shared_models, home=tmp_path)
    assert chat.returncode == 0, chat.stderr
    assert f"warning: {GEMMA} is a base model" in chat.stderr and "--raw" in chat.stderr
    raw = llmspell(
        "run", GEMMA, "--raw", "--max-tokens", "4", "--seed", "1", "Once", models=shared_models, home=tmp_path
    )
    assert raw.returncode == 0 and "warning" not in raw.stderr, raw.stderr
    smol = llmspell("run", "smollm2:135m", "--max-tokens", "4", "Hi", models=shared_models, home=tmp_path)
    assert smol.returncode == 0 and "warning" not in smol.stderr, smol.stderr


def test_hub_chat_warning_comes_from_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmspell.hub import Hub

    monkeypatch.setenv("LLMSPELL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")

    async def go() -> list[str | None]:
        hub = Hub()
        try:
            return [
                await hub.chat_warning(s)
                for s in (f"{GEMMA}@llamacpp", "smollm2:135m@llamacpp", "gemma3:270m-Q8_0@llamacpp", "nonesuch")
            ]
        finally:
            await hub.close()

    gemma, smol, instruct, unknown = asyncio.run(go())
    assert gemma is not None and "base model" in gemma
    assert smol is None and instruct is None and unknown is None
    assert not list((tmp_path / "models").rglob("*.gguf")), "no file is read or assembled to say so"
