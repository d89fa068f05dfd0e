"""Named models: Modelfiles as Ollama writes them, the names allowed, the file they are kept in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmspell.aliases import Alias, AliasStore, alias_name, parameters, parse_modelfile
from llmspell.errors import ConfigError, InvalidOptions, InvalidSpec


def test_a_modelfile_as_ollama_writes_it() -> None:
    sheet = parse_modelfile(
        "# made by hand\n"
        "FROM llama3.2:1b\n"
        'SYSTEM """You are a pirate.\nAnswer briefly."""\n'
        "PARAMETER temperature 0.3\n"
        'PARAMETER stop "<|eot_id|>"\n'
        "PARAMETER stop User:\n"
        "PARAMETER num_ctx 4096\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
    )
    assert sheet["from"] == "llama3.2:1b" and sheet["system"] == "You are a pirate.\nAnswer briefly."
    assert sheet["parameters"] == {"temperature": 0.3, "stop": ["<|eot_id|>", "User:"], "num_ctx": 4096}
    assert sheet["template"] == "{{ .Prompt }}"
    assert parameters(sheet["parameters"]) == {"temperature": 0.3, "stop": ["<|eot_id|>", "User:"], "num_ctx": 4096}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('FROM x\nSYSTEM """never closed\n', 'opens """ and never closes it'),
        ("FROM x\nRUN rm -rf /\n", "unknown instruction 'RUN'"),
    ],
)
def test_a_broken_modelfile_is_named(text: str, fragment: str) -> None:
    with pytest.raises(InvalidOptions, match=fragment.replace("(", r"\(")):
        parse_modelfile(text)


def test_parameters_map_ollama_names_and_check_values() -> None:
    assert parameters({"num_predict": 5, "mirostat": 2, "num_gpu": 1}) == {"max_tokens": 5}
    with pytest.raises(InvalidOptions, match="unknown PARAMETER"):
        parameters({"warp_speed": 9})
    with pytest.raises(InvalidOptions, match="temperature"):
        parameters({"temperature": 99})


@pytest.mark.parametrize("bad", ["", "two words", "a@ollama", "../up", ":tag"])
def test_names_an_alias_may_not_have(bad: str) -> None:
    with pytest.raises(InvalidSpec):
        alias_name(bad)
    assert alias_name("pirate:latest") == "pirate" and alias_name("my-model:v2") == "my-model:v2"


def test_the_store_keeps_whole_files_and_names_a_damaged_one(tmp_path: Path) -> None:
    store = AliasStore(tmp_path / "aliases.json")
    assert store.all() == {}
    kept = store.put(Alias("pirate", "smollm2:135m", "Arr.", {"temperature": 0.5}))
    assert kept.created and store.get("pirate:latest") == kept
    doc = json.loads((tmp_path / "aliases.json").read_text())
    assert doc["aliases"]["pirate"]["target"] == "smollm2:135m"
    assert "PARAMETER temperature 0.5" in kept.modelfile and 'SYSTEM """Arr."""' in kept.modelfile
    assert store.remove("pirate") and not store.remove("pirate") and store.all() == {}
    (tmp_path / "aliases.json").write_text("{not json")
    with pytest.raises(ConfigError, match="is damaged") as err:
        store.all()
    assert "move it aside" in str(err.value)
