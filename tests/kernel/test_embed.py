"""The kernel's %embed: a real kernel (jupyter_client) on the real smollm2:135m and gemma3:270m; its parsing and
its view in process."""

from __future__ import annotations

import asyncio
import math
import re
import threading
from html import escape
from pathlib import Path
from typing import Any

import pytest
from kernel_session import KernelSession, Ran

from llmspell.chat import Conversation, Entry
from llmspell.spec import parse_spec
from llmspell.store import Store
from llmspell_kernel.magics import MAGICS, MagicError, help_markdown, is_complete, parse_cell

SMOL = "smollm2:135m"
GEMMA = "gemma3:270m"
TEXTS = ("The cat sat on the mat.", "A kitten was resting on the rug.", "Quarterly revenue grew by ten percent.")


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _view(ran: Ran) -> dict[str, Any]:
    """The data of the %embed view: the placeholder's display, updated in place to the final HTML and text."""
    assert ran.status == "ok", ran.outputs
    assert ran.left == ["display_data", "execute_result"], ran.outputs
    placeholder = ran.of("display_data")[-1]
    update = ran.of("update_display_data")[-1]
    assert update["transient"]["display_id"] == placeholder["transient"]["display_id"]
    return update["data"]


def _vectors(ran: Ran) -> dict[str, Any]:
    """Out[n]: the vectors as application/json, with the model and the tokens read."""
    value = ran.result["application/json"]
    assert set(value) == {"model", "embeddings", "prompt_tokens"}
    return value


def _plain_matrix(plain: str) -> list[list[float]]:
    lines = plain.splitlines()
    start = lines.index("cosine similarity") + 2
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append([float(v) for v in line.split()[1:]])
    return rows


# ----- in process: parsing, help --------------------------------------------------------------------------------


def test_embed_takes_one_text_on_its_line_or_one_per_line_below() -> None:
    cell = parse_cell("%embed  The cat sat on the mat. ")
    assert (cell.magics[0].name, cell.magics[0].arg, cell.prompt) == ("embed", "The cat sat on the mat.", "")
    cell = parse_cell("%model gemma3:270m\n%embed\nfirst\n\nsecond\n")
    assert [m.name for m in cell.magics] == ["model", "embed"] and cell.prompt == "first\n\nsecond"
    assert is_complete("%embed hello") == "complete"
    assert is_complete("%embed") == "incomplete"  # the texts are still being typed below it
    assert is_complete("%embed\nfirst") == "complete"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("%embed", "%embed needs a text on its line, or texts on the lines below it"),
        ("%embed one\ntwo", "not both"),
        ("%embed\n%json\nhi", "both want the prompt"),
        ("%embd hi", "did you mean %embed"),
    ],
)
def test_a_bad_embed_is_refused_before_anything_runs(code: str, message: str) -> None:
    with pytest.raises(MagicError, match=re.escape(message)):
        parse_cell("%echo first\n" + code)


def test_help_explains_embed() -> None:
    assert "embed" in MAGICS
    text = help_markdown("embed")
    assert "`%embed [TEXT]`" in text and "cosine" in text and "application/json" in text


# ----- the real kernel ------------------------------------------------------------------------------------------


def test_one_text_shows_its_dimensions_norm_and_first_values(session: KernelSession) -> None:
    assert session.run(f"%model {SMOL}").status == "ok"
    ran = session.run(f"%embed {TEXTS[0]}")
    view = _view(ran)
    plain, html = view["text/plain"], view["text/html"]
    row = plain.splitlines()[0]
    assert re.fullmatch(rf"1  {re.escape(TEXTS[0])}  576 dims  norm 1\.0000  \[(?:[+-]\d\.\d{{4}}, ){{5}}…\]", row), row
    assert "cosine similarity" not in plain and "llmspell-embed-similarity" not in html
    assert plain.splitlines()[-1].startswith(f"{SMOL} · 1 text × 576 dims · ")
    assert f'title="{TEXTS[0]}">{TEXTS[0]}</td>' in html and "<td>576</td><td>1.0000</td>" in html
    value = _vectors(ran)
    assert value["model"] == SMOL and value["prompt_tokens"] > 0
    [vector] = value["embeddings"]
    assert len(vector) == 576 and _norm(vector) == pytest.approx(1.0, abs=1e-6)
    # the first values shown are the vector's
    shown = [float(x) for x in re.findall(r"[+-]\d\.\d{4}", row)]
    assert shown == pytest.approx(vector[:5], abs=1e-4)
    assert ran.result["text/plain"].startswith(f"{SMOL} · 1 text × 576 dims")


def test_lines_below_are_texts_with_a_similarity_table(session: KernelSession) -> None:
    session.run(f"%model {SMOL}")
    ran = session.run("%embed\n" + "\n".join(TEXTS) + "\n\n" + TEXTS[0] + "\n")
    view = _view(ran)
    vectors = _vectors(ran)["embeddings"]
    assert len(vectors) == 4  # the blank line is not a text
    assert vectors[0] == vectors[3], "the same text gives the same vector"
    # the similarity table is the dot products of the result's vectors
    matrix = _plain_matrix(view["text/plain"])
    assert len(matrix) == 4 and all(len(row) == 4 for row in matrix)
    for i in range(4):
        for j in range(4):
            assert matrix[i][j] == pytest.approx(_dot(vectors[i], vectors[j]), abs=1e-3)
    # each of the distinct texts is nearest to itself; the two about a cat are nearer to each other than to revenue
    for i in range(3):
        assert all(matrix[i][j] < matrix[i][i] for j in range(3) if j != i)
    assert matrix[0][1] > matrix[0][2] and matrix[0][1] > matrix[1][2]
    html = view["text/html"]
    table = html[html.index('class="llmspell-embed-similarity"') :]
    assert table.count("<tr>") == 5 and table.count("<td ") == 16  # the header and 4 rows of 4
    assert "cosine similarity" in html


def test_the_kernel_gives_the_cores_vectors(session: KernelSession, backend: Any) -> None:
    session.run(f"%model {SMOL}")
    kernel = _vectors(session.run(f"%embed {TEXTS[1]}"))["embeddings"][0]
    core = asyncio.run(backend.embed(parse_spec(SMOL), [TEXTS[1]]))
    assert kernel == pytest.approx(core.vectors[0], abs=1e-4)


def test_the_selected_model_embeds_and_underscore_is_the_last_answer(session: KernelSession) -> None:
    ran = session.run(f"%model {GEMMA}\n%embed hello")
    assert _vectors(ran)["model"] == GEMMA and len(_vectors(ran)["embeddings"][0]) == 640
    session.run(f"%model {SMOL}\n%set max_tokens=8 temperature=0")
    try:
        answer = session.run("Say hello.").result["text/plain"]
        ran = session.run("%embed _")
        assert f'title="{escape(answer, quote=True)}"' in _view(ran)["text/html"]
        assert len(_vectors(ran)["embeddings"]) == 1
    finally:
        session.run("%set max_tokens=default temperature=default\n%reset")


def test_texts_are_escaped_in_the_html(session: KernelSession) -> None:
    session.run(f"%model {SMOL}")
    html = _view(session.run("%embed <b>bold</b> & co"))["text/html"]
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html


@pytest.mark.parametrize(
    ("code", "message"),
    [("%embed", "%embed needs a text"), ("%embed one\ntwo", "not both")],
)
def test_a_bad_embed_cell_is_one_clear_error(session: KernelSession, code: str, message: str) -> None:
    ran = session.run(code)
    assert ran.status == "error" and ran.reply["ename"] == "MagicError"
    assert [m["msg_type"] for m in ran.outputs] == ["error"]
    assert message in ran.error and "Traceback" not in ran.error
    assert session.run("%echo still here").stdout == "still here\n"


def test_a_model_that_cannot_embed_is_one_clear_error(session: KernelSession, kernel_home: Path) -> None:
    # a conversation kept from when its model was on disk (%model refuses to switch to it now)
    store = Store(kernel_home / "llmspell" / "history.sqlite3")
    conv = Conversation("qwen2.5:0.5b")
    store.add(conv, Entry("user", "Hi"))
    store.close()
    assert session.run(f"%history open {conv.id}").status == "ok"
    try:
        ran = session.run("%embed hello")
        assert ran.status == "error" and ran.reply["ename"] == "ModelNotFound"
        assert "qwen2.5:0.5b is not downloaded yet" in ran.error and "Traceback" not in ran.error
        assert ran.left == ["error"], "the placeholder is gone: the cell shows the error only"
    finally:
        session.run(f"%model {SMOL}\n%reset")
    assert _vectors(session.run("%embed hello"))["model"] == SMOL


def test_the_stop_button_stops_an_embedding_and_the_next_cell_works(session: KernelSession) -> None:
    session.run(f"%model {SMOL}")
    long_line = " ".join(["The quick brown fox jumps over the lazy dog while the farmer watches."] * 10)
    lines = "\n".join(f"{n}: {long_line}" for n in range(30))

    def on_output(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "display_data":  # the placeholder: the embedding has begun
            threading.Thread(target=session.km.interrupt_kernel).start()

    ran = session.run("%embed\n" + lines, on_output=on_output)
    assert ran.status == "error" and ran.reply["ename"] == "Interrupted", ran.outputs
    assert "stopped by the user" in ran.error
    assert not ran.of("execute_result")
    assert "interrupted" in ran.of("update_display_data")[-1]["data"]["text/plain"]
    after = session.run(f"%embed {TEXTS[2]}")
    assert len(_vectors(after)["embeddings"]) == 1
