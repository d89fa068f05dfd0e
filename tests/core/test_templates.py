"""Chat templates render within a time and size budget, in the sandbox, off the event loop; real ones as before."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gguf
import numpy as np
import pytest
from helpers import collect
from jinja2.exceptions import SecurityError, TemplateNotFound
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from llmspell.backends import _llama_prompt
from llmspell.backends._llama_prompt import ChatTemplate, TemplateBudgetExceeded
from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.errors import InvalidOptions
from llmspell.ggufcheck import read_gguf
from llmspell.spec import parse_spec
from llmspell.types import Message

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Name a colour."},
]
#: templates that never end on their own, or would fill the memory
LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
LOREM = "{% for i in range(100000) %}{{ 'lorem ipsum dolor sit amet ' * 10 }}{% endfor %}"
REPEAT = "{{ 'x' * 1000000000 }}"
POWER = "{{ 7 ** 10000000 }}"
#: doubling with ~, which no sandbox hook sees: 2**64 characters if nothing stops it
DOUBLING = "{% set ns = namespace(x='ab') %}{% for i in range(64) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x }}"


@pytest.mark.parametrize("model", ["smollm2:135m", "gemma3:270m"])
async def test_real_templates_render_as_llama_cpp_python_renders_them(backend: LlamaCppBackend, model: str) -> None:
    local = backend.resolve(parse_spec(model))
    info = read_gguf(backend.ensure_file(local))
    template, _stops = backend._template(local, info)
    ours = ChatTemplate(template, info.eos_token or "", info.bos_token or "").render(MESSAGES)
    theirs = Jinja2ChatFormatter(template, info.eos_token or "", info.bos_token or "")(messages=MESSAGES).prompt
    assert ours == theirs and "Name a colour." in ours


@pytest.mark.parametrize(
    ("template", "why"),
    [
        (LOOPS, "it took more than 0.3 s"),
        (LOREM, "it rendered more than 1,000,000 characters"),
        (REPEAT, "it repeats a value 1,000,000,000 times"),
        (POWER, "it raises a number to the power 10,000,000"),
        (DOUBLING, "it built a value of more than 1,000,000 characters"),
        ("{{ ((10 ** 1000) ** 1000) ** 1000 }}", "it raises a number to the power 1,000"),
        ("{{ 'x'.zfill(17179869184) }}", "it asks for a value wider than the prompt budget"),
        ("{{ '%0999999999d' % 1 }}", "it formats a value wider than the prompt budget"),
        # a deadline that passes while a generator of a filter closes must still stop the template
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ (['a']|map('upper')|first) }}"
            "{% endfor %}{% endfor %}",
            "it took more than 0.3 s",
        ),
    ],
    ids=["loops", "lorem", "repeat", "power", "doubling", "big-int", "zfill", "format-width", "filter-loops"],
)
def test_a_hostile_template_is_stopped_by_its_budget(template: str, why: str) -> None:
    with pytest.raises(TemplateBudgetExceeded) as err:
        ChatTemplate(template, "</s>", "<s>").render(MESSAGES, seconds=0.3, max_chars=1_000_000)
    assert str(err.value) == why


def test_a_template_with_tools_renders_as_llama_cpp_python_renders_it() -> None:
    # llama-cpp-python passes tools and friends as None; a template that tests for them must see None, not undefined
    template = (
        "{% if tools is not none %}<tools>{{ tools|tojson }}</tools>{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    )
    ours = ChatTemplate(template, "</s>", "<s>").render(MESSAGES)
    assert ours == Jinja2ChatFormatter(template, "</s>", "<s>")(messages=MESSAGES).prompt
    assert "<tools>" not in ours


def test_the_sandbox_still_refuses_what_it_refused() -> None:
    # an unsafe attribute reads as nothing, going on through it is refused, the messages cannot be changed, and
    # nothing is read from disk
    assert ChatTemplate("{{ raise_exception.__globals__ }}", "", "").render(MESSAGES) == ""
    for template in ("{{ ''.__class__.__mro__ }}", "{{ messages.append(1) }}"):
        with pytest.raises(SecurityError):
            ChatTemplate(template, "", "").render(MESSAGES)
    with pytest.raises(TemplateNotFound):
        ChatTemplate("{% include '/etc/passwd' %}", "", "").render(MESSAGES)


def _model_with_template(path: Path, template: str) -> Path:
    """A small valid GGUF whose only purpose is its chat template (rendering happens before any load)."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_block_count(1)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)
    w.add_chat_template(template)
    w.add_tensor("t0", np.zeros((2, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


async def test_a_hostile_template_in_a_model_file_is_one_clear_error_and_the_loop_runs_meanwhile(
    backend: LlamaCppBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_llama_prompt, "RENDER_SECONDS", 1.0)
    path = _model_with_template(tmp_path / "hostile.gguf", LOOPS)
    ticks = 0
    rendering = True

    async def ticker() -> None:
        nonlocal ticks
        while rendering:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(InvalidOptions) as err:
            await collect(backend.chat(parse_spec(str(path)), [Message("user", "hi")]))
    finally:
        rendering = False
        await task
    assert "was stopped: it took more than 1 s" in err.value.message and "hostile" in (err.value.hint or "")
    assert ticks > 5, "the event loop kept running while the template rendered (in a thread)"
