"""jupyter_kernel_test's conformance suite against a real llmspell kernel, and a notebook run with nbclient."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jupyter_kernel_test
import nbformat
import pytest
from kernel_session import kernel_env, start_kernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from llmspell.chat import Conversation, Entry
from llmspell.store import Store

MISSING_MODEL_CONVERSATION = "c0ffee00c0ffee00c0ffee00c0ffee00"


@pytest.fixture(scope="class")
def conformance_kernel(
    request: pytest.FixtureRequest, spec_prefix: Path, kernel_home: Path, shared_models: Path
) -> Iterator[None]:
    """Give the unittest-style suite our kernel, started with the test environment (its own start uses none)."""
    # a stored conversation whose model is not on disk: reopening it warns on stderr (code_stderr)
    env = kernel_env(kernel_home, shared_models)
    store = Store(Path(env["LLMSPELL_HOME"]) / "history.sqlite3")
    store.add(Conversation("qwen2.5:0.5b", id=MISSING_MODEL_CONVERSATION), Entry("user", "Hello?"))
    store.close()
    ks = start_kernel(spec_prefix, env)
    request.cls.km, request.cls.kc = ks.km, ks.kc
    try:
        yield
    finally:
        ks.close()


@pytest.mark.usefixtures("conformance_kernel")
class TestLLMSpellKernelConformance(jupyter_kernel_test.KernelTests):
    """The messaging-protocol checks every kernel should pass, with llmspell's own cells as samples."""

    @classmethod
    def setUpClass(cls) -> None:
        """The kernel comes from the class fixture, not from start_new_kernel."""

    @classmethod
    def tearDownClass(cls) -> None:
        """The class fixture shuts the kernel down."""

    def execute_helper(self, code: str, timeout: int = 240, **kwargs: Any) -> tuple[dict[str, Any], list[dict]]:
        """The suite's helper with room for a real answer on a busy 2-core machine (its default is 15 s)."""
        return super().execute_helper(code, timeout, **kwargs)

    kernel_name = "llmspell"
    language_name = "markdown"
    file_extension = ".md"
    code_hello_world = "%echo hello, world"
    # reopening a conversation whose model is not on disk warns on stderr (then back to the default, anew)
    code_stderr = f"%history open {MISSING_MODEL_CONVERSATION}\n%model smollm2:135m\n%reset"
    code_execute_result = [{"code": "%model", "result": "smollm2:135m"}]  # noqa: RUF012
    code_display_data = [  # noqa: RUF012
        {"code": "%status", "mime": "text/markdown"},
        {"code": "%models", "mime": "text/markdown"},
        {"code": "%help", "mime": "text/markdown"},
    ]
    # a real (short) answer: the streamed display is cleared when the final Markdown result replaces it
    code_clear_output = "%set max_tokens=4 temperature=0\nSay hi."
    code_generate_error = "%nosuchmagic"
    completion_samples = [  # noqa: RUF012
        {"text": "%mo", "matches": {"%model", "%models"}},
        {"text": "%he", "matches": {"%help"}},
        {"text": "%model smollm2:13", "matches": {"smollm2:135m", "smollm2:135m@llamacpp"}},
    ]
    complete_code_samples = ["Hello there", "%model smollm2:135m", "%set temperature=0\nWrite a haiku."]  # noqa: RUF012
    incomplete_code_samples = ["Explain this:\n```python\nprint(1)", "%compare smollm2:135m gemma3:270m"]  # noqa: RUF012
    invalid_code_samples = ["%nosuchmagic", "%reset now"]  # noqa: RUF012
    code_inspect_sample = "smollm2:135m"


def _notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "llmspell", "display_name": "LLMSpell (local LLM)", "language": "markdown"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


class _Client(NotebookClient):
    """nbclient's client, remembering the kernel it started so a test can check it was shut down."""

    started: list[Any]

    def _remember(self, notebook: nbformat.NotebookNode) -> None:
        self.started.append((self.km, self.km.provisioner.process.pid))  # type: ignore[union-attr]


def _client(nb: nbformat.NotebookNode, spec_prefix: Path, monkeypatch: pytest.MonkeyPatch) -> _Client:
    # nbclient finds the kernel spec as Jupyter does; it owns the kernel it starts and shuts it down
    monkeypatch.setenv("JUPYTER_PATH", str(spec_prefix / "share" / "jupyter"))
    client = _Client(nb, timeout=240, kernel_name="llmspell")
    client.started = []
    client.on_notebook_start = client._remember
    return client


def _assert_shut_down(client: _Client) -> None:
    """The one kernel the client started has no process any more."""
    assert len(client.started) == 1
    km, pid = client.started[0]
    assert not km.has_kernel
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_notebook_runs_end_to_end_with_nbclient(
    spec_prefix: Path, tmp_path: Path, shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = _notebook(
        [
            "%set temperature=0 seed=1 max_tokens=24",
            "%system You are a helpful assistant.",
            "Name three fruits.",
            "Which of them is the most yellow?",
            "%history",
            "%status",
        ]
    )
    client = _client(nb, spec_prefix, monkeypatch)
    client.execute(env=kernel_env(tmp_path, shared_models))
    outs = [c.outputs for c in nb.cells]
    assert outs[0][0]["text"].startswith("options: temperature=0.0 seed=1 max_tokens=24")
    assert outs[1][0]["text"] == "system prompt: You are a helpful assistant.\n"
    for i in (2, 3):
        # after the clear, only the final answer is left in the cell, as Out[n] with its stats
        assert [o["output_type"] for o in outs[i]] == ["execute_result"]
        assert outs[i][0]["data"]["text/plain"].strip()
        assert "tok/s" in outs[i][0]["data"]["text/markdown"]
        assert outs[i][0]["execution_count"] == i + 1
    history = outs[4][0]["data"]["text/markdown"]
    assert "Name three fruits." in history and "Which of them is the most yellow?" in history
    assert "| llamacpp | ready |" in outs[5][0]["data"]["text/markdown"]
    _assert_shut_down(client)


def test_a_notebook_stops_at_an_error_cell_with_its_message(
    spec_prefix: Path, tmp_path: Path, shared_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = _notebook(["%echo before", "%set temperature=warm", "%echo never"])
    client = _client(nb, spec_prefix, monkeypatch)
    with pytest.raises(CellExecutionError, match="option temperature must be a number, not 'warm'"):
        client.execute(env=kernel_env(tmp_path, shared_models))
    assert nb.cells[0].outputs[0]["text"] == "before\n"
    assert nb.cells[1].outputs[0]["output_type"] == "error"
    assert nb.cells[2].outputs == []
    # the failed run still shut its kernel down
    _assert_shut_down(client)
