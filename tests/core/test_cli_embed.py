"""``llmspell embed`` end to end: real processes on the real bundled models, a temporary home."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmspell.cli.embed import MATRIX_MAX
from llmspell.cli.main import parse_args

ROOT = Path(__file__).resolve().parents[2]
SMOL = "smollm2:135m"
GEMMA = "gemma3:270m"
#: three texts, two alike and one not
TEXTS = ("The cat sat on the mat.", "A kitten was resting on the rug.", "Quarterly revenue grew by ten percent.")


@pytest.fixture
def cli(shared_models: Path, monkeypatch: pytest.MonkeyPatch):
    """Run ``llmspell ARGS`` in a subprocess with the test's environment; returns the CompletedProcess."""
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))

    def run(*args: str, input: str | None = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "llmspell", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=600,
            env=dict(os.environ),
        )

    return run


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def _json(proc: subprocess.CompletedProcess) -> dict[str, Any]:
    """The --json output: stdout must be that one document and nothing else."""
    _ok(proc)
    data = json.loads(proc.stdout)
    assert set(data) == {"model", "embeddings", "prompt_tokens"}
    return data


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _matrix(stdout: str) -> list[list[float]]:
    """The cosine-similarity matrix of the plain output, as numbers."""
    lines = stdout.splitlines()
    start = lines.index("cosine similarity") + 2
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        label, *values = line.split()
        assert int(label) == len(rows) + 1
        rows.append([float(v) for v in values])
    return rows


def _error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.startswith("error: ") and fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert proc.stdout == ""


# ----- in process: the parser -----------------------------------------------------------------------------------


def test_texts_may_come_before_or_after_the_options() -> None:
    args = parse_args(["embed", SMOL, "--json", "first text", "second", "--dimensions", "8", "third"])
    assert (args.model, args.texts, args.json, args.dimensions, args.truncate) == (
        SMOL,
        ["first text", "second", "third"],
        True,
        8,
        True,
    )
    assert parse_args(["embed", SMOL, "--no-truncate"]).texts == []
    assert parse_args(["embed", SMOL, "--no-truncate"]).truncate is False
    assert parse_args(["embed", SMOL, "--", "-5 degrees"]).texts == ["-5 degrees"]


# ----- the real engine ------------------------------------------------------------------------------------------


def test_plain_output_has_a_line_per_text_a_matrix_and_the_model(cli) -> None:
    proc = cli("embed", SMOL, *TEXTS)
    _ok(proc)
    lines = proc.stdout.splitlines()
    for n, text in enumerate(TEXTS, 1):
        line = lines[n - 1]
        assert line.startswith(f"{n}  {text}")
        found = re.search(r"(\d+) dims  \[((?:[+-]\d\.\d{4} ){4})…\]$", line)
        assert found, line
        assert int(found.group(1)) == 576  # SmolLM2-135M's hidden size
    assert len(_matrix(proc.stdout)) == 3
    last = lines[-1]
    assert last.startswith(f"{SMOL} · 3 texts · ") and re.search(r"\d+ tokens read$", last)


def test_each_text_is_nearest_to_itself_in_the_matrix(cli) -> None:
    matrix = _matrix(cli("embed", GEMMA, *TEXTS).stdout)
    assert len(matrix) == len(TEXTS) and all(len(row) == len(TEXTS) for row in matrix)
    for i, row in enumerate(matrix):
        assert row[i] == pytest.approx(1.0, abs=1e-3)
        assert all(value < row[i] for j, value in enumerate(row) if j != i), row
        assert all(row[j] == pytest.approx(matrix[j][i], abs=1e-3) for j in range(len(row)))
    # the two texts about a cat are closer to each other than either is to the one about revenue
    assert matrix[0][1] > matrix[0][2] and matrix[0][1] > matrix[1][2]


def test_json_is_the_only_thing_on_stdout_with_unit_vectors_in_order(cli) -> None:
    data = _json(cli("embed", SMOL, "--json", *TEXTS))
    assert data["model"] == SMOL
    vectors = data["embeddings"]
    assert len(vectors) == len(TEXTS)
    assert {len(v) for v in vectors} == {576}
    assert all(_norm(v) == pytest.approx(1.0, abs=1e-6) for v in vectors)
    assert data["prompt_tokens"] >= len(TEXTS)
    # in order: the first text's vector is the one a call with only that text gives
    alone = _json(cli("embed", SMOL, "--json", TEXTS[0]))["embeddings"][0]
    assert alone == pytest.approx(vectors[0], abs=1e-4)


def test_the_same_text_gives_the_same_vector(cli) -> None:
    data = _json(cli("embed", SMOL, "--json", TEXTS[0], TEXTS[1], TEXTS[0]))
    first, _, again = data["embeddings"]
    assert first == again
    # and in another process, too
    other = _json(cli("embed", SMOL, "--json", TEXTS[0]))["embeddings"][0]
    assert other == pytest.approx(first, abs=1e-4)


def test_texts_come_one_per_line_from_stdin_when_none_are_given(cli) -> None:
    piped = _json(cli("embed", SMOL, "--json", input=f"{TEXTS[0]}\n\n{TEXTS[2]}\n"))
    given = _json(cli("embed", SMOL, "--json", TEXTS[0], TEXTS[2]))
    assert len(piped["embeddings"]) == 2  # the blank line is not a text
    for a, b in zip(piped["embeddings"], given["embeddings"], strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    assert piped["prompt_tokens"] == given["prompt_tokens"]
    # plain output from stdin too, and the matrix is left out when it would be too wide
    many = "\n".join(f"line number {n}" for n in range(MATRIX_MAX + 1))
    proc = cli("embed", SMOL, input=many)
    _ok(proc)
    assert sum(1 for line in proc.stdout.splitlines() if " dims  [" in line) == MATRIX_MAX + 1
    assert "cosine similarity" not in proc.stdout and "--json gives every vector" in proc.stdout


def test_no_text_at_all_says_how_to_give_one(cli) -> None:
    proc = cli("embed", SMOL, input="\n  \n")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no text given") and "standard input" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("model", "fragment"),
    [
        ("smollm:135m", "did you mean smollm2:135m"),
        ("tinyllama", "llmspell model pull tinyllama"),
        ("/no/such/model.gguf", "does not exist"),
        (f"{SMOL}@ollama", "not reachable"),
    ],
)
def test_a_bad_model_is_one_clear_error(cli, model: str, fragment: str) -> None:
    _error(cli("embed", model, "--json", "hello"), fragment)


def test_dimensions_keeps_the_first_values_scaled_to_length_one(cli) -> None:
    full = _json(cli("embed", SMOL, "--json", *TEXTS))["embeddings"]
    cut = _json(cli("embed", SMOL, "--json", "--dimensions", "8", *TEXTS))["embeddings"]
    for whole, short in zip(full, cut, strict=True):
        assert len(short) == 8
        assert _norm(short) == pytest.approx(1.0, abs=1e-9)
        head = whole[:8]
        assert short == pytest.approx([x / _norm(head) for x in head], abs=1e-4)
    proc = cli("embed", SMOL, "--dimensions", "8", *TEXTS[:2])
    _ok(proc)
    assert proc.stdout.count(" 8 dims  [") == 2
    assert proc.stdout.splitlines()[-1].endswith("first 8 of 576 dims, re-normalised")
    assert _matrix(proc.stdout)[0][0] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("n", "fragment"), [("0", "--dimensions 0 is too small"), ("100000", "its vectors have 576 values")]
)
def test_dimensions_out_of_range_is_refused(cli, n: str, fragment: str) -> None:
    _error(cli("embed", SMOL, "--json", "--dimensions", n, "hello"), fragment)


def test_a_text_past_the_context_is_cut_unless_no_truncate(cli) -> None:
    home = Path(os.environ["LLMSPELL_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("[llamacpp]\nnum_ctx = 16\n")
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
    cut = _json(cli("embed", SMOL, "--json", long_text))
    assert cut["prompt_tokens"] == 16
    _error(cli("embed", SMOL, "--no-truncate", long_text), "context window is 16")


def test_the_readmes_embed_examples_run(cli) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [shlex.split(line.split("#")[0]) for line in readme.splitlines() if line.startswith("llmspell embed ")]
    assert len(commands) >= 2
    for words in commands:
        proc = cli(*words[1:])
        _ok(proc)
        if "--json" in words:
            data = json.loads(proc.stdout)
            n = int(words[words.index("--dimensions") + 1])
            assert {len(v) for v in data["embeddings"]} == {n}
        else:
            assert "cosine similarity" in proc.stdout
