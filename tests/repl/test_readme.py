"""The README's table of REPL commands is the REPL's list: every command and alias, nothing more."""

from __future__ import annotations

import re
from pathlib import Path

from llmspell.cli.repl_session import _COMMANDS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_command_table_names_every_repl_command_and_no_other() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## llmspell chat") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `/")]
    documented = {word for row in rows for word in re.findall(r"`(/[a-z?]+)", row.split(" | ")[0])}
    actual = {name for cmd in _COMMANDS for name in (cmd.name, *cmd.aliases)}
    assert documented == actual, f"only in the README: {documented - actual}; missing there: {actual - documented}"
