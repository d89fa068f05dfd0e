"""How answers reach the screen: Markdown rendered block by block while it streams, or plain text."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from llmspell.cli import repl_render
from llmspell.cli.repl_render import MarkdownView, PlainView, make_view, split_finished

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def _terminal(width: int = 60, height: int = 20) -> tuple[Console, io.StringIO]:
    file = io.StringIO()
    return Console(file=file, force_terminal=True, width=width, height=height, color_system=None), file


def test_split_finished_cuts_at_blank_lines_outside_code_fences() -> None:
    assert split_finished("Hello\n\nWorld") == ("Hello\n\n", "World")
    assert split_finished("Hello\n\n") == ("", "Hello\n\n"), "nothing is final until the next block begins"
    assert split_finished("```\ncode\n\nmore\n```\n\nnext") == ("```\ncode\n\nmore\n```\n\n", "next")
    assert split_finished("```\ncode\n\nstill code") == ("", "```\ncode\n\nstill code")
    assert split_finished("- a\n\n  continued\n\nPara") == ("- a\n\n  continued\n\n", "Para")


def test_markdown_is_rendered_while_the_answer_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repl_render, "REFRESH_EVERY", 0.0)
    console, file = _terminal()
    view = MarkdownView(console)
    view.feed("# Heading\n\nSome **bo")
    shown = _plain(file.getvalue())
    assert "Heading" in shown and "# Heading" not in shown, "a finished block is printed as Markdown at once"
    assert "Some" in shown, "the growing block is drawn before it is finished"
    view.feed("ld** text\n\n```python\nprint(1)\n")
    assert "Some bold text" in _plain(file.getvalue())
    view.feed("```\n")
    view.close()
    # frames of the live region are erased; what is printed for good is rendered Markdown
    final = _plain(file.getvalue())
    kept = final[final.index("Some bold text") :]
    assert "print(1)" in kept and "**" not in kept and "```" not in kept


def test_a_block_taller_than_the_screen_shows_its_newest_lines_while_it_grows(monkeypatch) -> None:
    monkeypatch.setattr(repl_render, "REFRESH_EVERY", 0.0)
    console, file = _terminal(height=12)
    view = MarkdownView(console)
    view.feed("```\n" + "".join(f"line {i}\n" for i in range(60)))
    last_frame = _plain(file.getvalue()).rsplit("line 0 ", 1)[-1]
    assert "line 59" in last_frame
    view.close()
    final = _plain(file.getvalue())
    assert all(f"line {i}" in final for i in range(60)), "the whole block is printed at the end"


def test_plain_text_where_markdown_cannot_be_shown() -> None:
    terminal, _ = _terminal()
    assert isinstance(make_view(terminal, markdown=True), MarkdownView)
    assert isinstance(make_view(terminal, markdown=False), PlainView)
    piped = Console(file=io.StringIO(), force_terminal=False)
    assert isinstance(make_view(piped, markdown=True), PlainView)
    dumb_file = io.StringIO()
    dumb = Console(file=dumb_file, force_terminal=True, _environ={"TERM": "dumb"})
    assert isinstance(make_view(dumb, markdown=True), PlainView)
    view = PlainView(piped)
    for piece in ("\nHello", " **world**", "!"):
        view.feed(piece)
    view.close()
    assert piped.file.getvalue() == "Hello **world**!\n"


def test_closing_a_view_twice_changes_nothing() -> None:
    piped = Console(file=io.StringIO(), force_terminal=False)
    plain = PlainView(piped)
    plain.feed("Partial answer")
    plain.close()
    plain.close()
    assert piped.file.getvalue() == "Partial answer\n", "one line end, no blank line"
    console, file = _terminal()
    view = MarkdownView(console)
    view.feed("Some *partial* answer")
    view.close()
    once = file.getvalue()
    view.close()
    assert file.getvalue() == once, "the second close prints nothing"
