"""Tools in the chat REPL, in-process on the real smollm2:135m (embedded engine): each call and its outcome drawn as
it happens, a y/N question before a side effect (n refuses, y runs, Ctrl-C refuses and stops the turn), /tools to
list, replace and turn off, and a reopened conversation that shows its calls. A forced first call keeps it
repeatable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmspell.types import Options

TOOLS = Options(temperature=0, seed=7, max_tokens=60)
ASK = 'Save "hi" in b.txt'


async def tools_on(start_repl, tmp_path: Path) -> Any:
    d = await start_repl(options=TOOLS)
    d.repl.tool_root, d.repl.tool_choice, d.repl.max_steps = str(tmp_path), "write_file", 2
    await d.command("/tools write_file", "tools on: write_file")
    return d


async def ask_and_answer(d: Any, key: str) -> str:
    """Send the prompt, wait for the question, press ``key``; what the turn printed, up to the next prompt."""
    start = len(d.out)
    d.type(ASK + "\r")
    await d.until(lambda: d.repl.asking is not None)
    d.type(key)
    await d.until("Allow write_file(", after=start)
    await d.until(d.at_prompt)
    return d.out[start:]


async def test_a_side_effect_asks_first_n_refuses_y_writes(start_repl, tmp_path: Path) -> None:
    d = await tools_on(start_repl, tmp_path)
    listed = await d.command("/tools", "/tools off turns them off")
    assert "write_file (built-in, asks first)" in listed and f"file tools confined to {tmp_path.resolve()}" in listed

    out = await ask_and_answer(d, "n")
    assert '→ write_file({"content": "hi", "path": "b.txt"})' in out
    assert 'Allow write_file({"content": "hi", "path": "b.txt"})? [y/N] no' in out
    assert "refused: the user did not allow this call to write_file" in out
    assert not (tmp_path / "b.txt").exists()
    refused = d.repl.conv

    await d.command("/reset", "new conversation")
    out = await ask_and_answer(d, "y")
    assert "? [y/N] yes" in out and "\n  ok" in out
    assert (tmp_path / "b.txt").read_text() == "hi"
    assert "1 tool call in 2 steps" in out  # the stats line counts the calls and steps

    # a reopened conversation shows what its tools did
    out = await d.command(f"/load {refused.id}", "tool write_file: refused")
    assert '→ write_file({"content": "hi", "path": "b.txt"})' in out

    assert "tools off" in await d.command("/tools off", "tools off")
    assert "no tools on" in await d.command("/tools", "no tools on")
    assert d.repl.chat.tools is None


async def test_ctrl_c_at_the_question_refuses_and_stops_the_turn(start_repl, tmp_path: Path) -> None:
    d = await tools_on(start_repl, tmp_path)
    out = await ask_and_answer(d, "\x03")
    assert "? [y/N] no (Ctrl-C)" in out and "interrupted" in out
    assert not (tmp_path / "b.txt").exists()
    out = await d.command("/tools nope", "error")
    assert "no tool or MCP server named 'nope'" in out
    assert "write_file (built-in" in await d.command("/tools", "/tools off")  # the old tools stay
