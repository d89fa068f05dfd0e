"""`llmspell model import`: a GGUF from anywhere into the models folder, checked, whole, runnable by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import smollm2_file

from llmspell.errors import InvalidOptions, InvalidSpec, ModelFileCorrupt
from llmspell.importing import import_model


def llmspell(*args: str, models: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLMSPELL_MODELS": str(models)}
    return subprocess.run(
        [sys.executable, "-m", "llmspell", *args], capture_output=True, text=True, env=env, timeout=600
    )


def test_import_copies_lists_runs_and_removes(tmp_path: Path) -> None:
    models = tmp_path / "models"
    done = llmspell("model", "import", str(smollm2_file()), "--name", "tiny", models=models)
    assert done.returncode == 0, done.stderr
    assert "imported tiny" in done.stdout and 'llmspell run tiny "hello"' in done.stdout
    copied = models / "tiny.gguf"
    assert copied.is_file() and not copied.is_symlink() and copied.stat().st_size == smollm2_file().stat().st_size
    assert not list(models.glob(".*partial"))
    listed = llmspell("model", "list", "--json", models=models)
    assert '"tiny"' in listed.stdout
    ran = llmspell("run", "tiny", "Say hi.", "--max-tokens", "3", models=models)
    assert ran.returncode == 0 and ran.stdout.strip(), ran.stderr
    gone = llmspell("model", "rm", "tiny@llamacpp", models=models)
    assert gone.returncode == 0 and not copied.exists() and smollm2_file().is_file()


def test_link_leaves_the_file_where_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(tmp_path / "models"))
    path = import_model(smollm2_file(), link=True)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_symlink()
    assert path.resolve() == smollm2_file().resolve()
    # the same file again, or the imported file over itself, is refused rather than made a link to nothing
    for source in (smollm2_file(), path):
        with pytest.raises(InvalidOptions, match="already in the models folder"):
            import_model(source, link=True, replace=True)
    assert path.resolve() == smollm2_file().resolve()
    # another file under a name already used needs --replace
    other = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    other.write_bytes(smollm2_file().read_bytes())
    with pytest.raises(InvalidOptions, match="exists already"):
        import_model(other)
    assert import_model(other, replace=True) == path and not path.is_symlink()


def test_what_import_refuses_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    monkeypatch.setenv("LLMSPELL_MODELS", str(models))
    text = tmp_path / "notes.gguf"
    text.write_text("not a model at all")
    with pytest.raises(ModelFileCorrupt):
        import_model(text)
    with pytest.raises(InvalidSpec, match="cannot name a model"):
        import_model(smollm2_file(), "two words")
    with pytest.raises(InvalidOptions, match="already names a model"):
        import_model(smollm2_file(), "smollm2", taken=lambda name: name == "smollm2")
    second = tmp_path / "big-00002-of-00003.gguf"
    second.symlink_to(smollm2_file())
    with pytest.raises(InvalidOptions, match=r"import its first part, big-00001-of-00003\.gguf"):
        import_model(second)
    assert not models.exists() or not any(models.iterdir())


def test_the_cli_refuses_a_catalog_name_with_one_clear_line(tmp_path: Path) -> None:
    done = llmspell("model", "import", str(smollm2_file()), "--name", "smollm2", models=tmp_path / "models")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "'smollm2' already names a model" in done.stderr and "--name" in done.stderr
