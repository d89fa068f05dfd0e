"""The README's Python snippets run as they are written, as a script a user pastes would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def python_blocks() -> list[str]:
    """Every ```python block of the README."""
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_readme_has_a_python_snippet() -> None:
    assert python_blocks(), "the README shows the scripting API in a ```python block"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_each_python_snippet_runs_as_a_script(index: int, tmp_path: Path, shared_models: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(python_blocks()[index], encoding="utf-8")
    env = {**os.environ, "LLMSPELL_MODELS": str(shared_models)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    if index == 0:
        # the stream printed its answer and speed; status by name; the listing named the backend it could not ask
        assert "tokens/s" in done.stdout and "'smollm2:135m'" in done.stdout, done.stdout
        assert "\nTrue [" in done.stdout, done.stdout
        assert "['ollama']" in done.stdout, done.stdout
