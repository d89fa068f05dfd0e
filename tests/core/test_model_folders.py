"""GGUF files dropped into the models folder, or into a folder named in the config, run by their file name."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import collect, smollm2_file

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config, load_config
from llmspell.discovery import scan_folders
from llmspell.errors import ConfigError, InvalidOptions
from llmspell.spec import parse_spec
from llmspell.types import Message, Options


def test_a_folder_lists_its_ggufs_by_file_name(tmp_path: Path) -> None:
    (tmp_path / "Tiny-Model.Q4_K_M.gguf").symlink_to(smollm2_file())
    (tmp_path / "big-00001-of-00002.gguf").symlink_to(smollm2_file())
    (tmp_path / "big-00002-of-00002.gguf").write_bytes(b"GGUF....")
    (tmp_path / ".half.gguf.partial").write_bytes(b"GGUF")
    (tmp_path / "notes.gguf").write_text("not a model")
    (tmp_path / "deeper").mkdir()
    (tmp_path / "deeper" / "tiny-model.Q8_0.gguf").symlink_to(smollm2_file())
    skipped: list[tuple[Path, str]] = []
    found = {m.name: m for m in scan_folders([tmp_path], skipped)}
    assert set(found) == {"Tiny-Model.Q4_K_M", "big", "tiny-model.Q8_0"}
    assert found["Tiny-Model.Q4_K_M"].quantization == "Q4_K_M" and found["big"].source == "folder"
    assert {(p.name, why) for p, why in skipped} == {("notes.gguf", "not a GGUF file")}


async def test_a_file_dropped_into_the_models_folder_lists_runs_and_deletes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("LLMSPELL_MODELS", str(models))
    mine = tmp_path / "mine"
    mine.mkdir()
    (models / "my-model.gguf").symlink_to(smollm2_file())
    (mine / "theirs.gguf").symlink_to(smollm2_file())
    backend = LlamaCppBackend(Config(model_folders=(mine,), keep_alive=0))
    try:
        listed = {m.name: m for m in await backend.list_models()}
        assert listed["my-model"].source == "folder" and listed["theirs"].source == "folder"
        assert (await backend.info(parse_spec("my-model"))).context_length
        text, last = await collect(backend.chat(parse_spec("theirs"), [Message("user", "Hi")], Options(max_tokens=3)))
        assert text and last.stats and last.stats.generated_tokens <= 3
        # a file in a folder of the user's is theirs to delete; one in llmspell's models folder is llmspell's
        with pytest.raises(InvalidOptions, match="delete it yourself"):
            await backend.delete(parse_spec("theirs"))
        await backend.delete(parse_spec("my-model"))
        assert not (models / "my-model.gguf").exists() and smollm2_file().is_file()
        assert "my-model" not in {m.name for m in await backend.list_models()}
    finally:
        backend.close_sync()


def test_model_folders_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[llamacpp]\nmodel_folders = ["~/models", "/data/gguf"]\n')
    assert load_config(path).model_folders == (Path("~/models").expanduser(), Path("/data/gguf"))
    path.write_text("[llamacpp]\nmodel_folders = [1]\n")
    with pytest.raises(ConfigError, match="must be a list of folder paths"):
        load_config(path)
