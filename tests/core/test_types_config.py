"""Options validation, Stats arithmetic, and config.toml loading with its errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from llmspell import config
from llmspell.errors import ConfigError, InvalidOptions
from llmspell.types import Message, Options, Stats


def test_options_reject_unknown_keys_naming_them_and_the_valid_ones() -> None:
    with pytest.raises(InvalidOptions) as err:
        Options.from_dict({"temprature": 0.1})
    assert "temprature" in str(err.value) and "temperature" in str(err.value.hint)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("temperature", -1, "out of range"),
        ("top_p", 1.5, "out of range"),
        ("top_k", 1.5, "must be an integer"),
        ("seed", "x", "must be an integer"),
        ("max_tokens", 0, "out of range"),
        ("temperature", True, "must be a number"),
        ("format", "{not json", "JSON schema"),
        ("format", 3, "JSON schema"),
        ("stop", ["", "x"], "non-empty strings"),
    ],
)
def test_options_reject_bad_values(key: str, value: object, fragment: str) -> None:
    with pytest.raises(InvalidOptions, match=fragment):
        Options.from_dict({key: value})


def test_options_merge_and_format_parsing() -> None:
    base = Options(temperature=0.8, top_k=40, stop=("a",))
    merged = base.merged(Options(temperature=0.0, seed=3))
    assert (merged.temperature, merged.top_k, merged.seed, merged.stop) == (0.0, 40, 3, ("a",))
    assert Options(format='{"type": "object"}').format == {"type": "object"}
    assert Options(format="json").format == "json"
    assert Options(stop="END").stop == ("END",)  # type: ignore[arg-type]
    assert Options(temperature=0).to_dict() == {"temperature": 0}


def test_stats_rates() -> None:
    s = Stats(prompt_tokens=100, prompt_eval_tokens=20, generated_tokens=11, prompt_eval_time=0.1, generation_time=0.5)
    assert s.cached_tokens == 80
    assert s.prompt_tokens_per_s == pytest.approx(200)
    assert s.generation_tokens_per_s == pytest.approx(20)
    assert Stats().generation_tokens_per_s == 0.0
    assert s.to_dict()["generation_tokens_per_s"] == 20.0


def test_options_typed_as_text_as_faces_take_them() -> None:
    opts = Options().with_text('temperature=0.2 seed=1 max-tokens=200 stop="User:|###"')
    assert opts.temperature == 0.2 and opts.seed == 1 and opts.max_tokens == 200
    assert opts.stop == ("User:", "###")
    assert opts.with_text("temperature=default").temperature is None
    schema = opts.with_text('seed=2 format={"type": "object", "required": ["x"]}')
    assert schema.format == {"type": "object", "required": ["x"]} and schema.seed == 2


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("temperature", "expected key=value"),
        ("temprature=1", "unknown option 'temprature'"),
        ("seed=1.5", "seed must be an integer"),
        ("top_p=2", "out of range"),
        ("temperature=hot", "must be a number"),
        ('stop="unclosed', "cannot read the options"),
    ],
)
def test_options_text_errors_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(InvalidOptions, match=fragment):
        Options().with_text(text)


def test_stats_summary_line() -> None:
    s = Stats(
        prompt_tokens=12,
        prompt_eval_tokens=2,
        generated_tokens=11,
        time_to_first_token=0.05,
        generation_time=0.1,
        stop_reason="length",
    )
    line = s.summary()
    assert line == "TTFT 50 ms · 100.0 tok/s · 12 prompt + 11 generated tokens · 10 reused · stopped at max tokens"
    assert "interrupted" in Stats(stop_reason="cancelled").summary()


def test_message_coercion_rejects_bad_roles_and_fields() -> None:
    assert Message.coerce({"role": "user", "content": "hi"}) == Message("user", "hi")
    with pytest.raises(InvalidOptions, match="role"):
        Message.coerce({"role": "robot", "content": "hi"})
    with pytest.raises(InvalidOptions, match="unknown message field"):
        Message.coerce({"role": "user", "content": "hi", "name": "x"})
    with pytest.raises(InvalidOptions, match="content must be a string"):
        Message.coerce({"role": "user", "content": 3})


def test_llmspell_home_relocates_every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPELL_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("LLMSPELL_MODELS", raising=False)
    assert config.config_path() == tmp_path / "h" / "config.toml"
    assert config.models_dir() == tmp_path / "h" / "models"
    assert config.history_path().parent == tmp_path / "h"


def test_ollama_url_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert config.ollama_url() == "http://127.0.0.1:11434"
    assert config.ollama_url("localhost") == "http://localhost:11434"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:8080")
    assert config.ollama_url("ignored") == "http://127.0.0.1:8080"


def test_init_config_template_is_valid_and_not_overwritten(tmp_path: Path) -> None:
    path = config.write_config_template(tmp_path / "config.toml")
    tomllib.loads(path.read_text())
    cfg = config.load_config(path)
    assert cfg.default_model == "smollm2:135m" and cfg.keep_alive == 300
    with pytest.raises(ConfigError, match="already exists"):
        config.write_config_template(path)
    config.write_config_template(path, force=True)


def test_config_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'default_model = "gemma3:270m"\nkeep_alive = 0\n[options]\ntemperature = 0.2\n'
        '[llamacpp]\nthreads = 1\n[providers.ollama]\nurl = "http://127.0.0.1:1"\n'
    )
    cfg = config.load_config(path)
    assert (cfg.default_model, cfg.keep_alive, cfg.options.temperature, cfg.threads, cfg.ollama_url) == (
        "gemma3:270m",
        0.0,
        0.2,
        1,
        "http://127.0.0.1:1",
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("defualt_model = 'x'", "unknown key(s) defualt_model in the top level"),
        ("[llamacpp]\nthreds = 2", "unknown key(s) threds in [llamacpp]"),
        ("[providers.ollama]\nadress = 'x'", "unknown key(s) adress in [providers.ollama]"),
        ("[llamacpp]\nthreads = 'two'", "llamacpp.threads must be int"),
        ("keep_alive = true", "keep_alive must be"),
        ("[options]\ntemperature = 9", "out of range"),
        ("this is not toml", "not valid TOML"),
        # values taken at face value before: 100000 threads started 1,600 of them on 2 cores
        ("[llamacpp]\nthreads = 100000", "llamacpp.threads = 100000 is out of range; use a value from 1 to"),
        ("[llamacpp]\nthreads = 0", "llamacpp.threads = 0 is out of range"),
        ("[llamacpp]\nnum_ctx = 0", "llamacpp.num_ctx = 0 is out of range; use a value from 16 to 1048576"),
        ("[llamacpp]\nnum_ctx = 9999999999", "llamacpp.num_ctx = 9999999999 is out of range"),
        ("[llamacpp]\nstate_cache_mb = -1", "llamacpp.state_cache_mb = -1 is out of range"),
        ("[llamacpp]\nstate_cache_mb = 99999999999", "(this machine's memory)"),
        ("[providers.ollama]\nread_timeout = nan", "providers.ollama.read_timeout = nan is out of range"),
        ("[providers.ollama]\nread_timeout = -1", "providers.ollama.read_timeout = -1 is out of range"),
        ("[providers.ollama]\nconnect_timeout = inf", "providers.ollama.connect_timeout = inf is out of range"),
        ("[providers.ollama]\nurl = 'ftp://example.org'", "is not an http(s) address"),
        # shapes that were internal errors
        ("llamacpp = 5", "llamacpp must be a table ([llamacpp] with keys below it), not int"),
        ("[[llamacpp]]\nthreads = 1", "llamacpp must be a table ([llamacpp] with keys below it), not list"),
        ("providers = 'ollama'", "providers must be a table"),
    ],
)
def test_bad_config_files_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load_config(path)
    assert fragment in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "40000000"])
def test_a_keep_alive_the_timers_cannot_hold_is_a_config_error_naming_file_key_and_range(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"keep_alive = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        config.load_config(path)
    text = f"{err.value.message}; {err.value.hint}"
    assert str(path) in text and "keep_alive" in text and "out of range" in text
    assert "from 0 to 31536000 (a year), or -1 to keep the model loaded" in text


def test_a_negative_keep_alive_means_until_unloaded(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("keep_alive = -5\n", encoding="utf-8")
    assert config.load_config(path).keep_alive == -1.0
