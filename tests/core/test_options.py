"""An option is defined once, as a field of Options with its metadata: the CLI flags, the REPL's /set, the TUI's
form and the Ollama and OpenAI names all come from it (the kernel's %set is checked in tests/kernel)."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import option_sample
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from llmspell.cli.main import parse_args
from llmspell.cli.repl_session import Repl, ReplCompleter
from llmspell.config import Config
from llmspell.errors import InvalidOptions
from llmspell.hub import Hub
from llmspell.options import OLLAMA_OPTIONS, OPTIONS
from llmspell.store import Store
from llmspell.types import Options


def test_every_field_of_options_is_an_option_of_the_table_with_all_it_needs() -> None:
    """An option is one field of Options: its metadata is everything else the faces and wires read."""
    assert [f.name for f in dataclasses.fields(Options)] == [o.name for o in OPTIONS]
    for o in OPTIONS:
        assert o.help and o.default, o.name
        if o.kind in ("int", "float"):
            assert o.low is not None and o.high is not None and o.low < o.high, o.name


@pytest.mark.parametrize("command", ["run", "chat"])
def test_every_option_with_a_flag_is_a_flag_of_run_and_chat(command: str) -> None:
    from llmspell.cli.flags import options_from_args

    for o in OPTIONS:
        if o.flag is None:
            continue
        typed, value = option_sample(o)
        if o.kind == "stop":  # a repeatable flag: one text per flag
            typed, value = "END", ("END",)
        extra = ["smollm2:135m", "hi"] if command == "run" else ["smollm2:135m"]
        args = parse_args([command, *extra, o.flag, typed])
        assert getattr(options_from_args(args), o.name) == value, o.name
    # an option left without a flag says so in the table (num_threads: `run` never had one, see the README)
    # and logprobs: API clients ask for them, and no face shows them
    assert [o.name for o in OPTIONS if o.flag is None] == ["num_threads", "logprobs"]


@pytest.mark.parametrize("o", [o for o in OPTIONS if o.low is not None], ids=lambda o: o.name)
def test_a_value_out_of_range_gets_the_same_message_from_every_way_in(o) -> None:
    too_big = o.high * 2 + 2 if o.kind == "float" else int(o.high) + 1
    with pytest.raises(InvalidOptions) as direct:
        Options.from_dict({o.name: too_big})
    with pytest.raises(InvalidOptions) as typed:
        Options().with_text(f"{o.name}={too_big}")
    assert str(direct.value) == str(typed.value)
    assert f"option {o.name}=" in str(direct.value) and f"use a value from {o.low} to {o.high}" in str(direct.value)


async def test_the_repl_offers_every_option_after_set(tmp_path) -> None:
    repl = Repl(Hub(Config(ollama_enabled=False)), Store(tmp_path / "h.sqlite3"))
    completer = ReplCompleter(repl)
    offered = [c.text for c in completer.get_completions(Document("/set "), CompleteEvent())]
    assert offered[: len(OPTIONS)] == [o.name for o in OPTIONS]


def test_every_option_ollama_knows_is_sent_under_its_ollama_name() -> None:
    from llmspell.backends.ollama import _ollama_options

    for o in OPTIONS:
        if o.ollama is None:
            continue
        _typed, value = option_sample(o)
        sent = _ollama_options(Options.from_dict({o.name: value}))
        assert sent == {o.ollama: list(value) if isinstance(value, tuple) else value}
        assert OLLAMA_OPTIONS[o.ollama] == o.name


def test_every_option_openai_knows_is_a_field_of_the_openai_request_bodies() -> None:
    from llmspell.server.openai_api import ChatCompletionBody, CompletionBody

    for body in (ChatCompletionBody, CompletionBody):
        for o in OPTIONS:
            if o.openai is not None:
                assert o.openai in body.model_fields, (body.__name__, o.openai)
