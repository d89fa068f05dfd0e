"""Cell parsing, is_complete and completion contexts of the kernel, in process (the kernel tests drive them live)."""

from __future__ import annotations

import pytest

from llmspell_kernel.magics import (
    MAGICS,
    MagicError,
    completion_context,
    expand_answers,
    help_markdown,
    is_complete,
    parse_cell,
)


def test_magics_on_top_then_the_prompt() -> None:
    cell = parse_cell("%model gemma3:270m\n\n%set temperature=0  seed=1\nTell me\n%not a magic here\n")
    assert [(m.name, m.arg, m.line) for m in cell.magics] == [
        ("model", "gemma3:270m", 1),
        ("set", "temperature=0  seed=1", 3),
    ]
    assert cell.prompt == "Tell me\n%not a magic here"
    assert parse_cell("  Just a question?  ").magics == ()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("%nosuch", "unknown magic %nosuch"),
        ("%model:x", "unknown magic %model:x"),
        ("%", "a magic needs a name after %"),
        ("%mdoel x", "did you mean %model"),
        ("%models all", "%models takes no argument"),
        ("%save", "%save needs an argument"),
        ("%json", "%json needs a prompt"),
        ("%json\n%compare a b\nhi", "both want the prompt"),
    ],
)
def test_every_magic_is_checked_before_anything_runs(code: str, message: str) -> None:
    with pytest.raises(MagicError) as exc:
        parse_cell("%echo first\n" + code)
    assert message in str(exc.value)
    assert "%help" in str(exc.value) or "usage" in str(exc.value) or "split" in str(exc.value)


def test_is_complete() -> None:
    assert is_complete("Hello") == "complete"
    assert is_complete("Look:\n```\ncode") == "incomplete"
    assert is_complete("line one \\") == "incomplete"
    assert is_complete("%compare a b") == "incomplete"
    assert is_complete("%bogus") == "invalid"


def test_completion_contexts() -> None:
    assert completion_context("%mo", 3) == ("magic", "%mo", 0)
    assert completion_context("hi\n  %se", 8) == ("magic", "%se", 5)
    assert completion_context("%model sm", 9) == ("model", "sm", 7)
    assert completion_context("%compare a b", 12) == ("model", "b", 11)
    assert completion_context("%set tem", 8) == ("option", "tem", 5)
    assert completion_context("%set temperature=0", 18)[0] == ""
    assert completion_context("plain words", 11)[0] == ""


def test_help_names_every_magic() -> None:
    text = help_markdown()
    assert all(f"`{m.usage}`" in text for m in MAGICS.values())
    with pytest.raises(MagicError, match="unknown magic %nope"):
        help_markdown("nope")


def test_underscores_stand_for_earlier_answers() -> None:
    answers = {3: "three", 5: "five\nlines"}
    assert expand_answers("_ | __ | _3 | _5", answers) == "five\nlines | three | three | five\nlines"
    assert expand_answers("x_ _x a_b __init__ _3a", answers) == "x_ _x a_b __init__ _3a"
    assert expand_answers("no reference", {}) == "no reference"
    with pytest.raises(MagicError, match=r"no answer in Out\[99\] for _99") as exc:
        expand_answers("%echo _99", answers)
    assert "answers so far: _3, _5" in str(exc.value)
    with pytest.raises(MagicError, match="no answer yet, so _ stands for nothing"):
        expand_answers("_", {})
    with pytest.raises(MagicError, match="only one answer so far, so __ stands for nothing"):
        expand_answers("__", {1: "one"})
    assert "`_` is the last answer" in help_markdown()
