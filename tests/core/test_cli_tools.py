"""``llmspell run --tools``: the tool loop from the command line on the real smollm2:135m (embedded engine), each call
and what it came to on stderr, the model's text on stdout; a forced --tool-choice makes the call repeatable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LLMSPELL = Path(sys.executable).parent / "llmspell"
QUICK = ("--temperature", "0", "--seed", "7", "--max-tokens", "60", "--max-steps", "2")


@pytest.fixture
def run(shared_models: Path, tmp_path: Path):
    """``llmspell run ARGS`` in tmp_path, standard input not a terminal; the CompletedProcess."""

    def go(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LLMSPELL_MODELS": str(shared_models)}
        return subprocess.run(
            [str(LLMSPELL), "run", *args],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return go


def test_a_forced_read_shows_the_call_and_its_outcome_on_stderr_and_the_text_on_stdout(run, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("the secret word is plum\n")
    proc = run("smollm2:135m", "Read the file a.txt", "--tools", "read_file", "--tool-choice", "read_file", *QUICK)
    err = proc.stderr.splitlines()
    assert '→ read_file({"path": "a.txt"})' in err
    assert err[err.index('→ read_file({"path": "a.txt"})') + 1].startswith("  ok")
    assert "Traceback" not in proc.stderr and "→" not in proc.stdout
    # the model answers after reading, or (a 135M model may call again) the step limit says it stopped
    if proc.returncode == 0:
        assert proc.stdout.strip()
    else:
        assert proc.returncode == 1 and "stopped after 2 model steps" in proc.stderr


def test_an_unknown_tool_is_one_line_and_exit_code_2(run) -> None:
    proc = run("smollm2:135m", "hi", "--tools", "read_file,no_such_tool")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no tool or MCP server named 'no_such_tool'")
    assert "read_file, write_file" in proc.stderr  # names what there is

    proc = run("smollm2:135m", "hi", "--tools", "read_file", "--tool-choice", "write_file")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "'write_file', which is not a tool" in proc.stderr


def test_a_piped_write_is_refused_with_a_note_unless_yes(run, tmp_path: Path) -> None:
    args = ("smollm2:135m", 'Save "hi" in b.txt', "--tools", "write_file", "--tool-choice", "write_file", *QUICK)
    proc = run(*args)
    assert "→ write_file(" in proc.stderr
    assert "not a terminal" in proc.stderr and "--yes allows it" in proc.stderr
    assert "  refused: " in proc.stderr
    assert not (tmp_path / "b.txt").exists()
    assert "Traceback" not in proc.stderr

    proc = run(*args, "--yes")
    err = proc.stderr.splitlines()
    call = next(i for i, line in enumerate(err) if line.startswith("→ write_file("))
    assert err[call + 1].startswith("  ok") and "not a terminal" not in proc.stderr
    assert (tmp_path / "b.txt").exists()
